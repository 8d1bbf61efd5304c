package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/etcd/embedded"
)

// waitTimeout bounds every wait for a condition in these tests.
const waitTimeout = 15 * time.Second

// testLog discards logs unless SLUICE_TEST_LOG is set (etcd's goroutines may
// log after a test ends, so they must not write to t).
func testLog() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startEtcd starts an embedded etcd on an ephemeral loopback port with its
// data in a test directory, stopped when the test ends.
func startEtcd(tb testing.TB, cfg embedded.Config) *embedded.Server {
	tb.Helper()
	if cfg.ClientURL == "" {
		cfg.ClientURL = "http://127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = tb.TempDir()
	}
	cfg.Log = testLog()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	e, err := embedded.Start(ctx, cfg)
	if err != nil {
		tb.Fatalf("embedded.Start: %v", err)
	}
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Errorf("closing embedded etcd: %v", err)
		}
	})
	return e
}

func testClient(tb testing.TB, endpoints []string) *clientv3.Client {
	tb.Helper()
	cli, err := NewClient(Config{Endpoints: endpoints, Log: testLog()})
	if err != nil {
		tb.Fatalf("NewClient: %v", err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

func put(tb testing.TB, cli *clientv3.Client, key, value string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := cli.Put(ctx, key, value, opts...)
	if err != nil {
		tb.Fatalf("put %s: %v", key, err)
	}
	return resp
}

func del(tb testing.TB, cli *clientv3.Client, key string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := cli.Delete(ctx, key); err != nil {
		tb.Fatalf("delete %s: %v", key, err)
	}
}

// recorder runs a source and keeps every event it sends.
type recorder struct {
	src  *Source
	stop func()

	mu     sync.Mutex
	events []sources.Event
	notify chan struct{}
}

func startSource(tb testing.TB, cfg Config, tweak func(*Source)) *recorder {
	tb.Helper()
	cfg.Log = testLog()
	s, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	if tweak != nil {
		tweak(s)
	}
	r := &recorder{src: s, notify: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan sources.Event)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ch) }()
	go func() {
		for {
			select {
			case ev := <-ch:
				r.mu.Lock()
				r.events = append(r.events, ev)
				close(r.notify)
				r.notify = make(chan struct{})
				r.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					tb.Errorf("Run returned %v, want context.Canceled", err)
				}
			case <-time.After(waitTimeout):
				tb.Errorf("Run did not return after its context ended")
			}
		})
	}
	tb.Cleanup(r.stop)
	return r
}

// wait returns the index of the first event at or after from that matches.
func (r *recorder) wait(tb testing.TB, from int, desc string, match func(sources.Event) bool) int {
	tb.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for i := from; i < len(r.events); i++ {
			if match(r.events[i]) {
				r.mu.Unlock()
				return i
			}
		}
		notify := r.notify
		r.mu.Unlock()
		select {
		case <-notify:
		case <-deadline.C:
			tb.Fatalf("no %s within %s; events since #%d:\n%s", desc, waitTimeout, from, r.describe(from))
		}
	}
}

// waitState waits for a state at or after from for which ok holds.
func (r *recorder) waitState(tb testing.TB, from int, desc string, ok func(*sources.State) bool) (int, *sources.State) {
	tb.Helper()
	i := r.wait(tb, from, desc, func(ev sources.Event) bool { return ev.State != nil && ok(ev.State) })
	return i, r.event(i).State
}

// nextState waits for the first state at or after from.
func (r *recorder) nextState(tb testing.TB, from int) (int, *sources.State) {
	tb.Helper()
	return r.waitState(tb, from, "state", func(*sources.State) bool { return true })
}

func (r *recorder) event(i int) sources.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[i]
}

func (r *recorder) since(from int) []sources.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sources.Event(nil), r.events[from:]...)
}

func (r *recorder) describe(from int) string {
	var b strings.Builder
	for i, ev := range r.since(from) {
		fmt.Fprintf(&b, "  #%d ", from+i)
		if ev.Err != nil {
			fmt.Fprintf(&b, "Err: %v\n", ev.Err)
		} else {
			fmt.Fprintf(&b, "State: %s\n", summary(ev.State))
		}
	}
	if b.Len() == 0 {
		return "  (none)"
	}
	return b.String()
}

// summary renders a state compactly: "svc[addr:port health w=N ...]".
func summary(st *sources.State) string {
	if st == nil {
		return "<nil>"
	}
	var parts []string
	for _, svc := range st.Services {
		var ins []string
		for _, in := range svc.Instances {
			ins = append(ins, fmt.Sprintf("%s %s w=%d", in.Key(), in.Health, in.Weight))
		}
		parts = append(parts, svc.Name+"["+strings.Join(ins, ", ")+"]")
	}
	for _, d := range st.Diagnostics {
		parts = append(parts, "diag("+d.String()+")")
	}
	return strings.Join(parts, " ")
}

// find returns the instance of service svc at hostport, or nil.
func find(st *sources.State, svc, hostport string) *sources.Instance {
	i := sort.Search(len(st.Services), func(i int) bool { return st.Services[i].Name >= svc })
	if i == len(st.Services) || st.Services[i].Name != svc {
		return nil
	}
	for j := range st.Services[i].Instances {
		if in := &st.Services[i].Instances[j]; in.Key() == hostport {
			return in
		}
	}
	return nil
}

// endpointsOf lists "service/host:port" for every instance, in state order.
func endpointsOf(st *sources.State) []string {
	var out []string
	for _, svc := range st.Services {
		for _, in := range svc.Instances {
			out = append(out, svc.Name+"/"+in.Key())
		}
	}
	return out
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, desc string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", desc)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy is a TCP proxy that the test can cut, to break a source's
// connection to etcd without stopping etcd.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]struct{}
	// thawed is closed unless the proxy is frozen.
	thawed chan struct{}
}

func startProxy(tb testing.TB, target string) *proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, thawed: make(chan struct{})}
	close(p.thawed)
	p.wg.Add(1)
	go p.serve()
	tb.Cleanup(func() {
		_ = ln.Close()
		p.thaw()
		p.pause()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) endpoint() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.paused {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
		p.mu.Unlock()
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			thawed := p.thawed
			p.mu.Unlock()
			<-thawed
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

// freeze keeps the connections open but forwards nothing (a hung server or
// a half-open connection) until thaw.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.thawed = make(chan struct{})
}

func (p *proxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
	default:
		close(p.thawed)
	}
}

// pause closes every proxied connection and refuses new ones.
func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
}

// hostPort strips the scheme from an endpoint URL.
func hostPort(endpoint string) string {
	_, hp, _ := strings.Cut(endpoint, "://")
	return hp
}
