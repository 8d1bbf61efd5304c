package policy

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
)

// Level is the level of precedence a resolved setting came from.
type Level string

// Levels, most specific first.
const (
	LevelServiceRoute Level = "ServicePolicy route"
	LevelMeshRoute    Level = "MeshPolicy route"
	LevelService      Level = "ServicePolicy"
	LevelMesh         Level = "MeshPolicy"
	LevelDefault      Level = "built-in default"
)

// Provenance says where one effective setting of a service (or of one of
// its routes) came from.
type Provenance struct {
	// Field is the setting's path as a policy file spells it under spec:
	// "timeout", "retry.perTryTimeout", "circuitBreaker.maxRequests".
	Field string `json:"field"`
	// Value is the effective value, formatted as a policy file writes it
	// (durations as 2s, lists as [a, b]).
	Value string `json:"value"`
	Level Level  `json:"level"`
	// Location is "file:line" of the value that set it, or of its block
	// when the value is that block's built-in default; "" for LevelDefault.
	Location string `json:"location,omitempty"`
	// Note qualifies the value: "not written in the block: its default",
	// or why an inherited value does not apply.
	Note string `json:"note,omitempty"`
}

// Source is the Level and Location together: "ServicePolicy
// web.yaml:7", or "built-in default".
func (p Provenance) Source() string {
	if p.Location == "" {
		return string(p.Level)
	}
	return string(p.Level) + " " + p.Location
}

// level is one document level a setting may come from.
type level struct {
	level Level
	doc   *Document
	// prefix is the path of the level's spec in its document: "spec.",
	// "spec.defaults.", "spec.routes[2].".
	prefix string
	spec   *Spec
}

// explainer finds, for each setting, the most specific level that writes
// it, exactly as Resolve picks values.
type explainer struct {
	levels []level // most specific first
	out    []Provenance
}

// setting is a field resolved per level: written says whether a level's
// spec writes it, paths are its possible paths in a document (the first
// is the field's own; a route's subset is its split, say).
type setting struct {
	field   string
	value   any
	written func(*Spec) bool
	paths   []string
	note    string
}

func (e *explainer) add(s setting) {
	p := Provenance{Field: s.field, Value: formatValue(s.value), Level: LevelDefault, Note: s.note}
	paths := s.paths
	if len(paths) == 0 {
		paths = []string{s.field}
	}
	for _, l := range e.levels {
		if l.spec == nil || !s.written(l.spec) {
			continue
		}
		p.Level, p.Location = l.level, l.doc.Location()
		for _, path := range paths {
			if line, ok := l.doc.lines[l.prefix+path]; ok {
				p.Location = strictyaml.Location(l.doc.File, line)
				break
			}
		}
		break
	}
	e.out = append(e.out, p)
}

// Explain returns each effective setting of service, as Resolve gives it,
// with the level that set it: a field written in the service's
// ServicePolicy, in the MeshPolicy's spec.defaults, or neither (the
// built-in default). Settings that one block sets as a whole (loadBalancer,
// healthCheck, retry.backoff, rateLimit...) are reported as one value. The
// routes are not included: see ExplainRoute. It works on a nil Set.
func (s *Set) Explain(service string) []Provenance {
	r := s.Resolve(service)
	e := &explainer{levels: s.serviceLevels(service)}
	e.service(r)
	return e.out
}

