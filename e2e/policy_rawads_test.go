package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestPolicyRawADSSidecar: a raw ADS client acting as a sidecar of
// user-service (node.cluster and inbound_port metadata) finds the token
// bucket on its inbound listener and the OpenTelemetry tracer on every HTTP
// connection manager; a proxyless gRPC client of the same mesh keeps
// working.
func TestPolicyRawADSSidecar(t *testing.T) {
	requireE2E(t)
	bs := startGRPCBackends(t, 1)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registry("user-service", instance(bs[0].addr, ""))+serviceEntry("otel-collector", "{address: 127.0.0.1, port: 4317}"))
	dir := policyDir(t, `apiVersion: sluice.dev/v1
kind: MeshPolicy
metadata: {name: mesh}
spec:
  tracing: {collector: otel-collector:4317, samplingPercent: 10, tags: {env: test}}
---
apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: user-service}
spec:
  rateLimit: {requestsPerSecond: 100, burst: 200}
`)
	s := startSluice(t, "--registry-file", reg, "--policy-dir", dir)

	conn, err := grpc.NewClient(s.XDSAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "user-service-1", Cluster: "user-service", UserAgentName: "envoy",
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{"inbound_port": structpb.NewStringValue("8080")}}}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	hcms, traced, inboundFilter := 0, 0, false
	var inboundRoutes string
	for _, a := range resp.GetResources() {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(hcm) != nil {
					continue
				}
				hcms++
				if hcm.GetTracing().GetProvider().GetName() == "envoy.tracers.opentelemetry" &&
					hcm.GetTracing().GetRandomSampling().GetValue() == 10 {
					traced++
				}
				for _, hf := range hcm.GetHttpFilters() {
					if l.GetName() == "inbound_http" && hf.GetName() == "envoy.filters.http.local_ratelimit" {
						inboundFilter, inboundRoutes = true, hcm.GetRds().GetRouteConfigName()
					}
				}
			}
		}
	}
	if !inboundFilter {
		t.Fatalf("no local rate limit filter on the inbound listener: %v", resp.GetResources())
	}
	if hcms < 2 || traced != hcms {
		t.Errorf("%d of %d HTTP connection managers carry the OpenTelemetry tracer at 10%%", traced, hcms)
	}
	// The bucket itself is configured on the inbound routes.
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.RouteType, ResourceNames: []string{inboundRoutes}}); err != nil {
		t.Fatal(err)
	}
	routes, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	bucket := false
	for _, a := range routes.GetResources() {
		rc := &routev3.RouteConfiguration{}
		if err := a.UnmarshalTo(rc); err != nil {
			t.Fatal(err)
		}
		for _, vh := range rc.GetVirtualHosts() {
			configs := []map[string]*anypb.Any{vh.GetTypedPerFilterConfig()}
			for _, r := range vh.GetRoutes() {
				configs = append(configs, r.GetTypedPerFilterConfig())
			}
			for _, c := range configs {
				rl := &ratelimitv3.LocalRateLimit{}
				if any := c["envoy.filters.http.local_ratelimit"]; any != nil && any.UnmarshalTo(rl) == nil {
					if tb := rl.GetTokenBucket(); tb.GetMaxTokens() == 200 && tb.GetTokensPerFill().GetValue() == 100 {
						bucket = true
					}
				}
			}
		}
	}
	if !bucket {
		t.Errorf("no 100/s, burst 200 token bucket on the inbound routes: %v", routes.GetResources())
	}
	cancel() // the raw client leaves

	// A proxyless gRPC client of the same mesh is unaffected.
	client := dialXDS(t, s.XDSAddr, "user-service")
	waitOnly(t, client, "backend-0")
	s.noNACKs(t, 1)
}
