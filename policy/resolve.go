package policy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
)

// Resolved is the effective policy of one service: every field has its
// value, taken from the most specific level that sets it (route > service >
// mesh defaults > built-in defaults). It is plain data built fresh by each
// Resolve call; consumers may keep it.
type Resolved struct {
	Service      string        `json:"service"`
	LoadBalancer LoadBalancer  `json:"loadBalancer"`
	Timeout      time.Duration `json:"timeout"`
	// TimeoutSet says a policy set Timeout (it is not the built-in). Proxyless
	// gRPC clients get a stream deadline only then: the built-in 15s suits
	// requests, not the long-lived streams gRPC services often serve.
	TimeoutSet       bool             `json:"timeoutSet,omitempty"`
	CircuitBreaker   CircuitBreaker   `json:"circuitBreaker"`
	OutlierDetection OutlierDetection `json:"outlierDetection"`
	// HealthyPanicThreshold is the percentage of healthy instances below
	// which Envoy ignores health and spreads requests over every instance;
	// nil leaves Envoy's default (50).
	HealthyPanicThreshold *float64 `json:"healthyPanicThreshold,omitempty"`
	// SlowStart, when not nil, ramps new instances up (round_robin and
	// least_request only).
	SlowStart *SlowStart `json:"slowStart,omitempty"`
	// HealthCheck, when not nil, is the active health check Envoy runs.
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	// Locality, when not nil, makes callers prefer instances by locality;
	// nil is mode off.
	Locality *Locality `json:"locality,omitempty"`
	// Retry is the service-level retry policy: what requests that match no
	// route get.
	Retry       Retry       `json:"retry"`
	RetryBudget RetryBudget `json:"retryBudget"`
	// RateLimit is the service's inbound token bucket, shared by all
	// routes that do not set their own.
	RateLimit RateLimit `json:"rateLimit"`
	Tracing   Tracing   `json:"tracing"`
	// Subsets are the service's subsets, by name; Split, Mirror and Fault
	// its service-level release settings (what the catch-all route
	// gets). Split is nil when requests go to every instance.
	Subsets []Subset         `json:"subsets,omitempty"`
	Split   []WeightedSubset `json:"split,omitempty"`
	Mirror  *Mirror          `json:"mirror,omitempty"`
	Fault   *Fault           `json:"fault,omitempty"`
	// Routes are the per-route overrides, most specific first (see
	// RouteVariants for the order).
	Routes []ResolvedRoute `json:"routes,omitempty"`
	// Origins are the documents that contributed ("file:line"), the
	// MeshPolicy first. Provenance only: Hash ignores it.
	Origins []string `json:"origins,omitempty"`
}

// ResolvedRoute is one route with its effective settings; fields its
// policy did not set are inherited from the service level.
type ResolvedRoute struct {
	// Name is stable and unique within the service: "routes[2]" for the
	// ServicePolicy's spec.routes[2], "mesh.routes[0]" for a route of the
	// MeshPolicy's spec.defaults.routes, "default" for the catch-all route
	// RouteVariants adds.
	Name    string        `json:"name"`
	Match   RouteMatch    `json:"match"`
	Timeout time.Duration `json:"timeout"`
	// TimeoutSet says the route or a policy above it set Timeout.
	TimeoutSet bool  `json:"timeoutSet,omitempty"`
	Retry      Retry `json:"retry"`
	// RateLimit is the route's own bucket when OwnRateLimit, else the
	// service's shared one (Resolved.RateLimit).
	RateLimit    RateLimit `json:"rateLimit"`
	OwnRateLimit bool      `json:"ownRateLimit,omitempty"`
	// Split, Mirror and Fault are the route's own, else the service's.
	Split  []WeightedSubset `json:"split,omitempty"`
	Mirror *Mirror          `json:"mirror,omitempty"`
	Fault  *Fault           `json:"fault,omitempty"`
	// Origin is "file:line" of the route (provenance only; Hash ignores it).
	Origin string `json:"origin,omitempty"`
}

// Defaults returns the built-in policy: what a service gets when no policy
// file says anything about it.
func Defaults(service string) Resolved {
	var s *Set
	return s.Resolve(service)
}

