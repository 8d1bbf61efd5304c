package e2e

// The fault matrix of docs/reliability.md: each fault is injected while a
// real Envoy carries a request every 10 ms, and each test logs its figures
// on one line starting with "FAULT" (go test -v -run TestFault ./e2e/).

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultHolds are the registry outage durations. For a quick run of the 10 s
// ones only: go test -run 'TestFault.*Outage/10s' ./e2e/
func faultHolds() []time.Duration {
	return []time.Duration{10 * time.Second, 60 * time.Second}
}

// traffic sends one request every 10 ms through an Envoy until it is
// finished, and counts the requests that did not get a 200.
type traffic struct {
	sent, failed atomic.Int64
	stop, done   chan struct{}
	once         sync.Once

	mu        sync.Mutex
	firstErr  string
	lastFail  time.Time
	firstFail time.Time
}

// startTraffic starts sending to Host: host through e's outbound listener;
// it stops when the test ends if finish was not called.
func startTraffic(t *testing.T, e *envoyProc, host string) *traffic {
	t.Helper()
	tr := &traffic{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			tr.sent.Add(1)
			code, body, err := e.get(host)
			if err == nil && code == http.StatusOK {
				continue
			}
			tr.failed.Add(1)
			now := time.Now()
			tr.mu.Lock()
			if tr.firstErr == "" {
				tr.firstErr = fmt.Sprintf("%d %q %v", code, body, err)
				tr.firstFail = now
			}
			tr.lastFail = now
			tr.mu.Unlock()
		}
	}()
	t.Cleanup(func() { tr.finish() })
	return tr
}

// waitSent waits until n more requests were sent.
func (tr *traffic) waitSent(t *testing.T, n int64) {
	t.Helper()
	target := tr.sent.Load() + n
	eventually(t, 30*time.Second, fmt.Sprintf("%d more requests", n), func() error {
		if got := tr.sent.Load(); got < target {
			return fmt.Errorf("%d of %d sent", got, target)
		}
		return nil
	})
}

// finish stops the traffic and returns the requests sent and failed.
func (tr *traffic) finish() (sent, failed int64) {
	tr.once.Do(func() { close(tr.stop) })
	<-tr.done
	return tr.sent.Load(), tr.failed.Load()
}

// check fails the test if any request failed.
func (tr *traffic) check(t *testing.T, what string) {
	t.Helper()
	sent, failed := tr.finish()
	if failed != 0 {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		t.Errorf("%s: %d of %d requests through Envoy failed, from %s to %s; first: %s",
			what, failed, sent, tr.firstFail.Format(time.StampMilli), tr.lastFail.Format(time.StampMilli), tr.firstErr)
	}
}

// figures logs one fault's figures on a line of its own, for the table in
// docs/reliability.md.
func (tr *traffic) figures(t *testing.T, fault string, kv ...any) {
	t.Helper()
	sent, failed := tr.finish()
	var b strings.Builder
	fmt.Fprintf(&b, "FAULT %s: %d requests through Envoy, %d failed", fault, sent, failed)
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if d, ok := v.(time.Duration); ok {
			v = d.Round(10 * time.Millisecond)
		}
		fmt.Fprintf(&b, "; %v %v", kv[i], v)
	}
	t.Log(b.String())
}

// holdFault keeps a fault in place until since+hold: the fault's duration,
// not a synchronisation.
func holdFault(since time.Time, hold time.Duration) {
	time.Sleep(time.Until(since.Add(hold)))
}

// metric sums the samples of a Prometheus metric from sluice's /metrics
// whose label set contains every one of labels (e.g. `source="etcd"`).
func (s *sluice) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(s.adminText(t, "/metrics")))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		series, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		metric, labelSet, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(labelSet, l)
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// waitStale waits until sluice reports source stale (or fresh again) and
// returns when it did.
func (s *sluice) waitStale(t *testing.T, source string, stale bool, timeout time.Duration) time.Time {
	t.Helper()
	want := 0.0
	if stale {
		want = 1
	}
	eventually(t, timeout, fmt.Sprintf("sluice_source_stale{source=%q} = %v", source, want), func() error {
		if v := s.metric(t, "sluice_source_stale", `source="`+source+`"`); v != want {
			return fmt.Errorf("it is %v", v)
		}
		return nil
	})
	return time.Now()
}

// pid is sluice's process id.
func (s *sluice) pid() int { return s.cmd.Process.Pid }

// procStatusKiB reads a "VmHWM:"-style field (in KiB) of /proc/PID/status.
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading the status of process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status %q: %v", pid, line, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// waitPortFree waits until addr can be bound again (a killed process's
// listener is gone).
func waitPortFree(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 10*time.Second, addr+" to be free", func() error {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		return l.Close()
	})
}

// tcpCutter forwards loopback TCP connections to a target until cut, which
// closes them all and refuses new ones (a network partition that the peers
// see as resets) until restore.
type tcpCutter struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cutOff bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startTCPCutter(t *testing.T, target string) *tcpCutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &tcpCutter{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	c.wg.Add(1)
	go c.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		c.cut()
		c.wg.Wait()
	})
	return c
}

// addr is the address to connect to instead of the target.
func (c *tcpCutter) addr() string { return c.ln.Addr().String() }

func (c *tcpCutter) serve() {
	defer c.wg.Done()
	for {
		down, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.cutOff {
			c.mu.Unlock()
			_ = down.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", c.target, 5*time.Second)
		if err != nil {
			c.mu.Unlock()
			_ = down.Close()
			continue
		}
		c.conns[down], c.conns[up] = struct{}{}, struct{}{}
		c.wg.Add(2)
		go c.pipe(down, up)
		go c.pipe(up, down)
		c.mu.Unlock()
	}
}

func (c *tcpCutter) pipe(dst, src net.Conn) {
	defer c.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
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
	c.mu.Lock()
	delete(c.conns, dst)
	delete(c.conns, src)
	c.mu.Unlock()
}

// cut closes every forwarded connection and refuses new ones.
func (c *tcpCutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cutOff = true
	for conn := range c.conns {
		_ = conn.Close()
	}
}

// restore forwards new connections again.
func (c *tcpCutter) restore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cutOff = false
}
