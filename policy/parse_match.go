package policy

import (
	"regexp"
	"slices"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
)

// maxRegex bounds the length of a regex in a match, in bytes.
const maxRegex = 1024

// matchTarget is what a mapping of value matches is about: request headers
// or query parameters.
type matchTarget struct {
	noun string // "header", "query parameter"
	// name reads a key of the mapping and returns the name to match,
	// normalized; path is the key's field path.
	name func(p *parser, k *yaml.Node, path string) (string, bool)
	// fold maps a name to the form under which two names are the same.
	fold func(string) string
}

var (
	headerTarget = matchTarget{
		noun: "header",
		name: func(p *parser, k *yaml.Node, path string) (string, bool) { return p.headerName(k, path) },
		fold: strings.ToLower,
	}
	queryTarget = matchTarget{
		noun: "query parameter",
		name: func(p *parser, k *yaml.Node, path string) (string, bool) { return p.queryParamName(k, path) },
		fold: func(s string) string { return s },
	}
)

// valueMatches reads match.headers or match.queryParams: a mapping of names
// to what the value must be (see matchValue), sorted by name.
func (p *parser) valueMatches(n *yaml.Node, path string, t matchTarget) ([]HeaderMatch, bool) {
	if n.Kind != yaml.MappingNode {
		p.Errorf(n.Line, path, "expected a mapping of %s names to values, got %s", t.noun, strictyaml.KindName(n))
		return nil, false
	}
	var out []HeaderMatch
	ok := true
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := p.Deref(n.Content[i]), p.Deref(n.Content[i+1])
		name, nok := t.name(p, k, strictyaml.Join(path, k.Value))
		if !nok {
			ok = false
			continue
		}
		fp := strictyaml.Join(path, name)
		if prev, dup := seen[t.fold(name)]; dup {
			p.Errorf(k.Line, fp, "%s given twice (first at line %d)", t.noun, prev)
			ok = false
			continue
		}
		seen[t.fold(name)] = k.Line
		if p.Lines != nil {
			p.Lines[fp] = v.Line
		}
		m, mok := p.matchValue(v, fp, t.noun)
		if !mok {
			ok = false
			continue
		}
		m.Name = name
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b HeaderMatch) int { return strings.Compare(a.Name, b.Name) })
	return out, ok
}

// matchValue reads what one header's or query parameter's value must be:
// a scalar (that exact value), {exact: VALUE}, {regex: RE2} (matching the
// whole value) or {present: true}.
func (p *parser) matchValue(v *yaml.Node, path, noun string) (HeaderMatch, bool) {
	var m HeaderMatch
	if v.Kind != yaml.MappingNode {
		s, ok := p.Scalar(v, path, "a "+noun+" value")
		m.Exact = s
		return m, ok
	}
	var set []string
	before := len(p.Diagnostics())
	if !p.fields(v, path, []string{"exact", "regex", "present"}, nil, func(key string, x *yaml.Node) {
		fp := strictyaml.Join(path, key)
		set = append(set, key)
		switch key {
		case "exact":
			m.Exact, _ = p.Scalar(x, fp, "a value")
		case "regex":
			m.Regex, _ = p.regex(x, fp)
		case "present":
			if b, ok := p.Bool(x, fp); ok && !b {
				p.Errorf(x.Line, fp, "only present: true is supported; to match requests with or without the %s, leave the %s out", noun, noun)
			}
			m.Present = true
		}
	}) || len(p.Diagnostics()) > before {
		return m, false
	}
	switch {
	case len(set) == 0:
		p.Errorf(v.Line, path, "needs one of exact, regex and present")
		return m, false
	case len(set) > 1:
		p.Errorf(v.Line, path, "set exactly one of exact, regex and present, not %s together", strings.Join(set, " and "))
		return m, false
	}
	return m, true
}

// regex reads an RE2 regular expression that a whole value must match.
func (p *parser) regex(v *yaml.Node, path string) (string, bool) {
	s, ok := p.Scalar(v, path, "an RE2 regular expression")
	if !ok {
		return "", false
	}
	switch {
	case s == "":
		p.Errorf(v.Line, path, `an empty regex only matches an empty value: write {exact: ""} for that`)
		return "", false
	case len(s) > maxRegex:
		p.Errorf(v.Line, path, "the regex is %d bytes long; at most %d are allowed", len(s), maxRegex)
		return "", false
	}
	if _, err := regexp.Compile(s); err != nil {
		p.Errorf(v.Line, path, "%q is not a valid RE2 regular expression: %v", s, err)
		return "", false
	}
	return s, true
}

// queryParamName reads the name of a query parameter, as written (names
// are case-sensitive).
func (p *parser) queryParamName(v *yaml.Node, path string) (string, bool) {
	s, ok := p.String(v, path, "a query parameter name")
	if !ok {
		return "", false
	}
	if !validQueryParamName(s) {
		p.Errorf(v.Line, path, "%q is not a query parameter name (not empty; no spaces, &, =, # or ?)", s)
		return "", false
	}
	return s, true
}

func validQueryParamName(s string) bool {
	if s == "" || strings.ContainsAny(s, "&=#?") {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) < 0
}
