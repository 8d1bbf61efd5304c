package consul

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/sluice-mesh/sluice/sources"
)

func TestHealthAndWeight(t *testing.T) {
	w := func(p, wa int) api.AgentWeights { return api.AgentWeights{Passing: p, Warning: wa} }
	for _, tc := range []struct {
		name       string
		status     string
		weights    api.AgentWeights
		warnOK     bool
		wantHealth sources.Health
		wantWeight uint32
	}{
		{"passing", api.HealthPassing, w(5, 2), true, sources.HealthHealthy, 5},
		{"passing no weights", api.HealthPassing, w(0, 0), true, sources.HealthHealthy, 1},
		{"warning healthy", api.HealthWarning, w(5, 2), true, sources.HealthHealthy, 2},
		{"warning unhealthy", api.HealthWarning, w(5, 2), false, sources.HealthUnhealthy, 5},
		{"warning weight 0", api.HealthWarning, w(5, 0), true, sources.HealthUnhealthy, 5},
		{"warning no weights", api.HealthWarning, w(0, 0), true, sources.HealthHealthy, 1},
		{"critical", api.HealthCritical, w(5, 2), true, sources.HealthUnhealthy, 5},
		{"maintenance", api.HealthMaint, w(5, 2), true, sources.HealthUnhealthy, 5},
		{"unknown status", "", w(5, 2), true, sources.HealthUnhealthy, 5},
		{"huge weight capped", api.HealthPassing, w(1<<30, 1), true, sources.HealthHealthy, sources.MaxWeight},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, wt := healthAndWeight(tc.status, tc.weights, tc.warnOK)
			if h != tc.wantHealth || wt != tc.wantWeight {
				t.Errorf("healthAndWeight(%q, %+v, %v) = %s, %d; want %s, %d", tc.status, tc.weights, tc.warnOK, h, wt, tc.wantHealth, tc.wantWeight)
			}
		})
	}
}

func entry(node, nodeAddr, id, addr string, port int, checks ...*api.HealthCheck) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: node, Address: nodeAddr},
		Service: &api.AgentService{ID: id, Service: "svc", Address: addr, Port: port},
		Checks:  checks,
	}
}

func check(id, status string) *api.HealthCheck { return &api.HealthCheck{CheckID: id, Status: status} }

