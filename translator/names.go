package translator

import (
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Scope says what a resource a group is served is made from, by its name
// (see OwnerOf).
type Scope string

// Scopes of resources.
const (
	// ScopeService: one service's cluster, subset cluster, load
	// assignment, or a gRPC client's listener or route configuration
	// for it.
	ScopeService Scope = "service"
	// ScopeDependencies: an Envoy's outbound listener and route
	// configuration, made of every service the group depends on.
	ScopeDependencies Scope = "dependencies"
	// ScopeOwn: a sidecar's inbound listener, routes and local cluster,
	// made from its own service's policy.
	ScopeOwn Scope = "own"
	// ScopeTracing: the tracing collector's cluster, from the
	// MeshPolicy's spec.tracing.
	ScopeTracing Scope = "tracing"
)

// Owner is what a resource is made from: Scope, and the Service for
// ScopeService.
type Owner struct {
	Scope   Scope
	Service string
}

// OwnerOf says what the resource of typeURL named name, served to a client
// of kind, is made from; ok is false for a name sluice does not make. It
// is the inverse of the translator's naming: ClusterName,
// SubsetClusterName ("svc|subset"), the gRPC listeners ("svc",
// "svc:port") and route configurations ("svc"), the names of an Envoy's
// own resources (OutboundListenerName, InboundListenerName,
// LocalClusterName) and TracingClusterName.
//
// Service names have no "|" and no ":", so a name with either is a
// sluice name, or a service's name and a suffix. The one overlap: a
// subset cluster of a service named "inbound" (or "sluice") whose subset
// is named like a port (or "otel-collector") reads as the sidecar's local
// cluster (or the collector's).
func OwnerOf(kind ProxyKind, typeURL, name string) (o Owner, ok bool) {
	service := func(svc string) (Owner, bool) {
		if svc == "" || strings.ContainsAny(svc, "|:") {
			return Owner{}, false
		}
		return Owner{Scope: ScopeService, Service: svc}, true
	}
	// subsetOf is the service of a cluster or load assignment named
	// "svc" or "svc|subset".
	subsetOf := func(name string) (Owner, bool) {
		svc, subset, _ := strings.Cut(name, "|")
		if strings.Contains(subset, "|") {
			return Owner{}, false
		}
		return service(svc)
	}
	switch typeURL {
	case resource.ClusterType:
		switch {
		case kind != KindGRPC && name == TracingClusterName:
			return Owner{Scope: ScopeTracing}, true
		case kind != KindGRPC && strings.HasPrefix(name, "inbound|") && isPort(strings.TrimPrefix(name, "inbound|")):
			return Owner{Scope: ScopeOwn}, true
		}
		return subsetOf(name)
	case resource.EndpointType:
		return subsetOf(name)
	case resource.ListenerType, resource.RouteType:
		if kind == KindGRPC {
			svc := name
			if i := strings.LastIndexByte(name, ':'); i >= 0 && isPort(name[i+1:]) && typeURL == resource.ListenerType {
				svc = name[:i]
			}
			return service(svc)
		}
		switch name {
		case OutboundListenerName: // also OutboundRouteName
			return Owner{Scope: ScopeDependencies}, true
		case InboundListenerName: // also InboundRouteName
			return Owner{Scope: ScopeOwn}, true
		}
	}
	return Owner{}, false
}

// ServiceOf is the service whose resource of typeURL name is, for the
// resources of a single service (ScopeService, see OwnerOf).
func ServiceOf(kind ProxyKind, typeURL, name string) (service string, ok bool) {
	o, ok := OwnerOf(kind, typeURL, name)
	return o.Service, ok && o.Scope == ScopeService
}

func isPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
