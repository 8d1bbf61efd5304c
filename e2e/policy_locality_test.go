package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/xds"
)

// The three-zone topology of the locality tests: zones a and b in region
// r1, zone c in region r2; two backends in each. The callers run in r1/a.
var zones = []struct{ region, zone string }{{"r1", "a"}, {"r1", "b"}, {"r2", "c"}}

// localityPolicy fails over from r1 to r2 explicitly; the health settings
// are the caller kind's (Envoy checks instances itself; gRPC learns health
// from the registry).
func localityPolicy(service, health string) string {
	return servicePolicy(service, strings.Join([]string{
		"  locality:",
		"    mode: failover",
		"    failover: [{from: r1, to: r2}]",
		health,
	}, "\n"))
}

// zoneShare returns the share of the requests made by do that reached
// each zone, from count, which reads the hits per zone so far.
func zoneShare(t *testing.T, count func() map[string]int64, do func()) map[string]float64 {
	t.Helper()
	before := count()
	do()
	after := count()
	var total int64
	for z := range after {
		total += after[z] - before[z]
	}
	out := map[string]float64{}
	for z := range after {
		if total > 0 {
			out[z] = float64(after[z]-before[z]) / float64(total)
		}
	}
	return out
}

// TestLocalityEnvoyFailover: an Envoy in r1/a (sluice bootstrap --region
// --zone) sends ≥ 99% of its requests to zone a; when zone a's backends
// fail their health checks, traffic moves to zone b (same region), then to
// region r2 when b fails too; as they recover, traffic comes back to a.
func TestLocalityEnvoyFailover(t *testing.T) {
	requireE2E(t)
	healthy := map[string]*atomic.Bool{}
	var hits = map[string]*atomic.Int64{}
	var instances []string
	for _, z := range zones {
		healthy[z.zone], hits[z.zone] = new(atomic.Bool), new(atomic.Int64)
		healthy[z.zone].Store(true)
		for i := range 2 {
			zone := z.zone
			b := startHTTPBackend(t, fmt.Sprintf("%s-%d", zone, i), func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/healthz" {
					if !healthy[zone].Load() {
						http.Error(w, "zone down", http.StatusServiceUnavailable)
					}
					return
				}
				hits[zone].Add(1)
				_, _ = w.Write([]byte(zone))
			})
			instances = append(instances, instance(b.addr, fmt.Sprintf("region: %s, zone: %s", z.region, z.zone)))
		}
	}
	count := func() map[string]int64 {
		out := map[string]int64{}
		for z, h := range hits {
			out[z] = h.Load()
		}
		return out
	}
	_, e := startPolicyEnvoy(t, "services:\n"+serviceEntry("zonal", instances...), localityPolicy("zonal",
		"  healthCheck: {interval: 250ms, timeout: 200ms, unhealthyThreshold: 1, healthyThreshold: 1, http: {path: /healthz}}"),
		"--region", "r1", "--zone", "a")
	e.waitRoutes(t, "default/no-retry")

	const n = 200
	send := func() {
		if c := statusCounts(t, e.OutboundAddr, http.MethodGet, "zonal", "/", nil, n); c[http.StatusOK] != n {
			t.Fatalf("statuses %v, want all %d 200", c, n)
		}
	}
	// mostlyIn waits until requests go to zone, then measures n of them.
	mostlyIn := func(zone, why string) {
		t.Helper()
		start := time.Now()
		eventually(t, 30*time.Second, "traffic to move to zone "+zone+" ("+why+")", func() error {
			s := zoneShare(t, count, func() { statusCounts(t, e.OutboundAddr, http.MethodGet, "zonal", "/", nil, 20) })
			if s[zone] < 0.99 {
				return fmt.Errorf("shares %v", s)
			}
			return nil
		})
		moved := time.Since(start)
		s := zoneShare(t, count, send)
		t.Logf("%s: traffic on zone %s after %v; shares of %d requests: %v", why, zone, moved.Round(10*time.Millisecond), n, s)
		if s[zone] < 0.99 {
			t.Errorf("%s: %.1f%% of %d requests reached zone %s, want ≥ 99%% (shares %v)", why, 100*s[zone], n, zone, s)
		}
	}

	mostlyIn("a", "all healthy")
	healthy["a"].Store(false)
	mostlyIn("b", "zone a failing its health checks")
	healthy["b"].Store(false)
	mostlyIn("c", "zones a and b failing")
	healthy["a"].Store(true)
	healthy["b"].Store(true)
	mostlyIn("a", "zones a and b recovered")
}

