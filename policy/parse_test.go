package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"

	"github.com/sluice-mesh/sluice/sources"
)

func TestParseResilienceExample(t *testing.T) {
	docs, diags := Parse("resilience.yaml", readTestdata(t, "resilience.yaml"))
	if len(diags) != 0 {
		t.Fatalf("Parse() diagnostics:\n%s", diagText(diags))
	}
	u32 := func(v uint32) *uint32 { return &v }
	dur := func(d time.Duration) *time.Duration { return &d }
	str := func(s string) *string { return &s }
	want := []Document{
		{Kind: KindMeshPolicy, Name: "mesh", File: "resilience.yaml", Line: 1},
		{
			Kind: KindServicePolicy, Name: "user-service", File: "resilience.yaml", Line: 7,
			Spec: Spec{
				LoadBalancer:   &LoadBalancer{Policy: LeastRequest, ChoiceCount: 2},
				Timeout:        dur(2 * time.Second),
				CircuitBreaker: &CircuitBreakerSpec{MaxConnections: u32(1024), MaxPendingRequests: u32(1024), MaxRequests: u32(1024), MaxRetries: u32(3)},
				OutlierDetection: &OutlierDetectionSpec{
					ConsecutiveErrors: u32(5), ErrorPercent: u32(50), MinRequests: u32(20),
					Interval: dur(10 * time.Second), BaseEjectionTime: dur(30 * time.Second), MaxEjectionPercent: u32(50),
				},
				Retry: &RetrySpec{
					Attempts:          u32(3),
					PerTryTimeout:     dur(500 * time.Millisecond),
					RetryOn:           []RetryOn{RetryOn5xx, RetryOnReset, RetryOnConnectFailure, RetryOnUnavailable},
					Backoff:           &Backoff{Base: 25 * time.Millisecond, Max: 250 * time.Millisecond},
					IdempotencyHeader: str("x-idempotency-key"),
				},
				Routes: []RouteSpec{{
					Index: 0, Line: 28,
					Match:   RouteMatch{PathPrefix: "/orders", Methods: []string{"POST"}},
					Retry:   &RetrySpec{Attempts: u32(0)},
					Timeout: dur(5 * time.Second),
				}},
			},
		},
	}
	if diff := cmp.Diff(want, docs, cmpopts.IgnoreUnexported(Document{})); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}
}

func TestParseRateLimitTracingExample(t *testing.T) {
	set := mustLoad(t, "ratelimit-tracing.yaml", string(readTestdata(t, "ratelimit-tracing.yaml")))
	r := set.Resolve("user-service")
	wantTracing := Tracing{
		Enabled: true, Collector: "otel-collector:4317", CollectorHost: "otel-collector", CollectorPort: 4317,
		SamplingPercent: 50, Tags: []Tag{{Name: "env", Value: "prod"}},
	}
	if diff := cmp.Diff(wantTracing, r.Tracing); diff != "" {
		t.Errorf("Tracing mismatch (-want +got):\n%s", diff)
	}
	if want := (RateLimit{Enabled: true, RequestsPerSecond: 100, Burst: 200}); r.RateLimit != want {
		t.Errorf("RateLimit = %+v, want %+v", r.RateLimit, want)
	}
	if len(r.Routes) != 1 {
		t.Fatalf("Routes = %+v, want one", r.Routes)
	}
	if want := (RateLimit{Enabled: true, RequestsPerSecond: 10, Burst: 10}); r.Routes[0].RateLimit != want || !r.Routes[0].OwnRateLimit {
		t.Errorf("route RateLimit = %+v (own %v), want %+v with its own bucket (burst defaults to requestsPerSecond)", r.Routes[0].RateLimit, r.Routes[0].OwnRateLimit, want)
	}
	if got := set.Resolve("other").Tracing.SamplingPercent; got != 10 {
		t.Errorf("other service's samplingPercent = %v, want the mesh's 10", got)
	}
}

// TestParseFullExample keeps the example with every field valid and checks
// a few values from each level.
func TestParseFullExample(t *testing.T) {
	set := mustLoad(t, "full.yaml", string(readTestdata(t, "full.yaml")))
	if w := set.Warnings([]string{"user-service", "search", "otel-collector"}); len(w) != 0 {
		t.Errorf("Warnings() = %v", w)
	}
	us := set.Resolve("user-service")
	var routes []string
	for _, rr := range us.Routes {
		routes = append(routes, rr.Name)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"routes", routes, []string{"mesh.routes[0]", "routes[0]"}},
		{"healthz retries", us.Routes[0].Retry.Enabled(), false},
		{"healthz timeout", us.Routes[0].Timeout, 2 * time.Second},
		{"orders timeout", us.Routes[1].Timeout, 5 * time.Second},
		{"status codes", us.Retry.RetriableStatusCodes, []uint32{409}},
		{"budget", us.RetryBudget, RetryBudget{Enabled: true, BudgetPercent: 20, MinRetryConcurrency: 3}},
		{"sampling", us.Tracing.SamplingPercent, 50.0},
		{"search lb", set.Resolve("search").LoadBalancer, LoadBalancer{Policy: LeastRequest, ChoiceCount: 3}},
		{"search retry", set.Resolve("search").Retry.RetryOn, []RetryOn{RetryOnConnectFailure, RetryOnUnavailable}},
		{"user-service dependencies", set.Dependencies("user-service"), Dependencies{Services: []string{"search"}, Origin: "full.yaml:20"}},
		{"search dependencies", set.Dependencies("search"), Dependencies{Origin: "full.yaml:48"}},
		{"other dependencies", set.Dependencies("other"), Dependencies{All: true, Origin: "full.yaml:2"}},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.what, diff)
		}
	}
}

// TestParseReleaseExample keeps the example with every release field valid
// and checks what each level resolves to.
func TestParseReleaseExample(t *testing.T) {
	set := mustLoad(t, "release.yaml", string(readTestdata(t, "release.yaml")))
	if w := set.Warnings([]string{"checkout"}); len(w) != 0 {
		t.Errorf("Warnings() = %v", w)
	}
	r := set.Resolve("checkout")
	svcSplit := []WeightedSubset{{"v1", 90}, {"v2", 10}}
	svcMirror := &Mirror{Subset: "v2", Percent: 5}
	svcFault := &Fault{Delay: &FaultDelay{Percent: 10, Duration: 2 * time.Second}, Abort: &FaultAbort{Percent: 5, HTTPStatus: 503}}
	var routes []string
	for _, rr := range r.Routes {
		routes = append(routes, rr.Name)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"subsets", r.Subsets, []Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2", "track": "canary"}}}},
		{"service", []any{r.Split, r.Mirror, r.Fault}, []any{svcSplit, svcMirror, svcFault}},
		{"routes", routes, []string{"mesh.routes[0]", "routes[1]", "routes[0]"}},
		{"healthz inherits", []any{r.Routes[0].Split, r.Routes[0].Mirror, r.Routes[0].Fault}, []any{svcSplit, svcMirror, svcFault}},
		{"healthz match", r.Routes[0].Match.Headers, []HeaderMatch{{Name: "x-probe", Present: true}}},
		{"cart", []any{r.Routes[1].Split, r.Routes[1].Mirror, r.Routes[1].Fault}, []any{
			[]WeightedSubset{{"v1", 50}, {"v2", 50}}, &Mirror{Subset: "v1", Percent: 0.5}, &Fault{Abort: &FaultAbort{Percent: 1, GRPCStatus: 14}},
		}},
		{"cart match", r.Routes[1].Match.QueryParams, []HeaderMatch{{Name: "beta", Present: true}}},
		{"canary", []any{r.Routes[2].Split, r.Routes[2].Mirror, r.Routes[2].Fault}, []any{[]WeightedSubset{{"v2", 100}}, svcMirror, svcFault}},
		{"canary match", r.Routes[2].Match, RouteMatch{
			PathPrefix: "/",
			Headers: []HeaderMatch{
				{Name: "x-canary", Exact: "true"}, {Name: "x-debug", Present: true},
				{Name: "x-exact", Exact: "v"}, {Name: "x-user", Regex: "^(alice|bob)$"},
			},
			QueryParams: []HeaderMatch{{Name: "canary", Exact: "1"}},
		}},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.what, diff)
		}
	}
}

func TestParseMultiDocument(t *testing.T) {
	in := lines(
		"# policies for the shop", // 1
		"---",                     // 2
		"apiVersion: sluice.dev/v1",
		"kind: ServicePolicy", // 4
		"metadata: {name: cart}",
		"spec: {timeout: 1s}",
		"---", // 7
		"---", // 8: an empty document
		"# only a comment",
		"---", // 10
		"apiVersion: sluice.dev/v1",
		"kind: ServicePolicy",
		"metadata: {name: orders}",
		"spec: {timeout: 3s}",
		"---", // a trailing separator
	)
	docs, diags := Parse("shop.yaml", []byte(in))
	if len(diags) != 0 {
		t.Fatalf("Parse() diagnostics:\n%s", diagText(diags))
	}
	type got struct {
		Name string
		Line int
	}
	var gs []got
	for _, d := range docs {
		gs = append(gs, got{d.Name, d.Line})
	}
	if diff := cmp.Diff([]got{{"cart", 3}, {"orders", 11}}, gs); diff != "" {
		t.Errorf("documents mismatch (-want +got):\n%s", diff)
	}
}

// TestParseEmpty: a file without a document is refused (it is also what a
// file looks like while it is rewritten in place), so that its policies
// are not dropped in between; deleting the file drops them.
func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "# nothing yet\n", "---\n", "---\n---\n"} {
		docs, diags := Parse("empty.yaml", []byte(in))
		if len(docs) != 0 || len(diags) != 1 || diags[0].String() != "empty.yaml:1: the file holds no policy document; delete the file to drop its policies" {
			t.Errorf("Parse(%q) = %v, %v; want no documents and one diagnostic", in, docs, diags)
		}
	}
}

