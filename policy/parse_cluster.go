package policy

import (
	"math"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
)

// loadBalancer reads either a policy name or a mapping
// {policy, leastRequest: {choiceCount}, ringHash: {hashOn, minRingSize, maxRingSize}}.
func (p *parser) loadBalancer(n *yaml.Node, path string) *LoadBalancer {
	const what = "load-balancing policy"
	if n.Kind == yaml.ScalarNode && !strictyaml.IsNull(n) {
		s, ok := p.enum(n, path, what, lbPolicies)
		if !ok {
			return nil
		}
		lb := defaultLoadBalancer(LBPolicy(s))
		return &lb
	}
	var (
		policy              string
		policyOK            = true
		lrNode, rhNode      *yaml.Node
		choiceCount         *uint32
		ringHash            RingHashConfig
		ringHashOK, counted = true, true
	)
	if !p.fields(n, path, []string{"policy", "leastRequest", "ringHash"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "policy":
			policy, policyOK = p.enum(v, fp, what, lbPolicies)
		case "leastRequest":
			lrNode = v
			p.fields(v, fp, []string{"choiceCount"}, nil, func(_ string, cv *yaml.Node) {
				c, ok := p.count32(cv, fp+".choiceCount", minChoiceCount, math.MaxUint32)
				counted = ok
				choiceCount = &c
			})
		case "ringHash":
			rhNode = v
			ringHash, ringHashOK = p.ringHash(v, fp)
		}
	}) {
		return nil
	}
	if !policyOK {
		return nil
	}
	if policy == "" {
		p.Errorf(p.Deref(n).Line, path+".policy", "required field is missing (want %s)", oneOf(lbPolicies))
		return nil
	}
	lb := defaultLoadBalancer(LBPolicy(policy))
	ok := counted && ringHashOK
	if lrNode != nil && lb.Policy != LeastRequest {
		p.Errorf(lrNode.Line, path+".leastRequest", "applies only to policy %s, not %s", LeastRequest, policy)
		ok = false
	}
	if rhNode != nil && lb.Policy != RingHash {
		p.Errorf(rhNode.Line, path+".ringHash", "applies only to policy %s, not %s", RingHash, policy)
		ok = false
	}
	if !ok {
		return nil
	}
	if choiceCount != nil {
		lb.ChoiceCount = *choiceCount
	}
	if rhNode != nil {
		lb.RingHash = ringHash
	}
	return &lb
}

func defaultLoadBalancer(policy LBPolicy) LoadBalancer {
	lb := LoadBalancer{Policy: policy}
	switch policy {
	case LeastRequest:
		lb.ChoiceCount = DefaultChoiceCount
	case RingHash:
		lb.RingHash = RingHashConfig{MinRingSize: DefaultMinRingSize, MaxRingSize: DefaultMaxRingSize}
	}
	return lb
}

func (p *parser) ringHash(n *yaml.Node, path string) (RingHashConfig, bool) {
	rh := RingHashConfig{MinRingSize: DefaultMinRingSize, MaxRingSize: DefaultMaxRingSize}
	ok := true
	var minSet, maxLine int
	if !p.fields(n, path, []string{"hashOn", "minRingSize", "maxRingSize"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "hashOn":
			var hok bool
			rh.HashOn, hok = p.hashOn(v, fp)
			ok = ok && hok
		case "minRingSize":
			size, sok := p.count(v, fp, 1, maxRingSize)
			rh.MinRingSize, minSet, ok = size, v.Line, ok && sok
		case "maxRingSize":
			size, sok := p.count(v, fp, 1, maxRingSize)
			rh.MaxRingSize, maxLine, ok = size, v.Line, ok && sok
		}
	}) {
		return rh, false
	}
	if ok && rh.MinRingSize > rh.MaxRingSize {
		line, field, note := maxLine, path+".maxRingSize", ""
		if maxLine == 0 {
			line, field, note = minSet, path+".minRingSize", " (the default)"
		}
		p.Errorf(line, field, "minRingSize (%d) is larger than maxRingSize (%d%s)", rh.MinRingSize, rh.MaxRingSize, note)
		ok = false
	}
	return rh, ok
}

func (p *parser) hashOn(n *yaml.Node, path string) (HashOn, bool) {
	var h HashOn
	ok, set := true, 0
	if !p.fields(n, path, []string{"header", "sourceIP"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		set++
		switch key {
		case "header":
			var hok bool
			h.Header, hok = p.headerName(v, fp)
			ok = ok && hok
		case "sourceIP":
			b, bok := p.Bool(v, fp)
			if bok && !b {
				p.Errorf(v.Line, fp, "sourceIP: false hashes on nothing; leave hashOn out for no affinity")
				bok = false
			}
			h.SourceIP, ok = b, ok && bok
		}
	}) {
		return h, false
	}
	if set != 1 {
		p.Errorf(p.Deref(n).Line, path, "set exactly one of header and sourceIP")
		return h, false
	}
	return h, ok
}

