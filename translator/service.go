package translator

import (
	"fmt"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
)

// serviceView is everything besides the service itself and its resolved
// policy that the service's resources depend on. Two proxies with equal
// views get identical per-service resources, so they could be cached by
// (service, policy hash, view).
type serviceView struct {
	kind ProxyKind
	// gateway: the proxy enforces the service's rate limits on its routes
	// to the service (gateways have no inbound listener for it).
	gateway bool
}

// serviceResources are the resources one service contributes.
type serviceResources struct {
	cluster   *clusterv3.Cluster
	endpoints *endpointv3.ClusterLoadAssignment
	// subsetClusters and subsetEndpoints are the clusters and load
	// assignments of its subsets, in subset order.
	subsetClusters  []*clusterv3.Cluster
	subsetEndpoints []*endpointv3.ClusterLoadAssignment
	// vhost is the service's virtual host on Envoy's outbound route
	// configuration; filters are the HTTP filters its routes need in
	// that connection manager.
	vhost   *routev3.VirtualHost
	filters outboundFilters
	// routes and listeners are a proxyless gRPC client's route
	// configuration and API listeners for the service.
	routes    *routev3.RouteConfiguration
	listeners []*listenerv3.Listener
}

// DiagnosticSource is the Source of the diagnostics the translator reports.
const DiagnosticSource = "translator"

// validator is what go-control-plane generates for every Envoy message:
// the field constraints Envoy and gRPC clients check too.
type validator interface{ ValidateAll() error }

// checkService validates every resource of a service. A service with an
// invalid resource is left out whole, with an error diagnostic: its
// cluster, load assignment, virtual host and listeners refer to each
// other, and a client would reject the response that carries the invalid
// one (every other service's resources with it).
func checkService(svc string, res serviceResources, pol policy.Resolved) (serviceResources, []sources.Diagnostic) {
	if bad := invalidResources(res); len(bad) > 0 {
		return serviceResources{}, []sources.Diagnostic{serviceDiagnostic(svc, bad, pol)}
	}
	return res, nil
}

// invalidResources lists a service's resources that fail validation, with
// why.
func invalidResources(res serviceResources) []string {
	var bad []string
	check := func(kind, name string, m validator) {
		if err := m.ValidateAll(); err != nil {
			bad = append(bad, fmt.Sprintf("%s %s: %v", kind, name, err))
		}
	}
	check("cluster", res.cluster.GetName(), res.cluster)
	check("load assignment", res.endpoints.GetClusterName(), res.endpoints)
	for _, c := range res.subsetClusters {
		check("cluster", c.GetName(), c)
	}
	for _, e := range res.subsetEndpoints {
		check("load assignment", e.GetClusterName(), e)
	}
	if res.vhost != nil {
		check("virtual host", res.vhost.GetName(), res.vhost)
	}
	if res.routes != nil {
		check("route configuration", res.routes.GetName(), res.routes)
	}
	for _, l := range res.listeners {
		check("listener", l.GetName(), l)
	}
	return bad
}

// serviceDiagnostic reports a service left out for its invalid resources.
func serviceDiagnostic(svc string, bad []string, pol policy.Resolved) sources.Diagnostic {
	return sources.Diagnostic{
		Severity: sources.SeverityError, Source: DiagnosticSource, Location: origins(pol),
		Message: fmt.Sprintf("service %s is not served: %s", svc, strings.Join(bad, "; ")),
	}
}

// origins is where a resolved policy came from, for a diagnostic.
func origins(pol policy.Resolved) string {
	if len(pol.Origins) == 0 {
		return "built-in defaults"
	}
	return strings.Join(pol.Origins, ", ")
}

// service translates one service. It reads nothing but its arguments and
// the translator's options.
func (t *Translator) service(svc sources.CatalogService, pol policy.Resolved, v serviceView) serviceResources {
	out := t.serviceConfig(svc.Name, domains(svc), pol, v, emptySubsets(svc, pol.Subsets))
	out.endpoints = serviceEndpoints(svc)
	out.subsetEndpoints = subsetEndpoints(svc, pol.Subsets)
	return out
}

