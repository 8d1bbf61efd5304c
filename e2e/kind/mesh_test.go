//go:build kind

package kind

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests run in this order (source order) and each puts back what it
// changed; the sluice replica is killed last.

// gateway forwards to the demo gateway's Envoy: its outbound listener
// (traffic, routed by Host) and its admin API (stats, /clusters).
func gateway(t *testing.T) (traffic, admin string) {
	t.Helper()
	return portForward(t, "deploy/"+gatewayDeployment, envoyOutboundPort), portForward(t, "deploy/"+gatewayDeployment, envoyAdminPort)
}

// samePods says whether exactly the pods ps answered.
func samePods(answered map[string]int, ps []pod) error {
	var got []string
	for p := range answered {
		got = append(got, p)
	}
	sort.Strings(got)
	if want := podNames(ps); strings.Join(got, ",") != strings.Join(want, ",") {
		return fmt.Errorf("answered by %v, want exactly %v", answered, want)
	}
	return nil
}

func allOK(rs []reply) error {
	if c := codes(rs); c[http.StatusOK] != len(rs) {
		for _, r := range rs {
			if r.Code != http.StatusOK {
				return fmt.Errorf("codes %v; e.g. %d %q", c, r.Code, r.Body)
			}
		}
	}
	return nil
}

