package etcd

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/etcd/embedded"
)

// scale is a registry of services × perService instances loaded into a real
// embedded etcd, with a running source on it.
type scale struct {
	cli    *clientv3.Client
	keys   []string
	events chan sources.Event
	// load is the time from starting the source to its first state.
	load time.Duration
	st   *sources.State
}

func scaleKey(svc, inst int) string {
	return fmt.Sprintf("/services/svc-%04d/10.%d.%d.%d:8080", svc, svc/256, svc%256, inst+1)
}

func newScale(tb testing.TB, services, perService int) *scale {
	tb.Helper()
	// No DataDir: a throwaway directory without fsync, as in --dev.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := embedded.Start(ctx, embedded.Config{ClientURL: "http://127.0.0.1:0", Log: testLog()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	sc := &scale{cli: testClient(tb, e.Endpoints()), events: make(chan sources.Event, 1)}
	var ops []clientv3.Op
	flush := func() {
		if _, err := sc.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			tb.Fatal(err)
		}
		ops = ops[:0]
	}
	for s := range services {
		for i := range perService {
			k := scaleKey(s, i)
			sc.keys = append(sc.keys, k)
			ops = append(ops, clientv3.OpPut(k, fmt.Sprintf(`{"status":"healthy","weight":1,"zone":"zone-%d","metadata":{"version":"v1"},"timestamp":1700000000}`, i%3)))
			if len(ops) == 128 { // etcd's default --max-txn-ops
				flush()
			}
		}
	}
	if len(ops) > 0 {
		flush()
	}

	src, err := New(Config{Endpoints: e.Endpoints(), Log: testLog()})
	if err != nil {
		tb.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	tb.Cleanup(func() { stop(); <-done })
	start := time.Now()
	go func() {
		defer close(done)
		_ = src.Run(runCtx, sc.events)
	}()
	select {
	case ev := <-sc.events:
		sc.load, sc.st = time.Since(start), ev.State
	case <-time.After(time.Minute):
		tb.Fatal("no initial state within a minute")
	}
	if sc.st == nil || len(endpointsOf(sc.st)) != services*perService || len(sc.st.Services) != services {
		tb.Fatalf("initial state: %d services, %d instances; want %d and %d", len(sc.st.Services), len(endpointsOf(sc.st)), services, services*perService)
	}
	return sc
}

// change puts a new weight for one instance and returns the time until the
// state with it arrives.
func (sc *scale) change(tb testing.TB, n int) time.Duration {
	svc, inst := (n/10)%len(sc.st.Services), n%10
	weight := uint32(2 + (n/len(sc.keys))%100)
	name := fmt.Sprintf("svc-%04d", svc)
	hostport := fmt.Sprintf("10.%d.%d.%d:8080", svc/256, svc%256, inst+1)
	start := time.Now()
	if _, err := sc.cli.Put(context.Background(), scaleKey(svc, inst), fmt.Sprintf(`{"weight":%d}`, weight)); err != nil {
		tb.Fatal(err)
	}
	for {
		select {
		case ev := <-sc.events:
			if ev.State == nil {
				tb.Fatalf("unexpected event %+v", ev)
			}
			sc.st = ev.State
			if in := find(ev.State, name, hostport); in != nil && in.Weight == weight {
				return time.Since(start)
			}
		case <-time.After(30 * time.Second):
			tb.Fatalf("no state with %s %s weight %d", name, hostport, weight)
		}
	}
}

// BenchmarkSingleKeyChange loads 10,000 instances of 1,000 services into an
// embedded etcd and measures the time from a single key's Put to the
// source's new complete state (ns/op), and the initial load (list, parse,
// first state) as initial-load-ms.
func BenchmarkSingleKeyChange(b *testing.B) {
	sc := newScale(b, 1000, 10)
	n := 0
	for b.Loop() {
		sc.change(b, n)
		n++
	}
	b.ReportMetric(float64(sc.load.Microseconds())/1000, "initial-load-ms")
}

// TestSingleKeyChangeAtScale is the benchmark's scenario at test size: one
// Put among thousands of instances yields one new state in which only that
// instance changed.
func TestSingleKeyChangeAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("loads thousands of keys into etcd")
	}
	sc := newScale(t, 200, 10)
	before := sc.st
	d := sc.change(t, 15) // svc-0001, instance 6
	after := sc.st
	changed := 0
	for si, svc := range after.Services {
		// Unchanged services are handed over as the same slices, which
		// is what lets the merger and translator skip them.
		if shared := &svc.Instances[0] == &before.Services[si].Instances[0]; shared == (svc.Name == "svc-0001") {
			t.Errorf("service %s: instances shared with the previous state = %v", svc.Name, shared)
		}
		for ii, in := range svc.Instances {
			if old := before.Services[si].Instances[ii]; old.Weight != in.Weight {
				changed++
				if svc.Name != "svc-0001" || in.Key() != "10.0.1.6:8080" || in.Weight != 2 {
					t.Errorf("unexpected change: %s %s weight %d", svc.Name, in.Key(), in.Weight)
				}
			}
		}
	}
	if changed != 1 || len(endpointsOf(after)) != 2000 {
		t.Errorf("%d instances changed out of %d, want 1 of 2000", changed, len(endpointsOf(after)))
	}
	t.Logf("2,000 instances: initial load %s, single key change to new state %s", sc.load, d)
}
