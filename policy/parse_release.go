package policy

import (
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
)

// The release fields of a ServicePolicy (issue #16): subsets, and where
// traffic goes among them (split, a route's subset), what is copied
// (mirror) and what is injected (fault).

// releaseFields are the spec fields that only a ServicePolicy may set: they
// name the service's own subsets, so they cannot be mesh defaults.
var releaseFields = []string{"subsets", "split", "mirror", "fault"}

// perService explains why a MeshPolicy may not set a release field; "" for
// other fields.
func perService(key string) string {
	if key == "subset" || slices.Contains(releaseFields, key) {
		return key + " is per service: set it in the service's ServicePolicy"
	}
	return ""
}

// maxSubsets bounds a service's subsets, and so the entries of a split.
const maxSubsets = 64

// subsetNameRule says what validSubsetName accepts (a DNS label: subset
// names become parts of cluster names).
const subsetNameRule = "lowercase letters, digits and '-'; starts and ends with a letter or digit; at most 63 characters"

var subsetName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func validSubsetName(s string) bool { return subsetName.MatchString(s) }

// grpcStatusNames are the gRPC status codes 1 to 16 (index+1), named as
// gRPC's codes are, in lower case with dashes.
var grpcStatusNames = []string{
	"cancelled", "unknown", "invalid-argument", "deadline-exceeded", "not-found",
	"already-exists", "permission-denied", "resource-exhausted", "failed-precondition", "aborted",
	"out-of-range", "unimplemented", "internal", "unavailable", "data-loss", "unauthenticated",
}

// subsetRef is a use of a subset name (in a split, a route's subset or a
// mirror), checked against spec.subsets once the whole spec is read.
type subsetRef struct {
	name string
	line int
	path string
}

// keyLine is the line of field key of the mapping m (already followed from
// an alias), or m's own line. A list or mapping written in block style
// starts on the line after its key; errors about the field as a whole are
// reported at the key.
func keyLine(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			return k.Line
		}
	}
	return m.Line
}

// subsets reads spec.subsets: {NAME: {LABEL: VALUE, ...}, ...}, sorted by
// name.
func (p *parser) subsets(n *yaml.Node, path string, line int) ([]Subset, bool) {
	var out []Subset
	ok, count := true, 0
	if !p.Mapping(n, path, "a mapping of subset names to labels", func(name string, k, v *yaml.Node) {
		count++
		fp := strictyaml.Join(path, name)
		if !validSubsetName(name) {
			p.Errorf(k.Line, fp, "%q is not a subset name (%s)", name, subsetNameRule)
			ok = false
			return
		}
		labels, lok := p.StringMap(v, fp, "labels")
		if !lok {
			ok = false
			return
		}
		if len(labels) == 0 {
			p.Errorf(v.Line, fp, "needs at least one label, such as {version: v2}: a subset without labels would be every instance")
			ok = false
			return
		}
		out = append(out, Subset{Name: name, Labels: labels})
	}) {
		return nil, false
	}
	switch {
	case count == 0:
		p.Errorf(line, path, "define at least one subset, such as {v2: {version: v2}}, or leave subsets out")
		return nil, false
	case count > maxSubsets:
		p.Errorf(line, path, "defines %d subsets; at most %d are allowed per service", count, maxSubsets)
		return nil, false
	case !ok:
		return nil, false
	}
	slices.SortFunc(out, func(a, b Subset) int { return strings.Compare(a.Name, b.Name) })
	return out, true
}

// subsetName reads a use of a subset's name and records it for
// checkSubsetRefs.
func (p *parser) subsetName(v *yaml.Node, path string) (string, bool) {
	s, ok := p.Scalar(v, path, "a subset name")
	if ok {
		p.subsetRefs = append(p.subsetRefs, subsetRef{name: s, line: v.Line, path: path})
	}
	return s, ok
}

// checkSubsetRefs reports the uses of subsets the spec at path does not
// define.
func (p *parser) checkSubsetRefs(path string, subsets []Subset, refs []subsetRef) {
	var defined []string
	for _, s := range subsets {
		defined = append(defined, s.Name)
	}
	sp := strictyaml.Join(path, "subsets")
	for _, r := range refs {
		switch {
		case slices.Contains(defined, r.name):
		case len(defined) == 0:
			p.Errorf(r.line, r.path, "subset %q is not defined: this ServicePolicy has no %s", r.name, sp)
		default:
			p.Errorf(r.line, r.path, "subset %q is not defined in %s (defined: %s)", r.name, sp, strings.Join(defined, ", "))
		}
	}
}

