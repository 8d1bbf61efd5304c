package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-mesh/sluice/sources"
)

// Mesh is a synthetic catalog: Services services of Endpoints instances
// each, named svc-0000... with addresses 10.x.y.z:8080, the same on every
// run so that servers and the load tool agree without talking.
type Mesh struct {
	Services, Endpoints int
}

// ServiceName is the name of service i.
func (m Mesh) ServiceName(i int) string { return fmt.Sprintf("svc-%04d", i) }

// Address is the address of instance j of service i.
func (m Mesh) Address(i, j int) string {
	return fmt.Sprintf("10.%d.%d.%d:8080", i/250, i%250, j+1)
}

// watchedService is the service the run changes.
const watchedService = 0

// Watch is the change a run makes: the first instance of the first service
// goes away.
func (m Mesh) Watch() Watch {
	return Watch{Cluster: m.ServiceName(watchedService), Address: m.Address(watchedService, 0)}
}

// State is the mesh as a source state; without drops the watched instance.
func (m Mesh) State(without bool) sources.State {
	st := sources.State{}
	for i := range m.Services {
		svc := sources.Service{Name: m.ServiceName(i)}
		for j := range m.Endpoints {
			if without && i == watchedService && j == 0 {
				continue
			}
			host, _, _ := strings.Cut(m.Address(i, j), ":")
			svc.Instances = append(svc.Instances, sources.Instance{
				Address: host, Port: 8080, Health: sources.HealthHealthy, Weight: 1, Zone: fmt.Sprintf("zone-%d", j%3),
			})
		}
		st.Services = append(st.Services, svc)
	}
	st.Normalize("load")
	return st
}

// WriteRegistryFile writes the mesh as a sluice registry file, atomically.
func (m Mesh) WriteRegistryFile(path string, without bool) error {
	var b strings.Builder
	b.WriteString("services:\n")
	for _, svc := range m.State(without).Services {
		fmt.Fprintf(&b, "  - name: %s\n    instances:\n", svc.Name)
		for _, in := range svc.Instances {
			fmt.Fprintf(&b, "      - {address: %s, port: %d, zone: %s}\n", in.Address, in.Port, in.Zone)
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// etcdKey is where sluice's default etcd layout keeps an instance.
func etcdKey(service, addr string) string { return "/services/" + service + "/" + addr }

// PopulateEtcd writes the mesh into etcd in sluice's default key layout.
func (m Mesh) PopulateEtcd(ctx context.Context, cli *clientv3.Client) error {
	for i := range m.Services {
		ops := make([]clientv3.Op, 0, m.Endpoints)
		for j := range m.Endpoints {
			v, _ := json.Marshal(map[string]any{"status": "healthy", "weight": 1, "zone": fmt.Sprintf("zone-%d", j%3)})
			ops = append(ops, clientv3.OpPut(etcdKey(m.ServiceName(i), m.Address(i, j)), string(v)))
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.Txn(tctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("writing service %s: %w", m.ServiceName(i), err)
		}
	}
	return nil
}

// RemoveFromEtcd deletes the watched instance's key.
func (m Mesh) RemoveFromEtcd(ctx context.Context, cli *clientv3.Client) error {
	w := m.Watch()
	_, err := cli.Delete(ctx, etcdKey(w.Cluster, w.Address))
	return err
}
