package translator_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// sharedPolicies are the policy sets TestSharedMatchesTranslate swaps
// between: none; dependencies for some services with a mesh-wide default;
// a mesh-wide tracing collector that is a catalog service some groups
// do not depend on (its load assignment must still reach them); and
// locality policies of every mode with a service's subsets, split,
// mirror and faults.
func sharedPolicies(t *testing.T) []*policy.Set {
	t.Helper()
	docs := []string{
		`apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: svc-0}
spec:
  dependencies: [svc-1, svc-2, added-1]
---
apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: svc-3}
spec:
  dependencies: []
  timeout: 3s
`,
		`apiVersion: sluice.dev/v1
kind: MeshPolicy
metadata: {name: mesh}
spec:
  defaults:
    dependencies: [svc-4, svc-5]
  tracing: {collector: svc-6}
---
apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: svc-1}
spec:
  dependencies: ["*"]
  retry: {attempts: 2}
---
apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: svc-2}
spec:
  dependencies: [svc-0, svc-7]
  rateLimit: {requestsPerSecond: 5}
`,
		`apiVersion: sluice.dev/v1
kind: MeshPolicy
metadata: {name: mesh}
spec:
  defaults:
    locality:
      mode: failover
      failover: [{from: r1, to: r3}, {from: r1, to: r2}]
    outlierDetection: {}
---
apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: svc-2}
spec:
  locality:
    mode: distribute
    distribute:
      - from: r1/z0
        to: {r1/z0: 70, r2: 30}
      - from: "*"
        to: {r1/*: 100}
---
apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: svc-3}
spec:
  dependencies: [svc-2, svc-3]
  locality: {mode: "off"}
---
apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: svc-4}
spec:
  subsets:
    v1: {version: v1}
    v2: {version: v2}
    v3: {version: v3}
  split: [{subset: v1, weight: 60}, {subset: v2, weight: 30}, {subset: v3, weight: 10}]
  mirror: {subset: v3, percent: 10}
  routes:
    - match: {pathPrefix: /, headers: {x-canary: "true"}}
      subset: v2
      fault: {abort: {percent: 5, httpStatus: 503}}
`,
	}
	sets := []*policy.Set{nil}
	for i, d := range docs {
		set, diags := policy.Load([]policy.File{{Name: fmt.Sprintf("p%d.yaml", i), Data: []byte(d)}})
		if len(diags) > 0 {
			t.Fatalf("policy %d: %v", i, diags)
		}
		sets = append(sets, set)
	}
	return sets
}

