package xds

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the xDS server's Prometheus metrics.
type Metrics struct {
	connected  *prometheus.GaugeVec
	rejected   prometheus.Counter
	pushes     *prometheus.CounterVec
	acks       *prometheus.CounterVec
	nacks      *prometheus.CounterVec
	ackSeconds *prometheus.HistogramVec
	relocated  prometheus.Counter
}

// NewMetrics creates the server's metrics and registers them with reg (nil
// for none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_xds_connected_proxies", Help: "xDS streams currently open, by client kind (envoy, grpc).",
		}, []string{"kind"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_xds_rejected_streams_total", Help: "Streams refused because the client's node was invalid.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_xds_pushes_total", Help: "xDS responses sent, by resource type.",
		}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_xds_acks_total", Help: "xDS responses acknowledged by clients, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_xds_nacks_total", Help: "xDS responses rejected by clients, by resource type and proxy group.",
		}, []string{"type", "group"}),
		ackSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_xds_push_duration_seconds",
			Help:    "Time from sending an xDS response to the client's ACK, by resource type.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"type"}),
		relocated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_xds_relocated_streams_total", Help: "Streams ended so that their clients reconnect to another config group (their locality changed, or localities started or stopped mattering).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.rejected, m.pushes, m.acks, m.nacks, m.ackSeconds, m.relocated)
	}
	return m
}

// shortTypeName turns a type URL into its message name for metric labels.
func shortTypeName(typeURL string) string {
	if i := strings.LastIndexByte(typeURL, '.'); i >= 0 {
		return typeURL[i+1:]
	}
	return typeURL
}