// ExplainRoute is Explain for the route of service named route (a
// ResolvedRoute's Name, "routes[2]" or "mesh.routes[0]"): the route's
// match, then the settings a request it matches gets, each from the route
// itself or inherited from the service. ok is false when the service has
// no such route.
func (s *Set) ExplainRoute(service, route string) (out []Provenance, ok bool) {
	r := s.Resolve(service)
	i := slices.IndexFunc(r.Routes, func(rr ResolvedRoute) bool { return rr.Name == route })
	if i < 0 {
		return nil, false
	}
	rr := r.Routes[i]
	svcDoc, meshDoc := s.documents(service)
	var rl level
	var rs *RouteSpec
	switch {
	case strings.HasPrefix(route, "mesh.") && meshDoc != nil:
		rs, rl = findRoute(meshDoc, strings.TrimPrefix(route, "mesh.")), level{level: LevelMeshRoute, doc: meshDoc, prefix: "spec.defaults."}
	case svcDoc != nil:
		rs, rl = findRoute(svcDoc, route), level{level: LevelServiceRoute, doc: svcDoc, prefix: "spec."}
	}
	if rs == nil { // unreachable: Resolve made the route from one of them
		return nil, false
	}
	rl.prefix += fmt.Sprintf("routes[%d].", rs.Index)
	rl.spec = &Spec{Timeout: rs.Timeout, Retry: rs.Retry, RateLimit: rs.RateLimit, Split: rs.Split, Mirror: rs.Mirror, Fault: rs.Fault}
	e := &explainer{levels: append([]level{rl}, s.serviceLevels(service)...)}
	e.out = append(e.out, Provenance{Field: "match", Value: rr.Match.String(), Level: rl.level, Location: rr.Origin})
	e.add(setting{field: "timeout", value: rr.Timeout, written: func(s *Spec) bool { return s.Timeout != nil }})
	perTryNote := ""
	if inherited := resolveRetry(retrySpecs(e.levels)).PerTryTimeout; rr.Retry.PerTryTimeout == 0 && inherited != 0 {
		perTryNote = fmt.Sprintf("the perTryTimeout written (%s) is longer than the route's timeout, so it is dropped", fmtDuration(inherited))
	}
	e.retry(rr.Retry, perTryNote)
	e.add(setting{field: "rateLimit", value: offUnless(rr.RateLimit.Enabled, rr.RateLimit), written: func(s *Spec) bool { return s.RateLimit != nil }})
	e.release(rr.Split, rr.Mirror, rr.Fault)
	return e.out, true
}

// retrySpecs are the retry blocks of levels, most specific first.
func retrySpecs(levels []level) []*RetrySpec {
	var out []*RetrySpec
	for _, l := range levels {
		if l.spec != nil && l.spec.Retry != nil {
			out = append(out, l.spec.Retry)
		}
	}
	return out
}

func findRoute(d *Document, name string) *RouteSpec {
	for i := range d.Spec.Routes {
		if fmt.Sprintf("routes[%d]", d.Spec.Routes[i].Index) == name {
			return &d.Spec.Routes[i]
		}
	}
	return nil
}

// documents returns the service's ServicePolicy and the MeshPolicy, each nil
// when there is none.
func (s *Set) documents(service string) (svcDoc, meshDoc *Document) {
	if s == nil {
		return nil, nil
	}
	return s.services[service], s.mesh
}

// serviceLevels are the levels Resolve reads for service, most specific
// first.
func (s *Set) serviceLevels(service string) []level {
	svcDoc, meshDoc := s.documents(service)
	var ls []level
	if svcDoc != nil {
		ls = append(ls, level{level: LevelService, doc: svcDoc, prefix: "spec.", spec: &svcDoc.Spec})
	}
	if meshDoc != nil {
		ls = append(ls, level{level: LevelMesh, doc: meshDoc, prefix: "spec.defaults.", spec: &meshDoc.Spec})
	}
	return ls
}

func (e *explainer) service(r Resolved) {
	e.add(setting{field: "loadBalancer", value: r.LoadBalancer, written: func(s *Spec) bool { return s.LoadBalancer != nil }})
	e.add(setting{field: "timeout", value: r.Timeout, written: func(s *Spec) bool { return s.Timeout != nil }})
	cb := func(f func(*CircuitBreakerSpec) *uint32) func(*Spec) bool {
		return func(s *Spec) bool { return s.CircuitBreaker != nil && f(s.CircuitBreaker) != nil }
	}
	e.add(setting{field: "circuitBreaker.maxConnections", value: r.CircuitBreaker.MaxConnections, written: cb(func(c *CircuitBreakerSpec) *uint32 { return c.MaxConnections })})
	e.add(setting{field: "circuitBreaker.maxPendingRequests", value: r.CircuitBreaker.MaxPendingRequests, written: cb(func(c *CircuitBreakerSpec) *uint32 { return c.MaxPendingRequests })})
	e.add(setting{field: "circuitBreaker.maxRequests", value: r.CircuitBreaker.MaxRequests, written: cb(func(c *CircuitBreakerSpec) *uint32 { return c.MaxRequests })})
	e.add(setting{field: "circuitBreaker.maxRetries", value: r.CircuitBreaker.MaxRetries, written: cb(func(c *CircuitBreakerSpec) *uint32 { return c.MaxRetries })})
	e.outlier(r.OutlierDetection)
	e.add(setting{field: "healthyPanicThreshold", value: orOff(r.HealthyPanicThreshold, "Envoy's own (50)"), written: func(s *Spec) bool { return s.HealthyPanicThreshold != nil }})
	e.add(setting{field: "slowStart", value: orOff(r.SlowStart, "off"), written: func(s *Spec) bool { return s.SlowStart != nil }})
	e.add(setting{field: "healthCheck", value: orOff(r.HealthCheck, "off"), written: func(s *Spec) bool { return s.HealthCheck != nil }})
	e.add(setting{field: "locality", value: orOff(r.Locality, "off"), written: func(s *Spec) bool { return s.Locality != nil }})
	e.retry(r.Retry, "")
	e.add(setting{field: "retry.retryBudget", value: offUnless(r.RetryBudget.Enabled, r.RetryBudget), written: func(s *Spec) bool { return s.RetryBudget != nil }})
	e.add(setting{field: "rateLimit", value: offUnless(r.RateLimit.Enabled, r.RateLimit), written: func(s *Spec) bool { return s.RateLimit != nil }})
	e.tracing(r.Tracing)
	if len(r.Subsets) > 0 {
		e.add(setting{field: "subsets", value: r.Subsets, written: func(s *Spec) bool { return s.Subsets != nil }})
	}
	e.release(r.Split, r.Mirror, r.Fault)
}

