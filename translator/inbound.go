package translator

import (
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
)

// Names and defaults of a sidecar's inbound side.
const (
	InboundListenerName           = "inbound_http"
	InboundRouteName              = "inbound_http"
	DefaultInboundListenerAddress = "0.0.0.0"
	DefaultInboundListenerPort    = 15006
	// rateLimitRouteKey is the rate-limit descriptor key naming a policy
	// route that has its own bucket.
	rateLimitRouteKey = "sluice_route"
)

// LocalClusterName is the cluster of the application a sidecar fronts, on
// 127.0.0.1:port. "|" cannot occur in a service name, so it never clashes
// with a service's cluster.
func LocalClusterName(port uint32) string { return "inbound|" + strconv.FormatUint(uint64(port), 10) }

// inboundResources are a sidecar's inbound listener, its routes and the
// cluster of the local application.
type inboundResources struct {
	listener *listenerv3.Listener
	routes   *routev3.RouteConfiguration
	cluster  *clusterv3.Cluster
}

// inbound builds the inbound side of a sidecar of pol.Service whose
// application listens on 127.0.0.1:p.InboundPort. Every policy route
// becomes one route (the caller's sidecar does the retrying), without a
// timeout (the caller's timeout applies), and carries the service's rate
// limits: the shared bucket on the virtual host, a route's own bucket on
// the route.
func (t *Translator) inbound(p Proxy, pol policy.Resolved, tracing *hcmv3.HttpConnectionManager_Tracing) inboundResources {
	local := LocalClusterName(p.InboundPort)
	var routes []*routev3.Route
	limited := pol.RateLimit.Enabled
	for _, rr := range policyRoutes(pol) {
		var perFilter map[string]*anypb.Any
		switch {
		case rr.OwnRateLimit && rr.RateLimit.Enabled:
			perFilter = map[string]*anypb.Any{envoy.LocalRateLimitName: envoy.MustAny(
				envoy.LocalRateLimit(rateLimitStatPrefix("inbound", pol.Service, rr.Name), bucket(rr.RateLimit), nil))}
			limited = true
		case rr.OwnRateLimit && pol.RateLimit.Enabled: // the route opts out
			perFilter = map[string]*anypb.Any{envoy.LocalRateLimitName: envoy.DisabledFilter()}
		}
		var noTimeout time.Duration // the caller's timeout applies
		routes = append(routes, envoy.Route(envoy.RouteOptions{
			Name:            rr.Name,
			Match:           envoy.Match{Prefix: rr.Match.PathPrefix, Path: rr.Match.Path, Methods: rr.Match.Methods, Headers: valueMatches(rr.Match.Headers), Query: valueMatches(rr.Match.QueryParams)},
			Cluster:         local,
			Timeout:         &noTimeout,
			PerFilterConfig: perFilter,
		}))
	}
	var vhostFilter map[string]*anypb.Any
	if pol.RateLimit.Enabled {
		vhostFilter = map[string]*anypb.Any{envoy.LocalRateLimitName: envoy.MustAny(
			envoy.LocalRateLimit(rateLimitStatPrefix("inbound", pol.Service, ""), bucket(pol.RateLimit), nil))}
	}
	vh := envoy.VirtualHostRoutes("inbound", []string{"*"}, routes, vhostFilter)
	hcm := envoy.HCMOptions{StatPrefix: InboundListenerName, RouteConfig: InboundRouteName, Tracing: tracing}
	if limited {
		hcm.Filters = []*hcmv3.HttpFilter{envoy.LocalRateLimitFilter()}
	}
	addr, port := t.InboundListenerAddress, t.InboundListenerPort
	if p.InboundListenerAddress != "" {
		addr = p.InboundListenerAddress
	}
	if p.InboundListenerPort != 0 {
		port = p.InboundListenerPort
	}
	return inboundResources{
		listener: envoy.HTTPListener(InboundListenerName, addr, port, envoy.HCM(hcm)),
		routes:   envoy.RouteConfiguration(InboundRouteName, []*routev3.VirtualHost{vh}),
		cluster: envoy.AddressCluster(local, t.ConnectTimeout, clusterv3.Cluster_STATIC,
			[]envoy.Endpoint{{Address: "127.0.0.1", Port: p.InboundPort}}, envoy.UpstreamAsDownstream),
	}
}

