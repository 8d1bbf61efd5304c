package policy

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
	"github.com/sluice-mesh/sluice/sources"
)

// LocalityMode says how a service's callers pick instances by locality.
type LocalityMode string

// Locality modes.
const (
	// LocalityOff: no preference (the default).
	LocalityOff LocalityMode = "off"
	// LocalityFailover: the caller's zone first, then the rest of its
	// region, then the regions its failover entries name in order, then
	// every other instance; each as an EDS priority, so traffic moves on
	// as the healthy share of one level falls, and back as it recovers.
	LocalityFailover LocalityMode = "failover"
	// LocalityDistribute: the caller's traffic is split over localities
	// by explicit weights.
	LocalityDistribute LocalityMode = "distribute"
)

var localityModes = []string{string(LocalityOff), string(LocalityFailover), string(LocalityDistribute)}

// Locality is spec.locality, complete. A resolved policy holds it only when
// the mode is not off.
type Locality struct {
	Mode LocalityMode `json:"mode"`
	// Failover orders regions after the caller's own (failover mode).
	Failover []FailoverRule `json:"failover,omitempty"`
	// Distribute gives the weights by caller (distribute mode): the entry
	// whose From matches the caller most specifically applies (see Rule).
	Distribute []DistributeRule `json:"distribute,omitempty"`
}

// FailoverRule sends the traffic of callers in region From to region To
// once the caller's region has no healthy instance left. Several entries
// with one From are tried in the order written.
type FailoverRule struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// DistributeRule splits the traffic of callers matching From over the
// localities matching the patterns of To, by weight (percent, summing to
// 100). Localities no pattern matches take traffic only when those the
// patterns match have no healthy instance.
type DistributeRule struct {
	From LocalityPattern  `json:"from"`
	To   []LocalityWeight `json:"to"`
}

// LocalityWeight is one pattern of a distribute entry and its percent.
type LocalityWeight struct {
	Pattern LocalityPattern `json:"pattern"`
	Weight  uint32          `json:"weight"`
}

// LocalityPattern matches localities: "*" (all), "region" or "region/*"
// (a region's zones), "region/zone" (one zone). Zone is "*" for a whole
// region; Region is "*" for everything.
type LocalityPattern struct {
	Region string `json:"region"`
	Zone   string `json:"zone"`
}

// Matches reports whether a locality is one the pattern names.
func (lp LocalityPattern) Matches(region, zone string) bool {
	switch {
	case lp.Region == "*":
		return true
	case lp.Region != region:
		return false
	}
	return lp.Zone == "*" || lp.Zone == zone
}

// Specificity orders patterns: 2 for a zone, 1 for a region, 0 for "*".
func (lp LocalityPattern) Specificity() int {
	switch {
	case lp.Region == "*":
		return 0
	case lp.Zone == "*":
		return 1
	}
	return 2
}

func (lp LocalityPattern) String() string {
	switch lp.Specificity() {
	case 0:
		return "*"
	case 1:
		return lp.Region + "/*"
	}
	return lp.Region + "/" + lp.Zone
}

// Rule is the distribute entry for a caller in region and zone: the one
// whose From names the caller most specifically; nil when none does.
func (l *Locality) Rule(region, zone string) *DistributeRule {
	var best *DistributeRule
	for i := range l.Distribute {
		d := &l.Distribute[i]
		if d.From.Matches(region, zone) && (best == nil || d.From.Specificity() > best.From.Specificity()) {
			best = d
		}
	}
	return best
}

// LocalityWarnings warns about locality settings: failing over needs
// something that tells the client an instance is unhealthy beyond what the
// registry says, or traffic only moves when the registry notices.
func (s *Set) LocalityWarnings() []sources.Diagnostic {
	if s == nil {
		return nil
	}
	var out []sources.Diagnostic
	warn := warner(&out)
	check := func(d *Document, field string, r Resolved) {
		if d.Spec.Locality == nil || r.Locality == nil || r.OutlierDetection.Enabled || r.HealthCheck != nil {
			return
		}
		warn(d, field, "locality mode %s without outlierDetection or healthCheck: clients only learn that instances are down from the registry, so traffic stays on failing instances of the preferred locality until the registry marks them", r.Locality.Mode)
	}
	if s.mesh != nil {
		check(s.mesh, "spec.defaults.locality", s.Resolve(""))
	}
	for _, name := range s.Services() {
		check(s.services[name], "spec.locality", s.Resolve(name))
	}
	sortDiagnostics(out)
	return out
}

