package translator

import (
	"slices"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
)

// envoyRoutes maps the service's route variants one to one onto Envoy
// routes, in order, each with its target (the service, a subset or a
// split; see routeTarget), mirror and faults, its timeout and retry
// policy, the service's trace sampling, and its part in the rate limits
// (gateways). empty are the service's subsets without instances.
func envoyRoutes(pol policy.Resolved, v serviceView, limits rateLimits, empty []string) []*routev3.Route {
	hash := hashPolicies(pol.LoadBalancer, v.kind)
	var sampling *float64
	if pol.Tracing.Enabled {
		sampling = &pol.Tracing.SamplingPercent
	}
	variants := pol.RouteVariants()
	out := make([]*routev3.Route, 0, len(variants))
	for _, rv := range variants {
		timeout := rv.Timeout
		cluster, weighted := routeTarget(pol.Service, rv.Split, empty)
		o := envoy.RouteOptions{
			Name:             rv.Name,
			Match:            variantMatch(rv),
			Cluster:          cluster,
			WeightedClusters: weighted,
			Mirrors:          routeMirrors(pol.Service, rv.Mirror, empty, cluster),
			Timeout:          &timeout,
			Retry:            envoyRetry(rv.Retry),
			Hash:             hash,
			TracingSampling:  sampling,
			RateLimitKey:     limits.routeKeys[rv.Route],
		}
		if limits.optOut[rv.Route] {
			o.PerFilterConfig = map[string]*anypb.Any{envoy.LocalRateLimitName: envoy.DisabledFilter()}
		}
		if fc := faultConfig(rv.Fault); fc != nil {
			if o.PerFilterConfig == nil {
				o.PerFilterConfig = map[string]*anypb.Any{}
			}
			o.PerFilterConfig[envoy.FaultFilterName] = fc
		}
		out = append(out, envoy.Route(o))
	}
	return out
}

func variantMatch(rv policy.RouteVariant) envoy.Match {
	m := envoy.Match{
		Prefix:  rv.Match.PathPrefix,
		Path:    rv.Match.Path,
		Methods: rv.Match.Methods,
		GRPC:    rv.GRPC,
		Headers: valueMatches(rv.Match.Headers),
		Query:   valueMatches(rv.Match.QueryParams),
	}
	if rv.RequireHeader != "" {
		m.Present = []string{rv.RequireHeader}
	}
	return m
}

func valueMatches(hs []policy.HeaderMatch) []envoy.ValueMatch {
	var out []envoy.ValueMatch
	for _, h := range hs {
		out = append(out, envoy.ValueMatch{Name: h.Name, Exact: h.Exact, Regex: h.Regex, Present: h.Present})
	}
	return out
}

// envoyRetry is Envoy's form of a retry policy: HTTP and gRPC-status
// conditions together in retry_on (Envoy reads the gRPC ones as
// x-envoy-retry-grpc-on does), and retries prefer hosts not tried yet.
func envoyRetry(r policy.Retry) *envoy.Retry {
	if !r.Enabled() {
		return nil
	}
	on := make([]string, len(r.RetryOn))
	for i, c := range r.RetryOn {
		on[i] = string(c)
	}
	return &envoy.Retry{
		On:                   on,
		NumRetries:           r.Attempts,
		PerTryTimeout:        r.PerTryTimeout,
		BackoffBase:          r.Backoff.Base,
		BackoffMax:           r.Backoff.Max,
		RetriableStatusCodes: r.RetriableStatusCodes,
		OtherHosts:           true,
	}
}

// hashPolicies are the ring-hash inputs of every route of a service. gRPC
// clients cannot hash on the source address (they are the source), so
// they get the equivalent affinity: every call of one channel on one host.
func hashPolicies(lb policy.LoadBalancer, kind ProxyKind) []envoy.Hash {
	if lb.Policy != policy.RingHash {
		return nil
	}
	switch h := lb.RingHash.HashOn; {
	case h.Header != "":
		return []envoy.Hash{{Header: h.Header}}
	case h.SourceIP && kind == KindGRPC:
		return []envoy.Hash{{ChannelID: true}}
	case h.SourceIP:
		return []envoy.Hash{{SourceIP: true}}
	}
	return nil
}

// grpcRoutes is what a proxyless gRPC client gets: one route per policy
// route that a gRPC call can match (calls are always POST and have no
// query parameters, and gRPC's route matching sees neither :method nor
// the idempotency rules), carrying the route's gRPC variant: retries only
// on gRPC status codes, the timeout as max_stream_duration (gRPC ignores
// the route timeout and per_try_timeout), its target and its faults (no
// mirror: gRPC has none).
func grpcRoutes(pol policy.Resolved, empty []string) []*routev3.Route {
	hash := hashPolicies(pol.LoadBalancer, KindGRPC)
	var out []*routev3.Route
	done := map[string]bool{}
	for _, rv := range pol.RouteVariants() {
		if done[rv.Route] {
			continue
		}
		// A route's gRPC variant comes first; a route without one either
		// does not retry (a single no-retry variant) or does not admit
		// POST, and then no gRPC call can match it.
		if rv.Kind != policy.VariantGRPC && (rv.Kind != policy.VariantNoRetry || !admitsPOST(rv.Match.Methods)) || len(rv.Match.QueryParams) > 0 {
			continue
		}
		done[rv.Route] = true
		cluster, weighted := routeTarget(pol.Service, rv.Split, empty)
		o := envoy.RouteOptions{
			Name: rv.Route,
			Match: envoy.Match{
				Prefix:  rv.Match.PathPrefix,
				Path:    rv.Match.Path,
				Headers: valueMatches(rv.Match.Headers),
			},
			Cluster:           cluster,
			WeightedClusters:  weighted,
			MaxStreamDuration: grpcDeadline(rv),
			Retry:             grpcRetry(rv.Retry),
			Hash:              hash,
		}
		if fc := faultConfig(rv.Fault); fc != nil {
			o.PerFilterConfig = map[string]*anypb.Any{envoy.FaultFilterName: fc}
		}
		out = append(out, envoy.Route(o))
	}
	return out
}

func admitsPOST(methods []string) bool {
	return len(methods) == 0 || slices.Contains(methods, "POST")
}

// grpcRetry keeps the gRPC status conditions, the only ones gRPC's xDS
// client reads; without any the route gets no retry policy (gRPC retries
// connection failures transparently anyway).
func grpcRetry(r policy.Retry) *envoy.Retry {
	if !r.Enabled() {
		return nil
	}
	var on []string
	for _, c := range r.RetryOn {
		if c.IsGRPCStatus() {
			on = append(on, string(c))
		}
	}
	if len(on) == 0 {
		return nil
	}
	return &envoy.Retry{On: on, NumRetries: r.Attempts, BackoffBase: r.Backoff.Base, BackoffMax: r.Backoff.Max}
}

// grpcDeadline is the stream deadline a proxyless gRPC client gets: the
// route's timeout when a policy set one, else none (the built-in 15s
// timeout is for requests, and would cut long-lived streams).
func grpcDeadline(rv policy.RouteVariant) time.Duration {
	if !rv.TimeoutSet {
		return 0
	}
	return rv.Timeout
}
