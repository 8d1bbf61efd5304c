package policy

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
	"github.com/sluice-mesh/sluice/sources"
)

var (
	topFields      = []string{"apiVersion", "kind", "metadata", "spec"}
	metadataFields = []string{"name", "labels", "annotations"}
	meshSpecFields = []string{"defaults", "tracing"}
	specFields     = []string{"loadBalancer", "timeout", "circuitBreaker", "outlierDetection", "healthyPanicThreshold", "slowStart", "healthCheck", "locality", "retry", "rateLimit", "tracing", "subsets", "split", "mirror", "fault", "routes", "dependencies"}
	// defaultsFields are the fields of a MeshPolicy's spec.defaults: those
	// of a ServicePolicy's spec except tracing, which is mesh-wide, and the
	// release fields, which are per service.
	defaultsFields = []string{"loadBalancer", "timeout", "circuitBreaker", "outlierDetection", "healthyPanicThreshold", "slowStart", "healthCheck", "locality", "retry", "rateLimit", "routes", "dependencies"}
	routeFields    = []string{"match", "timeout", "retry", "rateLimit", "subset", "split", "mirror", "fault"}
	// meshRouteFields are the fields of a route of a MeshPolicy's
	// spec.defaults.routes: those of a service's route except the release
	// fields.
	meshRouteFields = []string{"match", "timeout", "retry", "rateLimit"}
	matchFields     = []string{"pathPrefix", "path", "methods", "headers", "queryParams"}
)

// serviceNameRule says what sources.ValidServiceName accepts.
const serviceNameRule = "lowercase letters, digits, '-', '.', '_'; starts and ends alphanumeric; at most 253 characters"

// MaxFileSize bounds the size of one policy file.
const MaxFileSize = 4 << 20

// Parse decodes one policy file, which may hold several YAML documents
// separated by "---"; empty documents are skipped. On any error the whole
// file is rejected: the documents are nil and the diagnostics (errors, sorted
// by line) say where and which field. Checks that span files, such as
// duplicate policies, are made by Load.
func Parse(filename string, data []byte) ([]Document, []sources.Diagnostic) {
	docs, diags := parseFile(filename, data)
	if len(diags) > 0 {
		return nil, diags
	}
	if docs == nil {
		docs = []Document{}
	}
	return docs, nil
}