// maxLocalityName bounds a region or zone name.
const maxLocalityName = 128

// validLocalityName reports whether s can be a region or zone name: what
// registries hold, without the characters patterns use.
func validLocalityName(s string) bool {
	if s == "" || len(s) > maxLocalityName || !utf8.ValidString(s) || strings.ContainsAny(s, "/*") {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) < 0
}

// locality reads spec.locality: {mode, failover, distribute}.
func (p *parser) locality(n *yaml.Node, path string) *Locality {
	var l Locality
	ok, modeSet := true, false
	var failoverLine, distributeLine int
	if !p.fields(n, path, []string{"mode", "failover", "distribute"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "mode":
			m, mok := p.enum(v, fp, "locality mode", localityModes)
			l.Mode, modeSet, ok = LocalityMode(m), mok, ok && mok
		case "failover":
			failoverLine = v.Line
			f, fok := p.localityFailover(v, fp)
			l.Failover, ok = f, ok && fok
		case "distribute":
			distributeLine = v.Line
			d, dok := p.localityDistribute(v, fp)
			l.Distribute, ok = d, ok && dok
		}
	}) {
		return nil
	}
	if !ok {
		return nil
	}
	if !modeSet {
		p.Errorf(p.Deref(n).Line, path+".mode", "required field is missing (%s)", oneOf(localityModes))
		return nil
	}
	switch {
	case failoverLine != 0 && l.Mode != LocalityFailover:
		p.Errorf(failoverLine, path+".failover", "applies to mode failover only, not %s", l.Mode)
		return nil
	case distributeLine != 0 && l.Mode != LocalityDistribute:
		p.Errorf(distributeLine, path+".distribute", "applies to mode distribute only, not %s", l.Mode)
		return nil
	case l.Mode == LocalityDistribute && len(l.Distribute) == 0:
		line := distributeLine
		if line == 0 {
			line = p.Deref(n).Line
		}
		p.Errorf(line, path+".distribute", "mode distribute needs at least one entry: {from: PATTERN, to: {PATTERN: PERCENT, ...}}")
		return nil
	}
	return &l
}

// localityFailover reads [{from: REGION, to: REGION}, ...].
func (p *parser) localityFailover(n *yaml.Node, path string) ([]FailoverRule, bool) {
	items, ok := p.Seq(n, path)
	if !ok {
		return nil, false
	}
	var out []FailoverRule
	seen := map[FailoverRule]int{}
	for i, it := range items {
		fp := strictyaml.Index(path, i)
		var f FailoverRule
		iok := p.fields(it, fp, []string{"from", "to"}, nil, func(key string, v *yaml.Node) {
			s, sok := p.String(v, strictyaml.Join(fp, key), "a region name")
			if sok && !validLocalityName(s) {
				p.Errorf(v.Line, strictyaml.Join(fp, key), "%q is not a region name (1 to %d characters, no spaces, / or *)", s, maxLocalityName)
				sok = false
			}
			if !sok {
				ok = false
			}
			if key == "from" {
				f.From = s
			} else {
				f.To = s
			}
		})
		if !iok {
			ok = false
			continue
		}
		line := p.Deref(it).Line
		switch {
		case f.From == "" || f.To == "":
			if ok {
				missing := "from"
				if f.From != "" {
					missing = "to"
				}
				p.Errorf(line, strictyaml.Join(fp, missing), "required field is missing (a region name)")
			}
			ok = false
		case f.From == f.To:
			p.Errorf(line, fp, "fails region %q over to itself", f.From)
			ok = false
		default:
			if prev, dup := seen[f]; dup {
				p.Errorf(line, fp, "repeats %s", strictyaml.Index(path, prev))
				ok = false
				continue
			}
			seen[f] = i
			out = append(out, f)
		}
	}
	return out, ok
}

