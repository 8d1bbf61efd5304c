package translator_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// grpcStatuses are the retry_on values gRPC's xDS client reads
// (xdsresource.generateRetryConfig in grpc-go); it ignores the others.
var grpcStatuses = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

// TestTranslateGRPCForms checks every gRPC case against what gRPC-Go's xDS
// client (v1.85, internal/xds/xdsclient/xdsresource) accepts and honours:
// no RANDOM or MAGLEV (NACKed), least_request choice_count ≥ 2, XX_HASH
// rings, only max_requests of the circuit breakers, outlier detection only
// in the failure-percentage form with success-rate explicitly off (gRPC
// turns it on when enforcing_success_rate is unset), no route timeout or
// per_try_timeout (ignored; max_stream_duration instead), retry_on made of
// gRPC status names with num_retries ≥ 1, and hash policies it supports.
func TestTranslateGRPCForms(t *testing.T) {
	for _, c := range loadCases(t) {
		if c.input.Proxy.Kind != translator.KindGRPC {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			res := translate(t, c.input)
			for _, r := range res.Resources[resource.ClusterType] {
				cl := r.(*clusterv3.Cluster)
				switch cl.GetLbPolicy() {
				case clusterv3.Cluster_ROUND_ROBIN:
				case clusterv3.Cluster_LEAST_REQUEST:
					if cc := cl.GetLeastRequestLbConfig().GetChoiceCount(); cc != nil && cc.GetValue() < 2 {
						t.Errorf("%s: choice_count %d < 2", cl.GetName(), cc.GetValue())
					}
				case clusterv3.Cluster_RING_HASH:
					if cl.GetRingHashLbConfig().GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
						t.Errorf("%s: ring hash function %v", cl.GetName(), cl.GetRingHashLbConfig().GetHashFunction())
					}
				default:
					t.Errorf("%s: lb_policy %v, which gRPC NACKs", cl.GetName(), cl.GetLbPolicy())
				}
				for _, th := range cl.GetCircuitBreakers().GetThresholds() {
					if th.GetMaxConnections() != nil || th.GetMaxPendingRequests() != nil || th.GetMaxRetries() != nil || th.GetRetryBudget() != nil {
						t.Errorf("%s: circuit breaker fields gRPC ignores: %v", cl.GetName(), th)
					}
				}
				if od := cl.GetOutlierDetection(); od != nil {
					if od.GetConsecutive_5Xx() != nil || od.GetConsecutiveGatewayFailure() != nil || od.GetEnforcingConsecutive_5Xx() != nil {
						t.Errorf("%s: consecutive outlier fields gRPC ignores: %v", cl.GetName(), od)
					}
					if od.GetEnforcingSuccessRate() == nil || od.GetEnforcingSuccessRate().GetValue() != 0 {
						t.Errorf("%s: success-rate ejection not turned off: %v", cl.GetName(), od)
					}
					if od.GetEnforcingFailurePercentage().GetValue() == 0 {
						t.Errorf("%s: outlier detection that does nothing for gRPC: %v", cl.GetName(), od)
					}
				}
			}
			for _, r := range res.Resources[resource.RouteType] {
				for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
					if len(vh.GetRoutes()) == 0 || vh.GetRoutes()[len(vh.GetRoutes())-1].GetMatch().GetPrefix() != "/" {
						t.Errorf("%s: no catch-all route last", vh.GetName())
					}
					for _, rt := range vh.GetRoutes() {
						checkGRPCRoute(t, vh.GetName(), rt)
					}
				}
			}
		})
	}
}

func checkGRPCRoute(t *testing.T, vhost string, rt *routev3.Route) {
	t.Helper()
	a := rt.GetRoute()
	// gRPC ignores the route timeout; a policy's timeout becomes the stream
	// deadline (max_stream_duration), the built-in one is not sent.
	if a.GetTimeout() != nil {
		t.Errorf("%s/%s: route timeout, which gRPC ignores: %v", vhost, rt.GetName(), a)
	}
	if msd := a.GetMaxStreamDuration(); msd != nil && msd.GetMaxStreamDuration().AsDuration() <= 0 {
		t.Errorf("%s/%s: empty stream deadline: %v", vhost, rt.GetName(), a)
	}
	for _, h := range rt.GetMatch().GetHeaders() {
		if strings.HasPrefix(h.GetName(), ":") {
			t.Errorf("%s/%s: matches pseudo-header %s, which gRPC never sees", vhost, rt.GetName(), h.GetName())
		}
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		if rp.GetPerTryTimeout() != nil || rp.GetNumRetries().GetValue() < 1 {
			t.Errorf("%s/%s: retry policy %v", vhost, rt.GetName(), rp)
		}
		for _, on := range strings.Split(rp.GetRetryOn(), ",") {
			if !slices.Contains(grpcStatuses, on) {
				t.Errorf("%s/%s: retry_on %q is not a gRPC status", vhost, rt.GetName(), on)
			}
		}
	}
	for _, hp := range a.GetHashPolicy() {
		if hp.GetHeader() == nil && hp.GetFilterState().GetKey() != "io.grpc.channel_id" {
			t.Errorf("%s/%s: hash policy gRPC ignores: %v", vhost, rt.GetName(), hp)
		}
	}
}