// serviceEndpoints is the load assignment of a service: the only one of its
// resources that depends on its endpoints beyond the ports they serve on.
func serviceEndpoints(svc sources.CatalogService) *endpointv3.ClusterLoadAssignment {
	return envoy.LoadAssignment(ClusterName(svc.Name), localities(svc.Endpoints))
}

// serviceConfig is every resource of a service but its load assignments,
// from its name and domains (see domains), and the subsets that have no
// instances (empty; routes send nothing to them).
func (t *Translator) serviceConfig(svcName string, doms []string, pol policy.Resolved, v serviceView, empty []string) serviceResources {
	name := ClusterName(svcName)
	cp := clusterPolicy(pol, v.kind)
	out := serviceResources{
		cluster: envoy.ServiceCluster(name, t.ConnectTimeout, cp),
	}
	// A subset's cluster balances like the service's (its own outlier
	// detection and circuit breakers: a canary's failures count against
	// the canary).
	for _, ss := range pol.Subsets {
		out.subsetClusters = append(out.subsetClusters, envoy.ServiceCluster(SubsetClusterName(svcName, ss.Name), t.ConnectTimeout, cp))
	}
	faults := hasFaults(pol)
	if v.kind == KindGRPC {
		// One API listener per name a client may dial: xds:///name and
		// xds:///name:port. gRPC picks the virtual host by that name, so
		// the shared route configuration lists them all as domains.
		vh := envoy.VirtualHostRoutes(svcName, doms, grpcRoutes(pol, empty), nil)
		out.routes = envoy.RouteConfiguration(svcName, []*routev3.VirtualHost{vh})
		hcm := envoy.HCMOptions{StatPrefix: svcName, RouteConfig: svcName}
		if faults {
			hcm.Filters = []*hcmv3.HttpFilter{envoy.FaultFilter()}
		}
		for _, d := range doms {
			out.listeners = append(out.listeners, envoy.APIListener(d, envoy.HCM(hcm)))
		}
		return out
	}
	// Sidecars enforce a service's rate limits on their inbound side;
	// gateways, on their routes to the service.
	var limits rateLimits
	if v.gateway {
		limits = gatewayRateLimits(pol)
	}
	out.vhost = envoy.VirtualHostRoutes(svcName, doms, envoyRoutes(pol, v, limits, empty), limits.vhost)
	out.filters = outboundFilters{rateLimit: limits.vhost != nil, fault: faults}
	return out
}

// outboundFilters are the HTTP filters an Envoy's outbound connection
// manager runs for the services it routes to: the local rate limit when a
// gateway enforces limits, the fault filter when a route injects faults.
type outboundFilters struct{ rateLimit, fault bool }

func (f outboundFilters) or(g outboundFilters) outboundFilters {
	return outboundFilters{rateLimit: f.rateLimit || g.rateLimit, fault: f.fault || g.fault}
}

// list is the filters in the order they run, before the router. The
// fault filter comes first, as Envoy's documentation asks: an injected
// fault takes no rate-limit token.
func (f outboundFilters) list() []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	if f.fault {
		out = append(out, envoy.FaultFilter())
	}
	if f.rateLimit {
		out = append(out, envoy.LocalRateLimitFilter())
	}
	return out
}

// defaultCircuitBreaker is the built-in circuit breaker, equal to Envoy's
// defaults.
var defaultCircuitBreaker = policy.CircuitBreaker{
	MaxConnections:     policy.DefaultMaxConnections,
	MaxPendingRequests: policy.DefaultMaxPendingRequests,
	MaxRequests:        policy.DefaultMaxRequests,
	MaxRetries:         policy.DefaultMaxRetries,
}

