package policy

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-mesh/sluice/sources"
)

func FuzzParse(f *testing.F) {
	for _, name := range []string{"resilience.yaml", "ratelimit-tracing.yaml", "full.yaml", "release.yaml"} {
		f.Add(readTestdata(f, name))
	}
	for _, s := range []string{
		"",
		"---\n---\n",
		svc("  timeout: 1s"),
		svc("  loadBalancer: {policy: ring_hash, ringHash: {hashOn: {header: x-u}, minRingSize: 2, maxRingSize: 4}}"),
		svc("  retry: {attempts: 2, retryOn: [retriable-status-codes], retriableStatusCodes: [503], backoff: {max: 1s}}"),
		svc("  routes: [{match: {path: /a, methods: [POST, GET], headers: {x-a: b}}, retry: &r {attempts: 1}}, {match: {pathPrefix: /b}, retry: *r}]"),
		mesh("  defaults: {outlierDetection: {errorPercent: 50}, rateLimit: {disabled: true}}", "  tracing: {collector: '[::1]:4317', samplingPercent: 0.5}"),
		mesh("  defaults: {dependencies: [b, a]}") + "---\n" + svc("  dependencies: ['*']"),
		svc("  dependencies: [a, a, '*', B]"),
		svc("  dependencies: []"),
		svc("  subsets: {v1: {version: v1}, v2: {version: v2}}", "  split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]",
			"  mirror: {subset: v2, percent: 0.5}", "  fault: {delay: {percent: 10, duration: 2s}, abort: {percent: 5, grpcStatus: unavailable}}",
			"  routes: [{match: {pathPrefix: /, headers: {x-a: {regex: '^a+$'}, x-b: {present: true}}, queryParams: {q: {exact: ''}}}, subset: v2,",
			"            fault: {abort: {percent: 1, httpStatus: 503}}}]"),
		mesh("  defaults: {routes: [{match: {path: /h, queryParams: {p: '1'}}, timeout: 1s}]}"),
		"a: &a [*a]\n",
		"kind: ServicePolicy\nspec: {<<: {timeout: 1s}}\n",
		"\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, diags := Parse("f.yaml", data)
		if (docs == nil) != (len(diags) > 0) {
			t.Fatalf("Parse() = %d documents (nil %v) with %d diagnostics; want documents exactly when there is no error", len(docs), docs == nil, len(diags))
		}
		for _, d := range diags {
			checkFuzzDiagnostic(t, d)
		}
		docs2, diags2 := Parse("f.yaml", data)
		if !reflect.DeepEqual(diags, diags2) || len(docs) != len(docs2) {
			t.Fatalf("Parse() is not deterministic")
		}

		set, loadDiags := Load([]File{{Name: "f.yaml", Data: data}})
		if (set == nil) != (len(loadDiags) > 0) {
			t.Fatalf("Load() = set %v with %d diagnostics", set != nil, len(loadDiags))
		}
		if len(diags) > 0 && set != nil {
			t.Fatalf("Load() accepted a file Parse() rejected")
		}
		for _, d := range loadDiags {
			checkFuzzDiagnostic(t, d)
		}
		if set == nil {
			return
		}
		for _, svc := range append(set.Services(), "not-in-the-set") {
			checkResolved(t, set.Resolve(svc))
			checkDependencies(t, set.Dependencies(svc))
			if first, again := set.Resolve(svc), set.Resolve(svc); first.Hash() != again.Hash() {
				t.Fatalf("Resolve(%q) is not deterministic", svc)
			}
		}
		set.Warnings(nil)
	})
}

// checkDependencies checks the invariants of a dependency set.
func checkDependencies(t *testing.T, d Dependencies) {
	t.Helper()
	if d.All && len(d.Services) > 0 {
		t.Fatalf("dependencies %+v are all services and named ones", d)
	}
	for i, s := range d.Services {
		if !sources.ValidServiceName(s) || (i > 0 && d.Services[i-1] >= s) || !d.Includes(s) {
			t.Fatalf("dependencies %+v are not valid, sorted, unique service names", d)
		}
	}
}

