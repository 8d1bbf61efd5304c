package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// explainTestSet is a MeshPolicy and a ServicePolicy for web whose every
// line is known: see the line comments.
func explainTestSet(t *testing.T) *Set {
	return mustLoad(t,
		"mesh.yaml", mesh(
			"  defaults:", // 5
			"    timeout: 3s",
			"    circuitBreaker:",
			"      maxRequests: 500", // 8
			"    retry:",
			"      attempts: 2", // 10
			"      perTryTimeout: 1s",
			"    outlierDetection: {consecutiveErrors: 7}", // 12
			"  tracing:",
			"    collector: otel:4317", // 14
		),
		"web.yaml", svc(
			"  timeout: 2s", // 5
			"  circuitBreaker:",
			"    maxConnections: 100", // 7
			"  outlierDetection:",
			"    maxEjectionPercent: 50", // 9
			"  retry:",
			"    retryOn: [5xx, retriable-status-codes]", // 11
			"    retriableStatusCodes: [503]",
			"  rateLimit: {requestsPerSecond: 10}", // 13
			"  tracing: {samplingPercent: 5}",
			"  routes:", // 15
			"    - match: {pathPrefix: /slow}",
			"      timeout: 500ms", // 17
			"    - match: {path: /pay, methods: [POST]}",
			"      retry: {attempts: 0}", // 19
			"      rateLimit: {requestsPerSecond: 1}",
		),
	)
}

// TestExplain: every setting names the level, and the file:line of the
// value, that Resolve took it from.
func TestExplain(t *testing.T) {
	got := explainTestSet(t).Explain("web")
	want := []Provenance{
		{Field: "loadBalancer", Value: "{policy: round_robin}", Level: LevelDefault},
		{Field: "timeout", Value: "2s", Level: LevelService, Location: "web.yaml:5"},
		{Field: "circuitBreaker.maxConnections", Value: "100", Level: LevelService, Location: "web.yaml:7"},
		{Field: "circuitBreaker.maxPendingRequests", Value: "1024", Level: LevelDefault},
		{Field: "circuitBreaker.maxRequests", Value: "500", Level: LevelMesh, Location: "mesh.yaml:8"},
		{Field: "circuitBreaker.maxRetries", Value: "3", Level: LevelDefault},
		{Field: "outlierDetection.consecutiveErrors", Value: "7", Level: LevelMesh, Location: "mesh.yaml:12"},
		{Field: "outlierDetection.errorPercent", Value: "0", Level: LevelDefault},
		{Field: "outlierDetection.minRequests", Value: "50", Level: LevelDefault},
		{Field: "outlierDetection.minHosts", Value: "5", Level: LevelDefault},
		{Field: "outlierDetection.interval", Value: "10s", Level: LevelDefault},
		{Field: "outlierDetection.baseEjectionTime", Value: "30s", Level: LevelDefault},
		{Field: "outlierDetection.maxEjectionPercent", Value: "50", Level: LevelService, Location: "web.yaml:9"},
		{Field: "healthyPanicThreshold", Value: "Envoy's own (50)", Level: LevelDefault},
		{Field: "slowStart", Value: "off", Level: LevelDefault},
		{Field: "healthCheck", Value: "off", Level: LevelDefault},
		{Field: "locality", Value: "off", Level: LevelDefault},
		{Field: "retry.attempts", Value: "2", Level: LevelMesh, Location: "mesh.yaml:10"},
		{Field: "retry.perTryTimeout", Value: "1s", Level: LevelMesh, Location: "mesh.yaml:11"},
		{Field: "retry.retryOn", Value: "[5xx, retriable-status-codes]", Level: LevelService, Location: "web.yaml:11"},
		{Field: "retry.retriableStatusCodes", Value: "[503]", Level: LevelService, Location: "web.yaml:12"},
		{Field: "retry.backoff", Value: "{base: 25ms, max: 250ms}", Level: LevelDefault},
		{Field: "retry.idempotencyHeader", Value: "none (only idempotent methods are retried)", Level: LevelDefault},
		{Field: "retry.retryBudget", Value: "off", Level: LevelDefault},
		{Field: "rateLimit", Value: "{requestsPerSecond: 10, burst: 10}", Level: LevelService, Location: "web.yaml:13"},
		{Field: "tracing", Value: "{collector: otel:4317}", Level: LevelMesh, Location: "mesh.yaml:14"},
		{Field: "tracing.samplingPercent", Value: "5", Level: LevelService, Location: "web.yaml:14"},
		{Field: "split", Value: "none (every instance)", Level: LevelDefault},
		{Field: "mirror", Value: "off", Level: LevelDefault},
		{Field: "fault", Value: "off", Level: LevelDefault},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Explain(web) mismatch (-want +got):\n%s", diff)
	}
}

