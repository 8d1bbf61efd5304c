// Package translator turns the merged service catalog and the valid policy
// set, resolved for each service, into the Envoy resources one proxy group
// needs: a group is a kind of client (Envoy or proxyless gRPC), its role,
// the service it fronts and its ports (see Proxy). Translate builds
// everything each time and is the reference; Shared and Incremental give
// the same output while rebuilding only what changed. It is pure: no I/O,
// no clock, no goroutines, and the output is sorted so equal inputs give
// byte-identical resources.
package translator

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
)

// Names of the resources an Envoy sidecar or gateway gets besides the
// per-service clusters.
const (
	OutboundListenerName = "outbound_http"
	OutboundRouteName    = "outbound_http"
)

// Defaults for Options.
const (
	DefaultOutboundAddress = "127.0.0.1"
	DefaultOutboundPort    = 15001
	DefaultConnectTimeout  = 5 * time.Second
)

// Translator holds the options of a translation; it has no other state, so
// one Translator may serve concurrent callers.
type Translator struct {
	// OutboundAddress and OutboundPort are where Envoy's outbound listener
	// binds unless the proxy's node metadata says otherwise.
	OutboundAddress string
	OutboundPort    uint32
	// InboundListenerAddress and InboundListenerPort are where a sidecar's
	// inbound listener binds unless its node metadata says otherwise.
	InboundListenerAddress string
	InboundListenerPort    uint32
	ConnectTimeout         time.Duration
}

// New returns a Translator with the default options.
func New() *Translator {
	return &Translator{
		OutboundAddress:        DefaultOutboundAddress,
		OutboundPort:           DefaultOutboundPort,
		InboundListenerAddress: DefaultInboundListenerAddress,
		InboundListenerPort:    DefaultInboundListenerPort,
		ConnectTimeout:         DefaultConnectTimeout,
	}
}

// Input is everything one translation reads.
type Input struct {
	Catalog sources.Catalog
	// Policy is the current valid policy set; nil means built-in defaults.
	Policy *policy.Set
	Proxy  Proxy
}

// Result holds the resources for one proxy group, each type sorted by name.
type Result struct {
	Resources map[resource.Type][]types.Resource
	// Revision, when not 0, identifies the content: an Incremental hands
	// back the same revision for as long as its result is the same, so
	// that the snapshot loop can skip building a group nothing of which
	// changed. Translate leaves it 0 (unknown).
	Revision uint64
	// Diagnostics are the problems the translation met: a resource that
	// failed validation (it is left out, with what depends on it; the
	// rest is served), a tracing collector not in the catalog. In service
	// order, then the group's own.
	Diagnostics []sources.Diagnostic
}

// Translate builds the resources for in.Proxy. It does not modify in. It
// is the reference every faster path (Incremental) is tested against.
func (t *Translator) Translate(in Input) (*Result, error) {
	res := &Result{Resources: map[resource.Type][]types.Resource{}}
	for _, k := range envoy.Kinds {
		res.Resources[k.Type] = []types.Resource{}
	}
	services, err := sortedServices(in.Catalog.Services)
	if err != nil {
		return nil, err
	}
	view := viewOf(in.Proxy)
	deps := Dependencies(in.Proxy, in.Policy)
	var vhosts []*routev3.VirtualHost
	var filters outboundFilters
	for _, svc := range services {
		if !deps.Includes(svc.Name) {
			continue
		}
		resolved := in.Policy.Resolve(svc.Name)
		sr := t.service(svc, resolved, view)
		if localizes(resolved.Locality, in.Proxy.Locality) {
			sr.endpoints, sr.subsetEndpoints = localEndpoints(svc, resolved, in.Proxy.Locality)
		}
		sr, diags := checkService(svc.Name, sr, resolved)
		if sr.cluster == nil {
			res.Diagnostics = append(res.Diagnostics, diags...)
			continue
		}
		res.Diagnostics = append(res.Diagnostics, subsetWarnings(svc.Name, emptySubsets(svc, resolved.Subsets), resolved)...)
		res.add(resource.ClusterType, sr.cluster)
		res.add(resource.EndpointType, sr.endpoints)
		for i := range sr.subsetClusters {
			res.add(resource.ClusterType, sr.subsetClusters[i])
			res.add(resource.EndpointType, sr.subsetEndpoints[i])
		}
		if sr.vhost != nil {
			vhosts = append(vhosts, sr.vhost)
		}
		filters = filters.or(sr.filters)
		if sr.routes != nil {
			res.add(resource.RouteType, sr.routes)
		}
		for _, l := range sr.listeners {
			res.add(resource.ListenerType, l)
		}
	}
	if in.Proxy.Kind != KindGRPC {
		own := &Result{Resources: map[resource.Type][]types.Resource{}}
		t.envoyListeners(own, in, services, deps, envoy.RouteConfiguration(OutboundRouteName, vhosts), filters)
		for typ, rs := range own.Resources {
			res.Resources[typ] = append(res.Resources[typ], rs...)
		}
		res.Diagnostics = append(res.Diagnostics, own.Diagnostics...)
	}
	for _, rs := range res.Resources {
		sortByName(rs)
	}
	return res, nil
}

