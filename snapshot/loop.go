// Package snapshot joins sources and the translator: it keeps each source's
// latest state, waits until every source has synced, debounces bursts of
// changes, translates the merged catalog for each proxy group, and publishes
// content-versioned snapshots to the xDS cache, keeping the last good one
// whenever a build fails.
package snapshot

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/time/rate"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// Loop is the update loop. Create it with NewLoop and start it with Run.
//
// Run receives source and policy updates, debounces them, rebuilds every
// group and publishes what changed; everything else is in helpers with one
// job each: inputs.go records the updates and merges the catalog,
// groups.go registers groups and forgets unused ones, memory.go forgets
// them sooner when memory is short, pipeline.go turns the catalog into
// each group's snapshot, status.go reports, metrics.go and tracing.go
// observe.
type Loop struct {
	cfg   Config
	trace tracer
	// wake asks Run to build new groups at once; rebuild, every group
	// (after a rollback).
	wake    chan struct{}
	rebuild chan struct{}

	// mu guards what the loop shares with other goroutines (EnsureGroup,
	// ReleaseGroup and the admin API's Status): its inputs, its groups and
	// its status.
	mu sync.Mutex
	// Inputs (inputs.go). policy is the last valid policy set and
	// policyStatus its state; dirty says a source or the policy set
	// changed since catalog was merged.
	sources      map[string]*SourceStatus
	policy       *policy.Set
	policyStatus SourceStatus
	// translatorStatus holds the translator's diagnostics over every
	// group (defaultDiags: the default sidecar's, which readiness
	// translates).
	translatorStatus SourceStatus
	defaultDiags     []sources.Diagnostic
	merger           sources.Merger
	catalog          sources.Catalog
	dirty            bool
	// localities indexes catalog by address for LocalityAt; nil until
	// asked after each merge.
	localities localityIndex
	// Groups (groups.go). groupRate paces the making of new groups;
	// evicted are groups forgotten to make room, whose pipelines and
	// cache entries the loop's goroutine drops.
	groups    map[string]*group
	groupRate *rate.Limiter
	evicted   []string
	// rollback is the rollback in effect (rollback.go), nil for none.
	rollback *RollbackStatus
	// Status (status.go). built says at least one full build has
	// succeeded.
	built     bool
	lastError string

	// Used by the loop's goroutine only: the pipelines (pipeline.go) and
	// the memory pressure episode (memory.go).
	pipes    *pipelines
	pressure pressureEpisode
}

// NewLoop returns a loop for cfg.
func NewLoop(cfg Config) *Loop {
	cfg = cfg.withDefaults()
	l := &Loop{
		cfg:     cfg,
		trace:   tracer{cfg.Tracer},
		wake:    make(chan struct{}, 1),
		rebuild: make(chan struct{}, 1),
		sources: map[string]*SourceStatus{},
		groups:  map[string]*group{},
		// Built from the loop's translator, so every group translates
		// with the same options.
		pipes:     newPipelines(cfg.Translator, cfg.Metrics.translateSeconds),
		groupRate: rate.NewLimiter(rate.Limit(cfg.GroupRate), max(1, int(cfg.GroupRate*DefaultGroupBurstSeconds))),
	}
	for _, s := range cfg.Sources {
		l.sources[s] = &SourceStatus{}
	}
	if cfg.Policies == nil {
		l.policyStatus.Synced = true
	}
	return l
}

// Run consumes source events and policy updates until ctx ends or events
// is closed. A change is built once the debounce lets it through; a new
// group (EnsureGroup) is built at once.
func (l *Loop) Run(ctx context.Context, events <-chan sources.Event) error {
	debounce := newDebouncer(l.cfg.HoldOff, l.cfg.MaxDelay)
	defer debounce.stop()
	idle := time.NewTicker(l.cfg.GroupIdleTTL / 2)
	defer idle.Stop()
	memory := time.NewTicker(memoryCheckInterval)
	defer memory.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			span := l.trace.sourceUpdate(ctx, ev)
			changed := l.apply(ev)
			span.End()
			if changed {
				debounce.changed(l.cfg.Now())
			}
		case u := <-l.cfg.Policies:
			if l.applyPolicy(u) {
				debounce.changed(l.cfg.Now())
			}
		case <-debounce.C():
			debounce.fired()
			l.build(ctx, false)
		case <-l.wake:
			l.dropEvicted()
			l.build(ctx, true)
		case <-l.rebuild:
			l.build(ctx, false)
		case <-idle.C:
			l.dropIdleGroups()
		case <-memory.C:
			// Looked at below, as after every turn.
		}
		l.relieveMemory()
	}
}

