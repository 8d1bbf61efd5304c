package policy

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestDefaults pins the built-in defaults the package documentation lists.
func TestDefaults(t *testing.T) {
	want := Resolved{
		Service:        "web",
		LoadBalancer:   LoadBalancer{Policy: RoundRobin},
		Timeout:        15 * time.Second,
		CircuitBreaker: CircuitBreaker{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3},
	}
	if diff := cmp.Diff(want, Defaults("web")); diff != "" {
		t.Errorf("Defaults() mismatch (-want +got):\n%s", diff)
	}
	var nilSet *Set
	if diff := cmp.Diff(want, nilSet.Resolve("web")); diff != "" {
		t.Errorf("nil Set Resolve() mismatch (-want +got):\n%s", diff)
	}
	if got := nilSet.Services(); got != nil {
		t.Errorf("nil Set Services() = %v", got)
	}
}

// TestBlockDefaults checks the defaults of fields in blocks that are
// written without them.
func TestBlockDefaults(t *testing.T) {
	set := mustLoad(t, "p.yaml", svc(
		"  outlierDetection: {}",
		"  retry: {retryBudget: {}}",
		"  rateLimit: {requestsPerSecond: 7}",
	))
	r := set.Resolve("web")
	wantOD := OutlierDetection{
		Enabled: true, ConsecutiveErrors: 5, ErrorPercent: 0, MinRequests: 50, MinHosts: 5,
		Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10,
	}
	if diff := cmp.Diff(wantOD, r.OutlierDetection); diff != "" {
		t.Errorf("OutlierDetection mismatch (-want +got):\n%s", diff)
	}
	wantRetry := Retry{
		Attempts: 1,
		RetryOn:  []RetryOn{RetryOnConnectFailure, RetryOnRefusedStream, RetryOnCancelled, RetryOnUnavailable},
		Backoff:  Backoff{Base: 25 * time.Millisecond, Max: 250 * time.Millisecond},
	}
	if diff := cmp.Diff(wantRetry, r.Retry); diff != "" {
		t.Errorf("Retry mismatch (-want +got):\n%s", diff)
	}
	if want := (RetryBudget{Enabled: true, BudgetPercent: 20, MinRetryConcurrency: 3}); r.RetryBudget != want {
		t.Errorf("RetryBudget = %+v, want %+v", r.RetryBudget, want)
	}
	if want := (RateLimit{Enabled: true, RequestsPerSecond: 7, Burst: 7}); r.RateLimit != want {
		t.Errorf("RateLimit = %+v, want %+v (burst defaults to requestsPerSecond)", r.RateLimit, want)
	}

	set = mustLoad(t, "p.yaml", svc("  retry:", "    backoff: {base: 10ms}"))
	if got, want := set.Resolve("web").Retry.Backoff, (Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond}); got != want {
		t.Errorf("backoff with only base = %+v, want max = 10 × base: %+v", got, want)
	}
	set = mustLoad(t, "p.yaml", svc("  retry:", "    backoff: {base: 10m}"))
	if got, want := set.Resolve("web").Retry.Backoff, (Backoff{Base: 10 * time.Minute, Max: time.Hour}); got != want {
		t.Errorf("backoff with a long base = %+v, want max capped at 1h: %+v", got, want)
	}
}

