package envoy

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// HTTPProtocolOptionsKey is the typed_extension_protocol_options key of the
// upstream HTTP protocol options.
const HTTPProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// ClusterPolicy is what a cluster does besides finding its endpoints: how
// it balances load, how much it sends at once and which hosts it ejects.
type ClusterPolicy struct {
	LB LB
	// CircuitBreaker, when set, replaces Envoy's default-priority
	// thresholds.
	CircuitBreaker *Thresholds
	// OutlierDetection, when set, turns outlier detection on.
	OutlierDetection *Outlier
	// HealthyPanicThreshold, when set, replaces Envoy's panic threshold
	// (50%).
	HealthyPanicThreshold *float64
	// SlowStart, when set, ramps new endpoints up (ROUND_ROBIN and
	// LEAST_REQUEST; other policies ignore it).
	SlowStart *SlowStart
	// HealthCheck, when set, is an active health check of every endpoint.
	HealthCheck *HealthCheck
	// LocalityWeighted makes Envoy split traffic between the localities
	// of a priority by their load-balancing weights (without it, Envoy
	// ignores them).
	LocalityWeighted bool
}

// HealthCheck is an active health check: exactly one of HTTPPath (with
// ExpectedStatuses and Host), GRPC (with GRPCService) and TCP.
type HealthCheck struct {
	Interval, Timeout, Jitter            time.Duration
	UnhealthyThreshold, HealthyThreshold uint32
	HTTPPath, Host                       string
	ExpectedStatuses                     []uint32
	GRPC                                 bool
	GRPCService                          string
	TCP                                  bool
}

func (h *HealthCheck) proto() *corev3.HealthCheck {
	hc := &corev3.HealthCheck{
		Timeout:  durationpb.New(h.Timeout),
		Interval: durationpb.New(h.Interval),
		// Envoy checks a cluster that has had no traffic yet only every
		// 60 s by default: an instance that recovers would wait that long.
		// The policy's interval is the interval.
		NoTrafficInterval:  durationpb.New(h.Interval),
		UnhealthyThreshold: wrapperspb.UInt32(h.UnhealthyThreshold),
		HealthyThreshold:   wrapperspb.UInt32(h.HealthyThreshold),
	}
	if h.Jitter > 0 {
		hc.IntervalJitter = durationpb.New(h.Jitter)
	}
	switch {
	case h.GRPC:
		hc.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{ServiceName: h.GRPCService}}
	case h.TCP:
		hc.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
	default:
		http := &corev3.HealthCheck_HttpHealthCheck{Path: h.HTTPPath, Host: h.Host}
		// Envoy's ranges are [start, end): consecutive statuses make one.
		for _, c := range h.ExpectedStatuses {
			if n := len(http.ExpectedStatuses); n > 0 && http.ExpectedStatuses[n-1].End == int64(c) {
				http.ExpectedStatuses[n-1].End++
				continue
			}
			http.ExpectedStatuses = append(http.ExpectedStatuses, &typev3.Int64Range{Start: int64(c), End: int64(c) + 1})
		}
		hc.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: http}
	}
	return hc
}

// SlowStart is Envoy's slow start of a cluster's new endpoints.
type SlowStart struct {
	Window           time.Duration
	Aggression       float64
	MinWeightPercent float64
}

// slowStartAggressionKey is the runtime key of the aggression, which Envoy
// reads the value from when its runtime sets it.
const slowStartAggressionKey = "sluice.slow_start_aggression"

func (s *SlowStart) config() *clusterv3.Cluster_SlowStartConfig {
	if s == nil {
		return nil
	}
	return &clusterv3.Cluster_SlowStartConfig{
		SlowStartWindow:  durationpb.New(s.Window),
		Aggression:       &corev3.RuntimeDouble{DefaultValue: s.Aggression, RuntimeKey: slowStartAggressionKey},
		MinWeightPercent: &typev3.Percent{Value: s.MinWeightPercent},
	}
}