// policyRoutes lists the service's routes in match order, the catch-all
// included, with their full matches: the routes RouteVariants splits.
func policyRoutes(pol policy.Resolved) []policy.ResolvedRoute {
	byName := map[string]policy.ResolvedRoute{}
	for _, rr := range pol.Routes {
		byName[rr.Name] = rr
	}
	var out []policy.ResolvedRoute
	seen := map[string]bool{}
	for _, v := range pol.RouteVariants() {
		if seen[v.Route] {
			continue
		}
		seen[v.Route] = true
		rr, ok := byName[v.Route]
		if !ok { // the catch-all RouteVariants adds
			rr = policy.ResolvedRoute{Name: v.Route, Match: policy.RouteMatch{PathPrefix: "/"}, Timeout: v.Timeout, Retry: v.Retry, RateLimit: v.RateLimit}
		}
		out = append(out, rr)
	}
	return out
}

// rateLimits are a gateway's rate limits for one service.
type rateLimits struct {
	// vhost is the virtual host's typed_per_filter_config; nil when the
	// service has no limits.
	vhost map[string]*anypb.Any
	// routeKeys maps a policy route with a bucket of its own to the
	// descriptor entry its routes produce.
	routeKeys map[string]*envoy.HeaderValue
	// optOut lists the policy routes where the filter is off.
	optOut map[string]bool
}

// gatewayRateLimits places a service's rate limits on a gateway's virtual
// host for it. The routes of one policy route can be several Envoy routes
// (the retry variants), and Envoy gives every route-level config a bucket
// of its own; so the buckets live on the virtual host — the service's as
// the default, each route's own as a descriptor that the route's variants
// select with a generic_key — and the variants share them.
func gatewayRateLimits(pol policy.Resolved) rateLimits {
	rl := rateLimits{routeKeys: map[string]*envoy.HeaderValue{}, optOut: map[string]bool{}}
	var descriptors []envoy.RateLimitDescriptor
	routes := policyRoutes(pol)
	for _, rr := range routes {
		if rr.OwnRateLimit && rr.RateLimit.Enabled {
			descriptors = append(descriptors, envoy.RateLimitDescriptor{Key: rateLimitRouteKey, Value: rr.Name, Bucket: bucket(rr.RateLimit)})
			rl.routeKeys[rr.Name] = &envoy.HeaderValue{Name: rateLimitRouteKey, Value: rr.Name}
		}
	}
	if !pol.RateLimit.Enabled && len(descriptors) == 0 {
		return rateLimits{}
	}
	def := bucket(pol.RateLimit)
	if !pol.RateLimit.Enabled {
		// Envoy needs a default bucket; no request takes from it, since
		// every route without a bucket of its own has the filter off.
		def = descriptors[0].Bucket
	}
	for _, rr := range routes {
		if rl.routeKeys[rr.Name] == nil && (rr.OwnRateLimit || !pol.RateLimit.Enabled) {
			rl.optOut[rr.Name] = true
		}
	}
	rl.vhost = map[string]*anypb.Any{envoy.LocalRateLimitName: envoy.MustAny(
		envoy.LocalRateLimit(rateLimitStatPrefix("gateway", pol.Service, ""), def, descriptors))}
	return rl
}

func bucket(r policy.RateLimit) envoy.TokenBucket {
	return envoy.TokenBucket{RequestsPerSecond: r.RequestsPerSecond, Burst: r.Burst}
}

// rateLimitStatPrefix names a bucket's stats:
// <side>.<service>[.<route>].http_local_rate_limit.rate_limited and so on.
func rateLimitStatPrefix(side, service, route string) string {
	s := side + "." + service
	if route != "" {
		s += "." + route
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		case r == ']': // routes[0] -> routes_0
			return -1
		}
		return '_'
	}, s)
}
