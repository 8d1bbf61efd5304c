package snapshot

import (
	"regexp"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// translate builds the snapshot of proxy p for a catalog merged from st.
func translate(t *testing.T, st sources.State, p translator.Proxy) map[resource.Type][]types.Resource {
	t.Helper()
	st.Normalize("a")
	res, err := translator.New().Translate(translator.Input{Catalog: sources.Merge(map[string]sources.State{"a": st}), Proxy: p})
	if err != nil {
		t.Fatal(err)
	}
	return res.Resources
}

func build(t *testing.T, rs map[resource.Type][]types.Resource) map[resource.Type]string {
	t.Helper()
	snap, err := Build(rs)
	if err != nil {
		t.Fatal(err)
	}
	return Versions(snap)
}

func twoServices() sources.State {
	return sources.State{Services: []sources.Service{
		{Name: "user-service", Instances: []sources.Instance{
			{Address: "10.0.0.1", Port: 8080, Health: sources.HealthHealthy},
			{Address: "10.0.0.2", Port: 8080, Health: sources.HealthHealthy},
		}},
		{Name: "order-service", Instances: []sources.Instance{{Address: "10.0.1.1", Port: 9090, Health: sources.HealthHealthy}}},
	}}
}

// changedTypes lists the types whose versions differ between a and b.
func changedTypes(a, b map[resource.Type]string) []string {
	var out []string
	for _, typ := range []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType} {
		if a[typ] != b[typ] {
			out = append(out, typ[strings.LastIndexByte(typ, '.')+1:])
		}
	}
	return out
}

func TestVersionsAreContentHashes(t *testing.T) {
	for _, p := range []translator.Proxy{sidecar, {Kind: translator.KindGRPC}} {
		t.Run(string(p.Kind), func(t *testing.T) {
			base := build(t, translate(t, twoServices(), p))
			if len(base) != 4 {
				t.Fatalf("versions = %v, want one for each of the 4 types", base)
			}
			for typ, v := range base {
				if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(v) {
					t.Errorf("%s version %q is not a 16-digit hex hash", typ, v)
				}
			}

			// Same input, separately translated: same versions.
			if d := cmp.Diff(base, build(t, translate(t, twoServices(), p))); d != "" {
				t.Errorf("equal input gave different versions (-first +second):\n%s", d)
			}

			// The order of the resources does not matter: the translator
			// sorts them by name, and reversed they hash the same.
			reversed := translate(t, twoServices(), p)
			for _, rs := range reversed {
				for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
					rs[i], rs[j] = rs[j], rs[i]
				}
			}
			if d := cmp.Diff(base, build(t, reversed)); d != "" {
				t.Errorf("reordered resources gave different versions (-sorted +reversed):\n%s", d)
			}

			// A health change touches the load assignments only.
			unhealthy := twoServices()
			unhealthy.Services[0].Instances[1].Health = sources.HealthUnhealthy
			if got := changedTypes(base, build(t, translate(t, unhealthy, p))); !cmp.Equal(got, []string{"ClusterLoadAssignment"}) {
				t.Errorf("health change changed the versions of %v, want ClusterLoadAssignment only", got)
			}

			// A new port changes the endpoints and the virtual host's
			// domains, and gives a gRPC client a listener for name:port;
			// clusters stay.
			newPort := twoServices()
			newPort.Services[0].Instances[1].Port = 8081
			want := []string{"ClusterLoadAssignment", "RouteConfiguration"}
			if p.Kind == translator.KindGRPC {
				want = []string{"ClusterLoadAssignment", "Listener", "RouteConfiguration"}
			}
			if got := changedTypes(base, build(t, translate(t, newPort, p))); !cmp.Equal(got, want) {
				t.Errorf("port change changed the versions of %v, want %v", got, want)
			}

			// A new service adds a cluster, endpoints and routes; an Envoy
			// keeps its one outbound listener, a gRPC client gets another
			// API listener.
			more := twoServices()
			more.Services = append(more.Services, sources.Service{Name: "cart", Instances: []sources.Instance{{Address: "10.0.2.1", Port: 80}}})
			want = []string{"Cluster", "ClusterLoadAssignment", "RouteConfiguration"}
			if p.Kind == translator.KindGRPC {
				want = []string{"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"}
			}
			if got := changedTypes(base, build(t, translate(t, more, p))); !cmp.Equal(got, want) {
				t.Errorf("a new service changed the versions of %v, want %v", got, want)
			}
		})
	}
}

