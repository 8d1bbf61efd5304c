package translator_test

import (
	"fmt"
	"sort"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/sluice-mesh/sluice/translator"
)

// TestTranslateListenerKinds checks that gRPC clients only get API listeners
// (one per name a client may dial — the service name and name:port for each
// of its ports — routing to the service's own route configuration) and Envoy
// proxies only get the addressed outbound listener.
func TestTranslateListenerKinds(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			res := translate(t, c.input)
			listeners := res.Resources[resource.ListenerType]
			switch c.input.Proxy.Kind {
			case translator.KindGRPC:
				var want []string
				for _, svc := range c.input.Catalog.Services {
					want = append(want, svc.Name)
					ports := map[uint32]bool{}
					for _, ep := range svc.Endpoints {
						if !ports[ep.Port] {
							ports[ep.Port] = true
							want = append(want, fmt.Sprintf("%s:%d", svc.Name, ep.Port))
						}
					}
				}
				var got []string
				for _, r := range listeners {
					got = append(got, r.(*listenerv3.Listener).GetName())
				}
				sort.Strings(want)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("gRPC listener names (-want +got):\n%s", diff)
				}
				for _, r := range listeners {
					l := r.(*listenerv3.Listener)
					if l.GetApiListener() == nil || l.GetAddress() != nil || len(l.GetFilterChains()) != 0 {
						t.Errorf("gRPC result has a non-API listener: %v", l)
					}
				}
				for _, r := range res.Resources[resource.RouteType] {
					rc := r.(*routev3.RouteConfiguration)
					if len(rc.GetVirtualHosts()) != 1 || rc.GetVirtualHosts()[0].GetDomains()[0] != rc.GetName() {
						t.Errorf("gRPC route %q: want one virtual host for its own name, got %v", rc.GetName(), rc)
					}
				}
			case translator.KindEnvoy:
				p := c.input.Proxy
				inbound := p.Role == translator.RoleSidecar && p.Service != "" && p.InboundPort != 0
				wantListeners, wantRoutes := []string{translator.OutboundListenerName}, []string{translator.OutboundRouteName}
				if inbound {
					wantListeners = []string{translator.InboundListenerName, translator.OutboundListenerName}
					wantRoutes = []string{translator.InboundRouteName, translator.OutboundRouteName}
				}
				var gotListeners, gotRoutes []string
				for _, r := range listeners {
					gotListeners = append(gotListeners, cache.GetResourceName(r))
				}
				for _, r := range res.Resources[resource.RouteType] {
					gotRoutes = append(gotRoutes, cache.GetResourceName(r))
				}
				if diff := cmp.Diff(wantListeners, gotListeners); diff != "" {
					t.Fatalf("listeners (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(wantRoutes, gotRoutes); diff != "" {
					t.Errorf("route configurations (-want +got):\n%s", diff)
				}
				for _, r := range listeners {
					if r.(*listenerv3.Listener).GetApiListener() != nil {
						t.Errorf("Envoy result has an API listener: %v", r)
					}
				}
				l := listeners[len(listeners)-1].(*listenerv3.Listener)
				wantAddr, wantPort := translator.DefaultOutboundAddress, uint32(translator.DefaultOutboundPort)
				if p.OutboundAddress != "" {
					wantAddr = p.OutboundAddress
				}
				if p.OutboundPort != 0 {
					wantPort = p.OutboundPort
				}
				sa := l.GetAddress().GetSocketAddress()
				if sa.GetAddress() != wantAddr || sa.GetPortValue() != wantPort {
					t.Errorf("listener address = %s:%d, want %s:%d", sa.GetAddress(), sa.GetPortValue(), wantAddr, wantPort)
				}
				if !inbound {
					return
				}
				in := listeners[0].(*listenerv3.Listener).GetAddress().GetSocketAddress()
				wantAddr, wantPort = translator.DefaultInboundListenerAddress, uint32(translator.DefaultInboundListenerPort)
				if p.InboundListenerAddress != "" {
					wantAddr = p.InboundListenerAddress
				}
				if p.InboundListenerPort != 0 {
					wantPort = p.InboundListenerPort
				}
				if in.GetAddress() != wantAddr || in.GetPortValue() != wantPort {
					t.Errorf("inbound listener address = %s:%d, want %s:%d", in.GetAddress(), in.GetPortValue(), wantAddr, wantPort)
				}
				local := named(res, resource.ClusterType, translator.LocalClusterName(p.InboundPort))
				lsa := local.(*clusterv3.Cluster).GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
				if lsa.GetAddress() != "127.0.0.1" || lsa.GetPortValue() != p.InboundPort {
					t.Errorf("local cluster points at %s:%d, want 127.0.0.1:%d", lsa.GetAddress(), lsa.GetPortValue(), p.InboundPort)
				}
			}
		})
	}
}
