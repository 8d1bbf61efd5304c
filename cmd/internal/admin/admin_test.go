package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/xds"
)

type oneSnapshot struct {
	group string
	snap  cache.ResourceSnapshot
}

func (s oneSnapshot) GetSnapshot(group string) (cache.ResourceSnapshot, error) {
	if group != s.group {
		return noSnapshots{}.GetSnapshot(group)
	}
	return s.snap, nil
}

func serve(t *testing.T, h http.Handler, path string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, rec.Body)
	}
	return rec.Code, body
}

// TestReadyz: 200 once the loop is ready, with its source and policy
// status and last error in the body.
func TestReadyz(t *testing.T) {
	loop := fakeLoop{status: snapshot.Status{Ready: true, Sources: map[string]snapshot.SourceStatus{}, LastError: "earlier"}}
	h := NewHandler(Config{Metrics: prometheus.NewRegistry(), Loop: loop, Proxies: noProxies{}, Snapshots: noSnapshots{}})
	code, body := serve(t, h, "/readyz")
	if code != http.StatusOK || body["ready"] != true || body["last_error"] != "earlier" {
		t.Errorf("GET /readyz = %d %v, want 200, ready, with the last error", code, body)
	}
	for _, k := range []string{"sources", "policy"} {
		if _, ok := body[k]; !ok {
			t.Errorf("GET /readyz body lacks %q: %v", k, body)
		}
	}
}

// TestDebugConfig: a group's resources by type URL, with the type's
// version and the resources in name order; an unknown group is a 404.
func TestDebugConfig(t *testing.T) {
	snap, err := cache.NewSnapshot("v1", map[resource.Type][]types.Resource{
		resource.ClusterType: {&clusterv3.Cluster{Name: "b"}, &clusterv3.Cluster{Name: "a"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Config{
		Metrics: prometheus.NewRegistry(), Loop: fakeLoop{}, Proxies: noProxies{},
		Snapshots: oneSnapshot{group: "web", snap: snap}, Guard: Guard{Loopback: true},
	})
	code, body := serve(t, h, "/debug/config?group=web")
	want := map[string]any{resource.ClusterType: map[string]any{
		"version":   "v1",
		"resources": []any{map[string]any{"name": "a"}, map[string]any{"name": "b"}},
	}}
	if diff := cmp.Diff(want, body); code != http.StatusOK || diff != "" {
		t.Errorf("GET /debug/config?group=web = %d, body (-want +got):\n%s", code, diff)
	}
	code, body = serve(t, h, "/debug/config?group=api")
	if code != http.StatusNotFound || body["error"] != "no snapshot for group api" {
		t.Errorf("unknown group: %d %v, want 404 naming the group", code, body)
	}
}

// someProxies has one stream of node n1 in group web; Node marks the
// streams it returns, to tell the two calls apart.
type someProxies struct{}

func (someProxies) Proxies() []xds.ProxyStatus {
	return []xds.ProxyStatus{{NodeID: "n1", Group: "web"}}
}

func (someProxies) Node(id string) []xds.ProxyStatus {
	if id != "n1" {
		return nil
	}
	return []xds.ProxyStatus{{NodeID: "n1", Group: "web", Cluster: "from-node"}}
}

// TestDebugStatus: the replica with every stream; with ?node=, that node's
// streams (Node's view) and its groups only; an unknown node is a 404
// naming it.
func TestDebugStatus(t *testing.T) {
	loop := fakeLoop{status: snapshot.Status{Groups: []snapshot.GroupStatus{{Key: "api"}, {Key: "web", Dependencies: policy.Dependencies{All: true}}}}}
	h := NewHandler(Config{
		Metrics: prometheus.NewRegistry(), Loop: loop, Proxies: someProxies{}, Snapshots: noSnapshots{},
		Guard: Guard{Loopback: true}, Replica: "sluice-0",
	})
	get := func(path string) (int, Status) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var st Status
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, rec.Body)
		}
		return rec.Code, st
	}
	code, st := get("/debug/status")
	want := Status{Replica: "sluice-0", Proxies: []xds.ProxyStatus{{NodeID: "n1", Group: "web"}}}
	if diff := cmp.Diff(want, st); code != http.StatusOK || diff != "" {
		t.Errorf("GET /debug/status = %d, (-want +got):\n%s", code, diff)
	}
	code, st = get("/debug/status?node=n1")
	want = Status{Replica: "sluice-0", Proxies: []xds.ProxyStatus{{NodeID: "n1", Group: "web", Cluster: "from-node"}},
		Groups: []snapshot.GroupStatus{{Key: "web", Dependencies: policy.Dependencies{All: true}}}}
	if diff := cmp.Diff(want, st); code != http.StatusOK || diff != "" {
		t.Errorf("GET /debug/status?node=n1 = %d, (-want +got):\n%s", code, diff)
	}
	code, body := serve(t, h, "/debug/status?node=n2")
	if code != http.StatusNotFound || body["error"] != `no connected xDS client has node id "n2"` {
		t.Errorf("unknown node: %d %v, want 404 naming it", code, body)
	}
}

// TestDebugPolicy: the served set's files with their contents, in load
// order, and the rollback in effect; no files for the built-in defaults.
func TestDebugPolicy(t *testing.T) {
	files := []policy.File{
		{Name: "/etc/sluice/a.yaml", Data: []byte("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: a}\nspec:\n  timeout: 2s\n")},
		{Name: "/etc/sluice/mesh.yaml", Data: []byte("apiVersion: sluice.dev/v1\nkind: MeshPolicy\nmetadata: {name: mesh}\nspec:\n  defaults:\n    timeout: 3s\n")},
	}
	set, diags := policy.Load(files)
	if set == nil {
		t.Fatal(diags)
	}
	rb := &snapshot.RollbackStatus{Node: "web-1", Group: "envoy/sidecar/web", Type: resource.ClusterType, Version: "v2", Error: "bad"}
	h := NewHandler(Config{Metrics: prometheus.NewRegistry(), Loop: fakeLoop{policy: set, status: snapshot.Status{Rollback: rb}},
		Proxies: noProxies{}, Snapshots: noSnapshots{}, Guard: Guard{Loopback: true}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/policy", nil))
	var got Policy
	if err := json.Unmarshal(rec.Body.Bytes(), &got); rec.Code != http.StatusOK || err != nil {
		t.Fatalf("GET /debug/policy = %d, %v\n%s", rec.Code, err, rec.Body)
	}
	want := Policy{Files: []PolicyFile{{files[0].Name, string(files[0].Data)}, {files[1].Name, string(files[1].Data)}}, Rollback: rb}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /debug/policy (-want +got):\n%s", diff)
	}

	h = NewHandler(Config{Metrics: prometheus.NewRegistry(), Loop: fakeLoop{}, Proxies: noProxies{}, Snapshots: noSnapshots{}, Guard: Guard{Loopback: true}})
	code, body := serve(t, h, "/debug/policy")
	if fs, ok := body["files"].([]any); code != http.StatusOK || !ok || len(fs) != 0 || body["rollback"] != nil {
		t.Errorf("GET /debug/policy without a policy set = %d %v, want 200, files [] and no rollback", code, body)
	}
}
