package policy

import (
	"fmt"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
	"github.com/sluice-mesh/sluice/sources"
)

// AllServices is the dependencies entry that stands for every service.
const AllServices = "*"

// Dependencies is the set of services whose config a service's sidecars receive.
type Dependencies struct {
	// All is true when the set is every service ("*", the built-in default).
	All bool `json:"all,omitempty"`
	// Services are the named dependencies, sorted and unique; empty when All.
	// Empty with All false means none.
	Services []string `json:"services,omitempty"`
	// Origin is "file:line" of the document that set it; "" for the built-in default.
	Origin string `json:"origin,omitempty"`
}

// Dependencies returns the dependency set of a service's sidecars. Works on a nil *Set (All).
//
// The most specific level that sets spec.dependencies wins as a whole (the
// lists are not merged): the service's ServicePolicy, then the MeshPolicy's
// spec.defaults, then the built-in "every service". The value is built when
// the set is loaded, so a call costs a map lookup and allocates nothing; the
// returned Services slice is shared by every caller and must be treated as
// read-only.
func (s *Set) Dependencies(service string) Dependencies {
	if s != nil {
		if d := s.services[service]; d != nil && d.Spec.Dependencies != nil {
			return *d.Spec.Dependencies
		}
		if s.mesh != nil && s.mesh.Spec.Dependencies != nil {
			return *s.mesh.Spec.Dependencies
		}
	}
	return Dependencies{All: true}
}

// Includes reports whether name is in the set.
func (d Dependencies) Includes(name string) bool {
	if d.All {
		return true
	}
	_, found := slices.BinarySearch(d.Services, name)
	return found
}

// dependencies reads spec.dependencies: service names, or only "*". An
// explicit [] means no dependencies; null is refused, so that a key left
// without its entries does not silently cut a service off from everything.
func (p *parser) dependencies(n *yaml.Node, path string) *Dependencies {
	if strictyaml.IsNull(n) {
		p.Errorf(n.Line, path, `expected a list, got nothing (write [] for no dependencies, or leave the field out for every service)`)
		return nil
	}
	items, ok := p.Seq(n, path)
	if !ok {
		return nil
	}
	deps := &Dependencies{}
	first := map[string]int{} // entry → index of its first occurrence
	p.dependencyIndex = first
	star := -1
	for i, it := range items {
		fp := strictyaml.Index(path, i)
		if p.Lines != nil {
			p.Lines[fp] = it.Line
		}
		s, sok := p.Scalar(it, fp, `a service name or "*"`)
		if !sok {
			ok = false
			continue
		}
		if prev, dup := first[s]; dup {
			p.Errorf(it.Line, fp, "%q is listed twice (first at %s)", s, strictyaml.Index(path, prev))
			ok = false
			continue
		}
		first[s] = i
		switch {
		case s == AllServices:
			star = i
		case !sources.ValidServiceName(s):
			p.Errorf(it.Line, fp, "%q is not a valid service name (%s), nor %q for every service", s, serviceNameRule, AllServices)
			ok = false
		default:
			deps.Services = append(deps.Services, s)
		}
	}
	if star >= 0 && len(deps.Services) > 0 {
		fp := strictyaml.Index(path, star)
		p.Errorf(items[star].Line, fp, "%q (every service) cannot be combined with service names: list the services, or only %q", AllServices, AllServices)
		ok = false
	}
	if !ok {
		return nil
	}
	if star >= 0 {
		return &Dependencies{All: true}
	}
	slices.Sort(deps.Services)
	return deps
}

// dependencyWarnings reports the entries of d's spec.dependencies that name
// no service in known.
func dependencyWarnings(d *Document, known map[string]bool, warn func(d *Document, field, format string, args ...any)) {
	deps := d.Spec.Dependencies
	if deps == nil || deps.All {
		return
	}
	path := "spec.dependencies"
	if d.Kind == KindMeshPolicy {
		path = "spec.defaults.dependencies"
	}
	for _, name := range deps.Services {
		if !known[name] {
			warn(d, strictyaml.Index(path, d.dependencyIndex[name]), "service %q is not in the catalog: its sidecars get no configuration for it until it appears", name)
		}
	}
}

// DependencyWarnings reports, as warnings, the spec.dependencies entries
// (of the MeshPolicy's defaults and of every ServicePolicy) that name a
// service not in serviceNames. Warnings includes them; this is for callers
// that know only part of the catalog, such as sluice validate without a
// registry file.
func (s *Set) DependencyWarnings(serviceNames []string) []sources.Diagnostic {
	if s == nil {
		return nil
	}
	known := knownSet(serviceNames)
	var out []sources.Diagnostic
	warn := warner(&out)
	for i := range s.docs {
		dependencyWarnings(&s.docs[i], known, warn)
	}
	sortDiagnostics(out)
	return out
}

// warner returns a function that appends a warning about a document's field
// to out.
func warner(out *[]sources.Diagnostic) func(d *Document, field, format string, args ...any) {
	return func(d *Document, field, format string, args ...any) {
		*out = append(*out, sources.Diagnostic{
			Severity: sources.SeverityWarning, Source: SourceName,
			Location: d.fieldLocation(field), Field: field,
			Message: fmt.Sprintf(format, args...),
		})
	}
}

func knownSet(names []string) map[string]bool {
	known := make(map[string]bool, len(names))
	for _, n := range names {
		known[n] = true
	}
	return known
}