// TestLocalityGRPCFailover: a proxyless gRPC client in r1/a (its bootstrap's
// node.locality) with instances registered in a real etcd: ≥ 99% of calls
// go to zone a; zone a's instances marked unhealthy in etcd move calls to
// zone b, then b's to region r2; marking them healthy again brings calls
// back to zone a.
func TestLocalityGRPCFailover(t *testing.T) {
	requireE2E(t)
	zm := startZonedGRPC(t)
	s := startSluice(t, "--etcd-endpoints", zm.etcdURL, "--policy-dir", policyDir(t, localityPolicy("zonal", "  outlierDetection: {errorPercent: 50}")))
	client := dialXDSIn(t, s.XDSAddr, "zonal", "r1", "a")
	put := zm.put

	const n = 200
	shares := func(calls int) (map[string]float64, error) { return zm.shares(client, calls) }
	mostlyIn := func(zone, why string) {
		t.Helper()
		start := time.Now()
		eventually(t, 30*time.Second, "calls to move to zone "+zone+" ("+why+")", func() error {
			s, err := shares(20)
			if err != nil {
				return err
			}
			if s[zone] < 0.99 {
				return fmt.Errorf("shares %v", s)
			}
			return nil
		})
		moved := time.Since(start)
		s, err := shares(n)
		if err != nil {
			t.Fatalf("%s: %v", why, err)
		}
		t.Logf("%s: calls on zone %s after %v; shares of %d calls: %v", why, zone, moved.Round(10*time.Millisecond), n, s)
		if s[zone] < 0.99 {
			t.Errorf("%s: %.1f%% of %d calls reached zone %s, want ≥ 99%% (shares %v)", why, 100*s[zone], n, zone, s)
		}
	}

	mostlyIn("a", "all healthy")
	put("a", "unhealthy")
	mostlyIn("b", "zone a marked unhealthy in etcd")
	put("b", "unhealthy")
	mostlyIn("c", "zones a and b marked unhealthy")
	put("a", "healthy")
	put("b", "healthy")
	mostlyIn("a", "zones a and b healthy again")
}

// putZonedInstance registers an instance in etcd with its locality, as a
// service that knows its zone does.
func putZonedInstance(t *testing.T, cli *clientv3.Client, service, addr, status, region, zone string) {
	t.Helper()
	v, _ := json.Marshal(map[string]any{"status": status, "weight": 1, "region": region, "zone": zone, "timestamp": time.Now().Unix()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/services/"+service+"/"+addr, string(v)); err != nil {
		t.Fatalf("put: %v", err)
	}
}

// dialXDSIn is dialXDS for a client whose bootstrap places it in
// region/zone (none when both are empty).
func dialXDSIn(t *testing.T, xdsAddr, target, region, zone string) testgrpc.TestServiceClient {
	t.Helper()
	locality := ""
	if region != "" || zone != "" {
		locality = fmt.Sprintf(`, "locality": {"region": %q, "zone": %q}`, region, zone)
	}
	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "grpc-e2e-client"%s}
	}`, xdsAddr, locality)
	resolver, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatalf("xds resolver: %v", err)
	}
	conn, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(resolver),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dialing xds:///%s: %v", target, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// zonedGRPC is the three-zone topology for gRPC clients: two gRPC
// backends per zone of zones, registered as service "zonal" in a real
// etcd with their localities.
type zonedGRPC struct {
	t       *testing.T
	etcdURL string
	cli     *clientv3.Client
	bs      []*backend
	zoneOf  map[string]string // backend name → zone
}

// startZonedGRPC starts the etcd and backends and registers every
// backend healthy.
func startZonedGRPC(t *testing.T) *zonedGRPC {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d", listenerPort(t))
	etcd := startEtcd(t, url, t.TempDir())
	zm := &zonedGRPC{t: t, etcdURL: url, cli: etcdClient(t, etcd.Endpoints()), bs: startGRPCBackends(t, 6), zoneOf: map[string]string{}}
	for _, z := range zones {
		zm.put(z.zone, "healthy")
	}
	return zm
}

// put registers zone's backends with status.
func (zm *zonedGRPC) put(zone, status string) {
	zm.t.Helper()
	for i, z := range zones {
		if z.zone != zone {
			continue
		}
		for _, b := range zm.bs[2*i : 2*i+2] {
			zm.zoneOf[b.name] = z.zone
			putZonedInstance(zm.t, zm.cli, "zonal", b.addr, status, z.region, z.zone)
		}
	}
}

// shares makes calls through client and returns the share of each zone.
func (zm *zonedGRPC) shares(client testgrpc.TestServiceClient, calls int) (map[string]float64, error) {
	seen, err := spread(client, calls)
	out := map[string]float64{}
	for name, c := range seen {
		out[zm.zoneOf[name]] += float64(c) / float64(calls)
	}
	return out, err
}
