package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// waitTimeout bounds every wait for something that must happen.
const waitTimeout = 5 * time.Second

var sidecar = translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web"}

// fakePublisher records every SetSnapshot call; fail, when set, decides
// the error each call returns.
type fakePublisher struct {
	mu      sync.Mutex
	calls   []publishCall
	fail    func(node string) error
	cleared []string
}

type publishCall struct {
	node string
	snap *cache.Snapshot
	at   time.Time
	err  error
}

func (p *fakePublisher) SetSnapshot(_ context.Context, node string, snap cache.ResourceSnapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	if p.fail != nil {
		err = p.fail(node)
	}
	p.calls = append(p.calls, publishCall{node: node, snap: snap.(*cache.Snapshot), at: time.Now(), err: err})
	return err
}

func (p *fakePublisher) ClearSnapshot(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleared = append(p.cleared, node)
}

func (p *fakePublisher) setFail(f func(node string) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = f
}

// published returns the successful calls.
func (p *fakePublisher) published() []publishCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []publishCall
	for _, c := range p.calls {
		if c.err == nil {
			out = append(out, c)
		}
	}
	return out
}

func (p *fakePublisher) count() int { return len(p.published()) }

func (p *fakePublisher) attempts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls)
}

// last returns the last snapshot successfully published for node.
func (p *fakePublisher) last(t *testing.T, node string) *cache.Snapshot {
	t.Helper()
	calls := p.published()
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].node == node {
			return calls[i].snap
		}
	}
	t.Fatalf("nothing published for %s", node)
	return nil
}

type testLoop struct {
	*Loop
	t      *testing.T
	events chan sources.Event
	pub    *fakePublisher
}

// startLoop runs a loop with a fake publisher until the test ends. cfg's
// Translator and Publisher are filled in, and its Log if it has none.
func startLoop(t *testing.T, cfg Config) *testLoop {
	t.Helper()
	pub := &fakePublisher{}
	cfg.Translator = translator.New()
	cfg.Publisher = pub
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	l := NewLoop(cfg)
	events := make(chan sources.Event)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.Run(ctx, events)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &testLoop{Loop: l, t: t, events: events, pub: pub}
}

func (l *testLoop) send(ev sources.Event) {
	l.t.Helper()
	select {
	case l.events <- ev:
	case <-time.After(waitTimeout):
		l.t.Fatal("loop did not take the event")
	}
}

// setState sends st as source's new state.
func (l *testLoop) setState(source string, st sources.State) {
	l.t.Helper()
	st.Normalize(source)
	l.send(sources.Event{Source: source, State: &st})
}

// builds reads the loop's sluice_snapshot_builds_total{result}.
func (l *testLoop) builds(result string) float64 {
	l.t.Helper()
	return counter(l.t, l.cfg.Metrics.snapshots, result)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, waitTimeout, what, cond)
}

func waitWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v", what, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// service returns a state with one service of n instances on port.
func service(name string, n int, port uint32) sources.State {
	svc := sources.Service{Name: name}
	for i := 1; i <= n; i++ {
		svc.Instances = append(svc.Instances, sources.Instance{
			Address: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Port: port, Health: sources.HealthHealthy,
		})
	}
	return sources.State{Services: []sources.Service{svc}}
}

// endpointCount counts the endpoints of cluster in snap.
func endpointCount(t *testing.T, snap *cache.Snapshot, cluster string) int {
	t.Helper()
	r, ok := snap.GetResources(resource.EndpointType)[cluster]
	if !ok {
		t.Fatalf("snapshot has no load assignment %q", cluster)
	}
	n := 0
	for _, l := range r.(*endpointv3.ClusterLoadAssignment).GetEndpoints() {
		n += len(l.GetLbEndpoints())
	}
	return n
}