// TestParseAliases checks that YAML anchors and aliases work for whole
// values, such as a retry block shared by two routes.
func TestParseAliases(t *testing.T) {
	set := mustLoad(t, "p.yaml", svc(
		"  routes:",
		"    - match: {pathPrefix: /a}",
		"      retry: &r {attempts: 4}",
		"    - match: {pathPrefix: /b}",
		"      retry: *r",
	))
	for _, rr := range set.Resolve("web").Routes {
		if rr.Retry.Attempts != 4 {
			t.Errorf("route %s attempts = %d, want 4", rr.Name, rr.Retry.Attempts)
		}
	}
}

func TestParseNormalizes(t *testing.T) {
	docs, diags := Parse("p.yaml", []byte(svc(
		"  retry:",
		"    retryOn: [unavailable, 5xx, reset]",
		"    idempotencyHeader: X-Idempotency-Key",
		"  routes:",
		"    - match: {path: /a, methods: [POST, GET], headers: {X-B: '2', x-a: 1}}",
	)))
	if len(diags) != 0 {
		t.Fatalf("Parse() diagnostics:\n%s", diagText(diags))
	}
	s := docs[0].Spec
	if diff := cmp.Diff([]RetryOn{RetryOn5xx, RetryOnReset, RetryOnUnavailable}, s.Retry.RetryOn); diff != "" {
		t.Errorf("retryOn not in canonical order (-want +got):\n%s", diff)
	}
	if *s.Retry.IdempotencyHeader != "x-idempotency-key" {
		t.Errorf("idempotencyHeader = %q, want it lower-cased", *s.Retry.IdempotencyHeader)
	}
	want := RouteMatch{Path: "/a", Methods: []string{"GET", "POST"}, Headers: []HeaderMatch{{Name: "x-a", Exact: "1"}, {Name: "x-b", Exact: "2"}}}
	if diff := cmp.Diff(want, s.Routes[0].Match); diff != "" {
		t.Errorf("match not normalized (-want +got):\n%s", diff)
	}
}

// TestParseRelease reads every release field in every form: subsets
// (used before they are defined, stored sorted), splits (with a weight of
// 0), a route's subset (a split of one), mirror (a fraction), fault (HTTP
// and gRPC aborts, by name and number), and the header and query parameter
// match forms (sorted by name).
func TestParseRelease(t *testing.T) {
	docs, diags := Parse("p.yaml", []byte(svc(
		"  split:",
		"    - {subset: v1, weight: 90}",
		"    - {subset: v2, weight: 10}",
		"    - {subset: '3', weight: 0}",
		"  mirror: {subset: v2, percent: 0.5}",
		"  fault:",
		"    delay: {percent: 10, duration: 2s}",
		"    abort: {percent: 5, httpStatus: 503}",
		"  subsets:",
		"    v2: {version: v2, track: canary}",
		"    v1: {version: v1}",
		"    3: {version: 3}",
		"  routes:",
		"    - match:",
		"        pathPrefix: /",
		"        headers:",
		"          x-canary: 'true'",
		"          x-debug: {present: true}",
		"          X-User: {regex: '^(alice|bob)$'}",
		"          x-exact: {exact: ''}",
		"        queryParams:",
		"          canary: 1",
		"          Beta: {present: true}",
		"          q: {regex: 'a+'}",
		"          e: {exact: v}",
		"      subset: v2",
		"      fault: {abort: {percent: 100, grpcStatus: unavailable}}",
		"    - match: {pathPrefix: /api}",
		"      split: [{subset: v2, weight: 100}]",
		"      mirror: {subset: v1, percent: 100}",
		"      fault: {delay: {percent: 100, duration: 1h}, abort: {percent: 1, grpcStatus: 4}}",
	)))
	if len(diags) != 0 {
		t.Fatalf("Parse() diagnostics:\n%s", diagText(diags))
	}
	s := docs[0].Spec
	want := Spec{
		Subsets: []Subset{
			{Name: "3", Labels: map[string]string{"version": "3"}},
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2", "track": "canary"}},
		},
		Split:  []WeightedSubset{{"v1", 90}, {"v2", 10}, {"3", 0}},
		Mirror: &Mirror{Subset: "v2", Percent: 0.5},
		Fault:  &Fault{Delay: &FaultDelay{Percent: 10, Duration: 2 * time.Second}, Abort: &FaultAbort{Percent: 5, HTTPStatus: 503}},
		Routes: []RouteSpec{
			{
				Index: 0, Line: 18,
				Match: RouteMatch{
					PathPrefix: "/",
					Headers: []HeaderMatch{
						{Name: "x-canary", Exact: "true"},
						{Name: "x-debug", Present: true},
						{Name: "x-exact", Exact: ""},
						{Name: "x-user", Regex: "^(alice|bob)$"},
					},
					QueryParams: []HeaderMatch{
						{Name: "Beta", Present: true},
						{Name: "canary", Exact: "1"},
						{Name: "e", Exact: "v"},
						{Name: "q", Regex: "a+"},
					},
				},
				Split: []WeightedSubset{{"v2", 100}},
				Fault: &Fault{Abort: &FaultAbort{Percent: 100, GRPCStatus: 14}},
			},
			{
				Index: 1, Line: 32,
				Match:  RouteMatch{PathPrefix: "/api"},
				Split:  []WeightedSubset{{"v2", 100}},
				Mirror: &Mirror{Subset: "v1", Percent: 100},
				Fault:  &Fault{Delay: &FaultDelay{Percent: 100, Duration: time.Hour}, Abort: &FaultAbort{Percent: 1, GRPCStatus: 4}},
			},
		},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}
}

// TestParseGRPCStatusNames: every gRPC status is accepted by its name and
// its number, and the names are gRPC's (as in its JSON form, upper case
// with underscores).
func TestParseGRPCStatusNames(t *testing.T) {
	for i, name := range grpcStatusNames {
		var c codes.Code
		if err := c.UnmarshalJSON([]byte(`"` + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + `"`)); err != nil || uint32(c) != uint32(i+1) {
			t.Errorf("%s: gRPC's code for it is %d (%v), want %d", name, c, err, i+1)
		}
		for _, v := range []string{name, fmt.Sprint(i + 1)} {
			docs, diags := Parse("p.yaml", []byte(svc("  fault: {abort: {percent: 1, grpcStatus: "+v+"}}")))
			if len(diags) != 0 {
				t.Fatalf("grpcStatus %s: diagnostics:\n%s", v, diagText(diags))
			}
			if got := docs[0].Spec.Fault.Abort.GRPCStatus; got != uint32(i+1) {
				t.Errorf("grpcStatus %s = %d, want %d", v, got, i+1)
			}
		}
	}
}

// TestParseMeshRouteMatchForms: MeshPolicy routes may use the new match
// forms, though not the release fields.
func TestParseMeshRouteMatchForms(t *testing.T) {
	docs, diags := Parse("p.yaml", []byte(mesh(
		"  defaults:",
		"    routes:",
		"      - match: {pathPrefix: /, headers: {x-debug: {present: true}}, queryParams: {debug: {regex: '1|true'}}}",
		"        timeout: 1m",
	)))
	if len(diags) != 0 {
		t.Fatalf("Parse() diagnostics:\n%s", diagText(diags))
	}
	want := RouteMatch{PathPrefix: "/", Headers: []HeaderMatch{{Name: "x-debug", Present: true}}, QueryParams: []HeaderMatch{{Name: "debug", Regex: "1|true"}}}
	if diff := cmp.Diff(want, docs[0].Spec.Routes[0].Match); diff != "" {
		t.Errorf("match (-want +got):\n%s", diff)
	}
}

// TestParseMatchesDiffer: routes whose matches differ only in a header's or
// query parameter's form, or in the case of a query parameter's name, are
// different routes.
func TestParseMatchesDiffer(t *testing.T) {
	set := mustLoad(t, "p.yaml", svc(
		"  routes:",
		"    - match: {pathPrefix: /, headers: {x-a: b}}",
		"    - match: {pathPrefix: /, headers: {x-a: {regex: b}}}",
		"    - match: {pathPrefix: /, headers: {x-a: {present: true}}}",
		"    - match: {pathPrefix: /, queryParams: {a: b}}",
		"    - match: {pathPrefix: /, queryParams: {A: b}}",
		"    - match: {pathPrefix: /, queryParams: {a: {regex: b}}}",
		"    - match: {pathPrefix: /, headers: {a: b}}",
	))
	if got := len(set.Resolve("web").Routes); got != 7 {
		t.Errorf("got %d routes, want 7", got)
	}
}

func TestParseLoadBalancerForms(t *testing.T) {
	tests := []struct {
		spec []string
		want LoadBalancer
	}{
		{[]string{"  loadBalancer: random"}, LoadBalancer{Policy: Random}},
		{[]string{"  loadBalancer: ring_hash"}, LoadBalancer{Policy: RingHash, RingHash: RingHashConfig{MinRingSize: 1024, MaxRingSize: 8388608}}},
		{[]string{"  loadBalancer: {policy: least_request, leastRequest: {choiceCount: 5}}"}, LoadBalancer{Policy: LeastRequest, ChoiceCount: 5}},
		{
			[]string{"  loadBalancer:", "    policy: ring_hash", "    ringHash: {hashOn: {header: X-User}, minRingSize: 64, maxRingSize: 4096}"},
			LoadBalancer{Policy: RingHash, RingHash: RingHashConfig{HashOn: HashOn{Header: "x-user"}, MinRingSize: 64, MaxRingSize: 4096}},
		},
		{
			[]string{"  loadBalancer: {policy: ring_hash, ringHash: {hashOn: {sourceIP: true}}}"},
			LoadBalancer{Policy: RingHash, RingHash: RingHashConfig{HashOn: HashOn{SourceIP: true}, MinRingSize: 1024, MaxRingSize: 8388608}},
		},
	}
	for _, tt := range tests {
		set := mustLoad(t, "p.yaml", svc(tt.spec...))
		if diff := cmp.Diff(tt.want, set.Resolve("web").LoadBalancer); diff != "" {
			t.Errorf("%v: mismatch (-want +got):\n%s", tt.spec, diff)
		}
	}
}

