package translator_test

import (
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-mesh/sluice/translator"
)

// FuzzProxyFromNode: whatever a client puts in its node, ProxyFromNode
// never panics, and either refuses it or returns an identity the rest of
// sluice can rely on (a known kind and role, real ports, IP listener
// addresses, a stable group key).
//
//	go test -run '^$' -fuzz FuzzProxyFromNode -fuzztime 30s ./translator/
func FuzzProxyFromNode(f *testing.F) {
	f.Add("web", "envoy", "", "sidecar", "127.0.0.1", "15001", "8080")
	f.Add("", "gRPC Go", "grpc", "", "", "", "")
	f.Add("api", "", "envoy", "gateway", "0.0.0.0", "8443.0", "")
	f.Add("x", "", "nginx", "mesh", "not-an-ip", "70000", "-1")
	f.Add("y", "", "", "", "999.1.1.1", "1e3", "0x50")
	f.Fuzz(func(t *testing.T, cluster, agent, proxyType, role, addr, outPort, inPort string) {
		md := map[string]any{}
		for k, v := range map[string]string{"proxy_type": proxyType, "role": role, "outbound_address": addr, "outbound_port": outPort, "inbound_port": inPort, "inbound_listener_address": addr} {
			if v != "" {
				md[k] = v
			}
		}
		st, err := structpb.NewStruct(md)
		if err != nil {
			t.Skip() // not valid UTF-8: protobuf would refuse it on the wire
		}
		p, err := translator.ProxyFromNode(&corev3.Node{Cluster: cluster, UserAgentName: agent, Metadata: st})
		if err != nil {
			return
		}
		if p.Kind != translator.KindEnvoy && p.Kind != translator.KindGRPC {
			t.Fatalf("kind %q", p.Kind)
		}
		if p.Kind == translator.KindEnvoy && p.Role != translator.RoleSidecar && p.Role != translator.RoleGateway {
			t.Fatalf("role %q", p.Role)
		}
		for _, port := range []uint32{p.OutboundPort, p.InboundPort, p.InboundListenerPort} {
			if port > 65535 {
				t.Fatalf("port %d", port)
			}
		}
		for _, a := range []string{p.OutboundAddress, p.InboundListenerAddress} {
			if _, err := netip.ParseAddr(a); a != "" && err != nil {
				t.Fatalf("listener address %q", a)
			}
		}
		if p.Key() == "" {
			t.Fatal("empty group key")
		}
	})
}