// TestTranslateEnvoyRoutesFollowVariants checks that every Envoy virtual
// host has exactly the service's route variants, in order, each with the
// variant's timeout and retry count.
func TestTranslateEnvoyRoutesFollowVariants(t *testing.T) {
	for _, c := range loadCases(t) {
		if c.input.Proxy.Kind != translator.KindEnvoy {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			res := translate(t, c.input)
			vhosts := map[string]*routev3.VirtualHost{}
			for _, r := range res.Resources[resource.RouteType] {
				if r.(*routev3.RouteConfiguration).GetName() != translator.OutboundRouteName {
					continue
				}
				for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
					vhosts[vh.GetName()] = vh
				}
			}
			for _, svc := range c.input.Catalog.Services {
				vh := vhosts[svc.Name]
				variants := c.input.Policy.RouteVariants(svc.Name)
				if len(vh.GetRoutes()) != len(variants) {
					t.Fatalf("%s: %d routes for %d variants", svc.Name, len(vh.GetRoutes()), len(variants))
				}
				for i, v := range variants {
					rt := vh.GetRoutes()[i]
					if rt.GetName() != v.Name || rt.GetRoute().GetTimeout().AsDuration() != v.Timeout ||
						rt.GetRoute().GetRetryPolicy().GetNumRetries().GetValue() != v.Retry.Attempts {
						t.Errorf("%s route %d = %s (timeout %v, retries %d), want variant %s (%v, %d)", svc.Name, i, rt.GetName(),
							rt.GetRoute().GetTimeout().AsDuration(), rt.GetRoute().GetRetryPolicy().GetNumRetries().GetValue(), v.Name, v.Timeout, v.Retry.Attempts)
					}
				}
			}
		})
	}
}

// TestTranslatePerService: a service's resources depend only on that
// service and its own policy, so changing another service's policy leaves
// them byte for byte alone.
func TestTranslatePerService(t *testing.T) {
	cat := sources.Catalog{Services: []sources.CatalogService{
		{Name: "a", Endpoints: []sources.Endpoint{{Instance: sources.Instance{Address: "10.0.0.1", Port: 80, Weight: 1, Health: sources.HealthHealthy}}}},
		{Name: "b", Endpoints: []sources.Endpoint{{Instance: sources.Instance{Address: "10.0.0.2", Port: 80, Weight: 1, Health: sources.HealthHealthy}}}},
	}}
	load := func(doc string) *policy.Set {
		set, diags := policy.Load([]policy.File{{Name: "p.yaml", Data: []byte(doc)}})
		if set == nil {
			t.Fatalf("policy: %v", diags)
		}
		return set
	}
	const svcA = "apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: a}\nspec: {timeout: 3s, loadBalancer: random}\n"
	before := load(svcA)
	after := load(svcA + "---\napiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: b}\nspec: {timeout: 1s, retry: {attempts: 2}}\n")
	for _, kind := range []translator.ProxyKind{translator.KindEnvoy, translator.KindGRPC} {
		p := translator.Proxy{Kind: kind, Role: translator.RoleSidecar}
		r1 := translate(t, translator.Input{Catalog: cat, Policy: before, Proxy: p})
		r2 := translate(t, translator.Input{Catalog: cat, Policy: after, Proxy: p})
		if !proto.Equal(named(r1, resource.ClusterType, "a"), named(r2, resource.ClusterType, "a")) {
			t.Errorf("%s: cluster a changed with b's policy", kind)
		}
		if kind == translator.KindGRPC {
			if !proto.Equal(named(r1, resource.RouteType, "a"), named(r2, resource.RouteType, "a")) {
				t.Errorf("gRPC: route configuration a changed with b's policy")
			}
			if proto.Equal(named(r1, resource.RouteType, "b"), named(r2, resource.RouteType, "b")) {
				t.Errorf("gRPC: route configuration b did not change with its policy")
			}
			continue
		}
		vh := func(r *translator.Result, name string) proto.Message {
			for _, v := range named(r, resource.RouteType, translator.OutboundRouteName).(*routev3.RouteConfiguration).GetVirtualHosts() {
				if v.GetName() == name {
					return v
				}
			}
			return nil
		}
		if !proto.Equal(vh(r1, "a"), vh(r2, "a")) {
			t.Errorf("envoy: virtual host a changed with b's policy")
		}
		if got := vh(r2, "b").(*routev3.VirtualHost).GetRoutes()[0].GetRoute().GetTimeout().AsDuration(); got != time.Second {
			t.Errorf("envoy: b's timeout = %v, want 1s", got)
		}
	}
}

