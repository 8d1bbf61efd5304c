package consul

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/sluice-mesh/sluice/sources"
)

// consulBinary finds the Consul agent that tools/install-consul.sh builds:
// $SLUICE_CONSUL, else <repo>/bin/consul. Without one the test skips, unless
// SLUICE_REQUIRE_E2E=1 (CI), where it fails.
func consulBinary(tb testing.TB) string {
	tb.Helper()
	path := os.Getenv("SLUICE_CONSUL")
	if path == "" {
		path = filepath.Join("..", "..", "bin", "consul")
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		var fi os.FileInfo
		if fi, err = os.Stat(abs); err == nil && fi.Mode()&0o111 == 0 {
			err = errors.New("not executable")
		}
	}
	if err != nil {
		msg := fmt.Sprintf("no Consul agent at %s (%v): run tools/install-consul.sh or set SLUICE_CONSUL", path, err)
		if os.Getenv("SLUICE_REQUIRE_E2E") == "1" {
			tb.Fatal(msg + " (SLUICE_REQUIRE_E2E=1)")
		}
		tb.Skip(msg)
	}
	return abs
}

// agentPorts are the ports of one dev agent, all on 127.0.0.1.
type agentPorts struct {
	HTTP, DNS, GRPC, GRPCTLS, SerfLAN, SerfWAN, Server int
}

// freePorts picks ports the kernel says are free now. Another process may
// take one before the agent binds it; startAgent then retries with new ones.
func freePorts(tb testing.TB) agentPorts {
	tb.Helper()
	var ls []net.Listener
	var ps []int
	for range 7 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("finding a free port: %v", err)
		}
		ls = append(ls, l)
		ps = append(ps, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return agentPorts{HTTP: ps[0], DNS: ps[1], GRPC: ps[2], GRPCTLS: ps[3], SerfLAN: ps[4], SerfWAN: ps[5], Server: ps[6]}
}

// testAgent is a real `consul agent -dev` on loopback.
type testAgent struct {
	tb     testing.TB
	Ports  agentPorts
	Addr   string // host:port of the HTTP API
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAgent starts a dev agent on free ports and waits until it has a
// leader; it is stopped when the test ends.
// extra arguments go to `consul agent`.
func startAgent(tb testing.TB, extra ...string) *testAgent {
	tb.Helper()
	bin := consulBinary(tb)
	var lastErr error
	for range 3 {
		a, err := launchAgent(tb, bin, freePorts(tb), extra...)
		if err == nil {
			return a
		}
		lastErr = err
	}
	tb.Fatalf("starting consul agent: %v", lastErr)
	return nil
}

// restartAgentOn starts a new dev agent on the ports of a stopped one.
func restartAgentOn(tb testing.TB, ports agentPorts) *testAgent {
	tb.Helper()
	bin := consulBinary(tb)
	var lastErr error
	// The old agent's sockets may take a moment to be released.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		a, err := launchAgent(tb, bin, ports)
		if err == nil {
			return a
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	tb.Fatalf("restarting consul agent on %+v: %v", ports, lastErr)
	return nil
}

func launchAgent(tb testing.TB, bin string, p agentPorts, extra ...string) (*testAgent, error) {
	tb.Helper()
	args := []string{
		"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-node", "sluice-test", "-log-level", "warn",
		"-http-port", strconv.Itoa(p.HTTP), "-dns-port", strconv.Itoa(p.DNS),
		"-grpc-port", strconv.Itoa(p.GRPC), "-grpc-tls-port", strconv.Itoa(p.GRPCTLS),
		"-serf-lan-port", strconv.Itoa(p.SerfLAN), "-serf-wan-port", strconv.Itoa(p.SerfWAN),
		"-server-port", strconv.Itoa(p.Server),
	}
	args = append(args, extra...)
	a := &testAgent{tb: tb, Ports: p, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(p.HTTP)), exited: make(chan struct{}), out: &syncBuffer{}}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.Env = append(os.Environ(), "TMPDIR="+tb.TempDir())
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = a.cmd.Wait()
		close(a.exited)
	}()
	tb.Cleanup(a.Stop)

	cl := a.Client()
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, err := cl.Status().Leader()
		if err == nil && leader != "" {
			return a, nil
		}
		select {
		case <-a.exited:
			return nil, fmt.Errorf("agent exited during startup: %s", lastLines(a.out.String(), 15))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("leader is empty")
			}
			a.Stop()
			return nil, fmt.Errorf("no leader after 30s (last error %w): %s", err, lastLines(a.out.String(), 15))
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop ends the agent (SIGTERM; dev mode exits 1 on it) and waits for it.
func (a *testAgent) Stop() {
	select {
	case <-a.exited:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
	}
}

// Client returns an API client for the agent.
func (a *testAgent) Client() *api.Client {
	a.tb.Helper()
	return a.ClientAs("")
}

// ClientAs returns an API client for the agent that uses an ACL token.
func (a *testAgent) ClientAs(token string) *api.Client {
	a.tb.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = a.Addr, token
	cl, err := api.NewClient(cfg)
	if err != nil {
		a.tb.Fatal(err)
	}
	return cl
}

// testConfig is a source configuration for a, tuned for quick tests.
func testConfig(tb testing.TB, a *testAgent) Config {
	cfg := DefaultConfig()
	cfg.Address = a.Addr
	cfg.MinQueryInterval = 10 * time.Millisecond
	cfg.MinResyncInterval = 50 * time.Millisecond
	cfg.RetryMin = 50 * time.Millisecond
	cfg.RetryMax = 250 * time.Millisecond
	cfg.Log = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: testLogLevel}))
	return cfg
}