// poke wakes Run to build new groups.
func (l *Loop) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// build translates for every group (or, with onlyFresh, for groups not built
// yet) and publishes what changed. It builds nothing before every input
// synced.
func (l *Loop) build(ctx context.Context, onlyFresh bool) {
	l.mu.Lock()
	if !l.synced() {
		l.mu.Unlock()
		return
	}
	ctx, span := l.trace.build(ctx, onlyFresh)
	defer span.End()
	l.mergeCatalog()
	catalog, pol := l.catalog, l.policy
	todo := l.groupsToBuild(onlyFresh)
	l.mu.Unlock()

	ok := true
	// Translating the default sidecar view validates the catalog even before
	// any proxy connects, which is what readiness reports.
	if !onlyFresh {
		b, err := l.translate(ctx, catalog, pol, translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar})
		if err != nil {
			ok = false
			l.recordError(err)
		}
		l.mu.Lock()
		l.defaultDiags = b.diags
		l.mu.Unlock()
	}
	for _, g := range todo {
		ok = l.buildGroup(ctx, g, catalog, pol) && ok
	}
	l.recordDiagnostics()
	if !onlyFresh {
		// Every group was translated: what none of them used is gone.
		l.pipes.sweep(l.cfg.Now())
		if ok {
			l.recordBuilt(len(catalog.Services))
		}
	}
}

// buildGroup translates g's snapshot and publishes it if its versions
// changed. It reports whether the group now has the snapshot catalog and
// pol make.
func (l *Loop) buildGroup(ctx context.Context, g *group, catalog sources.Catalog, pol *policy.Set) bool {
	key := g.proxy.Key()
	b, err := l.translate(ctx, catalog, pol, g.proxy)
	snap := b.snap
	if err != nil {
		l.groupFailed(g, err, fmt.Errorf("group %s: %w", key, err))
		return false
	}
	versions := Versions(snap)
	l.mu.Lock()
	changed := !maps.Equal(versions, g.versions)
	l.mu.Unlock()
	result := "unchanged"
	if changed {
		if err := l.publish(ctx, key, snap, versions); err != nil {
			l.groupFailed(g, err, fmt.Errorf("publishing snapshot for %s: %w", key, err))
			return false
		}
		result = "published"
		l.cfg.Log.Debug("snapshot published", "group", key, "versions", versions)
	}
	// Record the versions only once the cache has them, so a failed
	// publish is retried by the next build even if nothing changed.
	l.mu.Lock()
	g.built(versions, pol, catalog, b.diags)
	l.mu.Unlock()
	l.cfg.Metrics.snapshots.WithLabelValues(result).Inc()
	return true
}

// groupFailed records that g's build failed with err; report is how the
// status and the log tell it.
func (l *Loop) groupFailed(g *group, err, report error) {
	l.mu.Lock()
	g.err = err.Error()
	l.mu.Unlock()
	l.recordError(report)
}

func (l *Loop) translate(ctx context.Context, catalog sources.Catalog, pol *policy.Set, p translator.Proxy) (translated, error) {
	span := l.trace.translate(ctx, p.Key(), len(catalog.Services))
	defer span.End()
	b, err := l.pipes.snapshot(catalog, pol, p)
	spanError(span, err)
	return b, err
}

func (l *Loop) publish(ctx context.Context, group string, snap *cache.Snapshot, versions map[resource.Type]string) error {
	ctx, span := l.trace.publish(ctx, group, versions)
	defer span.End()
	err := l.cfg.Publisher.SetSnapshot(ctx, group, snap)
	spanError(span, err)
	return err
}
