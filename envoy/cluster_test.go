package envoy_test

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/sluice-mesh/sluice/envoy"
)

func TestServiceClusterLB(t *testing.T) {
	lr := envoy.ServiceCluster("a", time.Second, envoy.ClusterPolicy{LB: envoy.LB{Policy: clusterv3.Cluster_LEAST_REQUEST, ChoiceCount: 3}})
	validate(t, lr)
	if lr.GetLbPolicy() != clusterv3.Cluster_LEAST_REQUEST || lr.GetLeastRequestLbConfig().GetChoiceCount().GetValue() != 3 {
		t.Errorf("least_request cluster: %v", lr)
	}
	rh := envoy.ServiceCluster("b", time.Second, envoy.ClusterPolicy{LB: envoy.LB{Policy: clusterv3.Cluster_RING_HASH, MinRingSize: 16, MaxRingSize: 64}})
	validate(t, rh)
	cfg := rh.GetRingHashLbConfig()
	if cfg.GetMinimumRingSize().GetValue() != 16 || cfg.GetMaximumRingSize().GetValue() != 64 || cfg.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
		t.Errorf("ring_hash cluster: %v", rh)
	}
	rnd := envoy.ServiceCluster("c", time.Second, envoy.ClusterPolicy{LB: envoy.LB{Policy: clusterv3.Cluster_RANDOM}})
	validate(t, rnd)
	if rnd.GetLbPolicy() != clusterv3.Cluster_RANDOM || rnd.GetLbConfig() != nil || rnd.GetCircuitBreakers() != nil || rnd.GetOutlierDetection() != nil {
		t.Errorf("random cluster: %v", rnd)
	}
}

func TestCircuitBreakers(t *testing.T) {
	cb := envoy.CircuitBreakers(envoy.Thresholds{MaxConnections: 1, MaxPendingRequests: 2, MaxRequests: 3, MaxRetries: 4,
		RetryBudget: &envoy.RetryBudget{BudgetPercent: 12.5, MinRetryConcurrency: 5}})
	validate(t, cb)
	th := cb.GetThresholds()
	if len(th) != 1 || th[0].GetPriority() != corev3.RoutingPriority_DEFAULT {
		t.Fatalf("thresholds: %v", th)
	}
	got := th[0]
	if got.GetMaxConnections().GetValue() != 1 || got.GetMaxPendingRequests().GetValue() != 2 || got.GetMaxRequests().GetValue() != 3 || got.GetMaxRetries().GetValue() != 4 {
		t.Errorf("thresholds: %v", got)
	}
	if got.GetRetryBudget().GetBudgetPercent().GetValue() != 12.5 || got.GetRetryBudget().GetMinRetryConcurrency().GetValue() != 5 {
		t.Errorf("retry budget: %v", got.GetRetryBudget())
	}
	// Zero counts stay unset, so Envoy's (or gRPC's) defaults apply.
	only := envoy.CircuitBreakers(envoy.Thresholds{MaxRequests: 7}).GetThresholds()[0]
	if only.GetMaxConnections() != nil || only.GetMaxPendingRequests() != nil || only.GetMaxRetries() != nil || only.GetRetryBudget() != nil || only.GetMaxRequests().GetValue() != 7 {
		t.Errorf("max_requests only: %v", only)
	}
}

