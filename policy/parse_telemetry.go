package policy

import (
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
	"github.com/sluice-mesh/sluice/sources"
)

// rateLimit reads {requestsPerSecond, burst} or {disabled: true}. An omitted
// burst equals requestsPerSecond: one second's worth of requests.
func (p *parser) rateLimit(n *yaml.Node, path string) *RateLimit {
	rl := &RateLimit{Enabled: true}
	ok := true
	var rpsSet, burstSet bool
	disabledLine := 0
	if !p.fields(n, path, []string{"requestsPerSecond", "burst", "disabled"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "requestsPerSecond":
			c, cok := p.count32(v, fp, 1, maxRequestsPerSecond)
			rl.RequestsPerSecond, rpsSet, ok = c, true, ok && cok
		case "burst":
			c, cok := p.count32(v, fp, 1, math.MaxUint32)
			rl.Burst, burstSet, ok = c, true, ok && cok
		case "disabled":
			b, bok := p.Bool(v, fp)
			ok = ok && bok
			if b {
				disabledLine = v.Line
			}
		}
	}) {
		return nil
	}
	switch {
	case disabledLine > 0 && (rpsSet || burstSet):
		p.Errorf(disabledLine, path+".disabled", "disabled: true cannot be combined with requestsPerSecond or burst")
		return nil
	case disabledLine > 0:
		return &RateLimit{}
	case !rpsSet && ok:
		p.Errorf(p.Deref(n).Line, path+".requestsPerSecond", "required field is missing")
		return nil
	case !ok:
		return nil
	}
	if !burstSet {
		rl.Burst = rl.RequestsPerSecond
	}
	return rl
}

// serviceTracing reads a ServicePolicy's tracing block: samplingPercent only.
func (p *parser) serviceTracing(n *yaml.Node, path string) *float64 {
	meshOnly := func(key string) string {
		if key == "collector" || key == "tags" {
			return key + " is mesh-wide: set it in the MeshPolicy's spec.tracing; a ServicePolicy may only override samplingPercent"
		}
		return ""
	}
	var pct *float64
	p.fields(n, path, []string{"samplingPercent"}, meshOnly, func(_ string, v *yaml.Node) {
		if f, ok := p.percent(v, path+".samplingPercent", false); ok {
			pct = &f
		}
	})
	return pct
}

// tracing reads a MeshPolicy's spec.tracing.
func (p *parser) tracing(n *yaml.Node, path string) *Tracing {
	t := &Tracing{Enabled: true, SamplingPercent: DefaultSamplingPercent}
	ok, hasCollector := true, false
	if !p.fields(n, path, []string{"collector", "samplingPercent", "tags"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "collector":
			hasCollector = true
			var cok bool
			t.Collector, t.CollectorHost, t.CollectorPort, cok = p.collector(v, fp)
			ok = ok && cok
		case "samplingPercent":
			f, fok := p.percent(v, fp, false)
			t.SamplingPercent, ok = f, ok && fok
		case "tags":
			m, mok := p.StringMap(v, fp, "tag names to values")
			ok = ok && mok
			for k, val := range m {
				t.Tags = append(t.Tags, Tag{Name: k, Value: val})
			}
			slices.SortFunc(t.Tags, func(a, b Tag) int { return strings.Compare(a.Name, b.Name) })
		}
	}) {
		return nil
	}
	if !hasCollector {
		p.Errorf(p.Deref(n).Line, path+".collector", "required field is missing (host:port, or a catalog service[:port])")
		return nil
	}
	if !ok {
		return nil
	}
	return t
}

// collector reads "host:port", "service:port" or "service".
func (p *parser) collector(v *yaml.Node, path string) (raw, host string, port uint32, ok bool) {
	s, ok := p.String(v, path, "host:port or service[:port]")
	if !ok {
		return "", "", 0, false
	}
	bad := func(why string) (string, string, uint32, bool) {
		p.Errorf(v.Line, path, "%q is not host:port or service[:port]: %s", s, why)
		return "", "", 0, false
	}
	if strings.Contains(s, "://") {
		return bad("leave out the scheme (OTLP over gRPC is implied)")
	}
	host = s
	if strings.Contains(s, ":") {
		h, ps, err := net.SplitHostPort(s)
		if err != nil {
			return bad("a port is needed after the last ':' (IPv6 addresses go in brackets)")
		}
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return bad("the port must be from 1 to 65535")
		}
		host, port = h, uint32(n)
	}
	if ip := net.ParseIP(host); ip != nil {
		if port == 0 {
			return bad("an IP address needs a port")
		}
		return s, host, port, true
	}
	if !sources.ValidServiceName(strings.ToLower(host)) {
		return bad("the host is not a DNS name or service name")
	}
	return s, strings.ToLower(host), port, true
}
