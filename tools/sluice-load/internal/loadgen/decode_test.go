package loadgen

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// TestDecodeSidecarResources reads what a sidecar requests next from the
// resources sluice's translator gives it, and compares with a full decode:
// EDS names only for EDS clusters (not the static local cluster), RDS
// names from every listener, the inbound one included.
func TestDecodeSidecarResources(t *testing.T) {
	topo := Topology{Mesh: Mesh{Services: 3, Endpoints: 2}, Groups: 3}
	proxy, err := translator.ProxyFromNode(topo.Node("n", 1))
	if err != nil {
		t.Fatal(err)
	}
	cat := sources.Merge(map[string]sources.State{"load": topo.State(false)})
	res, err := translator.New().Translate(translator.Input{Catalog: cat, Proxy: proxy})
	if err != nil {
		t.Fatal(err)
	}
	enc := func(r types.Resource) []byte {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	var eds, wantEDS []string
	for _, r := range res.Resources[resource.ClusterType] {
		c := r.(*clusterv3.Cluster)
		name, e, err := clusterEDS(enc(c))
		if err != nil || name != c.GetName() {
			t.Fatalf("cluster %q: decoded %q, %v", c.GetName(), name, err)
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			want := c.GetEdsClusterConfig().GetServiceName()
			if want == "" {
				want = c.GetName()
			}
			wantEDS = append(wantEDS, want)
		}
		if e != "" {
			eds = append(eds, e)
		}
	}
	if want := []string{"svc-0000", "svc-0001", "svc-0002"}; !slices.Equal(eds, wantEDS) || !slices.Equal(eds, want) {
		t.Errorf("EDS names %v; full decode %v; want %v", eds, wantEDS, want)
	}
	// A cluster named by service_name, and one of the oneof's default type.
	for _, tc := range []struct {
		c    *clusterv3.Cluster
		want string
	}{
		{&clusterv3.Cluster{Name: "a", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: "a-eds"}}, "a-eds"},
		{&clusterv3.Cluster{Name: "b", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}, "b"},
		{&clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}, ""},
		{&clusterv3.Cluster{Name: "d"}, ""},
	} {
		if _, got, err := clusterEDS(enc(tc.c)); err != nil || got != tc.want {
			t.Errorf("cluster %q: EDS name %q (%v), want %q", tc.c.GetName(), got, err, tc.want)
		}
	}

	var routes, wantRoutes []string
	for _, r := range res.Resources[resource.ListenerType] {
		l := r.(*listenerv3.Listener)
		name, rs, err := listenerRoutes(enc(l))
		if err != nil || name != l.GetName() {
			t.Fatalf("listener %q: decoded %q, %v", l.GetName(), name, err)
		}
		routes = append(routes, rs...)
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(hcm) == nil && hcm.GetRds() != nil {
					wantRoutes = append(wantRoutes, hcm.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	slices.Sort(routes)
	slices.Sort(wantRoutes)
	if want := []string{translator.InboundRouteName, translator.OutboundRouteName}; !slices.Equal(routes, wantRoutes) || !slices.Equal(routes, want) {
		t.Errorf("RDS names %v; full decode %v; want %v", routes, wantRoutes, want)
	}
	a, err := anypb.New(&hcmv3.HttpConnectionManager{})
	if err != nil {
		t.Fatal(err)
	}
	if a.GetTypeUrl() != hcmTypeURL {
		t.Errorf("hcmTypeURL %q, want %q", hcmTypeURL, a.GetTypeUrl())
	}
}

// TestStringField reads a field without decoding the message.
func TestStringField(t *testing.T) {
	// field 1 (bytes) "abc", preceded by field 2 varint 7.
	b := []byte{0x10, 0x07, 0x0a, 0x03, 'a', 'b', 'c'}
	if s, err := stringField(b, 1); err != nil || s != "abc" {
		t.Fatalf("got %q %v", s, err)
	}
	if _, err := stringField([]byte{0x10, 0x07}, 1); err == nil {
		t.Fatal("missing field: no error")
	}
}