// TestSharedMatchesTranslate translates many proxy groups — sidecars of
// several services (scoped and not), a gateway, a proxy of no known
// service and proxyless gRPC — with Incrementals of one Shared, over
// random registry changes, policy swaps, groups coming and going and
// sweeps, and expects every group's output to be byte-identical to a fresh
// Translate of the same input after every step.
func TestSharedMatchesTranslate(t *testing.T) {
	pols := sharedPolicies(t)
	st := sources.State{}
	for s := range 8 {
		svc := sources.Service{Name: fmt.Sprintf("svc-%d", s)}
		for i := range 3 {
			region := "r1"
			if i == 2 {
				region = "r2"
			}
			svc.Instances = append(svc.Instances, sources.Instance{Address: fmt.Sprintf("10.0.%d.%d", s, i), Port: 8080, Health: sources.HealthHealthy, Region: region, Zone: fmt.Sprintf("z%d", i)})
		}
		st.Services = append(st.Services, svc)
	}
	st.Normalize("a")
	states := map[string]sources.State{"a": st, "b": {}}
	proxies := []translator.Proxy{
		{Kind: translator.KindGRPC},
		{Kind: translator.KindEnvoy, Role: translator.RoleSidecar},
		{Kind: translator.KindEnvoy, Role: translator.RoleGateway, Service: "edge"},
	}
	for s := range 8 {
		proxies = append(proxies, translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: fmt.Sprintf("svc-%d", s), InboundPort: uint32(9000 + s)})
	}
	proxies = append(proxies, translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "svc-0", OutboundPort: 16001})
	// Callers of known localities: groups of one view and dependency set
	// in several localities, and several views in one.
	r1z0, r2z2 := translator.Locality{Region: "r1", Zone: "z0"}, translator.Locality{Region: "r2", Zone: "z2"}
	proxies = append(proxies,
		translator.Proxy{Kind: translator.KindGRPC, Locality: r1z0},
		translator.Proxy{Kind: translator.KindGRPC, Locality: r2z2},
		translator.Proxy{Kind: translator.KindGRPC, Locality: translator.Locality{Zone: "z1"}},
		translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleGateway, Service: "edge", Locality: translator.Locality{Region: "r1", Zone: "z1"}},
		translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "svc-1", Locality: r1z0},
		translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "svc-1", Locality: r2z2},
		translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "svc-3", Locality: r1z0},
		translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "svc-3", Locality: translator.Locality{Region: "r3"}},
	)

	rng := rand.New(rand.NewSource(12))
	tr := translator.New()
	shared := tr.NewShared()
	incs := map[int]*translator.Incremental{}
	type revOut struct {
		rev uint64
		out []byte
	}
	lastOut := map[int]*revOut{}
	var merger sources.Merger
	pol := pols[1]
	for step := range 150 {
		what := "initial"
		switch {
		case step == 0:
		case step%11 == 0:
			pol = pols[rng.Intn(len(pols))]
			what = "policy swap"
		case step%7 == 0:
			// A group goes away (its Incremental with it) or comes back.
			i := rng.Intn(len(proxies))
			delete(incs, i)
			delete(lastOut, i)
			what = "group dropped " + proxies[i].Key()
		default:
			what = mutate(rng, states)
		}
		cat := merger.Merge(states)
		if step%5 == 1 {
			// Sweeps between two translations of the same input: what
			// the groups still use must survive them.
			for range 2 {
				for i, inc := range incs {
					if _, err := inc.Translate(cat, pol); err != nil {
						t.Fatalf("step %d, group %s: %v", step, proxies[i].Key(), err)
					}
				}
				shared.Sweep()
			}
		}
		order := rng.Perm(len(proxies))
		for _, i := range order {
			p := proxies[i]
			inc := incs[i]
			if inc == nil {
				inc = shared.NewIncremental(p)
				incs[i] = inc
			}
			got, err := inc.Translate(cat, pol)
			if err != nil {
				t.Fatalf("step %d (%s), group %s: %v", step, what, p.Key(), err)
			}
			want := translate(t, translator.Input{Catalog: sources.Merge(states), Policy: pol, Proxy: p})
			if err := edsReferences(got); err != nil {
				t.Fatalf("step %d (%s), group %s: %v", step, what, p.Key(), err)
			}
			g, w := marshalResult(t, got), marshalResult(t, want)
			if !bytes.Equal(g, w) {
				t.Fatalf("step %d (%s), group %s: output differs from a fresh translation:\ngot:\n%s\nwant:\n%s", step, what, p.Key(), g, w)
			}
			// The revision's contract: the same revision, the same output.
			if last := lastOut[i]; got.Revision == 0 || last != nil && last.rev == got.Revision && !bytes.Equal(last.out, g) {
				t.Fatalf("step %d (%s), group %s: revision %d kept for another output", step, what, p.Key(), got.Revision)
			}
			lastOut[i] = &revOut{got.Revision, g}
		}
		if step%5 == 0 {
			shared.Sweep()
		}
	}
}