// collector runs a source and records what it sends.
type collector struct {
	tb      testing.TB
	mu      sync.Mutex
	events  []sources.Event
	wake    chan struct{} // closed and replaced on every event
	problem string        // a broken contract, reported at the end
}

// runSource starts a source with cfg; it is stopped (and must return
// context.Canceled) when the test ends.
func runSource(tb testing.TB, cfg Config) *collector {
	tb.Helper()
	src, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	c := &collector{tb: tb, wake: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan sources.Event)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, events) }()
	go func() {
		for {
			select {
			case ev := <-events:
				c.add(ev)
			case <-ctx.Done():
				return
			}
		}
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				tb.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			tb.Error("Run did not return within 10s of cancellation")
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.problem != "" {
			tb.Error(c.problem)
		}
	})
	return c
}

func (c *collector) add(ev sources.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case ev.Source != SourceName:
		c.problem = fmt.Sprintf("event from source %q, want %q", ev.Source, SourceName)
	case (ev.State == nil) == (ev.Err == nil):
		c.problem = fmt.Sprintf("event with State %v and Err %v: want exactly one", ev.State != nil, ev.Err)
	case ev.State != nil:
		// A State is sent only when it changed, unless an Err came between.
		if n := len(c.events); n > 0 && c.events[n-1].State != nil && reflect.DeepEqual(c.events[n-1].State, ev.State) {
			c.problem = fmt.Sprintf("State event %d repeats the previous State", n)
		}
	}
	c.events = append(c.events, ev)
	close(c.wake)
	c.wake = make(chan struct{})
}

// snapshot returns the events so far and a channel closed on the next one.
func (c *collector) snapshot() ([]sources.Event, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events), c.wake
}

// count returns the number of events so far.
func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

// waitState waits until the latest State satisfies ok and returns it.
func (c *collector) waitState(what string, timeout time.Duration, ok func(*sources.State) bool) *sources.State {
	c.tb.Helper()
	deadline := time.After(timeout)
	for {
		evs, wake := c.snapshot()
		var last *sources.State
		for i := len(evs) - 1; i >= 0; i-- {
			if evs[i].State != nil {
				last = evs[i].State
				break
			}
		}
		if last != nil && ok(last) {
			return last
		}
		select {
		case <-wake:
		case <-deadline:
			c.tb.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, describe(last))
		}
	}
}

