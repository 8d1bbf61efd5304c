package translator_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// statesOf turns a golden catalog back into what two sources reported, so
// that it can be changed the way registries change it.
func statesOf(cat sources.Catalog) map[string]sources.State {
	states := map[string]sources.State{"a": {}, "b": {}}
	for i, cs := range cat.Services {
		src := "a"
		if i%3 == 2 {
			src = "b"
		}
		svc := sources.Service{Name: cs.Name}
		for _, ep := range cs.Endpoints {
			svc.Instances = append(svc.Instances, ep.Instance)
		}
		st := states[src]
		st.Services = append(st.Services, svc)
		states[src] = st
	}
	for src, st := range states {
		st.Normalize(src)
		states[src] = st
	}
	return states
}

// mutate changes one service of one source the way a source does: a new
// Instances slice for that service, every other slice left as it was.
func mutate(rng *rand.Rand, states map[string]sources.State) string {
	src := []string{"a", "b"}[rng.Intn(2)]
	st := states[src]
	st.Services = slices.Clone(st.Services)
	defer func() { st.Normalize(src); states[src] = st }()
	if len(st.Services) == 0 || rng.Intn(8) == 0 {
		name := fmt.Sprintf("added-%d", rng.Intn(4))
		st.Services = append(st.Services, sources.Service{Name: name, Instances: []sources.Instance{{Address: "10.9.9.9", Port: 9000}}})
		return "add " + name
	}
	i := rng.Intn(len(st.Services))
	svc := &st.Services[i]
	ins := slices.Clone(svc.Instances)
	switch op := rng.Intn(7); {
	case op == 0 && len(st.Services) > 1:
		name := svc.Name
		st.Services = slices.Delete(st.Services, i, i+1)
		return "remove " + name
	case op == 1 && len(ins) > 0:
		ins = ins[1:]
	case op == 2:
		// A new port: the service's domains (its virtual host) change.
		ins = append(ins, sources.Instance{Address: fmt.Sprintf("10.8.%d.%d", i, len(ins)), Port: uint32(7000 + rng.Intn(3)), Health: sources.HealthHealthy})
	case op == 4 && len(ins) > 0:
		// Another version: subsets select it differently.
		in := &ins[rng.Intn(len(ins))]
		in.Metadata = map[string]string{"version": []string{"v1", "v2", "v3"}[rng.Intn(3)]}
	case op == 3 && len(ins) > 0:
		// Another locality: locality policies order it differently.
		in := &ins[rng.Intn(len(ins))]
		in.Region = []string{"", "r1", "r2", "r3"}[rng.Intn(4)]
		in.Zone = []string{"", "z0", "z1", "z2"}[rng.Intn(4)]
	case len(ins) > 0:
		in := &ins[rng.Intn(len(ins))]
		in.Health = sources.Health(rng.Intn(4))
		in.Weight = uint32(1 + rng.Intn(3))
	}
	svc.Instances = ins
	return "change " + svc.Name
}

// TestIncrementalMatchesTranslate drives every golden case through a series
// of registry changes (and policy swaps) with sources.Merger and an
// Incremental, as the snapshot loop does, and expects byte-identical
// output to a fresh Translate of the same catalog after every step.
func TestIncrementalMatchesTranslate(t *testing.T) {
	cases := loadCases(t)
	policies := []*policy.Set{nil}
	for _, c := range cases {
		if c.input.Policy != nil {
			policies = append(policies, c.input.Policy)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(len(c.name))))
			states := statesOf(c.input.Catalog)
			var merger sources.Merger
			tr := translator.New()
			inc := tr.NewIncremental(c.input.Proxy)
			pol := c.input.Policy
			for step := range 60 {
				what := "initial"
				switch {
				case step == 0:
				case step%15 == 0:
					// Another policy set: the memo must not serve
					// resources built under the old one.
					pol = policies[rng.Intn(len(policies))]
					what = "policy swap"
				default:
					what = mutate(rng, states)
				}
				cat := merger.Merge(states)
				got, err := inc.Translate(cat, pol)
				if err != nil {
					t.Fatalf("step %d (%s): Incremental.Translate: %v", step, what, err)
				}
				want := translate(t, translator.Input{Catalog: sources.Merge(states), Policy: pol, Proxy: c.input.Proxy})
				if !bytes.Equal(marshalResult(t, got), marshalResult(t, want)) {
					t.Fatalf("step %d (%s): incremental output differs from a fresh translation", step, what)
				}
			}
		})
	}
}

// TestIncrementalReusesUnchanged checks the point of the memo: after one
// instance's health changes, only that service's load assignment is a new
// value; every other resource, including the outbound route configuration
// of all virtual hosts, the listeners and a sidecar's inbound side, is the
// one the previous call returned.
func TestIncrementalReusesUnchanged(t *testing.T) {
	st := sources.State{}
	for s := range 50 {
		svc := sources.Service{Name: fmt.Sprintf("svc-%02d", s)}
		for i := range 3 {
			svc.Instances = append(svc.Instances, sources.Instance{Address: fmt.Sprintf("10.0.%d.%d", s, i), Port: 8080, Health: sources.HealthHealthy})
		}
		st.Services = append(st.Services, svc)
	}
	st.Normalize("etcd")
	for _, p := range []translator.Proxy{
		{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "svc-01", InboundPort: 8080},
		{Kind: translator.KindGRPC},
	} {
		t.Run(string(p.Kind), func(t *testing.T) {
			var merger sources.Merger
			inc := translator.New().NewIncremental(p)
			states := map[string]sources.State{"etcd": st}
			before, err := inc.Translate(merger.Merge(states), nil)
			if err != nil {
				t.Fatal(err)
			}
			next := sources.State{Services: slices.Clone(st.Services)}
			ins := slices.Clone(next.Services[7].Instances)
			ins[1].Health = sources.HealthUnhealthy
			next.Services[7].Instances = ins
			after, err := inc.Translate(merger.Merge(map[string]sources.State{"etcd": next}), nil)
			if err != nil {
				t.Fatal(err)
			}
			changed := map[string]bool{}
			for _, typ := range []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
				old := byName(before.Resources[typ])
				for _, r := range after.Resources[typ] {
					if o, ok := old[cache.GetResourceName(r)]; !ok || o != r {
						changed[typ+" "+cache.GetResourceName(r)] = true
					}
				}
			}
			want := map[string]bool{resource.EndpointType + " svc-07": true}
			if fmt.Sprint(changed) != fmt.Sprint(want) {
				t.Fatalf("new resource values after one health change: %v, want only %v", changed, want)
			}
			cla := byName(after.Resources[resource.EndpointType])["svc-07"]
			if got := fmt.Sprint(cla); !bytes.Contains([]byte(got), []byte("UNHEALTHY")) {
				t.Fatalf("svc-07's load assignment lacks the change: %s", got)
			}
			if c := byName(after.Resources[resource.ClusterType])["svc-07"].(*clusterv3.Cluster); c.GetName() != "svc-07" {
				t.Fatalf("cluster svc-07 is named %q", c.GetName())
			}
		})
	}
}

func byName(rs []types.Resource) map[string]types.Resource {
	out := map[string]types.Resource{}
	for _, r := range rs {
		out[cache.GetResourceName(r)] = r
	}
	return out
}