// LB is a load-balancing algorithm with its settings.
type LB struct {
	Policy clusterv3.Cluster_LbPolicy
	// ChoiceCount is LEAST_REQUEST's choice_count; 0 leaves it unset.
	ChoiceCount uint32
	// MinRingSize and MaxRingSize configure RING_HASH; 0 leaves them unset.
	MinRingSize, MaxRingSize uint64
}

// Thresholds are default-priority circuit-breaker limits. A zero count
// leaves that limit at Envoy's default.
type Thresholds struct {
	MaxConnections     uint32
	MaxPendingRequests uint32
	MaxRequests        uint32
	MaxRetries         uint32
	// RetryBudget, when set, bounds concurrent retries instead of
	// MaxRetries.
	RetryBudget *RetryBudget
}

// RetryBudget caps concurrent retries to a share of the active requests.
type RetryBudget struct {
	BudgetPercent       float64
	MinRetryConcurrency uint32
}

// Outlier configures outlier detection. Every form it does not turn on is
// turned off explicitly: Envoy enables the consecutive-5xx and success-rate
// forms by default, and gRPC the success-rate form.
type Outlier struct {
	// Consecutive ejects a host after that many consecutive 5xx or gateway
	// errors; 0 turns the form off, nil leaves its fields out altogether
	// (for clients that ignore them).
	Consecutive *uint32
	// FailurePercent ejects a host whose error rate over an interval
	// reaches it; 0 turns the form off.
	FailurePercent              uint32
	FailurePercentMinHosts      uint32
	FailurePercentRequestVolume uint32
	Interval                    time.Duration
	BaseEjectionTime            time.Duration
	MaxEjectionPercent          uint32
}

// ServiceCluster is an EDS cluster (see EDSCluster) with a policy.
func ServiceCluster(name string, connectTimeout time.Duration, p ClusterPolicy) *clusterv3.Cluster {
	c := EDSCluster(name, connectTimeout)
	c.LbPolicy = p.LB.Policy
	switch p.LB.Policy {
	case clusterv3.Cluster_ROUND_ROBIN:
		if p.SlowStart != nil {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
				SlowStartConfig: p.SlowStart.config(),
			}}
		}
	case clusterv3.Cluster_LEAST_REQUEST:
		if p.LB.ChoiceCount != 0 || p.SlowStart != nil {
			lr := &clusterv3.Cluster_LeastRequestLbConfig{SlowStartConfig: p.SlowStart.config()}
			if p.LB.ChoiceCount != 0 {
				lr.ChoiceCount = wrapperspb.UInt32(p.LB.ChoiceCount)
			}
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: lr}
		}
	case clusterv3.Cluster_RING_HASH:
		rh := &clusterv3.Cluster_RingHashLbConfig{HashFunction: clusterv3.Cluster_RingHashLbConfig_XX_HASH}
		if p.LB.MinRingSize != 0 {
			rh.MinimumRingSize = wrapperspb.UInt64(p.LB.MinRingSize)
		}
		if p.LB.MaxRingSize != 0 {
			rh.MaximumRingSize = wrapperspb.UInt64(p.LB.MaxRingSize)
		}
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: rh}
	}
	if p.HealthCheck != nil {
		c.HealthChecks = []*corev3.HealthCheck{p.HealthCheck.proto()}
		if p.HealthCheck.GRPC {
			// Envoy refuses gRPC health checks of a cluster it does not
			// speak HTTP/2 to; a service answering them is a gRPC server,
			// which speaks HTTP/2 anyway.
			c = WithUpstream(c, UpstreamHTTP2)
		}
	}
	if p.HealthyPanicThreshold != nil || p.LocalityWeighted {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
		if p.HealthyPanicThreshold != nil {
			c.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: *p.HealthyPanicThreshold}
		}
		if p.LocalityWeighted {
			c.CommonLbConfig.LocalityConfigSpecifier = &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
				LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
			}
		}
	}
	if p.CircuitBreaker != nil {
		c.CircuitBreakers = CircuitBreakers(*p.CircuitBreaker)
	}
	if p.OutlierDetection != nil {
		c.OutlierDetection = OutlierDetection(*p.OutlierDetection)
	}
	return c
}