// split reads [{subset: NAME, weight: PERCENT}, ...]: distinct subsets whose
// whole-number weights add up to 100. line is the split field's line.
func (p *parser) split(n *yaml.Node, path string, line int) ([]WeightedSubset, bool) {
	items, ok := p.Seq(n, path)
	if !ok {
		return nil, false
	}
	switch {
	case len(items) == 0:
		p.Errorf(line, path, "list at least one {subset: NAME, weight: PERCENT}")
		return nil, false
	case len(items) > maxSubsets:
		p.Errorf(line, path, "lists %d entries; at most %d are allowed", len(items), maxSubsets)
		return nil, false
	}
	var out []WeightedSubset
	seen := map[string]int{}
	var sum uint32
	for i, it := range items {
		fp := strictyaml.Index(path, i)
		w, subsetLine, wok := p.splitEntry(it, fp)
		if !wok {
			ok = false
			continue
		}
		if prev, dup := seen[w.Subset]; dup {
			p.Errorf(subsetLine, strictyaml.Join(fp, "subset"), "subset %q is listed twice (first in %s)", w.Subset, strictyaml.Index(path, prev))
			ok = false
			continue
		}
		seen[w.Subset] = i
		sum += w.Weight
		out = append(out, w)
	}
	if !ok {
		return nil, false
	}
	if sum != 100 {
		p.Errorf(line, path, "weights add up to %d, not 100", sum)
		return nil, false
	}
	return out, true
}

// splitEntry reads {subset: NAME, weight: PERCENT}; subsetLine is the
// line of its subset.
func (p *parser) splitEntry(n *yaml.Node, path string) (w WeightedSubset, subsetLine int, ok bool) {
	before := len(p.Diagnostics())
	var weightLine int
	if !p.fields(n, path, []string{"subset", "weight"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "subset":
			w.Subset, _ = p.subsetName(v, fp)
			subsetLine = v.Line
		case "weight":
			w.Weight, _ = p.count32(v, fp, 0, 100)
			weightLine = v.Line
		}
	}) || len(p.Diagnostics()) > before { // say nothing more about an entry in error
		return w, 0, false
	}
	if subsetLine == 0 || weightLine == 0 {
		missing := "subset"
		if subsetLine != 0 {
			missing = "weight"
		}
		p.Errorf(p.Deref(n).Line, strictyaml.Join(path, missing), "required field is missing")
		return w, 0, false
	}
	return w, subsetLine, true
}

// required reports the fields of the block at path that were not written
// (line 0), at line, the block's; it reports whether none was missing.
func (p *parser) required(line int, path string, fields ...requiredField) bool {
	ok := true
	for _, f := range fields {
		if f.line == 0 {
			p.Errorf(line, strictyaml.Join(path, f.name), "required field is missing (%s)", f.what)
			ok = false
		}
	}
	return ok
}

// requiredField is a field of a block, the line of its value (0 when not
// written), and what it holds, for the message when it is missing.
type requiredField struct {
	name string
	line int
	what string
}

// mirror reads {subset: NAME, percent: PERCENT}.
func (p *parser) mirror(n *yaml.Node, path string) *Mirror {
	var m Mirror
	var subsetLine, percentLine int
	before := len(p.Diagnostics())
	if !p.fields(n, path, []string{"subset", "percent"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "subset":
			m.Subset, _ = p.subsetName(v, fp)
			subsetLine = v.Line
		case "percent":
			m.Percent, _ = p.sharePercent(v, fp)
			percentLine = v.Line
		}
	}) || len(p.Diagnostics()) > before {
		return nil
	}
	if !p.required(p.Deref(n).Line, path,
		requiredField{"subset", subsetLine, "the subset that gets the copies"},
		requiredField{"percent", percentLine, "the share of requests to copy, above 0 and at most 100"}) {
		return nil
	}
	return &m
}