type wantDiag struct {
	loc, field, msg string // msg is a substring of the message
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []wantDiag
	}{
		// Document structure.
		{"invalid YAML", lines("apiVersion: sluice.dev/v1", "kind: [ServicePolicy"), []wantDiag{{"p.yaml:2", "", "invalid YAML: did not find expected ',' or ']'"}}},
		{"invalid YAML in a block", lines("apiVersion: sluice.dev/v1", "spec:", "  retry:", "    attempts: 1", "   timeout: 2s"), []wantDiag{{"p.yaml:3", "", "invalid YAML: did not find expected key"}}},
		{"unterminated string", lines("apiVersion: sluice.dev/v1", "kind: 'ServicePolicy"), []wantDiag{{"p.yaml:2", "", "invalid YAML: found unexpected end of stream"}}},
		{"bad indentation", lines("apiVersion: sluice.dev/v1", "kind: ServicePolicy", " metadata: {name: web}"), []wantDiag{{"p.yaml:3", "", "invalid YAML: mapping values are not allowed in this context"}}},
		{"unknown alias", lines("apiVersion: sluice.dev/v1", "kind: *k"), []wantDiag{{"p.yaml:2", "", "invalid YAML: unknown anchor 'k' referenced"}}},
		{"tab indentation", lines("apiVersion: sluice.dev/v1", "\tkind: ServicePolicy"), []wantDiag{{"p.yaml:2", "", "invalid YAML"}}},
		{"not a mapping", lines("- a", "- b"), []wantDiag{{"p.yaml:1", "", "expected a mapping, got a list"}}},
		{"unknown top-level field", svc("  timeout: 1s") + "specs: {}\n", []wantDiag{{"p.yaml:6", "specs", "unknown field (known: apiVersion, kind, metadata, spec)"}}},
		{"field given twice", lines("apiVersion: sluice.dev/v1", "kind: ServicePolicy", "kind: MeshPolicy", "metadata: {name: web}", "spec: {}"), []wantDiag{{"p.yaml:3", "kind", "field given twice (first at line 2)"}}},
		{"missing apiVersion", lines("kind: ServicePolicy", "metadata: {name: web}", "spec: {}"), []wantDiag{{"p.yaml:1", "apiVersion", "required field is missing (want sluice.dev/v1)"}}},
		{"wrong apiVersion", lines("apiVersion: sluice.dev/v2", "kind: ServicePolicy", "metadata: {name: web}", "spec: {}"), []wantDiag{{"p.yaml:1", "apiVersion", `unsupported API version "sluice.dev/v2"`}}},
		{"missing kind", lines("apiVersion: sluice.dev/v1", "metadata: {name: web}", "spec: {}"), []wantDiag{{"p.yaml:1", "kind", "required field is missing (want MeshPolicy or ServicePolicy)"}}},
		{"unknown kind", lines("apiVersion: sluice.dev/v1", "kind: RoutePolicy", "metadata: {name: web}", "spec: {}"), []wantDiag{{"p.yaml:2", "kind", `unknown kind "RoutePolicy" (want MeshPolicy or ServicePolicy)`}}},
		{"missing metadata", lines("apiVersion: sluice.dev/v1", "kind: ServicePolicy", "spec: {}"), []wantDiag{{"p.yaml:1", "metadata.name", "required field is missing"}}},
		{"missing name", lines("apiVersion: sluice.dev/v1", "kind: ServicePolicy", "metadata: {labels: {team: a}}", "spec: {}"), []wantDiag{{"p.yaml:3", "metadata.name", "required field is missing"}}},
		{"invalid service name", lines("apiVersion: sluice.dev/v1", "kind: ServicePolicy", "metadata:", "  name: User_Service!", "spec: {}"), []wantDiag{{"p.yaml:4", "metadata.name", `"User_Service!" is not a valid service name`}}},
		{"unknown metadata field", lines("apiVersion: sluice.dev/v1", "kind: ServicePolicy", "metadata: {name: web, namespace: prod}", "spec: {}"), []wantDiag{{"p.yaml:3", "metadata.namespace", "unknown field"}}},
		{"label not a string", lines("apiVersion: sluice.dev/v1", "kind: ServicePolicy", "metadata: {name: web, labels: {team: [a]}}", "spec: {}"), []wantDiag{{"p.yaml:3", "metadata.labels.team", "expected a string, got a list"}}},
		{"missing spec", lines("apiVersion: sluice.dev/v1", "kind: ServicePolicy", "metadata: {name: web}"), []wantDiag{{"p.yaml:1", "spec", "required field is missing"}}},
		{"spec not a mapping", svc("  - timeout: 1s"), []wantDiag{{"p.yaml:5", "spec", "expected a mapping, got a list"}}},
		{"unknown spec field", svc("  timeout: 1s", "  timeouts: 2s"), []wantDiag{{"p.yaml:6", "spec.timeouts", "unknown field (known: loadBalancer, timeout, circuitBreaker, outlierDetection, healthyPanicThreshold, slowStart, healthCheck, locality, retry, rateLimit, tracing, subsets, split, mirror, fault, routes, dependencies)"}}},
		{"YAML merge key", svc("  retry:", "    <<: {attempts: 2}"), []wantDiag{{"p.yaml:6", "spec.retry.<<", "merge keys are not supported"}}},
		{"error in second document", svc("  timeout: 1s") + "---\n" + svc("  timeout: 1"), []wantDiag{{"p.yaml:11", "spec.timeout", "a unit is required"}}},
		{"errors in order", svc("  timeout: 1", "  retry: {attempts: 99}"), []wantDiag{{"p.yaml:5", "spec.timeout", "unit"}, {"p.yaml:6", "spec.retry.attempts", "from 0 to 10"}}},

		// loadBalancer.
		{"unknown lb policy", svc("  loadBalancer: fastest"), []wantDiag{{"p.yaml:5", "spec.loadBalancer", `unknown load-balancing policy "fastest" (want round_robin, least_request, random or ring_hash)`}}},
		{"lb policy missing", svc("  loadBalancer: {leastRequest: {choiceCount: 3}}"), []wantDiag{{"p.yaml:5", "spec.loadBalancer.policy", "required field is missing"}}},
		{"leastRequest on round_robin", svc("  loadBalancer:", "    policy: round_robin", "    leastRequest: {choiceCount: 3}"), []wantDiag{{"p.yaml:7", "spec.loadBalancer.leastRequest", "applies only to policy least_request, not round_robin"}}},
		{"ringHash on random", svc("  loadBalancer:", "    policy: random", "    ringHash: {minRingSize: 8}"), []wantDiag{{"p.yaml:7", "spec.loadBalancer.ringHash", "applies only to policy ring_hash"}}},
		{"choiceCount below 2", svc("  loadBalancer:", "    policy: least_request", "    leastRequest:", "      choiceCount: 1"), []wantDiag{{"p.yaml:8", "spec.loadBalancer.leastRequest.choiceCount", "must be a whole number of at least 2, got 1"}}},
		{"ring sizes inverted", svc("  loadBalancer:", "    policy: ring_hash", "    ringHash:", "      minRingSize: 4096", "      maxRingSize: 1024"), []wantDiag{{"p.yaml:9", "spec.loadBalancer.ringHash.maxRingSize", "minRingSize (4096) is larger than maxRingSize (1024)"}}},
		{"min ring above default max", svc("  loadBalancer:", "    policy: ring_hash", "    ringHash:", "      minRingSize: 9000000"), []wantDiag{{"p.yaml:8", "spec.loadBalancer.ringHash.minRingSize", "from 1 to 8388608"}}},
		{"ring size zero", svc("  loadBalancer: {policy: ring_hash, ringHash: {maxRingSize: 0}}"), []wantDiag{{"p.yaml:5", "spec.loadBalancer.ringHash.maxRingSize", "from 1 to 8388608, got 0"}}},
		{"hashOn two keys", svc("  loadBalancer:", "    policy: ring_hash", "    ringHash:", "      hashOn: {header: x-user, sourceIP: true}"), []wantDiag{{"p.yaml:8", "spec.loadBalancer.ringHash.hashOn", "set exactly one of header and sourceIP"}}},
		{"hashOn sourceIP false", svc("  loadBalancer:", "    policy: ring_hash", "    ringHash:", "      hashOn:", "        sourceIP: false"), []wantDiag{{"p.yaml:9", "spec.loadBalancer.ringHash.hashOn.sourceIP", "hashes on nothing"}}},
		{"hashOn pseudo-header", svc("  loadBalancer:", "    policy: ring_hash", "    ringHash:", "      hashOn:", "        header: ':authority'"), []wantDiag{{"p.yaml:9", "spec.loadBalancer.ringHash.hashOn.header", `":authority" is not an HTTP header name`}}},

		// timeout and durations.
		{"duration without unit", svc("  timeout: 2"), []wantDiag{{"p.yaml:5", "spec.timeout", `expected a duration such as 500ms, 2s or 1m, got "2" (a unit is required)`}}},
		{"duration garbage", svc("  timeout: soon"), []wantDiag{{"p.yaml:5", "spec.timeout", `expected a duration such as 500ms, 2s or 1m, got "soon"`}}},
		{"duration zero", svc("  timeout: 0s"), []wantDiag{{"p.yaml:5", "spec.timeout", "must be from 1ms to 24h, got 0s"}}},
		{"duration negative", svc("  timeout: -1s"), []wantDiag{{"p.yaml:5", "spec.timeout", "must be from 1ms to 24h, got -1s"}}},
		{"duration below 1ms", svc("  timeout: 500us"), []wantDiag{{"p.yaml:5", "spec.timeout", "must be from 1ms to 24h"}}},
		{"timeout above 24h", svc("  timeout: 25h"), []wantDiag{{"p.yaml:5", "spec.timeout", "must be from 1ms to 24h, got 25h"}}},
		{"duration as a list", svc("  timeout: [1s]"), []wantDiag{{"p.yaml:5", "spec.timeout", "got a list"}}},

		// circuitBreaker.
		{"maxConnections zero", svc("  circuitBreaker: {maxConnections: 0}"), []wantDiag{{"p.yaml:5", "spec.circuitBreaker.maxConnections", "must be a whole number of at least 1, got 0"}}},
		{"maxPendingRequests negative", svc("  circuitBreaker:", "    maxPendingRequests: -5"), []wantDiag{{"p.yaml:6", "spec.circuitBreaker.maxPendingRequests", "at least 1, got -5"}}},
		{"maxRequests fraction", svc("  circuitBreaker:", "    maxRequests: 1.5"), []wantDiag{{"p.yaml:6", "spec.circuitBreaker.maxRequests", `expected a whole number, got "1.5"`}}},
		{"maxRetries quoted", svc("  circuitBreaker:", "    maxRetries: '3'"), []wantDiag{{"p.yaml:6", "spec.circuitBreaker.maxRetries", `expected a whole number, got "3"`}}},
		{"maxRequests overflow", svc("  circuitBreaker:", "    maxRequests: 4294967296"), []wantDiag{{"p.yaml:6", "spec.circuitBreaker.maxRequests", "at least 1, got 4294967296"}}},
		{"circuitBreaker unknown", svc("  circuitBreaker: {maxConnection: 5}"), []wantDiag{{"p.yaml:5", "spec.circuitBreaker.maxConnection", "unknown field (known: maxConnections, maxPendingRequests, maxRequests, maxRetries)"}}},
		{"circuitBreaker null", svc("  circuitBreaker:"), []wantDiag{{"p.yaml:5", "spec.circuitBreaker", "expected a mapping, got nothing (write {} to use the defaults)"}}},

		// outlierDetection.
		{"errorPercent above 100", svc("  outlierDetection:", "    errorPercent: 150"), []wantDiag{{"p.yaml:6", "spec.outlierDetection.errorPercent", "must be a whole percentage from 0 to 100, got 150"}}},
		{"errorPercent fraction", svc("  outlierDetection:", "    errorPercent: 50.5"), []wantDiag{{"p.yaml:6", "spec.outlierDetection.errorPercent", `expected a whole percentage from 0 to 100, got "50.5"`}}},
		{"maxEjectionPercent negative", svc("  outlierDetection:", "    maxEjectionPercent: -1"), []wantDiag{{"p.yaml:6", "spec.outlierDetection.maxEjectionPercent", "from 0 to 100, got -1"}}},
		{"consecutiveErrors negative", svc("  outlierDetection:", "    consecutiveErrors: -1"), []wantDiag{{"p.yaml:6", "spec.outlierDetection.consecutiveErrors", "at least 0, got -1"}}},
		{"minRequests zero", svc("  outlierDetection:", "    minRequests: 0"), []wantDiag{{"p.yaml:6", "spec.outlierDetection.minRequests", "at least 1, got 0"}}},
		{"minHosts zero", svc("  outlierDetection:", "    minHosts: 0"), []wantDiag{{"p.yaml:6", "spec.outlierDetection.minHosts", "at least 1, got 0"}}},
		{"interval too long", svc("  outlierDetection:", "    interval: 2h"), []wantDiag{{"p.yaml:6", "spec.outlierDetection.interval", "must be from 1ms to 1h, got 2h"}}},
		{"baseEjectionTime no unit", svc("  outlierDetection:", "    baseEjectionTime: 30"), []wantDiag{{"p.yaml:6", "spec.outlierDetection.baseEjectionTime", "a unit is required"}}},

		// retry.
		{"attempts above 10", svc("  retry:", "    attempts: 11"), []wantDiag{{"p.yaml:6", "spec.retry.attempts", "must be a whole number from 0 to 10, got 11"}}},
		{"attempts quoted", svc("  retry:", "    attempts: \"3\""), []wantDiag{{"p.yaml:6", "spec.retry.attempts", `expected a whole number, got "3"`}}},
		{"retryOn unknown", svc("  retry:", "    retryOn: [5xx, timeout]"), []wantDiag{{"p.yaml:6", "spec.retry.retryOn[1]", `unknown retry condition "timeout" (want 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, envoy-ratelimited, cancelled, deadline-exceeded, internal, resource-exhausted or unavailable)`}}},
		{"retryOn twice", svc("  retry:", "    retryOn:", "      - reset", "      - reset"), []wantDiag{{"p.yaml:8", "spec.retry.retryOn[1]", "reset is listed twice"}}},
		{"retryOn empty", svc("  retry:", "    retryOn: []"), []wantDiag{{"p.yaml:6", "spec.retry.retryOn", "list at least one retry condition"}}},
		{"retryOn scalar", svc("  retry:", "    retryOn: 5xx"), []wantDiag{{"p.yaml:6", "spec.retry.retryOn", `expected a list, got "5xx"`}}},
		{"retriable-status-codes without codes", svc("  retry:", "    retryOn: [retriable-status-codes]"), []wantDiag{{"p.yaml:6", "spec.retry.retryOn", "retriable-status-codes needs retriableStatusCodes in the same retry block"}}},
		{"codes without retriable-status-codes", svc("  retry:", "    retryOn: [5xx]", "    retriableStatusCodes: [503]"), []wantDiag{{"p.yaml:7", "spec.retry.retriableStatusCodes", "applies only when retryOn in the same retry block lists retriable-status-codes"}}},
		{"codes without retryOn", svc("  retry:", "    retriableStatusCodes: [503]"), []wantDiag{{"p.yaml:6", "spec.retry.retriableStatusCodes", "needs retryOn listing retriable-status-codes"}}},
		{"status code out of range", svc("  retry:", "    retryOn: [retriable-status-codes]", "    retriableStatusCodes: [503, 600]"), []wantDiag{{"p.yaml:7", "spec.retry.retriableStatusCodes[1]", "from 100 to 599, got 600"}}},
		{"backoff base above max", svc("  retry:", "    backoff:", "      base: 1s", "      max: 100ms"), []wantDiag{{"p.yaml:7", "spec.retry.backoff.base", "base (1s) is longer than max (100ms)"}}},
		{"backoff max below default base", svc("  retry:", "    backoff: {max: 10ms}"), []wantDiag{{"p.yaml:6", "spec.retry.backoff.max", "max (10ms) is shorter than the default base (25ms); set base too"}}},
		{"backoff unknown field", svc("  retry:", "    backoff: {initial: 10ms}"), []wantDiag{{"p.yaml:6", "spec.retry.backoff.initial", "unknown field (known: base, max)"}}},
		{"perTryTimeout above timeout", svc("  timeout: 1s", "  retry:", "    perTryTimeout: 2s"), []wantDiag{{"p.yaml:7", "spec.retry.perTryTimeout", "perTryTimeout (2s) is longer than the timeout (1s) set beside it"}}},
		{"perTryTimeout bad", svc("  retry:", "    perTryTimeout: fast"), []wantDiag{{"p.yaml:6", "spec.retry.perTryTimeout", "expected a duration"}}},
		{"idempotencyHeader invalid", svc("  retry:", "    idempotencyHeader: x idem"), []wantDiag{{"p.yaml:6", "spec.retry.idempotencyHeader", `"x idem" is not an HTTP header name`}}},
		{"idempotencyHeader not a string", svc("  retry:", "    idempotencyHeader: 42"), []wantDiag{{"p.yaml:6", "spec.retry.idempotencyHeader", `expected a header name, got "42"`}}},
		{"retryBudget percent", svc("  retry:", "    retryBudget: {budgetPercent: 120}"), []wantDiag{{"p.yaml:6", "spec.retry.retryBudget.budgetPercent", "must be a percentage from 0 to 100, got 120"}}},
		{"retryBudget concurrency", svc("  retry:", "    retryBudget:", "      minRetryConcurrency: 0"), []wantDiag{{"p.yaml:7", "spec.retry.retryBudget.minRetryConcurrency", "at least 1, got 0"}}},

		// rateLimit.
		{"requestsPerSecond zero", svc("  rateLimit: {requestsPerSecond: 0}"), []wantDiag{{"p.yaml:5", "spec.rateLimit.requestsPerSecond", "must be a whole number from 1 to 1000000, got 0"}}},
		{"requestsPerSecond too high", svc("  rateLimit:", "    requestsPerSecond: 2000000"), []wantDiag{{"p.yaml:6", "spec.rateLimit.requestsPerSecond", "from 1 to 1000000, got 2000000"}}},
		{"burst zero", svc("  rateLimit:", "    requestsPerSecond: 10", "    burst: 0"), []wantDiag{{"p.yaml:7", "spec.rateLimit.burst", "at least 1, got 0"}}},
		{"requestsPerSecond missing", svc("  rateLimit:", "    burst: 10"), []wantDiag{{"p.yaml:6", "spec.rateLimit.requestsPerSecond", "required field is missing"}}},
		{"disabled with a rate", svc("  rateLimit:", "    requestsPerSecond: 10", "    disabled: true"), []wantDiag{{"p.yaml:7", "spec.rateLimit.disabled", "cannot be combined"}}},
		{"disabled not a bool", svc("  rateLimit: {disabled: yes}"), []wantDiag{{"p.yaml:5", "spec.rateLimit.disabled", `expected true or false, got "yes"`}}},

		// tracing in a ServicePolicy.
		{"service tracing collector", svc("  tracing:", "    collector: otel:4317"), []wantDiag{{"p.yaml:6", "spec.tracing.collector", "collector is mesh-wide: set it in the MeshPolicy's spec.tracing; a ServicePolicy may only override samplingPercent"}}},
		{"service tracing tags", svc("  tracing: {tags: {a: b}}"), []wantDiag{{"p.yaml:5", "spec.tracing.tags", "tags is mesh-wide"}}},
		{"service samplingPercent above 100", svc("  tracing: {samplingPercent: 100.5}"), []wantDiag{{"p.yaml:5", "spec.tracing.samplingPercent", "must be a percentage from 0 to 100, got 100.5"}}},

		// MeshPolicy.
		{"mesh field outside defaults", mesh("  timeout: 1s"), []wantDiag{{"p.yaml:5", "spec.timeout", "a MeshPolicy sets timeout under spec.defaults"}}},
		{"mesh unknown spec field", mesh("  extras: {}"), []wantDiag{{"p.yaml:5", "spec.extras", "unknown field (known: defaults, tracing)"}}},
		{"mesh defaults tracing", mesh("  defaults:", "    tracing: {samplingPercent: 5}"), []wantDiag{{"p.yaml:6", "spec.defaults.tracing", "tracing is mesh-wide: set it in the MeshPolicy's spec.tracing"}}},
		{"mesh defaults error path", mesh("  defaults:", "    retry:", "      attempts: -1"), []wantDiag{{"p.yaml:7", "spec.defaults.retry.attempts", "from 0 to 10, got -1"}}},
		{"mesh defaults route error path", mesh("  defaults:", "    routes:", "      - match: {pathPrefix: /healthz}", "        retry: {attempts: x}"), []wantDiag{{"p.yaml:8", "spec.defaults.routes[0].retry.attempts", "expected a whole number"}}},
		{"tracing collector missing", mesh("  tracing:", "    samplingPercent: 5"), []wantDiag{{"p.yaml:6", "spec.tracing.collector", "required field is missing"}}},
		{"collector with scheme", mesh("  tracing:", "    collector: http://otel:4317"), []wantDiag{{"p.yaml:6", "spec.tracing.collector", "leave out the scheme"}}},
		{"collector bad port", mesh("  tracing:", "    collector: otel:99999"), []wantDiag{{"p.yaml:6", "spec.tracing.collector", "the port must be from 1 to 65535"}}},
		{"collector empty port", mesh("  tracing:", "    collector: 'otel:'"), []wantDiag{{"p.yaml:6", "spec.tracing.collector", "the port must be from 1 to 65535"}}},
		{"collector IP without port", mesh("  tracing:", "    collector: 10.0.0.1"), []wantDiag{{"p.yaml:6", "spec.tracing.collector", "an IP address needs a port"}}},
		{"collector bad host", mesh("  tracing:", "    collector: 'otel collector:4317'"), []wantDiag{{"p.yaml:6", "spec.tracing.collector", "not a DNS name or service name"}}},
		{"collector IPv6 without brackets", mesh("  tracing:", "    collector: '::1:4317'"), []wantDiag{{"p.yaml:6", "spec.tracing.collector", "IPv6 addresses go in brackets"}}},
		{"sampling negative", mesh("  tracing:", "    collector: otel:4317", "    samplingPercent: -1"), []wantDiag{{"p.yaml:7", "spec.tracing.samplingPercent", "from 0 to 100, got -1"}}},
		{"sampling NaN", mesh("  tracing:", "    collector: otel:4317", "    samplingPercent: .nan"), []wantDiag{{"p.yaml:7", "spec.tracing.samplingPercent", "from 0 to 100"}}},
		{"tag value not a string", mesh("  tracing:", "    collector: otel:4317", "    tags:", "      env: {a: b}"), []wantDiag{{"p.yaml:8", "spec.tracing.tags.env", "expected a string, got a mapping"}}},
		{"tags not a mapping", mesh("  tracing:", "    collector: otel:4317", "    tags: [env]"), []wantDiag{{"p.yaml:7", "spec.tracing.tags", "expected a mapping of tag names to values, got a list"}}},

		// routes.
		{"routes not a list", svc("  routes: {match: {path: /}}"), []wantDiag{{"p.yaml:5", "spec.routes", "expected a list, got a mapping"}}},
		{"route missing match", svc("  routes:", "    - timeout: 1s"), []wantDiag{{"p.yaml:6", "spec.routes[0].match", "required field is missing"}}},
		{"match without path", svc("  routes:", "    - match: {methods: [GET]}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match", "needs pathPrefix or path"}}},
		{"match with both paths", svc("  routes:", "    - match:", "        pathPrefix: /a", "        path: /a/b"), []wantDiag{{"p.yaml:8", "spec.routes[0].match.path", "set pathPrefix or path, not both"}}},
		{"path without slash", svc("  routes:", "    - match: {pathPrefix: orders}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.pathPrefix", `"orders" is not a path`}}},
		{"path with query", svc("  routes:", "    - match: {path: '/a?b=1'}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.path", "has no spaces, ? or #"}}},
		{"path regex unsupported", svc("  routes:", "    - match: {pathRegex: '/a.*'}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.pathRegex", "unknown field (known: pathPrefix, path, methods, headers, queryParams)"}}},
		{"method lower case", svc("  routes:", "    - match: {pathPrefix: /, methods: [GET, post]}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.methods[1]", "methods are upper case: write POST"}}},
		{"method unknown", svc("  routes:", "    - match:", "        pathPrefix: /", "        methods: [FETCH]"), []wantDiag{{"p.yaml:8", "spec.routes[0].match.methods[0]", `unknown HTTP method "FETCH"`}}},
		{"method twice", svc("  routes:", "    - match: {pathPrefix: /, methods: [GET, GET]}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.methods[1]", "GET is listed twice"}}},
		{"methods empty", svc("  routes:", "    - match: {pathPrefix: /, methods: []}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.methods", "list at least one method"}}},
		{"header name invalid", svc("  routes:", "    - match:", "        pathPrefix: /", "        headers: {'x tenant': a}"), []wantDiag{{"p.yaml:8", "spec.routes[0].match.headers.x tenant", `"x tenant" is not an HTTP header name`}}},
		{"header value not scalar", svc("  routes:", "    - match:", "        pathPrefix: /", "        headers:", "          x-tenant: [a]"), []wantDiag{{"p.yaml:9", "spec.routes[0].match.headers.x-tenant", "expected a header value, got a list"}}},
		{"header twice", svc("  routes:", "    - match:", "        pathPrefix: /", "        headers: {x-a: '1', X-A: '2'}"), []wantDiag{{"p.yaml:8", "spec.routes[0].match.headers.x-a", "header given twice (first at line 8)"}}},
		{"route service-wide field", svc("  routes:", "    - match: {pathPrefix: /}", "      loadBalancer: random"), []wantDiag{{"p.yaml:7", "spec.routes[0].loadBalancer", "loadBalancer applies to the whole service, not to one route"}}},
		{"route retryBudget", svc("  routes:", "    - match: {pathPrefix: /}", "      retry:", "        retryBudget: {}"), []wantDiag{{"p.yaml:8", "spec.routes[0].retry.retryBudget", "retryBudget applies to the whole service"}}},
		{"route duplicate match", svc("  routes:", "    - match: {pathPrefix: /a, methods: [GET, POST]}", "    - match: {pathPrefix: /b}", "    - match: {pathPrefix: /a, methods: [POST, GET]}"), []wantDiag{{"p.yaml:8", "spec.routes[2].match", "same match as spec.routes[0] (line 6)"}}},
		{"route perTryTimeout above route timeout", svc("  routes:", "    - match: {pathPrefix: /}", "      timeout: 100ms", "      retry: {perTryTimeout: 1s}"), []wantDiag{{"p.yaml:8", "spec.routes[0].retry.perTryTimeout", "perTryTimeout (1s) is longer than the timeout (100ms)"}}},
		{"route timeout invalid", svc("  routes:", "    - match: {pathPrefix: /}", "      timeout: 0ms"), []wantDiag{{"p.yaml:7", "spec.routes[0].timeout", "must be from 1ms to 24h"}}},
		{"route rateLimit invalid", svc("  routes:", "    - match: {pathPrefix: /}", "      rateLimit: {requestsPerSecond: 5, burst: -1}"), []wantDiag{{"p.yaml:7", "spec.routes[0].rateLimit.burst", "at least 1, got -1"}}},
		{"route retry attempts", svc("  routes:", "    - match: {pathPrefix: /}", "      retry:", "        attempts: 12"), []wantDiag{{"p.yaml:8", "spec.routes[0].retry.attempts", "from 0 to 10, got 12"}}},
		{"panic threshold above 100", svc("  healthyPanicThreshold: 120"), []wantDiag{{"p.yaml:5", "spec.healthyPanicThreshold", "must be a percentage from 0 to 100, got 120"}}},
		{"slow start without window", svc("  slowStart: {aggression: 2}"), []wantDiag{{"p.yaml:5", "spec.slowStart.window", "required field is missing"}}},
		{"slow start aggression zero", svc("  slowStart: {window: 30s, aggression: 0}"), []wantDiag{{"p.yaml:5", "spec.slowStart.aggression", "above 0"}}},
		{"slow start min weight", svc("  slowStart:", "    window: 30s", "    minWeightPercent: 101"), []wantDiag{{"p.yaml:7", "spec.slowStart.minWeightPercent", "percentage from 0 to 100"}}},
		{"slow start with ring hash", svc("  loadBalancer: ring_hash", "  slowStart: {window: 30s}"), []wantDiag{{"p.yaml:6", "spec.slowStart", "applies to load balancers round_robin and least_request only, not ring_hash"}}},
		{"health check without a kind", svc("  healthCheck: {interval: 5s}"), []wantDiag{{"p.yaml:5", "spec.healthCheck", "needs one of http, grpc and tcp"}}},
		{"health check with two kinds", svc("  healthCheck: {tcp: {}, grpc: {}}"), []wantDiag{{"p.yaml:5", "spec.healthCheck", "give exactly one of http, grpc and tcp"}}},
		{"health check http without path", svc("  healthCheck:", "    http: {expectedStatuses: [200]}"), []wantDiag{{"p.yaml:6", "spec.healthCheck.http.path", "required field is missing"}}},
		{"health check bad path", svc("  healthCheck:", "    http: {path: healthz}"), []wantDiag{{"p.yaml:6", "spec.healthCheck.http.path", "is not a path"}}},
		{"health check bad status", svc("  healthCheck:", "    http: {path: /healthz, expectedStatuses: [200, 700]}"), []wantDiag{{"p.yaml:6", "spec.healthCheck.http.expectedStatuses[1]", "from 100 to 599"}}},
		{"health check timeout above interval", svc("  healthCheck:", "    interval: 1s", "    timeout: 2s", "    tcp: {}"), []wantDiag{{"p.yaml:7", "spec.healthCheck.timeout", "longer than the interval"}}},
		{"health check threshold zero", svc("  healthCheck: {tcp: {}, unhealthyThreshold: 0}"), []wantDiag{{"p.yaml:5", "spec.healthCheck.unhealthyThreshold", "from 1 to 100"}}},
		{"locality without mode", svc("  locality: {failover: [{from: r1, to: r2}]}"), []wantDiag{{"p.yaml:5", "spec.locality.mode", "required field is missing (off, failover or distribute)"}}},
		{"locality unknown mode", svc("  locality: {mode: nearest}"), []wantDiag{{"p.yaml:5", "spec.locality.mode", `unknown locality mode "nearest" (want off, failover or distribute)`}}},
		{"locality failover beside distribute", svc("  locality:", "    mode: distribute", "    failover: [{from: r1, to: r2}]"), []wantDiag{{"p.yaml:7", "spec.locality.failover", "applies to mode failover only, not distribute"}}},
		{"locality distribute beside failover", svc("  locality:", "    mode: failover", "    distribute: [{from: '*', to: {r1: 100}}]"), []wantDiag{{"p.yaml:7", "spec.locality.distribute", "applies to mode distribute only, not failover"}}},
		{"locality distribute without entries", svc("  locality: {mode: distribute}"), []wantDiag{{"p.yaml:5", "spec.locality.distribute", "needs at least one entry"}}},
		{"locality too many failover rules", svc("  locality:", "    mode: failover", "    failover: ["+strings.Repeat("{from: r1, to: r2}, ", 33)+"]"), []wantDiag{{"p.yaml:7", "spec.locality.failover", "has 33 entries, more than 32"}}},
		{"locality failover to itself", svc("  locality:", "    mode: failover", "    failover:", "      - {from: r1, to: r1}"), []wantDiag{{"p.yaml:8", "spec.locality.failover[0]", `fails region "r1" over to itself`}}},
		{"locality failover twice", svc("  locality:", "    mode: failover", "    failover:", "      - {from: r1, to: r2}", "      - {from: r1, to: r2}"), []wantDiag{{"p.yaml:9", "spec.locality.failover[1]", "repeats spec.locality.failover[0]"}}},
		{"locality failover without to", svc("  locality:", "    mode: failover", "    failover:", "      - {from: r1}"), []wantDiag{{"p.yaml:8", "spec.locality.failover[0].to", "required field is missing"}}},
		{"locality failover bad region", svc("  locality:", "    mode: failover", "    failover:", "      - {from: r1, to: 'r 2'}"), []wantDiag{{"p.yaml:8", "spec.locality.failover[0].to", `"r 2" is not a region name`}}},
		{"locality weights not 100", svc("  locality:", "    mode: distribute", "    distribute:", "      - from: r1/*", "        to: {r1/a: 80, r1/b: 30}"), []wantDiag{{"p.yaml:9", "spec.locality.distribute[0].to", "percentages add up to 110, not 100"}}},
		{"locality weight zero", svc("  locality:", "    mode: distribute", "    distribute:", "      - from: r1/*", "        to: {r1/a: 100, r1/b: 0}"), []wantDiag{{"p.yaml:9", "spec.locality.distribute[0].to.r1/b", "from 1 to 100"}}},
		{"locality bad pattern", svc("  locality:", "    mode: distribute", "    distribute:", "      - from: r1/a/b", "        to: {r1: 100}"), []wantDiag{{"p.yaml:8", "spec.locality.distribute[0].from", `"r1/a/b" is not a locality pattern`}}},
		{"locality same pattern twice", svc("  locality:", "    mode: distribute", "    distribute:", "      - from: '*'", "        to: {r1: 50, r1/*: 50}"), []wantDiag{{"p.yaml:9", "spec.locality.distribute[0].to.r1/*", "names the same localities as r1"}}},
		{"locality from twice", svc("  locality:", "    mode: distribute", "    distribute:", "      - {from: r1, to: {r1: 100}}", "      - {from: r1/*, to: {r2: 100}}"), []wantDiag{{"p.yaml:9", "spec.locality.distribute[1].from", "r1/* is already the from of spec.locality.distribute[0]"}}},
		{"second route error index", svc("  routes:", "    - match: {pathPrefix: /a}", "    - match: {pathPrefix: /b}", "      timeout: 1"), []wantDiag{{"p.yaml:8", "spec.routes[1].timeout", "a unit is required"}}},

		// Release fields: subsets.
		{"subset name invalid", svc("  subsets:", "    V1: {version: v1}"), []wantDiag{{"p.yaml:6", "spec.subsets.V1", `"V1" is not a subset name (lowercase letters, digits and '-'; starts and ends with a letter or digit; at most 63 characters)`}}},
		{"subset name too long", svc("  subsets:", "    "+strings.Repeat("a", 64)+": {version: v1}"), []wantDiag{{"p.yaml:6", "spec.subsets." + strings.Repeat("a", 64), "is not a subset name"}}},
		{"subset without labels", svc("  subsets:", "    v1: {}"), []wantDiag{{"p.yaml:6", "spec.subsets.v1", "needs at least one label, such as {version: v2}"}}},
		{"subset labels not a mapping", svc("  subsets: {v1: v1}"), []wantDiag{{"p.yaml:5", "spec.subsets.v1", `expected a mapping of labels, got "v1"`}}},
		{"subset label not a string", svc("  subsets:", "    v1: {version: [a]}"), []wantDiag{{"p.yaml:6", "spec.subsets.v1.version", "expected a string, got a list"}}},
		{"subset given twice", svc("  subsets:", "    v1: {version: v1}", "    v1: {version: v2}"), []wantDiag{{"p.yaml:7", "spec.subsets.v1", "key given twice (first at line 6)"}}},
		{"subsets empty", svc("  subsets: {}"), []wantDiag{{"p.yaml:5", "spec.subsets", "define at least one subset"}}},
		{"subsets not a mapping", svc("  subsets: [v1]"), []wantDiag{{"p.yaml:5", "spec.subsets", "expected a mapping of subset names to labels, got a list"}}},
		{"subsets too many", svc("  subsets:", manySubsets(65)), []wantDiag{{"p.yaml:5", "spec.subsets", "defines 65 subsets; at most 64 are allowed per service"}}},
		{"use of a subset in error", svc("  subsets: {V1: {version: v1}}", "  split: [{subset: V1, weight: 100}]"), []wantDiag{{"p.yaml:5", "spec.subsets.V1", "is not a subset name"}}},

		// Release fields: split.
		{"split subset undefined", svc(twoSubsets, "  split:", "    - {subset: v1, weight: 90}", "    - {subset: v3, weight: 10}"), []wantDiag{{"p.yaml:8", "spec.split[1].subset", `subset "v3" is not defined in spec.subsets (defined: v1, v2)`}}},
		{"split without subsets", svc("  split: [{subset: v1, weight: 100}]"), []wantDiag{{"p.yaml:5", "spec.split[0].subset", `subset "v1" is not defined: this ServicePolicy has no spec.subsets`}}},
		{"split weights not 100", svc(twoSubsets, "  split:", "    - {subset: v1, weight: 90}", "    - {subset: v2, weight: 20}"), []wantDiag{{"p.yaml:6", "spec.split", "weights add up to 110, not 100"}}},
		{"split weights all 0", svc(twoSubsets, "  split: [{subset: v1, weight: 0}]"), []wantDiag{{"p.yaml:6", "spec.split", "weights add up to 0, not 100"}}},
		{"split weight above 100", svc(twoSubsets, "  split:", "    - {subset: v1, weight: 101}"), []wantDiag{{"p.yaml:7", "spec.split[0].weight", "must be a whole number from 0 to 100, got 101"}}},
		{"split weight fraction", svc(twoSubsets, "  split:", "    - {subset: v1, weight: 50.5}", "    - {subset: v2, weight: 49.5}"), []wantDiag{{"p.yaml:7", "spec.split[0].weight", `expected a whole number, got "50.5"`}, {"p.yaml:8", "spec.split[1].weight", `expected a whole number, got "49.5"`}}},
		{"split subset twice", svc(twoSubsets, "  split:", "    - {subset: v1, weight: 50}", "    - {subset: v1, weight: 50}"), []wantDiag{{"p.yaml:8", "spec.split[1].subset", `subset "v1" is listed twice (first in spec.split[0])`}}},
		{"split empty", svc(twoSubsets, "  split: []"), []wantDiag{{"p.yaml:6", "spec.split", "list at least one {subset: NAME, weight: PERCENT}"}}},
		{"split not a list", svc(twoSubsets, "  split: {v1: 100}"), []wantDiag{{"p.yaml:6", "spec.split", "expected a list, got a mapping"}}},
		{"split entry without weight", svc(twoSubsets, "  split:", "    - subset: v1"), []wantDiag{{"p.yaml:7", "spec.split[0].weight", "required field is missing"}}},
		{"split entry without subset", svc(twoSubsets, "  split:", "    - weight: 100"), []wantDiag{{"p.yaml:7", "spec.split[0].subset", "required field is missing"}}},
		{"split entry unknown field", svc(twoSubsets, "  split: [{subset: v1, percent: 100}]"), []wantDiag{{"p.yaml:6", "spec.split[0].percent", "unknown field (known: subset, weight)"}}},
		{"split too long", svc(manySubsetsLine(64), "  split:", manySplit(65)), []wantDiag{{"p.yaml:6", "spec.split", "lists 65 entries; at most 64 are allowed"}}},

		// Release fields: mirror.
		{"mirror subset undefined", svc(twoSubsets, "  mirror: {subset: v3, percent: 5}"), []wantDiag{{"p.yaml:6", "spec.mirror.subset", `subset "v3" is not defined in spec.subsets (defined: v1, v2)`}}},
		{"mirror percent zero", svc(twoSubsets, "  mirror: {subset: v2, percent: 0}"), []wantDiag{{"p.yaml:6", "spec.mirror.percent", "must be above 0 and at most 100, got 0"}}},
		{"mirror percent above 100", svc(twoSubsets, "  mirror:", "    subset: v2", "    percent: 100.5"), []wantDiag{{"p.yaml:8", "spec.mirror.percent", "must be a percentage from 0 to 100, got 100.5"}}},
		{"mirror without percent", svc(twoSubsets, "  mirror: {subset: v2}"), []wantDiag{{"p.yaml:6", "spec.mirror.percent", "required field is missing"}}},
		{"mirror without subset", svc(twoSubsets, "  mirror:", "    percent: 5"), []wantDiag{{"p.yaml:7", "spec.mirror.subset", "required field is missing"}}},

		// Release fields: fault.
		{"fault empty", svc("  fault: {}"), []wantDiag{{"p.yaml:5", "spec.fault", "needs delay, abort or both"}}},
		{"fault unknown field", svc("  fault: {delay: {percent: 1, duration: 1s}, reset: {}}"), []wantDiag{{"p.yaml:5", "spec.fault.reset", "unknown field (known: delay, abort)"}}},
		{"fault delay without duration", svc("  fault:", "    delay: {percent: 10}"), []wantDiag{{"p.yaml:6", "spec.fault.delay.duration", "required field is missing"}}},
		{"fault delay without percent", svc("  fault:", "    delay:", "      duration: 2s"), []wantDiag{{"p.yaml:7", "spec.fault.delay.percent", "required field is missing"}}},
		{"fault delay too long", svc("  fault:", "    delay: {percent: 10, duration: 2h}"), []wantDiag{{"p.yaml:6", "spec.fault.delay.duration", "must be from 1ms to 1h, got 2h"}}},
		{"fault delay percent zero", svc("  fault:", "    delay: {percent: 0, duration: 1s}"), []wantDiag{{"p.yaml:6", "spec.fault.delay.percent", "must be above 0 and at most 100, got 0"}}},
		{"fault abort without status", svc("  fault:", "    abort: {percent: 5}"), []wantDiag{{"p.yaml:6", "spec.fault.abort", "needs httpStatus (200 to 599) or grpcStatus"}}},
		{"fault abort without percent", svc("  fault:", "    abort: {httpStatus: 503}"), []wantDiag{{"p.yaml:6", "spec.fault.abort.percent", "required field is missing"}}},
		{"fault abort both statuses", svc("  fault:", "    abort:", "      percent: 5", "      httpStatus: 503", "      grpcStatus: unavailable"), []wantDiag{{"p.yaml:9", "spec.fault.abort", "set httpStatus or grpcStatus, not both"}}},
		{"fault abort http status below 200", svc("  fault:", "    abort: {percent: 5, httpStatus: 100}"), []wantDiag{{"p.yaml:6", "spec.fault.abort.httpStatus", "must be a whole number from 200 to 599, got 100"}}},
		{"fault abort http status name", svc("  fault:", "    abort: {percent: 5, httpStatus: unavailable}"), []wantDiag{{"p.yaml:6", "spec.fault.abort.httpStatus", `expected a whole number, got "unavailable"`}}},
		{"fault abort grpc status unknown", svc("  fault:", "    abort: {percent: 5, grpcStatus: teapot}"), []wantDiag{{"p.yaml:6", "spec.fault.abort.grpcStatus", `unknown gRPC status "teapot" (want cancelled, unknown, invalid-argument, deadline-exceeded, not-found, already-exists, permission-denied, resource-exhausted, failed-precondition, aborted, out-of-range, unimplemented, internal, unavailable, data-loss or unauthenticated, or its number from 1 to 16)`}}},
		{"fault abort grpc status ok", svc("  fault:", "    abort: {percent: 5, grpcStatus: 0}"), []wantDiag{{"p.yaml:6", "spec.fault.abort.grpcStatus", "must be a whole number from 1 to 16, got 0"}}},
		{"fault abort grpc status 17", svc("  fault:", "    abort: {percent: 5, grpcStatus: 17}"), []wantDiag{{"p.yaml:6", "spec.fault.abort.grpcStatus", "must be a whole number from 1 to 16, got 17"}}},
		{"fault abort grpc status as in Go", svc("  fault:", "    abort: {percent: 5, grpcStatus: DEADLINE_EXCEEDED}"), []wantDiag{{"p.yaml:6", "spec.fault.abort.grpcStatus", "gRPC status names are lower case with dashes: write deadline-exceeded"}}},
		{"fault abort grpc status a list", svc("  fault:", "    abort: {percent: 5, grpcStatus: [14]}"), []wantDiag{{"p.yaml:6", "spec.fault.abort.grpcStatus", "expected a gRPC status name or number, got a list"}}},

		// Release fields on routes.
		{"route subset and split", svc(twoSubsets, "  routes:", "    - match: {pathPrefix: /}", "      subset: v2", "      split: [{subset: v1, weight: 100}]"), []wantDiag{{"p.yaml:9", "spec.routes[0].split", "set subset or split, not both"}}},
		{"route split and subset", svc(twoSubsets, "  routes:", "    - match: {pathPrefix: /}", "      split: [{subset: v1, weight: 100}]", "      subset: v2"), []wantDiag{{"p.yaml:9", "spec.routes[0].subset", "set subset or split, not both"}}},
		{"route subset undefined", svc(twoSubsets, "  routes:", "    - match: {pathPrefix: /}", "      subset: v3"), []wantDiag{{"p.yaml:8", "spec.routes[0].subset", `subset "v3" is not defined in spec.subsets (defined: v1, v2)`}}},
		{"route subset not a name", svc(twoSubsets, "  routes:", "    - match: {pathPrefix: /}", "      subset: [v1]"), []wantDiag{{"p.yaml:8", "spec.routes[0].subset", "expected a subset name, got a list"}}},
		{"route split weights", svc(twoSubsets, "  routes:", "    - match: {pathPrefix: /}", "      split:", "        - {subset: v1, weight: 50}", "        - {subset: v2, weight: 40}"), []wantDiag{{"p.yaml:8", "spec.routes[0].split", "weights add up to 90, not 100"}}},
		{"route split subset undefined", svc("  routes:", "    - match: {pathPrefix: /}", "      split: [{subset: v1, weight: 100}]", "  subsets: {v2: {version: v2}}"), []wantDiag{{"p.yaml:7", "spec.routes[0].split[0].subset", `subset "v1" is not defined in spec.subsets (defined: v2)`}}},
		{"route mirror subset undefined", svc(twoSubsets, "  routes:", "    - match: {pathPrefix: /}", "      mirror: {subset: v9, percent: 1}"), []wantDiag{{"p.yaml:8", "spec.routes[0].mirror.subset", `subset "v9" is not defined`}}},
		{"route fault invalid", svc("  routes:", "    - match: {pathPrefix: /}", "      fault: {abort: {percent: 5, httpStatus: 600}}"), []wantDiag{{"p.yaml:7", "spec.routes[0].fault.abort.httpStatus", "from 200 to 599, got 600"}}},
		{"route subsets", svc("  routes:", "    - match: {pathPrefix: /}", "      subsets: {v1: {a: b}}"), []wantDiag{{"p.yaml:7", "spec.routes[0].subsets", "subsets applies to the whole service, not to one route"}}},
		{"route unknown field", svc("  routes:", "    - match: {pathPrefix: /}", "      weight: 5"), []wantDiag{{"p.yaml:7", "spec.routes[0].weight", "unknown field (known: match, timeout, retry, rateLimit, subset, split, mirror, fault)"}}},

		// Release fields in a MeshPolicy.
		{"mesh defaults subsets", mesh("  defaults:", "    subsets: {v1: {version: v1}}"), []wantDiag{{"p.yaml:6", "spec.defaults.subsets", "subsets is per service: set it in the service's ServicePolicy"}}},
		{"mesh defaults split", mesh("  defaults:", "    split: [{subset: v1, weight: 100}]"), []wantDiag{{"p.yaml:6", "spec.defaults.split", "split is per service: set it in the service's ServicePolicy"}}},
		{"mesh defaults mirror", mesh("  defaults:", "    mirror: {subset: v1, percent: 1}"), []wantDiag{{"p.yaml:6", "spec.defaults.mirror", "mirror is per service: set it in the service's ServicePolicy"}}},
		{"mesh defaults fault", mesh("  defaults:", "    fault: {delay: {percent: 1, duration: 1s}}"), []wantDiag{{"p.yaml:6", "spec.defaults.fault", "fault is per service: set it in the service's ServicePolicy"}}},
		{"mesh spec split", mesh("  split: [{subset: v1, weight: 100}]"), []wantDiag{{"p.yaml:5", "spec.split", "split is per service: set it in the service's ServicePolicy"}}},
		{"mesh route subset", mesh("  defaults:", "    routes:", "      - match: {pathPrefix: /}", "        subset: v1"), []wantDiag{{"p.yaml:8", "spec.defaults.routes[0].subset", "subset is per service: set it in the service's ServicePolicy"}}},
		{"mesh route split", mesh("  defaults:", "    routes:", "      - match: {pathPrefix: /}", "        split: [{subset: v1, weight: 100}]"), []wantDiag{{"p.yaml:8", "spec.defaults.routes[0].split", "split is per service"}}},
		{"mesh route mirror", mesh("  defaults:", "    routes:", "      - match: {pathPrefix: /}", "        mirror: {subset: v1, percent: 1}"), []wantDiag{{"p.yaml:8", "spec.defaults.routes[0].mirror", "mirror is per service"}}},
		{"mesh route fault", mesh("  defaults:", "    routes:", "      - match: {pathPrefix: /}", "        fault: {abort: {percent: 1, httpStatus: 503}}"), []wantDiag{{"p.yaml:8", "spec.defaults.routes[0].fault", "fault is per service"}}},
		{"mesh route unknown field", mesh("  defaults:", "    routes:", "      - match: {pathPrefix: /}", "        weight: 5"), []wantDiag{{"p.yaml:8", "spec.defaults.routes[0].weight", "unknown field (known: match, timeout, retry, rateLimit)"}}},

		// Header and query parameter matches.
		{"header present false", svc("  routes:", "    - match:", "        pathPrefix: /", "        headers:", "          x-debug: {present: false}"), []wantDiag{{"p.yaml:9", "spec.routes[0].match.headers.x-debug.present", "only present: true is supported; to match requests with or without the header, leave the header out"}}},
		{"header present not a bool", svc("  routes:", "    - match: {pathPrefix: /, headers: {x-debug: {present: 'yes'}}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.headers.x-debug.present", `expected true or false, got "yes"`}}},
		{"header regex invalid", svc("  routes:", "    - match: {pathPrefix: /, headers: {x-user: {regex: '^(alice'}}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.headers.x-user.regex", `"^(alice" is not a valid RE2 regular expression: error parsing regexp: missing closing )`}}},
		{"header regex not RE2", svc("  routes:", "    - match: {pathPrefix: /, headers: {x-user: {regex: '(?=a)b'}}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.headers.x-user.regex", "invalid or unsupported Perl syntax"}}},
		{"header regex too long", svc("  routes:", "    - match: {pathPrefix: /, headers: {x-user: {regex: '"+strings.Repeat("a", 1025)+"'}}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.headers.x-user.regex", "the regex is 1025 bytes long; at most 1024 are allowed"}}},
		{"header regex empty", svc("  routes:", "    - match: {pathPrefix: /, headers: {x-user: {regex: ''}}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.headers.x-user.regex", `an empty regex only matches an empty value: write {exact: ""} for that`}}},
		{"header two forms", svc("  routes:", "    - match:", "        pathPrefix: /", "        headers:", "          x-a: {exact: a, regex: b}"), []wantDiag{{"p.yaml:9", "spec.routes[0].match.headers.x-a", "set exactly one of exact, regex and present, not exact and regex together"}}},
		{"header no form", svc("  routes:", "    - match: {pathPrefix: /, headers: {x-a: {}}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.headers.x-a", "needs one of exact, regex and present"}}},
		{"header unknown form", svc("  routes:", "    - match: {pathPrefix: /, headers: {x-a: {prefix: a}}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.headers.x-a.prefix", "unknown field (known: exact, regex, present)"}}},
		{"header exact nothing", svc("  routes:", "    - match: {pathPrefix: /, headers: {x-a: {exact: }}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.headers.x-a.exact", "expected a value, got nothing"}}},
		{"query params not a mapping", svc("  routes:", "    - match: {pathPrefix: /, queryParams: [a]}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.queryParams", "expected a mapping of query parameter names to values, got a list"}}},
		{"query param name with =", svc("  routes:", "    - match:", "        pathPrefix: /", "        queryParams: {'a=b': '1'}"), []wantDiag{{"p.yaml:8", "spec.routes[0].match.queryParams.a=b", `"a=b" is not a query parameter name (not empty; no spaces, &, =, # or ?)`}}},
		{"query param name with space", svc("  routes:", "    - match: {pathPrefix: /, queryParams: {'a b': '1'}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.queryParams.a b", "is not a query parameter name"}}},
		{"query param name with &", svc("  routes:", "    - match: {pathPrefix: /, queryParams: {'a&b': '1'}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.queryParams.a&b", "is not a query parameter name"}}},
		{"query param name a number", svc("  routes:", "    - match: {pathPrefix: /, queryParams: {1: a}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.queryParams.1", `expected a query parameter name, got "1"`}}},
		{"query param twice", svc("  routes:", "    - match:", "        pathPrefix: /", "        queryParams:", "          a: '1'", "          a: '2'"), []wantDiag{{"p.yaml:10", "spec.routes[0].match.queryParams.a", "query parameter given twice (first at line 9)"}}},
		{"query param value a list", svc("  routes:", "    - match: {pathPrefix: /, queryParams: {a: [1]}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.queryParams.a", "expected a query parameter value, got a list"}}},
		{"query param present false", svc("  routes:", "    - match: {pathPrefix: /, queryParams: {a: {present: false}}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.queryParams.a.present", "leave the query parameter out"}}},
		{"query param regex invalid", svc("  routes:", "    - match: {pathPrefix: /, queryParams: {a: {regex: '['}}}"), []wantDiag{{"p.yaml:6", "spec.routes[0].match.queryParams.a.regex", "is not a valid RE2 regular expression"}}},
		{"route duplicate match with query params", svc("  routes:", "    - match: {pathPrefix: /a, queryParams: {b: '1', a: {present: true}}}", "    - match: {pathPrefix: /a, queryParams: {a: {present: true}, b: '1'}}"), []wantDiag{{"p.yaml:7", "spec.routes[1].match", "same match as spec.routes[0] (line 6)"}}},
		{"route duplicate match with header forms", svc("  routes:", "    - match: {pathPrefix: /a, headers: {x-a: {regex: 'b'}}}", "    - match: {pathPrefix: /a, headers: {X-A: {regex: 'b'}}}"), []wantDiag{{"p.yaml:7", "spec.routes[1].match", "same match as spec.routes[0] (line 6)"}}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		if seen[tt.name] {
			t.Fatalf("duplicate test name %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			docs, diags := Parse("p.yaml", []byte(tt.in))
			if docs != nil {
				t.Errorf("Parse() returned %d documents with errors; want nil", len(docs))
			}
			checkDiags(t, diags, tt.want, sources.SeverityError)
		})
	}
}

