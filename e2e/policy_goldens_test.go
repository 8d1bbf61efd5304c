package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"sigs.k8s.io/yaml"
)

// goldenCase is the part of a translator golden input
// (translator/testdata/in) these tests use.
type goldenCase struct {
	Proxy struct {
		Kind                string `json:"kind"`
		Service             string `json:"service"`
		Role                string `json:"role"`
		InboundPort         uint32 `json:"inbound_port"`
		InboundListenerPort uint32 `json:"inbound_listener_port"`
		Locality            struct {
			Region string `json:"region"`
			Zone   string `json:"zone"`
		} `json:"locality"`
	} `json:"proxy"`
	Catalog struct {
		Services []struct {
			Name      string `json:"name"`
			Endpoints []struct {
				Address  string            `json:"address"`
				Port     uint32            `json:"port"`
				Health   string            `json:"health"`
				Weight   uint32            `json:"weight"`
				Region   string            `json:"region"`
				Zone     string            `json:"zone"`
				Metadata map[string]string `json:"metadata"`
			} `json:"endpoints"`
		} `json:"services"`
	} `json:"catalog"`
	Policies string `json:"policies"`
}

// policyGoldens loads the translator's golden inputs that carry policies.
func policyGoldens(t *testing.T) map[string]goldenCase {
	t.Helper()
	paths, err := filepath.Glob("../translator/testdata/in/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	out := map[string]goldenCase{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var c goldenCase
		if err := yaml.Unmarshal(data, &c); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if c.Policies != "" {
			out[strings.TrimSuffix(filepath.Base(p), ".yaml")] = c
		}
	}
	if len(out) == 0 {
		t.Fatal("no golden input has policies")
	}
	return out
}

func (c goldenCase) registry() string {
	var b strings.Builder
	b.WriteString("services:\n")
	for _, s := range c.Catalog.Services {
		var ins []string
		for _, ep := range s.Endpoints {
			var extra []string
			if ep.Health != "" {
				extra = append(extra, "health: "+ep.Health)
			}
			if ep.Weight != 0 {
				extra = append(extra, "weight: "+strconv.Itoa(int(ep.Weight)))
			}
			if ep.Region != "" {
				extra = append(extra, "region: "+ep.Region)
			}
			if ep.Zone != "" {
				extra = append(extra, "zone: "+ep.Zone)
			}
			if len(ep.Metadata) > 0 {
				var md []string
				for k, v := range ep.Metadata {
					md = append(md, k+": "+v)
				}
				sort.Strings(md)
				extra = append(extra, "metadata: {"+strings.Join(md, ", ")+"}")
			}
			ins = append(ins, instance(net.JoinHostPort(ep.Address, strconv.Itoa(int(ep.Port))), strings.Join(extra, ", ")))
		}
		b.WriteString(serviceEntry(s.Name, ins...))
	}
	return b.String()
}

// TestPolicyGoldensAcceptedByClients serves every golden policy case to the
// kind of client it was written for — a real Envoy (with the case's
// service and role) or gRPC's real xDS client dialing each service — and
// expects every resource type acknowledged and nothing NACKed. ValidateAll
// in the translator tests checks the protos; this checks the clients'
// own, stricter, semantic validation.
func TestPolicyGoldensAcceptedByClients(t *testing.T) {
	requireE2E(t)
	for name, c := range policyGoldens(t) {
		t.Run(name, func(t *testing.T) {
			if c.Proxy.Kind == "envoy" {
				envoyBinary(t)
			}
			reg := filepath.Join(t.TempDir(), "registry.yaml")
			writeFile(t, reg, c.registry())
			s := startSluice(t, "--registry-file", reg, "--policy-dir", policyDir(t, c.Policies))
			switch c.Proxy.Kind {
			case "envoy":
				args := []string{}
				if c.Proxy.Role != "" {
					args = append(args, "--role", c.Proxy.Role)
				}
				if c.Proxy.InboundPort != 0 {
					args = append(args, "--inbound-port", strconv.Itoa(int(c.Proxy.InboundPort)),
						"--inbound-listener-address", "127.0.0.1", "--inbound-listener-port", strconv.Itoa(listenerPort(t)))
				}
				if l := c.Proxy.Locality; l.Region != "" || l.Zone != "" {
					args = append(args, "--region", l.Region, "--zone", l.Zone)
				}
				service := c.Proxy.Service
				if service == "" {
					service = "unnamed"
				}
				startEnvoy(t, s, service, "golden-envoy", args...)
				s.noNACKs(t, 1)
			case "grpc":
				for _, svc := range c.Catalog.Services {
					client := dialXDSIn(t, s.XDSAddr, svc.Name, c.Proxy.Locality.Region, c.Proxy.Locality.Zone)
					go touch(client)
				}
				s.noNACKs(t, len(c.Catalog.Services))
			default:
				t.Fatalf("proxy kind %q", c.Proxy.Kind)
			}
		})
	}
}

// touch makes one call so that the channel resolves its target over xDS;
// the backends of golden cases do not exist, so the call fails.
func touch(client testgrpc.TestServiceClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
}
