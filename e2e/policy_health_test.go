package e2e

import (
	"fmt"
	"net/http"
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
