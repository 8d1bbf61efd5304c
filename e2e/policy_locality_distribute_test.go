package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The statistics of the share tests below. Over n requests, a zone that
// should get a share p of them gets a count that varies (when the client
// picks at random) binomially, with a standard deviation of
// sqrt(p(1-p)/n) as a share: for p = 0.7 (or 0.3) and n = 2,000 that is
// sqrt(0.21/2000) ≈ 0.0102, about 1.0 percentage point. The ±4 points the
// tests allow are ≈ 3.9 standard deviations (a false failure about once in
// 10,000 runs per zone); the 60–80% band of the partial-failure test is
// ≈ 9.8 standard deviations. Envoy picks a locality within a priority with
// a deterministic weighted scheduler, so its split is tighter still; gRPC
// picks localities and Envoy priorities at random.
const (
	shareRequests = 2000
	shareSlack    = 0.04
)

// distributePolicy is the distribute rule of the tests: a caller in r1/a
// sends 70% to its own zone and 30% to r1/b; r2/c, named by no pattern,
// is the priority 1 fallback.
func distributePolicy(service, health string) string {
	return servicePolicy(service, strings.Join([]string{
		"  locality:",
		"    mode: distribute",
		"    distribute: [{from: r1/a, to: {r1/a: 70, r1/b: 30}}]",
		health,
	}, "\n"))
}

// zonalHTTPBackends starts per[zone] HTTP backends in each zone of zones,
// each with a health flag of its own (GET /healthz answers 503 while it
// is down) and counting the other requests per zone. It returns the
// registry instances, the health flags by zone (in order) and a counter
// of the hits per zone so far.
func zonalHTTPBackends(t *testing.T, per map[string]int) (instances []string, healthy map[string][]*atomic.Bool, addrs map[string][]string, count func() map[string]int64) {
	t.Helper()
	healthy, addrs = map[string][]*atomic.Bool{}, map[string][]string{}
	hits := map[string]*atomic.Int64{}
	for _, z := range zones {
		if per[z.zone] == 0 {
			continue
		}
		zone := z.zone
		hits[zone] = new(atomic.Int64)
		for i := range per[zone] {
			up := new(atomic.Bool)
			up.Store(true)
			healthy[zone] = append(healthy[zone], up)
			b := startHTTPBackend(t, fmt.Sprintf("%s-%d", zone, i), func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/healthz" {
					if !up.Load() {
						http.Error(w, "instance down", http.StatusServiceUnavailable)
					}
					return
				}
				hits[zone].Add(1)
				_, _ = w.Write([]byte(zone))
			})
			addrs[zone] = append(addrs[zone], b.addr)
			instances = append(instances, instance(b.addr, fmt.Sprintf("region: %s, zone: %s", z.region, z.zone)))
		}
	}
	count = func() map[string]int64 {
		out := map[string]int64{}
		for z, h := range hits {
			out[z] = h.Load()
		}
		return out
	}
	return instances, healthy, addrs, count
}

// envoyShares sends n requests for service through e and returns the share
// of them that reached each zone; every request must succeed.
func envoyShares(t *testing.T, e *envoyProc, service string, count func() map[string]int64, n int) map[string]float64 {
	t.Helper()
	return zoneShare(t, count, func() {
		if c := statusCounts(t, e.OutboundAddr, http.MethodGet, service, "/", nil, n); c[http.StatusOK] != n {
			t.Fatalf("statuses %v, want all %d 200", c, n)
		}
	})
}

// groupConfigs is what sluice serves each connected proxy's group
// (/debug/config?group=...), for the logs of a failing test.
func groupConfigs(t *testing.T, s *sluice) string {
	t.Helper()
	var proxies []struct {
		Group string `json:"group"`
	}
	s.adminJSON(t, "/debug/proxies", &proxies)
	var b strings.Builder
	for _, p := range proxies {
		fmt.Fprintf(&b, "group %s:\n%s\n", p.Group, s.adminText(t, "/debug/config?group="+url.QueryEscape(p.Group)))
	}
	return b.String()
}

// within reports whether got is want ± slack.
func within(got, want, slack float64) bool { return got >= want-slack && got <= want+slack }

// fastHealthCheck marks an instance down on its first failed check and up
// on its first passing one, every 250 ms.
const fastHealthCheck = "  healthCheck: {interval: 250ms, timeout: 200ms, unhealthyThreshold: 1, healthyThreshold: 1, http: {path: /healthz}}"