func (p *parser) circuitBreaker(n *yaml.Node, path string) *CircuitBreakerSpec {
	cb := &CircuitBreakerSpec{}
	ok := p.fields(n, path, []string{"maxConnections", "maxPendingRequests", "maxRequests", "maxRetries"}, nil, func(key string, v *yaml.Node) {
		c, cok := p.count32(v, strictyaml.Join(path, key), 1, math.MaxUint32)
		if !cok {
			return
		}
		switch key {
		case "maxConnections":
			cb.MaxConnections = &c
		case "maxPendingRequests":
			cb.MaxPendingRequests = &c
		case "maxRequests":
			cb.MaxRequests = &c
		case "maxRetries":
			cb.MaxRetries = &c
		}
	})
	if !ok {
		return nil
	}
	return cb
}

func (p *parser) outlierDetection(n *yaml.Node, path string) *OutlierDetectionSpec {
	od := &OutlierDetectionSpec{}
	known := []string{"consecutiveErrors", "errorPercent", "minRequests", "minHosts", "interval", "baseEjectionTime", "maxEjectionPercent"}
	ok := p.fields(n, path, known, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "consecutiveErrors":
			if c, cok := p.count32(v, fp, 0, math.MaxUint32); cok {
				od.ConsecutiveErrors = &c
			}
		case "minRequests":
			if c, cok := p.count32(v, fp, 1, math.MaxUint32); cok {
				od.MinRequests = &c
			}
		case "minHosts":
			if c, cok := p.count32(v, fp, 1, math.MaxUint32); cok {
				od.MinHosts = &c
			}
		case "errorPercent", "maxEjectionPercent":
			f, fok := p.percent(v, fp, true)
			if !fok {
				return
			}
			pc := uint32(f)
			if key == "errorPercent" {
				od.ErrorPercent = &pc
			} else {
				od.MaxEjectionPercent = &pc
			}
		case "interval", "baseEjectionTime":
			d, dok := p.duration(v, fp, maxDuration)
			if !dok {
				return
			}
			if key == "interval" {
				od.Interval = &d
			} else {
				od.BaseEjectionTime = &d
			}
		}
	})
	if !ok {
		return nil
	}
	return od
}

// slowStart reads {window, aggression, minWeightPercent}; window is
// required.
func (p *parser) slowStart(n *yaml.Node, path string) *SlowStart {
	ss := SlowStart{Aggression: DefaultSlowStartAggression, MinWeightPercent: DefaultSlowStartMinWeightPercent}
	ok, windowSet := true, false
	if !p.fields(n, path, []string{"window", "aggression", "minWeightPercent"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "window":
			d, dok := p.duration(v, fp, maxDuration)
			ss.Window, windowSet, ok = d, dok, ok && dok
		case "aggression":
			a, aok := p.aggression(v, fp)
			ss.Aggression, ok = a, ok && aok
		case "minWeightPercent":
			f, fok := p.percent(v, fp, false)
			ss.MinWeightPercent, ok = f, ok && fok
		}
	}) {
		return nil
	}
	if !ok {
		return nil
	}
	if !windowSet {
		p.Errorf(p.Deref(n).Line, path+".window", "required field is missing (a duration such as 30s: how long a new instance's share ramps up)")
		return nil
	}
	return &ss
}

// aggression reads slow start's aggression: a number above 0 (1 ramps
// linearly; more, faster at first).
func (p *parser) aggression(v *yaml.Node, path string) (float64, bool) {
	if v.Kind != yaml.ScalarNode || (v.Tag != "!!int" && v.Tag != "!!float") {
		p.Errorf(v.Line, path, "expected a number above 0 and at most %g, got %s", maxAggression, strictyaml.KindName(v))
		return 0, false
	}
	var f float64
	if err := v.Decode(&f); err != nil || math.IsNaN(f) || f <= 0 || f > maxAggression {
		p.Errorf(v.Line, path, "must be a number above 0 and at most %g, got %s", maxAggression, v.Value)
		return 0, false
	}
	return f, true
}

