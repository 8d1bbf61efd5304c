package envoy_test

import (
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"

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
		{"grpc, headers, present", envoy.Match{Prefix: "/", GRPC: true, Headers: []envoy.HeaderValue{{Name: "x-tenant", Value: "acme"}}, Present: []string{"x-key"}},
			`{"prefix":"/","headers":[{"name":"content-type","stringMatch":{"prefix":"application/grpc"}},{"name":"x-tenant","stringMatch":{"exact":"acme"}},{"name":"x-key","presentMatch":true}]}`},
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