func TestResolvePrecedence(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh(
			"  defaults:",
			"    loadBalancer: {policy: ring_hash, ringHash: {hashOn: {header: x-user}}}",
			"    timeout: 10s",
			"    circuitBreaker: {maxConnections: 100, maxRequests: 200}",
			"    outlierDetection: {consecutiveErrors: 7, interval: 5s}",
			"    retry:",
			"      attempts: 2",
			"      retryOn: [retriable-status-codes, 5xx]",
			"      retriableStatusCodes: [503, 409]",
			"      backoff: {base: 100ms, max: 1s}",
			"      idempotencyHeader: x-mesh-key",
			"    rateLimit: {requestsPerSecond: 100, burst: 300}",
			"  tracing: {collector: 'otel:4317', samplingPercent: 10, tags: {env: prod, a: b}}",
		),
		"web.yaml", svc(
			"  loadBalancer: least_request",
			"  circuitBreaker: {maxRequests: 50}",
			"  outlierDetection: {errorPercent: 40}",
			"  retry:",
			"    perTryTimeout: 1s",
			"    backoff: {base: 10ms}",
			"  rateLimit: {requestsPerSecond: 1000}",
			"  tracing: {samplingPercent: 100}",
			"  routes:",
			"    - match: {pathPrefix: /slow}",
			"      timeout: 30s",
			"      retry: {attempts: 5, retryOn: [reset]}",
			"    - match: {pathPrefix: /quiet}",
			"      retry: {attempts: 0}",
			"      rateLimit: {disabled: true}",
		),
	)
	web := set.Resolve("web")
	other := set.Resolve("other")
	quiet, slow := web.Routes[0], web.Routes[1] // the longer prefix first
	checks := []struct {
		what      string
		got, want any
	}{
		// Mesh defaults apply to a service without a policy.
		{"other: timeout from mesh", other.Timeout, 10 * time.Second},
		{"other: load balancer from mesh", other.LoadBalancer, LoadBalancer{Policy: RingHash, RingHash: RingHashConfig{HashOn: HashOn{Header: "x-user"}, MinRingSize: 1024, MaxRingSize: 8388608}}},
		{"other: circuit breaker mesh + built-in", other.CircuitBreaker, CircuitBreaker{MaxConnections: 100, MaxPendingRequests: 1024, MaxRequests: 200, MaxRetries: 3}},
		{"other: retry from mesh", other.Retry, Retry{
			Attempts: 2, RetryOn: []RetryOn{RetryOn5xx, RetryOnRetriableStatusCodes}, RetriableStatusCodes: []uint32{409, 503},
			Backoff: Backoff{Base: 100 * time.Millisecond, Max: time.Second}, IdempotencyHeader: "x-mesh-key",
		}},
		{"other: rate limit from mesh", other.RateLimit, RateLimit{Enabled: true, RequestsPerSecond: 100, Burst: 300}},
		{"other: sampling from mesh", other.Tracing.SamplingPercent, 10.0},
		{"other: tags sorted", other.Tracing.Tags, []Tag{{"a", "b"}, {"env", "prod"}}},
		{"other: no routes", len(other.Routes), 0},

		// The service overrides field by field; whole blocks replace.
		{"web: load balancer replaced whole", web.LoadBalancer, LoadBalancer{Policy: LeastRequest, ChoiceCount: 2}},
		{"web: timeout inherited", web.Timeout, 10 * time.Second},
		{"web: circuit breaker merged", web.CircuitBreaker, CircuitBreaker{MaxConnections: 100, MaxPendingRequests: 1024, MaxRequests: 50, MaxRetries: 3}},
		{"web: outlier merged", web.OutlierDetection, OutlierDetection{
			Enabled: true, ConsecutiveErrors: 7, ErrorPercent: 40, MinRequests: 50, MinHosts: 5,
			Interval: 5 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10,
		}},
		{"web: retry merged, backoff replaced whole", web.Retry, Retry{
			Attempts: 2, PerTryTimeout: time.Second, RetryOn: []RetryOn{RetryOn5xx, RetryOnRetriableStatusCodes}, RetriableStatusCodes: []uint32{409, 503},
			Backoff: Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond}, IdempotencyHeader: "x-mesh-key",
		}},
		{"web: rate limit replaced whole (burst not inherited)", web.RateLimit, RateLimit{Enabled: true, RequestsPerSecond: 1000, Burst: 1000}},
		{"web: sampling overridden", web.Tracing.SamplingPercent, 100.0},
		{"web: collector kept", web.Tracing.Collector, "otel:4317"},
		{"web: origins", web.Origins, []string{"mesh.yaml:1", "web.yaml:1"}},

		// Routes override the service; unset route fields come from it.
		{"slow: timeout", slow.Timeout, 30 * time.Second},
		{"slow: retry merged with service and mesh", slow.Retry, Retry{
			Attempts: 5, PerTryTimeout: time.Second, RetryOn: []RetryOn{RetryOnReset},
			Backoff: Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond}, IdempotencyHeader: "x-mesh-key",
		}},
		{"slow: shares the service bucket", [2]any{slow.RateLimit, slow.OwnRateLimit}, [2]any{web.RateLimit, false}},
		{"slow: origin", slow.Origin, "web.yaml:14"},
		{"quiet: timeout inherited", quiet.Timeout, 10 * time.Second},
		{"quiet: retries off", quiet.Retry, Retry{}},
		{"quiet: rate limit off, own", [2]any{quiet.RateLimit, quiet.OwnRateLimit}, [2]any{RateLimit{}, true}},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.what, diff)
		}
	}
}