func TestVersionsDistinguishNames(t *testing.T) {
	// Equal bytes under different names must not hash alike.
	a := map[resource.Type][]types.Resource{
		resource.ClusterType:  {envoy.EDSCluster("a", time.Second)},
		resource.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: "a"}},
	}
	b := map[resource.Type][]types.Resource{
		resource.ClusterType:  {envoy.EDSCluster("b", time.Second)},
		resource.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: "b"}},
	}
	va, vb := build(t, a), build(t, b)
	if va[resource.ClusterType] == vb[resource.ClusterType] || va[resource.EndpointType] == vb[resource.EndpointType] {
		t.Errorf("renamed resources kept their versions: %v, %v", va, vb)
	}
}

func TestBuildRejectsUnknownType(t *testing.T) {
	_, err := Build(map[resource.Type][]types.Resource{"type.googleapis.com/no.such.Type": {}})
	if err == nil || !strings.Contains(err.Error(), "unknown resource type") {
		t.Errorf("Build with an unknown type: err = %v", err)
	}
}

// TestBuildChecksReferences: every cluster's EDS name and every listener's
// route configuration (gRPC's API listeners included, which
// go-control-plane's Consistent() does not follow) must exist, and nothing
// may be left that no one refers to.
func TestBuildChecksReferences(t *testing.T) {
	const timeout = time.Second
	staticCluster := &clusterv3.Cluster{Name: "static", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
	edsNoServiceName := &clusterv3.Cluster{Name: "bare", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
	cla := func(name string) types.Resource { return &endpointv3.ClusterLoadAssignment{ClusterName: name} }
	hcm := func(route string) types.Resource {
		return envoy.HTTPListener("http", "0.0.0.0", 80, envoy.HTTPConnectionManager("http", route))
	}
	api := func(name, route string) types.Resource {
		return envoy.APIListener(name, envoy.HTTPConnectionManager(name, route))
	}
	route := func(name string) types.Resource { return envoy.RouteConfiguration(name, nil) }

	for _, tc := range []struct {
		name      string
		resources map[resource.Type][]types.Resource
		wantErr   string // "" for a consistent snapshot
	}{
		{
			name: "consistent",
			resources: map[resource.Type][]types.Resource{
				resource.ClusterType:  {envoy.EDSCluster("a", timeout), staticCluster, edsNoServiceName},
				resource.EndpointType: {cla("a"), cla("bare")},
				resource.ListenerType: {hcm("outbound"), api("svc", "svc")},
				resource.RouteType:    {route("outbound"), route("svc")},
			},
		},
		{
			name: "missing load assignment",
			resources: map[resource.Type][]types.Resource{
				resource.ClusterType:  {envoy.EDSCluster("a", timeout), envoy.EDSCluster("b", timeout)},
				resource.EndpointType: {cla("a")},
			},
			wantErr: `inconsistent snapshot: load assignment "b" is referenced but missing`,
		},
		{
			name: "missing load assignment of a cluster without service name",
			resources: map[resource.Type][]types.Resource{
				resource.ClusterType: {edsNoServiceName},
			},
			wantErr: `inconsistent snapshot: load assignment "bare" is referenced but missing`,
		},
		{
			name: "unreferenced load assignment",
			resources: map[resource.Type][]types.Resource{
				resource.ClusterType:  {envoy.EDSCluster("a", timeout), staticCluster},
				resource.EndpointType: {cla("a"), cla("static")},
			},
			wantErr: `inconsistent snapshot: load assignment "static" is not referenced by anything`,
		},
		{
			name: "route config missing for an API listener",
			resources: map[resource.Type][]types.Resource{
				resource.ListenerType: {api("svc", "svc-routes")},
				resource.RouteType:    {route("svc")},
			},
			wantErr: `route configuration "svc-routes" is referenced but missing`,
		},
		{
			name: "route config missing for an HTTP listener",
			resources: map[resource.Type][]types.Resource{
				resource.ListenerType: {hcm("outbound")},
			},
			wantErr: `inconsistent snapshot: route configuration "outbound" is referenced but missing`,
		},
		{
			name: "unreferenced route config",
			resources: map[resource.Type][]types.Resource{
				resource.ListenerType: {api("svc", "svc")},
				resource.RouteType:    {route("svc"), route("orphan")},
			},
			wantErr: `inconsistent snapshot: route configuration "orphan" is not referenced by anything`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.resources)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Build: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Build = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestBuildRejectsDuplicateNames: two resources of one type with the same
// name are an error naming it (the snapshot is indexed by name, so one of
// them would silently be lost).
func TestBuildRejectsDuplicateNames(t *testing.T) {
	rs := map[resource.Type][]types.Resource{
		resource.ClusterType:  {envoy.EDSCluster("a", time.Second)},
		resource.EndpointType: {&endpointv3.ClusterLoadAssignment{ClusterName: "a"}, &endpointv3.ClusterLoadAssignment{ClusterName: "a"}},
	}
	if _, err := Build(rs); err == nil || !strings.Contains(err.Error(), `"a" is listed twice`) {
		t.Fatalf("Build = %v, want an error saying a is listed twice", err)
	}
}
