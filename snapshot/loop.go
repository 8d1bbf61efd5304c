// Package snapshot joins sources and the translator: it keeps each source's
// latest state, waits until every source has synced, debounces bursts of
// changes, translates the merged catalog for each proxy group, and publishes
// content-versioned snapshots to the xDS cache, keeping the last good one
// whenever a build fails.
package snapshot

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// Publisher receives finished snapshots (the xDS cache).
type Publisher interface {
	SetSnapshot(ctx context.Context, node string, snap cache.ResourceSnapshot) error
	// ClearSnapshot forgets a group no proxy uses any more.
	ClearSnapshot(node string)
}

// DefaultGroupIdleTTL is how long a proxy group outlives its last proxy:
// long enough to ride out restarts and rolling deploys without a rebuild,
// short enough that groups of services that are gone (canaries, versioned
// deploys) stop costing a translation on every change.
const DefaultGroupIdleTTL = 10 * time.Minute

// Config wires a Loop.
type Config struct {
	// Sources are the names of the sources whose first state the loop waits
	// for before it builds anything, so proxies never see a partial catalog.
	Sources    []string
	Translator *translator.Translator
	Publisher  Publisher
	// Policies, when set, delivers policy-directory updates. The loop then
	// builds nothing until the first valid policy set arrived (proxies never
	// see config that silently lacks its policies) and keeps the last valid
	// set whenever an update is rejected. Nil means built-in defaults only.
	Policies <-chan watch.Update
	// HoldOff is how long the loop waits after a change for more changes;
	// MaxDelay bounds the wait while changes keep coming.
	HoldOff  time.Duration
	MaxDelay time.Duration
	Log      *slog.Logger
	Metrics  *Metrics
	// Now is the loop's clock; nil means time.Now.
	Now func() time.Time
	// Tracer records spans for source updates, builds, translations and
	// publishes; nil records nothing.
	Tracer trace.Tracer
	// GroupIdleTTL is how long a group is kept after its last proxy left
	// (see ReleaseGroup); 0 means DefaultGroupIdleTTL.
	GroupIdleTTL time.Duration
	// MaxGroups bounds the number of proxy groups, and GroupRate (new
	// groups a second, with a burst of DefaultGroupBurstSeconds of it)
	// how fast they are made; 0 means the defaults (see EnsureGroup).
	MaxGroups int
	GroupRate float64
}

// Loop is the update loop. Create it with NewLoop and start it with Run.
type Loop struct {
	cfg  Config
	wake chan struct{}

	mu      sync.Mutex
	sources map[string]*sourceStatus
	catalog sources.Catalog
	groups  map[string]*group
	// policy is the last valid policy set and policyStatus its state.
	policy       *policy.Set
	policyStatus sourceStatus
	// merger, pipes and the shared memos make a build cost what changed:
	// per-service work and hashing are done once for every group (shared,
	// sharedBuild), the rest once per group (pipes). Only the goroutine
	// running the loop uses them.
	merger      sources.Merger
	pipes       map[string]*pipeline
	shared      *translator.Shared
	sharedBuild *Shared
	// groupRate paces the making of new groups; evicted are groups
	// forgotten to make room, whose pipelines and cache entries the
	// loop's goroutine drops.
	groupRate *rate.Limiter
	evicted   []string
	// built says at least one full build has succeeded.
	built     bool
	lastError string
	dirty     bool // a source changed since the last build
}

type sourceStatus struct {
	Synced      bool                 `json:"synced"`
	Stale       bool                 `json:"stale"`
	Error       string               `json:"error,omitempty"`
	LastUpdate  time.Time            `json:"last_update,omitzero"`
	Diagnostics []sources.Diagnostic `json:"diagnostics,omitempty"`
	state       *sources.State
}

type group struct {
	proxy    translator.Proxy
	snap     *cache.Snapshot
	versions map[resource.Type]string
	// builtPolicy and builtCatalog are what the group's snapshot was
	// built from; the admin API works out the group's dependencies from
	// them when asked, not on every build.
	builtPolicy  *policy.Set
	builtCatalog sources.Catalog
	err          string
	fresh        bool // registered but never built
	// idleSince is when the group's last proxy left; zero while in use.
	idleSince time.Time
}

// pipeline is the incremental translation and snapshot building of one
// proxy group.
type pipeline struct {
	translator *translator.Incremental
	builder    *Builder
	// revision is the translation result the builder last built snap
	// from.
	revision uint64
	snap     *cache.Snapshot
}