func TestResolveOutlierOff(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh("  defaults:", "    outlierDetection: {consecutiveErrors: 3}"),
		"web.yaml", svc("  outlierDetection: {consecutiveErrors: 0}"),
		"api.yaml", svcNamed("api", "  outlierDetection: {consecutiveErrors: 0, errorPercent: 25}"),
	)
	if got := set.Resolve("web").OutlierDetection; got != (OutlierDetection{}) {
		t.Errorf("web: both forms off: %+v, want disabled (zero)", got)
	}
	if got := set.Resolve("api").OutlierDetection; !got.Enabled || got.ConsecutiveErrors != 0 || got.ErrorPercent != 25 {
		t.Errorf("api: %+v, want enabled with only the error-percentage form", got)
	}
	if got := set.Resolve("db").OutlierDetection; !got.Enabled || got.ConsecutiveErrors != 3 {
		t.Errorf("db: %+v, want the mesh's", got)
	}
}

func TestResolveMeshRoutes(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh(
			"  defaults:",
			"    retry: {attempts: 2}",
			"    routes:",
			"      - match: {path: /healthz}",
			"        retry: {attempts: 0}",
			"        timeout: 1s",
			"      - match: {pathPrefix: /admin}",
			"        timeout: 60s",
		),
		"web.yaml", svc(
			"  timeout: 3s",
			"  routes:",
			"    - match: {pathPrefix: /admin}",
			"      timeout: 5s",
			"    - match: {pathPrefix: /api}",
		),
	)
	var got []string
	for _, rr := range set.Resolve("web").Routes {
		got = append(got, rr.Name+" "+rr.Match.String()+" "+rr.Timeout.String())
	}
	want := []string{
		"mesh.routes[0] path /healthz 1s", // exact path first
		"routes[0] pathPrefix /admin 5s",  // replaces the mesh route with the same match
		"routes[1] pathPrefix /api 3s",    // inherits the service timeout
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
	api := set.Resolve("api")
	if len(api.Routes) != 2 || api.Routes[1].Timeout != 60*time.Second || api.Routes[0].Retry.Enabled() {
		t.Errorf("api routes = %+v, want the mesh routes with their settings", api.Routes)
	}
}

func TestRouteOrder(t *testing.T) {
	set := mustLoad(t, "p.yaml", svc(
		"  routes:",
		"    - match: {pathPrefix: /}",                                         // 0
		"    - match: {pathPrefix: /api}",                                      // 1
		"    - match: {pathPrefix: /api, methods: [POST]}",                     // 2
		"    - match: {pathPrefix: /api/v1}",                                   // 3
		"    - match: {path: /api}",                                            // 4
		"    - match: {pathPrefix: /api, headers: {x-a: '1', x-b: '2'}}",       // 5
		"    - match: {pathPrefix: /api, headers: {x-a: '1'}}",                 // 6
		"    - match: {pathPrefix: /api, methods: [GET], headers: {x-a: '1'}}", // 7
		"    - match: {pathPrefix: /api, headers: {x-c: '1'}}",                 // 8
	))
	var got []string
	for _, rr := range set.Resolve("web").Routes {
		got = append(got, rr.Name)
	}
	want := []string{"routes[4]", "routes[3]", "routes[7]", "routes[2]", "routes[5]", "routes[6]", "routes[8]", "routes[1]", "routes[0]"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("route order (-want +got):\n%s", diff)
	}
}

