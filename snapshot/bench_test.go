package snapshot

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

// meshState is a catalog of services × instances, as one source reports it.
func meshState(services, instances int) sources.State {
	st := sources.State{}
	for s := range services {
		svc := sources.Service{Name: fmt.Sprintf("svc-%04d", s)}
		for i := range instances {
			svc.Instances = append(svc.Instances, sources.Instance{
				Address: fmt.Sprintf("10.%d.%d.%d", s/250, s%250, i+1), Port: 8080,
				Health: sources.HealthHealthy, Weight: 1, Zone: fmt.Sprintf("zone-%d", i%3),
			})
		}
		st.Services = append(st.Services, svc)
	}
	st.Normalize("etcd")
	return st
}

// BenchmarkChangeToSnapshot measures the work between a source reporting one
// changed instance and a new snapshot for one proxy group: merging the
// catalog, translating, and hashing/checking the snapshot (the loop's
// debounce delay comes on top by design). 1,000 services × 10 instances.
//
// "incremental" is what the loop does: the source hands over a state that
// shares every unchanged service with the previous one (as the etcd source
// does), and the merger, translator and builder memos turn that into work
// for the changed service only. "full" rebuilds everything from scratch,
// for comparison.
//
//	go test -run '^$' -bench ChangeToSnapshot -benchmem ./snapshot/
func BenchmarkChangeToSnapshot(b *testing.B) {
	for _, kind := range []translator.ProxyKind{translator.KindEnvoy, translator.KindGRPC} {
		proxy := translator.Proxy{Kind: kind, Role: translator.RoleSidecar}
		b.Run(string(kind)+"/incremental", func(b *testing.B) {
			var merger sources.Merger
			inc := translator.New().NewIncremental(proxy)
			builder := NewBuilder()
			changeLoop(b, func(st sources.State) {
				res, err := inc.Translate(merger.Merge(map[string]sources.State{"etcd": st}), nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := builder.Build(res.Resources); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run(string(kind)+"/full", func(b *testing.B) {
			tr := translator.New()
			changeLoop(b, func(st sources.State) {
				cat := sources.Merge(map[string]sources.State{"etcd": st})
				res, err := tr.Translate(translator.Input{Catalog: cat, Proxy: proxy})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Build(res.Resources); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// changeLoop builds a 1,000 × 10 mesh once, then times one instance's
// health flip and the build after it per iteration.
func changeLoop(b *testing.B, build func(sources.State)) {
	st := meshState(1000, 10)
	build(st)
	i := 0
	for b.Loop() {
		st = flipHealth(st, i%1000)
		i++
		build(st)
	}
}

// flipHealth returns st with the health of service s's first instance
// flipped, as a registry update would report it: a new state sharing every
// other service's instances.
func flipHealth(st sources.State, s int) sources.State {
	next := sources.State{Services: slices.Clone(st.Services)}
	ins := slices.Clone(next.Services[s].Instances)
	if ins[0].Health == sources.HealthHealthy {
		ins[0].Health = sources.HealthUnhealthy
	} else {
		ins[0].Health = sources.HealthHealthy
	}
	next.Services[s].Instances = ins
	return next
}

// BenchmarkChangeManyGroups is BenchmarkChangeToSnapshot/envoy/incremental
// for G sidecar groups (one per service, as proxies that name their
// service with node.cluster form), each also published to the xDS cache, as
// the loop does it: one translator.Shared and one Shared for every group,
// and only the groups whose translation changed built and published.
// "deps=all" groups get the whole mesh; "deps=10" groups depend on ten
// services each (the ten after their own), so most groups do not see the
// change. "zones=3" puts the groups' proxies in three zones (group i in
// zone-(i mod 3), where the instances are too) under a mesh-wide
// locality failover policy: every service's load assignment differs by
// the caller's zone.
//
//	go test -run '^$' -bench ChangeManyGroups -benchmem ./snapshot/
func BenchmarkChangeManyGroups(b *testing.B) {
	for _, deps := range []int{0, 10} {
		for _, groups := range []int{1, 10, 100, 1000, -100, -1000} {
			zones := 0
			if groups < 0 {
				groups, zones = -groups, 3
			}
			name := fmt.Sprintf("deps=all/groups=%d", groups)
			if deps > 0 {
				name = fmt.Sprintf("deps=%d/groups=%d", deps, groups)
			}
			if zones > 0 {
				name += fmt.Sprintf("/zones=%d", zones)
			}
			b.Run(name, func(b *testing.B) {
				pol := dependencyPolicies(b, groups, deps, 1000, zones > 0)
				var merger sources.Merger
				c := xds.NewCache(nil)
				shared, sharedBuild := translator.New().NewShared(), NewShared()
				type pipe struct {
					inc      *translator.Incremental
					bld      *Builder
					key      string
					revision uint64
					versions map[string]string
				}
				var pipes []*pipe
				for g := range groups {
					p := translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: fmt.Sprintf("svc-%04d", g), InboundPort: 8080}
					if zones > 0 {
						p.Locality = translator.Locality{Zone: fmt.Sprintf("zone-%d", g%zones)}
					}
					pipes = append(pipes, &pipe{inc: shared.NewIncremental(p), bld: sharedBuild.NewBuilder(), key: p.Key()})
				}
				changeLoop(b, func(st sources.State) {
					cat := merger.Merge(map[string]sources.State{"etcd": st})
					for _, p := range pipes {
						res, err := p.inc.Translate(cat, pol)
						if err != nil {
							b.Fatal(err)
						}
						// As the loop does: a result it built from
						// before is not built again, and a snapshot
						// whose versions did not change is not
						// published.
						if res.Revision == p.revision {
							continue
						}
						snap, err := p.bld.Build(res.Resources)
						if err != nil {
							b.Fatal(err)
						}
						p.revision = res.Revision
						versions := Versions(snap)
						if maps.Equal(versions, p.versions) {
							continue
						}
						p.versions = versions
						if err := c.SetSnapshot(context.Background(), p.key, snap); err != nil {
							b.Fatal(err)
						}
					}
					shared.Sweep()
				})
			})
		}
	}
}

// dependencyPolicies is a policy set in which each of the first groups
// services svc-i depends on the deps services after it (of services); none
// for deps 0 (every service). With locality, a MeshPolicy makes every
// service fail over by locality. nil when it has no documents.
func dependencyPolicies(tb testing.TB, groups, deps, services int, locality bool) *policy.Set {
	var files []policy.File
	if locality {
		files = append(files, policy.File{Name: "mesh.yaml", Data: []byte("apiVersion: sluice.dev/v1\nkind: MeshPolicy\nmetadata: {name: mesh}\nspec:\n  defaults:\n    locality: {mode: failover}\n    outlierDetection: {}\n")})
	}
	if deps == 0 && !locality {
		return nil
	}
	for g := range groups {
		if deps == 0 {
			break
		}
		var names []string
		for d := 1; d <= deps; d++ {
			names = append(names, fmt.Sprintf("svc-%04d", (g+d)%services))
		}
		doc := fmt.Sprintf("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: svc-%04d}\nspec:\n  dependencies: [%s]\n", g, strings.Join(names, ", "))
		files = append(files, policy.File{Name: fmt.Sprintf("svc-%04d.yaml", g), Data: []byte(doc)})
	}
	set, diags := policy.Load(files)
	if len(diags) > 0 {
		tb.Fatalf("dependency policies: %v", diags)
	}
	return set
}
