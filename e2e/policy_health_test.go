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

// TestPolicyEnvoyHealthyPanicThreshold: three backends of which the
// registry marks two unhealthy (a third healthy, below Envoy's 50%):
//   - by default Envoy is in panic and spreads requests over all three;
//   - with healthyPanicThreshold: 0 only the healthy one gets requests;
//   - with every instance unhealthy and the threshold at 0, requests fail
//     with 503 instead of reaching an unhealthy instance.
func TestPolicyEnvoyHealthyPanicThreshold(t *testing.T) {
	requireE2E(t)
	ok := startHTTPBackend(t, "ok", answerName("ok"))
	down1 := startHTTPBackend(t, "down-1", answerName("down-1"))
	down2 := startHTTPBackend(t, "down-2", answerName("down-2"))
	mixed := []string{instance(ok.addr, ""), instance(down1.addr, "health: unhealthy"), instance(down2.addr, "health: unhealthy")}
	reg := "services:\n" + serviceEntry("default-panic", mixed...) + serviceEntry("no-panic", mixed...) +
		serviceEntry("all-down", instance(down1.addr, "health: unhealthy"), instance(down2.addr, "health: unhealthy"))
	pol := servicePolicy("no-panic", "  healthyPanicThreshold: 0") + "---\n" + servicePolicy("all-down", "  healthyPanicThreshold: 0")
	_, e := startPolicyEnvoy(t, reg, pol)
	e.waitRoutes(t, "default/no-retry")

	const n = 90
	hits := func() (int64, int64) { return ok.hits.Load(), down1.hits.Load() + down2.hits.Load() }
	eventually(t, 30*time.Second, "the unhealthy instances to reach Envoy as unhealthy", func() error {
		if f := e.healthFlags(t, "no-panic", down1.addr); f != "/failed_eds_health" {
			return fmt.Errorf("health flags of %s: %q", down1.addr, f)
		}
		return nil
	})

	okBefore, downBefore := hits()
	if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "default-panic", "/", nil, n); c[http.StatusOK] != n {
		t.Fatalf("default threshold: statuses %v, want all 200", c)
	}
	okAfter, downAfter := hits()
	t.Logf("default threshold (in panic at 33%% healthy): %d requests to the healthy instance, %d to the unhealthy ones", okAfter-okBefore, downAfter-downBefore)
	if downAfter-downBefore < n/6 {
		t.Errorf("default threshold: only %d of %d requests reached the unhealthy instances; in panic mode Envoy spreads over all three", downAfter-downBefore, n)
	}

	okBefore, downBefore = hits()
	if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "no-panic", "/", nil, n); c[http.StatusOK] != n {
		t.Fatalf("threshold 0: statuses %v, want all 200", c)
	}
	okAfter, downAfter = hits()
	t.Logf("threshold 0: %d requests to the healthy instance, %d to the unhealthy ones", okAfter-okBefore, downAfter-downBefore)
	if downAfter != downBefore || okAfter-okBefore != n {
		t.Errorf("threshold 0: %d requests reached unhealthy instances and %d the healthy one, want 0 and %d", downAfter-downBefore, okAfter-okBefore, n)
	}

	downBefore = down1.hits.Load() + down2.hits.Load()
	if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "all-down", "/", nil, 20); c[http.StatusServiceUnavailable] != 20 {
		t.Errorf("every instance unhealthy, threshold 0: statuses %v, want all 503", c)
	}
	if got := down1.hits.Load() + down2.hits.Load() - downBefore; got != 0 {
		t.Errorf("every instance unhealthy, threshold 0: %d requests reached them", got)
	}
}