func TestRetryForGRPC(t *testing.T) {
	r := Retry{
		Attempts: 3, PerTryTimeout: time.Second,
		RetryOn:              []RetryOn{RetryOn5xx, RetryOnReset, RetryOnConnectFailure, RetryOnRetriableStatusCodes, RetryOnUnavailable},
		RetriableStatusCodes: []uint32{503}, Backoff: Backoff{Base: time.Millisecond, Max: time.Second}, IdempotencyHeader: "x-key",
	}
	want := Retry{Attempts: 3, PerTryTimeout: time.Second, RetryOn: []RetryOn{RetryOnConnectFailure, RetryOnUnavailable}, Backoff: r.Backoff}
	if diff := cmp.Diff(want, r.ForGRPC()); diff != "" {
		t.Errorf("ForGRPC() mismatch (-want +got):\n%s", diff)
	}
	if got := (Retry{Attempts: 3, RetryOn: []RetryOn{RetryOn5xx}}).ForGRPC(); got.Enabled() {
		t.Errorf("ForGRPC() with only HTTP conditions = %+v, want disabled", got)
	}
	for _, c := range retryOnOrder {
		want := c == RetryOnCancelled || c == RetryOnDeadlineExceeded || c == RetryOnInternal || c == RetryOnResourceExhausted || c == RetryOnUnavailable
		if c.IsGRPCStatus() != want {
			t.Errorf("%s.IsGRPCStatus() = %v", c, !want)
		}
	}
}

func TestResolveIsolated(t *testing.T) {
	set := mustLoad(t, "resilience.yaml", string(readTestdata(t, "resilience.yaml")))
	r := set.Resolve("user-service")
	before := r.Hash()
	r.Retry.RetryOn[0] = RetryOnInternal
	r.Routes[0].Match.Methods[0] = "GET"
	vs := r.RouteVariants()
	vs[0].Match.Methods[0] = "PUT"
	if after := set.Resolve("user-service").Hash(); after != before {
		t.Errorf("changing a Resolved changed the Set")
	}
}

func TestHash(t *testing.T) {
	example := string(readTestdata(t, "resilience.yaml"))
	a := mustLoad(t, "a.yaml", example).Resolve("user-service")
	b := mustLoad(t, "b.yaml", "# a comment moves every line\n\n"+example).Resolve("user-service")
	if a.Hash() != b.Hash() {
		t.Errorf("Hash differs for the same policy in another file at other lines")
	}
	if len(a.Hash()) != 32 {
		t.Errorf("Hash() = %q, want 32 hex digits", a.Hash())
	}
	if again := mustLoad(t, "a.yaml", example).Resolve("user-service"); a.Hash() != again.Hash() {
		t.Errorf("Hash() is not stable")
	}
	// Rewriting the same meaning differently gives the same hash.
	c := mustLoad(t, "c.yaml", svcNamed("user-service", "  retry: {retryOn: [reset, 5xx]}")).Resolve("user-service")
	d := mustLoad(t, "d.yaml", svcNamed("user-service", "  retry:", "    retryOn: [5xx, reset]")).Resolve("user-service")
	if c.Hash() != d.Hash() {
		t.Errorf("Hash differs for retryOn lists in another order")
	}
	// Every change of behaviour changes it.
	changes := []string{
		"  timeout: 2001ms",
		"  retry: {attempts: 2}",
		"  routes: [{match: {pathPrefix: /orders, methods: [POST]}, timeout: 5s}]",
		"  rateLimit: {requestsPerSecond: 1}",
	}
	seen := map[string]string{a.Hash(): "resilience example", c.Hash(): "retryOn"}
	for _, ch := range changes {
		h := mustLoad(t, "x.yaml", svcNamed("user-service", ch)).Resolve("user-service").Hash()
		if prev, dup := seen[h]; dup {
			t.Errorf("%q hashes like %s", ch, prev)
		}
		seen[h] = ch
	}
	if Defaults("a").Hash() == Defaults("b").Hash() {
		t.Errorf("Hash ignores the service name")
	}
}