func resourceNames(snap *cache.Snapshot, typ resource.Type) []string {
	var out []string
	for n := range snap.GetResources(typ) {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestLoopWaitsForEverySource(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a", "b"}, HoldOff: 5 * time.Millisecond})
	mustEnsure(t, l, sidecar)
	if l.Ready() || l.Status().Ready {
		t.Error("loop is ready before any source synced")
	}

	l.setState("a", service("svc-a", 1, 80))
	waitFor(t, "source a to be recorded", func() bool { return l.Status().Sources["a"].Synced })
	// Bounded wait for an absence: many hold-off periods pass, and with b
	// unsynced nothing may be built.
	time.Sleep(20 * 5 * time.Millisecond)
	if n := l.pub.attempts(); n != 0 {
		t.Fatalf("published %d snapshots before source b synced", n)
	}
	if l.Ready() || len(l.Catalog().Services) != 0 {
		t.Fatalf("before b synced: ready %v, catalog %+v", l.Ready(), l.Catalog())
	}

	l.setState("b", service("svc-b", 1, 80))
	waitFor(t, "first snapshot", func() bool { return l.pub.count() == 1 })
	snap := l.pub.last(t, sidecar.Key())
	if d := cmp.Diff([]string{"svc-a", "svc-b"}, resourceNames(snap, resource.ClusterType)); d != "" {
		t.Errorf("first snapshot's clusters (-want +got):\n%s", d)
	}
	waitFor(t, "readiness", l.Ready)
}

func TestLoopReadiness(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: 5 * time.Millisecond})
	st := l.Status()
	if l.Ready() || st.Ready || st.Sources["a"].Synced {
		t.Fatalf("before sync: Ready() %v, status %+v", l.Ready(), st)
	}
	// No proxy has connected: the loop still translates the catalog once
	// to validate it, and that is what makes it ready.
	l.setState("a", service("svc", 1, 80))
	waitFor(t, "readiness", l.Ready)
	if st := l.Status(); !st.Ready || st.LastError != "" || len(st.Groups) != 0 {
		t.Errorf("after sync: status %+v", st)
	}
	if n := l.pub.attempts(); n != 0 {
		t.Errorf("published %d snapshots with no proxy group", n)
	}
}

func TestLoopDebouncesBursts(t *testing.T) {
	// Generous, so that a slow machine still sends the burst well within
	// one hold-off.
	const holdOff = 200 * time.Millisecond
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: holdOff, MaxDelay: 10 * time.Second})
	mustEnsure(t, l, sidecar)
	l.setState("a", service("svc", 1, 80))
	waitFor(t, "first snapshot", func() bool { return l.pub.count() == 1 })

	// A burst of states, each well within the hold-off of the last.
	const burst = 20
	for i := 2; i <= burst+1; i++ {
		l.setState("a", service("svc", i, 80))
	}
	waitFor(t, "snapshot of the burst", func() bool { return l.pub.count() >= 2 })
	// Bounded wait for an absence: more hold-offs pass without a further
	// build.
	time.Sleep(2 * holdOff)
	if n := l.pub.count(); n != 2 {
		t.Fatalf("%d snapshots published for a burst of %d states, want 1", n-1, burst)
	}
	if got := endpointCount(t, l.pub.last(t, sidecar.Key()), "svc"); got != burst+1 {
		t.Errorf("the burst's snapshot has %d endpoints, want the last state's %d", got, burst+1)
	}
	if n := l.builds("published") + l.builds("unchanged"); n != 2 {
		t.Errorf("%v group builds, want 2 (first state and burst)", n)
	}
}

func TestLoopMaxDelay(t *testing.T) {
	const (
		holdOff  = 100 * time.Millisecond
		maxDelay = 300 * time.Millisecond
		every    = 20 * time.Millisecond // much shorter than the hold-off
		streamed = 1200 * time.Millisecond
	)
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: holdOff, MaxDelay: maxDelay})
	mustEnsure(t, l, sidecar)
	l.setState("a", service("svc", 1, 80))
	waitFor(t, "first snapshot", func() bool { return l.pub.count() == 1 })

	// Changes keep coming faster than the hold-off for a while; sleeping
	// here paces the stream, it does not wait for a result.
	start := time.Now()
	var last time.Time
	for i := 2; time.Since(start) < streamed; i++ {
		l.setState("a", service("svc", i, 80))
		last = time.Now()
		time.Sleep(every)
	}
	var during []time.Time
	for _, c := range l.pub.published()[1:] {
		if c.at.Before(last) {
			during = append(during, c.at)
		}
	}
	// Without MaxDelay nothing would be built until the stream stopped.
	if len(during) < 2 {
		t.Fatalf("%d snapshots published during %v of changes, want at least 2 with MaxDelay %v", len(during), streamed, maxDelay)
	}
	const slack = 250 * time.Millisecond
	prev := start
	for _, at := range during {
		if gap := at.Sub(prev); gap > maxDelay+slack {
			t.Errorf("a snapshot came %v after the previous one (or the first change), want at most MaxDelay %v (+%v slack)", gap, maxDelay, slack)
		}
		prev = at
	}
}