func (e *explainer) outlier(o OutlierDetection) {
	written := func(s *Spec) bool { return s.OutlierDetection != nil }
	if !o.Enabled {
		e.add(setting{field: "outlierDetection", value: "off", written: written})
		return
	}
	od := func(f func(*OutlierDetectionSpec) bool) func(*Spec) bool {
		return func(s *Spec) bool { return s.OutlierDetection != nil && f(s.OutlierDetection) }
	}
	e.add(setting{field: "outlierDetection.consecutiveErrors", value: o.ConsecutiveErrors, written: od(func(s *OutlierDetectionSpec) bool { return s.ConsecutiveErrors != nil })})
	e.add(setting{field: "outlierDetection.errorPercent", value: o.ErrorPercent, written: od(func(s *OutlierDetectionSpec) bool { return s.ErrorPercent != nil })})
	e.add(setting{field: "outlierDetection.minRequests", value: o.MinRequests, written: od(func(s *OutlierDetectionSpec) bool { return s.MinRequests != nil })})
	e.add(setting{field: "outlierDetection.minHosts", value: o.MinHosts, written: od(func(s *OutlierDetectionSpec) bool { return s.MinHosts != nil })})
	e.add(setting{field: "outlierDetection.interval", value: o.Interval, written: od(func(s *OutlierDetectionSpec) bool { return s.Interval != nil })})
	e.add(setting{field: "outlierDetection.baseEjectionTime", value: o.BaseEjectionTime, written: od(func(s *OutlierDetectionSpec) bool { return s.BaseEjectionTime != nil })})
	e.add(setting{field: "outlierDetection.maxEjectionPercent", value: o.MaxEjectionPercent, written: od(func(s *OutlierDetectionSpec) bool { return s.MaxEjectionPercent != nil })})
}

// retry explains a resolved retry policy: its fields resolve one by one
// over the levels, as resolveRetry merges them.
func (e *explainer) retry(r Retry, perTryNote string) {
	rt := func(f func(*RetrySpec) bool) func(*Spec) bool {
		return func(s *Spec) bool { return s.Retry != nil && f(s.Retry) }
	}
	if !r.Enabled() {
		// Off: no level has a retry block, or the most specific
		// attempts is 0.
		e.add(setting{field: "retry.attempts", value: "0 (no retries)", written: rt(func(s *RetrySpec) bool { return s.Attempts != nil })})
		return
	}
	e.add(setting{field: "retry.attempts", value: r.Attempts, written: rt(func(s *RetrySpec) bool { return s.Attempts != nil })})
	e.add(setting{field: "retry.perTryTimeout", value: orNone(r.PerTryTimeout), written: rt(func(s *RetrySpec) bool { return s.PerTryTimeout != nil }), note: perTryNote})
	e.add(setting{field: "retry.retryOn", value: r.RetryOn, written: rt(func(s *RetrySpec) bool { return s.RetryOn != nil })})
	if len(r.RetriableStatusCodes) > 0 {
		e.add(setting{field: "retry.retriableStatusCodes", value: r.RetriableStatusCodes, written: rt(func(s *RetrySpec) bool { return s.RetryOn != nil }), paths: []string{"retry.retriableStatusCodes", "retry.retryOn"}})
	}
	e.add(setting{field: "retry.backoff", value: r.Backoff, written: rt(func(s *RetrySpec) bool { return s.Backoff != nil })})
	e.add(setting{field: "retry.idempotencyHeader", value: orOff(nonEmpty(r.IdempotencyHeader), "none (only idempotent methods are retried)"), written: rt(func(s *RetrySpec) bool { return s.IdempotencyHeader != nil })})
}

