package snapshot

import (
	"fmt"
	"testing"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
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
//	go test -run '^$' -bench ChangeToSnapshot -benchmem ./snapshot/
func BenchmarkChangeToSnapshot(b *testing.B) {
	for _, kind := range []translator.ProxyKind{translator.KindEnvoy, translator.KindGRPC} {
		b.Run(string(kind), func(b *testing.B) {
			st := meshState(1000, 10)
			tr := translator.New()
			proxy := translator.Proxy{Kind: kind, Role: translator.RoleSidecar}
			b.ResetTimer()
			for i := range b.N {
				// Flip one instance's health, as a registry update would.
				in := &st.Services[i%1000].Instances[0]
				if in.Health == sources.HealthHealthy {
					in.Health = sources.HealthUnhealthy
				} else {
					in.Health = sources.HealthHealthy
				}
				cat := sources.Merge(map[string]sources.State{"etcd": st})
				res, err := tr.Translate(translator.Input{Catalog: cat, Proxy: proxy})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Build(res.Resources); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
