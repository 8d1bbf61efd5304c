package policy

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-mesh/sluice/sources"
)

func TestDependencies(t *testing.T) {
	meshDeps := mesh("  defaults:", "    dependencies: [billing, auth]")
	tests := []struct {
		name    string
		files   []string // name, data, name, data, ...
		service string
		want    Dependencies
	}{
		{"absent: every service", []string{"p.yaml", svc("  timeout: 1s")}, "web", Dependencies{All: true}},
		{"no policy at all", nil, "web", Dependencies{All: true}},
		{"names, sorted", []string{"p.yaml", svc("  dependencies: [billing, auth, a.b_c-1]")}, "web",
			Dependencies{Services: []string{"a.b_c-1", "auth", "billing"}, Origin: "p.yaml:1"}},
		{"block list", []string{"p.yaml", svc("  dependencies:", "    - billing", "    - auth")}, "web",
			Dependencies{Services: []string{"auth", "billing"}, Origin: "p.yaml:1"}},
		{"a name that reads as a number", []string{"p.yaml", svc("  dependencies: [123]")}, "web",
			Dependencies{Services: []string{"123"}, Origin: "p.yaml:1"}},
		{"star", []string{"p.yaml", svc(`  dependencies: ["*"]`)}, "web", Dependencies{All: true, Origin: "p.yaml:1"}},
		{"star in a block list", []string{"p.yaml", svc("  dependencies:", "    - '*'")}, "web", Dependencies{All: true, Origin: "p.yaml:1"}},
		{"empty list: none", []string{"p.yaml", svc("  dependencies: []")}, "web", Dependencies{Origin: "p.yaml:1"}},
		{"origin of a later document", []string{"p.yaml", svcNamed("api", "  timeout: 1s") + "---\n" + svc("  dependencies: [api]")}, "web",
			Dependencies{Services: []string{"api"}, Origin: "p.yaml:7"}},
		{"mesh default, service without policy", []string{"mesh.yaml", meshDeps}, "web",
			Dependencies{Services: []string{"auth", "billing"}, Origin: "mesh.yaml:1"}},
		{"mesh default, policy without dependencies", []string{"mesh.yaml", meshDeps, "web.yaml", svc("  timeout: 1s")}, "web",
			Dependencies{Services: []string{"auth", "billing"}, Origin: "mesh.yaml:1"}},
		{"service overrides the mesh default", []string{"mesh.yaml", meshDeps, "web.yaml", svc("  dependencies: [search]")}, "web",
			Dependencies{Services: []string{"search"}, Origin: "web.yaml:1"}},
		{"service star overrides the mesh default", []string{"mesh.yaml", meshDeps, "web.yaml", svc(`  dependencies: ["*"]`)}, "web",
			Dependencies{All: true, Origin: "web.yaml:1"}},
		{"service [] overrides the mesh default", []string{"mesh.yaml", meshDeps, "web.yaml", svc("  dependencies: []")}, "web",
			Dependencies{Origin: "web.yaml:1"}},
		{"another service keeps the mesh default", []string{"mesh.yaml", meshDeps, "web.yaml", svc("  dependencies: []")}, "api",
			Dependencies{Services: []string{"auth", "billing"}, Origin: "mesh.yaml:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := mustLoad(t, tt.files...)
			if diff := cmp.Diff(tt.want, set.Dependencies(tt.service)); diff != "" {
				t.Errorf("Dependencies(%q) mismatch (-want +got):\n%s", tt.service, diff)
			}
		})
	}

	var nilSet *Set
	if diff := cmp.Diff(Dependencies{All: true}, nilSet.Dependencies("web")); diff != "" {
		t.Errorf("nil Set Dependencies() mismatch (-want +got):\n%s", diff)
	}
}

func TestDependenciesErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []wantDiag
	}{
		{"invalid name", svc("  dependencies: [auth, Billing]"), []wantDiag{{"p.yaml:5", "spec.dependencies[1]", `"Billing" is not a valid service name (lowercase letters`}}},
		{"invalid name in a block list", svc("  dependencies:", "    - auth", "    - billing", "    - bad name!"), []wantDiag{{"p.yaml:8", "spec.dependencies[2]", `"bad name!" is not a valid service name`}}},
		{"empty name", svc(`  dependencies: [""]`), []wantDiag{{"p.yaml:5", "spec.dependencies[0]", `"" is not a valid service name`}}},
		{"a pattern is not a name", svc(`  dependencies: ["auth-*"]`), []wantDiag{{"p.yaml:5", "spec.dependencies[0]", `"auth-*" is not a valid service name (lowercase letters, digits, '-', '.', '_'; starts and ends alphanumeric; at most 253 characters), nor "*" for every service`}}},
		{"star with names", svc(`  dependencies: ["*", auth]`), []wantDiag{{"p.yaml:5", "spec.dependencies[0]", `"*" (every service) cannot be combined with service names`}}},
		{"names with star", svc("  dependencies:", "    - auth", "    - '*'"), []wantDiag{{"p.yaml:7", "spec.dependencies[1]", `"*" (every service) cannot be combined with service names`}}},
		{"duplicate", svc("  dependencies:", "    - auth", "    - billing", "    - auth"), []wantDiag{{"p.yaml:8", "spec.dependencies[2]", `"auth" is listed twice (first at spec.dependencies[0])`}}},
		{"duplicate star", svc(`  dependencies: ["*", "*"]`), []wantDiag{{"p.yaml:5", "spec.dependencies[1]", `"*" is listed twice (first at spec.dependencies[0])`}}},
		{"several problems", svc("  dependencies:", "    - Auth", "    - auth", "    - auth", "    - '*'"), []wantDiag{
			{"p.yaml:6", "spec.dependencies[0]", `"Auth" is not a valid service name`},
			{"p.yaml:8", "spec.dependencies[2]", `"auth" is listed twice (first at spec.dependencies[1])`},
			{"p.yaml:9", "spec.dependencies[3]", `"*" (every service) cannot be combined with service names`},
		}},
		{"not a list", svc("  dependencies: auth"), []wantDiag{{"p.yaml:5", "spec.dependencies", `expected a list, got "auth"`}}},
		{"star not in a list", svc(`  dependencies: "*"`), []wantDiag{{"p.yaml:5", "spec.dependencies", `expected a list, got "*"`}}},
		{"a mapping", svc("  dependencies: {auth: true}"), []wantDiag{{"p.yaml:5", "spec.dependencies", "expected a list, got a mapping"}}},
		{"null", svc("  dependencies:"), []wantDiag{{"p.yaml:5", "spec.dependencies", "expected a list, got nothing (write [] for no dependencies, or leave the field out for every service)"}}},
		{"entry a mapping", svc("  dependencies: [{name: auth}]"), []wantDiag{{"p.yaml:5", "spec.dependencies[0]", `expected a service name or "*", got a mapping`}}},
		{"entry null", svc("  dependencies:", "    - auth", "    -"), []wantDiag{{"p.yaml:7", "spec.dependencies[1]", `expected a service name or "*", got nothing`}}},
		{"unquoted star", svc("  dependencies: [*]"), []wantDiag{{"p.yaml:5", "", "invalid YAML"}}},
		{"mesh defaults path", mesh("  defaults:", "    dependencies: [auth, Auth]"), []wantDiag{{"p.yaml:6", "spec.defaults.dependencies[1]", `"Auth" is not a valid service name`}}},
		{"mesh outside defaults", mesh("  dependencies: [auth]"), []wantDiag{{"p.yaml:5", "spec.dependencies", "a MeshPolicy sets dependencies under spec.defaults"}}},
		{"route dependencies", svc("  routes:", "    - match: {pathPrefix: /}", "      dependencies: [auth]"), []wantDiag{{"p.yaml:7", "spec.routes[0].dependencies", "dependencies applies to the whole service, not to one route"}}},
		{"given twice", svc("  dependencies: [auth]", "  dependencies: [billing]"), []wantDiag{{"p.yaml:6", "spec.dependencies", "field given twice (first at line 5)"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, diags := Parse("p.yaml", []byte(tt.in))
			if docs != nil {
				t.Errorf("Parse() returned %d documents with errors; want nil", len(docs))
			}
			checkDiags(t, diags, tt.want, sources.SeverityError)
		})
	}
}