// TestResolveRouteTimeoutBoundsInheritedPerTry: a route that sets a shorter
// timeout than the per-try timeout it inherits does not keep that per-try
// timeout (it could never fire; the route's timeout ends the request
// first), while a route whose timeout leaves room keeps it.
func TestResolveRouteTimeoutBoundsInheritedPerTry(t *testing.T) {
	set := mustLoad(t, "web.yaml", svc(
		"  timeout: 10s",
		"  retry: {attempts: 3, perTryTimeout: 2s}",
		"  routes:",
		"    - match: {pathPrefix: /fast}",
		"      timeout: 500ms",
		"    - match: {pathPrefix: /fastretry}",
		"      timeout: 1s",
		"      retry: {attempts: 5}",
		"    - match: {pathPrefix: /roomy}",
		"      timeout: 5s",
	))
	byPrefix := map[string]ResolvedRoute{}
	for _, r := range set.Resolve("web").Routes {
		byPrefix[r.Match.PathPrefix] = r
	}
	for prefix, want := range map[string]struct {
		attempts uint32
		perTry   time.Duration
	}{"/fast": {3, 0}, "/fastretry": {5, 0}, "/roomy": {3, 2 * time.Second}} {
		r := byPrefix[prefix]
		if r.Retry.Attempts != want.attempts || r.Retry.PerTryTimeout != want.perTry {
			t.Errorf("%s (timeout %s): attempts %d, perTryTimeout %s; want %d, %s", prefix, r.Timeout, r.Retry.Attempts, r.Retry.PerTryTimeout, want.attempts, want.perTry)
		}
	}
}

// TestResolvePanicThresholdAndSlowStart: each resolves as a whole, the
// ServicePolicy's over the MeshPolicy's defaults; unset, neither is
// there (Envoy's own defaults apply).
func TestResolvePanicThresholdAndSlowStart(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh("  defaults:", "    healthyPanicThreshold: 30", "    slowStart: {window: 1m}"),
		"web.yaml", svc("  slowStart: {window: 20s, aggression: 2, minWeightPercent: 5}"),
	)
	web := set.Resolve("web")
	if web.HealthyPanicThreshold == nil || *web.HealthyPanicThreshold != 30 {
		t.Errorf("web's panic threshold %v, want the mesh's 30", web.HealthyPanicThreshold)
	}
	if got, want := web.SlowStart, (&SlowStart{Window: 20 * time.Second, Aggression: 2, MinWeightPercent: 5}); got == nil || *got != *want {
		t.Errorf("web's slow start %+v, want its own %+v", got, want)
	}
	other := set.Resolve("other")
	if got, want := other.SlowStart, (&SlowStart{Window: time.Minute, Aggression: DefaultSlowStartAggression, MinWeightPercent: DefaultSlowStartMinWeightPercent}); got == nil || *got != *want {
		t.Errorf("other's slow start %+v, want the mesh's %+v", got, want)
	}
	if none := mustLoad(t, "web.yaml", svc("  timeout: 1s")).Resolve("web"); none.HealthyPanicThreshold != nil || none.SlowStart != nil {
		t.Errorf("unset: panic threshold %v, slow start %v; want neither", none.HealthyPanicThreshold, none.SlowStart)
	}
}

