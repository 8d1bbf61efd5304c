package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// LBPolicy is a load-balancing algorithm.
type LBPolicy string

// Load-balancing policies.
const (
	RoundRobin   LBPolicy = "round_robin"
	LeastRequest LBPolicy = "least_request"
	Random       LBPolicy = "random"
	RingHash     LBPolicy = "ring_hash"
)

var lbPolicies = []string{string(RoundRobin), string(LeastRequest), string(Random), string(RingHash)}

// RetryOn is a retry condition, named as Envoy's x-envoy-retry-on and
// x-envoy-retry-grpc-on values are.
type RetryOn string

// Retry conditions for HTTP (and connection-level) failures.
const (
	RetryOn5xx                  RetryOn = "5xx"
	RetryOnGatewayError         RetryOn = "gateway-error"
	RetryOnReset                RetryOn = "reset"
	RetryOnConnectFailure       RetryOn = "connect-failure"
	RetryOnRetriable4xx         RetryOn = "retriable-4xx"
	RetryOnRefusedStream        RetryOn = "refused-stream"
	RetryOnRetriableStatusCodes RetryOn = "retriable-status-codes"
	RetryOnEnvoyRateLimited     RetryOn = "envoy-ratelimited"
)

// Retry conditions for gRPC status codes; the only ones proxyless gRPC
// clients honour.
const (
	RetryOnCancelled         RetryOn = "cancelled"
	RetryOnDeadlineExceeded  RetryOn = "deadline-exceeded"
	RetryOnInternal          RetryOn = "internal"
	RetryOnResourceExhausted RetryOn = "resource-exhausted"
	RetryOnUnavailable       RetryOn = "unavailable"
)

// retryOnOrder is every retry condition in the canonical order resolved
// policies list them in.
var retryOnOrder = []RetryOn{
	RetryOn5xx, RetryOnGatewayError, RetryOnReset, RetryOnConnectFailure,
	RetryOnRetriable4xx, RetryOnRefusedStream, RetryOnRetriableStatusCodes, RetryOnEnvoyRateLimited,
	RetryOnCancelled, RetryOnDeadlineExceeded, RetryOnInternal, RetryOnResourceExhausted, RetryOnUnavailable,
}

// IsGRPCStatus reports whether r names a gRPC status code (Envoy's
// x-envoy-retry-grpc-on), as opposed to an HTTP or connection condition.
func (r RetryOn) IsGRPCStatus() bool {
	switch r {
	case RetryOnCancelled, RetryOnDeadlineExceeded, RetryOnInternal, RetryOnResourceExhausted, RetryOnUnavailable:
		return true
	}
	return false
}

// safeForGRPC reports whether a condition is one under which a gRPC call may
// be retried: a gRPC status, or a failure before the request reached the
// server.
func (r RetryOn) safeForGRPC() bool {
	return r.IsGRPCStatus() || r == RetryOnConnectFailure || r == RetryOnRefusedStream
}

// Built-in defaults: what a service gets for every field that neither its
// routes, its ServicePolicy nor the MeshPolicy set. See the package
// documentation for the reasoning.
const (
	DefaultTimeout             = 15 * time.Second
	DefaultLBPolicy            = RoundRobin
	DefaultChoiceCount         = 2
	DefaultMinRingSize         = 1024
	DefaultMaxRingSize         = 8 * 1024 * 1024
	DefaultMaxConnections      = 1024
	DefaultMaxPendingRequests  = 1024
	DefaultMaxRequests         = 1024
	DefaultMaxRetries          = 3
	DefaultRetryAttempts       = 1
	DefaultBackoffBase         = 25 * time.Millisecond
	DefaultBackoffMaxFactor    = 10
	DefaultConsecutiveErrors   = 5
	DefaultOutlierMinRequests  = 50
	DefaultOutlierInterval     = 10 * time.Second
	DefaultBaseEjectionTime    = 30 * time.Second
	DefaultMaxEjectionPercent  = 10
	DefaultOutlierMinHosts     = 5
	DefaultRetryBudgetPercent  = 20.0
	DefaultMinRetryConcurrency = 3
	DefaultSamplingPercent     = 100.0
	maxRetryAttempts           = 10
	maxRequestsPerSecond       = 1_000_000
	minChoiceCount             = 2
	maxRingSize                = DefaultMaxRingSize
)

