package envoy

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// LocalRateLimitName is the local rate limit HTTP filter, also the key of
// its typed_per_filter_config.
const LocalRateLimitName = "envoy.filters.http.local_ratelimit"

// TokenBucket adds RequestsPerSecond tokens every second, up to Burst; each
// request takes one.
type TokenBucket struct {
	RequestsPerSecond uint32
	Burst             uint32
}

// RateLimitDescriptor is a token bucket of its own for the requests whose
// route produces the descriptor entry Key=Value (see RouteOptions.RateLimitKey).
type RateLimitDescriptor struct {
	Key, Value string
	Bucket     TokenBucket
}

// LocalRateLimitFilter is the HTTP filter as listed in a connection
// manager: without a bucket and not enabled, so it only acts where a
// virtual host or route configures it.
func LocalRateLimitFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name: LocalRateLimitName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: MustAny(&localratelimitv3.LocalRateLimit{
			StatPrefix: "local_rate_limit",
		})},
	}
}

// LocalRateLimit is a per-virtual-host or per-route rate limit: the
// bucket, enabled and enforced for every request, answering 429 with
// x-ratelimit-* headers (draft 03). Requests whose route produces one of
// the descriptors take from that descriptor's bucket instead.
func LocalRateLimit(statPrefix string, bucket TokenBucket, descriptors []RateLimitDescriptor) *localratelimitv3.LocalRateLimit {
	all := &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
	rl := &localratelimitv3.LocalRateLimit{
		StatPrefix:              statPrefix,
		Status:                  &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
		TokenBucket:             tokenBucket(bucket),
		FilterEnabled:           all,
		FilterEnforced:          all,
		EnableXRatelimitHeaders: ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
	}
	for _, d := range descriptors {
		rl.Descriptors = append(rl.Descriptors, &ratelimitv3.LocalRateLimitDescriptor{
			Entries:     []*ratelimitv3.RateLimitDescriptor_Entry{{Key: d.Key, Value: d.Value}},
			TokenBucket: tokenBucket(d.Bucket),
		})
	}
	if len(descriptors) > 0 {
		// A request with its own bucket does not also take from the
		// shared one.
		rl.AlwaysConsumeDefaultTokenBucket = wrapperspb.Bool(false)
	}
	return rl
}

func tokenBucket(b TokenBucket) *typev3.TokenBucket {
	burst := b.Burst
	if burst == 0 {
		burst = b.RequestsPerSecond
	}
	return &typev3.TokenBucket{
		MaxTokens:     burst,
		TokensPerFill: wrapperspb.UInt32(b.RequestsPerSecond),
		FillInterval:  durationpb.New(time.Second),
	}
}

// DisabledFilter is a typed_per_filter_config entry that turns a filter
// off for a virtual host or route.
func DisabledFilter() *anypb.Any {
	return MustAny(&routev3.FilterConfig{Disabled: true})
}

// rateLimitAction makes a route produce the descriptor entry key=value.
func rateLimitAction(e HeaderValue) *routev3.RateLimit {
	return &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{{
		ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{
			DescriptorKey:   e.Name,
			DescriptorValue: e.Value,
		}},
	}}}
}