// TestSharedSharesValues checks the point of Shared: groups with the same
// view and dependencies get the very same per-service values and lists,
// and after one instance's health changes only that service's load
// assignment is new, in one list shared by all of them.
func TestSharedSharesValues(t *testing.T) {
	st := sources.State{}
	for s := range 20 {
		st.Services = append(st.Services, sources.Service{Name: fmt.Sprintf("svc-%02d", s), Instances: []sources.Instance{
			{Address: fmt.Sprintf("10.0.0.%d", s+1), Port: 8080, Health: sources.HealthHealthy},
		}})
	}
	st.Normalize("etcd")
	var merger sources.Merger
	shared := translator.New().NewShared()
	var incs []*translator.Incremental
	for s := range 5 {
		incs = append(incs, shared.NewIncremental(translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: fmt.Sprintf("svc-%02d", s), InboundPort: 8080}))
	}
	run := func(cat sources.Catalog) []*translator.Result {
		var out []*translator.Result
		for _, inc := range incs {
			res, err := inc.Translate(cat, nil)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, res)
		}
		return out
	}
	before := run(merger.Merge(map[string]sources.State{"etcd": st}))
	eds := before[0].Resources[resource.EndpointType]
	for i, res := range before[1:] {
		if got := res.Resources[resource.EndpointType]; len(got) != len(eds) || &got[0] != &eds[0] {
			t.Fatalf("group %d has its own list of load assignments; want the one list every group shares", i+1)
		}
		clusters := res.Resources[resource.ClusterType]
		if len(clusters) != 21 { // 20 services and the local application
			t.Fatalf("group %d: %d clusters, want 21", i+1, len(clusters))
		}
		for j, c := range before[0].Resources[resource.ClusterType] {
			if name := clusterName(c); name != "inbound|8080" && c != byName(clusters)[name] {
				t.Fatalf("group %d: cluster %d (%s) is another value than group 0's", i+1, j, name)
			}
		}
	}
	next := sources.State{Services: append([]sources.Service(nil), st.Services...)}
	next.Services[7].Instances = []sources.Instance{{Address: "10.0.0.8", Port: 8080, Health: sources.HealthUnhealthy, Source: "etcd"}}
	after := run(merger.Merge(map[string]sources.State{"etcd": next}))
	old := byName(eds)
	neweds := after[0].Resources[resource.EndpointType]
	for _, r := range neweds {
		name := clusterName(r)
		if (r != old[name]) != (name == "svc-07") {
			t.Fatalf("load assignment %s: new value=%v, want a new value for svc-07 only", name, r != old[name])
		}
	}
	for i, res := range after {
		if got := res.Resources[resource.EndpointType]; &got[0] != &neweds[0] {
			t.Fatalf("group %d: load assignments are not the shared list after the change", i)
		}
		if got, was := res.Resources[resource.ClusterType], before[i].Resources[resource.ClusterType]; &got[0] != &was[0] {
			t.Fatalf("group %d: its cluster list was rebuilt although no cluster changed", i)
		}
	}
}

func clusterName(r types.Resource) string { return cache.GetResourceName(r) }

// edsReferences checks that every EDS cluster's load assignment is in the
// result (a scoped group still needs its tracing collector's).
func edsReferences(res *translator.Result) error {
	have := byName(res.Resources[resource.EndpointType])
	for _, r := range res.Resources[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.GetName()
		}
		if have[name] == nil {
			return fmt.Errorf("cluster %s refers to load assignment %s, which is missing", c.GetName(), name)
		}
	}
	return nil
}

// TestIncrementalRevision: a group's result keeps its revision while nothing
// it gets changes, including changes to services outside its dependencies,
// and gets a new one when something it gets does.
func TestIncrementalRevision(t *testing.T) {
	set, diags := policy.Load([]policy.File{{Name: "web.yaml", Data: []byte(
		"apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: web}\nspec:\n  dependencies: [api]\n")}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	st := sources.State{Services: []sources.Service{
		{Name: "api", Instances: []sources.Instance{{Address: "10.0.0.1", Port: 80, Health: sources.HealthHealthy}}},
		{Name: "db", Instances: []sources.Instance{{Address: "10.0.0.2", Port: 5432, Health: sources.HealthHealthy}}},
	}}
	st.Normalize("a")
	var merger sources.Merger
	inc := translator.New().NewShared().NewIncremental(translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web", InboundPort: 8080})
	rev := func(st sources.State) uint64 {
		t.Helper()
		res, err := inc.Translate(merger.Merge(map[string]sources.State{"a": st}), set)
		if err != nil {
			t.Fatal(err)
		}
		return res.Revision
	}
	first := rev(st)
	if again := rev(st); again != first {
		t.Fatalf("same input: revision %d, then %d", first, again)
	}
	db := sources.State{Services: []sources.Service{st.Services[0], {Name: "db", Instances: []sources.Instance{{Address: "10.0.0.3", Port: 5432, Health: sources.HealthHealthy, Source: "a"}}}}}
	if got := rev(db); got != first {
		t.Fatalf("a change to db, which web does not depend on, changed its revision (%d -> %d)", first, got)
	}
	api := sources.State{Services: []sources.Service{{Name: "api", Instances: []sources.Instance{{Address: "10.0.0.9", Port: 80, Health: sources.HealthHealthy, Source: "a"}}}, db.Services[1]}}
	if got := rev(api); got == first {
		t.Fatal("a change to api, a dependency, kept web's revision")
	}
}