// parseFile returns every document whose kind and name could be read, valid
// or not, so duplicates can be reported alongside other errors.
func parseFile(filename string, data []byte) (docs []Document, diags []sources.Diagnostic) {
	p := &parser{Reader: &strictyaml.Reader{File: filename, Source: SourceName, MaxAliases: maxAliases}}
	if len(data) > MaxFileSize {
		p.Errorf(1, "", "the file is larger than %d bytes; split it", MaxFileSize)
		return nil, p.Diagnostics()
	}
	defer func() {
		// A policy file must never take the control plane down, not even
		// through a bug of the parser's.
		if r := recover(); r != nil {
			p.Errorf(1, "", "invalid YAML: the parser failed: %v", r)
			docs, diags = nil, p.Diagnostics()
		}
	}()
	for _, n := range p.Documents(data) {
		if doc, ok := p.document(n); ok {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 && len(p.Diagnostics()) == 0 {
		// An empty file is also what a file looks like while a writer
		// rewrites it in place: taking it as "no policies" would drop
		// its ServicePolicy for a moment, or for good if the writer
		// died. Policies are dropped by deleting the file.
		p.Errorf(1, "", "the file holds no policy document; delete the file to drop its policies")
	}
	diags = p.Diagnostics()
	sortDiagnostics(diags)
	return docs, diags
}

// document parses the top-level node of one YAML document; ok reports
// whether its kind (and, for a ServicePolicy, its name) could be read.
func (p *parser) document(n *yaml.Node) (doc Document, ok bool) {
	n = p.Deref(n)
	if strictyaml.IsNull(n) {
		return doc, false
	}
	doc = Document{File: p.File, Line: n.Line, lines: map[string]int{}}
	p.Lines = doc.lines
	defer func() { p.Lines, p.dependencyIndex = nil, nil }()

	var apiVersion, kind, metadata, spec *yaml.Node
	if !p.fields(n, "", topFields, nil, func(key string, v *yaml.Node) {
		switch key {
		case "apiVersion":
			apiVersion = v
		case "kind":
			kind = v
		case "metadata":
			metadata = v
		case "spec":
			spec = v
		}
	}) {
		return doc, false
	}
	if apiVersion == nil {
		p.Errorf(n.Line, "apiVersion", "required field is missing (want %s)", APIVersion)
	} else if s, ok := p.Scalar(apiVersion, "apiVersion", "an API version"); ok && s != APIVersion {
		p.Errorf(apiVersion.Line, "apiVersion", "unsupported API version %q (want %s)", s, APIVersion)
	}
	if kind == nil {
		p.Errorf(n.Line, "kind", "required field is missing (want %s or %s)", KindMeshPolicy, KindServicePolicy)
		return doc, false
	}
	k, kok := p.enum(kind, "kind", "kind", []string{string(KindMeshPolicy), string(KindServicePolicy)})
	if !kok {
		return doc, false
	}
	doc.Kind = Kind(k)

	nameOK := doc.Kind == KindMeshPolicy
	if metadata != nil {
		nameOK = p.metadata(metadata, &doc) || nameOK
	} else if doc.Kind == KindServicePolicy {
		p.Errorf(n.Line, "metadata.name", "required field is missing (the service this policy applies to)")
	}
	if spec == nil {
		p.Errorf(n.Line, "spec", "required field is missing")
	} else if doc.Kind == KindMeshPolicy {
		p.meshSpec(spec, &doc)
	} else {
		p.spec(spec, "spec", &doc.Spec, false)
	}
	if doc.Spec.Dependencies != nil {
		doc.Spec.Dependencies.Origin = doc.Location()
		doc.dependencyIndex = p.dependencyIndex
	}
	return doc, nameOK
}

func (p *parser) metadata(n *yaml.Node, doc *Document) (nameOK bool) {
	hasName := false
	if !p.fields(n, "metadata", metadataFields, nil, func(key string, v *yaml.Node) {
		switch key {
		case "name":
			hasName = true
			s, ok := p.Scalar(v, "metadata.name", "a name")
			if !ok {
				return
			}
			if doc.Kind == KindServicePolicy && !sources.ValidServiceName(s) {
				p.Errorf(v.Line, "metadata.name", "%q is not a valid service name (%s)", s, serviceNameRule)
				return
			}
			doc.Name, nameOK = s, true
		case "labels", "annotations":
			p.StringMap(v, "metadata."+key, key)
		}
	}) {
		return false
	}
	if !hasName && doc.Kind == KindServicePolicy {
		p.Errorf(n.Line, "metadata.name", "required field is missing (the service this policy applies to)")
	}
	return nameOK
}

func (p *parser) meshSpec(n *yaml.Node, doc *Document) {
	misplaced := func(key string) string {
		if key == "defaults" || key == "tracing" {
			return ""
		}
		if why := perService(key); why != "" {
			return why
		}
		for _, f := range specFields {
			if f == key {
				return fmt.Sprintf("a MeshPolicy sets %s under spec.defaults", key)
			}
		}
		return ""
	}
	p.fields(n, "spec", meshSpecFields, misplaced, func(key string, v *yaml.Node) {
		switch key {
		case "defaults":
			p.spec(v, "spec.defaults", &doc.Spec, true)
		case "tracing":
			doc.Tracing = p.tracing(v, "spec.tracing")
		}
	})
}

// spec parses a ServicePolicy's spec or a MeshPolicy's spec.defaults.
func (p *parser) spec(n *yaml.Node, path string, s *Spec, mesh bool) {
	known := specFields
	if mesh {
		known = defaultsFields
	}
	misplaced := func(key string) string {
		if mesh && key == "tracing" {
			return "tracing is mesh-wide: set it in the MeshPolicy's spec.tracing"
		}
		if mesh {
			return perService(key)
		}
		return ""
	}
	// Subsets may be defined after the fields that use them: the uses are
	// checked once the whole spec is read.
	p.subsetRefs = nil
	subsetsOK := true
	p.fields(n, path, known, misplaced, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "loadBalancer":
			s.LoadBalancer = p.loadBalancer(v, fp)
		case "timeout":
			if d, ok := p.duration(v, fp, maxTimeout); ok {
				s.Timeout = &d
			}
		case "circuitBreaker":
			s.CircuitBreaker = p.circuitBreaker(v, fp)
		case "outlierDetection":
			s.OutlierDetection = p.outlierDetection(v, fp)
		case "healthyPanicThreshold":
			if f, ok := p.percent(v, fp, false); ok {
				s.HealthyPanicThreshold = &f
			}
		case "slowStart":
			s.SlowStart = p.slowStart(v, fp)
		case "healthCheck":
			s.HealthCheck = p.healthCheck(v, fp)
		case "locality":
			s.Locality = p.locality(v, fp)
		case "retry":
			s.Retry, s.RetryBudget = p.retry(v, fp, true)
		case "rateLimit":
			s.RateLimit = p.rateLimit(v, fp)
		case "tracing":
			s.SamplingPercent = p.serviceTracing(v, fp)
		case "subsets":
			s.Subsets, subsetsOK = p.subsets(v, fp, keyLine(n, key))
		case "split":
			s.Split, _ = p.split(v, fp, keyLine(n, key))
		case "mirror":
			s.Mirror = p.mirror(v, fp)
		case "fault":
			s.Fault = p.fault(v, fp)
		case "routes":
			s.Routes = p.routes(v, fp, mesh)
		case "dependencies":
			s.Dependencies = p.dependencies(v, fp)
		}
	})
	if subsetsOK { // else the uses of subsets in error would be reported too
		p.checkSubsetRefs(path, s.Subsets, p.subsetRefs)
	}
	p.subsetRefs = nil
	p.checkPerTryTimeout(path, s.Timeout, s.Retry)
	p.checkSlowStart(path, s.LoadBalancer, s.SlowStart)
}