// TestLocalityDistributeEnvoy: an Envoy in r1/a under {r1/a: 70, r1/b:
// 30} sends 70% of its requests to zone a and 30% to zone b (each ±4
// points over 2,000 requests), and none (≤ 1%) to r2/c, which no pattern
// names and so is priority 1. When every instance of zones a and b fails
// its health checks, traffic moves to zone c.
func TestLocalityDistributeEnvoy(t *testing.T) {
	requireE2E(t)
	instances, healthy, _, count := zonalHTTPBackends(t, map[string]int{"a": 2, "b": 2, "c": 1})
	s, e := startPolicyEnvoy(t, "services:\n"+serviceEntry("zonal", instances...), distributePolicy("zonal",
		"  outlierDetection: {maxEjectionPercent: 100}\n"+fastHealthCheck),
		"--region", "r1", "--zone", "a")
	e.waitRoutes(t, "default/no-retry")

	// Until every instance has passed its first health check, the split
	// can lean to whichever zone passed first: wait for both named zones
	// to take traffic (and none to reach the fallback).
	start := time.Now()
	eventually(t, 30*time.Second, "traffic over zones a and b", func() error {
		s := envoyShares(t, e, "zonal", count, 50)
		if s["a"] == 0 || s["b"] == 0 || s["c"] > 0 {
			return fmt.Errorf("shares %v", s)
		}
		return nil
	})
	t.Logf("traffic over zones a and b after %v", time.Since(start).Round(10*time.Millisecond))

	sh := envoyShares(t, e, "zonal", count, shareRequests)
	t.Logf("all healthy: shares of %d requests: %v", shareRequests, sh)
	if !within(sh["a"], 0.70, shareSlack) || !within(sh["b"], 0.30, shareSlack) || sh["c"] > 0.01 {
		t.Errorf("all healthy: shares a %.2f%%, b %.2f%%, c %.2f%%; want a 70±4, b 30±4, c ≤ 1",
			100*sh["a"], 100*sh["b"], 100*sh["c"])
		t.Logf("sluice sends this group:\n%s", groupConfigs(t, s))
		t.Logf("envoy clusters:\n%s", e.admin(t, "/clusters"))
	}

	for _, z := range []string{"a", "b"} {
		for _, up := range healthy[z] {
			up.Store(false)
		}
	}
	start = time.Now()
	eventually(t, 30*time.Second, "traffic to move to zone c (zones a and b failing)", func() error {
		s := envoyShares(t, e, "zonal", count, 20)
		if s["c"] < 0.99 {
			return fmt.Errorf("shares %v", s)
		}
		return nil
	})
	moved := time.Since(start)
	sh = envoyShares(t, e, "zonal", count, 200)
	t.Logf("zones a and b failing: traffic on zone c after %v; shares of 200 requests: %v", moved.Round(10*time.Millisecond), sh)
	if sh["c"] < 0.99 {
		t.Errorf("zones a and b failing: %.1f%% of 200 requests reached zone c, want ≥ 99%% (shares %v)", 100*sh["c"], sh)
	}
}

// TestLocalityDistributeGRPC: a proxyless gRPC client in r1/a, instances in
// a real etcd, under {r1/a: 70, r1/b: 30}: 70% of calls reach zone a and
// 30% zone b (each ±4 points over 2,000 calls), none (≤ 1%) the priority 1
// fallback r2/c. gRPC always weighs the localities of a priority, and
// shares a locality's calls between its instances by round robin.
func TestLocalityDistributeGRPC(t *testing.T) {
	requireE2E(t)
	zm := startZonedGRPC(t)
	s := startSluice(t, "--etcd-endpoints", zm.etcdURL, "--policy-dir", policyDir(t, distributePolicy("zonal",
		"  outlierDetection: {errorPercent: 50, maxEjectionPercent: 100}")))
	client := dialXDSIn(t, s.XDSAddr, "zonal", "r1", "a")
	shares := func(calls int) (map[string]float64, error) { return zm.shares(client, calls) }
	// gRPC's weighted target picks only between localities whose
	// connections are ready: wait for both named zones to take calls.
	start := time.Now()
	eventually(t, 30*time.Second, "calls over zones a and b", func() error {
		s, err := shares(50)
		if err != nil {
			return err
		}
		if s["a"] == 0 || s["b"] == 0 || s["c"] > 0 {
			return fmt.Errorf("shares %v", s)
		}
		return nil
	})
	t.Logf("calls over zones a and b after %v", time.Since(start).Round(10*time.Millisecond))

	sh, err := shares(shareRequests)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shares of %d calls: %v", shareRequests, sh)
	if !within(sh["a"], 0.70, shareSlack) || !within(sh["b"], 0.30, shareSlack) || sh["c"] > 0.01 {
		t.Errorf("shares a %.2f%%, b %.2f%%, c %.2f%%; want a 70±4, b 30±4, c ≤ 1",
			100*sh["a"], 100*sh["b"], 100*sh["c"])
		t.Logf("sluice config:\n%s", groupConfigs(t, s))
	}
}

