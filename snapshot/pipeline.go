package snapshot

import (
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// pipelines turn the catalog and policy set into each group's snapshot at
// the cost of what changed: per-service work and hashing are done once for
// every group (shared, build), the rest once per group (byKey). Only the
// loop's goroutine uses them.
type pipelines struct {
	shared           *translator.Shared
	build            *Shared
	byKey            map[string]*pipeline
	translateSeconds prometheus.Observer
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

// translated is one group's translation, built: its snapshot and the
// translator's diagnostics.
type translated struct {
	snap  *cache.Snapshot
	diags []sources.Diagnostic
}

// newPipelines returns pipelines that translate with tr's options and
// observe each translation's duration in translateSeconds.
func newPipelines(tr *translator.Translator, translateSeconds prometheus.Observer) *pipelines {
	return &pipelines{
		shared:           tr.NewShared(),
		build:            NewShared(),
		byKey:            map[string]*pipeline{},
		translateSeconds: translateSeconds,
	}
}

// snapshot translates catalog and pol for p's group and builds the
// group's snapshot: the very one built last time when the translation
// did not change.
func (ps *pipelines) snapshot(catalog sources.Catalog, pol *policy.Set, p translator.Proxy) (translated, error) {
	pipe := ps.byKey[p.Key()]
	if pipe == nil {
		pipe = &pipeline{translator: ps.shared.NewIncremental(p), builder: ps.build.NewBuilder()}
		ps.byKey[p.Key()] = pipe
	}
	start := time.Now()
	res, err := pipe.translator.Translate(catalog, pol)
	ps.translateSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return translated{}, err
	}
	if res.Revision != 0 && res.Revision == pipe.revision {
		return translated{pipe.snap, res.Diagnostics}, nil
	}
	snap, err := pipe.builder.Build(res.Resources)
	if err != nil {
		return translated{}, err
	}
	pipe.revision, pipe.snap = res.Revision, snap
	return translated{snap, res.Diagnostics}, nil
}

// drop forgets a group's pipeline.
func (ps *pipelines) drop(key string) { delete(ps.byKey, key) }

// sweep forgets, after a build that translated every group, the shared
// work none of them used.
func (ps *pipelines) sweep(now time.Time) {
	ps.shared.Sweep()
	ps.build.Rotate(now)
}