// TestResolveLocality: locality resolves as a whole block; mode off at the
// service level turns a mesh default off; Rule picks the most specific
// entry for a caller.
func TestResolveLocality(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh("  defaults:", "    locality:", "      mode: failover", "      failover: [{from: r1, to: r2}, {from: r1, to: r3}]"),
		"svc.yaml", svc("  locality: {mode: 'off'}")+"---\n"+svcNamed("api",
			"  locality:",
			"    mode: distribute",
			"    distribute:",
			"      - from: '*'",
			"        to: {r1: 100}",
			"      - from: r1/a",
			"        to: {r1/a: 80, r1/b: 20}",
			"      - from: r2",
			"        to: {r2/*: 70, '*': 30}"),
	)
	if l := set.Resolve("web").Locality; l != nil {
		t.Errorf("web (mode off over a mesh default) resolved locality %+v, want none", l)
	}
	other := set.Resolve("other").Locality
	want := []FailoverRule{{From: "r1", To: "r2"}, {From: "r1", To: "r3"}}
	if other == nil || other.Mode != LocalityFailover || !slices.Equal(other.Failover, want) {
		t.Errorf("other's locality = %+v, want the mesh default's failover %v", other, want)
	}
	api := set.Resolve("api").Locality
	if api == nil || api.Mode != LocalityDistribute || len(api.Distribute) != 3 {
		t.Fatalf("api's locality = %+v, want distribute with 3 entries", api)
	}
	for _, tc := range []struct {
		region, zone string
		want         string // the rule's from, "" for none
	}{
		{"r1", "a", "r1/a"},
		{"r1", "b", "*"},
		{"r2", "x", "r2/*"},
		{"", "", "*"},
	} {
		got := ""
		if r := api.Rule(tc.region, tc.zone); r != nil {
			got = r.From.String()
		}
		if got != tc.want {
			t.Errorf("Rule(%q, %q) = %q, want %q", tc.region, tc.zone, got, tc.want)
		}
	}
	if got := api.Distribute[2].To; len(got) != 2 || got[0] != (LocalityWeight{LocalityPattern{"r2", "*"}, 70}) || got[1] != (LocalityWeight{LocalityPattern{"*", "*"}, 30}) {
		t.Errorf("api's third entry's weights = %+v, in written order", got)
	}
	if set.Resolve("api").Hash() == set.Resolve("other").Hash() {
		t.Error("different locality settings hash alike")
	}
}

func TestLocalityPatternMatches(t *testing.T) {
	for _, tc := range []struct {
		pat          LocalityPattern
		region, zone string
		want         bool
	}{
		{LocalityPattern{"*", "*"}, "", "", true},
		{LocalityPattern{"r1", "*"}, "r1", "a", true},
		{LocalityPattern{"r1", "*"}, "r2", "a", false},
		{LocalityPattern{"r1", "a"}, "r1", "a", true},
		{LocalityPattern{"r1", "a"}, "r1", "b", false},
		{LocalityPattern{"r1", "a"}, "", "a", false},
	} {
		if got := tc.pat.Matches(tc.region, tc.zone); got != tc.want {
			t.Errorf("%s.Matches(%q, %q) = %v, want %v", tc.pat, tc.region, tc.zone, got, tc.want)
		}
	}
}

