package policy

import (
	"fmt"
	"regexp/syntax"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
	"github.com/sluice-mesh/sluice/sources"
)

// envoyMaxProgramSize is the largest RE2 program Envoy accepts by default
// (its runtime key re2.max_program_size.error_level): a larger regular
// expression makes Envoy reject the whole route configuration.
const envoyMaxProgramSize = 100

// programSize is the number of instructions Go's RE2 compiles re to. It
// is not RE2's own count (C++ RE2 compiles somewhat differently) but
// grows with it: alternatives and counted repetitions multiply both.
func programSize(re string) int {
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return 0 // the parser reported it already
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return 0
	}
	return len(prog.Inst)
}

// RegexWarnings warns about the header and query parameter regexes of
// route matches that are likely too large for Envoy, which would reject
// the route configuration they are in (proxyless gRPC clients, with Go's
// RE2, take them). sluice cannot tell for sure: it does not compile RE2
// the way Envoy does.
func (s *Set) RegexWarnings() []sources.Diagnostic {
	if s == nil {
		return nil
	}
	var out []sources.Diagnostic
	warn := warner(&out)
	for i := range s.docs {
		d := &s.docs[i]
		routes := "spec.routes"
		if d.Kind == KindMeshPolicy {
			routes = "spec.defaults.routes"
		}
		for _, r := range d.Spec.Routes {
			for _, m := range []struct {
				key     string
				matches []HeaderMatch
			}{{"headers", r.Match.Headers}, {"queryParams", r.Match.QueryParams}} {
				for _, h := range m.matches {
					if h.Regex == "" {
						continue
					}
					if n := programSize(h.Regex); n > envoyMaxProgramSize {
						field := strictyaml.Join(strictyaml.Join(fmt.Sprintf("%s[%d].match", routes, r.Index), m.key), h.Name)
						warn(d, field, "the regex compiles to %d instructions; Envoy refuses regexes whose RE2 program is larger than %d (by default) and rejects the route configuration that holds it: use fewer alternatives or repetitions", n, envoyMaxProgramSize)
					}
				}
			}
		}
	}
	sortDiagnostics(out)
	return out
}