// NewLoop returns a loop for cfg.
func NewLoop(cfg Config) *Loop {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.GroupIdleTTL <= 0 {
		cfg.GroupIdleTTL = DefaultGroupIdleTTL
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.HoldOff <= 0 {
		cfg.HoldOff = 100 * time.Millisecond
	}
	if cfg.MaxDelay < cfg.HoldOff {
		cfg.MaxDelay = 10 * cfg.HoldOff
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.MaxGroups <= 0 {
		cfg.MaxGroups = DefaultMaxGroups
	}
	if cfg.GroupRate <= 0 {
		cfg.GroupRate = DefaultGroupRate
	}
	l := &Loop{
		cfg:     cfg,
		wake:    make(chan struct{}, 1),
		sources: map[string]*sourceStatus{},
		groups:  map[string]*group{},
		pipes:   map[string]*pipeline{},
		// Built from the loop's translator, so every group translates
		// with the same options.
		shared:      cfg.Translator.NewShared(),
		sharedBuild: NewShared(),
		groupRate:   rate.NewLimiter(rate.Limit(cfg.GroupRate), max(1, int(cfg.GroupRate*DefaultGroupBurstSeconds))),
	}
	for _, s := range cfg.Sources {
		l.sources[s] = &sourceStatus{}
	}
	if cfg.Policies == nil {
		l.policyStatus.Synced = true
	}
	return l
}

// EnsureGroup registers the config group of a newly seen proxy. The group's
// first snapshot is built at once (no debounce) when the catalog is ready, so
// a connecting proxy is not kept waiting. A new group is refused
// (ErrTooManyGroups, ErrGroupRate) beyond MaxGroups groups, unless one of
// them has no proxies (the one idle longest is then forgotten), and beyond
// GroupRate new groups a second.
func (l *Loop) EnsureGroup(p translator.Proxy) error {
	key := p.Key()
	l.mu.Lock()
	if g, ok := l.groups[key]; ok {
		g.idleSince = time.Time{}
		l.mu.Unlock()
		return nil
	}
	if err := l.admitGroup(key); err != nil {
		l.mu.Unlock()
		return err
	}
	l.groups[key] = &group{proxy: p, fresh: true}
	l.mu.Unlock()
	l.poke()
	return nil
}

// ReleaseGroup says the last proxy of a group disconnected. The group is
// dropped (and its snapshot cleared) once it stayed unused for GroupIdleTTL;
// a proxy of the group connecting before then keeps it.
func (l *Loop) ReleaseGroup(p translator.Proxy) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g, ok := l.groups[p.Key()]; ok && g.idleSince.IsZero() {
		g.idleSince = l.cfg.Now()
	}
}

// dropIdleGroups forgets the groups that stayed unused for GroupIdleTTL.
func (l *Loop) dropIdleGroups() {
	l.mu.Lock()
	var drop []string
	now := l.cfg.Now()
	for key, g := range l.groups {
		if !g.idleSince.IsZero() && now.Sub(g.idleSince) >= l.cfg.GroupIdleTTL {
			drop = append(drop, key)
			delete(l.groups, key)
		}
	}
	l.mu.Unlock()
	for _, key := range drop {
		delete(l.pipes, key)
		l.cfg.Publisher.ClearSnapshot(key)
		l.cfg.Log.Info("dropped an unused proxy group", "group", key, "idle_for", l.cfg.GroupIdleTTL)
	}
}

func (l *Loop) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Run consumes source events until ctx ends.
func (l *Loop) Run(ctx context.Context, events <-chan sources.Event) error {
	var (
		timer        = time.NewTimer(time.Hour)
		timerRunning bool
		firstPending time.Time
	)
	timer.Stop()
	gc := time.NewTicker(l.cfg.GroupIdleTTL / 2)
	defer gc.Stop()
	schedule := func() {
		now := l.cfg.Now()
		if firstPending.IsZero() {
			firstPending = now
		}
		d := l.cfg.HoldOff
		if left := firstPending.Add(l.cfg.MaxDelay).Sub(now); left < d {
			d = max(left, 0)
		}
		if timerRunning && !timer.Stop() {
			<-timer.C
		}
		timer.Reset(d)
		timerRunning = true
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			if l.traceApply(ctx, ev) {
				schedule()
			}
		case u := <-l.cfg.Policies:
			if l.applyPolicy(u) {
				schedule()
			}
		case <-timer.C:
			timerRunning = false
			firstPending = time.Time{}
			l.build(ctx, false)
		case <-l.wake:
			l.dropEvicted()
			l.build(ctx, true)
		case <-gc.C:
			l.dropIdleGroups()
		}
	}
}