// checkPerTryTimeout enforces perTryTimeout ≤ timeout within one level.
func (p *parser) checkPerTryTimeout(path string, timeout *time.Duration, r *RetrySpec) {
	if timeout == nil || r == nil || r.PerTryTimeout == nil || *r.PerTryTimeout <= *timeout {
		return
	}
	fp := strictyaml.Join(path, "retry.perTryTimeout")
	p.Errorf(p.Lines[fp], fp, "perTryTimeout (%s) is longer than the timeout (%s) set beside it", fmtDuration(*r.PerTryTimeout), fmtDuration(*timeout))
}

// routes reads spec.routes; mesh reports whether they are a MeshPolicy's
// spec.defaults.routes, which may not use subsets.
func (p *parser) routes(n *yaml.Node, path string, mesh bool) []RouteSpec {
	items, ok := p.Seq(n, path)
	if !ok {
		return nil
	}
	routes := make([]RouteSpec, 0, len(items))
	byMatch := map[string]RouteSpec{}
	for i, it := range items {
		rp := strictyaml.Index(path, i)
		r, ok := p.route(it, rp, mesh)
		if !ok {
			continue
		}
		r.Index = i
		if prev, dup := byMatch[r.Match.key()]; dup {
			p.Errorf(r.Line, rp+".match", "same match as %s (line %d); merge the two routes", strictyaml.Index(path, prev.Index), prev.Line)
			continue
		}
		byMatch[r.Match.key()] = r
		routes = append(routes, r)
	}
	return routes
}

