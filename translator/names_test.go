package translator_test

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// TestOwnerOf: names map to what they are made from.
func TestOwnerOf(t *testing.T) {
	envoy, grpc := translator.KindEnvoy, translator.KindGRPC
	svc := func(s string) translator.Owner { return translator.Owner{Scope: translator.ScopeService, Service: s} }
	cases := []struct {
		kind      translator.ProxyKind
		typ, name string
		want      translator.Owner
		ok        bool
	}{
		{envoy, resource.ClusterType, "user-service", svc("user-service"), true},
		{envoy, resource.ClusterType, "user-service|v2", svc("user-service"), true},
		{envoy, resource.EndpointType, "user-service|v2", svc("user-service"), true},
		{envoy, resource.ClusterType, "inbound|8080", translator.Owner{Scope: translator.ScopeOwn}, true},
		{envoy, resource.ClusterType, "inbound|canary", svc("inbound"), true}, // a subset of a service named inbound
		{envoy, resource.ClusterType, translator.TracingClusterName, translator.Owner{Scope: translator.ScopeTracing}, true},
		{envoy, resource.ListenerType, "outbound_http", translator.Owner{Scope: translator.ScopeDependencies}, true},
		{envoy, resource.RouteType, "outbound_http", translator.Owner{Scope: translator.ScopeDependencies}, true},
		{envoy, resource.ListenerType, "inbound_http", translator.Owner{Scope: translator.ScopeOwn}, true},
		{envoy, resource.RouteType, "inbound_http", translator.Owner{Scope: translator.ScopeOwn}, true},
		{envoy, resource.RouteType, "user-service", translator.Owner{}, false},
		{grpc, resource.ListenerType, "user-service", svc("user-service"), true},
		{grpc, resource.ListenerType, "user-service:50051", svc("user-service"), true},
		{grpc, resource.RouteType, "user-service", svc("user-service"), true},
		{grpc, resource.RouteType, "outbound_http", svc("outbound_http"), true}, // a service may be named so
		{grpc, resource.ClusterType, "a|b", svc("a"), true},
		{grpc, resource.ListenerType, "a:b:1", translator.Owner{}, false},
		{envoy, "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", "x", translator.Owner{}, false},
	}
	for _, c := range cases {
		got, ok := translator.OwnerOf(c.kind, c.typ, c.name)
		if got != c.want || ok != c.ok {
			t.Errorf("OwnerOf(%s, %s, %q) = %+v, %v; want %+v, %v", c.kind, c.typ, c.name, got, ok, c.want, c.ok)
		}
	}
	if s, ok := translator.ServiceOf(grpc, resource.ListenerType, "web:80"); s != "web" || !ok {
		t.Errorf("ServiceOf(grpc listener web:80) = %q, %v", s, ok)
	}
	if _, ok := translator.ServiceOf(envoy, resource.RouteType, "outbound_http"); ok {
		t.Error("ServiceOf(envoy outbound_http) is one service's")
	}
}

// TestOwnerOfEveryResource: every resource the translator makes, for an
// Envoy sidecar with subsets, tracing and an inbound side and for a gRPC
// client, has an owner, and a service's resources name a catalog service.
func TestOwnerOfEveryResource(t *testing.T) {
	set, diags := policy.Load([]policy.File{{Name: "p.yaml", Data: []byte(`apiVersion: sluice.dev/v1
kind: MeshPolicy
metadata: {name: mesh}
spec:
  tracing: {collector: "otel:4317"}
---
apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: reviews}
spec:
  subsets: {v1: {version: v1}, v2: {version: v2}}
  split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`)}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	inst := func(addr, version string) sources.Instance {
		return sources.Instance{Address: addr, Port: 9080, Weight: 1, Health: sources.HealthHealthy, Metadata: map[string]string{"version": version}}
	}
	cat := sources.Merge(map[string]sources.State{"file": {Services: []sources.Service{
		{Name: "reviews", Instances: []sources.Instance{inst("10.0.0.1", "v1"), inst("10.0.0.2", "v2")}},
		{Name: "web", Instances: []sources.Instance{inst("10.0.0.3", "")}},
	}}})
	for _, p := range []translator.Proxy{
		{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web", InboundPort: 8080},
		{Kind: translator.KindGRPC},
	} {
		res, err := translator.New().Translate(translator.Input{Catalog: cat, Policy: set, Proxy: p})
		if err != nil {
			t.Fatal(err)
		}
		for typ, rs := range res.Resources {
			for _, r := range rs {
				name := cache.GetResourceName(r)
				o, ok := translator.OwnerOf(p.Kind, typ, name)
				if !ok || o.Scope == translator.ScopeService && o.Service != "reviews" && o.Service != "web" {
					t.Errorf("%s: OwnerOf(%s %q) = %+v, %v", p.Key(), typ, name, o, ok)
				}
			}
		}
	}
}