// TestResolveRelease: subsets, split, mirror and fault come from the
// ServicePolicy; a route's own replace the service's, each as a whole; a
// route without them, and every MeshPolicy route, gets the service's.
func TestResolveRelease(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh(
			"  defaults:",
			"    routes:",
			"      - match: {path: /healthz}",
			"        timeout: 1s",
		),
		"web.yaml", svc(
			"  subsets:",
			"    v2: {version: v2}",
			"    v1: {version: v1}",
			"  split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]",
			"  mirror: {subset: v2, percent: 5}",
			"  fault: {delay: {percent: 10, duration: 2s}}",
			"  routes:",
			"    - match: {pathPrefix: /canary, headers: {x-canary: {present: true}}}",
			"      subset: v2",
			"      fault: {abort: {percent: 1, httpStatus: 503}}",
			"    - match: {pathPrefix: /shadow}",
			"      mirror: {subset: v1, percent: 100}",
			"    - match: {pathPrefix: /plain}",
		),
	)
	web := set.Resolve("web")
	svcSplit := []WeightedSubset{{"v1", 90}, {"v2", 10}}
	svcMirror := &Mirror{Subset: "v2", Percent: 5}
	svcFault := &Fault{Delay: &FaultDelay{Percent: 10, Duration: 2 * time.Second}}
	type release struct {
		Split  []WeightedSubset
		Mirror *Mirror
		Fault  *Fault
	}
	got := map[string]release{"service": {web.Split, web.Mirror, web.Fault}}
	for _, rr := range web.Routes {
		got[rr.Name] = release{rr.Split, rr.Mirror, rr.Fault}
	}
	want := map[string]release{
		"service":        {svcSplit, svcMirror, svcFault},
		"routes[0]":      {[]WeightedSubset{{"v2", 100}}, svcMirror, &Fault{Abort: &FaultAbort{Percent: 1, HTTPStatus: 503}}},
		"routes[1]":      {svcSplit, &Mirror{Subset: "v1", Percent: 100}, svcFault},
		"routes[2]":      {svcSplit, svcMirror, svcFault},
		"mesh.routes[0]": {svcSplit, svcMirror, svcFault},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("release settings (-want +got):\n%s", diff)
	}
	wantSubsets := []Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}
	if diff := cmp.Diff(wantSubsets, web.Subsets); diff != "" {
		t.Errorf("subsets (-want +got):\n%s", diff)
	}

	// A service without a ServicePolicy has none, its mesh routes neither.
	other := set.Resolve("other")
	if other.Subsets != nil || other.Split != nil || other.Mirror != nil || other.Fault != nil {
		t.Errorf("other: %+v %+v %+v %+v, want no release settings", other.Subsets, other.Split, other.Mirror, other.Fault)
	}
	if rr := other.Routes[0]; rr.Split != nil || rr.Mirror != nil || rr.Fault != nil {
		t.Errorf("other's mesh route: %+v, want no release settings", rr)
	}
}

// TestResolveReleaseIsolated: changing the release settings of a Resolved,
// or of its route variants, changes neither the Set nor the other routes.
func TestResolveReleaseIsolated(t *testing.T) {
	set := mustLoad(t, "web.yaml", svc(
		"  subsets: {v1: {version: v1}}",
		"  split: [{subset: v1, weight: 100}]",
		"  mirror: {subset: v1, percent: 5}",
		"  fault: {delay: {percent: 10, duration: 2s}, abort: {percent: 1, grpcStatus: unavailable}}",
		"  retry: {attempts: 2}",
		"  routes: [{match: {pathPrefix: /a}}]",
	))
	r := set.Resolve("web")
	before := r.Hash()
	r.Subsets[0].Labels["version"] = "v9"
	r.Split[0].Weight = 1
	r.Mirror.Percent = 1
	r.Fault.Delay.Percent = 1
	r.Fault.Abort.GRPCStatus = 2
	r.Routes[0].Split[0].Weight = 2
	r.Routes[0].Fault.Abort.Percent = 2
	r2 := set.Resolve("web")
	vs := r2.RouteVariants()
	vs[0].Split[0].Weight = 3
	vs[0].Mirror.Percent = 3
	vs[0].Fault.Delay.Percent = 3
	if after := set.Resolve("web").Hash(); after != before {
		t.Errorf("changing a Resolved changed the Set")
	}
	if vs[1].Split[0].Weight != 100 || vs[1].Mirror.Percent != 5 || vs[1].Fault.Delay.Percent != 10 || r2.Routes[0].Split[0].Weight != 100 {
		t.Errorf("changing one variant changed another, or its route")
	}
}