// Resolve returns the effective policy of a service. It works for any name,
// with or without a ServicePolicy, and on a nil Set (built-in defaults
// only).
func (s *Set) Resolve(service string) Resolved {
	var levels []*Spec // most specific first
	var meshTracing *Tracing
	var svcDoc, meshDoc *Document
	r := Resolved{Service: service}
	if s != nil {
		svcDoc, meshDoc = s.services[service], s.mesh
	}
	if svcDoc != nil {
		levels = append(levels, &svcDoc.Spec)
	}
	if meshDoc != nil {
		levels = append(levels, &meshDoc.Spec)
		meshTracing = meshDoc.Tracing
		r.Origins = append(r.Origins, meshDoc.Location())
	}
	if svcDoc != nil {
		r.Origins = append(r.Origins, svcDoc.Location())
	}

	r.LoadBalancer = pick(defaultLoadBalancer(DefaultLBPolicy), get(levels, func(s *Spec) *LoadBalancer { return s.LoadBalancer })...)
	timeouts := get(levels, func(s *Spec) *time.Duration { return s.Timeout })
	r.Timeout, r.TimeoutSet = pick(DefaultTimeout, timeouts...), len(timeouts) > 0

	cbs := get(levels, func(s *Spec) *CircuitBreakerSpec { return s.CircuitBreaker })
	r.CircuitBreaker = CircuitBreaker{
		MaxConnections:     pick(DefaultMaxConnections, get(cbs, func(c *CircuitBreakerSpec) *uint32 { return c.MaxConnections })...),
		MaxPendingRequests: pick(DefaultMaxPendingRequests, get(cbs, func(c *CircuitBreakerSpec) *uint32 { return c.MaxPendingRequests })...),
		MaxRequests:        pick(DefaultMaxRequests, get(cbs, func(c *CircuitBreakerSpec) *uint32 { return c.MaxRequests })...),
		MaxRetries:         pick(DefaultMaxRetries, get(cbs, func(c *CircuitBreakerSpec) *uint32 { return c.MaxRetries })...),
	}
	r.OutlierDetection = resolveOutlier(get(levels, func(s *Spec) *OutlierDetectionSpec { return s.OutlierDetection }))
	if ts := get(levels, func(s *Spec) *float64 { return s.HealthyPanicThreshold }); len(ts) > 0 {
		v := *ts[0]
		r.HealthyPanicThreshold = &v
	}
	if hs := get(levels, func(s *Spec) *HealthCheck { return s.HealthCheck }); len(hs) > 0 {
		r.HealthCheck = hs[0] // never modified once parsed
	}
	if ls := get(levels, func(s *Spec) *Locality { return s.Locality }); len(ls) > 0 && ls[0].Mode != LocalityOff {
		r.Locality = ls[0] // never modified once parsed
	}
	if ss := get(levels, func(s *Spec) *SlowStart { return s.SlowStart }); len(ss) > 0 {
		v := *ss[0]
		r.SlowStart = &v
	}

	retries := get(levels, func(s *Spec) *RetrySpec { return s.Retry })
	r.Retry = resolveRetry(retries)
	r.RetryBudget = pick(RetryBudget{}, get(levels, func(s *Spec) *RetryBudget { return s.RetryBudget })...)
	r.RateLimit = pick(RateLimit{}, get(levels, func(s *Spec) *RateLimit { return s.RateLimit })...)

	if svcDoc != nil { // a MeshPolicy cannot set them: they name the service's subsets
		r.Subsets = cloneSubsets(svcDoc.Spec.Subsets)
		r.Split = slices.Clone(svcDoc.Spec.Split)
		r.Mirror = cloneMirror(svcDoc.Spec.Mirror)
		r.Fault = cloneFault(svcDoc.Spec.Fault)
	}

	if meshTracing != nil {
		r.Tracing = *meshTracing
		r.Tracing.Tags = slices.Clone(meshTracing.Tags)
		if svcDoc != nil && svcDoc.Spec.SamplingPercent != nil {
			r.Tracing.SamplingPercent = *svcDoc.Spec.SamplingPercent
		}
	}
	r.Routes = resolveRoutes(r, svcDoc, meshDoc, retries)
	return r
}

// RouteVariants is Resolve(service).RouteVariants().
func (s *Set) RouteVariants(service string) []RouteVariant {
	return s.Resolve(service).RouteVariants()
}

// get collects, most specific first, the field get returns from each
// non-nil level, skipping levels where it is nil.
func get[L, T any](levels []*L, field func(*L) *T) []*T {
	var out []*T
	for _, l := range levels {
		if l == nil {
			continue
		}
		if v := field(l); v != nil {
			out = append(out, v)
		}
	}
	return out
}

