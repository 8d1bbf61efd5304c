package policy

import (
	"time"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
)

// SourceName is the Source of every policy diagnostic.
const SourceName = "policy"

// APIVersion is the apiVersion every policy document declares.
const APIVersion = "sluice.dev/v1"

// Kind is the kind of a policy document.
type Kind string

// Document kinds.
const (
	KindMeshPolicy    Kind = "MeshPolicy"
	KindServicePolicy Kind = "ServicePolicy"
)

// Document is one parsed policy document, as written: fields that were not
// written are nil. Blocks that resolve as a whole (loadBalancer,
// retry.backoff, retry.retryBudget, rateLimit) hold their complete value,
// with built-in defaults filled in for omitted fields.
type Document struct {
	Kind Kind `json:"kind"`
	// Name is metadata.name: the service a ServicePolicy applies to; only a
	// label for a MeshPolicy.
	Name string `json:"name,omitempty"`
	// File and Line locate the document's first line.
	File string `json:"file"`
	Line int    `json:"line"`
	// Spec is a ServicePolicy's spec, or a MeshPolicy's spec.defaults.
	Spec Spec `json:"spec"`
	// Tracing is a MeshPolicy's spec.tracing; nil otherwise.
	Tracing *Tracing `json:"tracing,omitempty"`

	// lines maps field paths to the line of their value.
	lines map[string]int
	// dependencyIndex maps each entry of Spec.Dependencies to its index in
	// the list as written, so warnings can name the field.
	dependencyIndex map[string]int
}

// Location is "file:line" of the document.
func (d *Document) Location() string { return strictyaml.Location(d.File, d.Line) }

// fieldLocation is "file:line" of a field, or of the document when the field
// was not written.
func (d *Document) fieldLocation(path string) string {
	if l, ok := d.lines[path]; ok {
		return strictyaml.Location(d.File, l)
	}
	return d.Location()
}

// Spec holds the fields a ServicePolicy's spec (or a MeshPolicy's
// spec.defaults) may set.
type Spec struct {
	LoadBalancer     *LoadBalancer         `json:"loadBalancer,omitempty"`
	Timeout          *time.Duration        `json:"timeout,omitempty"`
	CircuitBreaker   *CircuitBreakerSpec   `json:"circuitBreaker,omitempty"`
	OutlierDetection *OutlierDetectionSpec `json:"outlierDetection,omitempty"`
	// HealthyPanicThreshold is spec.healthyPanicThreshold (percent).
	HealthyPanicThreshold *float64 `json:"healthyPanicThreshold,omitempty"`
	// SlowStart is spec.slowStart, complete.
	SlowStart *SlowStart `json:"slowStart,omitempty"`
	// HealthCheck is spec.healthCheck, complete.
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	// Locality is spec.locality, complete.
	Locality *Locality  `json:"locality,omitempty"`
	Retry    *RetrySpec `json:"retry,omitempty"`
	// RetryBudget is spec.retry.retryBudget (a per-service setting).
	RetryBudget *RetryBudget `json:"retryBudget,omitempty"`
	RateLimit   *RateLimit   `json:"rateLimit,omitempty"`
	// SamplingPercent is a ServicePolicy's spec.tracing.samplingPercent.
	SamplingPercent *float64    `json:"samplingPercent,omitempty"`
	Routes          []RouteSpec `json:"routes,omitempty"`
	// Subsets is a ServicePolicy's spec.subsets, sorted by name.
	Subsets []Subset `json:"subsets,omitempty"`
	// Split is spec.split (or a route's split, or its subset as a split
	// of one); Mirror and Fault are spec.mirror and spec.fault. A route's
	// own replace the service's.
	Split  []WeightedSubset `json:"split,omitempty"`
	Mirror *Mirror          `json:"mirror,omitempty"`
	Fault  *Fault           `json:"fault,omitempty"`
	// Dependencies is spec.dependencies, complete (Origin is the
	// document's location); it resolves as a whole, through
	// Set.Dependencies, and is not part of Resolved.
	Dependencies *Dependencies `json:"dependencies,omitempty"`
}

// CircuitBreakerSpec is spec.circuitBreaker; each field resolves on its own.
type CircuitBreakerSpec struct {
	MaxConnections     *uint32 `json:"maxConnections,omitempty"`
	MaxPendingRequests *uint32 `json:"maxPendingRequests,omitempty"`
	MaxRequests        *uint32 `json:"maxRequests,omitempty"`
	MaxRetries         *uint32 `json:"maxRetries,omitempty"`
}

// OutlierDetectionSpec is spec.outlierDetection; each field resolves on its
// own, and writing the block at any level turns outlier detection on.
type OutlierDetectionSpec struct {
	ConsecutiveErrors  *uint32        `json:"consecutiveErrors,omitempty"`
	ErrorPercent       *uint32        `json:"errorPercent,omitempty"`
	MinRequests        *uint32        `json:"minRequests,omitempty"`
	MinHosts           *uint32        `json:"minHosts,omitempty"`
	Interval           *time.Duration `json:"interval,omitempty"`
	BaseEjectionTime   *time.Duration `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent *uint32        `json:"maxEjectionPercent,omitempty"`
}

// RetrySpec is a retry block; each field resolves on its own, except that
// retryOn and retriableStatusCodes go together.
type RetrySpec struct {
	Attempts      *uint32        `json:"attempts,omitempty"`
	PerTryTimeout *time.Duration `json:"perTryTimeout,omitempty"`
	// RetryOn is nil when not written; canonical order.
	RetryOn              []RetryOn `json:"retryOn,omitempty"`
	RetriableStatusCodes []uint32  `json:"retriableStatusCodes,omitempty"`
	Backoff              *Backoff  `json:"backoff,omitempty"`
	IdempotencyHeader    *string   `json:"idempotencyHeader,omitempty"`
}

// RouteSpec is one entry of spec.routes.
type RouteSpec struct {
	// Index is the route's position in spec.routes; Line its line.
	Index     int            `json:"index"`
	Line      int            `json:"line"`
	Match     RouteMatch     `json:"match"`
	Timeout   *time.Duration `json:"timeout,omitempty"`
	Retry     *RetrySpec     `json:"retry,omitempty"`
	RateLimit *RateLimit     `json:"rateLimit,omitempty"`
	// Split is the route's split, or its subset as a split of one
	// (weight 100); Mirror and Fault its own.
	Split  []WeightedSubset `json:"split,omitempty"`
	Mirror *Mirror          `json:"mirror,omitempty"`
	Fault  *Fault           `json:"fault,omitempty"`
}
