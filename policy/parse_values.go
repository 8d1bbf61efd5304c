package policy

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/sources"
)

// parser collects the diagnostics of one file. Its helpers each check one
// node and report a problem at that node's line under the given field path;
// they return false when they reported one.
type parser struct {
	file  string
	diags []sources.Diagnostic
	// lines records the line of every field read, by field path, for the
	// document being parsed (so later checks, such as catalog warnings, can
	// point at the field).
	lines map[string]int
	// aliases counts the alias uses followed in the file.
	aliases int
	// dependencyIndex maps each spec.dependencies entry of the document
	// being parsed to its index in the list.
	dependencyIndex map[string]int
}

func (p *parser) errorf(line int, field, format string, args ...any) {
	p.diags = append(p.diags, sources.Diagnostic{
		Severity: sources.SeverityError,
		Source:   SourceName,
		Location: location(p.file, line),
		Field:    field,
		Message:  fmt.Sprintf(format, args...),
	})
}

func location(file string, line int) string { return file + ":" + strconv.Itoa(line) }

// maxAliases bounds how many alias uses a file may make, so a small file
// cannot make the parser walk a huge tree (a "billion laughs" file).
const maxAliases = 10000

// deref follows an alias to the node it names. Past maxAliases it reports
// an error once and returns an empty node.
func (p *parser) deref(n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.AliasNode {
		return n
	}
	p.aliases++
	if p.aliases > maxAliases {
		if p.aliases == maxAliases+1 {
			p.errorf(n.Line, "", "too many alias uses (more than %d)", maxAliases)
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line}
	}
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// fields walks a mapping node, rejecting keys not in known and keys given
// twice, and calls visit for each known key with its value node. extra, when
// non-nil, may explain why a field is not accepted here; it returns "" for a
// plain unknown field.
func (p *parser) fields(n *yaml.Node, path string, known []string, extra func(key string) string, visit func(key string, v *yaml.Node)) bool {
	n = p.deref(n)
	if n.Kind != yaml.MappingNode {
		hint := ""
		if isNull(n) {
			hint = " (write {} to use the defaults)"
		}
		p.errorf(n.Line, path, "expected a mapping, got %s%s", kindName(n), hint)
		return false
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := p.deref(n.Content[i]), p.deref(n.Content[i+1])
		fp := join(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			p.errorf(k.Line, path, "expected field names, got %s", kindName(k))
			continue
		}
		if !slices.Contains(known, k.Value) {
			switch {
			case k.Tag == "!!merge":
				p.errorf(k.Line, fp, "YAML merge keys are not supported; repeat the fields or use an alias for the whole value")
			case extra != nil && extra(k.Value) != "":
				p.errorf(k.Line, fp, "%s", extra(k.Value))
			default:
				p.errorf(k.Line, fp, "unknown field (known: %s)", strings.Join(known, ", "))
			}
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			p.errorf(k.Line, fp, "field given twice (first at line %d)", prev)
			continue
		}
		seen[k.Value] = k.Line
		if p.lines != nil {
			p.lines[fp] = v.Line
		}
		visit(k.Value, v)
	}
	return true
}

// seq returns the items of a list; null counts as an empty list.
func (p *parser) seq(v *yaml.Node, path string) ([]*yaml.Node, bool) {
	if isNull(v) {
		return nil, true
	}
	if v.Kind != yaml.SequenceNode {
		p.errorf(v.Line, path, "expected a list, got %s", kindName(v))
		return nil, false
	}
	items := make([]*yaml.Node, len(v.Content))
	for i, it := range v.Content {
		items[i] = p.deref(it)
	}
	return items, true
}

func (p *parser) scalar(v *yaml.Node, path, what string) (string, bool) {
	if v.Kind != yaml.ScalarNode || isNull(v) {
		p.errorf(v.Line, path, "expected %s, got %s", what, kindName(v))
		return "", false
	}
	return v.Value, true
}

// str reads a scalar written as a string (quoted or not).
func (p *parser) str(v *yaml.Node, path, what string) (string, bool) {
	s, ok := p.scalar(v, path, what)
	if !ok {
		return "", false
	}
	if v.Tag != "!!str" {
		p.errorf(v.Line, path, "expected %s, got %s", what, kindName(v))
		return "", false
	}
	return s, true
}

func (p *parser) boolean(v *yaml.Node, path string) (bool, bool) {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
		p.errorf(v.Line, path, "expected true or false, got %s", kindName(v))
		return false, false
	}
	var b bool
	if err := v.Decode(&b); err != nil {
		p.errorf(v.Line, path, "expected true or false, got %s", kindName(v))
		return false, false
	}
	return b, true
}

// count reads a whole number in [lo, hi].
func (p *parser) count(v *yaml.Node, path string, lo, hi uint64) (uint64, bool) {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" {
		p.errorf(v.Line, path, "expected a whole number, got %s", kindName(v))
		return 0, false
	}
	var n int64
	if err := v.Decode(&n); err != nil || n < 0 || uint64(n) < lo || uint64(n) > hi {
		p.errorf(v.Line, path, "must be %s, got %s", rangeText(lo, hi), v.Value)
		return 0, false
	}
	return uint64(n), true
}

