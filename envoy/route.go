package envoy

import (
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names used in routes.
const (
	PreviousHostsPredicateName = "envoy.retry_host_predicates.previous_hosts"
	// GRPCChannelIDKey is the filter-state key gRPC's xDS client hashes to
	// keep every call of one channel on one host.
	GRPCChannelIDKey = "io.grpc.channel_id"
	grpcContentType  = "application/grpc"
	// hostSelectionRetries is how often Envoy re-picks a host for a retry
	// that landed on one it already tried (Istio's value).
	hostSelectionRetries = 5
)

// RouteOptions describe one route to a cluster.
type RouteOptions struct {
	// Name shows in Envoy's config dump and access logs.
	Name  string
	Match Match
	// Cluster is where matching requests go, unless WeightedClusters is
	// set.
	Cluster string
	// WeightedClusters, when set, splits requests between clusters by
	// weight.
	WeightedClusters []WeightedCluster
	// Mirrors copy a share of requests to other clusters, discarding
	// the answers (Envoy only).
	Mirrors []Mirror
	// Timeout is Envoy's route timeout: nil leaves Envoy's default (15s),
	// 0 disables it.
	Timeout *time.Duration
	// MaxStreamDuration bounds a stream (gRPC's form of a timeout); 0
	// leaves it unset.
	MaxStreamDuration time.Duration
	// Retry, when set, is the route's retry policy.
	Retry *Retry
	Hash  []Hash
	// TracingSampling, when set, overrides the connection manager's
	// random sampling percentage for this route.
	TracingSampling *float64
	// PerFilterConfig is the route's typed_per_filter_config.
	PerFilterConfig map[string]*anypb.Any
	// RateLimitKey, when set, makes the route produce this rate-limit
	// descriptor entry, selecting a RateLimitDescriptor's bucket.
	RateLimitKey *HeaderValue
}

// WeightedCluster is one cluster's weight in a split.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// Mirror sends a copy of Percent of the requests to Cluster.
type Mirror struct {
	Cluster string
	Percent float64
}

// Match selects requests. Exactly one of Prefix and Path is set.
type Match struct {
	Prefix, Path string
	// Methods, when set, restricts the match to these HTTP methods.
	Methods []string
	// Headers must all match.
	Headers []ValueMatch
	// Query parameters must all match.
	Query []ValueMatch
	// Present headers must be present with any value.
	Present []string
	// GRPC requires a content-type starting with application/grpc.
	GRPC bool
}

// HeaderValue is a header name with a value.
type HeaderValue struct{ Name, Value string }

// ValueMatch matches a header or query parameter: Present (any value),
// Regex (an RE2 expression the whole value matches), or else the exact
// value Exact.
type ValueMatch struct {
	Name, Exact, Regex string
	Present            bool
}

func (v ValueMatch) stringMatcher() *matcherv3.StringMatcher {
	if v.Regex != "" {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v.Regex}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v.Exact}}
}

// Retry is a route's retry policy.
type Retry struct {
	// On are the retry conditions; Envoy's retry_on takes HTTP and gRPC
	// status conditions alike.
	On                   []string
	NumRetries           uint32
	PerTryTimeout        time.Duration
	BackoffBase          time.Duration
	BackoffMax           time.Duration
	RetriableStatusCodes []uint32
	// OtherHosts makes each retry prefer a host not tried yet.
	OtherHosts bool
}

// Hash is one input of a ring-hash key; set exactly one field.
type Hash struct {
	Header    string
	SourceIP  bool
	ChannelID bool
}

