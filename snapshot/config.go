package snapshot

import (
	"context"
	"log/slog"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/translator"
)

// Publisher receives finished snapshots (the xDS cache).
type Publisher interface {
	SetSnapshot(ctx context.Context, node string, snap cache.ResourceSnapshot) error
	// ClearSnapshot forgets a group no proxy uses any more.
	ClearSnapshot(node string)
}

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
	// HoldOff is how long the loop waits after a change for more changes
	// (0 means 100 ms); MaxDelay bounds the wait while changes keep coming
	// (below HoldOff means ten HoldOffs).
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
	// NackRollback turns automatic rollback on: a policy change that a
	// client rejects is rolled back until the policy files change again
	// (rollback.go). Off unless set; sluice serve sets it by default.
	NackRollback bool
	// Memory reports the process's memory use against its limit; nil
	// means RuntimeMemory. While use is above MemoryPressureFraction of
	// the limit, groups without proxies are forgotten at once instead of
	// after GroupIdleTTL. The loop asks after each thing it does, and
	// every few seconds when it has nothing to do.
	Memory func() MemoryUse
}

// withDefaults fills in what cfg leaves unset.
func (cfg Config) withDefaults() Config {
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
	if cfg.Memory == nil {
		cfg.Memory = RuntimeMemory
	}
	return cfg
}