func TestLoopSourceErrorKeepsLastState(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a", "b"}, HoldOff: 5 * time.Millisecond})
	mustEnsure(t, l, sidecar)
	l.setState("a", service("svc-a", 2, 80))
	l.setState("b", service("svc-b", 1, 80))
	waitFor(t, "first snapshot", func() bool { return l.pub.count() == 1 })
	waitFor(t, "readiness", l.Ready)
	before := l.Catalog()

	diag := sources.Diagnostic{Severity: sources.SeverityError, Source: "a", Location: "registry.yaml:3", Message: "bad port"}
	l.send(sources.Event{Source: "a", Err: errors.New("registry unreachable"), Diagnostics: []sources.Diagnostic{diag}})
	waitFor(t, "source a to turn stale", func() bool { return l.Status().Sources["a"].Stale })
	st := l.Status()
	a := st.Sources["a"]
	if !a.Synced || a.Error != "registry unreachable" || len(a.Diagnostics) != 1 || a.Diagnostics[0] != diag {
		t.Errorf("stale source status = %+v", a)
	}
	if st.Sources["b"].Stale || !st.Ready {
		t.Errorf("status after a's error: %+v", st)
	}
	if d := cmp.Diff(before, l.Catalog()); d != "" {
		t.Errorf("catalog changed on a source error (-before +after):\n%s", d)
	}
	// Bounded wait for an absence: an error schedules no build.
	time.Sleep(20 * 5 * time.Millisecond)
	if n := l.pub.attempts(); n != 1 {
		t.Errorf("%d snapshots published after a source error, want none", n-1)
	}

	// The source recovers: its new state replaces the old and clears the error.
	l.setState("a", service("svc-a", 3, 80))
	waitFor(t, "snapshot after recovery", func() bool { return l.pub.count() == 2 })
	if a := l.Status().Sources["a"]; a.Stale || a.Error != "" || len(a.Diagnostics) != 0 {
		t.Errorf("recovered source status = %+v", a)
	}
	if n := endpointCount(t, l.pub.last(t, sidecar.Key()), "svc-a"); n != 3 {
		t.Errorf("svc-a has %d endpoints after recovery, want 3", n)
	}
}

func TestLoopIdenticalStatePublishesNothing(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: 5 * time.Millisecond})
	mustEnsure(t, l, sidecar)
	l.setState("a", service("svc", 2, 80))
	waitFor(t, "first snapshot", func() bool { return l.pub.count() == 1 })

	l.setState("a", service("svc", 2, 80))
	waitFor(t, "rebuild of the same state", func() bool { return l.builds("unchanged") == 1 })
	if n := l.pub.attempts(); n != 1 {
		t.Errorf("an identical state was published again (%d publishes)", n)
	}
}

func TestLoopEnsureGroupBuildsAtOnce(t *testing.T) {
	// A hold-off far longer than the test: only EnsureGroup can cause a build.
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: time.Minute})
	l.setState("a", service("svc", 2, 80))
	waitFor(t, "source a to be recorded", func() bool { return l.Status().Sources["a"].Synced })

	mustEnsure(t, l, sidecar)
	waitWithin(t, time.Second, "the sidecar group's snapshot", func() bool { return l.pub.count() == 1 })
	if got := resourceNames(l.pub.last(t, sidecar.Key()), resource.ListenerType); !cmp.Equal(got, []string{translator.OutboundListenerName}) {
		t.Errorf("sidecar listeners = %v", got)
	}

	grpc := translator.Proxy{Kind: translator.KindGRPC}
	mustEnsure(t, l, grpc)
	waitWithin(t, time.Second, "the gRPC group's snapshot", func() bool { return l.pub.count() == 2 })
	snap := l.pub.last(t, grpc.Key())
	for name, r := range snap.GetResources(resource.ListenerType) {
		if r.(*listenerv3.Listener).GetApiListener() == nil {
			t.Errorf("gRPC group got listener %s, which is not an API listener", name)
		}
	}
	if calls := l.pub.published(); calls[0].node != sidecar.Key() || calls[1].node != grpc.Key() {
		t.Errorf("published for %s then %s", calls[0].node, calls[1].node)
	}

	// A known group is not built again.
	mustEnsure(t, l, sidecar)
	time.Sleep(100 * time.Millisecond) // bounded wait for an absence
	if n := l.pub.attempts(); n != 2 {
		t.Errorf("EnsureGroup of a known group published again (%d publishes)", n)
	}
	st := l.Status()
	if len(st.Groups) != 2 || st.Groups[0].Key != "envoy/sidecar/web" || st.Groups[1].Key != "grpc" {
		t.Fatalf("status groups = %+v", st.Groups)
	}
	for _, g := range st.Groups {
		if len(g.Versions) != 4 || g.Error != "" {
			t.Errorf("group %s: versions %v, error %q", g.Key, g.Versions, g.Error)
		}
	}
}