func TestMapEntries(t *testing.T) {
	maint := entry("n1", "10.0.0.1", "m", "10.0.0.5", 80, check("serfHealth", api.HealthPassing), check(api.ServiceMaintPrefix+"m", api.HealthCritical))
	nodeMaint := entry("n2", "10.0.0.2", "nm", "10.0.0.6", 80, check(api.NodeMaint, api.HealthCritical))
	fallback := entry("n1", "10.0.0.1", "fb", "", 81, check("serfHealth", api.HealthPassing))
	v6 := entry("n1", "10.0.0.1", "v6", "2001:db8:0:0::1", 82)
	host := entry("n1", "10.0.0.1", "host", "svc.example.com", 83)
	noPort := entry("n1", "10.0.0.1", "noport", "10.0.0.9", 0)
	proxy := entry("n1", "10.0.0.1", "proxy", "10.0.0.7", 21000)
	proxy.Service.Kind = api.ServiceKindConnectProxy
	// Two registrations of one address:port: kept once, worst health.
	dupA := entry("n1", "10.0.0.1", "dup-a", "10.0.0.8", 90, check("c", api.HealthPassing))
	dupB := entry("n3", "10.0.0.3", "dup-b", "10.0.0.8", 90, check("c", api.HealthCritical))

	in := []*api.ServiceEntry{dupB, maint, nodeMaint, fallback, v6, host, noPort, proxy, dupA, nil}
	m := mapEntries("svc", in, true)
	got := map[string]sources.Instance{}
	for _, i := range m.instances {
		got[i.Key()] = i
	}
	want := map[string]sources.Health{
		"10.0.0.5:80":      sources.HealthUnhealthy,
		"10.0.0.6:80":      sources.HealthUnhealthy,
		"10.0.0.1:81":      sources.HealthHealthy,
		"[2001:db8::1]:82": sources.HealthHealthy,
		"10.0.0.8:90":      sources.HealthUnhealthy,
	}
	if len(got) != len(want) {
		t.Errorf("instances = %v, want keys %v", got, want)
	}
	for k, h := range want {
		if got[k].Health != h {
			t.Errorf("%s health = %s, want %s", k, got[k].Health, h)
		}
	}
	if o := got["10.0.0.8:90"].Origin; o != "consul:service/svc/dup-a" {
		t.Errorf("duplicate kept %s, want dup-a (first by node, ID)", o)
	}
	wantDiags := map[string]string{
		"consul:service/svc/host":   `Service.Address "svc.example.com" is not an IP address`,
		"consul:service/svc/noport": "port 0 is not in 1-65535",
		"consul:service/svc/dup-b":  "same address 10.0.0.8:90 as instance dup-a",
	}
	if len(m.diags) != len(wantDiags) {
		t.Errorf("diagnostics = %v, want %d", m.diags, len(wantDiags))
	}
	for _, d := range m.diags {
		if frag, ok := wantDiags[d.Location]; !ok || !strings.Contains(d.Message, frag) {
			t.Errorf("unexpected diagnostic %s", d)
		}
	}
	if !maps.Equal(m.nodes, map[string]bool{"n1": true, "n2": true, "n3": true}) {
		t.Errorf("nodes = %v", m.nodes)
	}

	// The order of Consul's answer does not matter.
	rev := make([]*api.ServiceEntry, len(in))
	for i := range in {
		rev[i] = in[len(in)-1-i]
	}
	m2 := mapEntries("svc", rev, true)
	if describe(&sources.State{Services: []sources.Service{{Name: "svc", Instances: m2.instances}}, Diagnostics: m2.diags}) !=
		describe(&sources.State{Services: []sources.Service{{Name: "svc", Instances: m.instances}}, Diagnostics: m.diags}) {
		t.Errorf("mapping depends on the order of entries")
	}
}

func TestLocalityAndMetadata(t *testing.T) {
	e := entry("n1", "10.0.0.1", "a", "", 80)
	e.Node.Meta = map[string]string{"zone": "node-zone", "region": "node-region"}
	e.Service.Meta = map[string]string{"zone": "svc-zone", "owner": "team-a"}
	e.Service.Tags = []string{"b,c", "a"}
	in, _, ok := mapEntry("svc", e, true)
	if !ok {
		t.Fatal("not mapped")
	}
	if in.Zone != "svc-zone" || in.Region != "node-region" {
		t.Errorf("zone, region = %q, %q; want svc-zone (service meta), node-region (node meta)", in.Zone, in.Region)
	}
	want := map[string]string{"zone": "svc-zone", "owner": "team-a", "tag.a": "true", "tag.b,c": "true"}
	if !maps.Equal(in.Metadata, want) {
		t.Errorf("metadata = %v, want %v", in.Metadata, want)
	}

	// Consul 1.17+ Locality fields, below meta of the same level.
	e = entry("n1", "10.0.0.1", "a", "", 80)
	e.Service.Locality = &api.Locality{Region: "svc-loc-region"}
	e.Node.Locality = &api.Locality{Region: "node-loc-region", Zone: "node-loc-zone"}
	e.Node.Meta = map[string]string{"topology.kubernetes.io/zone": "k8s-zone"}
	in, _, _ = mapEntry("svc", e, true)
	if in.Zone != "k8s-zone" || in.Region != "svc-loc-region" || in.Metadata != nil {
		t.Errorf("zone, region, metadata = %q, %q, %v; want k8s-zone, svc-loc-region, nil", in.Zone, in.Region, in.Metadata)
	}
}

// fakeQuery answers a watch from a script of (value, index, error).
type step struct {
	v   int
	idx uint64
	err error
}

