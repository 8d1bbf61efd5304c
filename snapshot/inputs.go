package snapshot

import (
	"fmt"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/sources"
)

// The loop's inputs: each source's latest state, the last valid policy
// set, and the catalog merged from the states.

// apply records a source event and reports whether a rebuild is needed.
func (l *Loop) apply(ev sources.Event) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.sources[ev.Source]
	if st == nil {
		st = &SourceStatus{}
		l.sources[ev.Source] = st
	}
	m := l.cfg.Metrics
	if ev.State == nil {
		st.Stale = true
		if ev.Err != nil {
			st.Error = ev.Err.Error()
		}
		st.Diagnostics = ev.Diagnostics
		m.sourceFailed(ev.Source, ev.Diagnostics)
		l.cfg.Log.Warn("source is stale; serving its last known state", "source", ev.Source, "err", ev.Err)
		return false
	}
	st.Synced, st.Stale, st.Error = true, false, ""
	st.Diagnostics = ev.State.Diagnostics
	st.state = ev.State
	st.LastUpdate = l.cfg.Now()
	m.sourceUpdated(ev.Source, ev.State.Diagnostics)
	l.dirty = true
	l.localities = nil // indexed again when next asked (locality.go)
	return true
}

// applyPolicy records a policy update and reports whether a rebuild is needed.
func (l *Loop) applyPolicy(u watch.Update) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, m := &l.policyStatus, l.cfg.Metrics
	if u.Set == nil {
		st.Stale = true
		st.Error = fmt.Sprint(u.Err)
		st.Diagnostics = u.Diagnostics
		m.sourceFailed(policy.SourceName, u.Diagnostics)
		l.cfg.Log.Error("policy change rejected; serving the last valid policy set", "err", u.Err)
		return false
	}
	st.Synced, st.Stale, st.Error, st.Diagnostics = true, false, "", nil
	st.LastUpdate = l.cfg.Now()
	m.sourceUpdated(policy.SourceName, u.Diagnostics)
	l.policy = u.Set
	l.dirty = true
	l.endRollback()
	l.cfg.Log.Info("policy set loaded", "files", len(u.Set.Files()))
	return true
}

// synced is the first-sync gate: nothing is built before every source,
// and the policy directory if there is one, delivered a first state.
// Called with l.mu held.
func (l *Loop) synced() bool {
	for _, s := range l.sources {
		if !s.Synced {
			return false
		}
	}
	return l.policyStatus.Synced
}

// mergeCatalog merges the sources' states into the catalog if one changed
// since the last merge. Called with l.mu held.
func (l *Loop) mergeCatalog() {
	if !l.dirty {
		return
	}
	states := map[string]sources.State{}
	for name, s := range l.sources {
		states[name] = *s.state
	}
	l.catalog = l.merger.Merge(states)
	l.localities = nil // indexed again when next asked (locality.go)
	l.dirty = false
	l.policyWarnings()
	l.cfg.Metrics.catalogMerged(l.catalog)
}

// policyWarnings records policies that name services missing from the
// catalog: warnings, since the service may register later. Called with
// l.mu held.
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