func TestLoopTranslationFailureKeepsLastGoodSnapshot(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: 5 * time.Millisecond})
	mustEnsure(t, l, sidecar)
	l.setState("a", service("svc", 2, 80))
	waitFor(t, "first snapshot", func() bool { return l.pub.count() == 1 })
	waitFor(t, "readiness", l.Ready)
	good := l.Status().Groups[0].Versions

	// Label values that are not UTF-8 cannot be marshalled, so the build
	// fails. Normalize repairs them, so send the state without it: the
	// loop must not rely on every source normalizing.
	bad := service("svc", 3, 80)
	bad.Normalize("a")
	bad.Services[0].Instances[0].Metadata = map[string]string{"team": "\xff"}
	l.send(sources.Event{Source: "a", State: &bad})
	waitFor(t, "the build to fail", func() bool { return l.Status().LastError != "" && l.Status().Groups[0].Error != "" })
	st := l.Status()
	if n := l.pub.attempts(); n != 1 {
		t.Errorf("a failed build was published (%d publishes)", n)
	}
	if !st.Ready {
		t.Error("a failed build made the loop unready; it keeps serving the last good snapshot")
	}
	if d := cmp.Diff(good, st.Groups[0].Versions); d != "" {
		t.Errorf("group versions changed on a failed build (-good +now):\n%s", d)
	}
	if n := l.builds("failed"); n == 0 {
		t.Error("failed builds are not counted")
	}

	l.setState("a", service("svc", 3, 80))
	waitFor(t, "snapshot after the fix", func() bool { return l.pub.count() == 2 })
	waitFor(t, "the error to clear", func() bool { return l.Status().LastError == "" })
	if g := l.Status().Groups[0]; g.Error != "" {
		t.Errorf("group error %q after a good build", g.Error)
	}
	if n := endpointCount(t, l.pub.last(t, sidecar.Key()), "svc"); n != 3 {
		t.Errorf("svc has %d endpoints, want 3", n)
	}
}

func TestLoopPublishFailureIsReported(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: 5 * time.Millisecond})
	mustEnsure(t, l, sidecar)
	l.setState("a", service("svc", 2, 80))
	waitFor(t, "first snapshot", func() bool { return l.pub.count() == 1 })

	l.pub.setFail(func(string) error { return errors.New("cache is closed") })
	l.setState("a", service("svc", 3, 80))
	waitFor(t, "the publish to fail", func() bool { return l.Status().LastError != "" })
	if got, want := l.Status().LastError, "publishing snapshot for envoy/sidecar/web: cache is closed"; got != want {
		t.Errorf("LastError = %q, want %q", got, want)
	}
	if n := endpointCount(t, l.pub.last(t, sidecar.Key()), "svc"); n != 2 {
		t.Errorf("last published snapshot has %d endpoints, want the last good 2", n)
	}

	l.pub.setFail(nil)
	l.setState("a", service("svc", 4, 80))
	waitFor(t, "snapshot after recovery", func() bool { return l.pub.count() == 2 })
	waitFor(t, "the error to clear", func() bool { return l.Status().LastError == "" })
}

