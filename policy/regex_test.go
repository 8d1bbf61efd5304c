package policy

import (
	"testing"

	"github.com/sluice-mesh/sluice/sources"
)

// TestRegexWarnings: a route regex too large for Envoy's default RE2
// program size is a warning at its line, for ServicePolicy and MeshPolicy
// routes, headers and query parameters; small ones are not.
func TestRegexWarnings(t *testing.T) {
	const big = `"^(alpha|bravo|charlie|delta|echo|foxtrot|golf|hotel|india|juliet|kilo|lima|mike){3,9}$"`
	set := mustLoad(t,
		"svc.yaml", svc(
			"  routes:",
			"    - match:",
			"        pathPrefix: /a",
			"        headers:",
			"          x-ok: {regex: \"^(alice|bob)$\"}",
			"          x-user: {regex: "+big+"}",
			"    - match:",
			"        pathPrefix: /b",
			"        queryParams: {q: {regex: "+big+"}}"),
		"mesh.yaml", mesh(
			"  defaults:",
			"    routes:",
			"      - match:",
			"          pathPrefix: /c",
			"          headers: {x-team: {regex: "+big+"}}"),
	)
	const msg = "the regex compiles to 721 instructions; Envoy refuses regexes whose RE2 program is larger than 100"
	checkDiags(t, set.RegexWarnings(), []wantDiag{
		{"mesh.yaml:9", "spec.defaults.routes[0].match.headers.x-team", msg},
		{"svc.yaml:10", "spec.routes[0].match.headers.x-user", msg},
		{"svc.yaml:13", "spec.routes[1].match.queryParams.q", msg},
	}, sources.SeverityWarning)
	if n := programSize("^(alice|bob)$"); n <= 0 || n > envoyMaxProgramSize {
		t.Errorf("programSize of a small regex = %d", n)
	}
}