// clusterPolicy maps the resolved policy onto a cluster for kind. Proxyless
// gRPC clients NACK RANDOM (and MAGLEV) and honour only max_requests of the
// circuit breakers and the failure-percentage form of outlier detection, so
// they get the closest form they accept.
func clusterPolicy(pol policy.Resolved, kind ProxyKind) envoy.ClusterPolicy {
	grpc := kind == KindGRPC
	var p envoy.ClusterPolicy
	lb := pol.LoadBalancer
	switch lb.Policy {
	case policy.LeastRequest:
		p.LB = envoy.LB{Policy: clusterv3.Cluster_LEAST_REQUEST, ChoiceCount: lb.ChoiceCount}
	case policy.RingHash:
		p.LB = envoy.LB{Policy: clusterv3.Cluster_RING_HASH, MinRingSize: lb.RingHash.MinRingSize, MaxRingSize: lb.RingHash.MaxRingSize}
	case policy.Random:
		p.LB = envoy.LB{Policy: clusterv3.Cluster_RANDOM}
		if grpc {
			p.LB.Policy = clusterv3.Cluster_ROUND_ROBIN
		}
	default:
		p.LB = envoy.LB{Policy: clusterv3.Cluster_ROUND_ROBIN}
	}

	// The built-in thresholds are Envoy's (and gRPC's max_requests) own
	// defaults; a cluster only carries thresholds when they differ, so a
	// service without policy gets a plain cluster.
	cb := pol.CircuitBreaker
	switch {
	case grpc:
		if cb.MaxRequests != policy.DefaultMaxRequests {
			p.CircuitBreaker = &envoy.Thresholds{MaxRequests: cb.MaxRequests}
		}
	case cb != defaultCircuitBreaker || pol.RetryBudget.Enabled:
		p.CircuitBreaker = &envoy.Thresholds{
			MaxConnections:     cb.MaxConnections,
			MaxPendingRequests: cb.MaxPendingRequests,
			MaxRequests:        cb.MaxRequests,
			MaxRetries:         cb.MaxRetries,
		}
		if b := pol.RetryBudget; b.Enabled {
			p.CircuitBreaker.RetryBudget = &envoy.RetryBudget{BudgetPercent: b.BudgetPercent, MinRetryConcurrency: b.MinRetryConcurrency}
		}
	}

	// Envoy only: gRPC's xDS client has no panic mode, no slow start and
	// no active health checks (docs/policies.md).
	if !grpc {
		p.HealthyPanicThreshold = pol.HealthyPanicThreshold
		// gRPC always weighs localities; Envoy only when told to.
		p.LocalityWeighted = pol.Locality != nil && pol.Locality.Mode == policy.LocalityDistribute
		if ss := pol.SlowStart; ss != nil && (lb.Policy == policy.RoundRobin || lb.Policy == policy.LeastRequest) {
			p.SlowStart = &envoy.SlowStart{Window: ss.Window, Aggression: ss.Aggression, MinWeightPercent: ss.MinWeightPercent}
		}
		if hc := pol.HealthCheck; hc != nil {
			p.HealthCheck = &envoy.HealthCheck{
				Interval: hc.Interval, Timeout: hc.Timeout, Jitter: hc.Jitter,
				UnhealthyThreshold: hc.UnhealthyThreshold, HealthyThreshold: hc.HealthyThreshold,
				TCP: hc.TCP,
			}
			if hc.HTTP != nil {
				p.HealthCheck.HTTPPath, p.HealthCheck.Host, p.HealthCheck.ExpectedStatuses = hc.HTTP.Path, hc.HTTP.Host, hc.HTTP.ExpectedStatuses
			}
			if hc.GRPC != nil {
				p.HealthCheck.GRPC, p.HealthCheck.GRPCService = true, hc.GRPC.Service
			}
		}
	}

	od := pol.OutlierDetection
	if !od.Enabled || grpc && od.ErrorPercent == 0 {
		return p
	}
	p.OutlierDetection = &envoy.Outlier{
		FailurePercent:              od.ErrorPercent,
		FailurePercentMinHosts:      od.MinHosts,
		FailurePercentRequestVolume: od.MinRequests,
		Interval:                    od.Interval,
		BaseEjectionTime:            od.BaseEjectionTime,
		MaxEjectionPercent:          od.MaxEjectionPercent,
	}
	if !grpc {
		n := od.ConsecutiveErrors
		p.OutlierDetection.Consecutive = &n
	}
	return p
}