func TestLoopRetriesFailedPublish(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: 5 * time.Millisecond})
	mustEnsure(t, l, sidecar)
	l.pub.setFail(func(string) error { return errors.New("cache is closed") })
	l.setState("a", service("svc", 2, 80))
	waitFor(t, "the publish to fail", func() bool { return l.Status().LastError != "" })

	l.pub.setFail(nil)
	l.setState("a", service("svc", 2, 80)) // the same state again
	waitFor(t, "the rebuild", func() bool { return l.builds("unchanged")+l.builds("published") >= 1 })
	if l.pub.count() != 1 {
		t.Fatalf("the snapshot that failed to publish was not published on the next build; "+
			"status %+v claims versions the publisher never got", l.Status().Groups)
	}
}

// TestLoopDefaults: a Config that sets only what it must (sources,
// translator, publisher) gets the documented defaults, and the loop made
// from it builds, publishes and reports: its logs, metrics and spans go
// nowhere, not to a nil pointer.
func TestLoopDefaults(t *testing.T) {
	pub := &fakePublisher{}
	l := NewLoop(Config{Sources: []string{"a"}, Translator: translator.New(), Publisher: pub})
	c := l.cfg
	if c.HoldOff != 100*time.Millisecond || c.MaxDelay != time.Second || c.GroupIdleTTL != DefaultGroupIdleTTL ||
		c.MaxGroups != DefaultMaxGroups || c.GroupRate != DefaultGroupRate {
		t.Errorf("defaults: hold-off %v, max delay %v, idle TTL %v, max groups %d, group rate %v",
			c.HoldOff, c.MaxDelay, c.GroupIdleTTL, c.MaxGroups, c.GroupRate)
	}
	if c.Now == nil || c.Log == nil || c.Metrics == nil || c.Tracer == nil || c.Memory == nil {
		t.Fatalf("defaults left unset: now %v, log %v, metrics %v, tracer %v, memory %v",
			c.Now != nil, c.Log != nil, c.Metrics != nil, c.Tracer != nil, c.Memory != nil)
	}
	if got := (Config{HoldOff: time.Second, MaxDelay: time.Millisecond}).withDefaults().MaxDelay; got != 10*time.Second {
		t.Errorf("a max delay below the hold-off became %v, want ten hold-offs", got)
	}

	st := service("svc", 1, 80)
	st.Normalize("a")
	l.apply(sources.Event{Source: "a", State: &st})
	mustEnsure(t, l, sidecar)
	l.build(context.Background(), false)
	if n := pub.count(); n != 1 || !l.Ready() {
		t.Fatalf("after a build: %d snapshots published, ready %v; want 1 and ready", n, l.Ready())
	}
	l.apply(sources.Event{Source: "a", Err: errors.New("down")})
	if a := l.Status().Sources["a"]; !a.Stale || a.Error != "down" {
		t.Errorf("source a after an error: %+v", a)
	}
}

// TestLoopDropsIdleGroups: a group whose last proxy left is dropped (and its
// snapshot cleared) after GroupIdleTTL; a group whose proxy came back in
// time is kept.
func TestLoopDropsIdleGroups(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: 5 * time.Millisecond, GroupIdleTTL: 50 * time.Millisecond})
	back := translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "api"}
	mustEnsure(t, l, sidecar)
	mustEnsure(t, l, back)
	l.setState("a", service("svc", 1, 80))
	waitFor(t, "both groups published", func() bool { return len(l.Status().Groups) == 2 && l.pub.count() == 2 })

	l.ReleaseGroup(sidecar)
	l.ReleaseGroup(back)
	mustEnsure(t, l, back) // its proxy reconnects at once
	waitFor(t, "the idle group to be dropped", func() bool {
		l.pub.mu.Lock()
		defer l.pub.mu.Unlock()
		return len(l.pub.cleared) > 0
	})
	l.pub.mu.Lock()
	cleared := append([]string(nil), l.pub.cleared...)
	l.pub.mu.Unlock()
	if len(cleared) != 1 || cleared[0] != sidecar.Key() {
		t.Fatalf("cleared %v, want only %s", cleared, sidecar.Key())
	}
	st := l.Status()
	if len(st.Groups) != 1 || st.Groups[0].Key != back.Key() {
		t.Fatalf("groups %+v, want only %s", st.Groups, back.Key())
	}
}

