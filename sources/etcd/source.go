package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"

	"github.com/sluice-mesh/sluice/sources"
)

// Source watches an etcd key prefix. Create it with New.
type Source struct {
	cfg    Config
	parser parser
	log    *slog.Logger

	// Tunables; tests shorten them.
	requestTimeout time.Duration
	// lostAfter is how long the connection may stay down before the
	// source reports an outage; a shorter blip is bridged by the watch,
	// which resumes where it stopped.
	lostAfter time.Duration
	// probeEvery is how often the source checks that etcd answers (a
	// linearizable read of one key of the prefix); one unanswered for
	// requestTimeout means etcd is gone even though the connection looks
	// up (a half-open connection, a hung server, a member without
	// quorum).
	probeEvery             time.Duration
	backoffMin, backoffMax time.Duration
	pageSize               int64

	// compactions counts re-lists caused by compaction, failures the
	// failed attempts to list or watch, probes the answered liveness
	// probes (all for tests).
	compactions, failures, probes atomic.Int64
}

// New validates cfg and returns a source. It does not connect yet. A bad
// cfg is a *setting.Error naming the field.
func New(cfg Config) (*Source, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	return &Source{
		cfg:            cfg,
		parser:         newParser(cfg),
		log:            cfg.Log.With("source", SourceName, "format", cfg.Format, "prefix", cfg.Prefix),
		requestTimeout: defaultRequestTimeout,
		lostAfter:      2 * time.Second,
		probeEvery:     5 * time.Second,
		backoffMin:     100 * time.Millisecond,
		backoffMax:     10 * time.Second,
		pageSize:       5000,
	}, nil
}

// Name implements sources.Source.
func (s *Source) Name() string { return SourceName }

// errCompacted says the watch fell behind etcd's compacted history: the
// events in between are gone, so the source lists afresh.
var errCompacted = errors.New("watch revision was compacted")

