package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// consulAgent is a real `consul agent -dev` on loopback.
type consulAgent struct {
	HTTPAddr string
	Client   *consulapi.Client
}

// consulBinary finds the agent `make deps` builds into bin/.
func consulBinary(t *testing.T) string {
	t.Helper()
	return realBinary(t, "consul", "SLUICE_CONSUL", "../bin/consul", "builds the pinned Consul into bin/")
}

func startConsul(t *testing.T) *consulAgent {
	t.Helper()
	bin := consulBinary(t)
	ports := map[string]int{}
	for _, p := range []string{"http", "dns", "grpc", "grpc-tls", "serf-lan", "serf-wan", "server"} {
		ports[p] = listenerPort(t)
	}
	args := []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "warn"}
	for name, port := range ports {
		args = append(args, "-"+name+"-port", strconv.Itoa(port))
	}
	cmd := exec.Command(bin, args...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting consul: %v", err)
	}
	t.Cleanup(func() {
		stopProcess(cmd)
		if t.Failed() {
			t.Logf("consul logs:\n%s", logs.String())
		}
	})
	a := &consulAgent{HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports["http"]))}
	cfg := consulapi.DefaultConfig()
	cfg.Address = a.HTTPAddr
	cli, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Client = cli
	eventually(t, 30*time.Second, "a consul leader", func() error {
		leader, err := cli.Status().Leader()
		if err != nil || leader == "" {
			return fmt.Errorf("no leader yet (%w)", err)
		}
		return nil
	})
	return a
}

// registerTTL registers an instance with a TTL check, as services with
// their own health reporting do; the check starts passing.
func (a *consulAgent) registerTTL(t *testing.T, service, addr string) string {
	t.Helper()
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	id := service + "-" + portStr
	err := a.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: id, Name: service, Address: host, Port: port,
		Check: &consulapi.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "10m", Status: consulapi.HealthPassing},
	})
	if err != nil {
		t.Fatalf("registering %s: %v", id, err)
	}
	return id
}

func (a *consulAgent) setTTL(t *testing.T, id, status string) {
	t.Helper()
	if err := a.Client.Agent().UpdateTTL("ttl-"+id, "set by test", status); err != nil {
		t.Fatalf("updating check of %s: %v", id, err)
	}
}

// TestConsulHealthDrivesTraffic: instances registered with TTL checks in a
// real Consul agent reach a gRPC xDS client through sluice; a failing check
// moves all traffic to the other instance, passing again brings it back,
// and deregistering removes it.
func TestConsulHealthDrivesTraffic(t *testing.T) {
	requireE2E(t)
	agent := startConsul(t)
	bs := startGRPCBackends(t, 2)
	id0 := agent.registerTTL(t, "user-service", bs[0].addr)
	id1 := agent.registerTTL(t, "user-service", bs[1].addr)

	s := startSluice(t, "--consul-addr", agent.HTTPAddr)
	client := dialXDS(t, s.XDSAddr, "user-service")
	waitOnly(t, client, "backend-0", "backend-1")

	agent.setTTL(t, id1, consulapi.HealthCritical)
	waitOnly(t, client, "backend-0")
	agent.setTTL(t, id1, consulapi.HealthPassing)
	waitOnly(t, client, "backend-0", "backend-1")

	if err := agent.Client.Agent().ServiceDeregister(id0); err != nil {
		t.Fatal(err)
	}
	waitOnly(t, client, "backend-1")
}

// TestConsulAndEtcdMerge: the same service registered in Consul and in etcd
// is one cluster with the union of the instances; where both report the same
// instance and disagree, the unhealthy view wins and the admin API shows both.
func TestConsulAndEtcdMerge(t *testing.T) {
	requireE2E(t)
	agent := startConsul(t)
	e := startEtcd(t, "http://127.0.0.1:0", "")
	cli := etcdClient(t, e.Endpoints())
	bs := startGRPCBackends(t, 3)

	agent.registerTTL(t, "user-service", bs[0].addr)
	shared := agent.registerTTL(t, "user-service", bs[1].addr)
	putInstance(t, cli, 0, "user-service", bs[1].addr, "healthy", 1)
	putInstance(t, cli, 0, "user-service", bs[2].addr, "healthy", 1)

	s := startSluice(t, "--consul-addr", agent.HTTPAddr, "--etcd-endpoints", e.Endpoints()[0])
	client := dialXDS(t, s.XDSAddr, "user-service")
	waitOnly(t, client, "backend-0", "backend-1", "backend-2")

	// Consul says the shared instance is failing, etcd says healthy.
	agent.setTTL(t, shared, consulapi.HealthCritical)
	waitOnly(t, client, "backend-0", "backend-2")

	var cat struct {
		Catalog struct {
			Services []struct {
				Name      string
				Endpoints []struct {
					Address string
					Port    int
					Health  string
					Source  string
					Views   []struct{ Source, Health string }
				}
			}
		}
	}
	if code := s.adminJSON(t, "/debug/catalog", &cat); code != http.StatusOK {
		t.Fatalf("/debug/catalog: %d", code)
	}
	var users []struct {
		Address string
		Port    int
		Health  string
		Source  string
		Views   []struct{ Source, Health string }
	}
	for _, svc := range cat.Catalog.Services {
		if svc.Name == "user-service" {
			users = svc.Endpoints
		}
		// The servers' own service is left out by default.
		if svc.Name == "consul" {
			t.Errorf("the agent's own consul service is in the catalog: %+v", svc)
		}
	}
	if len(users) != 3 {
		t.Fatalf("want user-service with three endpoints, got %+v", cat.Catalog)
	}
	found := false
	for _, ep := range users {
		if fmt.Sprintf("%s:%d", ep.Address, ep.Port) != bs[1].addr {
			continue
		}
		found = true
		if ep.Health != "unhealthy" || ep.Source != "consul,etcd" || len(ep.Views) != 2 {
			t.Errorf("shared endpoint %+v: want unhealthy from consul,etcd with both views", ep)
		}
	}
	if !found {
		t.Fatalf("shared endpoint missing: %+v", cat.Catalog)
	}
}