// localityDistribute reads [{from: PATTERN, to: {PATTERN: PERCENT, ...}}, ...].
func (p *parser) localityDistribute(n *yaml.Node, path string) ([]DistributeRule, bool) {
	items, ok := p.Seq(n, path)
	if !ok {
		return nil, false
	}
	var out []DistributeRule
	seen := map[LocalityPattern]int{}
	for i, it := range items {
		fp := strictyaml.Index(path, i)
		var d DistributeRule
		fromSet, toSet := false, false
		iok := p.fields(it, fp, []string{"from", "to"}, nil, func(key string, v *yaml.Node) {
			kp := strictyaml.Join(fp, key)
			switch key {
			case "from":
				pat, pok := p.localityPattern(v, kp)
				d.From, fromSet, ok = pat, pok, ok && pok
			case "to":
				to, tok := p.localityWeights(v, kp)
				d.To, toSet, ok = to, tok, ok && tok
			}
		})
		if !iok {
			ok = false
			continue
		}
		line := p.Deref(it).Line
		if !fromSet || !toSet {
			if ok {
				missing := "from"
				if fromSet {
					missing = "to"
				}
				p.Errorf(line, strictyaml.Join(fp, missing), "required field is missing")
			}
			ok = false
			continue
		}
		if prev, dup := seen[d.From]; dup {
			p.Errorf(line, strictyaml.Join(fp, "from"), "%s is already the from of %s, which comes first and applies", d.From, strictyaml.Index(path, prev))
			ok = false
			continue
		}
		seen[d.From] = i
		out = append(out, d)
	}
	return out, ok
}

// localityWeights reads {PATTERN: PERCENT, ...}, percents summing to 100.
func (p *parser) localityWeights(n *yaml.Node, path string) ([]LocalityWeight, bool) {
	var out []LocalityWeight
	ok := true
	var sum uint32
	seen := map[LocalityPattern]string{}
	if !p.Mapping(n, path, "a mapping of locality patterns to percentages", func(key string, k, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		pat, pok := p.localityPattern(k, fp)
		w, wok := p.count32(v, fp, 1, 100)
		if !pok || !wok {
			ok = false
			return
		}
		if prev, dup := seen[pat]; dup {
			p.Errorf(k.Line, fp, "names the same localities as %s", prev)
			ok = false
			return
		}
		seen[pat] = key
		sum += w
		out = append(out, LocalityWeight{Pattern: pat, Weight: w})
	}) {
		return nil, false
	}
	if !ok {
		return nil, false
	}
	if len(out) == 0 {
		p.Errorf(p.Deref(n).Line, path, "needs at least one pattern, such as {%q: 100}", "region/zone")
		return nil, false
	}
	if sum != 100 {
		p.Errorf(p.Deref(n).Line, path, "percentages add up to %d, not 100", sum)
		return nil, false
	}
	return out, true
}

// localityPattern reads "*", "region", "region/*" or "region/zone".
func (p *parser) localityPattern(v *yaml.Node, path string) (LocalityPattern, bool) {
	s, ok := p.String(v, path, `a locality pattern ("region/zone", "region/*" or "*")`)
	if !ok {
		return LocalityPattern{}, false
	}
	bad := func() (LocalityPattern, bool) {
		p.Errorf(v.Line, path, "%q is not a locality pattern: write \"region/zone\", \"region/*\" (or \"region\") or \"*\"", s)
		return LocalityPattern{}, false
	}
	if s == "*" {
		return LocalityPattern{Region: "*", Zone: "*"}, true
	}
	region, zone, hasZone := strings.Cut(s, "/")
	if !validLocalityName(region) {
		return bad()
	}
	switch {
	case !hasZone || zone == "*":
		return LocalityPattern{Region: region, Zone: "*"}, true
	case !validLocalityName(zone):
		return bad()
	}
	return LocalityPattern{Region: region, Zone: zone}, true
}