// TestLoopScopesGroupsByDependencies: a sidecar group gets the services its
// policy names as dependencies, the status shows the set and what of it is
// not in the catalog, and a new policy set widens the group without
// anything else happening.
func TestLoopScopesGroupsByDependencies(t *testing.T) {
	policies := make(chan watch.Update, 1)
	l := startLoop(t, Config{Sources: []string{"a"}, Policies: policies, HoldOff: time.Millisecond})
	policies <- watch.Update{Set: webDependencies(t, "[api, ghost]")}
	st := service("api", 1, 80)
	st.Services = append(st.Services, service("db", 1, 5432).Services...)
	l.setState("a", st)
	web := translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web"}
	other := translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "batch"}
	mustEnsure(t, l, web)
	mustEnsure(t, l, other)
	waitFor(t, "both groups' snapshots", func() bool {
		seen := map[string]bool{}
		for _, c := range l.pub.published() {
			seen[c.node] = true
		}
		return seen[web.Key()] && seen[other.Key()]
	})
	if got := resourceNames(l.pub.last(t, web.Key()), resource.ClusterType); !cmp.Equal(got, []string{"api"}) {
		t.Errorf("web's clusters = %v, want only its dependency api", got)
	}
	if got := resourceNames(l.pub.last(t, other.Key()), resource.ClusterType); !cmp.Equal(got, []string{"api", "db"}) {
		t.Errorf("batch's clusters = %v, want every service", got)
	}
	var ws GroupStatus
	for _, g := range l.Status().Groups {
		if g.Key == web.Key() {
			ws = g
		}
	}
	if !cmp.Equal(ws.Dependencies.Services, []string{"api", "ghost"}) || !cmp.Equal(ws.Missing, []string{"ghost"}) {
		t.Errorf("web's status: dependencies %+v, missing %v", ws.Dependencies, ws.Missing)
	}
	policies <- watch.Update{Set: webDependencies(t, "[api, db]")}
	waitFor(t, "web to get db", func() bool {
		return cmp.Equal(resourceNames(l.pub.last(t, web.Key()), resource.ClusterType), []string{"api", "db"})
	})
}

// TestLoopStatusShowsBuiltDependencies: a group's dependencies in the status
// are those its snapshot was built for, not a newer policy set's that is
// still waiting out the debounce.
func TestLoopStatusShowsBuiltDependencies(t *testing.T) {
	policies := make(chan watch.Update, 1)
	// A hold-off far longer than the test: only EnsureGroup builds.
	l := startLoop(t, Config{Sources: []string{"a"}, Policies: policies, HoldOff: time.Minute})
	policies <- watch.Update{Set: webDependencies(t, "[api]")}
	l.setState("a", service("api", 1, 80))
	waitFor(t, "the first policy set", func() bool { return l.Status().Policy.Synced })
	web := translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: "web"}
	mustEnsure(t, l, web)
	waitFor(t, "web's snapshot", func() bool { return l.pub.count() == 1 })
	first := l.Status().Policy.LastUpdate
	policies <- watch.Update{Set: webDependencies(t, "[api, db]")}
	waitFor(t, "the second policy set to be recorded", func() bool { return l.Status().Policy.LastUpdate != first })
	for _, g := range l.Status().Groups {
		if g.Key == web.Key() && !cmp.Equal(g.Dependencies.Services, []string{"api"}) {
			t.Fatalf("web's dependencies before its next build = %v, want the built [api]", g.Dependencies.Services)
		}
	}
}

// mustEnsure registers p's group, failing the test if it is refused.
func mustEnsure(t *testing.T, l interface{ EnsureGroup(translator.Proxy) error }, p translator.Proxy) {
	t.Helper()
	if err := l.EnsureGroup(p); err != nil {
		t.Fatalf("EnsureGroup(%s): %v", p.Key(), err)
	}
}