// pick returns the first non-nil value, or def.
func pick[T any](def T, values ...*T) T {
	for _, v := range values {
		if v != nil {
			return *v
		}
	}
	return def
}

func resolveOutlier(specs []*OutlierDetectionSpec) OutlierDetection {
	if len(specs) == 0 {
		return OutlierDetection{}
	}
	u := func(def uint32, f func(*OutlierDetectionSpec) *uint32) uint32 { return pick(def, get(specs, f)...) }
	d := func(def time.Duration, f func(*OutlierDetectionSpec) *time.Duration) time.Duration {
		return pick(def, get(specs, f)...)
	}
	o := OutlierDetection{
		ConsecutiveErrors:  u(DefaultConsecutiveErrors, func(s *OutlierDetectionSpec) *uint32 { return s.ConsecutiveErrors }),
		ErrorPercent:       u(0, func(s *OutlierDetectionSpec) *uint32 { return s.ErrorPercent }),
		MinRequests:        u(DefaultOutlierMinRequests, func(s *OutlierDetectionSpec) *uint32 { return s.MinRequests }),
		MinHosts:           u(DefaultOutlierMinHosts, func(s *OutlierDetectionSpec) *uint32 { return s.MinHosts }),
		Interval:           d(DefaultOutlierInterval, func(s *OutlierDetectionSpec) *time.Duration { return s.Interval }),
		BaseEjectionTime:   d(DefaultBaseEjectionTime, func(s *OutlierDetectionSpec) *time.Duration { return s.BaseEjectionTime }),
		MaxEjectionPercent: u(DefaultMaxEjectionPercent, func(s *OutlierDetectionSpec) *uint32 { return s.MaxEjectionPercent }),
	}
	if o.ConsecutiveErrors == 0 && o.ErrorPercent == 0 {
		return OutlierDetection{}
	}
	o.Enabled = true
	return o
}

// resolveRetry merges retry blocks, most specific first. No block at all
// means no retries; a block without attempts means DefaultRetryAttempts.
func resolveRetry(specs []*RetrySpec) Retry {
	if len(specs) == 0 {
		return Retry{}
	}
	attempts := pick(uint32(DefaultRetryAttempts), get(specs, func(s *RetrySpec) *uint32 { return s.Attempts })...)
	if attempts == 0 {
		return Retry{}
	}
	r := Retry{
		Attempts:          attempts,
		PerTryTimeout:     pick(0, get(specs, func(s *RetrySpec) *time.Duration { return s.PerTryTimeout })...),
		RetryOn:           DefaultRetryOn(),
		Backoff:           pick(Backoff{Base: DefaultBackoffBase, Max: DefaultBackoffMaxFactor * DefaultBackoffBase}, get(specs, func(s *RetrySpec) *Backoff { return s.Backoff })...),
		IdempotencyHeader: pick("", get(specs, func(s *RetrySpec) *string { return s.IdempotencyHeader })...),
	}
	for _, s := range specs {
		if s.RetryOn != nil { // retryOn and retriableStatusCodes are set together
			r.RetryOn = slices.Clone(s.RetryOn)
			r.RetriableStatusCodes = slices.Clone(s.RetriableStatusCodes)
			break
		}
	}
	return r
}

type routeSource struct {
	spec RouteSpec
	mesh bool
	file string
}

