package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-mesh/sluice/sources/etcd"
	"github.com/sluice-mesh/sluice/sources/etcd/embedded"
)

// startEtcd runs a real etcd in-process on loopback ephemeral ports. With
// dataDir set it can be stopped and started again on the same data.
func startEtcd(t *testing.T, clientURL, dataDir string) *embedded.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, embedded.Config{
		ClientURL: clientURL, DataDir: dataDir, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("starting etcd: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func etcdClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := etcd.NewClient(etcd.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// putInstance writes an instance the way our users' Go services do: a JSON
// value under <prefix>/<service>/<host:port>, on a lease.
func putInstance(t *testing.T, cli *clientv3.Client, lease clientv3.LeaseID, service, addr, status string, weight int) {
	t.Helper()
	v, _ := json.Marshal(map[string]any{"status": status, "weight": weight, "timestamp": time.Now().Unix()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opts []clientv3.OpOption
	if lease != clientv3.NoLease {
		opts = append(opts, clientv3.WithLease(lease))
	}
	if _, err := cli.Put(ctx, "/services/"+service+"/"+addr, string(v), opts...); err != nil {
		t.Fatalf("put: %v", err)
	}
}

func grant(t *testing.T, cli *clientv3.Client, ttl int64) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := cli.Grant(ctx, ttl)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	return l.ID
}

// TestEtcdRegistryDrivesTraffic: instances registered in a real etcd reach a
// gRPC xDS client through sluice; health updates, deletes and lease expiry
// move its traffic; an etcd outage keeps the endpoints, and changes made
// while etcd was away converge once it is back.
func TestEtcdRegistryDrivesTraffic(t *testing.T) {
	requireE2E(t)
	dataDir := t.TempDir()
	port := listenerPort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	e := startEtcd(t, url, dataDir)
	cli := etcdClient(t, e.Endpoints())
	bs := startGRPCBackends(t, 4)

	// backend-0..2 live on a kept-alive lease, backend-3 on a short one
	// whose keepalive never runs (its process "died").
	live := grant(t, cli, 60)
	ka, err := cli.KeepAlive(context.Background(), live)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range ka {
		}
	}()
	for i := range 3 {
		putInstance(t, cli, live, "user-service", bs[i].addr, "healthy", 1)
	}
	s := startSluice(t, "--etcd-endpoints", url)
	client := dialXDS(t, s.XDSAddr, "user-service")
	waitOnly(t, client, "backend-0", "backend-1", "backend-2")

	// Add, on a lease that will expire.
	short := grant(t, cli, 2)
	putInstance(t, cli, short, "user-service", bs[3].addr, "healthy", 1)
	waitOnly(t, client, "backend-0", "backend-1", "backend-2", "backend-3")
	// Lease expiry removes it.
	waitOnly(t, client, "backend-0", "backend-1", "backend-2")

	// Health update: unhealthy gets no traffic.
	putInstance(t, cli, live, "user-service", bs[1].addr, "unhealthy", 1)
	waitOnly(t, client, "backend-0", "backend-2")
	// Weight update. gRPC's round_robin ignores endpoint weights (only
	// ring_hash uses them), so check that the weight reached sluice's
	// catalog and keep the traffic check to health and membership.
	putInstance(t, cli, live, "user-service", bs[2].addr, "healthy", 9)
	eventually(t, 10*time.Second, "the weight update in the catalog", func() error {
		var cat struct {
			Catalog struct {
				Services []struct {
					Endpoints []struct {
						Address string
						Port    int
						Weight  int
					}
				}
			}
		}
		s.adminJSON(t, "/debug/catalog", &cat)
		for _, svc := range cat.Catalog.Services {
			for _, ep := range svc.Endpoints {
				if fmt.Sprintf("%s:%d", ep.Address, ep.Port) == bs[2].addr && ep.Weight == 9 {
					return nil
				}
			}
		}
		return fmt.Errorf("catalog %+v", cat.Catalog)
	})
	// Delete.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = cli.Delete(ctx, "/services/user-service/"+bs[0].addr)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	waitOnly(t, client, "backend-2")

	// etcd goes away: sluice keeps serving the last endpoints and says the
	// source is stale.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the etcd source to be reported stale", func() error {
		if m := s.adminText(t, "/metrics"); !strings.Contains(m, `sluice_source_stale{source="etcd"} 1`) {
			return fmt.Errorf("not stale yet")
		}
		return nil
	})
	if code := s.adminJSON(t, "/readyz", nil); code != http.StatusOK {
		t.Errorf("/readyz = %d during an etcd outage; sluice still serves the last state", code)
	}
	waitOnly(t, client, "backend-2")

	// etcd comes back on the same data, with changes made meanwhile (by
	// services that registered while sluice could not see etcd).
	e2 := startEtcd(t, url, dataDir)
	cli2 := etcdClient(t, e2.Endpoints())
	putInstance(t, cli2, clientv3.NoLease, "user-service", bs[0].addr, "healthy", 1)
	putInstance(t, cli2, clientv3.NoLease, "user-service", bs[1].addr, "healthy", 1)
	putInstance(t, cli2, clientv3.NoLease, "user-service", bs[2].addr, "healthy", 1)
	waitOnly(t, client, "backend-0", "backend-1", "backend-2")
	eventually(t, 30*time.Second, "the etcd source to be fresh again", func() error {
		if m := s.adminText(t, "/metrics"); !strings.Contains(m, `sluice_source_stale{source="etcd"} 0`) {
			return fmt.Errorf("still stale")
		}
		return nil
	})
}

// TestServeZeroSetup: `sluice serve --dev` (what `sluice serve` does with no
// registry configured) runs its own etcd; an instance registered into it with
// `sluice register` reaches a gRPC client, and leaves when register stops.
func TestServeZeroSetup(t *testing.T) {
	requireE2E(t)
	bs := startGRPCBackends(t, 1)
	s := startSluice(t, "--dev", "--etcd-endpoints", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "etcd"))
	var endpoints []string
	eventually(t, 10*time.Second, "the embedded etcd's address in the logs", func() error {
		for _, line := range strings.Split(s.logs.String(), "\n") {
			var rec struct {
				Msg       string   `json:"msg"`
				Endpoints []string `json:"endpoints"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "embedded etcd serving" {
				endpoints = rec.Endpoints
				return nil
			}
		}
		return fmt.Errorf("not logged")
	})
	reg := exec.Command(sluiceBin, "register", "user-service", bs[0].addr, "--etcd-endpoints", endpoints[0], "--ttl", "5s")
	regLogs := &syncBuffer{}
	reg.Stdout, reg.Stderr = regLogs, regLogs
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reg.Process.Kill(); _ = reg.Wait() }()

	client := dialXDS(t, s.XDSAddr, "user-service")
	waitOnly(t, client, "backend-0")

	// Stopping register revokes the lease: the instance leaves the catalog.
	if err := reg.Process.Signal(interruptSignal); err != nil {
		t.Fatal(err)
	}
	_ = reg.Wait()
	eventually(t, 10*time.Second, "the registration to leave the catalog", func() error {
		var cat struct {
			Catalog struct {
				Services []struct{ Name string }
			}
		}
		s.adminJSON(t, "/debug/catalog", &cat)
		if len(cat.Catalog.Services) != 0 {
			return fmt.Errorf("catalog %+v; register logs: %s", cat.Catalog, regLogs.String())
		}
		return nil
	})
}
