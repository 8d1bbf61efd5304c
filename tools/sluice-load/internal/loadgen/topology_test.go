package loadgen

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/translator"
)

// TestTopologyIdentity: with groups, proxy i is a sidecar of service i mod
// G with an inbound port, and sluice's own identity rules put the proxies
// of one service, and only those, in one group; without groups every proxy
// is in one group.
func TestTopologyIdentity(t *testing.T) {
	topo := Topology{Mesh: Mesh{Services: 20, Endpoints: 1}, Groups: 8}
	keys := map[string]int{} // group key → service
	ids := map[string]bool{}
	for i := range 40 {
		node := topo.Node(nodeID(i), i)
		if ids[node.GetId()] {
			t.Fatalf("node id %q used twice", node.GetId())
		}
		ids[node.GetId()] = true
		p, err := translator.ProxyFromNode(node)
		if err != nil {
			t.Fatal(err)
		}
		want := topo.ServiceName(i % 8)
		if node.GetCluster() != want || p.Service != want || p.Role != translator.RoleSidecar || p.InboundPort != InboundPort {
			t.Fatalf("proxy %d: node %v, identity %+v; want a sidecar of %s with inbound port %d", i, node, p, want, InboundPort)
		}
		if s, ok := keys[p.Key()]; ok && s != i%8 {
			t.Fatalf("proxy %d: group %q is also service %d's", i, p.Key(), s)
		}
		keys[p.Key()] = i % 8
	}
	if len(keys) != 8 {
		t.Fatalf("%d groups, want 8", len(keys))
	}
	one := Topology{Mesh: topo.Mesh}
	first, _ := translator.ProxyFromNode(one.Node(nodeID(0), 0))
	for i := range 10 {
		p, err := translator.ProxyFromNode(one.Node(nodeID(i), i))
		if err != nil || p.Key() != first.Key() {
			t.Fatalf("no groups: proxy %d in group %q (%v), proxy 0 in %q", i, p.Key(), err, first.Key())
		}
	}
}

func nodeID(i int) string { return fmt.Sprintf("t-%d", i) }

// TestTopologyDependencies: service s depends on s-1 ... s-D modulo the
// number of services, and a proxy is affected by the change exactly when
// its service depends on svc-0000 (or, without dependencies, always).
func TestTopologyDependencies(t *testing.T) {
	topo := Topology{Mesh: Mesh{Services: 10, Endpoints: 1}, Groups: 10, Dependencies: 3}
	for s, want := range map[int][]int{0: {7, 8, 9}, 1: {0, 8, 9}, 3: {0, 1, 2}, 4: {1, 2, 3}, 9: {6, 7, 8}} {
		if got := topo.DependenciesOf(s); !slices.Equal(got, want) {
			t.Errorf("DependenciesOf(%d) = %v, want %v", s, got, want)
		}
	}
	var affected []int
	for i := range 30 {
		own, _ := topo.Service(i)
		if got, want := topo.Affected(i), slices.Contains(topo.DependenciesOf(own), 0); got != want {
			t.Fatalf("Affected(%d) = %v, but service %d depends on %v", i, got, own, topo.DependenciesOf(own))
		}
		for s := range topo.Services {
			if got, want := topo.Sees(i, s), slices.Contains(topo.DependenciesOf(own), s); got != want {
				t.Fatalf("Sees(%d, %d) = %v, want %v", i, s, got, want)
			}
		}
		if topo.Affected(i) {
			affected = append(affected, i)
		}
	}
	// Sidecars of svc-0001 ... svc-0003.
	if want := []int{1, 2, 3, 11, 12, 13, 21, 22, 23}; !slices.Equal(affected, want) {
		t.Fatalf("affected proxies %v, want %v", affected, want)
	}
	for _, whole := range []Topology{{Mesh: topo.Mesh}, {Mesh: topo.Mesh, Groups: 4}} {
		for i := range 8 {
			if !whole.Affected(i) || whole.DependenciesOf(i%4) != nil {
				t.Fatalf("%+v: proxy %d does not see the whole mesh", whole, i)
			}
		}
	}
	if err := (Topology{}).Validate(); err != nil {
		t.Errorf("the zero topology (one group, whole mesh): %v", err)
	}
	for _, bad := range []Topology{
		{Mesh: topo.Mesh, Groups: 11},
		{Mesh: topo.Mesh, Groups: -1},
		{Mesh: topo.Mesh, Groups: 2, Dependencies: 10}, // itself
		{Mesh: topo.Mesh, Dependencies: 2},             // no groups
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v: valid", bad)
		}
	}
}

// TestWritePolicies: the policy files parse with sluice's policy package,
// one ServicePolicy per group naming the dependencies the run assumes.
func TestWritePolicies(t *testing.T) {
	topo := Topology{Mesh: Mesh{Services: 12, Endpoints: 1}, Groups: 5, Dependencies: 2}
	dir := t.TempDir()
	if err := topo.WritePolicies(dir); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 5 {
		t.Fatalf("%d files in the policy directory, want 5 (no leftovers)", len(entries))
	}
	set := loadPolicies(t, dir)
	for s := range 5 {
		var want []string
		for _, d := range topo.DependenciesOf(s) {
			want = append(want, topo.ServiceName(d))
		}
		got := set.Dependencies(topo.ServiceName(s))
		if got.All || !slices.Equal(got.Services, want) {
			t.Errorf("%s: dependencies %+v, want %v", topo.ServiceName(s), got, want)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "svc-0001.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := "apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata:\n  name: svc-0001\nspec:\n  dependencies: [svc-0000, svc-0011]\n"
	if string(data) != want {
		t.Errorf("svc-0001.yaml:\n%s\nwant:\n%s", data, want)
	}
	if (Topology{Mesh: topo.Mesh, Groups: 5}).WritePolicies(t.TempDir()) == nil {
		t.Error("policy files without dependencies: no error")
	}
}

// loadPolicies loads the policy files of dir, failing the test if they
// are not a valid policy set.
func loadPolicies(t *testing.T, dir string) *policy.Set {
	t.Helper()
	files, diags := policy.ReadDir(dir)
	if len(diags) > 0 {
		t.Fatalf("policy files do not read: %v", diags)
	}
	set, diags := policy.Load(files)
	if set == nil {
		t.Fatalf("policy files do not load: %v", diags)
	}
	return set
}
