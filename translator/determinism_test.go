package translator_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"sort"
	"sync"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// determinismStates is what three registries might report: overlapping
// services and instances, disagreeing on health, weight and metadata.
func determinismStates() map[string]sources.State {
	rng := rand.New(rand.NewSource(7))
	healths := []sources.Health{sources.HealthUnknown, sources.HealthHealthy, sources.HealthDraining, sources.HealthUnhealthy}
	states := map[string]sources.State{}
	for si, src := range []string{"consul", "etcd", "file"} {
		var st sources.State
		for s := 0; s < 8; s++ {
			svc := sources.Service{Name: fmt.Sprintf("svc-%d", s)}
			for i := 0; i < 12; i++ {
				if rng.Intn(3) == 0 {
					continue
				}
				svc.Instances = append(svc.Instances, sources.Instance{
					Address:  fmt.Sprintf("10.%d.%d.%d", s, i%3, i),
					Port:     uint32(8000 + i%3),
					Health:   healths[rng.Intn(len(healths))],
					Weight:   uint32(1 + rng.Intn(5) + si),
					Region:   fmt.Sprintf("region-%d", rng.Intn(2)),
					Zone:     fmt.Sprintf("zone-%d", rng.Intn(3)),
					Metadata: map[string]string{"src": src, fmt.Sprint("k", i%4): "v", "version": fmt.Sprint("v", rng.Intn(3))},
					Source:   src,
					Origin:   fmt.Sprintf("%s:%d", src, i),
				})
			}
			if len(svc.Instances) > 0 || rng.Intn(2) == 0 {
				st.Services = append(st.Services, svc)
			}
		}
		st.Normalize(src)
		states[src] = st
	}
	return states
}

func shuffledStates(rng *rand.Rand, states map[string]sources.State) map[string]sources.State {
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	sort.Strings(names)
	out := map[string]sources.State{}
	for _, i := range rng.Perm(len(names)) {
		st := states[names[i]]
		cp := sources.State{Services: make([]sources.Service, len(st.Services))}
		for k, j := range rng.Perm(len(st.Services)) {
			svc := st.Services[j]
			ins := make([]sources.Instance, len(svc.Instances))
			for a, b := range rng.Perm(len(svc.Instances)) {
				ins[a] = svc.Instances[b]
			}
			cp.Services[k] = sources.Service{Name: svc.Name, Instances: ins}
		}
		out[names[i]] = cp
	}
	return out
}

// marshalResult concatenates the deterministic wire form of every resource,
// type by type, with names, as the snapshot hash would see them.
func marshalResult(t *testing.T, res *translator.Result) []byte {
	t.Helper()
	b, err := wireForm(res)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wireForm(res *translator.Result) ([]byte, error) {
	var b bytes.Buffer
	for _, g := range goldenTypes {
		fmt.Fprintf(&b, "== %s\n", g.name)
		for _, r := range res.Resources[g.typ] {
			data, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "%s %d\n", cache.GetResourceName(r), len(data))
			b.Write(data)
		}
	}
	// The diagnostics are part of what Translate and Incremental must
	// agree on.
	for _, d := range res.Diagnostics {
		fmt.Fprintf(&b, "== diagnostic %s: %s\n", d.Severity, d)
	}
	return b.Bytes(), nil
}

// TestTranslateDeterministic feeds the same registry contents in many shuffled
// orders through Merge and Translate, as production does, and expects
// byte-identical resources and identical snapshot versions every time.
func TestTranslateDeterministic(t *testing.T) {
	proxies := []translator.Proxy{
		{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web"},
		{Kind: translator.KindEnvoy, Role: translator.RoleGateway, OutboundAddress: "0.0.0.0", OutboundPort: 8080},
		{Kind: translator.KindGRPC},
	}
	states := determinismStates()
	type baseline struct {
		wire     []byte
		versions map[resource.Type]string
		res      *translator.Result
	}
	run := func(t *testing.T, cat sources.Catalog, p translator.Proxy) baseline {
		t.Helper()
		res := translate(t, translator.Input{Catalog: cat, Proxy: p})
		snap, err := snapshot.Build(res.Resources)
		if err != nil {
			t.Fatalf("snapshot.Build: %v", err)
		}
		return baseline{marshalResult(t, res), snapshot.Versions(snap), res}
	}
	base := sources.Merge(states)
	if len(base.Services) < 5 || base.InstanceCount() < 40 {
		t.Fatalf("test catalog too small: %d services, %d instances", len(base.Services), base.InstanceCount())
	}
	want := make([]baseline, len(proxies))
	for i, p := range proxies {
		want[i] = run(t, base, p)
	}

	rng := rand.New(rand.NewSource(42))
	for iter := 0; iter < 200; iter++ {
		cat := sources.Merge(shuffledStates(rng, states))
		// A catalog handed over unsorted must give the same result too.
		if iter%2 == 1 {
			rng.Shuffle(len(cat.Services), func(i, j int) { cat.Services[i], cat.Services[j] = cat.Services[j], cat.Services[i] })
		}
		for i, p := range proxies {
			got := run(t, cat, p)
			if !bytes.Equal(got.wire, want[i].wire) {
				for _, g := range goldenTypes {
					if diff := cmp.Diff(string(render(t, want[i].res.Resources[g.typ])), string(render(t, got.res.Resources[g.typ]))); diff != "" {
						t.Errorf("%s differs (-first +this):\n%s", g.name, diff)
					}
				}
				t.Fatalf("iteration %d, proxy %s: output depends on input order", iter, p.Key())
			}
			if diff := cmp.Diff(want[i].versions, got.versions); diff != "" {
				t.Fatalf("iteration %d, proxy %s: snapshot versions differ (-first +this):\n%s", iter, p.Key(), diff)
			}
		}
	}
}

// TestTranslateConcurrent uses one Translator from several goroutines (run
// with -race) and expects the same output from each.
func TestTranslateConcurrent(t *testing.T) {
	in := translator.Input{Catalog: sources.Merge(determinismStates()), Proxy: translator.Proxy{Kind: translator.KindEnvoy}}
	tr := translator.New()
	want := marshalResult(t, translate(t, in))
	var wg sync.WaitGroup
	results := make([][]byte, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := tr.Translate(in)
			if err == nil {
				results[i], err = wireForm(res)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if !bytes.Equal(results[i], want) {
			t.Errorf("goroutine %d got different output", i)
		}
	}
}

// TestTranslateDeterministicWithPolicies translates every golden case
// (most carry policies, whose translation looks things up in maps) many
// times and expects byte-identical resources each time.
func TestTranslateDeterministicWithPolicies(t *testing.T) {
	for _, c := range loadCases(t) {
		want := marshalResult(t, translate(t, c.input))
		for i := range 20 {
			if got := marshalResult(t, translate(t, c.input)); !bytes.Equal(got, want) {
				t.Fatalf("%s: translation %d differs from the first", c.name, i)
			}
		}
	}
}
