package snapshot

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-mesh/sluice/sources"
)

// Metrics are the loop's Prometheus metrics.
type Metrics struct {
	sourceUpdates    *prometheus.CounterVec
	sourceErrors     *prometheus.CounterVec
	sourceStale      *prometheus.GaugeVec
	diagnostics      *prometheus.GaugeVec
	catalogServices  prometheus.Gauge
	catalogInstances prometheus.Gauge
	translateSeconds prometheus.Histogram
	snapshots        *prometheus.CounterVec
	groupsRefused    *prometheus.CounterVec
	groupsReleased   *prometheus.CounterVec
	rollbacks        prometheus.Counter
	rolledBackNow    prometheus.Gauge
}

// NewMetrics creates the loop's metrics and registers them with reg (which
// may be nil, for tests that don't look at metrics).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sourceUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_source_updates_total", Help: "Complete states received from each registry source.",
		}, []string{"source"}),
		sourceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_source_errors_total", Help: "Times a source failed to read its registry or rejected its input.",
		}, []string{"source"}),
		sourceStale: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_source_stale", Help: "1 while a source serves its last known state because it cannot read its registry.",
		}, []string{"source"}),
		diagnostics: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_source_diagnostics", Help: "Current input problems reported by each source, by severity.",
		}, []string{"source", "severity"}),
		catalogServices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_catalog_services", Help: "Services in the merged catalog.",
		}),
		catalogInstances: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_catalog_instances", Help: "Instances in the merged catalog.",
		}),
		translateSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sluice_translate_duration_seconds", Help: "Time to translate the catalog for one proxy group.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_snapshot_builds_total", Help: "Snapshot builds per proxy group, by result (published, unchanged, failed).",
		}, []string{"result"}),
		groupsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_groups_refused_total", Help: "New proxy groups refused, by reason (limit: --max-proxy-groups reached with none idle; rate: --proxy-group-rate exceeded).",
		}, []string{"reason"}),
		groupsReleased: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_groups_released_total", Help: "Proxy groups forgotten with their snapshots, by reason (idle: no proxy for --proxy-group-ttl; limit: room made under --max-proxy-groups; memory: no proxy while memory was short of GOMEMLIMIT).",
		}, []string{"reason"}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_policy_rollbacks_total", Help: "Policy changes rolled back because a client rejected the config they made.",
		}),
		rolledBackNow: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_policy_rolled_back", Help: "1 while sluice serves an older policy set than the newest valid one, because clients rejected what the newest made.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.sourceUpdates, m.sourceErrors, m.sourceStale, m.diagnostics,
			m.catalogServices, m.catalogInstances, m.translateSeconds, m.snapshots, m.groupsRefused, m.groupsReleased,
			m.rollbacks, m.rolledBackNow)
	}
	return m
}

// sourceUpdated counts a complete state from source, with its diagnostics.
func (m *Metrics) sourceUpdated(source string, ds []sources.Diagnostic) {
	m.sourceUpdates.WithLabelValues(source).Inc()
	m.sourceStale.WithLabelValues(source).Set(0)
	m.setDiagnostics(source, ds)
}

// sourceFailed counts a failure of source, which now serves its last
// state, with the diagnostics that say why.
func (m *Metrics) sourceFailed(source string, ds []sources.Diagnostic) {
	m.sourceErrors.WithLabelValues(source).Inc()
	m.sourceStale.WithLabelValues(source).Set(1)
	m.setDiagnostics(source, ds)
}

// catalogMerged records the size of a newly merged catalog.
func (m *Metrics) catalogMerged(c sources.Catalog) {
	m.catalogServices.Set(float64(len(c.Services)))
	m.catalogInstances.Set(float64(c.InstanceCount()))
}

func (m *Metrics) setDiagnostics(source string, ds []sources.Diagnostic) {
	counts := map[sources.Severity]int{sources.SeverityError: 0, sources.SeverityWarning: 0}
	for _, d := range ds {
		counts[d.Severity]++
	}
	for sev, n := range counts {
		m.diagnostics.WithLabelValues(source, string(sev)).Set(float64(n))
	}
}

// rolledBack records a rollback starting (true) or ending.
func (m *Metrics) rolledBack(now bool) {
	if now {
		m.rollbacks.Inc()
		m.rolledBackNow.Set(1)
		return
	}
	m.rolledBackNow.Set(0)
}
