package etcd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/etcd/embedded"
)

// TestFollowsRegistry proves that the initial list and then every kind of
// change (add, health and weight updates, delete, lease expiry) each produce
// the right complete state, that a value change that does not change the
// state (a new timestamp) sends nothing, and that answered liveness probes
// never raise an Err.
func TestFollowsRegistry(t *testing.T) {
	e := startEtcd(t, embedded.Config{})
	cli := testClient(t, e.Endpoints())
	put(t, cli, "/services/api/10.0.0.1:8080", `{"status":"healthy","weight":10,"zone":"z1","region":"r1","metadata":{"version":"v1"},"timestamp":1700000000}`)
	put(t, cli, "/services/api/10.0.0.2:8080", "")
	put(t, cli, "/services/web/10.0.1.1:80", "10.0.1.1:80")
	put(t, cli, "/servicesx/api/10.0.0.9:8080", "") // outside the prefix
	put(t, cli, "/other/api/10.0.0.9:8080", "")

	// Frequent progress probes: answered, they must never look like an
	// outage (no Err event is allowed below).
	rec := startSource(t, Config{Endpoints: e.Endpoints()}, func(s *Source) { s.probeEvery = 20 * time.Millisecond })
	i, st := rec.nextState(t, 0)
	want := &sources.State{Services: []sources.Service{
		{Name: "api", Instances: []sources.Instance{
			{Address: "10.0.0.1", Port: 8080, Health: sources.HealthHealthy, Weight: 10, Zone: "z1", Region: "r1",
				Metadata: map[string]string{"version": "v1"}, Source: "etcd", Origin: "/services/api/10.0.0.1:8080"},
			{Address: "10.0.0.2", Port: 8080, Health: sources.HealthHealthy, Weight: 1, Source: "etcd", Origin: "/services/api/10.0.0.2:8080"},
		}},
		{Name: "web", Instances: []sources.Instance{
			{Address: "10.0.1.1", Port: 80, Health: sources.HealthHealthy, Weight: 1, Source: "etcd", Origin: "/services/web/10.0.1.1:80"},
		}},
	}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Fatalf("initial state (-want +got):\n%s", diff)
	}

	// A new timestamp alone changes no instance: no state is sent for it,
	// so the next state is the one for the change after it.
	put(t, cli, "/services/api/10.0.0.1:8080", `{"status":"healthy","weight":10,"zone":"z1","region":"r1","metadata":{"version":"v1"},"timestamp":1700000099}`)
	put(t, cli, "/services/web/10.0.1.2:80", "")
	i, st = rec.nextState(t, i+1)
	if find(st, "web", "10.0.1.2:80") == nil {
		t.Fatalf("the state after a timestamp-only update and an add lacks the add: %s", summary(st))
	}

	// Update health.
	put(t, cli, "/services/api/10.0.0.2:8080", `{"status":"unhealthy"}`)
	i, _ = rec.waitState(t, i+1, "api 10.0.0.2 unhealthy", func(st *sources.State) bool {
		in := find(st, "api", "10.0.0.2:8080")
		return in != nil && in.Health == sources.HealthUnhealthy
	})
	put(t, cli, "/services/api/10.0.0.2:8080", `{"status":"draining"}`)
	i, _ = rec.waitState(t, i+1, "api 10.0.0.2 draining", func(st *sources.State) bool {
		in := find(st, "api", "10.0.0.2:8080")
		return in != nil && in.Health == sources.HealthDraining
	})

	// Update weight.
	put(t, cli, "/services/api/10.0.0.1:8080", `{"weight":42}`)
	i, st = rec.waitState(t, i+1, "api 10.0.0.1 weight 42", func(st *sources.State) bool {
		in := find(st, "api", "10.0.0.1:8080")
		return in != nil && in.Weight == 42
	})
	if in := find(st, "api", "10.0.0.1:8080"); in.Zone != "" || in.Metadata != nil {
		t.Errorf("a rewritten value keeps nothing of the old one, got %+v", in)
	}

	// Delete.
	del(t, cli, "/services/web/10.0.1.1:80")
	i, _ = rec.waitState(t, i+1, "web 10.0.1.1 gone", func(st *sources.State) bool {
		return find(st, "web", "10.0.1.1:80") == nil && find(st, "web", "10.0.1.2:80") != nil
	})

	// Lease expiry: a registrant whose keepalives stop (its client closes)
	// loses its key when the lease runs out.
	reg, err := NewClient(Config{Endpoints: e.Endpoints(), Log: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	grant, err := reg.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	put(t, reg, "/services/batch/10.0.2.1:9000", `{"status":"healthy"}`, clientv3.WithLease(grant.ID))
	if _, err := reg.KeepAlive(ctx, grant.ID); err != nil {
		t.Fatal(err)
	}
	i, _ = rec.waitState(t, i+1, "batch registered", func(st *sources.State) bool {
		return find(st, "batch", "10.0.2.1:9000") != nil
	})
	_ = reg.Close()
	_, st = rec.waitState(t, i+1, "batch gone after its lease expired", func(st *sources.State) bool {
		return find(st, "batch", "10.0.2.1:9000") == nil
	})
	got := endpointsOf(st)
	wantEps := []string{"api/10.0.0.1:8080", "api/10.0.0.2:8080", "web/10.0.1.2:80"}
	if !sameStrings(got, wantEps) {
		t.Errorf("final endpoints = %v, want %v", got, wantEps)
	}
	for _, ev := range rec.since(0) {
		if ev.Err != nil {
			t.Errorf("unexpected Err event: %v", ev.Err)
		}
	}
}

// TestMalformedValues proves that bad entries are skipped one by one with a
// diagnostic naming the etcd key (and JSON field), while the good ones are
// served, at the first list and as they change.
func TestMalformedValues(t *testing.T) {
	e := startEtcd(t, embedded.Config{})
	cli := testClient(t, e.Endpoints())
	good := map[string]string{
		"/services/api/10.0.0.1:80": `{"status":"healthy","weight":5,"owner":"team-a","checks":[{"http":"/healthz"}]}`, // unknown fields are ignored
		"/services/web/10.0.0.1:80": `{}`,
	}
	type want struct{ field, message string }
	bad := map[string]want{
		"/services/api/10.0.0.2:80":      {"", "neither a JSON object nor host:port"},
		"/services/api/10.0.0.3:80":      {"weight", "must be from 0 to 65536, got -1"},
		"/services/api/10.0.0.4:80":      {"weight", "must be from 0 to 65536, got 70000"},
		"/services/api/10.0.0.5:80":      {"status", `unknown health "sleepy"`},
		"/services/api/10.0.0.6:80":      {"weight", "must be an integer, got string"},
		"/services/api/10.0.0.7:80":      {"metadata.build", "must be a string, got number"},
		"/services/api/10.0.0.8:99999":   {"", "bad port"},
		"/services/api/db.internal:80":   {"", "not an IP address"},
		"/services/Bad_Name/10.0.0.9:80": {"", "invalid service name"},
		"/services/api/10.0.0.10:80":     {"", "does not match the address"},
		"/services/api/0.0.0.0:80":       {"", "unspecified address"},
		"/services/api/10.0.0.11:80/x":   {"", "does not match the layout"},
		"/services/api/10.0.0.12:80":     {"zone", "must be a string, got number"},
		"/services/api/10.0.0.13:80":     {"", "must be a JSON object, got array"},
	}
	values := map[string]string{
		"/services/api/10.0.0.2:80":      `{"status": "healthy"`,
		"/services/api/10.0.0.3:80":      `{"weight":-1}`,
		"/services/api/10.0.0.4:80":      `{"weight":70000}`,
		"/services/api/10.0.0.5:80":      `{"status":"sleepy"}`,
		"/services/api/10.0.0.6:80":      `{"weight":"10"}`,
		"/services/api/10.0.0.7:80":      `{"metadata":{"build":42}}`,
		"/services/api/10.0.0.8:99999":   ``,
		"/services/api/db.internal:80":   ``,
		"/services/Bad_Name/10.0.0.9:80": ``,
		"/services/api/10.0.0.10:80":     `10.0.0.99:80`,
		"/services/api/0.0.0.0:80":       ``,
		"/services/api/10.0.0.11:80/x":   ``,
		"/services/api/10.0.0.12:80":     `{"zone":3}`,
		"/services/api/10.0.0.13:80":     `[1,2]`,
	}
	for k, v := range good {
		put(t, cli, k, v)
	}
	for k, v := range values {
		put(t, cli, k, v)
	}

	rec := startSource(t, Config{Endpoints: e.Endpoints()}, nil)
	i, st := rec.nextState(t, 0)
	if got, want := endpointsOf(st), []string{"api/10.0.0.1:80", "web/10.0.0.1:80"}; !sameStrings(got, want) {
		t.Fatalf("served endpoints = %v, want %v", got, want)
	}
	if in := find(st, "api", "10.0.0.1:80"); in.Weight != 5 {
		t.Errorf("api 10.0.0.1 weight = %d, want 5", in.Weight)
	}
	gotDiags := map[string]sources.Diagnostic{}
	for _, d := range st.Diagnostics {
		if _, dup := gotDiags[d.Location]; dup {
			t.Errorf("two diagnostics for %s", d.Location)
		}
		gotDiags[d.Location] = d
	}
	for key, w := range bad {
		d, ok := gotDiags[key]
		if !ok {
			t.Errorf("no diagnostic for %s", key)
			continue
		}
		if d.Severity != sources.SeverityError || d.Source != "etcd" || d.Field != w.field || !strings.Contains(d.Message, w.message) {
			t.Errorf("diagnostic for %s = %+v, want field %q and a message containing %q", key, d, w.field, w.message)
		}
	}
	if len(gotDiags) != len(bad) {
		t.Errorf("%d diagnostics, want %d: %v", len(gotDiags), len(bad), st.Diagnostics)
	}

	// A good key turning bad loses its instance and gains a diagnostic;
	// fixed, it comes back. Everything else carries on.
	put(t, cli, "/services/web/10.0.0.1:80", `{"weight":1.5}`)
	i, st = rec.waitState(t, i+1, "web instance rejected", func(st *sources.State) bool {
		return find(st, "web", "10.0.0.1:80") == nil
	})
	if find(st, "api", "10.0.0.1:80") == nil {
		t.Errorf("a bad value dropped another instance: %s", summary(st))
	}
	found := false
	for _, d := range st.Diagnostics {
		found = found || (d.Location == "/services/web/10.0.0.1:80" && d.Field == "weight")
	}
	if !found {
		t.Errorf("no weight diagnostic for the rejected key: %v", st.Diagnostics)
	}
	put(t, cli, "/services/web/10.0.0.1:80", `{"weight":2}`)
	_, st = rec.waitState(t, i+1, "web instance back", func(st *sources.State) bool {
		in := find(st, "web", "10.0.0.1:80")
		return in != nil && in.Weight == 2
	})
	for _, d := range st.Diagnostics {
		if d.Location == "/services/web/10.0.0.1:80" {
			t.Errorf("diagnostic of a fixed key remains: %v", d)
		}
	}
}

// TestCompactionWhileDisconnected cuts the source's connection, changes and
// compacts the registry, and restores the connection: the watch resumes at
// a compacted revision, gets ErrCompacted, and the source re-lists and
// converges with nothing duplicated. Then the same with a source that is
// stopped meanwhile and a new one started.
func TestCompactionWhileDisconnected(t *testing.T) {
	e := startEtcd(t, embedded.Config{})
	cli := testClient(t, e.Endpoints())
	put(t, cli, "/services/api/10.0.0.1:80", "")
	put(t, cli, "/services/api/10.0.0.2:80", "")
	put(t, cli, "/services/web/10.0.1.1:80", "")

	px := startProxy(t, hostPort(e.Endpoints()[0]))
	// A long grace period: the broken connection is not an outage, so the
	// watch itself resumes once the connection is back.
	rec := startSource(t, Config{Endpoints: []string{px.endpoint()}}, func(s *Source) { s.lostAfter = time.Minute })
	i, _ := rec.waitState(t, 0, "initial state", func(st *sources.State) bool { return len(endpointsOf(st)) == 3 })

	px.pause()
	put(t, cli, "/services/api/10.0.0.3:80", "")
	del(t, cli, "/services/api/10.0.0.1:80")
	put(t, cli, "/services/web/10.0.1.1:80", `{"weight":5}`)
	put(t, cli, "/services/web/10.0.1.9:80", "")
	del(t, cli, "/services/web/10.0.1.9:80")
	resp := put(t, cli, "/services/api/10.0.0.2:80", `{"status":"draining"}`)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	px.resume()

	wantEps := []string{"api/10.0.0.2:80", "api/10.0.0.3:80", "web/10.0.1.1:80"}
	_, st := rec.waitState(t, i+1, "converged state", func(st *sources.State) bool {
		return sameStrings(endpointsOf(st), wantEps)
	})
	if in := find(st, "web", "10.0.1.1:80"); in.Weight != 5 {
		t.Errorf("web 10.0.1.1 weight = %d, want 5", in.Weight)
	}
	if in := find(st, "api", "10.0.0.2:80"); in.Health != sources.HealthDraining {
		t.Errorf("api 10.0.0.2 health = %s, want draining", in.Health)
	}
	if n := rec.src.compactions.Load(); n < 1 {
		t.Errorf("the source re-listed after %d compaction errors, want at least 1", n)
	}
	for _, ev := range rec.since(0) {
		if ev.Err != nil {
			t.Errorf("unexpected Err event during a short disconnect: %v", ev.Err)
		}
	}

	// Stop the source, change and compact, start a new one.
	rec.stop()
	put(t, cli, "/services/api/10.0.0.4:80", "")
	del(t, cli, "/services/api/10.0.0.3:80")
	resp = put(t, cli, "/services/api/10.0.0.2:80", "")
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	rec2 := startSource(t, Config{Endpoints: e.Endpoints()}, nil)
	_, st = rec2.nextState(t, 0)
	if got, want := endpointsOf(st), []string{"api/10.0.0.2:80", "api/10.0.0.4:80", "web/10.0.1.1:80"}; !sameStrings(got, want) {
		t.Errorf("new source after compaction: endpoints = %v, want %v", got, want)
	}
}

// TestEtcdStopAndRestart stops etcd under a running source: one Err event
// (however many retries fail), no state (certainly no empty one) while etcd
// is down. etcd restarted on the same data dir and port, with changes: the
// source re-lists and converges.
func TestEtcdStopAndRestart(t *testing.T) {
	dir := t.TempDir()
	e := startEtcd(t, embedded.Config{DataDir: dir})
	endpoints := e.Endpoints()
	cli := testClient(t, endpoints)
	put(t, cli, "/services/api/10.0.0.1:80", "")
	put(t, cli, "/services/api/10.0.0.2:80", "")

	rec := startSource(t, Config{Endpoints: endpoints}, func(s *Source) {
		s.lostAfter = 200 * time.Millisecond
		s.requestTimeout = 300 * time.Millisecond
		s.backoffMin, s.backoffMax = 50*time.Millisecond, 300*time.Millisecond
	})
	i, _ := rec.waitState(t, 0, "initial state", func(st *sources.State) bool { return len(endpointsOf(st)) == 2 })

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	j := rec.wait(t, i+1, "Err event", func(ev sources.Event) bool { return ev.Err != nil })
	for _, ev := range rec.since(i + 1)[:j-i-1] {
		t.Errorf("event before the Err event while etcd is down: %+v", ev)
	}
	// Let several retries fail while etcd is down.
	failures := rec.src.failures.Load()
	waitFor(t, "three more failed retries", func() bool { return rec.src.failures.Load() >= failures+3 })

	e2 := startEtcd(t, embedded.Config{DataDir: dir, ClientURL: endpoints[0]})
	if got := e2.Endpoints(); !sameStrings(got, endpoints) {
		t.Fatalf("restarted etcd listens on %v, want %v", got, endpoints)
	}
	cli2 := testClient(t, endpoints)
	put(t, cli2, "/services/api/10.0.0.3:80", "")
	del(t, cli2, "/services/api/10.0.0.1:80")

	wantEps := []string{"api/10.0.0.2:80", "api/10.0.0.3:80"}
	k, _ := rec.waitState(t, j+1, "converged state", func(st *sources.State) bool {
		return sameStrings(endpointsOf(st), wantEps)
	})
	errs := 0
	for _, ev := range rec.since(i + 1)[:k-i] {
		if ev.Err != nil {
			errs++
		} else if n := len(endpointsOf(ev.State)); n == 0 {
			t.Errorf("an empty state was sent: %+v", ev)
		}
	}
	if errs != 1 {
		t.Errorf("%d Err events for one outage, want 1:\n%s", errs, rec.describe(i+1))
	}
}

// TestUnresponsiveEtcd freezes the connection (it stays open, nothing
// passes: a hung server or a half-open connection): the unanswered watch
// progress request turns into an Err event, and once etcd answers again the
// source re-lists and goes on.
func TestUnresponsiveEtcd(t *testing.T) {
	e := startEtcd(t, embedded.Config{})
	cli := testClient(t, e.Endpoints())
	put(t, cli, "/services/api/10.0.0.1:80", "")
	px := startProxy(t, hostPort(e.Endpoints()[0]))
	rec := startSource(t, Config{Endpoints: []string{px.endpoint()}}, func(s *Source) {
		s.lostAfter = time.Minute // the connection looks fine throughout
		s.probeEvery = 100 * time.Millisecond
		s.requestTimeout = 500 * time.Millisecond
		s.backoffMin, s.backoffMax = 50*time.Millisecond, 200*time.Millisecond
	})
	i, _ := rec.nextState(t, 0)
	// A change arriving proves the watch is established.
	put(t, cli, "/services/api/10.0.0.3:80", "")
	i, _ = rec.waitState(t, i+1, "watched change", func(st *sources.State) bool { return find(st, "api", "10.0.0.3:80") != nil })

	px.freeze()
	j := rec.wait(t, i+1, "Err event", func(ev sources.Event) bool { return ev.Err != nil })
	for _, ev := range rec.since(i + 1)[:j-i-1] {
		t.Errorf("event before the Err event while etcd is unresponsive: %+v", ev)
	}
	if err := rec.event(j).Err; !strings.Contains(err.Error(), "did not answer a read") {
		t.Errorf("Err = %v, want the unanswered liveness read", err)
	}
	put(t, cli, "/services/api/10.0.0.2:80", "")
	px.thaw()
	_, _ = rec.waitState(t, j+1, "recovered state", func(st *sources.State) bool {
		return sameStrings(endpointsOf(st), []string{"api/10.0.0.1:80", "api/10.0.0.2:80", "api/10.0.0.3:80"})
	})
}

// TestRegister proves the registration helper: the instance appears with
// its values, under a lease, and disappears at once when its context ends.
func TestRegister(t *testing.T) {
	e := startEtcd(t, embedded.Config{})
	cli := testClient(t, e.Endpoints())
	rec := startSource(t, Config{Endpoints: e.Endpoints()}, nil)
	i, _ := rec.nextState(t, 0)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Register(ctx, cli, "", "api", "10.0.0.1:8080", 30*time.Second, Registration{
			Status: "draining", Weight: 3, Zone: "z1", Metadata: map[string]string{"version": "v2"}, Timestamp: 1700000000,
		})
	}()
	i, st := rec.waitState(t, i+1, "registered instance", func(st *sources.State) bool { return find(st, "api", "10.0.0.1:8080") != nil })
	in := find(st, "api", "10.0.0.1:8080")
	if in.Health != sources.HealthDraining || in.Weight != 3 || in.Zone != "z1" || in.Metadata["version"] != "v2" {
		t.Errorf("registered instance = %+v", in)
	}
	gctx, gcancel := context.WithTimeout(context.Background(), waitTimeout)
	defer gcancel()
	resp, err := cli.Get(gctx, RegistrationKey("", "api", "10.0.0.1:8080"))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("registration key: %v, %v (want one key with a lease)", resp, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Register returned %v after its context ended, want nil", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Register did not return after its context ended")
	}
	// Revoked, not expired: the key is gone before the 30s TTL.
	_, _ = rec.waitState(t, i+1, "deregistered instance", func(st *sources.State) bool { return find(st, "api", "10.0.0.1:8080") == nil })

	for _, tc := range []struct {
		name, service, hostport string
		ttl                     time.Duration
		value                   Registration
		want                    string
	}{
		{"service", "Bad Name", "10.0.0.1:80", time.Minute, Registration{}, "invalid service name"},
		{"address", "api", "db:80", time.Minute, Registration{}, "not an IP address"},
		{"status", "api", "10.0.0.1:80", time.Minute, Registration{Status: "meh"}, "status"},
		{"weight", "api", "10.0.0.1:80", time.Minute, Registration{Weight: 1 << 20}, "weight"},
		{"ttl", "api", "10.0.0.1:80", time.Millisecond, Registration{}, "ttl"},
	} {
		err := Register(context.Background(), cli, "", tc.service, tc.hostport, tc.ttl, tc.value)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Register = %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}
