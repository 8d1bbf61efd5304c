package envoy_test

import (
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-mesh/sluice/envoy"
)

func TestRouteMatch(t *testing.T) {
	cases := []struct {
		name string
		m    envoy.Match
		want string
	}{
		{"prefix", envoy.Match{Prefix: "/"}, `{"prefix":"/"}`},
		{"path, one method", envoy.Match{Path: "/login", Methods: []string{"POST"}},
			`{"path":"/login","headers":[{"name":":method","stringMatch":{"exact":"POST"}}]}`},
		{"methods as an alternation", envoy.Match{Prefix: "/a", Methods: []string{"GET", "PUT"}},
			`{"prefix":"/a","headers":[{"name":":method","stringMatch":{"safeRegex":{"regex":"GET|PUT"}}}]}`},
		{"grpc, headers, present", envoy.Match{Prefix: "/", GRPC: true, Headers: []envoy.ValueMatch{{Name: "x-tenant", Exact: "acme"}}, Present: []string{"x-key"}},
			`{"prefix":"/","headers":[{"name":"content-type","stringMatch":{"prefix":"application/grpc"}},{"name":"x-tenant","stringMatch":{"exact":"acme"}},{"name":"x-key","presentMatch":true}]}`},
		{"header and query forms", envoy.Match{Prefix: "/", Headers: []envoy.ValueMatch{{Name: "x-user", Regex: "^(a|b)$"}, {Name: "x-debug", Present: true}, {Name: "x-empty"}},
			Query: []envoy.ValueMatch{{Name: "beta", Exact: "1"}, {Name: "trace", Present: true}, {Name: "id", Regex: "[0-9]+"}}},
			`{"prefix":"/","headers":[{"name":"x-user","stringMatch":{"safeRegex":{"regex":"^(a|b)$"}}},{"name":"x-debug","presentMatch":true},{"name":"x-empty","stringMatch":{"exact":""}}],"queryParameters":[{"name":"beta","stringMatch":{"exact":"1"}},{"name":"trace","presentMatch":true},{"name":"id","stringMatch":{"safeRegex":{"regex":"[0-9]+"}}}]}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rm := envoy.RouteMatch(c.m)
			validate(t, rm)
			want := &routev3.RouteMatch{}
			if err := protojson.Unmarshal([]byte(c.want), want); err != nil {
				t.Fatal(err)
			}
			if got, w := protojson.Format(rm), protojson.Format(want); got != w {
				t.Errorf("got %s\nwant %s", got, w)
			}
		})
	}
}

func TestRoute(t *testing.T) {
	timeout := 2 * time.Second
	r := envoy.Route(envoy.RouteOptions{
		Name: "routes[0]/idempotent", Match: envoy.Match{Prefix: "/"}, Cluster: "svc", Timeout: &timeout,
		Retry: &envoy.Retry{On: []string{"5xx", "unavailable"}, NumRetries: 3, PerTryTimeout: 500 * time.Millisecond,
			BackoffBase: 25 * time.Millisecond, BackoffMax: 250 * time.Millisecond, RetriableStatusCodes: []uint32{409}, OtherHosts: true},
		Hash: []envoy.Hash{{Header: "x-user"}, {SourceIP: true}, {ChannelID: true}, {}},
	})
	validate(t, r)
	a := r.GetRoute()
	if a.GetCluster() != "svc" || a.GetTimeout().AsDuration() != timeout || a.GetMaxStreamDuration() != nil {
		t.Errorf("action: %v", a)
	}
	rp := a.GetRetryPolicy()
	if rp.GetRetryOn() != "5xx,unavailable" || rp.GetNumRetries().GetValue() != 3 || rp.GetPerTryTimeout().AsDuration() != 500*time.Millisecond ||
		rp.GetRetryBackOff().GetBaseInterval().AsDuration() != 25*time.Millisecond || rp.GetRetryBackOff().GetMaxInterval().AsDuration() != 250*time.Millisecond ||
		len(rp.GetRetriableStatusCodes()) != 1 || len(rp.GetRetryHostPredicate()) != 1 || rp.GetHostSelectionRetryMaxAttempts() == 0 {
		t.Errorf("retry policy: %v", rp)
	}
	if hp := a.GetHashPolicy(); len(hp) != 3 || hp[0].GetHeader().GetHeaderName() != "x-user" || !hp[1].GetConnectionProperties().GetSourceIp() || hp[2].GetFilterState().GetKey() != envoy.GRPCChannelIDKey {
		t.Errorf("hash policies: %v", hp)
	}

	// The gRPC form: max_stream_duration instead of a timeout; no Envoy-only
	// retry fields.
	g := envoy.Route(envoy.RouteOptions{Name: "default", Match: envoy.Match{Prefix: "/"}, Cluster: "svc", MaxStreamDuration: time.Second,
		Retry: &envoy.Retry{On: []string{"unavailable"}, NumRetries: 1}})
	validate(t, g)
	ga := g.GetRoute()
	if ga.GetTimeout() != nil || ga.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration() != time.Second {
		t.Errorf("gRPC action: %v", ga)
	}
	if grp := ga.GetRetryPolicy(); grp.GetPerTryTimeout() != nil || grp.GetRetryHostPredicate() != nil || grp.GetRetryBackOff() != nil {
		t.Errorf("gRPC retry policy: %v", grp)
	}

	// A zero timeout is Envoy's "no timeout".
	zero := time.Duration(0)
	if z := envoy.Route(envoy.RouteOptions{Match: envoy.Match{Prefix: "/"}, Cluster: "svc", Timeout: &zero}); z.GetRoute().GetTimeout() == nil || z.GetRoute().GetTimeout().AsDuration() != 0 {
		t.Errorf("zero timeout not kept: %v", z)
	}
}

func TestFractionalPercent(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want uint32
	}{{100, 1_000_000}, {0, 0}, {12.5, 125_000}, {0.0001, 1}} {
		fp := envoy.FractionalPercent(c.in)
		validate(t, fp)
		if fp.GetNumerator() != c.want {
			t.Errorf("FractionalPercent(%v) = %d millionths, want %d", c.in, fp.GetNumerator(), c.want)
		}
	}
}

// TestRouteReleaseForms: a split, a mirror and a route's fault config, as
// Envoy and gRPC read them.
func TestRouteReleaseForms(t *testing.T) {
	r := envoy.Route(envoy.RouteOptions{
		Name:             "canary",
		Match:            envoy.Match{Prefix: "/"},
		WeightedClusters: []envoy.WeightedCluster{{Name: "web|v1", Weight: 90}, {Name: "web|v2", Weight: 10}},
		Mirrors:          []envoy.Mirror{{Cluster: "web|v2", Percent: 5}},
		PerFilterConfig: map[string]*anypb.Any{envoy.FaultFilterName: envoy.FaultConfig(envoy.Fault{
			DelayPercent: 10, Delay: 2 * time.Second, AbortPercent: 2.5, GRPCStatus: 14,
		})},
	})
	validate(t, r)
	a := r.GetRoute()
	wc := a.GetWeightedClusters().GetClusters()
	if len(wc) != 2 || wc[0].GetName() != "web|v1" || wc[0].GetWeight().GetValue() != 90 || wc[1].GetWeight().GetValue() != 10 || a.GetCluster() != "" {
		t.Errorf("weighted clusters %v (cluster %q)", wc, a.GetCluster())
	}
	m := a.GetRequestMirrorPolicies()
	if len(m) != 1 || m[0].GetCluster() != "web|v2" || m[0].GetRuntimeFraction().GetDefaultValue().GetNumerator() != 50000 {
		t.Errorf("mirror policies %v, want web|v2 at 50000 per million", m)
	}
	var f faultv3.HTTPFault
	if err := r.GetTypedPerFilterConfig()[envoy.FaultFilterName].UnmarshalTo(&f); err != nil {
		t.Fatal(err)
	}
	validate(t, &f)
	if f.GetDelay().GetFixedDelay().AsDuration() != 2*time.Second || f.GetDelay().GetPercentage().GetNumerator() != 100000 ||
		f.GetAbort().GetGrpcStatus() != 14 || f.GetAbort().GetPercentage().GetNumerator() != 25000 {
		t.Errorf("fault config %v", &f)
	}
	var http faultv3.HTTPFault
	if err := envoy.FaultConfig(envoy.Fault{AbortPercent: 5, HTTPStatus: 503}).UnmarshalTo(&http); err != nil {
		t.Fatal(err)
	}
	if http.GetDelay() != nil || http.GetAbort().GetHttpStatus() != 503 {
		t.Errorf("abort-only fault config %v", &http)
	}
	validate(t, envoy.FaultFilter())
}