// traceApply is apply inside a span describing the source update.
func (l *Loop) traceApply(ctx context.Context, ev sources.Event) bool {
	_, span := l.cfg.Tracer.Start(ctx, "sluice.source.update", trace.WithAttributes(
		attribute.String("sluice.source", ev.Source),
		attribute.Bool("sluice.source.stale", ev.State == nil),
	))
	defer span.End()
	if ev.State != nil {
		n := 0
		for _, s := range ev.State.Services {
			n += len(s.Instances)
		}
		span.SetAttributes(attribute.Int("sluice.services", len(ev.State.Services)), attribute.Int("sluice.instances", n))
	}
	if ev.Err != nil {
		span.SetStatus(codes.Error, ev.Err.Error())
	}
	return l.apply(ev)
}

// apply records a source event and reports whether a rebuild is needed.
func (l *Loop) apply(ev sources.Event) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.sources[ev.Source]
	if st == nil {
		st = &sourceStatus{}
		l.sources[ev.Source] = st
	}
	m := l.cfg.Metrics
	if ev.State == nil {
		st.Stale = true
		if ev.Err != nil {
			st.Error = ev.Err.Error()
		}
		st.Diagnostics = ev.Diagnostics
		m.sourceErrors.WithLabelValues(ev.Source).Inc()
		m.sourceStale.WithLabelValues(ev.Source).Set(1)
		m.setDiagnostics(ev.Source, ev.Diagnostics)
		l.cfg.Log.Warn("source is stale; serving its last known state", "source", ev.Source, "err", ev.Err)
		return false
	}
	st.Synced, st.Stale, st.Error = true, false, ""
	st.Diagnostics = ev.State.Diagnostics
	st.state = ev.State
	st.LastUpdate = l.cfg.Now()
	m.sourceUpdates.WithLabelValues(ev.Source).Inc()
	m.sourceStale.WithLabelValues(ev.Source).Set(0)
	m.setDiagnostics(ev.Source, ev.State.Diagnostics)
	l.dirty = true
	return true
}

// applyPolicy records a policy update and reports whether a rebuild is needed.
func (l *Loop) applyPolicy(u watch.Update) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, m := &l.policyStatus, l.cfg.Metrics
	m.setDiagnostics(policy.SourceName, u.Diagnostics)
	if u.Set == nil {
		st.Stale = true
		st.Error = fmt.Sprint(u.Err)
		st.Diagnostics = u.Diagnostics
		m.sourceErrors.WithLabelValues(policy.SourceName).Inc()
		m.sourceStale.WithLabelValues(policy.SourceName).Set(1)
		l.cfg.Log.Error("policy change rejected; serving the last valid policy set", "err", u.Err)
		return false
	}
	st.Synced, st.Stale, st.Error, st.Diagnostics = true, false, "", nil
	st.LastUpdate = l.cfg.Now()
	m.sourceUpdates.WithLabelValues(policy.SourceName).Inc()
	m.sourceStale.WithLabelValues(policy.SourceName).Set(0)
	l.policy = u.Set
	l.dirty = true
	l.cfg.Log.Info("policy set loaded", "files", len(u.Set.Files()))
	return true
}

func (l *Loop) synced() bool {
	for _, s := range l.sources {
		if !s.Synced {
			return false
		}
	}
	return l.policyStatus.Synced
}

