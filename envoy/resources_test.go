package envoy_test

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-mesh/sluice/envoy"
)

type validator interface{ ValidateAll() error }

func validate(t *testing.T, m proto.Message) {
	t.Helper()
	v, ok := m.(validator)
	if !ok {
		t.Fatalf("%T has no ValidateAll", m)
	}
	if err := v.ValidateAll(); err != nil {
		t.Errorf("%T invalid: %v", m, err)
	}
}

func TestLoadAssignment(t *testing.T) {
	cla := envoy.LoadAssignment("svc", []envoy.Locality{
		{Region: "r", Zone: "a", Endpoints: []envoy.Endpoint{
			{Address: "10.0.0.1", Port: 80, Health: corev3.HealthStatus_HEALTHY, Weight: 2, Metadata: map[string]string{"v": "1"}},
			{Address: "10.0.0.2", Port: 81, Health: corev3.HealthStatus_UNHEALTHY, Weight: 0},
			{Address: "10.0.0.3", Port: 82, Health: corev3.HealthStatus_UNKNOWN, Weight: 0},
		}},
		{Region: "r", Zone: "b"},
	})
	validate(t, cla)
	if cla.GetClusterName() != "svc" || len(cla.GetEndpoints()) != 2 {
		t.Fatalf("unexpected assignment: %v", cla)
	}
	a, b := cla.GetEndpoints()[0], cla.GetEndpoints()[1]
	if a.GetLocality().GetRegion() != "r" || a.GetLocality().GetZone() != "a" {
		t.Errorf("locality = %v", a.GetLocality())
	}
	// The unhealthy endpoint takes no traffic, so it adds nothing; the
	// unknown one does, and its weight 0 counts as 1.
	if got := a.GetLoadBalancingWeight().GetValue(); got != 3 {
		t.Errorf("locality weight = %d, want 2+1", got)
	}
	if got := b.GetLoadBalancingWeight().GetValue(); got != 1 {
		t.Errorf("empty locality weight = %d, want the minimum 1", got)
	}
	eps := a.GetLbEndpoints()
	if got := eps[1].GetLoadBalancingWeight().GetValue(); got != 1 {
		t.Errorf("endpoint with weight 0 got weight %d, want 1", got)
	}
	if eps[1].GetHealthStatus() != corev3.HealthStatus_UNHEALTHY {
		t.Errorf("health = %v", eps[1].GetHealthStatus())
	}
	if md := eps[0].GetMetadata().GetFilterMetadata()[envoy.EndpointMetadataNamespace].GetFields()["v"].GetStringValue(); md != "1" {
		t.Errorf("metadata v = %q, want 1", md)
	}
	if eps[1].GetMetadata() != nil {
		t.Errorf("endpoint without metadata got %v", eps[1].GetMetadata())
	}
	sa := eps[1].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "10.0.0.2" || sa.GetPortValue() != 81 || sa.GetProtocol() != corev3.SocketAddress_TCP {
		t.Errorf("address = %v", sa)
	}
	// gRPC rejects localities without a weight, even empty ones.
	if b.GetLocality() == nil || b.GetLoadBalancingWeight().GetValue() == 0 {
		t.Errorf("empty locality = %v, want a locality and a non-zero weight", b)
	}
	validate(t, envoy.LoadAssignment("empty", nil))
}

func TestBuildersAreValid(t *testing.T) {
	hcm := envoy.HTTPConnectionManager("stats", "routes")
	validate(t, hcm)
	if hcm.GetRds().GetRouteConfigName() != "routes" || hcm.GetRds().GetConfigSource().GetAds() == nil {
		t.Errorf("hcm rds = %v", hcm.GetRds())
	}
	filters := hcm.GetHttpFilters()
	if len(filters) != 1 || filters[0].GetName() != envoy.RouterFilterName || !filters[0].GetTypedConfig().MessageIs(&routerv3.Router{}) {
		t.Errorf("hcm must end in the router filter, got %v", filters)
	}

	l := envoy.HTTPListener("l", "127.0.0.1", 15001, hcm)
	validate(t, l)
	tc := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
	if !tc.MessageIs(&hcmv3.HttpConnectionManager{}) {
		t.Errorf("listener filter config is %s", tc.GetTypeUrl())
	}

	api := envoy.APIListener("svc", hcm)
	validate(t, api)
	if api.GetAddress() != nil || !api.GetApiListener().GetApiListener().MessageIs(&hcmv3.HttpConnectionManager{}) {
		t.Errorf("api listener = %v", api)
	}

	c := envoy.EDSCluster("svc", 5*time.Second)
	validate(t, c)
	if c.GetEdsClusterConfig().GetServiceName() != "svc" || c.GetConnectTimeout().AsDuration() != 5*time.Second {
		t.Errorf("cluster = %v", c)
	}

	vh := envoy.VirtualHost("svc", []string{"svc", "svc:80"}, "svc")
	validate(t, vh)
	validate(t, envoy.RouteConfiguration("r", nil))
	validate(t, envoy.RouteConfiguration("r", []*routev3.VirtualHost{vh}))
}

// TestMustAnyDeterministic wraps a message holding a map (endpoint metadata)
// repeatedly: the packed bytes must not depend on map iteration order.
func TestMustAnyDeterministic(t *testing.T) {
	md := map[string]string{}
	for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} {
		md[k] = k + k
	}
	mk := func() proto.Message {
		return envoy.LoadAssignment("svc", []envoy.Locality{{Endpoints: []envoy.Endpoint{{Address: "10.0.0.1", Port: 1, Metadata: md}}}})
	}
	first := envoy.MustAny(mk()).GetValue()
	for i := 0; i < 50; i++ {
		if got := envoy.MustAny(mk()).GetValue(); string(got) != string(first) {
			t.Fatal("MustAny is not deterministic")
		}
	}
}