// TestLoopCoalescesFlappingHealth: one instance flipping its health every
// 20 ms for 1.5 s (75 changes) costs a handful of builds, not 75: the
// hold-off coalesces the flips and the maximum delay bounds how long a
// proxy waits, so a flapping registry entry never becomes a push storm.
// The last state is published once the flapping stops.
func TestLoopCoalescesFlappingHealth(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: 100 * time.Millisecond, MaxDelay: time.Second})
	st := service("svc", 3, 80)
	l.setState("a", st)
	mustEnsure(t, l, sidecar)
	waitFor(t, "the first snapshot", func() bool { return l.pub.count() == 1 })
	builds := func() float64 { return l.builds("published") + l.builds("unchanged") }
	before := builds()

	flips := 0
	tick := time.NewTicker(20 * time.Millisecond) // paces the changes
	defer tick.Stop()
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); <-tick.C {
		next := service("svc", 3, 80)
		if flips%2 == 0 {
			next.Services[0].Instances[0].Health = sources.HealthUnhealthy
		}
		l.setState("a", next)
		flips++
	}
	want := flips%2 == 1 // the last change made the instance unhealthy
	waitFor(t, "the last state to be published", func() bool {
		cla := l.pub.last(t, sidecar.Key()).GetResources(resource.EndpointType)["svc"].(*endpointv3.ClusterLoadAssignment)
		unhealthy := false
		for _, loc := range cla.GetEndpoints() {
			for _, ep := range loc.GetLbEndpoints() {
				unhealthy = unhealthy || ep.GetHealthStatus() == corev3.HealthStatus_UNHEALTHY
			}
		}
		return unhealthy == want
	})
	// 1.5 s of changes: a build at most every MaxDelay while they last,
	// one after they stop, and slack for a slow machine. (A build whose
	// result equals what was published, as a flip and its flip back do,
	// publishes nothing.)
	if n := builds() - before; n > 5 || n < 2 {
		t.Fatalf("%d flips made %v builds, want a handful (2-5)", flips, n)
	}
	t.Logf("%d flips, %v builds, %d snapshots published", flips, builds()-before, l.pub.count()-1)
}

// webDependencies is a policy set whose ServicePolicy for web has deps (a
// YAML list) as its dependencies.
func webDependencies(t *testing.T, deps string) *policy.Set {
	t.Helper()
	set, diags := policy.Load([]policy.File{{Name: "web.yaml", Data: []byte(
		"apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: web}\nspec:\n  dependencies: " + deps + "\n")}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	return set
}

// TestLoopReportsTranslatorDiagnostics: a problem the translator meets (a
// tracing collector that is not in the catalog) shows in the status, for
// the loop and for the group, and in sluice_source_diagnostics; it clears
// when the collector registers.
func TestLoopReportsTranslatorDiagnostics(t *testing.T) {
	policies := make(chan watch.Update, 1)
	l := startLoop(t, Config{Sources: []string{"a"}, Policies: policies, HoldOff: time.Millisecond})
	set, diags := policy.Load([]policy.File{{Name: "mesh.yaml", Data: []byte(
		"apiVersion: sluice.dev/v1\nkind: MeshPolicy\nmetadata: {name: mesh}\nspec:\n  tracing: {collector: otel}\n")}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	policies <- watch.Update{Set: set}
	l.setState("a", service("svc", 1, 80))
	mustEnsure(t, l, sidecar)
	warnings := func() float64 {
		return gaugeValue(t, l.cfg.Metrics.diagnostics, translator.DiagnosticSource, string(sources.SeverityWarning))
	}
	groupDiags := func() []sources.Diagnostic {
		for _, g := range l.Status().Groups {
			if g.Key == sidecar.Key() {
				return g.Diagnostics
			}
		}
		return nil
	}
	waitFor(t, "the missing collector to be reported, for the loop and the group", func() bool {
		ds := l.Status().Translator.Diagnostics
		return len(ds) == 1 && ds[0].Field == "spec.tracing.collector" && strings.HasPrefix(ds[0].Location, "mesh.yaml:") &&
			len(groupDiags()) == 1
	})
	if got := warnings(); got != 1 {
		t.Errorf("sluice_source_diagnostics{source=translator,severity=warning} = %v, want 1", got)
	}

	otel := service("otel", 1, 4317)
	both := service("svc", 1, 80)
	both.Services = append(both.Services, otel.Services...)
	l.setState("a", both)
	waitFor(t, "the diagnostic to clear", func() bool {
		return len(l.Status().Translator.Diagnostics) == 0 && len(groupDiags()) == 0
	})
	if got := warnings(); got != 0 {
		t.Errorf("warnings after the collector registered = %v, want 0", got)
	}
}