// resolveRoutes merges the routes of the ServicePolicy and the MeshPolicy
// (a MeshPolicy route whose match equals a ServicePolicy route's is replaced
// by it) and orders them most specific first.
func resolveRoutes(svc Resolved, svcDoc, meshDoc *Document, serviceRetries []*RetrySpec) []ResolvedRoute {
	var srcs []routeSource
	own := map[string]bool{}
	if svcDoc != nil {
		for _, rs := range svcDoc.Spec.Routes {
			srcs = append(srcs, routeSource{spec: rs, file: svcDoc.File})
			own[rs.Match.key()] = true
		}
	}
	if meshDoc != nil {
		for _, rs := range meshDoc.Spec.Routes {
			if !own[rs.Match.key()] {
				srcs = append(srcs, routeSource{spec: rs, mesh: true, file: meshDoc.File})
			}
		}
	}
	slices.SortStableFunc(srcs, func(a, b routeSource) int {
		if c := compareMatch(a.spec.Match, b.spec.Match); c != 0 {
			return c
		}
		if a.mesh != b.mesh {
			if b.mesh {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.spec.Index, b.spec.Index)
	})
	var out []ResolvedRoute
	for _, src := range srcs {
		rs := src.spec
		name := fmt.Sprintf("routes[%d]", rs.Index)
		if src.mesh {
			name = "mesh." + name
		}
		rr := ResolvedRoute{
			Name:    name,
			Match:   cloneMatch(rs.Match),
			Timeout: pick(svc.Timeout, rs.Timeout),
			Origin:  strictyaml.Location(src.file, rs.Line),
		}
		rr.TimeoutSet = rs.Timeout != nil || svc.TimeoutSet
		if rs.Retry != nil {
			rr.Retry = resolveRetry(append([]*RetrySpec{rs.Retry}, serviceRetries...))
		} else {
			rr.Retry = cloneRetry(svc.Retry)
		}
		if rr.Timeout > 0 && rr.Retry.PerTryTimeout > rr.Timeout {
			// Inherited from a level with a longer timeout (one level's
			// own perTryTimeout ≤ timeout is checked when parsing): it
			// could never fire, so it is not passed on as if it could.
			rr.Retry.PerTryTimeout = 0
		}
		if rs.RateLimit != nil {
			rr.RateLimit, rr.OwnRateLimit = *rs.RateLimit, true
		} else {
			rr.RateLimit = svc.RateLimit
		}
		// Each replaces the service's as a whole; MeshPolicy routes have
		// none of their own.
		rr.Split = slices.Clone(svc.Split)
		if rs.Split != nil {
			rr.Split = slices.Clone(rs.Split)
		}
		rr.Mirror = cloneMirror(cmp.Or(rs.Mirror, svc.Mirror))
		rr.Fault = cloneFault(cmp.Or(rs.Fault, svc.Fault))
		out = append(out, rr)
	}
	return out
}

// compareMatch orders matches most specific first, as the Gateway API
// orders HTTPRoute rules: an exact path before a prefix, a longer path
// before a shorter one, a match restricted to methods before one that is
// not, more header matches before fewer, then more query parameter matches
// before fewer.
func compareMatch(a, b RouteMatch) int {
	exact := func(m RouteMatch) int {
		if m.Path != "" {
			return 0
		}
		return 1
	}
	hasMethods := func(m RouteMatch) int {
		if len(m.Methods) > 0 {
			return 0
		}
		return 1
	}
	return cmp.Or(
		cmp.Compare(exact(a), exact(b)),
		-cmp.Compare(len(a.Path+a.PathPrefix), len(b.Path+b.PathPrefix)),
		cmp.Compare(hasMethods(a), hasMethods(b)),
		-cmp.Compare(len(a.Headers), len(b.Headers)),
		-cmp.Compare(len(a.QueryParams), len(b.QueryParams)),
	)
}

func cloneMatch(m RouteMatch) RouteMatch {
	m.Methods = slices.Clone(m.Methods)
	m.Headers = slices.Clone(m.Headers)
	m.QueryParams = slices.Clone(m.QueryParams)
	return m
}

func cloneRetry(r Retry) Retry {
	r.RetryOn = slices.Clone(r.RetryOn)
	r.RetriableStatusCodes = slices.Clone(r.RetriableStatusCodes)
	return r
}

func cloneSubsets(ss []Subset) []Subset {
	ss = slices.Clone(ss)
	for i := range ss {
		ss[i].Labels = maps.Clone(ss[i].Labels)
	}
	return ss
}

func cloneMirror(m *Mirror) *Mirror {
	if m == nil {
		return nil
	}
	c := *m
	return &c
}

func cloneFault(f *Fault) *Fault {
	if f == nil {
		return nil
	}
	var c Fault
	if f.Delay != nil {
		d := *f.Delay
		c.Delay = &d
	}
	if f.Abort != nil {
		a := *f.Abort
		c.Abort = &a
	}
	return &c
}

// Hash is a stable digest of everything in r that affects behaviour (it
// leaves out the provenance fields Origins and Route.Origin): equal policies
// hash equally in every process and across restarts.
func (r Resolved) Hash() string {
	c := r
	c.Origins = nil
	c.Routes = slices.Clone(r.Routes)
	for i := range c.Routes {
		c.Routes[i].Origin = ""
	}
	b, err := json.Marshal(c)
	if err != nil { // unreachable: plain data, and percentages are never NaN
		panic(fmt.Sprintf("policy: encoding a resolved policy: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