// load sends requests through addr with a few workers until stop is called
// (or the test ends) and returns every reply.
func load(t *testing.T, addr, host string) (stop func() []reply) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		out  []reply
		wg   sync.WaitGroup
		once sync.Once
	)
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				r, err := send(http.MethodGet, addr, host, "/")
				if err != nil {
					r = reply{Body: err.Error()}
				}
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	stop = func() []reply {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
		mu.Lock()
		defer mu.Unlock()
		return out
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestTrafficReachesDemoThroughEnvoy: requests through the gateway reach
// every demo pod (registered in etcd, through its sidecar's inbound
// listener) and every demo-consul pod (registered in Consul, no sidecar); a
// demo pod's own sidecar routes to both services too.
func TestTrafficReachesDemoThroughEnvoy(t *testing.T) {
	gw, _ := gateway(t)
	demo := pods(t, "demo")
	if len(demo) != 3 {
		t.Fatalf("%d ready demo pods, want the overlay's 3", len(demo))
	}
	eventually(t, 2*time.Minute, "every demo pod answers through the gateway", func() error {
		rs := burst(gw, "demo", "/", 60, 4)
		if err := allOK(rs); err != nil {
			return err
		}
		return samePods(answeredBy(rs), demo)
	})

	consul := pods(t, "demo-consul")
	eventually(t, 2*time.Minute, "every demo-consul pod (registered in Consul) answers through the gateway", func() error {
		rs := burst(gw, "demo-consul", "/", 40, 4)
		if err := allOK(rs); err != nil {
			return err
		}
		return samePods(answeredBy(rs), consul)
	})

	// The sidecar's outbound listener is on the pod's loopback;
	// port-forward reaches it there.
	sidecar := portForward(t, "pod/"+demo[0].Name, envoyOutboundPort)
	for _, svc := range []string{"demo", "demo-consul"} {
		eventually(t, time.Minute, "the sidecar of "+demo[0].Name+" routes to "+svc, func() error {
			return allOK(burst(sidecar, svc, "/", 10, 2))
		})
	}
	if r, err := send(http.MethodGet, gw, "no-such-service", "/"); err != nil || r.Code != http.StatusNotFound {
		t.Errorf("unknown Host through the gateway: %v %v, want 404", r.Code, err)
	}
}

// TestReplicasAgree: both sluice replicas hold the same catalog and, for
// every proxy group both serve, the same versions (content hashes).
func TestReplicasAgree(t *testing.T) {
	sl := pods(t, "sluice")
	if len(sl) != 2 {
		t.Fatalf("%d ready sluice pods, want 2", len(sl))
	}
	admins := []string{portForward(t, "pod/"+sl[0].Name, sluiceAdminPort), portForward(t, "pod/"+sl[1].Name, sluiceAdminPort)}
	eventually(t, time.Minute, "both replicas show the same catalog", func() error {
		var cats [2]json.RawMessage
		for i, a := range admins {
			var v struct {
				Catalog json.RawMessage `json:"catalog"`
			}
			if err := getJSON(a, "/debug/catalog", &v); err != nil {
				return err
			}
			cats[i] = v.Catalog
		}
		if !bytes.Equal(cats[0], cats[1]) {
			return fmt.Errorf("catalogs differ:\n%s: %s\n%s: %s", sl[0].Name, cats[0], sl[1].Name, cats[1])
		}
		return nil
	})
	type status struct {
		Groups []struct {
			Key      string            `json:"key"`
			Versions map[string]string `json:"versions"`
		} `json:"groups"`
	}
	eventually(t, time.Minute, "groups served by both replicas have the same versions", func() error {
		var st [2]status
		for i, a := range admins {
			if err := getJSON(a, "/debug/snapshots", &st[i]); err != nil {
				return err
			}
		}
		common := 0
		for _, g0 := range st[0].Groups {
			for _, g1 := range st[1].Groups {
				if g0.Key != g1.Key {
					continue
				}
				common++
				for typ, v := range g0.Versions {
					if g1.Versions[typ] != v {
						return fmt.Errorf("group %s: %s version %s on %s, %s on %s", g0.Key, typ, v, sl[0].Name, g1.Versions[typ], sl[1].Name)
					}
				}
			}
		}
		t.Logf("%d proxy groups served by both replicas, all with equal versions", common)
		return nil
	})
}

// TestScalingChangesEndpoints: scaling the demo up and down changes the
// endpoints in sluice's catalog and where the gateway sends traffic, and
// scaling down loses no request (pods deregister, then drain).
func TestScalingChangesEndpoints(t *testing.T) {
	gw, _ := gateway(t)
	sl := pods(t, "sluice")
	admin := portForward(t, "pod/"+sl[0].Name, sluiceAdminPort)
	t.Cleanup(func() {
		kubectl(t, "scale", "deployment/demo", "--replicas=3")
		kubectl(t, "rollout", "status", "deployment/demo", "--timeout=3m")
		eventually(t, 90*time.Second, "the catalog is back to 3 demo endpoints", func() error {
			eps, err := catalogEndpoints(admin, "demo")
			if err != nil {
				return err
			}
			return wantEndpoints(eps, pods(t, "demo"))
		})
	})
	for _, n := range []int{5, 2} {
		var stop func() []reply
		if n < 3 {
			stop = load(t, gw, "demo")
		}
		kubectl(t, "scale", "deployment/demo", fmt.Sprintf("--replicas=%d", n))
		kubectl(t, "rollout", "status", "deployment/demo", "--timeout=3m")
		eventually(t, 90*time.Second, fmt.Sprintf("sluice's catalog and the gateway's traffic follow %d demo pods", n), func() error {
			ps := pods(t, "demo")
			if len(ps) != n {
				return fmt.Errorf("%d ready demo pods", len(ps))
			}
			eps, err := catalogEndpoints(admin, "demo")
			if err != nil {
				return err
			}
			if err := wantEndpoints(eps, ps); err != nil {
				return err
			}
			rs := burst(gw, "demo", "/", 20*n, 4)
			if err := allOK(rs); err != nil {
				return err
			}
			return samePods(answeredBy(rs), ps)
		})
		if stop != nil {
			rs := stop()
			if err := allOK(rs); err != nil {
				t.Errorf("while scaling down to %d: %v (of %d requests)", n, err, len(rs))
			}
		}
	}
}

// TestFailingInstanceIsEjected: a demo pod that answers 503 to everything
// is ejected by the gateway's outlier detection (3 consecutive 5xx), after
// which every request succeeds and none reaches it.
func TestFailingInstanceIsEjected(t *testing.T) {
	gw, gwAdmin := gateway(t)
	demo := pods(t, "demo")
	victim := demo[0]
	app := portForward(t, "pod/"+victim.Name, appPort)
	post(t, app, "/fail?on=true")
	t.Cleanup(func() { post(t, app, "/reset") })

	// The gateway knows the instance by what it registered: its sidecar.
	flag := fmt.Sprintf("demo::%s:%d::health_flags::/failed_outlier_check", victim.IP, inboundListenerPort)
	eventually(t, time.Minute, victim.Name+" is ejected", func() error {
		burst(gw, "demo", "/", 30, 3) // traffic for outlier detection to judge
		clusters, err := getText(gwAdmin, "/clusters")
		if err != nil {
			return err
		}
		if !strings.Contains(clusters, flag) {
			return fmt.Errorf("/clusters has no %s", flag)
		}
		return nil
	})
	rs := burst(gw, "demo", "/", 30, 3)
	if err := allOK(rs); err != nil {
		t.Errorf("after the ejection: %v", err)
	}
	if n := answeredBy(rs)[victim.Name]; n != 0 {
		t.Errorf("the ejected %s still answered %d requests", victim.Name, n)
	}
	if n, err := envoyStat(gwAdmin, "cluster.demo.outlier_detection.ejections_enforced_total"); err != nil || n == 0 {
		t.Errorf("ejections_enforced_total = %d, %v; want > 0", n, err)
	}
}

// TestRetriesHideAFlakyInstance: a demo pod that fails every second request
// stays in rotation (never 3 failures in a row), and the gateway's retries
// (retryOn 5xx) turn every failure into a success.
func TestRetriesHideAFlakyInstance(t *testing.T) {
	gw, gwAdmin := gateway(t)
	demo := pods(t, "demo")
	flaky := demo[len(demo)-1] // not the one the previous test may still have ejected
	app := portForward(t, "pod/"+flaky.Name, appPort)
	post(t, app, "/flaky?rate=0.5")
	t.Cleanup(func() { post(t, app, "/reset") })

	before, err := envoyStat(gwAdmin, "cluster.demo.upstream_rq_retry")
	if err != nil {
		t.Fatal(err)
	}
	rs := burst(gw, "demo", "/", 90, 3)
	if err := allOK(rs); err != nil {
		t.Fatalf("the flaky instance's failures reached the client: %v", err)
	}
	if answeredBy(rs)[flaky.Name] == 0 {
		t.Fatalf("%s answered nothing: the test proves nothing (ejected? %v)", flaky.Name, answeredBy(rs))
	}
	after, err := envoyStat(gwAdmin, "cluster.demo.upstream_rq_retry")
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("upstream_rq_retry %d → %d: no retries, so nothing was hidden", before, after)
	}
}

