package snapshot

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

const provenancePolicy = `apiVersion: sluice.dev/v1
kind: MeshPolicy
metadata: {name: mesh}
spec:
  defaults: {timeout: 4s}
---
apiVersion: sluice.dev/v1
kind: ServicePolicy
metadata: {name: user-service}
spec:
  timeout: 3s
  routes:
    - match: {pathPrefix: /, headers: {x-team: {regex: "^(alpha|bravo){3,9}$"}}}
      timeout: 1s
`

// provenanceLoop runs a loop with provenancePolicy as policies/p.yaml, a
// catalog of user-service (one instance from the registry file, one
// reported by the file and etcd) and web (from etcd), and a built group
// for frontend's sidecar.
func provenanceLoop(t *testing.T, log *slog.Logger) (*testLoop, translator.Proxy) {
	t.Helper()
	policies := make(chan watch.Update, 1)
	l := startLoop(t, Config{Sources: []string{"etcd", "file"}, Policies: policies, HoldOff: time.Millisecond, Log: log})
	set, diags := policy.Load([]policy.File{{Name: "policies/p.yaml", Data: []byte(provenancePolicy)}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	policies <- watch.Update{Set: set}
	in := func(addr, origin string) sources.Instance {
		return sources.Instance{Address: addr, Port: 80, Health: sources.HealthHealthy, Origin: origin}
	}
	l.setState("file", sources.State{Services: []sources.Service{{Name: "user-service", Instances: []sources.Instance{
		in("10.0.0.1", "registry.yaml:12"), in("10.0.0.2", "registry.yaml:15")}}}})
	l.setState("etcd", sources.State{Services: []sources.Service{
		{Name: "user-service", Instances: []sources.Instance{in("10.0.0.2", "/services/user-service/10.0.0.2:80")}},
		{Name: "web", Instances: []sources.Instance{in("10.0.0.9", "/services/web/10.0.0.9:80")}},
	}})
	front := translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "frontend", InboundPort: 8080}
	mustEnsure(t, l, front)
	waitFor(t, "frontend's snapshot", func() bool { return l.pub.count() >= 1 && l.Status().Ready })
	waitFor(t, "frontend's snapshot of both services", func() bool {
		_, ok := l.pub.last(t, front.Key()).GetResources(resource.ClusterType)["web"]
		return ok
	})
	return l, front
}

// TestProvenance: a service's cluster comes from its policy documents
// (file:line, with what they set) and its registry entries (each source's
// own); the outbound route configuration from every dependency, narrowed
// to the route whose regex the client's error quotes.
func TestProvenance(t *testing.T) {
	l, front := provenanceLoop(t, nil)
	got := l.Provenance(front.Key(), resource.ClusterType, []string{"user-service", "inbound|8080", "nope|x|y"})
	if len(got) != 3 {
		t.Fatalf("%d origins, want 3", len(got))
	}
	us := got[0]
	t.Logf("%s", us.Summary)
	if us.Scope != "service" || len(us.Services) != 1 || us.Services[0] != "user-service" {
		t.Errorf("user-service: scope %q services %v", us.Scope, us.Services)
	}
	if len(us.Policies) != 2 || us.Policies[0].Location != "policies/p.yaml:1" || us.Policies[1].Location != "policies/p.yaml:7" || us.Policies[1].Document != "ServicePolicy user-service" {
		t.Errorf("user-service policies %+v, want the MeshPolicy at policies/p.yaml:1 and the ServicePolicy at :7", us.Policies)
	}
	if s := us.Policies[1].Settings; len(s) == 0 || s[0] != "timeout: 3s at policies/p.yaml:11" {
		t.Errorf("ServicePolicy settings %v, want timeout: 3s at policies/p.yaml:11 first", s)
	}
	wantReg := []string{"file registry.yaml:12", "etcd /services/user-service/10.0.0.2:80", "file registry.yaml:15"}
	if strings.Join(us.Registry, "|") != strings.Join(wantReg, "|") || us.RegistryTotal != 3 {
		t.Errorf("registry %v (%d), want %v", us.Registry, us.RegistryTotal, wantReg)
	}
	if want := "cluster user-service: policy policies/p.yaml:1 (MeshPolicy mesh), policies/p.yaml:7 (ServicePolicy user-service); registry file registry.yaml:12, etcd /services/user-service/10.0.0.2:80, file registry.yaml:15"; us.Summary != want {
		t.Errorf("summary\n%s\nwant\n%s", us.Summary, want)
	}
	if got[1].Scope != "own" || !strings.Contains(got[1].Summary, "own service frontend") {
		t.Errorf("inbound|8080: %+v", got[1])
	}
	if got[2].Scope != "" || !strings.Contains(got[2].Summary, "not a resource sluice makes") {
		t.Errorf("an unknown name: %+v", got[2])
	}

	// The outbound route configuration: every dependency, unless the
	// error points at some.
	rc := l.Provenance(front.Key(), resource.RouteType, []string{"outbound_http"})[0]
	if rc.Scope != "dependencies" || rc.ServicesTotal != 2 || len(rc.Services) != 0 || rc.PoliciesTotal != 2 {
		t.Errorf("outbound_http without an error: %+v", rc)
	}
	detail := `regex '^(alpha|bravo){3,9}$' RE2 program size of 120 > max program size of 100 set for the error level threshold.`
	origins, _ := l.provenance(front.Key(), resource.RouteType, []string{"outbound_http"}, detail, "")
	rc = origins[0]
	t.Logf("%s", rc.Summary)
	if len(rc.Services) != 1 || rc.Services[0] != "user-service" || !rc.Policies[0].Quoted ||
		!strings.HasPrefix(rc.Policies[0].Settings[0], "routes[0] ") || !strings.Contains(rc.Policies[0].Settings[0], "at policies/p.yaml:13") {
		t.Errorf("outbound_http with a quoted regex: %+v", rc)
	}
	if !strings.Contains(rc.Summary, "policies/p.yaml:7 (ServicePolicy user-service: routes[0]") {
		t.Errorf("summary %q lacks the quoted route", rc.Summary)
	}
}

// TestLoopExplainsNacks: a NACK is kept, explained, as the group's last in
// the status, and logged once per type and version.
func TestLoopExplainsNacks(t *testing.T) {
	var logs bytes.Buffer
	l, front := provenanceLoop(t, slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil)))
	var _ xds.NackObserver = l.Loop
	n := xds.NackEvent{NodeID: "frontend-1", Group: front.Key(), TypeURL: resource.ClusterType, Version: "v2", Accepted: "v1",
		Detail: `Error adding/updating cluster(s) user-service: bad (code 13)`, Resources: []string{"user-service"}}
	l.Nacked(n)
	l.Nacked(n)
	var last *NackReport
	for _, g := range l.Status().Groups {
		if g.Key == front.Key() {
			last = g.LastNack
		}
	}
	if last == nil || last.Node != "frontend-1" || last.Type != "Cluster" || last.Accepted != "v1" || len(last.Origins) != 1 || last.Origins[0].Name != "user-service" {
		t.Fatalf("group's last NACK %+v", last)
	}
	if !last.LaterInputs {
		t.Error("the origins of a version the group was never built at are not flagged as later inputs")
	}
	if got := strings.Count(logs.String(), "where the rejected config came from"); got != 1 {
		t.Errorf("%d log lines for one rejected version, want 1:\n%s", got, logs.String())
	}
	if want := "frontend-1 rejected cluster user-service (version v2): Error adding/updating cluster(s) user-service: bad (code 13) — from cluster user-service: policy policies/p.yaml:1"; !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, logs.String())
	}
}

// syncWriter serialises writes to w (the loop logs from its goroutine).
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
