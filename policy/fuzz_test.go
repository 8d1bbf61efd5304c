package policy

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-mesh/sluice/sources"
)

func FuzzParse(f *testing.F) {
	for _, name := range []string{"resilience.yaml", "ratelimit-tracing.yaml", "full.yaml"} {
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
