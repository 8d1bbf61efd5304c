package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// backend is a gRPC test server that answers with its own name.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
	addr string
}

func (b *backend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Hostname: b.name}, nil
}

func startGRPCBackends(t *testing.T, n int) []*backend {
	t.Helper()
	var out []*backend
	for i := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := &backend{name: fmt.Sprintf("backend-%d", i), addr: lis.Addr().String()}
		s := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(s, b)
		go func() { _ = s.Serve(lis) }()
		t.Cleanup(s.Stop)
		out = append(out, b)
	}
	return out
}

// dialXDS opens a channel to xds:///target with gRPC's own xDS client,
// bootstrapped to talk to sluice at xdsAddr (its node in zone "test").
func dialXDS(t *testing.T, xdsAddr, target string) testgrpc.TestServiceClient {
	t.Helper()
	return dialXDSIn(t, xdsAddr, target, "", "test")
}

// spread makes n calls and counts the answers per backend name.
func spread(client testgrpc.TestServiceClient, n int) (map[string]int, error) {
	seen := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return seen, err
		}
		seen[resp.GetHostname()]++
	}
	return seen, nil
}

// TestGRPCClientFollowsRegistryFile: gRPC's xDS client dialing
// xds:///user-service reaches every healthy instance from the registry file,
// and follows the file as instances are removed or marked unhealthy.
func TestGRPCClientFollowsRegistryFile(t *testing.T) {
	requireE2E(t)
	bs := startGRPCBackends(t, 4)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	all := []string{instance(bs[0].addr, ""), instance(bs[1].addr, ""), instance(bs[2].addr, "")}
	// Other services in the mesh: the client asks for user-service's
	// resources only, and must get them all the same.
	others := serviceEntry("order-service", instance(bs[3].addr, "")) + serviceEntry("zz-empty")
	writeFile(t, reg, registry("user-service", all...)+others)
	s := startSluice(t, "--registry-file", reg)
	client := dialXDS(t, s.XDSAddr, "user-service")
	// A second channel, to another service, over the same xDS client.
	orders := dialXDS(t, s.XDSAddr, "order-service")
	waitOnly(t, orders, "backend-3")

	eventually(t, 30*time.Second, "traffic to all three backends", func() error {
		seen, err := spread(client, 30)
		if err != nil {
			return err
		}
		if len(seen) != 3 {
			return fmt.Errorf("backends seen: %v", seen)
		}
		return nil
	})

	// Remove backend-2 from the file: all traffic moves off it.
	writeFile(t, reg, registry("user-service", all[0], all[1])+others)
	waitOnly(t, client, "backend-0", "backend-1")

	// Mark backend-1 unhealthy: it stays in EDS but gets no traffic.
	writeFile(t, reg, registry("user-service", all[0], instance(bs[1].addr, "health: unhealthy"))+others)
	waitOnly(t, client, "backend-0")

	// And back to all three.
	writeFile(t, reg, registry("user-service", all...)+others)
	waitOnly(t, client, "backend-0", "backend-1", "backend-2")
	waitOnly(t, orders, "backend-3")

	// The gRPC client's view, as sluice tracks it: every type acknowledged.
	var proxies []struct {
		NodeID string `json:"node_id"`
		Group  string `json:"group"`
		Types  map[string]struct {
			Sent, Acked string
		} `json:"types"`
	}
	eventually(t, 10*time.Second, "sluice to see all gRPC types acked", func() error {
		s.adminJSON(t, "/debug/proxies", &proxies)
		// Each resolver built for a test has its own xDS client, so each
		// channel is its own stream.
		if len(proxies) != 2 {
			return fmt.Errorf("proxies: %+v", proxies)
		}
		for _, p := range proxies {
			// The bootstrap's node.locality (zone test) is not part of
			// the group: no policy makes localities matter here.
			if p.NodeID != "grpc-e2e-client" || p.Group != "grpc" || len(p.Types) != 4 {
				return fmt.Errorf("proxy: %+v", p)
			}
			for typ, st := range p.Types {
				if st.Sent == "" || st.Sent != st.Acked {
					return fmt.Errorf("%s: sent %q acked %q", typ, st.Sent, st.Acked)
				}
			}
		}
		return nil
	})
}