// TestPolicyEnvoySlowStart: a service with slow start over 8 s gets a
// second instance; its share of round-robin requests, measured in buckets
// of about 2 s, starts small and grows until it carries its half. (Envoy
// applies the window to every endpoint from when it joined: the first
// instance serves for longer than the window first, or both would ramp
// together and share equally.)
func TestPolicyEnvoySlowStart(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	old := startHTTPBackend(t, "old", answerName("old"))
	fresh := startHTTPBackend(t, "new", answerName("new"))
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registryOf("warm", []string{old.addr}))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", policyDir(t,
		servicePolicy("warm", "  slowStart: {window: 8s, aggression: 1, minWeightPercent: 1}")))
	e := startEnvoy(t, s, "frontend", "frontend-1")
	e.waitRoutes(t, "default/no-retry")
	eventually(t, 30*time.Second, "the first instance to answer", func() error {
		if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "warm", "/", nil, 1); c[http.StatusOK] != 1 {
			return fmt.Errorf("statuses %v", c)
		}
		return nil
	})

	// Traffic on the first instance alone until it is past its own window.
	for end := time.Now().Add(9 * time.Second); time.Now().Before(end); {
		if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "warm", "/", nil, 1); c[http.StatusOK] != 1 {
			t.Fatalf("a request failed: %v", c)
		}
	}
	writeFile(t, reg, registryOf("warm", []string{old.addr, fresh.addr}))
	eventually(t, 30*time.Second, "Envoy to get the new instance", func() error {
		if f := e.healthFlags(t, "warm", fresh.addr); f != "healthy" {
			return fmt.Errorf("health flags of the new instance: %q", f)
		}
		return nil
	})
	// Requests, one after another, in buckets of 2 s from the moment
	// Envoy has the instance; five buckets cover the window and a little
	// after.
	var shares []float64
	for range 5 {
		end := time.Now().Add(2 * time.Second)
		before, n := fresh.hits.Load(), 0
		for time.Now().Before(end) {
			if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "warm", "/", nil, 1); c[http.StatusOK] != 1 {
				t.Fatalf("a request failed: %v", c)
			}
			n++
		}
		shares = append(shares, float64(fresh.hits.Load()-before)/float64(n))
	}
	t.Logf("the new instance's share of requests in 2 s buckets: %.2f", shares)
	if shares[0] > 0.30 {
		t.Errorf("first bucket: the new instance got %.0f%% of the requests; slow start should hold it well below its half", 100*shares[0])
	}
	if shares[4] < 0.40 {
		t.Errorf("after the window: the new instance got %.0f%% of the requests, want about half", 100*shares[4])
	}
	if shares[3]-shares[0] < 0.15 {
		t.Errorf("the new instance's share did not ramp up: %.2f", shares)
	}
}

// TestPolicyEnvoyActiveHealthCheck: two backends the registry calls
// healthy, one of which fails its /healthz: with an HTTP health check,
// Envoy sends it nothing; once its /healthz recovers, it gets traffic
// again.
func TestPolicyEnvoyActiveHealthCheck(t *testing.T) {
	requireE2E(t)
	var sickHealthy atomic.Bool
	// served counts what reached a backend other than its health checks.
	var goodServed, sickServed atomic.Int64
	healthz := func(name string, ok func() bool, served *atomic.Int64) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				if !ok() {
					http.Error(w, "not ready", http.StatusServiceUnavailable)
				}
				return
			}
			served.Add(1)
			_, _ = io.WriteString(w, name)
		}
	}
	good := startHTTPBackend(t, "good", healthz("good", func() bool { return true }, &goodServed))
	sick := startHTTPBackend(t, "sick", healthz("sick", sickHealthy.Load, &sickServed))
	_, e := startPolicyEnvoy(t, registryOf("checked", []string{good.addr, sick.addr}), servicePolicy("checked",
		"  healthCheck: {interval: 200ms, timeout: 100ms, unhealthyThreshold: 1, healthyThreshold: 1, http: {path: /healthz}}"))
	e.waitRoutes(t, "default/no-retry")

	eventually(t, 30*time.Second, "Envoy's health check to fail the sick backend", func() error {
		if f := e.healthFlags(t, "checked", sick.addr); !strings.Contains(f, "failed_active_hc") {
			return fmt.Errorf("health flags of the sick backend: %q", f)
		}
		return nil
	})
	before := sickServed.Load()
	if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "checked", "/", nil, 40); c[http.StatusOK] != 40 {
		t.Fatalf("statuses %v, want all 200 from the good backend", c)
	}
	if got := sickServed.Load() - before; got != 0 {
		t.Errorf("the backend failing its checks got %d of 40 requests, want 0", got)
	}

	sickHealthy.Store(true)
	eventually(t, 30*time.Second, "the recovered backend to get traffic again", func() error {
		before := sickServed.Load()
		statusCounts(t, e.OutboundAddr, http.MethodGet, "checked", "/", nil, 20)
		if got := sickServed.Load() - before; got < 5 {
			return fmt.Errorf("%d of 20 requests reached it (health flags %q)", got, e.healthFlags(t, "checked", sick.addr))
		}
		return nil
	})
}