func named(r *translator.Result, typ resource.Type, name string) types.Resource {
	for _, res := range r.Resources[typ] {
		if cache.GetResourceName(res) == name {
			return res
		}
	}
	return nil
}

// TestGRPCStreamDeadlineOnlyWhenSet: a gRPC client gets a stream deadline
// from a timeout a policy sets, and none from the built-in default, which
// would cut long-lived streams.
func TestGRPCStreamDeadlineOnlyWhenSet(t *testing.T) {
	catalog := sources.Merge(map[string]sources.State{"file": {Services: []sources.Service{{Name: "svc",
		Instances: []sources.Instance{{Address: "10.0.0.1", Port: 80, Health: sources.HealthHealthy, Weight: 1}}}}}})
	deadline := func(pol *policy.Set) *routev3.RouteAction_MaxStreamDuration {
		res, err := translator.New().Translate(translator.Input{Catalog: catalog, Policy: pol, Proxy: translator.Proxy{Kind: translator.KindGRPC}})
		if err != nil {
			t.Fatal(err)
		}
		rc := res.Resources[resource.RouteType][0].(*routev3.RouteConfiguration)
		return rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetMaxStreamDuration()
	}
	if d := deadline(nil); d != nil {
		t.Errorf("built-in timeout sent to gRPC as %v", d)
	}
	set, diags := policy.Load([]policy.File{{Name: "p.yaml", Data: []byte("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: svc}\nspec: {timeout: 3s}\n")}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	if d := deadline(set); d.GetMaxStreamDuration().AsDuration() != 3*time.Second {
		t.Errorf("policy timeout 3s sent as %v", d)
	}
}

// TestTranslateSubsets: each subset is a cluster balancing like its
// service, with a load assignment of the instances it selects; a subset
// without instances is reported (a warning, the service is still served)
// and left out of the splits, whose share goes to the other subsets.
func TestTranslateSubsets(t *testing.T) {
	for _, c := range loadCases(t) {
		if !strings.HasSuffix(c.name, "-policy-release") {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			res := translate(t, c.input)
			clusters := map[string]*clusterv3.Cluster{}
			for _, r := range res.Resources[resource.ClusterType] {
				clusters[cache.GetResourceName(r)] = r.(*clusterv3.Cluster)
			}
			for _, name := range []string{"reviews", "reviews|v1", "reviews|v2", "reviews|v3", "ratings|v1", "ratings|v3"} {
				cl := clusters[name]
				if cl == nil || cl.GetEdsClusterConfig().GetServiceName() != name {
					t.Fatalf("cluster %s missing or not its own EDS service: %v", name, cl)
				}
				if cl.GetLbPolicy() != clusters["reviews"].GetLbPolicy() || !proto.Equal(cl.GetCircuitBreakers(), clusters["reviews"].GetCircuitBreakers()) {
					t.Errorf("cluster %s does not balance like its service", name)
				}
			}
			members := map[string][]string{}
			for _, r := range res.Resources[resource.EndpointType] {
				cla := r.(*endpointv3.ClusterLoadAssignment)
				for _, l := range cla.GetEndpoints() {
					for _, e := range l.GetLbEndpoints() {
						members[cla.GetClusterName()] = append(members[cla.GetClusterName()], e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
					}
				}
			}
			for name, want := range map[string]string{"reviews": "10.0.1.1 10.0.1.2 10.0.1.3", "reviews|v1": "10.0.1.1 10.0.1.2", "reviews|v2": "10.0.1.3", "reviews|v3": "", "ratings|v1": "10.0.2.1", "ratings|v3": ""} {
				if got := strings.Join(members[name], " "); got != want {
					t.Errorf("load assignment %s holds %q, want %q", name, got, want)
				}
			}
			var warnings []string
			for _, d := range res.Diagnostics {
				if d.Severity == sources.SeverityWarning && d.Field == "spec.subsets" {
					warnings = append(warnings, d.Message)
				}
			}
			if len(warnings) != 2 || !strings.Contains(warnings[0], "service ratings: no instance is in subset v3") || !strings.Contains(warnings[1], "service reviews: no instance is in subset v3") {
				t.Errorf("warnings %q, want one per service about its empty v3", warnings)
			}
		})
	}
}