// DefaultRetryOn returns the retry conditions used when a retry policy is
// configured without retryOn: failures where the request most likely never
// reached the application, so retrying is safe.
func DefaultRetryOn() []RetryOn {
	return []RetryOn{RetryOnConnectFailure, RetryOnRefusedStream, RetryOnCancelled, RetryOnUnavailable}
}

// IdempotentMethods returns the HTTP methods retried without an idempotency
// header, in alphabetical order.
func IdempotentMethods() []string {
	return []string{"DELETE", "GET", "HEAD", "OPTIONS", "PUT"}
}

func isIdempotent(method string) bool { return slices.Contains(IdempotentMethods(), method) }

var httpMethods = []string{"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}

// LoadBalancer is how a client picks among a service's instances.
type LoadBalancer struct {
	Policy LBPolicy `json:"policy"`
	// ChoiceCount is the number of instances least_request compares
	// (Envoy's choice_count, at least 2); 0 for other policies.
	ChoiceCount uint32 `json:"choiceCount,omitempty"`
	// RingHash configures ring_hash; zero for other policies.
	RingHash RingHashConfig `json:"ringHash,omitzero"`
}

// RingHashConfig configures consistent hashing.
type RingHashConfig struct {
	// HashOn is the request property hashed; zero means none, so each
	// request lands on a random instance.
	HashOn      HashOn `json:"hashOn,omitzero"`
	MinRingSize uint64 `json:"minRingSize"`
	MaxRingSize uint64 `json:"maxRingSize"`
}

// HashOn names what ring_hash hashes: a request header or the client's IP
// address. At most one is set.
type HashOn struct {
	Header   string `json:"header,omitempty"`
	SourceIP bool   `json:"sourceIP,omitempty"`
}

// SlowStart ramps a new instance's share of requests up over Window, as
// Envoy's slow start does for round_robin and least_request: the weight
// grows as (time since the instance appeared / Window) ^ (1 / Aggression),
// never below MinWeightPercent of its full weight.
type SlowStart struct {
	Window           time.Duration `json:"window"`
	Aggression       float64       `json:"aggression"`
	MinWeightPercent float64       `json:"minWeightPercent"`
}

// Defaults of a slowStart block (Envoy's own).
const (
	DefaultSlowStartAggression       = 1.0
	DefaultSlowStartMinWeightPercent = 10.0
	// maxAggression bounds aggression: beyond it the ramp is a step.
	maxAggression = 100.0
)

// HealthCheck is an active health check Envoy runs against every instance
// of a service: an instance failing UnhealthyThreshold checks in a row gets
// no traffic until it passes HealthyThreshold in a row. Registry health
// still wins: an instance the registry marks unhealthy or draining gets no
// traffic whatever its checks say. Exactly one of HTTP, GRPC and TCP is set.
type HealthCheck struct {
	Interval           time.Duration    `json:"interval"`
	Timeout            time.Duration    `json:"timeout"`
	Jitter             time.Duration    `json:"jitter,omitempty"`
	UnhealthyThreshold uint32           `json:"unhealthyThreshold"`
	HealthyThreshold   uint32           `json:"healthyThreshold"`
	HTTP               *HTTPHealthCheck `json:"http,omitempty"`
	GRPC               *GRPCHealthCheck `json:"grpc,omitempty"`
	TCP                bool             `json:"tcp,omitempty"`
}

// HTTPHealthCheck checks with a GET of Path; ExpectedStatuses are the
// statuses that pass (sorted). Host, when set, is the request's Host.
type HTTPHealthCheck struct {
	Path             string   `json:"path"`
	ExpectedStatuses []uint32 `json:"expectedStatuses"`
	Host             string   `json:"host,omitempty"`
}

// GRPCHealthCheck checks with grpc.health.v1.Health/Check for Service
// ("" asks about the server as a whole).
type GRPCHealthCheck struct {
	Service string `json:"service"`
}

// Defaults of a healthCheck block.
const (
	DefaultHealthCheckInterval = 10 * time.Second
	DefaultHealthCheckTimeout  = time.Second
	DefaultUnhealthyThreshold  = 3
	DefaultHealthyThreshold    = 2
	maxHealthThreshold         = 100
)

// CircuitBreaker bounds what a client sends to a service at once (Envoy's
// cluster circuit-breaker thresholds, default priority).
type CircuitBreaker struct {
	MaxConnections     uint32 `json:"maxConnections"`
	MaxPendingRequests uint32 `json:"maxPendingRequests"`
	MaxRequests        uint32 `json:"maxRequests"`
	// MaxRetries is the number of retries in flight at once; ignored by
	// Envoy when a retry budget is enabled.
	MaxRetries uint32 `json:"maxRetries"`
}

// OutlierDetection ejects failing instances for a while.
type OutlierDetection struct {
	// Enabled is false when no level configures outlier detection, or
	// when both ConsecutiveErrors and ErrorPercent are 0.
	Enabled bool `json:"enabled"`
	// ConsecutiveErrors ejects an instance after that many consecutive 5xx
	// or gateway errors; 0 turns this form off. Proxyless gRPC clients
	// ignore it.
	ConsecutiveErrors uint32 `json:"consecutiveErrors"`
	// ErrorPercent ejects an instance whose error rate over Interval reaches
	// it, once the instance saw MinRequests requests and the service has at
	// least MinHosts instances; 0 turns this form off.
	ErrorPercent       uint32        `json:"errorPercent"`
	MinRequests        uint32        `json:"minRequests"`
	MinHosts           uint32        `json:"minHosts"`
	Interval           time.Duration `json:"interval"`
	BaseEjectionTime   time.Duration `json:"baseEjectionTime"`
	MaxEjectionPercent uint32        `json:"maxEjectionPercent"`
}

// Retry is a retry policy. The zero value means no retries.
type Retry struct {
	// Attempts is the number of retries after the first try (Envoy's
	// num_retries; proxyless gRPC's maxAttempts is Attempts+1). 0 means no
	// retries, and then every other field is zero too.
	Attempts uint32 `json:"attempts,omitempty"`
	// PerTryTimeout bounds each try; 0 means only the request timeout
	// applies.
	PerTryTimeout time.Duration `json:"perTryTimeout,omitempty"`
	// RetryOn lists the retry conditions, in canonical order.
	RetryOn []RetryOn `json:"retryOn,omitempty"`
	// RetriableStatusCodes are the HTTP statuses retried under
	// retriable-status-codes, ascending; set exactly when RetryOn has it.
	RetriableStatusCodes []uint32 `json:"retriableStatusCodes,omitempty"`
	Backoff              Backoff  `json:"backoff,omitzero"`
	// IdempotencyHeader is the request header that makes a POST or PATCH
	// retriable; "" means they are never retried.
	IdempotencyHeader string `json:"idempotencyHeader,omitempty"`
}

// Enabled reports whether r retries at all.
func (r Retry) Enabled() bool { return r.Attempts > 0 }

// ForGRPC returns the policy for gRPC calls: only the conditions that are
// safe for any call (gRPC statuses, and connect-failure and refused-stream,
// where the request never reached the server), without HTTP-only settings.
// It is disabled when no such condition is left. A proxyless gRPC client
// additionally keeps only the RetryOn values whose IsGRPCStatus is true.
func (r Retry) ForGRPC() Retry {
	if !r.Enabled() {
		return Retry{}
	}
	var on []RetryOn
	for _, c := range r.RetryOn {
		if c.safeForGRPC() {
			on = append(on, c)
		}
	}
	if len(on) == 0 {
		return Retry{}
	}
	return Retry{Attempts: r.Attempts, PerTryTimeout: r.PerTryTimeout, RetryOn: on, Backoff: r.Backoff}
}

// Backoff is the exponential back-off between retries: Base, doubling, up
// to Max. Base ≤ Max always holds.
type Backoff struct {
	Base time.Duration `json:"base"`
	Max  time.Duration `json:"max"`
}

// RetryBudget caps concurrent retries to a share of active requests (Envoy's
// retry_budget); when enabled it replaces CircuitBreaker.MaxRetries.
type RetryBudget struct {
	Enabled             bool    `json:"enabled"`
	BudgetPercent       float64 `json:"budgetPercent,omitempty"`
	MinRetryConcurrency uint32  `json:"minRetryConcurrency,omitempty"`
}

// RateLimit is a local token bucket: RequestsPerSecond tokens are added
// every second, up to Burst. Each sidecar enforces it on its own inbound
// traffic.
type RateLimit struct {
	Enabled           bool   `json:"enabled"`
	RequestsPerSecond uint32 `json:"requestsPerSecond,omitempty"`
	Burst             uint32 `json:"burst,omitempty"`
}

// Tracing sends spans to an OpenTelemetry collector over OTLP/gRPC.
type Tracing struct {
	Enabled bool `json:"enabled"`
	// Collector is the collector as written: "host:port", "service:port"
	// or "service".
	Collector string `json:"collector,omitempty"`
	// CollectorHost is the collector's host or catalog service name.
	CollectorHost string `json:"collectorHost,omitempty"`
	// CollectorPort is its port; 0 means "the catalog service's instance
	// ports" (Collector named a service without a port).
	CollectorPort   uint32  `json:"collectorPort,omitempty"`
	SamplingPercent float64 `json:"samplingPercent,omitempty"`
	// Tags are custom span tags, sorted by name.
	Tags []Tag `json:"tags,omitempty"`
}

// Tag is one custom span tag.
type Tag struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// RouteMatch selects requests. Exactly one of PathPrefix and Path is set.
type RouteMatch struct {
	// PathPrefix matches paths starting with it (Envoy's prefix match).
	PathPrefix string `json:"pathPrefix,omitempty"`
	// Path matches exactly this path.
	Path string `json:"path,omitempty"`
	// Methods, when not empty, restricts the match to these upper-case HTTP
	// methods (sorted).
	Methods []string `json:"methods,omitempty"`
	// Headers must all match (sorted by name).
	Headers []HeaderMatch `json:"headers,omitempty"`
	// QueryParams must all match (sorted by name); gRPC calls have none.
	QueryParams []HeaderMatch `json:"queryParams,omitempty"`
}

// HeaderMatch requires a request header (or query parameter) to be
// present (Present), to match the RE2 expression Regex as a whole, or else
// to have exactly the value Exact.
type HeaderMatch struct {
	Name    string `json:"name"`
	Exact   string `json:"exact"`
	Regex   string `json:"regex,omitempty"`
	Present bool   `json:"present,omitempty"`
}

func (h HeaderMatch) String() string {
	switch {
	case h.Present:
		return h.Name + " present"
	case h.Regex != "":
		return h.Name + "~" + h.Regex
	}
	return h.Name + "=" + h.Exact
}

// key is equal for two matches exactly when they select the same requests
// (methods and headers are kept sorted).
func (m RouteMatch) key() string {
	return fmt.Sprintf("%q %q %q %q %q", m.PathPrefix, m.Path, m.Methods, m.Headers, m.QueryParams)
}

func (m RouteMatch) String() string {
	s := "pathPrefix " + m.PathPrefix
	if m.Path != "" {
		s = "path " + m.Path
	}
	if len(m.Methods) > 0 {
		s += " methods " + strings.Join(m.Methods, ",")
	}
	for _, h := range m.Headers {
		s += " header " + h.String()
	}
	for _, q := range m.QueryParams {
		s += " query " + q.String()
	}
	return s
}