func (p *parser) route(n *yaml.Node, path string, mesh bool) (RouteSpec, bool) {
	r := RouteSpec{Line: n.Line}
	hasMatch, matchOK := false, false
	var subsetLine, splitLine int
	known := routeFields
	if mesh {
		known = meshRouteFields
	}
	serviceWide := func(key string) string {
		if why := perService(key); mesh && why != "" {
			return why
		}
		switch key {
		case "loadBalancer", "circuitBreaker", "outlierDetection", "tracing", "subsets", "routes", "dependencies":
			return key + " applies to the whole service, not to one route"
		}
		return ""
	}
	if !p.fields(n, path, known, serviceWide, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "match":
			hasMatch = true
			r.Match, matchOK = p.match(v, fp)
		case "timeout":
			if d, ok := p.duration(v, fp, maxTimeout); ok {
				r.Timeout = &d
			}
		case "retry":
			r.Retry, _ = p.retry(v, fp, false)
		case "rateLimit":
			r.RateLimit = p.rateLimit(v, fp)
		case "subset":
			subsetLine = v.Line
			if s, ok := p.subsetName(v, fp); ok {
				r.Split = []WeightedSubset{{Subset: s, Weight: 100}}
			}
		case "split":
			splitLine = keyLine(n, key)
			r.Split, _ = p.split(v, fp, splitLine)
		case "mirror":
			r.Mirror = p.mirror(v, fp)
		case "fault":
			r.Fault = p.fault(v, fp)
		}
	}) {
		return r, false
	}
	if !hasMatch {
		p.Errorf(n.Line, path+".match", "required field is missing")
	}
	switch {
	case subsetLine != 0 && splitLine != 0 && subsetLine > splitLine:
		p.Errorf(subsetLine, path+".subset", "set subset or split, not both")
	case subsetLine != 0 && splitLine != 0:
		p.Errorf(splitLine, path+".split", "set subset or split, not both")
	}
	p.checkPerTryTimeout(path, r.Timeout, r.Retry)
	return r, matchOK
}

var validPath = regexp.MustCompile(`^/[^\s?#]*$`)

func (p *parser) match(n *yaml.Node, path string) (RouteMatch, bool) {
	var m RouteMatch
	ok := true
	var prefixLine, pathLine int
	before := len(p.Diagnostics())
	if !p.fields(n, path, matchFields, nil, func(key string, v *yaml.Node) {
		fp := strictyaml.Join(path, key)
		switch key {
		case "pathPrefix", "path":
			s, sok := p.String(v, fp, "a path starting with /")
			if sok && !validPath.MatchString(s) {
				p.Errorf(v.Line, fp, "%q is not a path: it starts with / and has no spaces, ? or #", s)
				sok = false
			}
			ok = ok && sok
			if key == "path" {
				m.Path, pathLine = s, v.Line
			} else {
				m.PathPrefix, prefixLine = s, v.Line
			}
		case "methods":
			var mok bool
			m.Methods, mok = p.methods(v, fp)
			ok = ok && mok
		case "headers":
			var hok bool
			m.Headers, hok = p.valueMatches(v, fp, headerTarget)
			ok = ok && hok
		case "queryParams":
			var qok bool
			m.QueryParams, qok = p.valueMatches(v, fp, queryTarget)
			ok = ok && qok
		}
	}) {
		return m, false
	}
	switch {
	case !ok || len(p.Diagnostics()) > before: // say nothing more about a match already in error
		ok = false
	case prefixLine > 0 && pathLine > 0:
		p.Errorf(pathLine, path+".path", "set pathPrefix or path, not both")
		ok = false
	case prefixLine == 0 && pathLine == 0:
		p.Errorf(p.Deref(n).Line, path, "needs pathPrefix or path")
		ok = false
	}
	return m, ok
}

func (p *parser) methods(n *yaml.Node, path string) ([]string, bool) {
	items, ok := p.Seq(n, path)
	if !ok {
		return nil, false
	}
	if len(items) == 0 {
		p.Errorf(n.Line, path, "list at least one method, or leave methods out to match any method")
		return nil, false
	}
	var out []string
	seen := map[string]bool{}
	for i, it := range items {
		fp := strictyaml.Index(path, i)
		s, sok := p.Scalar(it, fp, "an HTTP method")
		if !sok {
			ok = false
			continue
		}
		if !slices.Contains(httpMethods, s) {
			if up := strings.ToUpper(s); slices.Contains(httpMethods, up) {
				p.Errorf(it.Line, fp, "methods are upper case: write %s", up)
			} else {
				p.Errorf(it.Line, fp, "unknown HTTP method %q (want %s)", s, oneOf(httpMethods))
			}
			ok = false
			continue
		}
		if seen[s] {
			p.Errorf(it.Line, fp, "%s is listed twice", s)
			ok = false
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	sort.Strings(out)
	return out, ok
}
