package snapshot

import (
	"context"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

// rollbackLoop is a loop with one source and policies, built by hand (no
// Run): the test drives applyPolicy, apply and build itself.
func rollbackLoop(t *testing.T, rollback bool) (*Loop, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l := NewLoop(Config{
		Sources: []string{"file"}, Translator: translator.New(), Publisher: &fakePublisher{},
		Policies: make(chan watch.Update), Metrics: NewMetrics(reg), NackRollback: rollback,
	})
	return l, reg
}

func timeoutPolicy(t *testing.T, file, timeout string) *policy.Set {
	t.Helper()
	set, diags := policy.Load([]policy.File{{Name: file, Data: []byte("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: api}\nspec:\n  timeout: " + timeout + "\n")}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	return set
}

func apiState(health sources.Health) sources.State {
	st := sources.State{Services: []sources.Service{{Name: "api", Instances: []sources.Instance{{Address: "10.0.0.1", Port: 80, Health: health, Weight: 1}}}}}
	st.Normalize("file")
	return st
}

// routes is the group's current route configuration version.
func routesVersion(l *Loop, key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.groups[key].versions[resource.RouteType]
}

// TestRollbackOfARejectedPolicyChange: a client that had accepted the
// routes of one policy set rejects those of the next; the loop serves the
// accepted set again (to every group), says which documents it refused,
// and keeps doing so until the policy files change again.
func TestRollbackOfARejectedPolicyChange(t *testing.T) {
	ctx := context.Background()
	l, reg := rollbackLoop(t, true)
	good, bad := timeoutPolicy(t, "good.yaml", "2s"), timeoutPolicy(t, "bad.yaml", "3s")
	l.applyPolicy(watch.Update{Set: good})
	st := apiState(sources.HealthHealthy)
	l.apply(sources.Event{Source: "file", State: &st})
	if err := l.EnsureGroup(sidecar); err != nil {
		t.Fatal(err)
	}
	l.build(ctx, false)
	key := sidecar.Key()
	accepted := routesVersion(l, key)

	l.applyPolicy(watch.Update{Set: bad})
	l.build(ctx, false)
	rejected := routesVersion(l, key)
	if rejected == accepted {
		t.Fatal("the policy change did not change the routes")
	}
	n := xds.NackEvent{NodeID: "web-1", Group: key, TypeURL: resource.RouteType, Version: rejected, Accepted: accepted, Detail: "rejected for the test", Resources: []string{"outbound_http"}}
	if d := l.considerRollback(n); d != "rolled back" {
		t.Fatalf("decision %q, want a rollback", d)
	}
	<-l.rebuild // what Run would do next
	l.build(ctx, false)
	if got := routesVersion(l, key); got != accepted {
		t.Errorf("after the rollback the routes are %s, want the accepted %s", got, accepted)
	}
	rb := l.Status().Rollback
	if rb == nil || rb.Node != "web-1" || rb.Error != "rejected for the test" || len(rb.RefusedDocuments) != 1 || !strings.HasPrefix(rb.RefusedDocuments[0], "bad.yaml:1 (ServicePolicy api)") || rb.Serving[0] != "good.yaml" {
		t.Errorf("status rollback %+v, want web-1's rejection, bad.yaml refused, good.yaml served", rb)
	}
	if v := gauge(t, l.cfg.Metrics.rolledBackNow); v != 1 {
		t.Errorf("sluice_policy_rolled_back %v, want 1", v)
	}
	// More rejections of the refused version change nothing.
	if d := l.considerRollback(n); d == "rolled back" {
		t.Error("a second rejection of the refused version rolled back again")
	}
	// New groups get the policy set served, too.
	other := translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "other"}
	if err := l.EnsureGroup(other); err != nil {
		t.Fatal(err)
	}
	l.build(ctx, true)
	l.mu.Lock()
	servedToNew := l.groups[other.Key()].builtPolicy
	l.mu.Unlock()
	if servedToNew != good {
		t.Error("a group made during the rollback was built from the refused policy set")
	}

	// The files change: the rollback is over.
	fixed := timeoutPolicy(t, "bad.yaml", "4s")
	l.applyPolicy(watch.Update{Set: fixed})
	if l.Status().Rollback != nil || gauge(t, l.cfg.Metrics.rolledBackNow) != 0 {
		t.Error("the rollback outlived a change of the policy files")
	}
	if got := counterValue(t, l.cfg.Metrics.rollbacks); got != 1 {
		t.Errorf("sluice_policy_rollbacks_total %v, want 1", got)
	}
	_ = reg
}

// TestNoRollbackOfRegistryChanges: a rejection of config that a registry
// change made is not rolled back (nor one made when rollback is off).
func TestNoRollbackOfRegistryChanges(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		rollback bool
		policy   bool // the policy changed between the builds
		want     string
	}{
		{"registry change", true, false, "not a policy change: the registry changed; reported only"},
		{"policy and registry of the rejected service changed", true, true, "the registry changed too; reported only"},
		{"rollback off", false, true, "rollback disabled (--nack-rollback=false)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, _ := rollbackLoop(t, tc.rollback)
			l.applyPolicy(watch.Update{Set: timeoutPolicy(t, "p.yaml", "2s")})
			st := apiState(sources.HealthHealthy)
			l.apply(sources.Event{Source: "file", State: &st})
			if err := l.EnsureGroup(sidecar); err != nil {
				t.Fatal(err)
			}
			l.build(ctx, false)
			key := sidecar.Key()
			accepted := l.groups[key].versions[resource.EndpointType]
			if tc.policy {
				l.applyPolicy(watch.Update{Set: timeoutPolicy(t, "p.yaml", "3s")})
			}
			st = apiState(sources.HealthUnhealthy)
			l.apply(sources.Event{Source: "file", State: &st})
			l.build(ctx, false)
			rejected := l.groups[key].versions[resource.EndpointType]
			n := xds.NackEvent{NodeID: "web-1", Group: key, TypeURL: resource.EndpointType, Version: rejected, Accepted: accepted, Resources: []string{"api"}}
			if d := l.considerRollback(n); string(d) != tc.want {
				t.Errorf("decision %q, want %q", d, tc.want)
			}
			if l.Status().Rollback != nil {
				t.Error("rolled back")
			}
		})
	}
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestRollbackWhenOnlyOtherServicesChanged: between the accepted and the
// rejected build the registry changed too, but not the rejected
// resource's service: the rejection is the policy's, and is rolled back.
func TestRollbackWhenOnlyOtherServicesChanged(t *testing.T) {
	ctx := context.Background()
	l, _ := rollbackLoop(t, true)
	cb := func(n string) *policy.Set {
		set, diags := policy.Load([]policy.File{{Name: "api.yaml", Data: []byte("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: api}\nspec:\n  circuitBreaker: {maxConnections: " + n + "}\n")}})
		if len(diags) > 0 {
			t.Fatal(diags)
		}
		return set
	}
	state := func(h sources.Health) *sources.State {
		st := sources.State{Services: []sources.Service{
			{Name: "api", Instances: []sources.Instance{{Address: "10.0.0.1", Port: 80, Health: sources.HealthHealthy, Weight: 1}}},
			{Name: "other", Instances: []sources.Instance{{Address: "10.0.0.2", Port: 80, Health: h, Weight: 1}}},
		}}
		st.Normalize("file")
		return &st
	}
	l.applyPolicy(watch.Update{Set: cb("100")})
	l.apply(sources.Event{Source: "file", State: state(sources.HealthHealthy)})
	if err := l.EnsureGroup(sidecar); err != nil {
		t.Fatal(err)
	}
	l.build(ctx, false)
	key := sidecar.Key()
	accepted := clustersVersion(l, key)
	l.applyPolicy(watch.Update{Set: cb("200")})
	l.apply(sources.Event{Source: "file", State: state(sources.HealthUnhealthy)})
	l.build(ctx, false)
	n := xds.NackEvent{NodeID: "web-1", Group: key, TypeURL: resource.ClusterType, Version: clustersVersion(l, key), Accepted: accepted, Resources: []string{"api"}}
	if d := l.considerRollback(n); d != "rolled back" {
		t.Errorf("decision %q, want a rollback: only other's instances changed", d)
	}
}

func clustersVersion(l *Loop, key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.groups[key].versions[resource.ClusterType]
}