// TestLocalityEnvoyPartialZoneFailure: failover mode, an Envoy in r1/a,
// four instances in each of zones a (priority 0) and b (priority 1). Envoy
// gives a priority min(100%, healthy share × 1.4) of the traffic (its
// overprovisioning factor, 1.4) and the rest to the next priority. With 1
// of zone a's 4 failing, 75% × 1.4 = 105% ≥ 100%: zone a keeps all the
// traffic (b ≤ 1%). With 2 of 4 failing, 50% × 1.4 = 70%: zone a keeps
// about 70% (asserted 60–80%) and zone b takes the other ~30%. (50%
// healthy is not below Envoy's default 50% panic threshold, and the two
// priorities together carry 100%, so there is no panic either way.)
func TestLocalityEnvoyPartialZoneFailure(t *testing.T) {
	requireE2E(t)
	instances, healthy, addrs, count := zonalHTTPBackends(t, map[string]int{"a": 4, "b": 4})
	s, e := startPolicyEnvoy(t, "services:\n"+serviceEntry("zonal", instances...), servicePolicy("zonal", strings.Join([]string{
		"  locality:",
		"    mode: failover",
		fastHealthCheck,
	}, "\n")), "--region", "r1", "--zone", "a")
	e.waitRoutes(t, "default/no-retry")

	eventually(t, 30*time.Second, "traffic on zone a", func() error {
		if s := envoyShares(t, e, "zonal", count, 20); s["a"] < 0.99 {
			return fmt.Errorf("shares %v", s)
		}
		return nil
	})
	// fail marks zone a's instance i down and waits until Envoy's health
	// checks have seen it.
	fail := func(i int) {
		t.Helper()
		healthy["a"][i].Store(false)
		start := time.Now()
		eventually(t, 30*time.Second, "envoy to mark "+addrs["a"][i]+" unhealthy", func() error {
			if f := e.healthFlags(t, "zonal", addrs["a"][i]); !strings.Contains(f, "failed_active_hc") {
				return fmt.Errorf("health flags %q", f)
			}
			return nil
		})
		t.Logf("zone a instance %d marked failed after %v", i, time.Since(start).Round(10*time.Millisecond))
	}
	report := func(why string) {
		t.Logf("sluice config:\n%s", groupConfigs(t, s))
		t.Logf("envoy clusters (%s):\n%s", why, e.admin(t, "/clusters"))
	}

	fail(0)
	sh := envoyShares(t, e, "zonal", count, shareRequests)
	t.Logf("1 of 4 in zone a failing (75%% healthy): shares of %d requests: %v", shareRequests, sh)
	if sh["a"] < 0.99 || sh["b"] > 0.01 {
		t.Errorf("1 of 4 failing: zone a %.2f%%, b %.2f%%; want a ≥ 99, b ≤ 1", 100*sh["a"], 100*sh["b"])
		report("1 of 4 failing")
	}

	fail(1)
	sh = envoyShares(t, e, "zonal", count, shareRequests)
	t.Logf("2 of 4 in zone a failing (50%% healthy): shares of %d requests: %v", shareRequests, sh)
	if sh["a"] < 0.60 || sh["a"] > 0.80 {
		t.Errorf("2 of 4 failing: zone a %.2f%%, b %.2f%%; want a 60–80 (≈ 50%% × 1.4 = 70)", 100*sh["a"], 100*sh["b"])
		report("2 of 4 failing")
	}
}
