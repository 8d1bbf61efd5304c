package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// envoyBinary finds the real Envoy that `make deps` installs.
func envoyBinary(t *testing.T) string {
	t.Helper()
	return realBinary(t, "envoy", "SLUICE_ENVOY", "../.deps/bin/envoy", "installs the pinned Envoy into .deps/bin")
}

// envoyProc is a running Envoy.
type envoyProc struct {
	AdminAddr    string
	OutboundAddr string
	logs         *syncBuffer
}

// startEnvoy bootstraps a real Envoy with `sluice bootstrap` and starts it.
func startEnvoy(t *testing.T, s *sluice, service, nodeID string, extra ...string) *envoyProc {
	t.Helper()
	bin := envoyBinary(t)
	dir := t.TempDir()
	outbound := listenerPort(t)
	cfg := filepath.Join(dir, "bootstrap.yaml")
	args := append([]string{"bootstrap", "--service", service, "--node-id", nodeID,
		"--xds-addr", s.XDSAddr, "--admin-port", "0", "--outbound-port", strconv.Itoa(outbound), "-o", cfg}, extra...)
	if out, err := exec.Command(sluiceBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("sluice bootstrap: %v\n%s", err, out)
	}
	adminPath := filepath.Join(dir, "admin-address")
	e := &envoyProc{OutboundAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(outbound)), logs: &syncBuffer{}}
	cmd := exec.Command(bin, "-c", cfg, "--admin-address-path", adminPath,
		"--disable-hot-restart", "--concurrency", "1", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting envoy: %v", err)
	}
	t.Cleanup(func() {
		stopProcess(cmd)
		if t.Failed() {
			t.Logf("envoy logs:\n%s", e.logs.String())
		}
	})
	eventually(t, 30*time.Second, "envoy admin address", func() error {
		b, err := os.ReadFile(adminPath)
		if err != nil || len(b) == 0 {
			return fmt.Errorf("no admin address yet (%w)", err)
		}
		e.AdminAddr = strings.TrimSpace(string(b))
		return nil
	})
	return e
}

// get sends one request through Envoy's outbound listener with the given Host.
func (e *envoyProc) get(host string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+e.OutboundAddr+"/", nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func (e *envoyProc) admin(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + e.AdminAddr + path)
	if err != nil {
		t.Fatalf("envoy admin %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startHTTPBackends starts n HTTP servers that answer with their name.
func startHTTPBackends(t *testing.T, n int) []*backend {
	t.Helper()
	var out []*backend
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := &backend{name: fmt.Sprintf("http-%d", i), addr: lis.Addr().String()}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, b.name)
		}), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(func() { _ = srv.Close() })
		out = append(out, b)
	}
	return out
}

// envoySpread sends n requests and counts answers per backend.
func envoySpread(e *envoyProc, host string, n int) (map[string]int, error) {
	seen := map[string]int{}
	for range n {
		code, body, err := e.get(host)
		if err != nil {
			return seen, err
		}
		if code != http.StatusOK {
			return seen, fmt.Errorf("status %d: %s", code, body)
		}
		seen[body]++
	}
	return seen, nil
}

func envoyWaitOnly(t *testing.T, e *envoyProc, host string, names ...string) {
	t.Helper()
	check := func() error {
		seen, err := envoySpread(e, host, 30)
		if err != nil {
			return err
		}
		if len(seen) != len(names) {
			return fmt.Errorf("backends seen %v, want only %v", seen, names)
		}
		for _, n := range names {
			if seen[n] == 0 {
				return fmt.Errorf("backends seen %v, want only %v", seen, names)
			}
		}
		return nil
	}
	eventually(t, 30*time.Second, fmt.Sprintf("envoy traffic to exactly %v", names), check)
	if err := check(); err != nil {
		t.Fatalf("after converging: %v", err)
	}
}