// TestExplainRoute: a route's own settings name the route's lines; what
// it inherits names the service's or the mesh's.
func TestExplainRoute(t *testing.T) {
	set := explainTestSet(t)
	got, ok := set.ExplainRoute("web", "routes[0]")
	if !ok {
		t.Fatal("no routes[0]")
	}
	want := []Provenance{
		{Field: "match", Value: "pathPrefix /slow", Level: LevelServiceRoute, Location: "web.yaml:16"},
		{Field: "timeout", Value: "500ms", Level: LevelServiceRoute, Location: "web.yaml:17"},
		{Field: "retry.attempts", Value: "2", Level: LevelMesh, Location: "mesh.yaml:10"},
		// The mesh's 1s per try cannot fire within 500ms.
		{Field: "retry.perTryTimeout", Value: "none (the request timeout only)", Level: LevelMesh, Location: "mesh.yaml:11",
			Note: "the perTryTimeout written (1s) is longer than the route's timeout, so it is dropped"},
		{Field: "retry.retryOn", Value: "[5xx, retriable-status-codes]", Level: LevelService, Location: "web.yaml:11"},
		{Field: "retry.retriableStatusCodes", Value: "[503]", Level: LevelService, Location: "web.yaml:12"},
		{Field: "retry.backoff", Value: "{base: 25ms, max: 250ms}", Level: LevelDefault},
		{Field: "retry.idempotencyHeader", Value: "none (only idempotent methods are retried)", Level: LevelDefault},
		{Field: "rateLimit", Value: "{requestsPerSecond: 10, burst: 10}", Level: LevelService, Location: "web.yaml:13"},
		{Field: "split", Value: "none (every instance)", Level: LevelDefault},
		{Field: "mirror", Value: "off", Level: LevelDefault},
		{Field: "fault", Value: "off", Level: LevelDefault},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ExplainRoute(web, routes[0]) mismatch (-want +got):\n%s", diff)
	}

	got, ok = set.ExplainRoute("web", "routes[1]")
	if !ok {
		t.Fatal("no routes[1]")
	}
	want = []Provenance{
		{Field: "match", Value: "path /pay methods POST", Level: LevelServiceRoute, Location: "web.yaml:18"},
		{Field: "timeout", Value: "2s", Level: LevelService, Location: "web.yaml:5"},
		{Field: "retry.attempts", Value: "0 (no retries)", Level: LevelServiceRoute, Location: "web.yaml:19"},
		{Field: "rateLimit", Value: "{requestsPerSecond: 1, burst: 1}", Level: LevelServiceRoute, Location: "web.yaml:20"},
		{Field: "split", Value: "none (every instance)", Level: LevelDefault},
		{Field: "mirror", Value: "off", Level: LevelDefault},
		{Field: "fault", Value: "off", Level: LevelDefault},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ExplainRoute(web, routes[1]) mismatch (-want +got):\n%s", diff)
	}
	if _, ok := set.ExplainRoute("web", "routes[9]"); ok {
		t.Error("ExplainRoute(web, routes[9]): ok for a route that does not exist")
	}
}

// TestExplainMeshRoute: a MeshPolicy route is explained from the
// MeshPolicy's spec.defaults.routes.
func TestExplainMeshRoute(t *testing.T) {
	set := mustLoad(t, "mesh.yaml", mesh(
		"  defaults:",
		"    routes:",
		"      - match: {pathPrefix: /admin}", // 7
		"        timeout: 1m",
	))
	got, ok := set.ExplainRoute("web", "mesh.routes[0]")
	if !ok {
		t.Fatal("no mesh.routes[0]")
	}
	if got[1] != (Provenance{Field: "timeout", Value: "1m", Level: LevelMeshRoute, Location: "mesh.yaml:8"}) {
		t.Errorf("timeout: %+v", got[1])
	}
	if got[0].Location != "mesh.yaml:7" {
		t.Errorf("match: %+v", got[0])
	}
}

// TestExplainDefaults: on a nil Set every setting is the built-in default,
// with the values Defaults gives.
func TestExplainDefaults(t *testing.T) {
	var s *Set
	got := s.Explain("web")
	if len(got) == 0 {
		t.Fatal("nothing explained")
	}
	for _, p := range got {
		if p.Level != LevelDefault || p.Location != "" {
			t.Errorf("%s: %s, want the built-in default", p.Field, p.Source())
		}
	}
	if got[1].Field != "timeout" || got[1].Value != "15s" {
		t.Errorf("timeout: %+v", got[1])
	}
}

// TestExplainBlocks: a block resolved as a whole names the block's line
// and shows the defaults it fills in; a more specific level's mode off
// wins over the mesh's locality.
func TestExplainBlocks(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh(
			"  defaults:",
			"    locality: {mode: failover}",
			"    healthCheck: {tcp: {}}",
		),
		"web.yaml", svc(
			"  locality: {mode: \"off\"}", // 5
			"  loadBalancer: least_request",
		),
	)
	byField := map[string]Provenance{}
	for _, p := range set.Explain("web") {
		byField[p.Field] = p
	}
	for field, want := range map[string]Provenance{
		"locality":     {Field: "locality", Value: "off", Level: LevelService, Location: "web.yaml:5"},
		"healthCheck":  {Field: "healthCheck", Value: "{interval: 10s, timeout: 1s, unhealthyThreshold: 3, healthyThreshold: 2, tcp: true}", Level: LevelMesh, Location: "mesh.yaml:7"},
		"loadBalancer": {Field: "loadBalancer", Value: "{policy: least_request, choiceCount: 2}", Level: LevelService, Location: "web.yaml:6"},
	} {
		if got := byField[field]; got != want {
			t.Errorf("%s: got %+v, want %+v", field, got, want)
		}
	}
}