// Run implements sources.Source. It sends a complete state after the
// initial list and after every batch of changes that changes the state, an
// Err event once per outage (the consumer keeps the last state), and a fresh
// state once etcd is back. It returns when ctx ends.
func (s *Source) Run(ctx context.Context, events chan<- sources.Event) error {
	w := &watcher{Source: s, events: events, reg: newRegistry()}
	defer w.close()
	attempt, compacted := 0, 0
	for {
		err := w.sync(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errCompacted) {
			s.compactions.Add(1)
			s.log.Info("etcd history was compacted past the watch; listing again", "err", err)
			// Re-list at once, unless compaction keeps overtaking us.
			if compacted++; compacted <= 3 {
				continue
			}
		} else {
			compacted = 0
		}
		// A watch that ran for a while was a success: start backing off
		// from the beginning. One that keeps failing at once backs off
		// further each time, rather than re-listing in a tight loop.
		if !w.watchStart.IsZero() && time.Since(w.watchStart) >= s.backoffMax {
			attempt = 0
		}
		s.failures.Add(1)
		w.fail(ctx, err)
		t := time.NewTimer(s.backoff(attempt))
		attempt++
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is exponential from backoffMin to backoffMax, with the upper half
// of each step jittered so that many sluice replicas do not retry in step.
func (s *Source) backoff(attempt int) time.Duration {
	d := s.backoffMax
	if attempt < 32 {
		if e := s.backoffMin << attempt; e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(half+1)
}

// watcher is the state of one Run.
type watcher struct {
	*Source
	events chan<- sources.Event
	cli    *clientv3.Client
	reg    *registry
	// last is the last state sent; stale says an Err was sent since.
	last  *sources.State
	stale bool
	// watchStart is when the current sync's watch was established.
	watchStart time.Time
}

func (w *watcher) close() {
	if w.cli != nil {
		_ = w.cli.Close()
	}
}

// sync lists the registry, publishes it, and follows it until something
// goes wrong; it always returns an error.
func (w *watcher) sync(ctx context.Context) error {
	w.watchStart = time.Time{}
	if w.cli == nil {
		cli, err := newClient(w.cfg)
		if err != nil {
			return err
		}
		w.cli = cli
	}
	rev, err := w.list(ctx)
	if err != nil {
		return err
	}
	w.publish(ctx)
	return w.watch(ctx, rev)
}

// list reads the whole registry at one revision, in pages, and brings the
// registry up to date with it (keys not read any more are deleted). It
// returns the revision.
func (w *watcher) list(ctx context.Context) (int64, error) {
	key, end := w.parser.keyRange()
	seen := make(map[string]struct{}, len(w.reg.entries))
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(w.pageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := context.WithTimeout(ctx, w.requestTimeout)
		resp, err := w.cli.Get(rctx, key, opts...)
		cancel()
		if err != nil {
			if rev != 0 && errors.Is(err, rpctypes.ErrCompacted) {
				return 0, fmt.Errorf("%w during the list at revision %d", errCompacted, rev)
			}
			return 0, fmt.Errorf("listing etcd keys under %q: %w", w.cfg.Prefix+"/", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			seen[k] = struct{}{}
			w.reg.set(k, w.parse(k, kv.Value))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	for k := range w.reg.entries {
		if _, ok := seen[k]; !ok {
			w.reg.set(k, nil)
		}
	}
	return rev, nil
}

// parse parses a key's value, reusing the previous result when the value
// did not change, and logs new problems.
func (w *watcher) parse(key string, value []byte) *entry {
	if old := w.reg.entries[key]; old != nil && string(old.value) == string(value) {
		return old
	}
	e := w.parser.parse(key, value)
	for _, d := range e.diags {
		w.log.Warn("etcd registry entry has a problem", "key", d.Location, "field", d.Field, "severity", d.Severity, "problem", d.Message)
	}
	return e
}

// watch follows the registry from rev+1 until the watch fails, falls
// behind compaction (errCompacted), or etcd stops answering.
func (w *watcher) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	lost := w.monitor(wctx)
	// Watch blocks until etcd confirms the watch, retrying forever on a
	// broken connection, so it is bounded here like any request.
	created := make(chan clientv3.WatchChan, 1)
	go func() {
		key, end := w.parser.keyRange()
		created <- w.cli.Watch(wctx, key, clientv3.WithRange(end), clientv3.WithRev(rev+1))
	}()
	var wch clientv3.WatchChan
	timer := time.NewTimer(w.requestTimeout)
	select {
	case wch = <-created:
		timer.Stop()
		w.watchStart = time.Now()
	case <-ctx.Done():
		timer.Stop()
		return ctx.Err()
	case err := <-lost:
		timer.Stop()
		return err
	case <-timer.C:
		return fmt.Errorf("etcd %s did not confirm the watch within %s", strings.Join(w.cfg.Endpoints, ","), w.requestTimeout)
	}
	// Liveness: a linearizable read of one key, answered by any etcd
	// that has a leader and quorum. (Watch progress requests are not a
	// liveness signal: etcd answers them only for watches at or behind
	// its current revision, and a watch from rev+1 on an idle etcd is
	// ahead of it, so an idle, healthy etcd never answered.)
	probe := time.NewTicker(w.probeEvery)
	defer probe.Stop()
	var probing chan error // the probe in flight, nil if none
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-lost:
			return err
		case <-probe.C:
			if probing != nil {
				continue
			}
			probing = make(chan error, 1)
			go func(done chan<- error) {
				rctx, rcancel := context.WithTimeout(wctx, w.requestTimeout)
				defer rcancel()
				key, end := w.parser.keyRange()
				_, err := w.cli.Get(rctx, key, clientv3.WithRange(end), clientv3.WithLimit(1), clientv3.WithKeysOnly())
				done <- err
			}(probing)
		case err := <-probing:
			probing = nil
			if ctx.Err() != nil {
				// Shutting down: the probe failed because of it.
				return ctx.Err()
			}
			if err != nil {
				return fmt.Errorf("etcd %s did not answer a read within %s: %w", strings.Join(w.cfg.Endpoints, ","), w.requestTimeout, err)
			}
			w.probes.Add(1)
		case wr, ok := <-wch:
			changed, err := w.apply(wr, ok)
			// Apply whatever else is already waiting, then publish once.
			for more := err == nil; more; {
				select {
				case wr, ok := <-wch:
					var c bool
					c, err = w.apply(wr, ok)
					changed = changed || c
					more = err == nil
				default:
					more = false
				}
			}
			if changed {
				w.publish(ctx)
			}
			if err != nil {
				return err
			}
		}
	}
}

// apply applies one watch response and reports whether the state changed.
func (w *watcher) apply(wr clientv3.WatchResponse, open bool) (bool, error) {
	if !open {
		return false, errors.New("etcd watch closed")
	}
	if wr.CompactRevision != 0 {
		return false, fmt.Errorf("%w: etcd compacted up to revision %d", errCompacted, wr.CompactRevision)
	}
	if err := wr.Err(); err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			return false, fmt.Errorf("%w: %w", errCompacted, err)
		}
		return false, fmt.Errorf("etcd watch failed: %w", err)
	}
	if wr.Canceled {
		return false, errors.New("etcd canceled the watch")
	}
	changed := false
	for _, ev := range wr.Events {
		k := string(ev.Kv.Key)
		switch ev.Type {
		case clientv3.EventTypePut:
			changed = w.reg.set(k, w.parse(k, ev.Kv.Value)) || changed
		case clientv3.EventTypeDelete:
			changed = w.reg.set(k, nil) || changed
		}
	}
	return changed, nil
}

// monitor reports on the returned channel when the client's connection has
// not been ready for lostAfter: etcd's watch retries a lost connection
// silently and forever, so this is how an outage becomes visible.
func (w *watcher) monitor(ctx context.Context) <-chan error {
	lost := make(chan error, 1)
	conn := w.cli.ActiveConnection()
	go func() {
		state := conn.GetState()
		for {
			if state == connectivity.Ready {
				if !conn.WaitForStateChange(ctx, state) {
					return
				}
				state = conn.GetState()
				continue
			}
			down, cancel := context.WithTimeout(ctx, w.lostAfter)
			for state != connectivity.Ready && conn.WaitForStateChange(down, state) {
				state = conn.GetState()
			}
			cancel()
			if ctx.Err() != nil {
				return
			}
			if state != connectivity.Ready {
				lost <- fmt.Errorf("lost the connection to etcd %s (%s for %s)", strings.Join(w.cfg.Endpoints, ","), state, w.lostAfter)
				return
			}
		}
	}()
	return lost
}

// publish sends the current state unless it equals the last one sent; after
// an outage it is sent regardless, which clears the consumer's stale mark.
func (w *watcher) publish(ctx context.Context) {
	st, changed := w.reg.state()
	if !changed && !w.stale && w.last != nil {
		return
	}
	if !sources.Send(ctx, w.events, sources.Event{Source: SourceName, State: st}) {
		return
	}
	n := 0
	for _, svc := range st.Services {
		n += len(svc.Instances)
	}
	if w.stale {
		w.log.Info("etcd is reachable again; registry re-listed", "services", len(st.Services), "instances", n, "diagnostics", len(st.Diagnostics))
	} else if w.last == nil {
		w.log.Info("etcd registry loaded", "services", len(st.Services), "instances", n, "diagnostics", len(st.Diagnostics))
	} else {
		w.log.Debug("etcd registry changed", "services", len(st.Services), "instances", n, "diagnostics", len(st.Diagnostics))
	}
	w.last, w.stale = st, false
}

// fail reports an outage: the first failure sends an Err event (the
// consumer keeps serving the last state), later ones until the next
// successful list are only logged.
func (w *watcher) fail(ctx context.Context, err error) {
	if w.stale {
		w.log.Debug("etcd still unavailable", "err", err)
		return
	}
	w.log.Error("etcd unavailable; serving the last known registry until it is back", "err", err)
	if sources.Send(ctx, w.events, sources.Event{Source: SourceName, Err: err}) {
		w.stale = true
	}
}
