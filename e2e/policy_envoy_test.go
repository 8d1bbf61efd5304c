package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startPolicyEnvoy runs sluice with the registry and policy file contents
// and one real Envoy sidecar (of service "frontend") in front of it.
func startPolicyEnvoy(t *testing.T, registryContent, policyContent string, extra ...string) (*sluice, *envoyProc) {
	t.Helper()
	envoyBinary(t)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registryContent)
	s := startSluice(t, "--registry-file", reg, "--policy-dir", policyDir(t, policyContent))
	e := startEnvoy(t, s, "frontend", "frontend-1", extra...)
	return s, e
}

// TestPolicyEnvoyRetriesFollowIdempotency: through a real Envoy, four HTTP
// backends of which one answers 503. With retries on 5xx and an
// idempotency header, GETs never see the 503 (retried), POSTs without the
// header do (never retried: Envoy's retry counter does not move), and POSTs
// with the header never do.
func TestPolicyEnvoyRetriesFollowIdempotency(t *testing.T) {
	requireE2E(t)
	var addrs []string
	for i := range 3 {
		addrs = append(addrs, startHTTPBackend(t, fmt.Sprintf("ok-%d", i), answerName(fmt.Sprintf("ok-%d", i))).addr)
	}
	bad := startHTTPBackend(t, "bad", answer503)
	addrs = append(addrs, bad.addr)
	_, e := startPolicyEnvoy(t, registryOf("user-service", addrs), servicePolicy("user-service",
		"  retry: {attempts: 3, retryOn: [5xx], idempotencyHeader: x-idempotency-key, backoff: {base: 1ms, max: 10ms}}"))
	e.waitRoutes(t, "default/idempotency-header")
	const n = 80
	eventually(t, 30*time.Second, "GETs to succeed through envoy", func() error {
		if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "user-service", "/", nil, 8); c[http.StatusOK] != 8 {
			return fmt.Errorf("statuses %v", c)
		}
		return nil
	})

	t.Run("GET is retried", func(t *testing.T) {
		hits, retries := bad.hits.Load(), e.stat(t, "cluster.user-service.upstream_rq_retry")
		if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "user-service", "/", nil, n); c[http.StatusOK] != n {
			t.Fatalf("GET statuses %v, want all 200", c)
		}
		failed := bad.hits.Load() - hits
		if failed == 0 {
			t.Fatalf("the 503 backend got no GETs: nothing was retried")
		}
		// Every GET the failing backend answered was retried, and Envoy
		// counted it (which is what the POST case relies on).
		if got := e.stat(t, "cluster.user-service.upstream_rq_retry") - retries; got != failed {
			t.Fatalf("envoy counted %d retries for %d failed GETs", got, failed)
		}
	})
	t.Run("POST without the idempotency header is not retried", func(t *testing.T) {
		retries := e.stat(t, "cluster.user-service.upstream_rq_retry")
		c := statusCounts(t, e.OutboundAddr, http.MethodPost, "user-service", "/", nil, n)
		if c[http.StatusServiceUnavailable] == 0 || c[http.StatusOK]+c[http.StatusServiceUnavailable] != n {
			t.Fatalf("POST statuses %v, want some 503s (round robin sends every 4th to the failing backend)", c)
		}
		if got := e.stat(t, "cluster.user-service.upstream_rq_retry") - retries; got != 0 {
			t.Fatalf("envoy retried %d POSTs without an idempotency header", got)
		}
	})
	t.Run("POST with the idempotency header is retried", func(t *testing.T) {
		hits := bad.hits.Load()
		c := statusCounts(t, e.OutboundAddr, http.MethodPost, "user-service", "/", map[string]string{"X-Idempotency-Key": "k1"}, n)
		if c[http.StatusOK] != n {
			t.Fatalf("POST statuses %v, want all 200", c)
		}
		if bad.hits.Load() == hits {
			t.Fatalf("the 503 backend got no POSTs: nothing was retried")
		}
	})
}