func checkFuzzDiagnostic(t *testing.T, d sources.Diagnostic) {
	t.Helper()
	line, ok := strings.CutPrefix(d.Location, "f.yaml:")
	n, err := strconv.Atoi(line)
	if !ok || err != nil || n < 1 || d.Severity != sources.SeverityError || d.Source != SourceName || d.Message == "" {
		t.Fatalf("malformed diagnostic %+v", d)
	}
}

// checkResolved checks the invariants translators rely on.
func checkResolved(t *testing.T, r Resolved) {
	t.Helper()
	retries := []Retry{r.Retry}
	for _, rr := range r.Routes {
		retries = append(retries, rr.Retry)
		if (rr.Match.Path == "") == (rr.Match.PathPrefix == "") {
			t.Fatalf("route %s has match %+v, want exactly one of path and pathPrefix", rr.Name, rr.Match)
		}
	}
	for _, rt := range retries {
		if !rt.Enabled() && !reflect.DeepEqual(rt, Retry{}) {
			t.Fatalf("disabled retry is not zero: %+v", rt)
		}
		if rt.Enabled() && (rt.Backoff.Base <= 0 || rt.Backoff.Base > rt.Backoff.Max || len(rt.RetryOn) == 0) {
			t.Fatalf("invalid retry %+v", rt)
		}
	}
	if r.Timeout <= 0 || r.LoadBalancer.Policy == "" {
		t.Fatalf("incomplete policy %+v", r)
	}
	if rh := r.LoadBalancer.RingHash; r.LoadBalancer.Policy == RingHash && (rh.MinRingSize == 0 || rh.MinRingSize > rh.MaxRingSize) {
		t.Fatalf("invalid ring hash %+v", rh)
	}
	if r.RateLimit.Enabled && (r.RateLimit.RequestsPerSecond == 0 || r.RateLimit.Burst == 0) {
		t.Fatalf("invalid rate limit %+v", r.RateLimit)
	}
	checkRelease(t, r)
	names := map[string]bool{}
	for _, v := range r.RouteVariants() {
		if names[v.Name] {
			t.Fatalf("duplicate variant name %q", v.Name)
		}
		names[v.Name] = true
	}
	if len(names) == 0 {
		t.Fatalf("no route variants")
	}
}

// checkRelease checks the invariants of the release settings: splits and
// mirrors name defined subsets, splits add up to 100, faults are complete.
func checkRelease(t *testing.T, r Resolved) {
	t.Helper()
	defined := map[string]bool{}
	for i, s := range r.Subsets {
		if !validSubsetName(s.Name) || len(s.Labels) == 0 || (i > 0 && r.Subsets[i-1].Name >= s.Name) {
			t.Fatalf("subsets %+v are not valid, sorted, labelled names", r.Subsets)
		}
		defined[s.Name] = true
	}
	check := func(what string, split []WeightedSubset, m *Mirror, f *Fault) {
		var sum uint32
		for _, w := range split {
			sum += w.Weight
			if !defined[w.Subset] {
				t.Fatalf("%s: split %+v names an undefined subset", what, split)
			}
		}
		if split != nil && sum != 100 {
			t.Fatalf("%s: split %+v adds up to %d", what, split, sum)
		}
		if m != nil && (!defined[m.Subset] || m.Percent <= 0 || m.Percent > 100) {
			t.Fatalf("%s: invalid mirror %+v", what, m)
		}
		if f != nil {
			if f.Delay == nil && f.Abort == nil {
				t.Fatalf("%s: empty fault", what)
			}
			if a := f.Abort; a != nil && (a.HTTPStatus == 0) == (a.GRPCStatus == 0) {
				t.Fatalf("%s: abort %+v needs exactly one status", what, a)
			}
		}
	}
	check("service", r.Split, r.Mirror, r.Fault)
	for _, rr := range r.Routes {
		check(rr.Name, rr.Split, rr.Mirror, rr.Fault)
	}
}