// twoSubsets is a spec line defining subsets v1 and v2.
const twoSubsets = "  subsets: {v1: {version: v1}, v2: {version: v2}}"

// manySubsets defines subsets s0 to s<n-1>, one per line, under spec.subsets.
func manySubsets(n int) string {
	var ls []string
	for i := range n {
		ls = append(ls, fmt.Sprintf("    s%d: {version: s%d}", i, i))
	}
	return strings.Join(ls, "\n")
}

// manySubsetsLine is a spec line defining subsets s0 to s<n-1>.
func manySubsetsLine(n int) string {
	var es []string
	for i := range n {
		es = append(es, fmt.Sprintf("s%d: {version: s%d}", i, i))
	}
	return "  subsets: {" + strings.Join(es, ", ") + "}"
}

// manySplit lists n split entries (of subsets s0 to s<n-1>) under spec.split.
func manySplit(n int) string {
	var ls []string
	for i := range n {
		ls = append(ls, fmt.Sprintf("    - {subset: s%d, weight: 1}", i))
	}
	return strings.Join(ls, "\n")
}

func TestParseLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString(svc("  routes:", "    - &r {match: {pathPrefix: /a}}"))
	for range maxAliases + 5 {
		b.WriteString("    - *r\n")
	}
	_, diags := Parse("p.yaml", []byte(b.String()))
	found := false
	for _, d := range diags {
		found = found || (d.Location == "p.yaml:10007" && strings.Contains(d.Message, "too many alias uses"))
	}
	if !found {
		t.Errorf("no alias-limit error at p.yaml:10007 among %d diagnostics", len(diags))
	}

	big := svc("  timeout: 1s") + "# " + strings.Repeat("x", MaxFileSize) + "\n"
	docs, diags := Parse("big.yaml", []byte(big))
	checkDiags(t, diags, []wantDiag{{"big.yaml:1", "", "the file is larger than"}}, sources.SeverityError)
	if docs != nil {
		t.Errorf("Parse() accepted an oversized file")
	}
}

func checkDiags(t *testing.T, got []sources.Diagnostic, want []wantDiag, sev sources.Severity) {
	t.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		g, w := got[i], want[i]
		ok = g.Location == w.loc && g.Field == w.field && strings.Contains(g.Message, w.msg) &&
			g.Severity == sev && g.Source == SourceName
	}
	if !ok {
		var ws strings.Builder
		for _, w := range want {
			ws.WriteString("  " + w.loc + ": " + w.field + ": ..." + w.msg + "...\n")
		}
		t.Errorf("diagnostics:\n%swant (%s):\n%s", diagText(got), sev, ws.String())
	}
}