// TestPolicyEnvoyConsecutive5xxEjection: with outlier detection on
// consecutive errors and no retries, the backend answering 503 is ejected
// (Envoy's /clusters shows failed_outlier_check for it) and requests stop
// failing.
func TestPolicyEnvoyConsecutive5xxEjection(t *testing.T) {
	requireE2E(t)
	ok0 := startHTTPBackend(t, "ok-0", answerName("ok-0"))
	ok1 := startHTTPBackend(t, "ok-1", answerName("ok-1"))
	bad := startHTTPBackend(t, "bad", answer503)
	_, e := startPolicyEnvoy(t, registryOf("flaky-service", []string{ok0.addr, ok1.addr, bad.addr}), servicePolicy("flaky-service",
		"  outlierDetection: {consecutiveErrors: 3, interval: 1s, baseEjectionTime: 10m, maxEjectionPercent: 50}"))
	e.waitRoutes(t, "default/no-retry")

	saw503 := false
	eventually(t, 30*time.Second, "envoy to eject the failing backend", func() error {
		c := statusCounts(t, e.OutboundAddr, http.MethodGet, "flaky-service", "/", nil, 6)
		saw503 = saw503 || c[http.StatusServiceUnavailable] > 0
		if flags := e.healthFlags(t, "flaky-service", bad.addr); !strings.Contains(flags, "failed_outlier_check") {
			return fmt.Errorf("health flags of %s: %q", bad.addr, flags)
		}
		return nil
	})
	if !saw503 {
		t.Fatalf("no request ever failed: the failing backend was not in rotation")
	}
	for _, ok := range []*httpBackend{ok0, ok1} {
		if flags := e.healthFlags(t, "flaky-service", ok.addr); flags != "healthy" {
			t.Errorf("healthy backend %s has flags %q", ok.addr, flags)
		}
	}
	hits := bad.hits.Load()
	if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "flaky-service", "/", nil, 60); c[http.StatusOK] != 60 {
		t.Fatalf("after ejection: statuses %v, want all 200", c)
	}
	if got := bad.hits.Load() - hits; got != 0 {
		t.Fatalf("the ejected backend still got %d requests", got)
	}
	// A 503 is both a 5xx and a gateway error; whichever count reaches 3
	// first ejects.
	consecutive := e.stat(t, "cluster.flaky-service.outlier_detection.ejections_enforced_consecutive_5xx") +
		e.stat(t, "cluster.flaky-service.outlier_detection.ejections_enforced_consecutive_gateway_failure")
	if consecutive != 1 {
		t.Errorf("%d enforced consecutive-error ejections, want 1", consecutive)
	}
}

