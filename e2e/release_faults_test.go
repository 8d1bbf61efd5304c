package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// shadowCounter is an HTTP backend that answers its name and counts its
// requests apart by whether they are Envoy's mirror copies (whose Host
// Envoy suffixes with -shadow).
type shadowCounter struct {
	*httpBackend
	shadow, direct atomic.Int64
}

func startShadowCounter(t *testing.T, name string) *shadowCounter {
	t.Helper()
	c := &shadowCounter{}
	c.httpBackend = startHTTPBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Host, "-shadow") {
			c.shadow.Add(1)
		} else {
			c.direct.Add(1)
		}
		_, _ = io.WriteString(w, name)
	})
	return c
}

// TestReleaseMirrorAndFaults: one sluice, one real Envoy and gRPC's xDS
// client.
//   - mirror: every request goes to v1 (split v1 100) and 50% are copied
//     to v2: v2 gets 50% ± 5 points of shadow copies (Host "-shadow") and
//     no request of its own; clients only ever see v1's answer.
//   - abort: 20% of the requests are answered 503 by Envoy's fault filter
//     (± 3 points); the route retries 5xx three times, yet nothing
//     aborted is retried (upstream_rq_retry stays 0) or reaches the
//     backend — the fault filter answers before the router. A real 503
//     from the backend is retried (the retry policy is live).
//   - delay: 50% of the requests are held 200ms (± 3 points of requests
//     taking ≥ 200ms).
//   - gRPC abort: 20% of the calls fail UNAVAILABLE (± 3 points) with
//     gRPC's own fault injection, with no retry policy and without
//     WaitForReady.
func TestReleaseMirrorAndFaults(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	v1 := startShadowCounter(t, "v1-0")
	v2 := startShadowCounter(t, "v2-0")
	aborting := startHTTPBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			answer503(w, r)
			return
		}
		_, _ = io.WriteString(w, "app")
	})
	delayed := startHTTPBackend(t, "slow", answerName("slow"))
	grpcApp := startNamedGRPCBackend(t, "grpc-app")
	grpcSlow := startNamedGRPCBackend(t, "grpc-slow")
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, "services:\n"+
		serviceEntry("mirrored", instance(v1.addr, "metadata: {version: v1}"), instance(v2.addr, "metadata: {version: v2}"))+
		serviceEntry("aborting", instance(aborting.addr, ""))+
		serviceEntry("delayed", instance(delayed.addr, ""))+
		serviceEntry("aborting-grpc", instance(grpcApp.addr, ""))+
		serviceEntry("delayed-grpc", instance(grpcSlow.addr, "")))
	pol := policyDir(t, policies(
		servicePolicy("mirrored", `  subsets:
    v1: {version: v1}
    v2: {version: v2}
  split:
    - {subset: v1, weight: 100}
  mirror: {subset: v2, percent: 50}`),
		servicePolicy("aborting", `  retry: {attempts: 3, retryOn: [5xx], backoff: {base: 1ms, max: 5ms}}
  fault: {abort: {percent: 20, httpStatus: 503}}`),
		servicePolicy("delayed", "  fault: {delay: {percent: 50, duration: 200ms}}"),
		servicePolicy("aborting-grpc", "  fault: {abort: {percent: 20, grpcStatus: unavailable}}"),
		servicePolicy("delayed-grpc", "  fault: {delay: {percent: 50, duration: 200ms}}")))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", pol)
	e := startEnvoy(t, s, "frontend", "frontend-1")
	client := dialXDS(t, s.XDSAddr, "aborting-grpc")
	slowClient := dialXDS(t, s.XDSAddr, "delayed-grpc")
	// The only route with retries: GETs take its idempotent variant.
	e.waitRoutes(t, "default/idempotent")
	web := loadClient(t)
	via := func(host, path string) func() string {
		return func() string { return httpResult(web, e.OutboundAddr, host, path, nil) }
	}
	// Every policy arrived with the first routes: a first answer from a
	// backend means its faults and mirror are in place too.
	eventually(t, 30*time.Second, "envoy and gRPC to reach every service", func() error {
		for _, c := range []struct {
			do   func() string
			want string
		}{{via("mirrored", "/"), "v1-0"}, {via("aborting", "/"), "app"}, {via("delayed", "/"), "slow"}, {viaGRPC(client, nil), "grpc-app"}, {viaGRPC(slowClient, nil), "grpc-slow"}} {
			if got := c.do(); got != c.want {
				return fmt.Errorf("answer %q, want %q", got, c.want)
			}
		}
		return nil
	})
	s.noNACKs(t, 2)

	t.Run("mirror", func(t *testing.T) {
		n := sampleSize(0.5, 0.05, 1000) // 1600: ±5 points is 4σ
		shadow, direct := v2.shadow.Load(), v2.direct.Load()
		sent := e.stat(t, "cluster.mirrored|v2.upstream_rq_total")
		got := fanOut(n, 16, via("mirrored", "/"))
		onlyKeys(t, "mirrored", got, "v1-0")
		// Copies are sent alongside the requests; wait for the last ones.
		eventually(t, 10*time.Second, "the last shadow copies to finish", func() error {
			if a := e.stat(t, "cluster.mirrored|v2.upstream_rq_active"); a != 0 {
				return fmt.Errorf("%d shadow copies in flight", a)
			}
			return nil
		})
		copies := int(v2.shadow.Load() - shadow)
		checkShare(t, "mirrored", map[string]int{"shadow": copies, "none": n - copies}, "shadow", 0.5, 0.05)
		if d := v2.direct.Load() - direct; d != 0 {
			t.Errorf("v2 got %d requests that were not shadow copies", d)
		}
		if c := v1.shadow.Load(); c != 0 {
			t.Errorf("v1 got %d shadow copies", c)
		}
		if total := e.stat(t, "cluster.mirrored|v2.upstream_rq_total") - sent; total != int64(copies) {
			t.Errorf("envoy sent %d requests to mirrored|v2, the backend counted %d copies", total, copies)
		}
	})

	t.Run("abort is not retried", func(t *testing.T) {
		n := sampleSize(0.2, 0.03, 2000) // 2845: ±3 points is 4σ
		hits, retries := aborting.hits.Load(), e.stat(t, "cluster.aborting.upstream_rq_retry")
		aborts := e.stat(t, "http.outbound_http.fault.aborts_injected")
		got := fanOut(n, 16, via("aborting", "/"))
		onlyKeys(t, "aborting", got, "app", "HTTP 503")
		checkShare(t, "aborting", got, "HTTP 503", 0.2, 0.03)
		if r := e.stat(t, "cluster.aborting.upstream_rq_retry") - retries; r != 0 {
			t.Errorf("envoy retried %d requests; aborted requests never reach the router", r)
		}
		if h := aborting.hits.Load() - hits; h != int64(got["app"]) {
			t.Errorf("the backend got %d requests for %d answers: aborted requests reached it", h, got["app"])
		}
		if a := e.stat(t, "http.outbound_http.fault.aborts_injected") - aborts; a != int64(got["HTTP 503"]) {
			t.Errorf("envoy counted %d injected aborts for %d 503s", a, got["HTTP 503"])
		}
		// The control: a 503 from the backend itself is retried, three
		// times for each request that was not aborted.
		retries, hits = e.stat(t, "cluster.aborting.upstream_rq_retry"), aborting.hits.Load()
		fails := fanOut(10, 1, via("aborting", "/?fail=1"))
		onlyKeys(t, "aborting ?fail=1", fails, "HTTP 503")
		r, h := e.stat(t, "cluster.aborting.upstream_rq_retry")-retries, aborting.hits.Load()-hits
		t.Logf("backend 503s: %d requests reached the backend %d times, %d retries", fails["HTTP 503"], h, r)
		if r == 0 || 3*h != 4*r {
			t.Errorf("backend 503s: %d retries for %d backend requests, want 3 retries per first attempt: the retry policy is not in place", r, h)
		}
	})

	t.Run("delay", func(t *testing.T) {
		const delay = 200 * time.Millisecond
		n := sampleSize(0.5, 0.03, 2000) // 4445: ±3 points is 4σ
		delays := e.stat(t, "http.outbound_http.fault.delays_injected")
		start := time.Now()
		// Delayed requests wait in Envoy, not on a backend: 100 at a
		// time keeps the run to a few seconds. Envoy starts the delay
		// timer from its event loop's cached time, so under this load a
		// delayed request can come back a few ms short of 200ms (seen:
		// down to 190ms), while prompt ones take up to ~120ms: a delayed
		// request is one that took ≥ 180ms, and the count is checked
		// against Envoy's own count of injected delays.
		var full atomic.Int64 // requests that took the whole 200ms
		got := fanOut(n, 100, timedBy(delay, "slow", &full, func() string { return httpResult(web, e.OutboundAddr, "delayed", "/", nil) }))
		onlyKeys(t, "delayed", got, "delayed", "prompt")
		checkShare(t, "delayed", got, "delayed", 0.5, 0.03)
		injected := e.stat(t, "http.outbound_http.fault.delays_injected") - delays
		t.Logf("%d requests in %v; envoy injected %d delays; %d requests (%.2f%%) took ≥ %v",
			n, time.Since(start).Round(10*time.Millisecond), injected, full.Load(), 100*float64(full.Load())/float64(n), delay)
		// Allow 1% of the requests either way for stragglers: a prompt
		// request that took 180ms, a delay cut more than 20ms short.
		if diff := int64(got["delayed"]) - injected; diff < -int64(n)/100 || diff > int64(n)/100 {
			t.Errorf("%d requests took ≥ %v; envoy injected %d delays", got["delayed"], delay*9/10, injected)
		}
	})

	t.Run("grpc abort", func(t *testing.T) {
		n := sampleSize(0.2, 0.03, 2000) // 2845: ±3 points is 4σ
		got := fanOut(n, 8, viaGRPC(client, nil))
		const aborted = "code Unavailable: RPC terminated due to fault injection"
		onlyKeys(t, "aborting-grpc", got, "grpc-app", aborted)
		checkShare(t, "aborting-grpc", got, aborted, 0.2, 0.03)
	})

	t.Run("grpc delay", func(t *testing.T) {
		const delay = 200 * time.Millisecond
		n := sampleSize(0.5, 0.03, 2000) // 4445: ±3 points is 4σ
		// gRPC delays with a Go timer, so a delayed call takes at least
		// 200ms; prompt calls to a local backend take a few ms, far below
		// the 180ms cut (kept as in the Envoy case for busy machines).
		var full atomic.Int64
		start := time.Now()
		got := fanOut(n, 100, timedBy(delay, "grpc-slow", &full, viaGRPC(slowClient, nil)))
		onlyKeys(t, "delayed-grpc", got, "delayed", "prompt")
		checkShare(t, "delayed-grpc", got, "delayed", 0.5, 0.03)
		t.Logf("%d calls in %v; %d (%.2f%%) took ≥ %v", n, time.Since(start).Round(10*time.Millisecond), full.Load(), 100*float64(full.Load())/float64(n), delay)
		if full.Load() != int64(got["delayed"]) {
			t.Errorf("%d calls took ≥ %v but %d ≥ %v: gRPC's delays should be whole", full.Load(), delay, got["delayed"], delay*9/10)
		}
	})
}

// timedBy wraps do, which answers want when it succeeds, to say whether
// the answer was "delayed" (took at least 90% of delay) or "prompt"; full
// counts the answers that took the whole delay. Anything else do answers
// is passed on.
func timedBy(delay time.Duration, want string, full *atomic.Int64, do func() string) func() string {
	return func() string {
		t0 := time.Now()
		if r := do(); r != want {
			return r
		}
		took := time.Since(t0)
		if took >= delay {
			full.Add(1)
		}
		if took >= delay*9/10 {
			return "delayed"
		}
		return "prompt"
	}
}
