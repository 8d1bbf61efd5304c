package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Config describes one load run.
type Config struct {
	// Target is the ADS server's host:port.
	Target string
	// Proxies is the number of simulated clients, each on its own
	// connection, as real proxies are.
	Proxies int
	// Delta selects incremental ADS instead of state-of-the-world.
	Delta bool
	// NodePrefix prefixes every node id (NodePrefix-0, NodePrefix-1, ...).
	NodePrefix string
	// Topology is the mesh, who the proxies are and what each sees; the
	// proxies wait for its Watch after the change.
	Topology Topology
	// SyncTimeout and ChangeTimeout bound the two phases.
	SyncTimeout, ChangeTimeout time.Duration
	// Hold keeps the streams open this long after the run, idle: a stream
	// the server drops meanwhile is reported as an error.
	Hold time.Duration
	// MetricsURL, when set, is the server's Prometheus endpoint; its
	// resident memory is sampled before the proxies connect and after they
	// synced.
	MetricsURL string
}

// Stats summarises per-proxy durations, in milliseconds.
type Stats struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// ChangeScope counts the proxies by whether they can see the changed
// service.
type ChangeScope struct {
	// Affected proxies can see it: Convergence is over them.
	Affected int `json:"affected"`
	// NotAffected proxies cannot (with dependencies, the server sends them
	// nothing for the change); they are not waited for.
	NotAffected int `json:"not_affected"`
	// Unexpected counts the not-affected proxies that received the changed
	// service anyway: an error, the server did not scope as the policy
	// files say.
	Unexpected int `json:"unexpected"`
}

// Result is what `sluice-load` prints.
type Result struct {
	Target  string `json:"target"`
	Mode    string `json:"mode"`
	Proxies int    `json:"proxies"`
	// Groups and Dependencies are the topology's (see Topology).
	Groups       int `json:"groups,omitempty"`
	Dependencies int `json:"dependencies,omitempty"`
	// InitialSync is each proxy's time from the start of the run until it
	// held every resource it subscribed to.
	InitialSync Stats `json:"initial_sync"`
	// Convergence is each affected proxy's time from the change until its
	// config reflected it.
	Convergence *Stats `json:"convergence,omitempty"`
	// Scope says which proxies the change concerns; set with Convergence.
	Scope  *ChangeScope  `json:"change_scope,omitempty"`
	Memory *ServerMemory `json:"server_memory,omitempty"`
	Errors []string      `json:"errors,omitempty"`
}

// envoyWindow is Envoy's default HTTP/2 stream and connection window
// (http2_protocol_options initial_stream_window_size and
// initial_connection_window_size).
const envoyWindow = 256 << 20