func (e *explainer) tracing(t Tracing) {
	if !t.Enabled {
		e.add(setting{field: "tracing", value: "off", written: func(*Spec) bool { return false }})
		return
	}
	// The collector and tags are the MeshPolicy's spec.tracing, which is
	// not part of its defaults; a ServicePolicy may set samplingPercent.
	var mesh, svc level
	for _, l := range e.levels {
		switch l.level {
		case LevelMesh:
			mesh = l
		case LevelService:
			svc = l
		}
	}
	p := Provenance{Field: "tracing", Value: formatValue(struct {
		Collector string `json:"collector"`
		Tags      []Tag  `json:"tags,omitempty"`
	}{t.Collector, t.Tags}), Level: LevelMesh}
	if mesh.doc != nil {
		p.Location = mesh.doc.fieldLocation("spec.tracing")
	}
	e.out = append(e.out, p)
	sp := Provenance{Field: "tracing.samplingPercent", Value: formatValue(t.SamplingPercent), Level: LevelMesh}
	switch {
	case svc.doc != nil && svc.doc.Spec.SamplingPercent != nil:
		sp.Level, sp.Location = LevelService, svc.doc.fieldLocation("spec.tracing.samplingPercent")
	case mesh.doc != nil:
		if _, ok := mesh.doc.lines["spec.tracing.samplingPercent"]; ok {
			sp.Location = mesh.doc.fieldLocation("spec.tracing.samplingPercent")
		} else {
			sp.Location, sp.Note = mesh.doc.fieldLocation("spec.tracing"), "not written in the block: its default"
		}
	}
	e.out = append(e.out, sp)
}

// release explains the split, mirror and fault a request gets.
func (e *explainer) release(split []WeightedSubset, mirror *Mirror, fault *Fault) {
	e.add(setting{field: "split", value: orOff(split, "none (every instance)"), written: func(s *Spec) bool { return s.Split != nil }, paths: []string{"split", "subset"}})
	e.add(setting{field: "mirror", value: orOff(mirror, "off"), written: func(s *Spec) bool { return s.Mirror != nil }})
	e.add(setting{field: "fault", value: orOff(fault, "off"), written: func(s *Spec) bool { return s.Fault != nil }})
}

// orOff is v, or off when v is nil or empty.
func orOff[T any](v T, off string) any {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || ((rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Slice) && (rv.IsNil() || (rv.Kind() == reflect.Slice && rv.Len() == 0))) {
		return off
	}
	return v
}

func offUnless(enabled bool, v any) any {
	if !enabled {
		return "off"
	}
	return v
}

func orNone(d time.Duration) any {
	if d == 0 {
		return "none (the request timeout only)"
	}
	return d
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// formatValue writes a resolved value as a policy file would: durations
// as 2s, lists as [a, b], structs as {field: value} with their JSON
// names, leaving out zero fields (and "enabled", which Explain says
// otherwise).
func formatValue(v any) string {
	var b strings.Builder
	writeValue(&b, reflect.ValueOf(v))
	return b.String()
}

var durationType = reflect.TypeFor[time.Duration]()

func writeValue(b *strings.Builder, v reflect.Value) {
	if !v.IsValid() {
		b.WriteString("null")
		return
	}
	if v.Type() == durationType {
		b.WriteString(fmtDuration(time.Duration(v.Int())))
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("null")
			return
		}
		writeValue(b, v.Elem())
	case reflect.String:
		b.WriteString(v.String())
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case reflect.Float32, reflect.Float64:
		b.WriteString(strconv.FormatFloat(v.Float(), 'g', -1, 64))
	case reflect.Slice, reflect.Array:
		b.WriteString("[")
		for i := range v.Len() {
			if i > 0 {
				b.WriteString(", ")
			}
			writeValue(b, v.Index(i))
		}
		b.WriteString("]")
	case reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(x, y reflect.Value) int { return strings.Compare(x.String(), y.String()) })
		b.WriteString("{")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(k.String() + ": ")
			writeValue(b, v.MapIndex(k))
		}
		b.WriteString("}")
	case reflect.Struct:
		writeStruct(b, v)
	default:
		fmt.Fprint(b, v.Interface())
	}
}

func writeStruct(b *strings.Builder, v reflect.Value) {
	b.WriteString("{")
	n := 0
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" || name == "enabled" || v.Field(i).IsZero() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if n > 0 {
			b.WriteString(", ")
		}
		n++
		b.WriteString(name + ": ")
		writeValue(b, v.Field(i))
	}
	b.WriteString("}")
}
