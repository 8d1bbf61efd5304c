package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/cmd/internal/admin"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

// statusNow is the fixed clock of the formatting tests.
var statusNow = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func ago(d time.Duration) time.Time { return statusNow.Add(-d) }

// TestSyncState: the state rules of each type.
func TestSyncState(t *testing.T) {
	cases := []struct {
		name string
		ts   xds.TypeStatus
		want string
	}{
		{"nothing sent", xds.TypeStatus{}, "NOT SENT"},
		{"acked what was sent", xds.TypeStatus{Sent: "v2", SentAt: ago(time.Minute), Acked: "v2", AckedAt: ago(59 * time.Second)}, "SYNCED"},
		{"sent, not acked", xds.TypeStatus{Sent: "v2", SentAt: ago(12 * time.Second), Acked: "v1", AckedAt: ago(time.Hour)}, "STALE (12s)"},
		{"sent, never acked", xds.TypeStatus{Sent: "v1", SentAt: ago(90 * time.Minute)}, "STALE (1h30m)"},
		{"rejected what was sent", xds.TypeStatus{Sent: "v2", SentAt: ago(time.Minute), Acked: "v1", AckedAt: ago(time.Hour),
			LastNack: &xds.Nack{Version: "v2", At: ago(59 * time.Second)}}, "NACKED"},
		{"rejected an earlier version, acked the last", xds.TypeStatus{Sent: "v3", Acked: "v3", AckedAt: ago(time.Second),
			LastNack: &xds.Nack{Version: "v2", At: ago(time.Minute)}}, "SYNCED"},
		{"rejected an earlier version, last not acked yet", xds.TypeStatus{Sent: "v3", SentAt: ago(3 * time.Second), Acked: "v1",
			LastNack: &xds.Nack{Version: "v2", At: ago(time.Minute)}}, "STALE (3s)"},
		{"rejected a version it had acked before", xds.TypeStatus{Sent: "v2", Acked: "v2", AckedAt: ago(time.Hour),
			LastNack: &xds.Nack{Version: "v2", At: ago(time.Minute)}}, "NACKED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := syncState(tc.ts, statusNow); got != tc.want {
				t.Errorf("syncState = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 0: "0s", 1500 * time.Millisecond: "1s", 59 * time.Second: "59s",
		time.Minute + 5*time.Second: "1m5s", 3*time.Hour + 4*time.Minute + 5*time.Second: "3h4m",
		50 * time.Hour: "2d2h",
	} {
		if got := age(statusNow, ago(d)); got != want {
			t.Errorf("age(%s) = %q, want %q", d, got, want)
		}
	}
}

// statusFixture is a replica's status with an Envoy in sync, a gRPC
// client in every other state, and a second Envoy of another group.
func statusFixture() admin.Status {
	synced := func(v string, n int) xds.TypeStatus {
		return xds.TypeStatus{Sent: v, SentAt: ago(10 * time.Minute), Acked: v, AckedAt: ago(10 * time.Minute), Resources: n, Pushes: 1}
	}
	return admin.Status{Replica: "sluice-0", Proxies: []xds.ProxyStatus{
		{Stream: 7, NodeID: "web-1", Cluster: "web", UserAgent: "envoy", Group: "envoy/sidecar/web",
			Proxy: translator.Proxy{Kind: translator.KindEnvoy, Service: "web", Role: "sidecar"},
			Delta: false, Connected: ago(time.Hour),
			Types: map[string]xds.TypeStatus{
				resource.ClusterType: synced("00000000000000c1", 2), resource.EndpointType: synced("00000000000000e1", 2),
				resource.ListenerType: synced("00000000000000l1", 1), resource.RouteType: synced("00000000000000r1", 1),
			}},
		{Stream: 3, NodeID: "api-client", UserAgent: "gRPC Go", Group: "grpc/loc=eu/eu-1a",
			Proxy:          translator.Proxy{Kind: translator.KindGRPC, Locality: translator.Locality{Region: "eu", Zone: "eu-1a"}},
			LocalitySource: "registry", Delta: true, Connected: ago(26 * time.Hour),
			Types: map[string]xds.TypeStatus{
				resource.ClusterType: synced("00000000000000c2", 1),
				resource.EndpointType: {Sent: "00000000000000e3", SentAt: ago(12 * time.Second), Acked: "00000000000000e2", AckedAt: ago(5 * time.Minute), Resources: 1, Pushes: 3,
					Changes: &xds.Changes{Acked: "00000000000000e2", Sent: "00000000000000e3", Retained: true, Changed: []string{"api"}, Added: []string{"billing"}}},
				resource.ListenerType: {Sent: "00000000000000l3", SentAt: ago(2 * time.Minute), Acked: "00000000000000l2", AckedAt: ago(time.Hour), Resources: 1, Pushes: 2,
					LastNack: &xds.Nack{Version: "00000000000000l3", Error: `error parsing "ListenerResource" response: resource "api:8080": unknown filter (code 3)`, At: ago(119 * time.Second),
						Resources: []string{"api:8080"}, ResourcesTotal: 1},
					Changes: &xds.Changes{Acked: "00000000000000l2", Sent: "00000000000000l3", Retained: false}},
			}},
		{Stream: 9, NodeID: "api-1", Cluster: "api", UserAgent: "envoy", Group: "envoy/sidecar/api",
			Proxy: translator.Proxy{Kind: translator.KindEnvoy, Service: "api", Role: "sidecar"},
			Delta: true, Connected: ago(2 * time.Minute), Types: map[string]xds.TypeStatus{}},
	}, Groups: []snapshot.GroupStatus{{
		Key: "grpc/loc=eu/eu-1a", Versions: map[string]string{resource.EndpointType: "00000000000000e4", resource.ListenerType: "00000000000000l3"},
		Dependencies: policy.Dependencies{Services: []string{"api", "billing"}, Origin: "policies/mesh.yaml:4"}, Missing: []string{"billing"},
		LastNack: &snapshot.NackReport{Node: "api-client", Type: "Listener", Version: "00000000000000l3", At: ago(119 * time.Second),
			Resources: []string{"api:8080"}, ResourcesTotal: 1, Origins: []snapshot.ResourceOrigin{{
				Type: "Listener", Name: "api:8080", Scope: "service",
				Summary: "listener api:8080: policy policies/api.yaml:1 (ServicePolicy api); registry file registry.yaml:3, etcd /services/api/10.0.0.1:8080",
			}}},
	}}}
}

// TestStatusTableGolden: the table, by group then node id, every state.
func TestStatusTableGolden(t *testing.T) {
	var b bytes.Buffer
	if err := writeStatusTable(&b, statusFixture(), statusNow); err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("status", "table.txt"), b.String())
}

// TestStatusDetailGolden: one client's detail, with its locality's source,
// its group's dependencies, its NACK and its pending changes; and a client
// whose group has no snapshot.
func TestStatusDetailGolden(t *testing.T) {
	st := statusFixture()
	for _, tc := range []struct {
		file string
		keep int
	}{{"detail-grpc.txt", 1}, {"detail-envoy.txt", 2}} {
		one := st
		one.Proxies = st.Proxies[tc.keep : tc.keep+1]
		var b bytes.Buffer
		if err := writeStatusDetail(&b, one, statusNow); err != nil {
			t.Fatal(err)
		}
		golden(t, filepath.Join("status", tc.file), b.String())
	}
}

// TestStatusRollbackNotice: a rollback in effect is said above the table.
func TestStatusRollbackNotice(t *testing.T) {
	var b strings.Builder
	writeRollback(&b, &snapshot.RollbackStatus{
		Since: statusNow.Add(-90 * time.Second), Node: "frontend-1", Type: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
		Version: "3d02", Error: "regex too big", RefusedDocuments: []string{"policies/api.yaml:1 (ServicePolicy api)"}, Serving: []string{"policies/api.yaml", "policies/mesh.yaml"},
	}, statusNow)
	want := "POLICY ROLLED BACK 1m30s ago: frontend-1 rejected RDS (3d02): regex too big\n" +
		"  refused policies/api.yaml:1 (ServicePolicy api)\n" +
		"  serving policies/api.yaml, policies/mesh.yaml until the policy files change\n\n"
	if b.String() != want {
		t.Errorf("notice:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	writeRollback(&b, nil, statusNow)
	if b.Len() != 0 {
		t.Errorf("no rollback, yet %q", b.String())
	}
}