// sharePercent reads the share of requests a mirror or fault applies to:
// above 0 (0 would do nothing: leave the block out) and at most 100.
func (p *parser) sharePercent(v *yaml.Node, path string) (float64, bool) {
	f, ok := p.percent(v, path, false)
	if ok && f == 0 {
		p.Errorf(v.Line, path, "must be above 0 and at most 100, got %s", v.Value)
		return 0, false
	}
	return f, ok
}

// fault reads {delay: {...}, abort: {...}}; at least one is set.
func (p *parser) fault(n *yaml.Node, path string) *Fault {
	var f Fault
	before := len(p.Diagnostics())
	if !p.fields(n, path, []string{"delay", "abort"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "delay":
			f.Delay = p.faultDelay(v, fp)
		case "abort":
			f.Abort = p.faultAbort(v, fp)
		}
	}) || len(p.Diagnostics()) > before {
		return nil
	}
	if f.Delay == nil && f.Abort == nil {
		p.Errorf(p.Deref(n).Line, path, "needs delay, abort or both")
		return nil
	}
	return &f
}

// faultDelay reads {percent: PERCENT, duration: DURATION}.
func (p *parser) faultDelay(n *yaml.Node, path string) *FaultDelay {
	var d FaultDelay
	var percentLine, durationLine int
	before := len(p.Diagnostics())
	if !p.fields(n, path, []string{"percent", "duration"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "percent":
			d.Percent, _ = p.sharePercent(v, fp)
			percentLine = v.Line
		case "duration":
			d.Duration, _ = p.duration(v, fp, maxDuration)
			durationLine = v.Line
		}
	}) || len(p.Diagnostics()) > before {
		return nil
	}
	if !p.required(p.Deref(n).Line, path,
		requiredField{"percent", percentLine, "the share of requests to delay, above 0 and at most 100"},
		requiredField{"duration", durationLine, "how long to hold each request, such as 2s"}) {
		return nil
	}
	return &d
}

// faultAbort reads {percent: PERCENT, httpStatus: CODE} or {percent:
// PERCENT, grpcStatus: NAME or CODE}.
func (p *parser) faultAbort(n *yaml.Node, path string) *FaultAbort {
	var a FaultAbort
	var percentLine, httpLine, grpcLine int
	before := len(p.Diagnostics())
	if !p.fields(n, path, []string{"percent", "httpStatus", "grpcStatus"}, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "percent":
			a.Percent, _ = p.sharePercent(v, fp)
			percentLine = v.Line
		case "httpStatus":
			a.HTTPStatus, _ = p.count32(v, fp, 200, 599)
			httpLine = v.Line
		case "grpcStatus":
			a.GRPCStatus, _ = p.grpcStatus(v, fp)
			grpcLine = v.Line
		}
	}) || len(p.Diagnostics()) > before {
		return nil
	}
	line := p.Deref(n).Line
	ok := p.required(line, path, requiredField{"percent", percentLine, "the share of requests to abort, above 0 and at most 100"})
	switch {
	case httpLine == 0 && grpcLine == 0:
		p.Errorf(line, path, "needs httpStatus (200 to 599) or grpcStatus (such as unavailable)")
		ok = false
	case httpLine != 0 && grpcLine != 0:
		p.Errorf(max(httpLine, grpcLine), path, "set httpStatus or grpcStatus, not both")
		ok = false
	}
	if !ok {
		return nil
	}
	return &a
}

// grpcStatus reads a gRPC status code other than OK: its name (as in
// grpcStatusNames) or its number, 1 to 16.
func (p *parser) grpcStatus(v *yaml.Node, path string) (uint32, bool) {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!int" {
		return p.count32(v, path, 1, uint64(len(grpcStatusNames)))
	}
	s, ok := p.String(v, path, "a gRPC status name or number")
	if !ok {
		return 0, false
	}
	if i := slices.Index(grpcStatusNames, s); i >= 0 {
		return uint32(i + 1), true
	}
	if want := strings.ReplaceAll(strings.ToLower(s), "_", "-"); slices.Contains(grpcStatusNames, want) {
		p.Errorf(v.Line, path, "gRPC status names are lower case with dashes: write %s", want)
		return 0, false
	}
	p.Errorf(v.Line, path, "unknown gRPC status %q (want %s, or its number from 1 to %d)", s, oneOf(grpcStatusNames), len(grpcStatusNames))
	return 0, false
}
