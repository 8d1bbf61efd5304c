package snapshot

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// Status is the loop's state as the admin API shows it.
type Status struct {
	Ready   bool                    `json:"ready"`
	Sources map[string]SourceStatus `json:"sources"`
	Policy  SourceStatus            `json:"policy"`
	// Translator has the translator's diagnostics over every group.
	Translator SourceStatus  `json:"translator"`
	Groups     []GroupStatus `json:"groups"`
	LastError  string        `json:"last_error,omitempty"`
	// Rollback, when set, says the policy set served is not the newest
	// valid one: clients rejected what the newest made (rollback.go).
	Rollback *RollbackStatus `json:"rollback,omitempty"`
}

// SourceStatus is one source's state: the policy directory's, or a
// registry's (then with the state it last delivered).
type SourceStatus struct {
	Synced      bool                 `json:"synced"`
	Stale       bool                 `json:"stale"`
	Error       string               `json:"error,omitempty"`
	LastUpdate  time.Time            `json:"last_update,omitzero"`
	Diagnostics []sources.Diagnostic `json:"diagnostics,omitempty"`
	state       *sources.State
}

// GroupStatus is one proxy group's current snapshot.
type GroupStatus struct {
	Key      string                   `json:"key"`
	Proxy    translator.Proxy         `json:"proxy"`
	Versions map[resource.Type]string `json:"versions,omitempty"`
	Error    string                   `json:"error,omitempty"`
	// Dependencies are the services whose resources the group's current
	// snapshot was built for (its service's spec.dependencies, or every
	// service); Missing, those of them the catalog lacked then.
	Dependencies policy.Dependencies `json:"dependencies"`
	Missing      []string            `json:"missing_dependencies,omitempty"`
	// Diagnostics are the translator's, for this group's snapshot.
	Diagnostics []sources.Diagnostic `json:"diagnostics,omitempty"`
	LastNack    *NackReport          `json:"last_nack,omitempty"` // provenance.go
}

// Ready reports whether every source has synced and the merged catalog has
// been translated at least once. A stale source does not make the loop
// unready: it keeps serving its last known state (see Status).
func (l *Loop) Ready() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.built && l.synced()
}

// Status returns a copy of the loop's state.
func (l *Loop) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := Status{Ready: l.built && l.synced(), Sources: map[string]SourceStatus{}, Policy: l.policyStatus, Translator: l.translatorStatus, LastError: l.lastError}
	if l.rollback != nil {
		rb := *l.rollback
		st.Rollback = &rb
	}
	for name, s := range l.sources {
		st.Sources[name] = *s
	}
	for key, g := range l.groups {
		// The dependencies the group's snapshot was built for, like its
		// versions: not the newest policy set's before it is built.
		gs := GroupStatus{Key: key, Proxy: g.proxy, Versions: g.versions, Error: g.err, Diagnostics: g.diags, LastNack: g.lastNack}
		if g.versions != nil {
			gs.Dependencies = translator.Dependencies(g.proxy, g.builtPolicy)
			gs.Missing = missingServices(g.builtCatalog, gs.Dependencies)
		}
		st.Groups = append(st.Groups, gs)
	}
	sort.Slice(st.Groups, func(i, j int) bool { return st.Groups[i].Key < st.Groups[j].Key })
	return st
}

// recordError reports a failed build: proxies keep their last good
// snapshot, and the status shows the error until a full build succeeds.
func (l *Loop) recordError(err error) {
	l.cfg.Metrics.snapshots.WithLabelValues("failed").Inc()
	l.cfg.Log.Error("snapshot build failed; proxies keep their last good config", "err", err)
	l.mu.Lock()
	l.lastError = err.Error()
	l.mu.Unlock()
}

// recordBuilt reports a build of every group that succeeded: the loop is
// ready, and the last error is over.
func (l *Loop) recordBuilt(services int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.built {
		l.cfg.Log.Info("catalog translated; ready", "services", services)
	}
	l.built = true
	l.lastError = ""
}

// Catalog returns the merged catalog of the last build.
func (l *Loop) Catalog() sources.Catalog {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.catalog
}

// Policy returns the policy set the loop serves now: the newest valid
// one, or during a rollback the one clients accepted (see Status's
// Rollback); nil for the built-in defaults.
func (l *Loop) Policy() *policy.Set {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.policy
}

// missingServices lists the services deps names that catalog lacks.
func missingServices(catalog sources.Catalog, deps policy.Dependencies) []string {
	var out []string
	for _, name := range deps.Services {
		if _, ok := slices.BinarySearchFunc(catalog.Services, name, func(s sources.CatalogService, n string) int {
			return strings.Compare(s.Name, n)
		}); !ok {
			out = append(out, name)
		}
	}
	return out
}

// recordDiagnostics gathers the translator's diagnostics over the groups
// (each once: most concern a service, and every group that sees it has
// them) for the status and the metrics, and logs those that are new.
func (l *Loop) recordDiagnostics() {
	l.mu.Lock()
	seen := map[string]bool{}
	var all []sources.Diagnostic
	add := func(ds []sources.Diagnostic) {
		for _, d := range ds {
			if k := d.String(); !seen[k] {
				seen[k] = true
				all = append(all, d)
			}
		}
	}
	add(l.defaultDiags)
	for _, g := range l.groups {
		add(g.diags)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].String() < all[j].String() })
	was := map[string]bool{}
	for _, d := range l.translatorStatus.Diagnostics {
		was[d.String()] = true
	}
	l.translatorStatus.Diagnostics = all
	l.translatorStatus.Synced = l.built
	l.mu.Unlock()
	for _, d := range all {
		if was[d.String()] {
			continue
		}
		level := slog.LevelWarn
		if d.Severity == sources.SeverityError {
			level = slog.LevelError
		}
		l.cfg.Log.Log(context.Background(), level, "translation problem", "location", d.Location, "field", d.Field, "error", d.Message)
	}
	l.cfg.Metrics.setDiagnostics(translator.DiagnosticSource, all)
}