// TestEnvoyFollowsRegistryFile: a real Envoy bootstrapped by `sluice
// bootstrap` routes Host: user-service to the instances in the registry file,
// follows the file as it changes, and acknowledges everything it was sent —
// Envoy's own config dump and sluice's view agree. It runs once over
// state-of-the-world ADS and once over delta ADS.
func TestEnvoyFollowsRegistryFile(t *testing.T) {
	requireE2E(t)
	for _, mode := range []string{"sotw", "delta"} {
		t.Run(mode, func(t *testing.T) {
			envoyBinary(t)
			bs := startHTTPBackends(t, 4)
			reg := filepath.Join(t.TempDir(), "registry.yaml")
			all := []string{instance(bs[0].addr, ""), instance(bs[1].addr, ""), instance(bs[2].addr, "")}
			others := serviceEntry("order-service", instance(bs[3].addr, ""))
			writeFile(t, reg, registry("user-service", all...)+others)
			s := startSluice(t, "--registry-file", reg)
			var extra []string
			if mode == "delta" {
				extra = append(extra, "--delta")
			}
			e := startEnvoy(t, s, "frontend", "frontend-"+mode, extra...)

			envoyWaitOnly(t, e, "user-service", "http-0", "http-1", "http-2")
			_, port, _ := net.SplitHostPort(bs[0].addr)
			// name:port selects the same service.
			if code, body, err := e.get("user-service:" + port); err != nil || code != http.StatusOK {
				t.Fatalf("Host user-service:%s: %d %q %v", port, code, body, err)
			}
			// An unknown host gets Envoy's 404, not some other service.
			if code, _, err := e.get("nobody"); err != nil || code != http.StatusNotFound {
				t.Fatalf("Host nobody: got %d %v, want 404", code, err)
			}

			envoyWaitOnly(t, e, "order-service", "http-3")

			writeFile(t, reg, registry("user-service", all[0], all[1])+others)
			envoyWaitOnly(t, e, "user-service", "http-0", "http-1")

			writeFile(t, reg, registry("user-service", all[0], instance(bs[1].addr, "health: unhealthy"))+others)
			envoyWaitOnly(t, e, "user-service", "http-0")
			// Changes to one cluster leave the other's endpoints alone.
			envoyWaitOnly(t, e, "order-service", "http-3")

			// A service that goes away and comes back: Envoy drops its
			// cluster and stops naming its load assignment (the first name,
			// which carries sluice's generation mark), then names it again
			// and must be sent it again.
			writeFile(t, reg, registry("user-service", all[0], instance(bs[1].addr, "health: unhealthy")))
			eventually(t, 30*time.Second, "order-service gone from envoy", func() error {
				code, _, err := e.get("order-service")
				if err != nil {
					return err
				}
				if code != http.StatusNotFound {
					return fmt.Errorf("Host order-service: %d, want 404", code)
				}
				return nil
			})
			envoyWaitOnly(t, e, "user-service", "http-0")
			writeFile(t, reg, registry("user-service", all[0], instance(bs[1].addr, "health: unhealthy"))+others)
			envoyWaitOnly(t, e, "order-service", "http-3")

			checkEnvoyAgrees(t, s, e, "frontend-"+mode, map[string][]string{
				"user-service":  {bs[0].addr + "=HEALTHY", bs[1].addr + "=UNHEALTHY"},
				"order-service": {bs[3].addr + "=HEALTHY"},
			})
		})
	}
}

// checkEnvoyAgrees compares Envoy's /config_dump with sluice's /debug/proxies:
// every type sluice sent is acked, the versions Envoy reports are the ones
// sluice says it acked, and Envoy holds exactly the expected endpoints
// (cluster -> "addr:port=HEALTH"; Envoy's dump has no EDS versions).
func checkEnvoyAgrees(t *testing.T, s *sluice, e *envoyProc, nodeID string, endpoints map[string][]string) {
	t.Helper()
	const (
		cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
		eds = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
		lds = "type.googleapis.com/envoy.config.listener.v3.Listener"
		rds = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	)
	eventually(t, 15*time.Second, "envoy and sluice to agree on versions", func() error {
		var proxies []struct {
			NodeID string `json:"node_id"`
			Delta  bool   `json:"delta"`
			Types  map[string]struct {
				Sent, Acked string
				LastNack    *struct{ Error string } `json:"last_nack"`
			} `json:"types"`
		}
		s.adminJSON(t, "/debug/proxies", &proxies)
		if len(proxies) != 1 || proxies[0].NodeID != nodeID {
			return fmt.Errorf("sluice proxies: %+v", proxies)
		}
		p := proxies[0]
		for _, typ := range []string{cds, eds, lds, rds} {
			st, ok := p.Types[typ]
			if !ok {
				return fmt.Errorf("sluice sent no %s", typ)
			}
			if st.LastNack != nil {
				t.Fatalf("envoy rejected %s: %s", typ, st.LastNack.Error)
			}
			if st.Sent == "" || st.Sent != st.Acked {
				return fmt.Errorf("%s: sent %q, acked %q", typ, st.Sent, st.Acked)
			}
		}
		var dump struct {
			Configs []map[string]json.RawMessage `json:"configs"`
		}
		if err := json.Unmarshal(e.admin(t, "/config_dump?include_eds"), &dump); err != nil {
			return err
		}
		for _, list := range endpoints {
			sort.Strings(list)
		}
		if eps := envoyEndpoints(dump.Configs); !reflect.DeepEqual(eps, endpoints) {
			return fmt.Errorf("envoy endpoints %v, want %v", eps, endpoints)
		}
		if p.Delta {
			// Delta responses carry per-resource versions, not the system
			// version sluice tracks; the acks and endpoints suffice.
			return nil
		}
		got := envoyVersions(dump.Configs)
		for _, typ := range []string{cds, lds, rds} {
			if len(got[typ]) == 0 {
				return fmt.Errorf("envoy config dump has no %s", typ)
			}
			for _, v := range got[typ] {
				if v != p.Types[typ].Acked {
					return fmt.Errorf("%s: envoy has %v, sluice says acked %q", typ, got[typ], p.Types[typ].Acked)
				}
			}
		}
		return nil
	})
}