// checkSlowStart refuses slow start next to a load balancer it does not
// apply to (Envoy ramps round_robin and least_request only). Across levels
// (a MeshPolicy's slowStart, a ServicePolicy's ring_hash) it is documented
// to apply to those two policies only.
func (p *parser) checkSlowStart(path string, lb *LoadBalancer, ss *SlowStart) {
	if lb == nil || ss == nil || lb.Policy == RoundRobin || lb.Policy == LeastRequest {
		return
	}
	fp := strictyaml.Join(path, "slowStart")
	p.Errorf(p.Lines[fp], fp, "applies to load balancers %s and %s only, not %s", RoundRobin, LeastRequest, lb.Policy)
}

// healthCheck reads spec.healthCheck: timing, thresholds, and exactly one
// of http, grpc and tcp.
func (p *parser) healthCheck(n *yaml.Node, path string) *HealthCheck {
	hc := HealthCheck{
		Interval: DefaultHealthCheckInterval, Timeout: DefaultHealthCheckTimeout,
		UnhealthyThreshold: DefaultUnhealthyThreshold, HealthyThreshold: DefaultHealthyThreshold,
	}
	ok := true
	var kinds []string
	known := []string{"interval", "timeout", "unhealthyThreshold", "healthyThreshold", "jitter", "http", "grpc", "tcp"}
	if !p.fields(n, path, known, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		var fok bool
		switch key {
		case "interval":
			hc.Interval, fok = p.duration(v, fp, maxDuration)
		case "timeout":
			hc.Timeout, fok = p.duration(v, fp, maxDuration)
		case "jitter":
			hc.Jitter, fok = p.duration(v, fp, maxDuration)
		case "unhealthyThreshold":
			hc.UnhealthyThreshold, fok = p.count32(v, fp, 1, maxHealthThreshold)
		case "healthyThreshold":
			hc.HealthyThreshold, fok = p.count32(v, fp, 1, maxHealthThreshold)
		case "http":
			kinds = append(kinds, key)
			hc.HTTP, fok = p.httpHealthCheck(v, fp)
		case "grpc":
			kinds = append(kinds, key)
			hc.GRPC = &GRPCHealthCheck{}
			fok = p.fields(v, fp, []string{"service"}, nil, func(_ string, sv *yaml.Node) {
				s, sok := p.String(sv, fp+".service", "a gRPC service name (empty: the server as a whole)")
				hc.GRPC.Service, fok = s, sok
			})
		case "tcp":
			kinds = append(kinds, key)
			hc.TCP = true
			fok = p.fields(v, fp, nil, nil, func(string, *yaml.Node) {})
		}
		ok = ok && fok
	}) {
		return nil
	}
	if !ok {
		return nil
	}
	line := p.Deref(n).Line
	switch {
	case len(kinds) == 0:
		p.Errorf(line, path, "needs one of http, grpc and tcp: how to check an instance")
		return nil
	case len(kinds) > 1:
		p.Errorf(line, path, "sets %s: give exactly one of http, grpc and tcp", strings.Join(kinds, " and "))
		return nil
	}
	if hc.Timeout > hc.Interval {
		l := p.Lines[path+".timeout"]
		if l == 0 {
			l = p.Lines[path+".interval"]
		}
		p.Errorf(l, path+".timeout", "(%s) is longer than the interval (%s)", fmtDuration(hc.Timeout), fmtDuration(hc.Interval))
		return nil
	}
	return &hc
}

// httpHealthCheck reads {path, expectedStatuses, host}; path is required.
func (p *parser) httpHealthCheck(n *yaml.Node, path string) (*HTTPHealthCheck, bool) {
	h := &HTTPHealthCheck{ExpectedStatuses: []uint32{200}}
	ok, pathSet := true, false
	if !p.fields(n, path, []string{"path", "expectedStatuses", "host"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "path":
			s, sok := p.String(v, fp, "a path starting with /")
			if sok && !validPath.MatchString(s) {
				p.Errorf(v.Line, fp, "%q is not a path: it starts with / and has no spaces, ? or #", s)
				sok = false
			}
			h.Path, pathSet, ok = s, sok, ok && sok
		case "expectedStatuses":
			codes, cok := p.statusCodes(v, fp)
			h.ExpectedStatuses, ok = codes, ok && cok
		case "host":
			s, sok := p.String(v, fp, "a host name")
			if sok && (s == "" || strings.ContainsAny(s, " /?#")) {
				p.Errorf(v.Line, fp, "%q is not a host name", s)
				sok = false
			}
			h.Host, ok = s, ok && sok
		}
	}) {
		return nil, false
	}
	if ok && !pathSet {
		p.Errorf(p.Deref(n).Line, path+".path", "required field is missing (the path to check, such as /healthz)")
		return nil, false
	}
	return h, ok
}
