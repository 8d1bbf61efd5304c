package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// TestRunAgainstBaseline: every simulated proxy syncs, the change reaches all
// of them, and the server's memory is sampled — over SotW and delta, as one
// group and as sidecars of several services (the baseline gives everyone
// the whole mesh, so every proxy is affected).
func TestRunAgainstBaseline(t *testing.T) {
	m := Mesh{Services: 20, Endpoints: 3}
	for _, groups := range []int{0, 4} {
		for _, delta := range []bool{false, true} {
			t.Run(fmt.Sprintf("groups=%d,delta=%v", groups, delta), func(t *testing.T) {
				// A fresh server per run: the change is made once.
				b := &Baseline{Mesh: m, XDSAddr: freeAddr(t), AdminAddr: freeAddr(t)}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go func() { _ = b.Serve(ctx) }()
				deadline := time.Now().Add(10 * time.Second)
				for {
					resp, err := http.Get("http://" + b.AdminAddr + "/readyz")
					if err == nil {
						_ = resp.Body.Close()
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("baseline did not start: %v", err)
					}
					time.Sleep(20 * time.Millisecond)
				}
				change := func(ctx context.Context) error {
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+b.AdminAddr+"/change", nil)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						return err
					}
					return resp.Body.Close()
				}
				res, err := Run(ctx, Config{
					Target: b.XDSAddr, Proxies: 10, Delta: delta, NodePrefix: "t", Topology: Topology{Mesh: m, Groups: groups},
					SyncTimeout: 20 * time.Second, ChangeTimeout: 20 * time.Second,
					MetricsURL: "http://" + b.AdminAddr + "/metrics",
				}, change)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Errors) > 0 {
					t.Fatalf("errors: %v", res.Errors)
				}
				if res.InitialSync.Count != 10 || res.Convergence == nil || res.Convergence.Count != 10 ||
					res.Scope == nil || *res.Scope != (ChangeScope{Affected: 10}) || res.Groups != groups {
					t.Fatalf("result %+v", res)
				}
				if res.Memory == nil || res.Memory.AfterSyncMiB <= 0 {
					t.Fatalf("no memory sample: %+v", res.Memory)
				}
			})
		}
	}
}

// requests records, per node id, the node and the names each type was
// requested by.
type requests struct {
	mu    sync.Mutex
	nodes map[string]*corev3.Node
	names map[string]map[string]map[string]bool // node id → type → names
}

func (r *requests) add(node *corev3.Node, typ string, names []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if node == nil {
		return
	}
	r.nodes[node.GetId()] = node
	byType := r.names[node.GetId()]
	if byType == nil {
		byType = map[string]map[string]bool{}
		r.names[node.GetId()] = byType
	}
	if byType[typ] == nil {
		byType[typ] = map[string]bool{}
	}
	for _, n := range names {
		byType[typ][n] = true
	}
}

// groupKey groups nodes as sluice does.
type groupKey struct{}

func (groupKey) ID(n *corev3.Node) string {
	p, err := translator.ProxyFromNode(n)
	if err != nil {
		return "invalid"
	}
	return p.Key()
}

// scopedServer is a go-control-plane server that scopes as sluice does
// with dependencies: one snapshot per proxy group (sluice's ProxyFromNode
// key), each translated by sluice's translator from the services the
// group's policy (read from policyDir) lists. change drops the watched
// instance.
func scopedServer(ctx context.Context, t *testing.T, topo Topology, policyDir string) (addr string, change func(context.Context) error, reqs *requests) {
	t.Helper()
	set := loadPolicies(t, policyDir)
	key := groupKey{}.ID
	snaps := cache.NewSnapshotCache(false, groupKey{}, nil)
	publish := func(ctx context.Context, version string, without bool) error {
		st := topo.State(without)
		for s := range topo.Groups {
			node := topo.Node("group", s)
			proxy, err := translator.ProxyFromNode(node)
			if err != nil {
				return err
			}
			deps := set.Dependencies(proxy.Service)
			scoped := sources.State{}
			for _, svc := range st.Services {
				if deps.Includes(svc.Name) {
					scoped.Services = append(scoped.Services, svc)
				}
			}
			res, err := translator.New().Translate(translator.Input{
				Catalog: sources.Merge(map[string]sources.State{"load": scoped}), Proxy: proxy,
			})
			if err != nil {
				return err
			}
			snap, err := cache.NewSnapshot(version, res.Resources)
			if err != nil {
				return err
			}
			if err := snaps.SetSnapshot(ctx, key(node), snap); err != nil {
				return err
			}
		}
		return nil
	}
	if err := publish(ctx, "1", false); err != nil {
		t.Fatal(err)
	}
	reqs = &requests{nodes: map[string]*corev3.Node{}, names: map[string]map[string]map[string]bool{}}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			reqs.add(r.GetNode(), r.GetTypeUrl(), r.GetResourceNames())
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			reqs.add(r.GetNode(), r.GetTypeUrl(), r.GetResourceNamesSubscribe())
			return nil
		},
	}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, snaps, cb))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String(), func(ctx context.Context) error { return publish(ctx, "2", true) }, reqs
}

