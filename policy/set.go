package policy

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-mesh/sluice/sources"
)

// Set is a complete, valid set of policy documents: at most one MeshPolicy
// and at most one ServicePolicy per service. It is immutable; a nil *Set is
// an empty one (every service gets the built-in defaults).
type Set struct {
	// files are the files the set was loaded from, as read.
	files    []File
	docs     []Document
	mesh     *Document
	services map[string]*Document
}

// File is one policy file to load.
type File struct {
	// Name is the path diagnostics report.
	Name string
	Data []byte
}

// ReadDir reads the policy files of dir: the files named *.yaml or *.yml,
// not recursing into sub-directories and skipping hidden files (names
// starting with "."), in name order. Symbolic links are followed, so a
// Kubernetes ConfigMap volume works. A file that cannot be read is a
// diagnostic; callers then reject the whole directory, as Load rejects it
// for any error in any file.
func ReadDir(dir string) ([]File, []sources.Diagnostic) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, []sources.Diagnostic{ioDiagnostic(dir, "cannot read the policy directory: %v", err)}
	}
	var files []File
	var diags []sources.Diagnostic
	for _, e := range entries { // os.ReadDir sorts by name
		name := e.Name()
		if strings.HasPrefix(name, ".") || !IsPolicyFile(name) {
			continue
		}
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path)
		if err != nil {
			diags = append(diags, ioDiagnostic(path, "cannot read the policy file: %v", err))
			continue
		}
		if fi.IsDir() {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			diags = append(diags, ioDiagnostic(path, "cannot read the policy file: %v", err))
			continue
		}
		files = append(files, File{Name: path, Data: data})
	}
	return files, diags
}

// IsPolicyFile reports whether a file name has a policy file's extension.
func IsPolicyFile(name string) bool {
	ext := filepath.Ext(name)
	return ext == ".yaml" || ext == ".yml"
}

func ioDiagnostic(path, format string, args ...any) sources.Diagnostic {
	return sources.Diagnostic{Severity: sources.SeverityError, Source: SourceName, Location: path, Message: fmt.Sprintf(format, args...)}
}

// Load parses files and checks them together. Any error rejects the whole
// set: the Set is nil and the diagnostics, sorted by file and line, say why.
func Load(files []File) (*Set, []sources.Diagnostic) {
	var docs []Document
	var diags []sources.Diagnostic
	for _, f := range files {
		d, fd := parseFile(f.Name, f.Data)
		docs = append(docs, d...)
		diags = append(diags, fd...)
	}
	set, cross := newSet(docs)
	diags = append(diags, cross...)
	if len(diags) > 0 {
		sortDiagnostics(diags)
		return nil, diags
	}
	for _, f := range files {
		set.files = append(set.files, File{Name: f.Name, Data: slices.Clone(f.Data)})
	}
	return set, nil
}

// newSet indexes documents (in load order) and reports duplicates, naming
// both locations.
func newSet(docs []Document) (*Set, []sources.Diagnostic) {
	s := &Set{docs: docs, services: map[string]*Document{}}
	var diags []sources.Diagnostic
	for i := range s.docs {
		d := &s.docs[i]
		switch d.Kind {
		case KindMeshPolicy:
			if s.mesh != nil {
				diags = append(diags, sources.Diagnostic{
					Severity: sources.SeverityError, Source: SourceName,
					Location: d.fieldLocation("kind"), Field: "kind",
					Message: fmt.Sprintf("a second MeshPolicy: the first is at %s (there is at most one)", s.mesh.Location()),
				})
				continue
			}
			s.mesh = d
		case KindServicePolicy:
			if prev, dup := s.services[d.Name]; dup {
				diags = append(diags, sources.Diagnostic{
					Severity: sources.SeverityError, Source: SourceName,
					Location: d.fieldLocation("metadata.name"), Field: "metadata.name",
					Message: fmt.Sprintf("a second ServicePolicy for service %q: the first is at %s (there is at most one per service)", d.Name, prev.fieldLocation("metadata.name")),
				})
				continue
			}
			s.services[d.Name] = d
		}
	}
	return s, diags
}

