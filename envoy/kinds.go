package envoy

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Kind is one kind of resource sluice serves over xDS. The translator,
// the snapshot builder, the xDS server and the golden tests read this one
// table: serving another kind (SDS secrets, say) starts here.
type Kind struct {
	// Type is the kind's type URL.
	Type resource.Type
	// Noun names one resource of the kind in messages.
	Noun string
	// Files is the suffix of the kind's golden files.
	Files string
	// RefersTo is the kind whose resources Refs names: a client that gets
	// a resource of this kind waits for those. "" when it names none.
	RefersTo resource.Type
	// Refs lists the names of RefersTo resources r needs.
	Refs func(r types.Resource) ([]string, error)
}

// Kinds are the kinds sluice serves, in the order a client should get
// them when several change: clusters before the load assignments they
// name, listeners before their route configurations.
var Kinds = []Kind{
	{Type: resource.ClusterType, Noun: "cluster", Files: "clusters", RefersTo: resource.EndpointType, Refs: clusterRefs},
	{Type: resource.EndpointType, Noun: "load assignment", Files: "endpoints"},
	{Type: resource.ListenerType, Noun: "listener", Files: "listeners", RefersTo: resource.RouteType, Refs: listenerRefs},
	{Type: resource.RouteType, Noun: "route configuration", Files: "routes"},
}

// KindOf returns the Kind of type URL typ; ok is false for a type sluice
// does not serve.
func KindOf(typ resource.Type) (k Kind, ok bool) {
	for _, k := range Kinds {
		if k.Type == typ {
			return k, true
		}
	}
	return Kind{}, false
}

// clusterRefs names the load assignment of an EDS cluster.
func clusterRefs(r types.Resource) ([]string, error) {
	c, ok := r.(*clusterv3.Cluster)
	if !ok {
		return nil, fmt.Errorf("a %T is not a cluster", r)
	}
	if c.GetType() != clusterv3.Cluster_EDS {
		return nil, nil
	}
	if eds := c.GetEdsClusterConfig().GetServiceName(); eds != "" {
		return []string{eds}, nil
	}
	return []string{c.GetName()}, nil
}

// listenerRefs names the route configurations a listener's HTTP
// connection managers fetch over RDS, a gRPC API listener's included.
func listenerRefs(r types.Resource) ([]string, error) {
	l, ok := r.(*listenerv3.Listener)
	if !ok {
		return nil, fmt.Errorf("a %T is not a listener", r)
	}
	var out []string
	addHCM := func(hcm *hcmv3.HttpConnectionManager) {
		if rds := hcm.GetRds(); rds != nil {
			out = append(out, rds.GetRouteConfigName())
		}
	}
	if api := l.GetApiListener().GetApiListener(); api != nil {
		hcm := &hcmv3.HttpConnectionManager{}
		if err := api.UnmarshalTo(hcm); err != nil {
			return nil, fmt.Errorf("api listener: %w", err)
		}
		addHCM(hcm)
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil || !tc.MessageIs(&hcmv3.HttpConnectionManager{}) {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := tc.UnmarshalTo(hcm); err != nil {
				return nil, fmt.Errorf("filter %q: %w", f.GetName(), err)
			}
			addHCM(hcm)
		}
	}
	return out, nil
}