// TestRateLimitAnswers429: /limited is limited to 5 requests a second (burst
// 5) by the demo policy; a burst gets 429s through the gateway (which
// enforces a service's limits on its routes) and through a demo sidecar's
// inbound listener, while other paths are not limited.
func TestRateLimitAnswers429(t *testing.T) {
	gw, _ := gateway(t)
	checkLimited := func(addr, where string) {
		t.Helper()
		eventually(t, time.Minute, "429s from "+where, func() error {
			rs := burst(addr, "demo", "/limited", 40, 4)
			c := codes(rs)
			if c[http.StatusTooManyRequests] == 0 || c[http.StatusOK] == 0 || c[http.StatusOK]+c[http.StatusTooManyRequests] != len(rs) {
				return fmt.Errorf("codes %v, want 200s and 429s only", c)
			}
			for _, r := range rs {
				if r.Code == http.StatusTooManyRequests {
					t.Logf("%s: a 429 with x-ratelimit-limit=%q", where, r.Header.Get("X-Ratelimit-Limit"))
					break
				}
			}
			return nil
		})
	}
	checkLimited(gw, "the gateway")
	if c := codes(burst(gw, "demo", "/", 40, 4)); c[http.StatusTooManyRequests] != 0 {
		t.Errorf("unlimited path /: codes %v", c)
	}
	demo := pods(t, "demo")
	checkLimited(portForward(t, "pod/"+demo[1].Name, inboundListenerPort), "the inbound listener of "+demo[1].Name)
}

