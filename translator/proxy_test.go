package translator_test

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-mesh/sluice/translator"
)

func node(cluster, userAgent string, md map[string]any) *corev3.Node {
	n := &corev3.Node{Cluster: cluster, UserAgentName: userAgent}
	if md != nil {
		s, err := structpb.NewStruct(md)
		if err != nil {
			panic(err)
		}
		n.Metadata = s
	}
	return n
}

func located(n *corev3.Node, region, zone, subZone string) *corev3.Node {
	n.Locality = &corev3.Locality{Region: region, Zone: zone, SubZone: subZone}
	return n
}

func TestProxyFromNode(t *testing.T) {
	sidecar := func(p translator.Proxy) translator.Proxy {
		p.Kind, p.Role = translator.KindEnvoy, translator.RoleSidecar
		return p
	}
	tests := []struct {
		name    string
		node    *corev3.Node
		want    translator.Proxy
		wantErr string
	}{
		{name: "nil node", node: nil, want: sidecar(translator.Proxy{})},
		{name: "plain envoy", node: node("web", "envoy", nil), want: sidecar(translator.Proxy{Service: "web"})},
		{name: "grpc by user agent", node: node("web", "gRPC Go", nil), want: translator.Proxy{Kind: translator.KindGRPC}},
		{
			name: "grpc by metadata drops everything else",
			node: node("web", "envoy", map[string]any{"proxy_type": "grpc", "role": "gateway", "outbound_port": 1}),
			want: translator.Proxy{Kind: translator.KindGRPC},
		},
		{
			name: "metadata envoy wins over a grpc user agent",
			node: node("web", "grpc-java", map[string]any{"proxy_type": "envoy"}),
			want: sidecar(translator.Proxy{Service: "web"}),
		},
		{
			name: "gateway with outbound and inbound ports",
			node: node("edge", "envoy", map[string]any{
				"role": "gateway", "outbound_address": "0.0.0.0", "outbound_port": 8443.0, "inbound_port": "15006",
			}),
			want: translator.Proxy{
				Kind: translator.KindEnvoy, Role: translator.RoleGateway, Service: "edge",
				OutboundAddress: "0.0.0.0", OutboundPort: 8443, InboundPort: 15006,
			},
		},
		{
			name: "sidecar with an inbound listener",
			node: node("web", "envoy", map[string]any{
				"inbound_port": 8080.0, "inbound_listener_address": "127.0.0.1", "inbound_listener_port": "15006",
			}),
			want: sidecar(translator.Proxy{Service: "web", InboundPort: 8080, InboundListenerAddress: "127.0.0.1", InboundListenerPort: 15006}),
		},
		{name: "bad inbound listener port", node: node("", "", map[string]any{"inbound_listener_port": "x"}), wantErr: `"inbound_listener_port": "x"`},
		{name: "bad proxy type", node: node("", "", map[string]any{"proxy_type": "nginx"}), wantErr: `"proxy_type": "nginx"`},
		{name: "bad role", node: node("", "", map[string]any{"role": "mesh"}), wantErr: `"role": "mesh"`},
		{name: "outbound address not an IP", node: node("", "", map[string]any{"outbound_address": "not-an-ip"}), wantErr: `"outbound_address": "not-an-ip" is not an IP address`},
		{name: "outbound address out of range", node: node("", "", map[string]any{"outbound_address": "999.1.1.1"}), wantErr: `"outbound_address": "999.1.1.1" is not an IP address`},
		{name: "inbound listener address not an IP", node: node("", "", map[string]any{"inbound_listener_address": "localhost"}), wantErr: `"inbound_listener_address": "localhost" is not an IP address`},
		{name: "IPv6 outbound address", node: node("web", "", map[string]any{"outbound_address": "::1"}), want: sidecar(translator.Proxy{Service: "web", OutboundAddress: "::1"})},
		{name: "port zero", node: node("", "", map[string]any{"outbound_port": 0}), wantErr: `"outbound_port"`},
		{name: "port too large", node: node("", "", map[string]any{"inbound_port": 65536}), wantErr: `"inbound_port"`},
		{name: "fractional port", node: node("", "", map[string]any{"outbound_port": 80.5}), wantErr: `"outbound_port"`},
		{name: "port not a number", node: node("", "", map[string]any{"outbound_port": "http"}), wantErr: `"outbound_port": "http"`},
		{name: "port of the wrong type", node: node("", "", map[string]any{"inbound_port": true}), wantErr: `"inbound_port": want a port number`},
		{
			name: "envoy locality, sub_zone ignored",
			node: located(node("web", "envoy", nil), "eu-west-1", "eu-west-1a", "rack-7"),
			want: sidecar(translator.Proxy{Service: "web", Locality: translator.Locality{Region: "eu-west-1", Zone: "eu-west-1a"}}),
		},
		{
			name: "grpc locality",
			node: located(node("web", "gRPC Go", nil), "eu-west-1", "eu-west-1b", ""),
			want: translator.Proxy{Kind: translator.KindGRPC, Locality: translator.Locality{Region: "eu-west-1", Zone: "eu-west-1b"}},
		},
		{name: "zone only", node: located(node("web", "envoy", nil), "", "z1", ""), want: sidecar(translator.Proxy{Service: "web", Locality: translator.Locality{Zone: "z1"}})},
		{name: "region not UTF-8", node: located(node("", "", nil), "eu\xff", "", ""), wantErr: `node.locality.region: must be valid UTF-8, got "eu\xff"`},
		{name: "zone with a control character", node: located(node("", "gRPC Go", nil), "eu", "a\nb", ""), wantErr: `node.locality.zone: must not hold control characters, got "a\nb"`},
		{name: "zone too long", node: located(node("", "", nil), "eu", strings.Repeat("z", 129), ""), wantErr: `node.locality.zone: must be at most 128 bytes, got 129 bytes`},
		{name: "longest zone", node: located(node("", "", nil), "", strings.Repeat("é", 64), ""), want: sidecar(translator.Proxy{Locality: translator.Locality{Zone: strings.Repeat("é", 64)}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := translator.ProxyFromNode(tt.node)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ProxyFromNode() = %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ProxyFromNode() error: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ProxyFromNode() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProxyKey(t *testing.T) {
	tests := []struct {
		p    translator.Proxy
		want string
	}{
		{translator.Proxy{Kind: translator.KindGRPC, Service: "ignored", OutboundPort: 1}, "grpc"},
		{translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web"}, "envoy/sidecar/web"},
		{translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar}, "envoy/sidecar/"},
		{
			translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleGateway, Service: "edge", OutboundAddress: "0.0.0.0", OutboundPort: 8443, InboundPort: 15006},
			"envoy/gateway/edge/out=0.0.0.0:8443/in=15006",
		},
		{
			translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web", InboundPort: 8080, InboundListenerAddress: "127.0.0.1", InboundListenerPort: 15006},
			"envoy/sidecar/web/in=8080/inl=127.0.0.1:15006",
		},
		{
			translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web", InboundPort: 8080, InboundListenerPort: 15007},
			"envoy/sidecar/web/in=8080/inl=:15007",
		},
		{
			translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web", InboundPort: 8080, Locality: translator.Locality{Region: "eu", Zone: "eu-a"}},
			"envoy/sidecar/web/in=8080/loc=eu/eu-a",
		},
		{translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web", Locality: translator.Locality{Zone: "z"}}, "envoy/sidecar/web/loc=/z"},
		{translator.Proxy{Kind: translator.KindGRPC, Locality: translator.Locality{Region: "eu", Zone: "eu-a"}}, "grpc/loc=eu/eu-a"},
		// Escaped: a slash in a region or a zone cannot move the border
		// between them.
		{translator.Proxy{Kind: translator.KindGRPC, Locality: translator.Locality{Region: "a/b", Zone: "c"}}, "grpc/loc=a%2Fb/c"},
		{translator.Proxy{Kind: translator.KindGRPC, Locality: translator.Locality{Region: "a", Zone: "b/c"}}, "grpc/loc=a/b%2Fc"},
		{translator.Proxy{Kind: translator.KindGRPC, Locality: translator.Locality{Region: "a/", Zone: ""}}, "grpc/loc=a%2F/"},
		{translator.Proxy{Kind: translator.KindGRPC, Locality: translator.Locality{Region: "a", Zone: "/"}}, "grpc/loc=a/%2F"},
		// node.cluster cannot spell another group's key.
		{translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web/loc=r1/a"}, "envoy/sidecar/web%2Floc=r1%2Fa"},
		{translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web", Locality: translator.Locality{Region: "r1", Zone: "a"}}, "envoy/sidecar/web/loc=r1/a"},
		{translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web/in=80"}, "envoy/sidecar/web%2Fin=80"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		if got := tt.p.Key(); got != tt.want {
			t.Errorf("%+v.Key() = %q, want %q", tt.p, got, tt.want)
		}
		if seen[tt.want] {
			t.Errorf("key %q not unique", tt.want)
		}
		seen[tt.want] = true
	}
}
