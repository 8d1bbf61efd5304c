package snapshot

import (
	"context"
	"log/slog"
	"math"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-mesh/sluice/translator"
)

// fakeMemory is a Config.Memory the test sets; it counts the loop's looks.
type fakeMemory struct {
	mu    sync.Mutex
	use   MemoryUse
	asked int
}

func (m *fakeMemory) read() MemoryUse {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked++
	return m.use
}

func (m *fakeMemory) set(inUse, limit uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.use = MemoryUse{InUse: inUse, Limit: limit}
}

func (m *fakeMemory) looks() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.asked
}

// logRecorder is a slog.Handler that keeps "LEVEL message" of each record.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, rec.Level.String()+" "+rec.Message)
	return nil
}

func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// count reports how many records of level start with prefix.
func (r *logRecorder) count(level slog.Level, prefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, line := range r.lines {
		if strings.HasPrefix(line, level.String()+" "+prefix) {
			n++
		}
	}
	return n
}

// turn has the loop go round and waits until it finished a turn that
// began after the call: it looked at memory after everything before.
func (l *testLoop) turn(mem *fakeMemory) {
	l.t.Helper()
	for range 2 { // the first look may belong to a turn already under way
		before := mem.looks()
		l.poke()
		waitFor(l.t, "a turn of the loop", func() bool { return mem.looks() > before })
	}
}

func (p *fakePublisher) wasCleared(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Contains(p.cleared, key)
}

// TestLoopReleasesIdleGroupsUnderMemoryPressure: while memory is short,
// groups without proxies are forgotten at once (not after their TTL), on
// the loop's next turn and as each one's last proxy leaves; groups with
// proxies are kept; an episode is logged once as a warning, and its end
// once; a released group whose proxy comes back is built again at once.
func TestLoopReleasesIdleGroupsUnderMemoryPressure(t *testing.T) {
	mem := &fakeMemory{}
	mem.set(100, 1000)
	logs := &logRecorder{}
	l := startLoop(t, Config{Sources: []string{"a"}, HoldOff: 5 * time.Millisecond, GroupIdleTTL: time.Hour,
		Memory: mem.read, Log: slog.New(logs)})
	idle1, idle2, busy := sidecarOf("idle1"), sidecarOf("idle2"), sidecarOf("busy")
	for _, p := range []translator.Proxy{idle1, idle2, busy} {
		mustEnsure(t, l, p)
	}
	l.setState("a", service("svc", 1, 80))
	waitFor(t, "the three groups published", func() bool { return l.pub.count() == 3 })
	l.ReleaseGroup(idle1)
	l.ReleaseGroup(idle2)
	released := func() float64 { return counter(t, l.cfg.Metrics.groupsReleased, "memory") }
	warnings := func() int { return logs.count(slog.LevelWarn, "memory is short") }

	// Memory to spare: idle groups wait out their TTL.
	l.turn(mem)
	if st := l.Status(); len(st.Groups) != 3 || released() != 0 {
		t.Fatalf("with memory to spare: groups %+v, %v released", st.Groups, released())
	}

	// Above 80% of the limit: both idle groups go, the busy one stays.
	mem.set(810, 1000)
	l.turn(mem)
	if !l.pub.wasCleared(idle1.Key()) || !l.pub.wasCleared(idle2.Key()) || l.pub.wasCleared(busy.Key()) {
		t.Fatalf("cleared idle1 %v, idle2 %v, busy %v; want the idle groups only",
			l.pub.wasCleared(idle1.Key()), l.pub.wasCleared(idle2.Key()), l.pub.wasCleared(busy.Key()))
	}
	if st := l.Status(); len(st.Groups) != 1 || st.Groups[0].Key != busy.Key() {
		t.Fatalf("groups %+v, want only %s", st.Groups, busy.Key())
	}
	// The same episode: the busy group's last proxy leaves, and the group
	// goes at the next turn, without another warning.
	l.ReleaseGroup(busy)
	l.turn(mem)
	if !l.pub.wasCleared(busy.Key()) || len(l.Status().Groups) != 0 {
		t.Fatalf("the busy group's last proxy left, but the group stays (groups %+v)", l.Status().Groups)
	}
	if n := warnings(); n != 1 {
		t.Errorf("%d warnings in one episode of memory pressure, want 1", n)
	}
	if n := released(); n != 3 {
		t.Errorf(`sluice_proxy_groups_released_total{reason="memory"} = %v, want 3`, n)
	}

	// A proxy of a released group comes back: its group is built at once,
	// and kept while memory is still short, since it has a proxy.
	published := l.pub.count()
	mustEnsure(t, l, idle1)
	waitFor(t, "idle1 published again", func() bool { return l.pub.count() == published+1 })
	l.turn(mem)
	if got := l.pub.published()[published].node; got != idle1.Key() || len(l.Status().Groups) != 1 {
		t.Fatalf("published %s, groups %+v; want %s published and kept", got, l.Status().Groups, idle1.Key())
	}

	// Memory recovers, then runs short again: a second episode, a second
	// warning.
	mem.set(500, 1000)
	l.turn(mem)
	if n := logs.count(slog.LevelInfo, "memory pressure is over"); n != 1 {
		t.Errorf("%d notes of the end of the episode, want 1", n)
	}
	l.ReleaseGroup(idle1)
	mem.set(900, 1000)
	l.turn(mem)
	if n, r := warnings(), released(); n != 2 || r != 4 {
		t.Errorf("after a second episode: %d warnings, %v groups released; want 2 and 4", n, r)
	}
	if n := counter(t, l.cfg.Metrics.groupsReleased, "idle"); n != 0 {
		t.Errorf(`sluice_proxy_groups_released_total{reason="idle"} = %v, want 0 (the TTL is an hour)`, n)
	}
}

func TestMemoryUseShort(t *testing.T) {
	for _, tc := range []struct {
		use  MemoryUse
		want bool
	}{
		{MemoryUse{InUse: 1 << 40}, false}, // no limit: never short
		{MemoryUse{InUse: 800, Limit: 1000}, false},
		{MemoryUse{InUse: 801, Limit: 1000}, true},
		{MemoryUse{InUse: 2000, Limit: 1000}, true},
	} {
		if got := tc.use.short(); got != tc.want {
			t.Errorf("%+v.short() = %v, want %v", tc.use, got, tc.want)
		}
	}
}

// TestRuntimeMemory: the runtime's figures, with the limit as
// debug.SetMemoryLimit (or GOMEMLIMIT) sets it, and none when unset.
func TestRuntimeMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	m := RuntimeMemory()
	if m.Limit != 0 || m.InUse == 0 || m.short() {
		t.Fatalf("without a limit: %+v, short %v; want in use > 0, no limit, not short", m, m.short())
	}
	// Far above what the test uses, so the collector is not pushed.
	limit := int64(16 * m.InUse)
	debug.SetMemoryLimit(limit)
	if m := RuntimeMemory(); m.Limit != uint64(limit) || m.short() {
		t.Fatalf("with a limit of %d: %+v, short %v", limit, m, m.short())
	}
}
