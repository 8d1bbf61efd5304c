package translator_test

import (
	"path/filepath"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/translator"
)

// listenerHCMs unpacks the connection manager of every listener.
func listenerHCMs(t *testing.T, res *translator.Result) map[string]*hcmv3.HttpConnectionManager {
	t.Helper()
	out := map[string]*hcmv3.HttpConnectionManager{}
	for _, r := range res.Resources[resource.ListenerType] {
		l := r.(*listenerv3.Listener)
		a := l.GetApiListener().GetApiListener()
		if a == nil {
			a = l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
		}
		m := &hcmv3.HttpConnectionManager{}
		if err := a.UnmarshalTo(m); err != nil {
			t.Fatalf("listener %s: %v", l.GetName(), err)
		}
		out[l.GetName()] = m
	}
	return out
}

func rateLimitOf(t *testing.T, a *anypb.Any) *localratelimitv3.LocalRateLimit {
	t.Helper()
	if a == nil {
		return nil
	}
	rl := &localratelimitv3.LocalRateLimit{}
	if err := a.UnmarshalTo(rl); err != nil {
		t.Fatalf("not a LocalRateLimit: %v", err)
	}
	return rl
}

func checkBucket(t *testing.T, where string, rl *localratelimitv3.LocalRateLimit, rps, burst uint32) {
	t.Helper()
	tb := rl.GetTokenBucket()
	if tb.GetMaxTokens() != burst || tb.GetTokensPerFill().GetValue() != rps || tb.GetFillInterval().AsDuration() != time.Second {
		t.Errorf("%s: token bucket %v, want %d/s up to %d", where, tb, rps, burst)
	}
	if rl.GetFilterEnabled().GetDefaultValue().GetNumerator() != 100 || rl.GetFilterEnforced().GetDefaultValue().GetNumerator() != 100 ||
		rl.GetStatus().GetCode() != 429 || rl.GetEnableXRatelimitHeaders().String() != "DRAFT_VERSION_03" {
		t.Errorf("%s: not enabled and enforced with 429 and x-ratelimit headers: %v", where, rl)
	}
}

// TestTranslateSidecarRateLimitAndTracing: a sidecar of user-service finds
// the token buckets on its inbound listener (the service's on the virtual
// host, a route's own on that route, the filter off where a route opts
// out) and the OpenTelemetry tracer on both of its connection managers,
// with its service name, its service's sampling and the mesh's tags.
func TestTranslateSidecarRateLimitAndTracing(t *testing.T) {
	in := loadInput(t, filepath.Join(inDir, "envoy-policy-ratelimit-sidecar.yaml"))
	res := translate(t, in)
	hcms := listenerHCMs(t, res)
	if len(hcms) != 2 {
		t.Fatalf("listeners %v, want inbound and outbound", hcms)
	}
	for name, m := range hcms {
		tr := m.GetTracing()
		if tr.GetProvider().GetName() != envoy.OpenTelemetryTracerName || tr.GetRandomSampling().GetValue() != 50 || len(tr.GetCustomTags()) != 2 {
			t.Errorf("%s: tracing %v", name, tr)
			continue
		}
		otel := &tracev3.OpenTelemetryConfig{}
		if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(otel); err != nil {
			t.Fatal(err)
		}
		if otel.GetServiceName() != "user-service" || otel.GetGrpcService().GetEnvoyGrpc().GetClusterName() != translator.TracingClusterName {
			t.Errorf("%s: OpenTelemetry config %v", name, otel)
		}
	}
	collector, _ := named(res, resource.ClusterType, translator.TracingClusterName).(*clusterv3.Cluster)
	if collector.GetEdsClusterConfig().GetServiceName() != "otel-collector" || collector.GetTypedExtensionProtocolOptions() == nil {
		t.Errorf("collector cluster %v, want HTTP/2 fed by otel-collector's endpoints", collector)
	}

	filters := hcms[translator.InboundListenerName].GetHttpFilters()
	if len(filters) != 2 || filters[0].GetName() != envoy.LocalRateLimitName {
		t.Fatalf("inbound filters %v, want the local rate limit before the router", filters)
	}
	if f := hcms[translator.OutboundListenerName].GetHttpFilters(); len(f) != 1 {
		t.Errorf("a sidecar's outbound side enforces rate limits: %v", f)
	}
	rc := named(res, resource.RouteType, translator.InboundRouteName).(*routev3.RouteConfiguration)
	vh := rc.GetVirtualHosts()[0]
	checkBucket(t, "virtual host", rateLimitOf(t, vh.GetTypedPerFilterConfig()[envoy.LocalRateLimitName]), 100, 200)
	want := map[string]struct{ rps, burst uint32 }{"routes[0]": {10, 10}, "routes[1]": {1, 5}}
	for _, r := range vh.GetRoutes() {
		if r.GetRoute().GetCluster() != translator.LocalClusterName(8080) {
			t.Errorf("inbound route %s goes to %s", r.GetName(), r.GetRoute().GetCluster())
		}
		cfg := r.GetTypedPerFilterConfig()[envoy.LocalRateLimitName]
		switch w, own := want[r.GetName()]; {
		case own:
			checkBucket(t, r.GetName(), rateLimitOf(t, cfg), w.rps, w.burst)
		case r.GetName() == "mesh.routes[0]": // /healthz: rateLimit {disabled: true}
			fc := &routev3.FilterConfig{}
			if cfg == nil || cfg.UnmarshalTo(fc) != nil || !fc.GetDisabled() {
				t.Errorf("%s: filter not disabled: %v", r.GetName(), cfg)
			}
		case cfg != nil:
			t.Errorf("%s shares the service's bucket but has its own config %v", r.GetName(), cfg)
		}
	}
}