// sortedServices returns services in name order (services itself when it
// already is, as catalogs come), refusing a name listed twice.
func sortedServices(services []sources.CatalogService) ([]sources.CatalogService, error) {
	if !sort.SliceIsSorted(services, func(i, j int) bool { return services[i].Name < services[j].Name }) {
		services = append([]sources.CatalogService(nil), services...)
		sort.Slice(services, func(i, j int) bool { return services[i].Name < services[j].Name })
	}
	for i := 1; i < len(services); i++ {
		if services[i-1].Name == services[i].Name {
			return nil, fmt.Errorf("translating catalog: service %q listed twice", services[i].Name)
		}
	}
	return services, nil
}

// sortByName sorts resources by name. They are mostly in order already
// (services come sorted); checking is cheaper than sorting thousands of
// names on every change.
func sortByName(rs []types.Resource) {
	if !isSortedByName(rs) {
		sort.Slice(rs, func(i, j int) bool { return cache.GetResourceName(rs[i]) < cache.GetResourceName(rs[j]) })
	}
}

func isSortedByName(rs []types.Resource) bool {
	return sort.SliceIsSorted(rs, func(i, j int) bool { return cache.GetResourceName(rs[i]) < cache.GetResourceName(rs[j]) })
}

// viewOf is the view of the per-service resources a proxy gets.
func viewOf(p Proxy) serviceView {
	return serviceView{kind: p.Kind, gateway: p.Kind == KindEnvoy && p.Role == RoleGateway}
}

// Dependencies is the set of services whose resources p gets under pol:
// its service's dependencies for a sidecar that names its service, every
// service for gateways, proxyless gRPC clients (they subscribe by name)
// and proxies of unknown services.
func Dependencies(p Proxy, pol *policy.Set) policy.Dependencies {
	if p.Kind == KindEnvoy && p.Role == RoleSidecar && p.Service != "" {
		return pol.Dependencies(p.Service)
	}
	return policy.Dependencies{All: true}
}

// envoyListeners adds an Envoy's listeners with their route configurations:
// the outbound listener over outbound, the route configuration of every
// service's virtual host (with the local rate limit filter when a gateway
// enforces limits), a sidecar's inbound listener in front of its
// application, and the tracing collector's cluster when tracing is on —
// with the collector's load assignment when the collector is a service the
// proxy does not otherwise depend on.
func (t *Translator) envoyListeners(res *Result, in Input, services []sources.CatalogService, deps policy.Dependencies, outbound *routev3.RouteConfiguration, filters outboundFilters) {
	own := in.Policy.Resolve(in.Proxy.Service)
	tracing, collector := t.tracing(services, in.Proxy, own)
	defer res.checkOwn(own, outbound)
	if own.Tracing.Enabled && collector == nil {
		res.Diagnostics = append(res.Diagnostics, sources.Diagnostic{
			Severity: sources.SeverityWarning, Source: DiagnosticSource, Location: origins(own), Field: "spec.tracing.collector",
			Message: fmt.Sprintf("the tracing collector %q is not a catalog service, and has no port to reach it at: proxies are served without tracing until it registers", own.Tracing.Collector),
		})
	}
	if collector != nil {
		res.add(resource.ClusterType, collector)
		if eds := collector.GetEdsClusterConfig().GetServiceName(); eds != "" && !deps.Includes(eds) {
			for _, svc := range services {
				if svc.Name == eds {
					res.add(resource.EndpointType, serviceEndpoints(svc))
				}
			}
		}
	}
	addr, port := t.OutboundAddress, t.OutboundPort
	if in.Proxy.OutboundAddress != "" {
		addr = in.Proxy.OutboundAddress
	}
	if in.Proxy.OutboundPort != 0 {
		port = in.Proxy.OutboundPort
	}
	hcm := envoy.HCMOptions{StatPrefix: OutboundListenerName, RouteConfig: OutboundRouteName, Tracing: tracing, Filters: filters.list()}
	res.add(resource.RouteType, outbound)
	res.add(resource.ListenerType, envoy.HTTPListener(OutboundListenerName, addr, port, envoy.HCM(hcm)))
	if in.Proxy.Role == RoleSidecar && in.Proxy.Service != "" && in.Proxy.InboundPort != 0 {
		ib := t.inbound(in.Proxy, own, tracing)
		res.add(resource.ListenerType, ib.listener)
		res.add(resource.RouteType, ib.routes)
		res.add(resource.ClusterType, ib.cluster)
	}
}