// TestTracesReachTheCollector: spans of requests through the gateway, and
// sluice's own spans, arrive at the OpenTelemetry collector (its debug
// exporter prints them to its log).
func TestTracesReachTheCollector(t *testing.T) {
	gw, _ := gateway(t)
	token := fmt.Sprintf("trace-%d", time.Now().UnixNano())
	logs := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return kubectlCtx(ctx, "logs", "deployment/otel-collector", "--since=5m")
	}
	eventually(t, 2*time.Minute, "spans of gateway requests in the collector", func() error {
		for range 5 {
			if _, err := send(http.MethodGet, gw, "demo", "/"+token); err != nil {
				return err
			}
		}
		text, err := logs()
		if err != nil {
			return err
		}
		if !strings.Contains(text, token) {
			return fmt.Errorf("no span with %s in the collector's log yet", token)
		}
		if !strings.Contains(text, gatewayDeployment) {
			return fmt.Errorf("spans name no %s", gatewayDeployment)
		}
		return nil
	})
	eventually(t, 2*time.Minute, "sluice's own spans in the collector", func() error {
		text, err := logs()
		if err != nil {
			return err
		}
		if !strings.Contains(text, "service.name: Str(sluice)") {
			return fmt.Errorf("no span of service.name sluice in the collector's log")
		}
		return nil
	})
}

// envoyVersions are the config versions an Envoy has accepted, by type.
func envoyVersions(t *testing.T, admin string) map[string]string {
	t.Helper()
	text, err := getText(admin, "/stats?filter=version_text")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if name, v, ok := strings.Cut(line, ": "); ok && (strings.Contains(name, ".cds.") || strings.Contains(name, ".lds.")) {
			out[name] = strings.Trim(v, `"`)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no cds/lds version_text in the gateway's stats:\n%s", text)
	}
	return out
}

// TestKillingASluiceReplicaKeepsTraffic: the replica the gateway is
// connected to is killed (no grace period) under load: no request fails,
// the gateway reconnects to the other replica, and it is sent nothing new
// (identical versions on both replicas).
func TestKillingASluiceReplicaKeepsTraffic(t *testing.T) {
	gw, gwAdmin := gateway(t)
	gwPods := pods(t, gatewayDeployment)
	if len(gwPods) != 1 {
		t.Fatalf("%d gateway pods, want 1", len(gwPods))
	}
	sl := pods(t, "sluice")
	if len(sl) != 2 {
		t.Fatalf("%d ready sluice pods, want 2", len(sl))
	}
	connectedTo := func(admin string) (bool, error) {
		var proxies []struct {
			NodeID string `json:"node_id"`
		}
		if err := getJSON(admin, "/debug/proxies", &proxies); err != nil {
			return false, err
		}
		for _, p := range proxies {
			if p.NodeID == gwPods[0].Name {
				return true, nil
			}
		}
		return false, nil
	}
	var victim, survivor string
	admins := map[string]string{}
	for _, p := range sl {
		admins[p.Name] = portForward(t, "pod/"+p.Name, sluiceAdminPort)
	}
	eventually(t, time.Minute, "the gateway is connected to a sluice replica", func() error {
		for _, p := range sl {
			ok, err := connectedTo(admins[p.Name])
			if err != nil {
				return err
			}
			if ok {
				victim = p.Name
			} else {
				survivor = p.Name
			}
		}
		if victim == "" || survivor == "" {
			return fmt.Errorf("gateway %s not on exactly one replica", gwPods[0].Name)
		}
		return nil
	})
	before := envoyVersions(t, gwAdmin)

	stop := load(t, gw, "demo")
	time.Sleep(3 * time.Second)
	kubectl(t, "delete", "pod", victim, "--grace-period=0", "--force", "--wait=false")
	eventually(t, time.Minute, "the gateway reconnects to "+survivor, func() error {
		ok, err := connectedTo(admins[survivor])
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("not yet")
		}
		if n, err := envoyStat(gwAdmin, "control_plane.connected_state"); err != nil {
			return err
		} else if n != 1 {
			return fmt.Errorf("control_plane.connected_state = %d", n)
		}
		return nil
	})
	kubectl(t, "rollout", "status", "deployment/sluice", "--timeout=3m")
	time.Sleep(5 * time.Second)
	rs := stop()
	if len(rs) < 100 {
		t.Errorf("only %d requests during the test", len(rs))
	}
	if err := allOK(rs); err != nil {
		t.Errorf("killing %s disturbed traffic: %v (of %d requests)", victim, err, len(rs))
	}
	after := envoyVersions(t, gwAdmin)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %s before, %s after reconnecting to another replica; replicas should serve identical versions", k, v, after[k])
		}
	}
}