// TestRunGroupsWithDependencies: sidecars in groups, each service depending
// on a few others through policy files, against a server that scopes by
// them. Each proxy identifies as a sidecar of its service, subscribes to
// LDS and to RDS for its outbound and inbound routes, to EDS for exactly
// its dependencies; the change is awaited from, and only reaches, the
// proxies the topology says are affected.
func TestRunGroupsWithDependencies(t *testing.T) {
	topo := Topology{Mesh: Mesh{Services: 20, Endpoints: 3}, Groups: 8, Dependencies: 3}
	const proxies = 24
	wantAffected := 0
	for i := range proxies {
		if s, _ := topo.Service(i); s >= 1 && s <= 3 { // svc-0001 ... svc-0003 depend on svc-0000
			wantAffected++
		}
	}
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprint("delta=", delta), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dir := t.TempDir()
			if err := topo.WritePolicies(dir); err != nil {
				t.Fatal(err)
			}
			addr, change, reqs := scopedServer(ctx, t, topo, dir)
			res, err := Run(ctx, Config{
				Target: addr, Proxies: proxies, Delta: delta, NodePrefix: "t", Topology: topo,
				SyncTimeout: 20 * time.Second, ChangeTimeout: 20 * time.Second,
			}, change)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Errors) > 0 {
				t.Fatalf("errors: %v", res.Errors)
			}
			if res.InitialSync.Count != proxies || res.Convergence == nil || res.Convergence.Count != wantAffected ||
				res.Scope == nil || *res.Scope != (ChangeScope{Affected: wantAffected, NotAffected: proxies - wantAffected}) ||
				res.Groups != 8 || res.Dependencies != 3 {
				t.Fatalf("result %+v, convergence %+v, scope %+v; want %d affected", res, res.Convergence, res.Scope, wantAffected)
			}

			reqs.mu.Lock()
			defer reqs.mu.Unlock()
			for i := range proxies {
				id := fmt.Sprintf("t-%d", i)
				node := reqs.nodes[id]
				p, err := translator.ProxyFromNode(node)
				own, _ := topo.Service(i)
				if err != nil || node.GetCluster() != topo.ServiceName(own) || p.Role != translator.RoleSidecar || p.InboundPort != InboundPort {
					t.Fatalf("proxy %d: node %v (%v)", i, node, err)
				}
				names := reqs.names[id]
				var wantEDS []string
				for _, d := range topo.DependenciesOf(own) {
					wantEDS = append(wantEDS, topo.ServiceName(d))
				}
				if got := keys(names[resource.EndpointType]); !slices.Equal(got, wantEDS) {
					t.Errorf("proxy %d: EDS requested for %v, want its dependencies %v", i, got, wantEDS)
				}
				if got, want := keys(names[resource.RouteType]), []string{translator.InboundRouteName, translator.OutboundRouteName}; !slices.Equal(got, want) {
					t.Errorf("proxy %d: RDS requested for %v, want %v", i, got, want)
				}
				if _, ok := names[resource.ListenerType]; !ok {
					t.Errorf("proxy %d: no LDS request", i)
				}
			}
		})
	}
}

// TestRunRefusesUnaffected: a topology in which no proxy can see the
// change is refused before connecting, not reported as converged.
func TestRunRefusesUnaffected(t *testing.T) {
	topo := Topology{Mesh: Mesh{Services: 20, Endpoints: 1}, Groups: 1, Dependencies: 3}
	_, err := Run(context.Background(), Config{Target: "127.0.0.1:1", Proxies: 3, Topology: topo},
		func(context.Context) error { return nil })
	if err == nil {
		t.Fatal("no error")
	}
}
