package policy

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
)

// parser reads one policy file: strictyaml's Reader (which holds the
// file's diagnostics and the line of every field read) with the policy
// schema's value types on top. Its helpers each check one node and report a
// problem at that node's line under the given field path; they return false
// when they reported one.
type parser struct {
	*strictyaml.Reader
	// dependencyIndex maps each spec.dependencies entry of the document
	// being parsed to its index in the list.
	dependencyIndex map[string]int
	// subsetRefs are the uses of subset names in the spec being parsed,
	// checked against its subsets once it is read.
	subsetRefs []subsetRef
}

// maxAliases bounds how many alias uses a file may make, so a small file
// cannot make the parser walk a huge tree (a "billion laughs" file).
const maxAliases = 10000

// fields is the Reader's Fields, with a hint for a field left empty.
func (p *parser) fields(n *yaml.Node, path string, known []string, explain func(key string) string, visit func(key string, v *yaml.Node)) bool {
	n = p.Deref(n)
	if strictyaml.IsNull(n) {
		p.Errorf(n.Line, path, "expected a mapping, got nothing (write {} to use the defaults)")
		return false
	}
	return p.Fields(n, path, known, explain, visit)
}

// count reads a whole number in [lo, hi].
func (p *parser) count(v *yaml.Node, path string, lo, hi uint64) (uint64, bool) {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" {
		p.Errorf(v.Line, path, "expected a whole number, got %s", strictyaml.KindName(v))
		return 0, false
	}
	var n int64
	if err := v.Decode(&n); err != nil || n < 0 || uint64(n) < lo || uint64(n) > hi {
		p.Errorf(v.Line, path, "must be %s, got %s", rangeText(lo, hi), v.Value)
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
		p.Errorf(v.Line, path, "expected %s, got %s", what, strictyaml.KindName(v))
		return 0, false
	}
	var f float64
	if err := v.Decode(&f); err != nil || math.IsNaN(f) || f < 0 || f > 100 {
		p.Errorf(v.Line, path, "must be %s, got %s", what, v.Value)
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
		p.Errorf(v.Line, path, "expected %s, got %s%s", what, strictyaml.KindName(v), hint)
		return 0, false
	}
	d, err := time.ParseDuration(v.Value)
	if err != nil {
		p.Errorf(v.Line, path, "expected %s, got %q", what, v.Value)
		return 0, false
	}
	if d < minDuration || d > hi {
		p.Errorf(v.Line, path, "must be from %s to %s, got %s", fmtDuration(minDuration), fmtDuration(hi), v.Value)
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
	s, ok := p.Scalar(v, path, what)
	if !ok {
		return "", false
	}
	if !slices.Contains(allowed, s) {
		p.Errorf(v.Line, path, "unknown %s %q (want %s)", what, s, oneOf(allowed))
		return "", false
	}
	return s, true
}

// headerName reads an HTTP header name and returns it in lower case, the form
// Envoy and HTTP/2 use.
func (p *parser) headerName(v *yaml.Node, path string) (string, bool) {
	s, ok := p.String(v, path, "a header name")
	if !ok {
		return "", false
	}
	if !validHeaderName(s) {
		p.Errorf(v.Line, path, "%q is not an HTTP header name (letters, digits and !#$%%&'*+-.^_`|~; pseudo-headers such as :authority are not allowed)", s)
		return "", false
	}
	return strings.ToLower(s), true
}

var headerToken = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+\\-.^_`|~]{1,256}$")

func validHeaderName(s string) bool { return headerToken.MatchString(s) }

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