// Files lists the files the set was loaded from, in load order.
func (s *Set) Files() []string {
	if s == nil {
		return nil
	}
	names := make([]string, len(s.files))
	for i, f := range s.files {
		names[i] = f.Name
	}
	return names
}

// Sources returns the files the set was loaded from, in load order, each
// with its content as Load read it: Load(s.Sources()) makes an equal set.
// The admin API serves them (GET /debug/policy) so that tools can resolve
// a running sluice's policies as it does. The data are copies.
func (s *Set) Sources() []File {
	if s == nil {
		return nil
	}
	out := make([]File, len(s.files))
	for i, f := range s.files {
		out[i] = File{Name: f.Name, Data: slices.Clone(f.Data)}
	}
	return out
}

// Documents returns the documents of the set in load order (files by name,
// then position in the file).
func (s *Set) Documents() []Document {
	if s == nil {
		return nil
	}
	return slices.Clone(s.docs)
}

// DocumentsOf returns the documents Resolve(service) reads: the
// MeshPolicy, then the service's ServicePolicy, each when there is one.
func (s *Set) DocumentsOf(service string) []Document {
	svcDoc, meshDoc := s.documents(service)
	var out []Document
	for _, d := range []*Document{meshDoc, svcDoc} {
		if d != nil {
			out = append(out, *d)
		}
	}
	return out
}

// Services lists the services that have a ServicePolicy, sorted.
func (s *Set) Services() []string {
	if s == nil {
		return nil
	}
	names := make([]string, 0, len(s.services))
	for n := range s.services {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Warnings checks the set against the services in the catalog. Nothing it
// reports rejects the set: a policy for a service that does not exist (yet)
// simply applies to nothing, for example, and a dependency on such a service
// (see DependencyWarnings) gives its sidecars nothing for it.
func (s *Set) Warnings(serviceNames []string) []sources.Diagnostic {
	if s == nil {
		return nil
	}
	known := knownSet(serviceNames)
	out := s.DependencyWarnings(serviceNames)
	out = append(out, s.LocalityWarnings()...)
	out = append(out, s.RegexWarnings()...)
	warn := warner(&out)
	for _, name := range s.Services() {
		d := s.services[name]
		if !known[name] {
			warn(d, "metadata.name", "no service %q in the catalog: this policy applies to nothing until it appears", name)
		}
		if d.Spec.SamplingPercent != nil && (s.mesh == nil || s.mesh.Tracing == nil) {
			warn(d, "spec.tracing.samplingPercent", "has no effect: no MeshPolicy sets spec.tracing")
		}
	}
	if s.mesh != nil && s.mesh.Tracing != nil {
		t := s.mesh.Tracing
		if t.CollectorPort == 0 && !known[t.CollectorHost] {
			warn(s.mesh, "spec.tracing.collector", "no service %q in the catalog, and a host needs a port: spans are dropped until it appears", t.CollectorHost)
		}
	}
	sortDiagnostics(out)
	return out
}

// sortDiagnostics orders diagnostics by file, line (numerically), field and
// message, so output is stable.
func sortDiagnostics(ds []sources.Diagnostic) {
	slices.SortStableFunc(ds, func(a, b sources.Diagnostic) int {
		af, al := splitLocation(a.Location)
		bf, bl := splitLocation(b.Location)
		return cmp.Or(cmp.Compare(af, bf), cmp.Compare(al, bl), cmp.Compare(a.Field, b.Field), cmp.Compare(a.Message, b.Message))
	})
}

func splitLocation(loc string) (string, int) {
	i := strings.LastIndexByte(loc, ':')
	if i < 0 {
		return loc, 0
	}
	n, err := strconv.Atoi(loc[i+1:])
	if err != nil {
		return loc, 0
	}
	return loc[:i], n
}