func TestOutlierDetection(t *testing.T) {
	n := func(v uint32) *uint32 { return &v }
	base := envoy.Outlier{Interval: time.Second, BaseEjectionTime: time.Minute, MaxEjectionPercent: 20}
	cases := []struct {
		name                 string
		consecutive          *uint32
		percent              uint32
		want5xx, wantEnf5xx  int64 // -1: unset
		wantGw, wantEnfGw    int64
		wantPercent, wantEFP int64
	}{
		{"consecutive", n(3), 0, 3, 100, 3, 100, -1, -1},
		{"consecutive off, percent", n(0), 40, -1, 0, -1, 0, 40, 100},
		{"no consecutive fields (gRPC)", nil, 40, -1, -1, -1, -1, 40, 100},
		{"both", n(5), 50, 5, 100, 5, 100, 50, 100},
	}
	val := func(v interface{ GetValue() uint32 }, isNil bool) int64 {
		if isNil {
			return -1
		}
		return int64(v.GetValue())
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := base
			o.Consecutive, o.FailurePercent, o.FailurePercentMinHosts, o.FailurePercentRequestVolume = c.consecutive, c.percent, 3, 10
			od := envoy.OutlierDetection(o)
			validate(t, od)
			got := []int64{
				val(od.GetConsecutive_5Xx(), od.GetConsecutive_5Xx() == nil),
				val(od.GetEnforcingConsecutive_5Xx(), od.GetEnforcingConsecutive_5Xx() == nil),
				val(od.GetConsecutiveGatewayFailure(), od.GetConsecutiveGatewayFailure() == nil),
				val(od.GetEnforcingConsecutiveGatewayFailure(), od.GetEnforcingConsecutiveGatewayFailure() == nil),
				val(od.GetFailurePercentageThreshold(), od.GetFailurePercentageThreshold() == nil),
				val(od.GetEnforcingFailurePercentage(), od.GetEnforcingFailurePercentage() == nil),
			}
			want := []int64{c.want5xx, c.wantEnf5xx, c.wantGw, c.wantEnfGw, c.wantPercent, c.wantEFP}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("field %d = %d, want %d (%v)", i, got[i], want[i], od)
				}
			}
			// Success-rate ejection is always off: both Envoy and gRPC turn it
			// on when enforcing_success_rate is unset.
			if od.GetEnforcingSuccessRate() == nil || od.GetEnforcingSuccessRate().GetValue() != 0 {
				t.Errorf("enforcing_success_rate = %v, want 0", od.GetEnforcingSuccessRate())
			}
			if od.GetInterval().AsDuration() != time.Second || od.GetBaseEjectionTime().AsDuration() != time.Minute || od.GetMaxEjectionPercent().GetValue() != 20 {
				t.Errorf("timing: %v", od)
			}
		})
	}
}

func TestAddressCluster(t *testing.T) {
	c := envoy.AddressCluster("collector", time.Second, clusterv3.Cluster_STRICT_DNS,
		[]envoy.Endpoint{{Address: "otel.example.com", Port: 4317, Health: corev3.HealthStatus_UNKNOWN}}, envoy.UpstreamHTTP2)
	validate(t, c)
	if c.GetType() != clusterv3.Cluster_STRICT_DNS || len(c.GetLoadAssignment().GetEndpoints()) != 1 {
		t.Errorf("cluster: %v", c)
	}
	opts := &httpv3.HttpProtocolOptions{}
	if err := c.GetTypedExtensionProtocolOptions()[envoy.HTTPProtocolOptionsKey].UnmarshalTo(opts); err != nil || opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("no HTTP/2 protocol options: %v (%v)", c, err)
	}
	local := envoy.AddressCluster("local", time.Second, clusterv3.Cluster_STATIC, []envoy.Endpoint{{Address: "127.0.0.1", Port: 8080}}, envoy.UpstreamAsDownstream)
	validate(t, local)
	opts = &httpv3.HttpProtocolOptions{}
	if err := local.GetTypedExtensionProtocolOptions()[envoy.HTTPProtocolOptionsKey].UnmarshalTo(opts); err != nil || opts.GetUseDownstreamProtocolConfig() == nil {
		t.Errorf("local cluster does not use the downstream protocol: %v (%v)", local, err)
	}
	plain := envoy.AddressCluster("plain", time.Second, clusterv3.Cluster_STATIC, []envoy.Endpoint{{Address: "127.0.0.1", Port: 8080}}, envoy.UpstreamHTTP1)
	validate(t, plain)
	if plain.GetTypedExtensionProtocolOptions() != nil {
		t.Errorf("HTTP/1 cluster has protocol options: %v", plain)
	}
}