// waitEvent waits until an event after index from satisfies ok; it returns
// the event's index.
func (c *collector) waitEvent(what string, from int, timeout time.Duration, ok func(sources.Event) bool) int {
	c.tb.Helper()
	deadline := time.After(timeout)
	for {
		evs, wake := c.snapshot()
		for i := from; i < len(evs); i++ {
			if ok(evs[i]) {
				return i
			}
		}
		select {
		case <-wake:
		case <-deadline:
			c.tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// describe renders a state compactly for failure messages.
func describe(st *sources.State) string {
	if st == nil {
		return "<none>"
	}
	var b strings.Builder
	for _, s := range st.Services {
		fmt.Fprintf(&b, "%s[", s.Name)
		for i, in := range s.Instances {
			if i > 0 {
				b.WriteString(" ")
			}
			fmt.Fprintf(&b, "%s/%s/w%d", in.Key(), in.Health, in.Weight)
		}
		b.WriteString("] ")
	}
	for _, d := range st.Diagnostics {
		fmt.Fprintf(&b, "{diag %s} ", d)
	}
	return b.String()
}

func service(st *sources.State, name string) *sources.Service {
	for i := range st.Services {
		if st.Services[i].Name == name {
			return &st.Services[i]
		}
	}
	return nil
}

func instance(st *sources.State, name, key string) *sources.Instance {
	s := service(st, name)
	if s == nil {
		return nil
	}
	for i := range s.Instances {
		if s.Instances[i].Key() == key {
			return &s.Instances[i]
		}
	}
	return nil
}

// healthIs returns a condition: service name's instances are exactly want
// (host:port → health).
func healthIs(name string, want map[string]sources.Health) func(*sources.State) bool {
	return func(st *sources.State) bool {
		s := service(st, name)
		if s == nil {
			return len(want) == 0
		}
		if len(s.Instances) != len(want) {
			return false
		}
		for _, in := range s.Instances {
			if h, ok := want[in.Key()]; !ok || h != in.Health {
				return false
			}
		}
		return true
	}
}

// logCounter is a slog handler that counts messages, for waiting on
// internal progress (retries) without sleeping.
type logCounter struct {
	mu     sync.Mutex
	counts map[string]int
	next   slog.Handler
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(ctx context.Context, r slog.Record) error {
	l.mu.Lock()
	l.counts[r.Message]++
	l.mu.Unlock()
	if l.next.Enabled(ctx, r.Level) {
		return l.next.Handle(ctx, r)
	}
	return nil
}
func (l *logCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCounterView{l, l.next.WithAttrs(as)}
}
func (l *logCounter) WithGroup(g string) slog.Handler { return &logCounterView{l, l.next.WithGroup(g)} }

func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counts[msg]
}

type logCounterView struct {
	root *logCounter
	next slog.Handler
}

func (v *logCounterView) Enabled(context.Context, slog.Level) bool { return true }
func (v *logCounterView) Handle(ctx context.Context, r slog.Record) error {
	v.root.mu.Lock()
	v.root.counts[r.Message]++
	v.root.mu.Unlock()
	if v.next.Enabled(ctx, r.Level) {
		return v.next.Handle(ctx, r)
	}
	return nil
}
func (v *logCounterView) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCounterView{v.root, v.next.WithAttrs(as)}
}
func (v *logCounterView) WithGroup(g string) slog.Handler {
	return &logCounterView{v.root, v.next.WithGroup(g)}
}

// eventually polls cond (for conditions on Consul itself, which has no
// event stream here) until it holds or the deadline passes.
func eventually(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLogLevel is the level of the sources' logs in tests (-v shows them).
var testLogLevel = func() slog.Level {
	if os.Getenv("SLUICE_TEST_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}()
