package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// putVersionedInstance registers a healthy instance in etcd (sluice's
// layout) with metadata version.
func putVersionedInstance(t *testing.T, cli *clientv3.Client, service, addr, version string) {
	t.Helper()
	v, _ := json.Marshal(map[string]any{"status": "healthy", "weight": 1,
		"metadata": map[string]string{"version": version}, "timestamp": time.Now().Unix()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/services/"+service+"/"+addr, string(v)); err != nil {
		t.Fatalf("put: %v", err)
	}
}

// registerVersioned registers an instance in Consul with service meta
// version (which sluice maps to metadata version) and a passing TTL check.
func (a *consulAgent) registerVersioned(t *testing.T, service, addr, version string) {
	t.Helper()
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	id := service + "-" + portStr
	err := a.Client.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: id, Name: service, Address: host, Port: port, Meta: map[string]string{"version": version},
		Check: &consulapi.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "10m", Status: consulapi.HealthPassing},
	})
	if err != nil {
		t.Fatalf("registering %s: %v", id, err)
	}
}

// releaseSpec has subsets v1 and v2 (v2 never has an instance) and, with
// v3, a v3 subset and a 50/50 split between v1 and v3.
func releaseSpec(v3 bool) string {
	spec := "  subsets:\n    v1: {version: v1}\n    v2: {version: v2}"
	if v3 {
		spec += "\n    v3: {version: v3}\n  split:\n    - {subset: v1, weight: 50}\n    - {subset: v3, weight: 50}"
	}
	return spec
}

// TestReleaseNewVersionFromEachRegistry: one sluice reading a registry
// file, an embedded etcd and a real Consul agent, with one service in
// each (rel-file, rel-etcd, rel-consul), each with a v1 instance and a
// gRPC xDS client. A policy with subsets v1 and v2 is edited to add
// subset v3 and split v1 50 / v3 50 before any v3 instance exists: the
// admin API (/readyz) warns that no instance is in subset v2, v3, and
// every call still succeeds on v1. Then a v3 instance registers in each
// registry (metadata version: v3) and takes its half of the calls.
func TestReleaseNewVersionFromEachRegistry(t *testing.T) {
	requireE2E(t)
	agent := startConsul(t)
	etcd := startEtcd(t, "http://127.0.0.1:0", "")
	cli := etcdClient(t, etcd.Endpoints())
	v1 := map[string]*backend{}
	v3 := map[string]*backend{}
	for _, r := range []string{"file", "etcd", "consul"} {
		v1[r] = startNamedGRPCBackend(t, r+"-v1")
		v3[r] = startNamedGRPCBackend(t, r+"-v3")
	}
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	fileV1 := instance(v1["file"].addr, "metadata: {version: v1}")
	writeFile(t, reg, registry("rel-file", fileV1))
	putVersionedInstance(t, cli, "rel-etcd", v1["etcd"].addr, "v1")
	agent.registerVersioned(t, "rel-consul", v1["consul"].addr, "v1")
	policy := func(v3 bool) string {
		return policies(servicePolicy("rel-file", releaseSpec(v3)),
			servicePolicy("rel-etcd", releaseSpec(v3)), servicePolicy("rel-consul", releaseSpec(v3)))
	}
	pol := policyDir(t, policy(false))
	s := startSluice(t, "--registry-file", reg, "--etcd-endpoints", etcd.Endpoints()[0],
		"--consul-addr", agent.HTTPAddr, "--policy-dir", pol)
	registries := []string{"file", "etcd", "consul"}
	clients := map[string]func() string{}
	for _, r := range registries {
		clients[r] = viaGRPC(dialXDS(t, s.XDSAddr, "rel-"+r), nil)
	}
	for _, r := range registries {
		eventually(t, 30*time.Second, "calls to rel-"+r, func() error {
			if got := clients[r](); got != r+"-v1" {
				return fmt.Errorf("answer %q", got)
			}
			return nil
		})
	}
	// warning waits until /readyz warns, for each service, that no
	// instance is in exactly the subsets empty.
	warning := func(empty string) {
		t.Helper()
		eventually(t, 30*time.Second, "the warning about subsets "+empty, func() error {
			msgs := translatorWarnings(t, s)
			for _, r := range registries {
				want := fmt.Sprintf("service rel-%s: no instance is in subset %s: ", r, empty)
				found := false
				for _, m := range msgs {
					found = found || strings.HasPrefix(m, want)
				}
				if !found {
					return fmt.Errorf("no warning %q in %q", want, msgs)
				}
			}
			return nil
		})
	}
	warning("v2")

	t.Run("empty v3 subset", func(t *testing.T) {
		writeFile(t, filepath.Join(pol, "policy.yaml"), policy(true))
		warning("v2, v3")
		t.Logf("/readyz warns: %q", translatorWarnings(t, s))
		// What the gRPC clients are sent: each route goes to the v1
		// subset alone (not to the whole service, as before the split),
		// and they acknowledged it.
		eventually(t, 30*time.Second, "routes to the v1 subsets", func() error {
			cfg := s.adminText(t, "/debug/config?group=grpc")
			for _, r := range registries {
				want := regexp.MustCompile(`"cluster":\s*"rel-` + r + `\|v1"`)
				if !want.MatchString(cfg) {
					return fmt.Errorf("no %s in the grpc group's config", want)
				}
			}
			return nil
		})
		s.noNACKs(t, len(registries))
		for _, r := range registries {
			got := fanOut(200, 4, clients[r])
			onlyKeys(t, "rel-"+r, got, r+"-v1")
			t.Logf("rel-%s with v3 empty: %v", r, sorted(got))
		}
	})

	register := map[string]func(){
		"file": func() {
			writeFile(t, reg, registry("rel-file", fileV1, instance(v3["file"].addr, "metadata: {version: v3}")))
		},
		"etcd":   func() { putVersionedInstance(t, cli, "rel-etcd", v3["etcd"].addr, "v3") },
		"consul": func() { agent.registerVersioned(t, "rel-consul", v3["consul"].addr, "v3") },
	}
	for _, r := range registries {
		t.Run("v3 from "+r, func(t *testing.T) {
			start := time.Now()
			register[r]()
			eventually(t, 30*time.Second, "calls to reach "+r+"-v3", func() error {
				if got := fanOut(50, 4, clients[r]); got[r+"-v3"] == 0 {
					return fmt.Errorf("answers %v", sorted(got))
				}
				return nil
			})
			t.Logf("rel-%s: calls reach v3 %v after it registered", r, time.Since(start).Round(10*time.Millisecond))
			// A generous margin: ±8 points of 1000 calls is 5σ.
			got := fanOut(1000, 4, clients[r])
			onlyKeys(t, "rel-"+r, got, r+"-v1", r+"-v3")
			checkShare(t, "rel-"+r+" split 50/50", got, r+"-v3", 0.5, 0.08)
		})
	}
	warning("v2")
	for _, m := range translatorWarnings(t, s) {
		if strings.Contains(m, "v3") {
			t.Errorf("still warned about v3 after every v3 instance registered: %q", m)
		}
	}
}