func TestWatchFollowsConsulsBlockingQueryRules(t *testing.T) {
	script := []step{
		{v: 1, idx: 10},                 // first answer
		{v: 1, idx: 10},                 // wait timed out: no update
		{v: 2, idx: 12},                 // a change
		{v: 3, idx: 5},                  // index went backwards: reset
		{v: 4, idx: 0},                  // index 0: treated as 1
		{err: errors.New("agent gone")}, // ends the watch
	}
	var asked []uint64
	i := 0
	q := func(_ context.Context, index uint64) (int, uint64, error) {
		asked = append(asked, index)
		s := script[i]
		i++
		return s.v, s.idx, s.err
	}
	var got recorder
	err := watch(context.Background(), q, time.Millisecond, &got)
	if err == nil || err.Error() != "agent gone" {
		t.Fatalf("watch returned %v, want the query's error", err)
	}
	wantAsked := []uint64{0, 10, 10, 12, 5, 1}
	if !slices.Equal(asked, wantAsked) {
		t.Errorf("indexes asked = %v, want %v", asked, wantAsked)
	}
	wantGot := []update[int]{{value: 1, index: 10}, {value: 2, index: 12}, {value: 3, index: 5, reset: true}, {value: 4, index: 1, reset: true}}
	if len(got) != len(wantGot) {
		t.Fatalf("updates = %+v, want %+v", got, wantGot)
	}
	for k := range got {
		if got[k] != wantGot[k] {
			t.Errorf("update %d = %+v, want %+v", k, got[k], wantGot[k])
		}
	}
}

// recorder is a sink that keeps every update.
type recorder []update[int]

func (r *recorder) put(u update[int]) { *r = append(*r, u) }

func TestWatchRateLimits(t *testing.T) {
	var starts []time.Time
	q := func(ctx context.Context, index uint64) (int, uint64, error) {
		starts = append(starts, time.Now())
		if len(starts) == 5 {
			return 0, 0, errors.New("stop")
		}
		return len(starts), index + 1, nil // changes every time
	}
	const iv = 20 * time.Millisecond
	_ = watch(context.Background(), q, iv, newLatest[int]())
	for i := 1; i < len(starts); i++ {
		if d := starts[i].Sub(starts[i-1]); d < iv {
			t.Errorf("queries %d and %d started %s apart, want at least %s", i-1, i, d, iv)
		}
	}
}

func TestLatestKeepsNewestAndResets(t *testing.T) {
	l := newLatest[int]()
	l.put(update[int]{value: 1, index: 1, reset: true})
	l.put(update[int]{value: 2, index: 2})
	u, ok := l.take()
	if !ok || u.value != 2 || !u.reset {
		t.Errorf("take = %+v, %v; want value 2 with the replaced reset kept", u, ok)
	}
	if _, ok := l.take(); ok {
		t.Error("second take found an update")
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for n := 1; n < 40; n++ {
		d := backoff(n, lo, hi)
		ceil := min(lo<<min(n-1, 20), hi)
		if d < ceil/2 || d > ceil {
			t.Errorf("backoff(%d) = %s, want within [%s, %s]", n, d, ceil/2, ceil)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"cert without key", Config{TLS: TLSConfig{CertFile: "c.pem"}}, "TLS.KeyFile: is required with TLS.CertFile"},
		{"http with tls", Config{Address: "http://x:8500", TLS: TLSConfig{CAFile: "ca.pem"}}, "plaintext"},
		{"empty tag", Config{Tags: []string{"a", ""}}, "Tags[1]"},
		{"empty excluded service", Config{Exclude: []string{"consul", ""}}, "Exclude[1]"},
		{"negative", Config{WaitTime: -time.Second}, "WaitTime"},
		{"wait too long", Config{WaitTime: 11 * time.Minute}, "10m"},
		{"retry order", Config{RetryMin: time.Second, RetryMax: time.Millisecond}, "RetryMax"},
		{"bad scheme", Config{Address: "ftp://x"}, "ftp"},
		{"missing CA", Config{TLS: TLSConfig{CAFile: "/nonexistent/ca.pem"}}, "ca.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	s, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "consul" || !s.cfg.WarningIsHealthy || s.cfg.Concurrency != DefaultConcurrency || s.cfg.WaitTime != DefaultWaitTime {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
}