// checkOwn validates a group's own resources (envoyListeners adds them to
// r alone): an invalid one is left out with an error diagnostic. It should
// never happen (the policy was validated); if it does, the snapshot's
// reference check reports what depended on it. The outbound route
// configuration is not checked again: it is the segment's, built from
// virtual hosts each checked with its service, and checking it per group
// would cost every group the whole mesh's virtual hosts.
func (r *Result) checkOwn(pol policy.Resolved, outbound *routev3.RouteConfiguration) {
	for _, k := range envoy.Kinds {
		typ := k.Type
		rs := r.Resources[typ]
		var kept []types.Resource
		dropped := false
		for i, x := range rs {
			if x == types.Resource(outbound) {
				if dropped {
					kept = append(kept, x)
				}
				continue
			}
			if err := x.(validator).ValidateAll(); err != nil {
				if !dropped {
					kept, dropped = append([]types.Resource{}, rs[:i]...), true
				}
				r.Diagnostics = append(r.Diagnostics, sources.Diagnostic{
					Severity: sources.SeverityError, Source: DiagnosticSource, Location: origins(pol),
					Message: fmt.Sprintf("%s %s is not served: %v", k.Noun, cache.GetResourceName(x), err),
				})
				continue
			}
			if dropped {
				kept = append(kept, x)
			}
		}
		if dropped {
			r.Resources[typ] = kept
		}
	}
}

func (r *Result) add(typ resource.Type, res types.Resource) {
	r.Resources[typ] = append(r.Resources[typ], res)
}

// ClusterName is the cluster (and EDS service) name of a service. It is the
// service name itself, which is what proxyless gRPC users see in their
// channelz and what Envoy stats are keyed by.
func ClusterName(service string) string { return service }

// domains are the Host/:authority values that select a service on the
// outbound listener: its bare name and name:port for each port it serves on.
func domains(svc sources.CatalogService) []string {
	ports := map[uint32]bool{}
	for _, ep := range svc.Endpoints {
		ports[ep.Port] = true
	}
	sorted := make([]int, 0, len(ports))
	for p := range ports {
		sorted = append(sorted, int(p))
	}
	sort.Ints(sorted)
	out := []string{svc.Name}
	for _, p := range sorted {
		out = append(out, svc.Name+":"+strconv.Itoa(p))
	}
	return out
}

// localities groups endpoints by (region, zone), in sorted order.
func localities(eps []sources.Endpoint) []envoy.Locality {
	type key struct{ region, zone string }
	idx := map[key]int{}
	var out []envoy.Locality
	for _, ep := range eps {
		k := key{ep.Region, ep.Zone}
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, envoy.Locality{Region: ep.Region, Zone: ep.Zone})
		}
		out[i].Endpoints = append(out[i].Endpoints, envoy.Endpoint{
			Address:  ep.Address,
			Port:     ep.Port,
			Health:   healthStatus(ep.Health),
			Weight:   ep.Weight,
			Metadata: ep.Metadata,
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Region != out[j].Region {
			return out[i].Region < out[j].Region
		}
		return out[i].Zone < out[j].Zone
	})
	for _, l := range out {
		sort.Slice(l.Endpoints, func(i, j int) bool {
			a, b := l.Endpoints[i], l.Endpoints[j]
			if a.Address != b.Address {
				return a.Address < b.Address
			}
			return a.Port < b.Port
		})
	}
	return out
}

func healthStatus(h sources.Health) corev3.HealthStatus {
	switch h {
	case sources.HealthHealthy:
		return corev3.HealthStatus_HEALTHY
	case sources.HealthUnhealthy:
		return corev3.HealthStatus_UNHEALTHY
	case sources.HealthDraining:
		return corev3.HealthStatus_DRAINING
	}
	return corev3.HealthStatus_UNKNOWN
}