// Route builds a route.
func Route(o RouteOptions) *routev3.Route {
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: o.Cluster}}
	if len(o.WeightedClusters) > 0 {
		wc := &routev3.WeightedCluster{}
		for _, c := range o.WeightedClusters {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c.Name, Weight: wrapperspb.UInt32(c.Weight)})
		}
		action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	for _, m := range o.Mirrors {
		action.RequestMirrorPolicies = append(action.RequestMirrorPolicies, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster: m.Cluster,
			RuntimeFraction: &corev3.RuntimeFractionalPercent{
				DefaultValue: FractionalPercent(m.Percent),
			},
		})
	}
	if o.Timeout != nil {
		action.Timeout = durationpb.New(*o.Timeout)
	}
	if o.MaxStreamDuration > 0 {
		action.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(o.MaxStreamDuration)}
	}
	if o.Retry != nil {
		action.RetryPolicy = RetryPolicy(*o.Retry)
	}
	for _, h := range o.Hash {
		if hp := hashPolicy(h); hp != nil {
			action.HashPolicy = append(action.HashPolicy, hp)
		}
	}
	if o.RateLimitKey != nil {
		action.RateLimits = []*routev3.RateLimit{rateLimitAction(*o.RateLimitKey)}
	}
	r := &routev3.Route{
		Name:                 o.Name,
		Match:                RouteMatch(o.Match),
		Action:               &routev3.Route_Route{Route: action},
		TypedPerFilterConfig: o.PerFilterConfig,
	}
	if o.TracingSampling != nil {
		r.Tracing = &routev3.Tracing{RandomSampling: FractionalPercent(*o.TracingSampling)}
	}
	return r
}

// RouteMatch builds a route match.
func RouteMatch(m Match) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{}
	if m.Path != "" {
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path}
	} else {
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: m.Prefix}
	}
	switch len(m.Methods) {
	case 0:
	case 1:
		rm.Headers = append(rm.Headers, stringHeader(":method", &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.Methods[0]},
		}))
	default:
		// Envoy matches the whole value against the expression.
		rm.Headers = append(rm.Headers, stringHeader(":method", &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: strings.Join(m.Methods, "|")}},
		}))
	}
	if m.GRPC {
		rm.Headers = append(rm.Headers, stringHeader("content-type", &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: grpcContentType},
		}))
	}
	for _, h := range m.Headers {
		if h.Present {
			rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
				Name:                 h.Name,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
			})
			continue
		}
		rm.Headers = append(rm.Headers, stringHeader(h.Name, h.stringMatcher()))
	}
	for _, q := range m.Query {
		qm := &routev3.QueryParameterMatcher{Name: q.Name}
		if q.Present {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: q.stringMatcher()}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	for _, name := range m.Present {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{
			Name:                 name,
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
		})
	}
	return rm
}

func stringHeader(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

// RetryPolicy builds a retry policy.
func RetryPolicy(r Retry) *routev3.RetryPolicy {
	rp := &routev3.RetryPolicy{
		RetryOn:              strings.Join(r.On, ","),
		NumRetries:           wrapperspb.UInt32(r.NumRetries),
		RetriableStatusCodes: r.RetriableStatusCodes,
	}
	if r.PerTryTimeout > 0 {
		rp.PerTryTimeout = durationpb.New(r.PerTryTimeout)
	}
	if r.BackoffBase > 0 {
		rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(r.BackoffBase)}
		if r.BackoffMax > 0 {
			rp.RetryBackOff.MaxInterval = durationpb.New(r.BackoffMax)
		}
	}
	if r.OtherHosts {
		rp.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       PreviousHostsPredicateName,
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: MustAny(&previoushostsv3.PreviousHostsPredicate{})},
		}}
		rp.HostSelectionRetryMaxAttempts = hostSelectionRetries
	}
	return rp
}

func hashPolicy(h Hash) *routev3.RouteAction_HashPolicy {
	switch {
	case h.Header != "":
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.Header},
		}}
	case h.SourceIP:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true},
		}}
	case h.ChannelID:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{
			FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: GRPCChannelIDKey},
		}}
	}
	return nil
}

// VirtualHostRoutes is a virtual host for the given domains with routes,
// first match wins, and typed_per_filter_config shared by its routes.
func VirtualHostRoutes(name string, domains []string, routes []*routev3.Route, perFilter map[string]*anypb.Any) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes, TypedPerFilterConfig: perFilter}
}

// FractionalPercent is a percentage (0-100, fractions allowed) as Envoy's
// FractionalPercent, in millionths so that 0.01% survives.
func FractionalPercent(p float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{
		Numerator:   uint32(p*10000 + 0.5),
		Denominator: typev3.FractionalPercent_MILLION,
	}
}