// TestHashRelease: every change of a release setting changes the hash.
func TestHashRelease(t *testing.T) {
	const two = "  subsets: {v1: {version: v1}, v2: {version: v2}}"
	specs := [][]string{
		{"  subsets: {v1: {version: v1}}"},
		{"  subsets: {v1: {version: v2}}"},
		{"  subsets: {v1: {version: v1, track: a}}"},
		{"  subsets: {v2: {version: v1}}"},
		{two},
		{two, "  split: [{subset: v1, weight: 100}]"},
		{two, "  split: [{subset: v2, weight: 100}]"},
		{two, "  split: [{subset: v1, weight: 100}, {subset: v2, weight: 0}]"},
		{two, "  split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]"},
		{two, "  mirror: {subset: v1, percent: 5}"},
		{two, "  mirror: {subset: v1, percent: 5.5}"},
		{two, "  mirror: {subset: v2, percent: 5}"},
		{"  fault: {delay: {percent: 5, duration: 1s}}"},
		{"  fault: {delay: {percent: 5, duration: 2s}}"},
		{"  fault: {abort: {percent: 5, httpStatus: 503}}"},
		{"  fault: {abort: {percent: 5, grpcStatus: unavailable}}"},
		{"  fault: {abort: {percent: 5, grpcStatus: internal}}"},
		{two, "  routes: [{match: {pathPrefix: /a}}]"},
		{two, "  routes: [{match: {pathPrefix: /a}, subset: v1}]"},
		{two, "  routes: [{match: {pathPrefix: /a}, subset: v2}]"},
		{two, "  routes: [{match: {pathPrefix: /a}, mirror: {subset: v2, percent: 1}}]"},
		{two, "  routes: [{match: {pathPrefix: /a}, fault: {delay: {percent: 5, duration: 1s}}}]"},
		{two, "  routes: [{match: {pathPrefix: /a, headers: {x-a: b}}}]"},
		{two, "  routes: [{match: {pathPrefix: /a, headers: {x-a: {regex: b}}}}]"},
		{two, "  routes: [{match: {pathPrefix: /a, headers: {x-a: {present: true}}}}]"},
		{two, "  routes: [{match: {pathPrefix: /a, queryParams: {x-a: b}}}]"},
	}
	seen := map[string]int{}
	for i, spec := range specs {
		h := mustLoad(t, "web.yaml", svc(spec...)).Resolve("web").Hash()
		if prev, dup := seen[h]; dup {
			t.Errorf("%q hashes like %q", spec, specs[prev])
		}
		seen[h] = i
	}
	// Subsets written in another order are the same policy.
	a := mustLoad(t, "web.yaml", svc("  subsets: {v1: {version: v1, track: a}, v2: {version: v2}}")).Resolve("web")
	b := mustLoad(t, "web.yaml", svc("  subsets:", "    v2: {version: v2}", "    v1: {track: a, version: v1}")).Resolve("web")
	if a.Hash() != b.Hash() {
		t.Errorf("Hash differs for subsets and labels written in another order")
	}
}

// TestRouteOrderQueryParams: with paths, methods and headers alike, more
// query parameter matches come first, as in the Gateway API.
func TestRouteOrderQueryParams(t *testing.T) {
	set := mustLoad(t, "p.yaml", svc(
		"  routes:",
		"    - match: {pathPrefix: /api}", // 0
		"    - match: {pathPrefix: /api, queryParams: {a: '1'}}",                      // 1
		"    - match: {pathPrefix: /api, queryParams: {a: '1', b: '2'}}",              // 2
		"    - match: {pathPrefix: /api, headers: {x-a: '1'}}",                        // 3
		"    - match: {pathPrefix: /api, headers: {x-a: '1'}, queryParams: {a: '1'}}", // 4
	))
	var got []string
	for _, rr := range set.Resolve("web").Routes {
		got = append(got, rr.Name)
	}
	want := []string{"routes[4]", "routes[3]", "routes[2]", "routes[1]", "routes[0]"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("route order (-want +got):\n%s", diff)
	}
}