// build translates for every group (or, with onlyFresh, for groups not built
// yet) and publishes what changed.
func (l *Loop) build(ctx context.Context, onlyFresh bool) {
	l.mu.Lock()
	if !l.synced() {
		l.mu.Unlock()
		return
	}
	ctx, span := l.cfg.Tracer.Start(ctx, "sluice.snapshot.build", trace.WithAttributes(attribute.Bool("sluice.only_new_groups", onlyFresh)))
	defer span.End()
	if l.dirty {
		states := map[string]sources.State{}
		for name, s := range l.sources {
			states[name] = *s.state
		}
		l.catalog = l.merger.Merge(states)
		l.dirty = false
		l.policyWarnings()
		l.cfg.Metrics.catalogServices.Set(float64(len(l.catalog.Services)))
		l.cfg.Metrics.catalogInstances.Set(float64(l.catalog.InstanceCount()))
	}
	catalog, pol := l.catalog, l.policy
	var todo []*group
	for _, g := range l.groups {
		if !onlyFresh || g.fresh {
			todo = append(todo, g)
		}
	}
	l.mu.Unlock()

	sort.Slice(todo, func(i, j int) bool { return todo[i].proxy.Key() < todo[j].proxy.Key() })
	failed := false
	// Translating the default sidecar view validates the catalog even before
	// any proxy connects, which is what readiness reports.
	if !onlyFresh {
		if _, err := l.translate(ctx, catalog, pol, translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar}); err != nil {
			failed = true
			l.recordError(err)
		}
	}
	for _, g := range todo {
		snap, err := l.translate(ctx, catalog, pol, g.proxy)
		l.mu.Lock()
		if err != nil {
			failed = true
			g.err = err.Error()
			l.mu.Unlock()
			l.recordError(fmt.Errorf("group %s: %w", g.proxy.Key(), err))
			continue
		}
		versions := Versions(snap)
		changed := !equalVersions(versions, g.versions)
		l.mu.Unlock()
		if !changed {
			l.mu.Lock()
			g.err, g.fresh = "", false
			g.builtPolicy, g.builtCatalog = pol, catalog
			l.mu.Unlock()
			l.cfg.Metrics.snapshots.WithLabelValues("unchanged").Inc()
			continue
		}
		if err := l.publish(ctx, g.proxy.Key(), snap, versions); err != nil {
			failed = true
			l.mu.Lock()
			g.err = err.Error()
			l.mu.Unlock()
			l.recordError(fmt.Errorf("publishing snapshot for %s: %w", g.proxy.Key(), err))
			continue
		}
		// Record the versions only once the cache has them, so a failed
		// publish is retried by the next build even if nothing changed.
		l.mu.Lock()
		g.snap, g.versions = snap, versions
		g.builtPolicy, g.builtCatalog = pol, catalog
		g.err, g.fresh = "", false
		l.mu.Unlock()
		l.cfg.Metrics.snapshots.WithLabelValues("published").Inc()
		l.cfg.Log.Debug("snapshot published", "group", g.proxy.Key(), "versions", versions)
	}
	if !onlyFresh {
		// Every group was translated: what none of them used is gone.
		l.shared.Sweep()
		l.sharedBuild.Rotate(l.cfg.Now())
	}
	if !failed {
		l.mu.Lock()
		if !onlyFresh {
			if !l.built {
				l.cfg.Log.Info("catalog translated; ready", "services", len(catalog.Services))
			}
			l.built = true
			l.lastError = ""
		}
		l.mu.Unlock()
	}
}

func (l *Loop) translate(ctx context.Context, catalog sources.Catalog, pol *policy.Set, p translator.Proxy) (*cache.Snapshot, error) {
	_, span := l.cfg.Tracer.Start(ctx, "sluice.translate", trace.WithAttributes(
		attribute.String("sluice.group", p.Key()), attribute.Int("sluice.services", len(catalog.Services))))
	defer span.End()
	pipe := l.pipes[p.Key()]
	if pipe == nil {
		pipe = &pipeline{translator: l.shared.NewIncremental(p), builder: l.sharedBuild.NewBuilder()}
		l.pipes[p.Key()] = pipe
	}
	start := time.Now()
	res, err := pipe.translator.Translate(catalog, pol)
	l.cfg.Metrics.translateSeconds.Observe(time.Since(start).Seconds())
	if err == nil && res.Revision != 0 && res.Revision == pipe.revision {
		// The very result the last snapshot was built from.
		return pipe.snap, nil
	}
	if err == nil {
		var snap *cache.Snapshot
		if snap, err = pipe.builder.Build(res.Resources); err == nil {
			pipe.revision, pipe.snap = res.Revision, snap
			return snap, nil
		}
	}
	span.SetStatus(codes.Error, err.Error())
	return nil, err
}

func (l *Loop) recordError(err error) {
	l.cfg.Metrics.snapshots.WithLabelValues("failed").Inc()
	l.cfg.Log.Error("snapshot build failed; proxies keep their last good config", "err", err)
	l.mu.Lock()
	l.lastError = err.Error()
	l.mu.Unlock()
}

func equalVersions(a, b map[resource.Type]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// policyWarnings records policies that name services missing from the
// catalog: warnings, since the service may register later. Called with l.mu held.
func (l *Loop) policyWarnings() {
	if l.policy == nil {
		return
	}
	names := make([]string, len(l.catalog.Services))
	for i, s := range l.catalog.Services {
		names[i] = s.Name
	}
	l.policyStatus.Diagnostics = l.policy.Warnings(names)
	l.cfg.Metrics.setDiagnostics(policy.SourceName, l.policyStatus.Diagnostics)
}

func (l *Loop) publish(ctx context.Context, group string, snap *cache.Snapshot, versions map[resource.Type]string) error {
	ctx, span := l.cfg.Tracer.Start(ctx, "sluice.publish", trace.WithAttributes(attribute.String("sluice.group", group)))
	defer span.End()
	for typ, v := range versions {
		span.SetAttributes(attribute.String("sluice.version."+typ[strings.LastIndexByte(typ, '.')+1:], v))
	}
	err := l.cfg.Publisher.SetSnapshot(ctx, group, snap)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}