// TestTranslateGatewayRateLimits: a gateway enforces each service's limits
// on its routes to the service; the retry variants of a route with its own
// limit all select one descriptor bucket.
func TestTranslateGatewayRateLimits(t *testing.T) {
	res := translate(t, loadInput(t, filepath.Join(inDir, "envoy-policy-ratelimit-gateway.yaml")))
	hcms := listenerHCMs(t, res)
	if f := hcms[translator.OutboundListenerName].GetHttpFilters(); len(f) != 2 || f[0].GetName() != envoy.LocalRateLimitName {
		t.Fatalf("gateway filters %v, want the local rate limit before the router", f)
	}
	if _, ok := hcms[translator.InboundListenerName]; ok {
		t.Errorf("a gateway got an inbound listener")
	}
	for _, vh := range named(res, resource.RouteType, translator.OutboundRouteName).(*routev3.RouteConfiguration).GetVirtualHosts() {
		if vh.GetName() != "user-service" {
			continue
		}
		rl := rateLimitOf(t, vh.GetTypedPerFilterConfig()[envoy.LocalRateLimitName])
		checkBucket(t, "user-service", rl, 100, 200)
		if len(rl.GetDescriptors()) != 2 || rl.GetAlwaysConsumeDefaultTokenBucket().GetValue() {
			t.Fatalf("descriptors %v", rl)
		}
		keys := map[string]int{}
		for _, r := range vh.GetRoutes() {
			for _, l := range r.GetRoute().GetRateLimits() {
				keys[l.GetActions()[0].GetGenericKey().GetDescriptorValue()]++
			}
		}
		// routes[0] retries: its grpc, idempotent and no-retry variants
		// share its bucket. routes[1] (POST, no retries) is one route.
		if keys["routes[0]"] != 3 || keys["routes[1]"] != 1 || len(keys) != 2 {
			t.Errorf("descriptor keys per route %v", keys)
		}
		return
	}
	t.Fatal("no user-service virtual host")
}

// TestTranslateGRPCHasNoRateLimitOrTracing: gRPC NACKs a rate limit filter
// not marked optional, and has no tracer: no gRPC result carries either.
// The only filters of its connection managers are the router and, for
// services that inject faults, the fault filter before it.
func TestTranslateGRPCHasNoRateLimitOrTracing(t *testing.T) {
	for _, c := range loadCases(t) {
		if c.input.Proxy.Kind != translator.KindGRPC {
			continue
		}
		res := translate(t, c.input)
		for name, m := range listenerHCMs(t, res) {
			fs := m.GetHttpFilters()
			if m.GetTracing() != nil || fs[len(fs)-1].GetName() != envoy.RouterFilterName || len(fs) > 2 || len(fs) == 2 && fs[0].GetName() != envoy.FaultFilterName {
				t.Errorf("%s: listener %s: tracing %v, filters %v", c.name, name, m.GetTracing(), fs)
			}
		}
		for _, typ := range []resource.Type{resource.RouteType, resource.ClusterType} {
			for _, r := range res.Resources[typ] {
				forEachAny(r.ProtoReflect(), func(a *anypb.Any) {
					if a.MessageIs(&localratelimitv3.LocalRateLimit{}) || a.MessageIs(&routev3.FilterConfig{}) {
						t.Errorf("%s: %s carries %s", c.name, typ, a.GetTypeUrl())
					}
				})
			}
		}
		if named(res, resource.ClusterType, translator.TracingClusterName) != nil {
			t.Errorf("%s: gRPC got the collector cluster", c.name)
		}
	}
}

// TestTranslateTracingOnEveryEnvoyHCM: in every Envoy case, every
// connection manager has the tracer exactly when the proxy's resolved
// policy turns tracing on, with the proxy's service name (or
// unknown_service:envoy) and its sampling.
func TestTranslateTracingOnEveryEnvoyHCM(t *testing.T) {
	traced := 0
	for _, c := range loadCases(t) {
		if c.input.Proxy.Kind != translator.KindEnvoy {
			continue
		}
		res := translate(t, c.input)
		pol := c.input.Policy.Resolve(c.input.Proxy.Service)
		wantName := c.input.Proxy.Service
		if wantName == "" {
			wantName = translator.UnknownServiceName
		}
		for name, m := range listenerHCMs(t, res) {
			tr := m.GetTracing()
			if !pol.Tracing.Enabled {
				if tr != nil {
					t.Errorf("%s/%s: tracing without a tracing policy", c.name, name)
				}
				continue
			}
			traced++
			otel := &tracev3.OpenTelemetryConfig{}
			if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(otel); err != nil {
				t.Fatalf("%s/%s: %v", c.name, name, err)
			}
			if otel.GetServiceName() != wantName || tr.GetRandomSampling().GetValue() != pol.Tracing.SamplingPercent {
				t.Errorf("%s/%s: service %q sampling %v, want %q %v", c.name, name, otel.GetServiceName(), tr.GetRandomSampling().GetValue(), wantName, pol.Tracing.SamplingPercent)
			}
			if named(res, resource.ClusterType, translator.TracingClusterName) == nil {
				t.Errorf("%s: tracing without the collector cluster", c.name)
			}
		}
	}
	if traced < 5 {
		t.Fatalf("only %d traced connection managers in the golden cases", traced)
	}
}