// CircuitBreakers sets the default-priority thresholds.
func CircuitBreakers(t Thresholds) *clusterv3.CircuitBreakers {
	th := &clusterv3.CircuitBreakers_Thresholds{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     optUInt32(t.MaxConnections),
		MaxPendingRequests: optUInt32(t.MaxPendingRequests),
		MaxRequests:        optUInt32(t.MaxRequests),
		MaxRetries:         optUInt32(t.MaxRetries),
	}
	if b := t.RetryBudget; b != nil {
		th.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: b.BudgetPercent},
			MinRetryConcurrency: wrapperspb.UInt32(b.MinRetryConcurrency),
		}
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
}

// OutlierDetection builds a cluster's outlier detection.
func OutlierDetection(o Outlier) *clusterv3.OutlierDetection {
	od := &clusterv3.OutlierDetection{
		Interval:           durationpb.New(o.Interval),
		BaseEjectionTime:   durationpb.New(o.BaseEjectionTime),
		MaxEjectionPercent: wrapperspb.UInt32(o.MaxEjectionPercent),
		// Not a form sluice offers; Envoy and gRPC both enable it unless
		// told otherwise.
		EnforcingSuccessRate: wrapperspb.UInt32(0),
	}
	if o.Consecutive != nil {
		if n := *o.Consecutive; n > 0 {
			od.Consecutive_5Xx = wrapperspb.UInt32(n)
			od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(100)
			// Gateway errors (502, 503, 504 and connection failures) are
			// 5xx too; counting them on their own makes the intent explicit
			// and keeps ejecting if a later Envoy splits local-origin errors.
			od.ConsecutiveGatewayFailure = wrapperspb.UInt32(n)
			od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
		} else {
			od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
			od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(0)
		}
	}
	if o.FailurePercent > 0 {
		od.FailurePercentageThreshold = wrapperspb.UInt32(o.FailurePercent)
		od.EnforcingFailurePercentage = wrapperspb.UInt32(100)
		od.FailurePercentageMinimumHosts = wrapperspb.UInt32(o.FailurePercentMinHosts)
		od.FailurePercentageRequestVolume = wrapperspb.UInt32(o.FailurePercentRequestVolume)
	}
	return od
}

// Upstream is the HTTP protocol a cluster speaks to its hosts.
type Upstream int

// Upstream protocols.
const (
	// UpstreamHTTP1 is Envoy's default.
	UpstreamHTTP1 Upstream = iota
	// UpstreamHTTP2 is HTTP/2 with prior knowledge, as gRPC services need.
	UpstreamHTTP2
	// UpstreamAsDownstream forwards with the protocol the request came
	// in with (an application serving both HTTP/1.1 and gRPC).
	UpstreamAsDownstream
)

// AddressCluster is a cluster of fixed addresses (typ STATIC for IP
// addresses, STRICT_DNS for host names) in one locality.
func AddressCluster(name string, connectTimeout time.Duration, typ clusterv3.Cluster_DiscoveryType, endpoints []Endpoint, proto Upstream) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment:       LoadAssignment(name, []Locality{{Endpoints: endpoints}}),
	}
	return WithUpstream(c, proto)
}

// WithUpstream returns c speaking proto to its hosts.
func WithUpstream(c *clusterv3.Cluster, proto Upstream) *clusterv3.Cluster {
	var opts *httpv3.HttpProtocolOptions
	switch proto {
	case UpstreamHTTP2:
		opts = &httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			}},
		}
	case UpstreamAsDownstream:
		opts = &httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			}},
		}
	default:
		return c
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptionsKey: MustAny(opts)}
	return c
}

func optUInt32(n uint32) *wrapperspb.UInt32Value {
	if n == 0 {
		return nil
	}
	return wrapperspb.UInt32(n)
}