// envoyVersions extracts the version_info Envoy reports per xDS type.
func envoyVersions(configs []map[string]json.RawMessage) map[string][]string {
	out := map[string][]string{}
	type versioned struct {
		VersionInfo string `json:"version_info"`
	}
	for _, c := range configs {
		var typ string
		_ = json.Unmarshal(c["@type"], &typ)
		switch {
		case strings.HasSuffix(typ, "ClustersConfigDump"):
			var d struct {
				VersionInfo string `json:"version_info"`
			}
			_ = json.Unmarshal(mustJSON(c), &d)
			out["type.googleapis.com/envoy.config.cluster.v3.Cluster"] = []string{d.VersionInfo}
		case strings.HasSuffix(typ, "ListenersConfigDump"):
			var d struct {
				VersionInfo string `json:"version_info"`
			}
			_ = json.Unmarshal(mustJSON(c), &d)
			out["type.googleapis.com/envoy.config.listener.v3.Listener"] = []string{d.VersionInfo}
		case strings.HasSuffix(typ, "RoutesConfigDump"):
			var d struct {
				Dynamic []versioned `json:"dynamic_route_configs"`
			}
			_ = json.Unmarshal(mustJSON(c), &d)
			for _, r := range d.Dynamic {
				out["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"] = append(out["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"], r.VersionInfo)
			}
		}
	}
	return out
}

// envoyEndpoints lists the EDS endpoints Envoy holds per cluster as sorted
// "addr:port=HEALTH" strings.
func envoyEndpoints(configs []map[string]json.RawMessage) map[string][]string {
	out := map[string][]string{}
	for _, c := range configs {
		var typ string
		_ = json.Unmarshal(c["@type"], &typ)
		if !strings.HasSuffix(typ, "EndpointsConfigDump") {
			continue
		}
		var d struct {
			Dynamic []struct {
				Config struct {
					Cluster   string `json:"cluster_name"`
					Endpoints []struct {
						LbEndpoints []struct {
							Endpoint struct {
								Address struct {
									Socket struct {
										Address string `json:"address"`
										Port    int    `json:"port_value"`
									} `json:"socket_address"`
								} `json:"address"`
							} `json:"endpoint"`
							Health string `json:"health_status"`
						} `json:"lb_endpoints"`
					} `json:"endpoints"`
				} `json:"endpoint_config"`
			} `json:"dynamic_endpoint_configs"`
		}
		_ = json.Unmarshal(mustJSON(c), &d)
		for _, dyn := range d.Dynamic {
			list := []string{}
			for _, l := range dyn.Config.Endpoints {
				for _, ep := range l.LbEndpoints {
					a := ep.Endpoint.Address.Socket
					list = append(list, net.JoinHostPort(a.Address, strconv.Itoa(a.Port))+"="+ep.Health)
				}
			}
			sort.Strings(list)
			out[dyn.Config.Cluster] = list
		}
	}
	return out
}

func mustJSON(m map[string]json.RawMessage) []byte {
	b, _ := json.Marshal(m)
	return b
}