func (p *parser) count32(v *yaml.Node, path string, lo, hi uint64) (uint32, bool) {
	n, ok := p.count(v, path, lo, min(hi, math.MaxUint32))
	return uint32(n), ok
}

func rangeText(lo, hi uint64) string {
	if hi >= math.MaxUint32 {
		return fmt.Sprintf("a whole number of at least %d", lo)
	}
	return fmt.Sprintf("a whole number from %d to %d", lo, hi)
}

// percent reads a number from 0 to 100; whole reports whether fractions are
// refused (for fields Envoy holds as integers).
func (p *parser) percent(v *yaml.Node, path string, whole bool) (float64, bool) {
	what := "a percentage from 0 to 100"
	if whole {
		what = "a whole percentage from 0 to 100"
	}
	if v.Kind != yaml.ScalarNode || (v.Tag != "!!int" && (whole || v.Tag != "!!float")) {
		p.errorf(v.Line, path, "expected %s, got %s", what, kindName(v))
		return 0, false
	}
	var f float64
	if err := v.Decode(&f); err != nil || math.IsNaN(f) || f < 0 || f > 100 {
		p.errorf(v.Line, path, "must be %s, got %s", what, v.Value)
		return 0, false
	}
	return f, true
}

// Bounds of the durations a policy may hold.
const (
	minDuration = time.Millisecond
	maxDuration = time.Hour
	// maxTimeout is longer than other durations so long-lived streams can be
	// given a long request timeout.
	maxTimeout = 24 * time.Hour
)

func (p *parser) duration(v *yaml.Node, path string, hi time.Duration) (time.Duration, bool) {
	const what = "a duration such as 500ms, 2s or 1m"
	if v.Kind != yaml.ScalarNode || v.Tag != "!!str" {
		hint := ""
		if v.Tag == "!!int" || v.Tag == "!!float" {
			hint = " (a unit is required)"
		}
		p.errorf(v.Line, path, "expected %s, got %s%s", what, kindName(v), hint)
		return 0, false
	}
	d, err := time.ParseDuration(v.Value)
	if err != nil {
		p.errorf(v.Line, path, "expected %s, got %q", what, v.Value)
		return 0, false
	}
	if d < minDuration || d > hi {
		p.errorf(v.Line, path, "must be from %s to %s, got %s", fmtDuration(minDuration), fmtDuration(hi), v.Value)
		return 0, false
	}
	return d, true
}

// fmtDuration prints whole hours and minutes without their zero tails
// ("1h", not "1h0m0s").
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func (p *parser) enum(v *yaml.Node, path, what string, allowed []string) (string, bool) {
	s, ok := p.scalar(v, path, what)
	if !ok {
		return "", false
	}
	if !slices.Contains(allowed, s) {
		p.errorf(v.Line, path, "unknown %s %q (want %s)", what, s, oneOf(allowed))
		return "", false
	}
	return s, true
}

// headerName reads an HTTP header name and returns it in lower case, the form
// Envoy and HTTP/2 use.
func (p *parser) headerName(v *yaml.Node, path string) (string, bool) {
	s, ok := p.str(v, path, "a header name")
	if !ok {
		return "", false
	}
	if !validHeaderName(s) {
		p.errorf(v.Line, path, "%q is not an HTTP header name (letters, digits and !#$%%&'*+-.^_`|~; pseudo-headers such as :authority are not allowed)", s)
		return "", false
	}
	return strings.ToLower(s), true
}

var headerToken = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+\\-.^_`|~]{1,256}$")

func validHeaderName(s string) bool { return headerToken.MatchString(s) }

// stringMap reads a mapping of names to scalar values.
func (p *parser) stringMap(v *yaml.Node, path, what string) (map[string]string, bool) {
	if v.Kind != yaml.MappingNode {
		p.errorf(v.Line, path, "expected a mapping of %s, got %s", what, kindName(v))
		return nil, false
	}
	m := map[string]string{}
	ok := true
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := p.deref(v.Content[i]), p.deref(v.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			p.errorf(k.Line, path, "expected non-empty names, got %s", kindName(k))
			ok = false
			continue
		}
		fp := join(path, k.Value)
		if _, dup := m[k.Value]; dup {
			p.errorf(k.Line, fp, "given twice")
			ok = false
			continue
		}
		if val.Kind != yaml.ScalarNode || isNull(val) {
			p.errorf(val.Line, fp, "expected a string, got %s", kindName(val))
			ok = false
			continue
		}
		m[k.Value] = val.Value
	}
	return m, ok
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.AliasNode:
		return "an alias"
	}
	return strconv.Quote(n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// oneOf lists choices as "a, b or c".
func oneOf(choices []string) string {
	switch len(choices) {
	case 0:
		return ""
	case 1:
		return choices[0]
	}
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
}