// Run connects the proxies, waits for their initial sync, then (when change
// is not nil) applies the change and waits until every proxy saw it. It
// returns when both phases are done or timed out; the streams are closed.
func Run(ctx context.Context, cfg Config, change func(context.Context) error) (*Result, error) {
	if cfg.Proxies <= 0 {
		return nil, errors.New("proxies: must be positive")
	}
	if err := cfg.Topology.Validate(); err != nil {
		return nil, err
	}
	var affected, others []int // proxy indexes
	for i := range cfg.Proxies {
		if cfg.Topology.Affected(i) {
			affected = append(affected, i)
		} else {
			others = append(others, i)
		}
	}
	if change != nil && len(affected) == 0 {
		return nil, fmt.Errorf("no proxy can see the change to %s: with %d groups and %d dependencies, only sidecars of svc-0001 ... svc-%04d do",
			cfg.Topology.Watch().Cluster, cfg.Topology.Groups, cfg.Topology.Dependencies, cfg.Topology.Dependencies)
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 2 * time.Minute
	}
	if cfg.ChangeTimeout <= 0 {
		cfg.ChangeTimeout = time.Minute
	}
	mode := "sotw"
	if cfg.Delta {
		mode = "delta"
	}
	res := &Result{Target: cfg.Target, Mode: mode, Proxies: cfg.Proxies, Groups: cfg.Topology.Groups, Dependencies: cfg.Topology.Dependencies}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var before, heapBefore float64
	if cfg.MetricsURL != "" {
		var err error
		collectGarbage(ctx, cfg.MetricsURL)
		if before, err = ResidentBytes(ctx, cfg.MetricsURL); err != nil {
			return nil, fmt.Errorf("reading server memory: %w", err)
		}
		heapBefore, _ = HeapInuseBytes(ctx, cfg.MetricsURL)
	}
	proxies := make([]*proxy, cfg.Proxies)
	var (
		wg     sync.WaitGroup
		errMu  sync.Mutex
		errs   = map[string]int{}
		failed = 0
	)
	record := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		errs[err.Error()]++
		failed++
	}
	codec, err := newLightCodec()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for i := range proxies {
		p := newProxy(cfg.Topology.Node(fmt.Sprintf("%s-%d", cfg.NodePrefix, i), i), cfg.Topology.Watch())
		proxies[i] = p
		conn, err := grpc.NewClient(cfg.Target, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.ForceCodecV2(codec)),
			// Envoy's default HTTP/2 windows (256 MiB per stream and
			// connection): a real proxy does not make its control plane
			// wait for window updates mid-response.
			grpc.WithInitialWindowSize(envoyWindow), grpc.WithInitialConnWindowSize(envoyWindow))
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", cfg.Target, err)
		}
		defer func() { _ = conn.Close() }()
		client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if cfg.Delta {
				err = p.delta(ctx, client)
			} else {
				err = p.sotw(ctx, client)
			}
			if err != nil && ctx.Err() == nil {
				record(fmt.Errorf("stream: %w", err))
			}
		}()
	}

	synced := waitAll(ctx, cfg.SyncTimeout, proxies, func(p *proxy) time.Time { return p.syncedAt })
	res.InitialSync = stats(start, synced)
	if res.InitialSync.Count < cfg.Proxies {
		record(fmt.Errorf("%d of %d proxies did not sync within %s", cfg.Proxies-res.InitialSync.Count, cfg.Proxies, cfg.SyncTimeout))
	}

	if change != nil && ctx.Err() == nil {
		for _, p := range proxies {
			if p.changeAt() != (time.Time{}) {
				record(errors.New("the watched change was visible before it was made"))
				break
			}
		}
		changeAt := time.Now()
		if err := change(ctx); err != nil {
			return nil, fmt.Errorf("applying the change: %w", err)
		}
		converged := waitAll(ctx, cfg.ChangeTimeout, pick(proxies, affected), func(p *proxy) time.Time { return p.changeConverged })
		st := stats(changeAt, converged)
		res.Convergence = &st
		res.Scope = &ChangeScope{Affected: len(affected), NotAffected: len(others)}
		if st.Count < len(affected) {
			record(fmt.Errorf("%d of %d affected proxies did not see the change within %s", len(affected)-st.Count, len(affected), cfg.ChangeTimeout))
		}
		for _, p := range pick(proxies, others) {
			p.mu.Lock()
			if p.sawWatched {
				res.Scope.Unexpected++
			}
			p.mu.Unlock()
		}
		if n := res.Scope.Unexpected; n > 0 {
			record(fmt.Errorf("%d of %d proxies outside the change's scope received %s", n, len(others), cfg.Topology.Watch().Cluster))
		}
	}
	if cfg.Hold > 0 {
		select {
		case <-time.After(cfg.Hold):
		case <-ctx.Done():
		}
	}
	// Memory is sampled with every stream still open, after the run (and
	// the hold): the steady-state cost of the connected proxies.
	if cfg.MetricsURL != "" {
		collectGarbage(ctx, cfg.MetricsURL)
		after, err := ResidentBytes(ctx, cfg.MetricsURL)
		if err != nil {
			return nil, fmt.Errorf("reading server memory: %w", err)
		}
		res.Memory = &ServerMemory{
			MetricsAddress: cfg.MetricsURL,
			BeforeMiB:      before / (1 << 20), AfterSyncMiB: after / (1 << 20),
			PerProxyKiB: (after - before) / 1024 / float64(cfg.Proxies),
		}
		if heapAfter, err := HeapInuseBytes(ctx, cfg.MetricsURL); err == nil && heapBefore > 0 {
			res.Memory.HeapPerProxyKiB = (heapAfter - heapBefore) / 1024 / float64(cfg.Proxies)
		}
	}

	cancel()
	wg.Wait()
	for msg, n := range errs {
		res.Errors = append(res.Errors, fmt.Sprintf("%s (x%d)", msg, n))
	}
	sort.Strings(res.Errors)
	return res, nil
}

func pick(proxies []*proxy, idx []int) []*proxy {
	out := make([]*proxy, len(idx))
	for i, j := range idx {
		out[i] = proxies[j]
	}
	return out
}

func (p *proxy) changeAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changeConverged
}

// waitAll polls until every proxy reports a time or the timeout passes, and
// returns the times reported. at runs with the proxy's lock held.
func waitAll(ctx context.Context, timeout time.Duration, proxies []*proxy, at func(*proxy) time.Time) []time.Time {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var got []time.Time
		for _, p := range proxies {
			p.mu.Lock()
			t := at(p)
			p.mu.Unlock()
			if !t.IsZero() {
				got = append(got, t)
			}
		}
		if len(got) == len(proxies) || time.Now().After(deadline) || ctx.Err() != nil {
			return got
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
}

func stats(from time.Time, times []time.Time) Stats {
	if len(times) == 0 {
		return Stats{}
	}
	d := make([]float64, len(times))
	for i, t := range times {
		d[i] = float64(t.Sub(from).Microseconds()) / 1000
	}
	sort.Float64s(d)
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(d)))) - 1
		return d[max(i, 0)]
	}
	return Stats{Count: len(d), P50: pct(0.50), P99: pct(0.99), Max: d[len(d)-1]}
}