// TestPolicyEnvoyCircuitBreakerAndTimeout: one slow backend behind limits
// of one connection, one request and one pending request: a burst of
// concurrent requests overflows (503, counted in Envoy's overflow stats).
// A route with a 100ms timeout answers 504 for a 2s request and counts
// upstream_rq_timeout.
func TestPolicyEnvoyCircuitBreakerAndTimeout(t *testing.T) {
	requireE2E(t)
	slow := startHTTPBackend(t, "slow", answerAfter)
	_, e := startPolicyEnvoy(t, registryOf("slow-service", []string{slow.addr}), servicePolicy("slow-service", `  timeout: 10s
  circuitBreaker: {maxConnections: 1, maxPendingRequests: 1, maxRequests: 1}
  routes:
    - match: {pathPrefix: /deadline}
      timeout: 100ms`))
	e.waitRoutes(t, "routes[0]/no-retry")
	eventually(t, 30*time.Second, "requests to reach the slow backend", func() error {
		code, _, _, err := request(e.OutboundAddr, http.MethodGet, "slow-service", "/", nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})

	t.Run("overflow", func(t *testing.T) {
		const burst = 12
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		for range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, hdr, _, err := request(e.OutboundAddr, http.MethodGet, "slow-service", "/?sleep=400ms", nil)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					codes[-1]++
					return
				}
				if code == http.StatusServiceUnavailable && hdr.Get("X-Envoy-Overloaded") == "" {
					codes[-2]++ // a 503 that is not a circuit-breaker overflow
				}
				codes[code]++
			}()
		}
		wg.Wait()
		if codes[http.StatusServiceUnavailable] == 0 || codes[http.StatusOK] == 0 || codes[-1] != 0 || codes[-2] != 0 {
			t.Fatalf("burst of %d: statuses %v (-1: transport errors, -2: 503 without x-envoy-overloaded); want some 200 and some overflow 503", burst, codes)
		}
		overflow := e.stat(t, "cluster.slow-service.upstream_rq_pending_overflow") + e.stat(t, "cluster.slow-service.upstream_rq_overflow")
		if overflow < int64(codes[http.StatusServiceUnavailable]) {
			t.Fatalf("envoy counted %d overflows for %d 503s", overflow, codes[http.StatusServiceUnavailable])
		}
	})
	t.Run("route timeout", func(t *testing.T) {
		before := e.stat(t, "cluster.slow-service.upstream_rq_timeout")
		start := time.Now()
		code, _, body, err := request(e.OutboundAddr, http.MethodGet, "slow-service", "/deadline?sleep=2s", nil)
		if err != nil || code != http.StatusGatewayTimeout {
			t.Fatalf("GET /deadline: %d %q %v, want 504", code, body, err)
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Fatalf("the 100ms route timeout fired after %v", d)
		}
		if got := e.stat(t, "cluster.slow-service.upstream_rq_timeout") - before; got != 1 {
			t.Fatalf("upstream_rq_timeout went up by %d, want 1", got)
		}
		// The service-level 10s timeout still lets slower requests through.
		if code, _, _, err := request(e.OutboundAddr, http.MethodGet, "slow-service", "/?sleep=300ms", nil); err != nil || code != http.StatusOK {
			t.Fatalf("GET / with 300ms: %d %v", code, err)
		}
	})
}

// TestPolicyEnvoyGatewayRateLimit: a real gateway enforces a route's own
// token bucket (1/s, burst 4) on its routes to the service. The route
// retries, so GETs and POSTs take different Envoy routes (retry variants);
// they still share the one bucket: a mixed burst gets 4 (or, with a refill
// during the burst, 5) through, not 4 per variant. Routes without a limit
// are never limited.
func TestPolicyEnvoyGatewayRateLimit(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	app := startHTTPBackend(t, "app", answerName("app"))
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registryOf("user-service", []string{app.addr}))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", policyDir(t, servicePolicy("user-service", `  retry: {attempts: 1, retryOn: [5xx]}
  routes:
    - match: {pathPrefix: /limited}
      rateLimit: {requestsPerSecond: 1, burst: 4}`)))
	e := startEnvoy(t, s, "edge", "edge-1", "--role", "gateway")
	e.waitRoutes(t, "routes[0]/idempotent", "routes[0]/no-retry")
	s.noNACKs(t, 1)
	eventually(t, 30*time.Second, "the gateway to reach the service", func() error {
		code, _, _, err := request(e.OutboundAddr, http.MethodGet, "user-service", "/", nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})

	ok := 0
	start := time.Now()
	for i := range 16 {
		method := http.MethodGet
		if i%2 == 1 {
			method = http.MethodPost
		}
		code, hdr, _, err := request(e.OutboundAddr, method, "user-service", "/limited", nil)
		if err != nil {
			t.Fatal(err)
		}
		switch code {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			if hdr.Get("X-Ratelimit-Limit") == "" {
				t.Fatalf("429 without x-ratelimit headers: %v", hdr)
			}
		default:
			t.Fatalf("%s /limited: status %d", method, code)
		}
	}
	maxOK := 4 + int(time.Since(start)/time.Second+1)
	if ok < 4 || ok > maxOK {
		t.Fatalf("%d of 16 mixed GET/POST requests got through, want 4..%d: one shared bucket of 4", ok, maxOK)
	}
	if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "user-service", "/other", nil, 20); c[http.StatusOK] != 20 {
		t.Fatalf("unlimited route: statuses %v", c)
	}
}
