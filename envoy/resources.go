// Package envoy holds small, stateless builders for the Envoy protos sluice
// emits, and the Envoy bootstrap generator. Builders take plain values and
// return fresh protos; they never read the catalog or policy model, which keeps
// them reusable by every translator path and easy to test.
package envoy

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Well-known extension names.
const (
	HTTPConnectionManagerName = "envoy.filters.network.http_connection_manager"
	RouterFilterName          = "envoy.filters.http.router"
	// EndpointMetadataNamespace carries registry labels on each endpoint; it is
	// the namespace Envoy's subset load balancer matches on.
	EndpointMetadataNamespace = "envoy.lb"
)

// ADSConfigSource points a resource at the aggregated stream it arrived on.
func ADSConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// EDSCluster is a cluster whose endpoints come over ADS under the same name.
func EDSCluster(name string, connectTimeout time.Duration) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig:   ADSConfigSource(),
			ServiceName: name,
		},
		ConnectTimeout: durationpb.New(connectTimeout),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
}

// Endpoint is one backend address for LoadAssignment.
type Endpoint struct {
	Address  string
	Port     uint32
	Health   corev3.HealthStatus
	Weight   uint32
	Metadata map[string]string
}

// Locality groups endpoints that share a region and zone.
type Locality struct {
	Region, Zone string
	Endpoints    []Endpoint
	// Priority is the locality's EDS priority (0 is tried first; clients
	// move traffic to the next as the healthy share of one falls).
	Priority uint32
	// Weight, when not 0, is the locality's load-balancing weight, in
	// place of HealthyWeight.
	Weight uint32
}

// maxLocalityWeight keeps the sum of all locality weights of a cluster within
// uint32, which Envoy requires.
const maxLocalityWeight = 1 << 24

// HealthyWeight is the sum of the weights of the locality's endpoints that
// can take traffic (healthy or unknown; an endpoint without a weight counts
// 1), at most maxLocalityWeight.
func (l Locality) HealthyWeight() uint32 {
	var total uint32
	for _, ep := range l.Endpoints {
		if ep.Health == corev3.HealthStatus_HEALTHY || ep.Health == corev3.HealthStatus_UNKNOWN {
			total = min(total+max(ep.Weight, 1), maxLocalityWeight)
		}
	}
	return total
}

// LoadAssignment builds a ClusterLoadAssignment. Every locality gets a
// Locality message and a load-balancing weight: gRPC's xDS client rejects an
// assignment without them. The weight is the locality's own when it has one,
// else its HealthyWeight, at least 1, so a zone whose instances are failing
// does not keep its share of traffic.
func LoadAssignment(cluster string, localities []Locality) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	for _, l := range localities {
		lle := &endpointv3.LocalityLbEndpoints{
			Locality: &corev3.Locality{Region: l.Region, Zone: l.Zone},
			Priority: l.Priority,
		}
		for _, ep := range l.Endpoints {
			lbe := &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: SocketAddress(ep.Address, ep.Port),
				}},
				HealthStatus:        ep.Health,
				LoadBalancingWeight: wrapperspb.UInt32(max(ep.Weight, 1)),
			}
			if len(ep.Metadata) > 0 {
				lbe.Metadata = stringMetadata(EndpointMetadataNamespace, ep.Metadata)
			}
			lle.LbEndpoints = append(lle.LbEndpoints, lbe)
		}
		w := l.Weight
		if w == 0 {
			w = l.HealthyWeight()
		}
		lle.LoadBalancingWeight = wrapperspb.UInt32(min(max(w, 1), maxLocalityWeight))
		cla.Endpoints = append(cla.Endpoints, lle)
	}
	return cla
}

// SocketAddress is a TCP address.
func SocketAddress(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func stringMetadata(ns string, m map[string]string) *corev3.Metadata {
	fields := make(map[string]*structpb.Value, len(m))
	for k, v := range m {
		fields[k] = structpb.NewStringValue(v)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{ns: {Fields: fields}}}
}

// VirtualHost routes every request for the given domains to one cluster.
func VirtualHost(name string, domains []string, cluster string) *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    name,
		Domains: domains,
		Routes: []*routev3.Route{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			}},
		}},
	}
}

// RouteConfiguration bundles virtual hosts under a name that listeners refer to.
func RouteConfiguration(name string, vhosts []*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: vhosts}
}

// HTTPConnectionManager fetches its routes over ADS by name and ends in the
// router filter, which is what both Envoy and gRPC's xDS client require.
func HTTPConnectionManager(statPrefix, routeConfig string) *hcmv3.HttpConnectionManager {
	return HCM(HCMOptions{StatPrefix: statPrefix, RouteConfig: routeConfig})
}

// HCMOptions describe an HTTP connection manager.
type HCMOptions struct {
	StatPrefix string
	// RouteConfig is the route configuration fetched over ADS.
	RouteConfig string
	// Filters run before the router, in order.
	Filters []*hcmv3.HttpFilter
	// Tracing, when set, traces requests.
	Tracing *hcmv3.HttpConnectionManager_Tracing
}

// HCM builds an HTTP connection manager that fetches its routes over ADS
// and ends in the router filter.
func HCM(o HCMOptions) *hcmv3.HttpConnectionManager {
	filters := append([]*hcmv3.HttpFilter(nil), o.Filters...)
	filters = append(filters, &hcmv3.HttpFilter{
		Name:       RouterFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: MustAny(&routerv3.Router{})},
	})
	return &hcmv3.HttpConnectionManager{
		StatPrefix: o.StatPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    ADSConfigSource(),
			RouteConfigName: o.RouteConfig,
		}},
		HttpFilters: filters,
		Tracing:     o.Tracing,
	}
}

// HTTPListener is an Envoy listener on addr:port whose only filter is hcm.
func HTTPListener(name, addr string, port uint32, hcm *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:    name,
		Address: SocketAddress(addr, port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       HTTPConnectionManagerName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: MustAny(hcm)},
			}},
		}},
	}
}

// APIListener is the listener form gRPC's xDS client asks for when it dials
// xds:///name: no address, just an HTTP connection manager.
func APIListener(name string, hcm *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:        name,
		ApiListener: &listenerv3.ApiListener{ApiListener: MustAny(hcm)},
	}
}

// MustAny wraps m in an Any, marshalled deterministically so that equal
// configs give equal bytes (and so equal content-hash versions). Marshalling a
// well-formed generated message cannot fail, so a failure is a programming error.
func MustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic("envoy: cannot wrap " + string(m.ProtoReflect().Descriptor().FullName()) + ": " + err.Error())
	}
	return a
}