func TestDependenciesIncludes(t *testing.T) {
	tests := []struct {
		deps Dependencies
		name string
		want bool
	}{
		{Dependencies{All: true}, "anything", true},
		{Dependencies{All: true}, "", true},
		{Dependencies{}, "auth", false},
		{Dependencies{Services: []string{"auth", "billing", "search"}}, "auth", true},
		{Dependencies{Services: []string{"auth", "billing", "search"}}, "billing", true},
		{Dependencies{Services: []string{"auth", "billing", "search"}}, "search", true},
		{Dependencies{Services: []string{"auth", "billing", "search"}}, "bill", false},
		{Dependencies{Services: []string{"auth", "billing", "search"}}, "zebra", false},
		{Dependencies{Services: []string{"auth", "billing", "search"}}, "*", false},
	}
	for _, tt := range tests {
		if got := tt.deps.Includes(tt.name); got != tt.want {
			t.Errorf("%+v.Includes(%q) = %v, want %v", tt.deps, tt.name, got, tt.want)
		}
	}
}

func TestDependencyWarnings(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh("  defaults:", "    dependencies: [zeta, auth]"),
		"web.yaml", svc("  dependencies:", "    - web", "    - ghost", "    - auth"),
		"all.yaml", svcNamed("api", `  dependencies: ["*"]`)+"---\n"+svcNamed("leaf", "  dependencies: []"),
	)
	catalog := []string{"web", "auth", "api", "leaf"}
	want := []wantDiag{
		{"mesh.yaml:6", "spec.defaults.dependencies[0]", `service "zeta" is not in the catalog`},
		{"web.yaml:7", "spec.dependencies[1]", `service "ghost" is not in the catalog`},
	}
	checkDiags(t, set.DependencyWarnings(catalog), want, sources.SeverityWarning)
	checkDiags(t, set.Warnings(catalog), want, sources.SeverityWarning)
	if w := set.Warnings(append(catalog, "zeta", "ghost")); len(w) != 0 {
		t.Errorf("Warnings() with every dependency present = %v, want none", w)
	}

	// Warnings keeps its other checks beside the dependency ones.
	checkDiags(t, set.Warnings([]string{"web", "auth", "leaf"}), []wantDiag{
		{"all.yaml:3", "metadata.name", `no service "api" in the catalog`},
		{"mesh.yaml:6", "spec.defaults.dependencies[0]", `service "zeta" is not in the catalog`},
		{"web.yaml:7", "spec.dependencies[1]", `service "ghost" is not in the catalog`},
	}, sources.SeverityWarning)

	var nilSet *Set
	if w := nilSet.DependencyWarnings(nil); w != nil {
		t.Errorf("nil Set DependencyWarnings() = %v", w)
	}
}

// TestDependenciesNotResolved: dependencies describe the caller side only,
// so they do not change a service's resolved policy or its hash.
func TestDependenciesNotResolved(t *testing.T) {
	plain := mustLoad(t, "p.yaml", svc("  timeout: 1s"))
	scoped := mustLoad(t, "p.yaml", svc("  timeout: 1s", "  dependencies: [auth]"))
	if a, b := plain.Resolve("web"), scoped.Resolve("web"); a.Hash() != b.Hash() {
		t.Errorf("dependencies changed the resolved policy's hash:\n%+v\n%+v", a, b)
	}
}

func TestDependenciesDoNotAllocate(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh("  defaults:", "    dependencies: [auth]"),
		"web.yaml", svc("  dependencies: [auth, billing]"),
	)
	for _, service := range []string{"web", "other"} {
		if n := testing.AllocsPerRun(100, func() { _ = set.Dependencies(service) }); n != 0 {
			t.Errorf("Dependencies(%q) allocates %v times per call, want 0", service, n)
		}
	}
}