// waitOnly waits until a run of calls reaches exactly the named backends,
// and then checks that a second run does too (no stragglers).
func waitOnly(t *testing.T, client testgrpc.TestServiceClient, names ...string) {
	t.Helper()
	check := func() error {
		seen, err := spread(client, 40)
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
	eventually(t, 30*time.Second, fmt.Sprintf("traffic to exactly %v", names), check)
	if err := check(); err != nil {
		t.Fatalf("after converging: %v", err)
	}
}

// TestBadRegistryFileKeepsLastGoodCatalog: each kind of malformed registry
// file is rejected as a whole with file:line diagnostics in the admin API and
// metrics, while clients keep being served the last good catalog.
func TestBadRegistryFileKeepsLastGoodCatalog(t *testing.T) {
	requireE2E(t)
	bs := startGRPCBackends(t, 2)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	good := registry("user-service", instance(bs[0].addr, ""), instance(bs[1].addr, ""))
	writeFile(t, reg, good)
	s := startSluice(t, "--registry-file", reg)
	client := dialXDS(t, s.XDSAddr, "user-service")
	waitOnly(t, client, "backend-0", "backend-1")

	cases := []struct {
		name, content, location, field string
	}{
		{"bad yaml", "services:\n  - name: user-service\n    instances: [\n", reg + ":3", ""},
		{"port 0", registry("user-service", "{address: 127.0.0.1, port: 0}"), reg + ":4", "services[0].instances[0].port"},
		{"port too big", registry("user-service", "{address: 127.0.0.1, port: 65536}"), reg + ":4", "services[0].instances[0].port"},
		{"empty name", registry("", instance(bs[0].addr, "")), reg + ":2", "services[0].name"},
		{"duplicate instance", registry("user-service", instance(bs[0].addr, ""), instance(bs[0].addr, "weight: 2")), reg + ":5", "services[0].instances[1]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, reg, tc.content)
			eventually(t, 10*time.Second, "the bad file to be reported", func() error {
				var cat struct {
					Sources map[string]struct {
						Stale       bool
						Diagnostics []struct{ Location, Field, Message string }
					}
				}
				s.adminJSON(t, "/debug/catalog", &cat)
				f := cat.Sources["file"]
				if !f.Stale || len(f.Diagnostics) == 0 {
					return fmt.Errorf("file source: %+v", f)
				}
				d := f.Diagnostics[0]
				if d.Location != tc.location || d.Field != tc.field || d.Message == "" {
					return fmt.Errorf("diagnostic %+v, want location %q field %q", d, tc.location, tc.field)
				}
				return nil
			})
			metrics := s.adminText(t, "/metrics")
			if !strings.Contains(metrics, `sluice_source_stale{source="file"} 1`) {
				t.Errorf("metrics do not show the file source stale")
			}
			// Traffic keeps flowing to the last good catalog.
			seen, err := spread(client, 20)
			if err != nil || len(seen) != 2 {
				t.Fatalf("after bad file: seen %v, err %v", seen, err)
			}
			if code := s.adminJSON(t, "/readyz", nil); code != 200 {
				t.Fatalf("/readyz = %d after a bad file; the last good catalog is still served", code)
			}
			// Restore; the source is fresh again.
			writeFile(t, reg, good)
			eventually(t, 10*time.Second, "the good file to be reloaded", func() error {
				if m := s.adminText(t, "/metrics"); !strings.Contains(m, `sluice_source_stale{source="file"} 0`) {
					return fmt.Errorf("file source still stale")
				}
				return nil
			})
		})
	}
}
