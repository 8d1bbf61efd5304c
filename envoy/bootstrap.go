package envoy

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// XDSClusterName is the static cluster through which Envoy reaches sluice.
const XDSClusterName = "sluice_xds"

// The backoff of Envoy's reconnections to sluice: from 500 ms (Envoy's own
// start) up to 5 s, jittered by Envoy.
const (
	xdsRetryBase = 500 * time.Millisecond
	xdsRetryMax  = 5 * time.Second
)

// BootstrapOptions describe one Envoy proxy.
type BootstrapOptions struct {
	NodeID  string
	Service string // node.cluster: the service the proxy fronts
	// XDSAddr is sluice's xDS address, host:port; a host name is resolved
	// by Envoy (STRICT_DNS), so a Kubernetes Service name works.
	XDSAddr string
	// XDSAddrs, when set, are several sluice replicas (and XDSAddr is
	// ignored): the xDS cluster holds them all, so Envoy reconnects to
	// another when the one it streams from goes away. Replicas serve the
	// same versions for the same inputs, so the switch changes nothing.
	XDSAddrs     []string
	AdminAddress string
	AdminPort    uint32
	// Delta selects incremental ADS instead of state-of-the-world.
	Delta bool
	// TLS, when set, makes Envoy reach sluice over TLS.
	TLS *XDSTLS
	// Metadata is copied into node.metadata; sluice reads proxy_type, role,
	// outbound_address, outbound_port and inbound_port from it.
	Metadata map[string]string
	// Region and Zone, when either is set, are node.locality: where the
	// proxy runs, which sluice's locality-aware load assignments follow.
	// Without them sluice takes the locality of the registry instance at
	// the proxy's address, if it can tell.
	Region, Zone string
}

// XDSTLS is how Envoy verifies sluice's xDS server, and the client
// certificate it presents when sluice requires one. Paths are read by Envoy.
type XDSTLS struct {
	CAFile            string // verifies sluice's certificate; required
	CertFile, KeyFile string // client certificate, for mutual TLS
	ServerName        string // SNI, and the name sluice's certificate must carry
}

// transportSocket is the TLS transport socket of the xDS cluster.
func (t *XDSTLS) transportSocket() *corev3.TransportSocket {
	file := func(path string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
	}
	validation := &tlsv3.CertificateValidationContext{TrustedCa: file(t.CAFile)}
	if t.ServerName != "" {
		validation.MatchTypedSubjectAltNames = []*tlsv3.SubjectAltNameMatcher{{
			SanType: tlsv3.SubjectAltNameMatcher_DNS,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: t.ServerName}},
		}}
	}
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: t.ServerName,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			// gRPC over TLS negotiates HTTP/2 by ALPN.
			AlpnProtocols:         []string{"h2"},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: validation},
		},
	}
	if t.CertFile != "" {
		ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: file(t.CertFile), PrivateKey: file(t.KeyFile),
		}}
	}
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: MustAny(ctx)},
	}
}

// Bootstrap builds an Envoy bootstrap that fetches all of its listeners and
// clusters from sluice over one ADS stream.
func Bootstrap(o BootstrapOptions) (*bootstrapv3.Bootstrap, error) {
	if o.NodeID == "" {
		return nil, fmt.Errorf("bootstrap: node id is required")
	}
	addrs := o.XDSAddrs
	if len(addrs) == 0 {
		addrs = []string{o.XDSAddr}
	}
	discovery := clusterv3.Cluster_STATIC
	var xdsEndpoints []*endpointv3.LbEndpoint
	for _, addr := range addrs {
		host, portStr, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("bootstrap: xds address %q: %w", addr, err)
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("bootstrap: xds address %q: bad port", addr)
		}
		if _, err := netip.ParseAddr(host); err != nil {
			discovery = clusterv3.Cluster_STRICT_DNS
		}
		xdsEndpoints = append(xdsEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: SocketAddress(host, uint32(port)),
			}},
		})
	}
	apiType := corev3.ApiConfigSource_GRPC
	if o.Delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	md := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	keys := make([]string, 0, len(o.Metadata))
	for k := range o.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		md.Fields[k] = structpb.NewStringValue(o.Metadata[k])
	}
	h2 := &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
					// Keep the ADS connection alive through NATs and detect a
					// dead control plane quickly.
					ConnectionKeepalive: &corev3.KeepaliveSettings{
						Interval: durationpb.New(30 * time.Second),
						Timeout:  durationpb.New(5 * time.Second),
					},
				},
			},
		}},
	}
	xdsCluster := &clusterv3.Cluster{
		Name:                 XDSClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: XDSClusterName,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: xdsEndpoints}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": MustAny(h2),
		},
	}
	if o.TLS != nil {
		if o.TLS.CAFile == "" {
			return nil, fmt.Errorf("bootstrap: TLS to sluice needs the CA that signed its certificate")
		}
		if (o.TLS.CertFile == "") != (o.TLS.KeyFile == "") {
			return nil, fmt.Errorf("bootstrap: a client certificate needs its key, and the other way round")
		}
		xdsCluster.TransportSocket = o.TLS.transportSocket()
	}
	node := &corev3.Node{Id: o.NodeID, Cluster: o.Service, Metadata: md}
	if o.Region != "" || o.Zone != "" {
		node.Locality = &corev3.Locality{Region: o.Region, Zone: o.Zone}
	}
	return &bootstrapv3.Bootstrap{
		Node: node,
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   apiType,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
						ClusterName: XDSClusterName,
						// Envoy's own backoff for its xDS stream grows to 30 s:
						// after a control-plane restart a proxy could run on
						// stale config that long. Serving keeps going meanwhile,
						// so reconnect within a few seconds instead.
						RetryPolicy: &corev3.RetryPolicy{RetryBackOff: &corev3.BackoffStrategy{
							BaseInterval: durationpb.New(xdsRetryBase),
							MaxInterval:  durationpb.New(xdsRetryMax),
						}},
					}},
				}},
			},
			CdsConfig: ADSConfigSource(),
			LdsConfig: ADSConfigSource(),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{xdsCluster}},
		Admin: &bootstrapv3.Admin{
			Address: SocketAddress(o.AdminAddress, o.AdminPort),
		},
	}, nil
}
