package policy

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-mesh/sluice/sources"
)

func TestLoadDuplicates(t *testing.T) {
	tests := []struct {
		name  string
		files []File
		want  []wantDiag
	}{
		{
			name: "two MeshPolicies in two files",
			files: []File{
				{Name: "a.yaml", Data: []byte(mesh("  defaults: {timeout: 1s}"))},
				{Name: "b.yaml", Data: []byte(svcNamed("x", "  timeout: 1s") + "---\n" + mesh("  defaults: {timeout: 2s}"))},
			},
			want: []wantDiag{{"b.yaml:8", "kind", "a second MeshPolicy: the first is at a.yaml:1 (there is at most one)"}},
		},
		{
			name: "two ServicePolicies for one service in one file",
			files: []File{
				{Name: "a.yaml", Data: []byte(svc("  timeout: 1s") + "---\n" + svc("  timeout: 2s"))},
			},
			want: []wantDiag{{"a.yaml:9", "metadata.name", `a second ServicePolicy for service "web": the first is at a.yaml:3`}},
		},
		{
			name: "two ServicePolicies for one service in two files",
			files: []File{
				{Name: "a.yaml", Data: []byte(svc("  timeout: 1s"))},
				{Name: "b.yaml", Data: []byte(svcNamed("api", "  timeout: 1s"))},
				{Name: "c.yaml", Data: []byte(svc("  timeout: 2s"))},
			},
			want: []wantDiag{{"c.yaml:3", "metadata.name", `a second ServicePolicy for service "web": the first is at a.yaml:3`}},
		},
		{
			name: "duplicate found alongside other errors",
			files: []File{
				{Name: "a.yaml", Data: []byte(svc("  timeout: 1"))},
				{Name: "b.yaml", Data: []byte(svc("  timeout: 2s"))},
			},
			want: []wantDiag{
				{"a.yaml:5", "spec.timeout", "a unit is required"},
				{"b.yaml:3", "metadata.name", "a.yaml:3"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, diags := Load(tt.files)
			if set != nil {
				t.Errorf("Load() returned a set despite errors")
			}
			checkDiags(t, diags, tt.want, sources.SeverityError)
		})
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "b.yaml"), svcNamed("b", "  timeout: 2s"))
	writeFile(t, filepath.Join(dir, "a.yml"), svcNamed("a", "  timeout: 1s"))
	writeFile(t, filepath.Join(dir, "notes.txt"), "not: policy: at all")
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), "garbage: [")
	writeFile(t, filepath.Join(dir, "README.md"), "# policies")
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub.yaml", "nested.yaml"), "garbage: [")
	other := t.TempDir()
	writeFile(t, filepath.Join(other, "target.yaml"), svcNamed("c", "  timeout: 3s"))
	if err := os.Symlink(filepath.Join(other, "target.yaml"), filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}

	set, diags := loadDir(dir)
	if len(diags) != 0 {
		t.Fatalf("loadDir() diagnostics:\n%s", diagText(diags))
	}
	wantFiles := []string{filepath.Join(dir, "a.yml"), filepath.Join(dir, "b.yaml"), filepath.Join(dir, "c.yaml")}
	if diff := cmp.Diff(wantFiles, set.Files()); diff != "" {
		t.Errorf("Files() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a", "b", "c"}, set.Services()); diff != "" {
		t.Errorf("Services() mismatch (-want +got):\n%s", diff)
	}
	var docNames []string
	for _, d := range set.Documents() {
		docNames = append(docNames, d.Name)
	}
	if diff := cmp.Diff([]string{"a", "b", "c"}, docNames); diff != "" {
		t.Errorf("Documents() not in load order (-want +got):\n%s", diff)
	}
}

func TestLoadRejectsWholeDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "good.yaml"), svcNamed("good", "  timeout: 1s"))
	writeFile(t, filepath.Join(dir, "bad.yaml"), svcNamed("bad", "  retry: {attempts: many}"))
	set, diags := loadDir(dir)
	if set != nil {
		t.Fatalf("loadDir() returned a set (services %v) although bad.yaml is invalid", set.Services())
	}
	checkDiags(t, diags, []wantDiag{{filepath.Join(dir, "bad.yaml") + ":5", "spec.retry.attempts", `expected a whole number, got "many"`}}, sources.SeverityError)
}

func TestReadDirErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	set, diags := loadDir(missing)
	if set != nil || len(diags) != 1 || diags[0].Location != missing || diags[0].Severity != sources.SeverityError {
		t.Errorf("loadDir(missing) = %v, %v; want nil and one error located at the directory", set, diags)
	}

	dir := t.TempDir()
	dangling := filepath.Join(dir, "gone.yaml")
	if err := os.Symlink(filepath.Join(dir, "nowhere.yaml"), dangling); err != nil {
		t.Fatal(err)
	}
	set, diags = loadDir(dir)
	if set != nil || len(diags) != 1 || diags[0].Location != dangling {
		t.Errorf("loadDir(dangling symlink) = %v, %v; want nil and one error located at the link", set, diags)
	}
}

func TestLoadEmptyDir(t *testing.T) {
	set, diags := loadDir(t.TempDir())
	if set == nil || len(diags) != 0 || len(set.Services()) != 0 {
		t.Fatalf("loadDir(empty) = %v, %v; want an empty set", set, diags)
	}
	if diff := cmp.Diff(Defaults("web"), set.Resolve("web")); diff != "" {
		t.Errorf("empty set does not resolve to the defaults (-want +got):\n%s", diff)
	}
}

func TestWarnings(t *testing.T) {
	set := mustLoad(t,
		"mesh.yaml", mesh("  tracing:", "    collector: otel-collector"),
		"svc.yaml", svcNamed("ghost", "  timeout: 1s")+"---\n"+svc("  timeout: 1s"),
	)
	checkDiags(t, set.Warnings([]string{"web"}), []wantDiag{
		{"mesh.yaml:6", "spec.tracing.collector", `no service "otel-collector" in the catalog, and a host needs a port`},
		{"svc.yaml:3", "metadata.name", `no service "ghost" in the catalog`},
	}, sources.SeverityWarning)
	if w := set.Warnings([]string{"web", "ghost", "otel-collector"}); len(w) != 0 {
		t.Errorf("Warnings() with every service present = %v, want none", w)
	}

	set = mustLoad(t, "svc.yaml", svc("  tracing:", "    samplingPercent: 5"))
	checkDiags(t, set.Warnings([]string{"web"}), []wantDiag{
		{"svc.yaml:6", "spec.tracing.samplingPercent", "has no effect: no MeshPolicy sets spec.tracing"},
	}, sources.SeverityWarning)

	// Locality without a way to see failures beyond the registry's.
	set = mustLoad(t,
		"mesh.yaml", mesh("  defaults:", "    locality: {mode: failover}"),
		"svc.yaml", svc("  locality: {mode: failover}")+"---\n"+svcNamed("api", "  locality: {mode: failover}", "  outlierDetection: {}")+
			"---\n"+svcNamed("db", "  locality: {mode: failover}", "  healthCheck: {tcp: {}}")+
			"---\n"+svcNamed("cache", "  locality: {mode: failover}", "  outlierDetection: {maxEjectionPercent: 100}"))
	checkDiags(t, set.Warnings([]string{"web", "api", "db", "cache"}), []wantDiag{
		{"mesh.yaml:6", "spec.defaults.locality", "locality mode failover without outlierDetection or healthCheck"},
		{"svc.yaml:5", "spec.locality", "locality mode failover without outlierDetection or healthCheck"},
		// The default maxEjectionPercent (10) cannot empty a zone.
		{"svc.yaml:11", "spec.locality", "locality mode failover with outlierDetection.maxEjectionPercent 10: at most 10% of the instances are ejected"},
	}, sources.SeverityWarning)
	if !set.UsesLocality() || mustLoad(t, "svc.yaml", svc("  locality: {mode: 'off'}")).UsesLocality() {
		t.Error("UsesLocality: want true for a set with failover, false for one with mode off only")
	}

	var nilSet *Set
	if w := nilSet.Warnings(nil); w != nil {
		t.Errorf("nil Set Warnings() = %v", w)
	}
}

// TestSources: a set returns its files as read, in load order, and loading
// them again makes the same set; the caller's buffers and the returned
// ones are the set's own copies.
func TestSources(t *testing.T) {
	files := []File{
		{Name: "a.yaml", Data: []byte(svcNamed("a", "  timeout: 1s"))},
		{Name: "b.yaml", Data: []byte(svcNamed("b", "  timeout: 2s"))},
	}
	set, diags := Load(files)
	if set == nil {
		t.Fatalf("Load: %v", diags)
	}
	want := []File{{Name: "a.yaml", Data: []byte(svcNamed("a", "  timeout: 1s"))}, {Name: "b.yaml", Data: []byte(svcNamed("b", "  timeout: 2s"))}}
	files[0].Data[0] = '#'
	got := set.Sources()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Sources (-want +got):\n%s", diff)
	}
	got[1].Data[0] = '#'
	if diff := cmp.Diff(want, set.Sources()); diff != "" {
		t.Errorf("Sources after editing a returned file (-want +got):\n%s", diff)
	}
	again, diags := Load(set.Sources())
	if again == nil {
		t.Fatalf("Load(Sources()): %v", diags)
	}
	if diff := cmp.Diff(set.Explain("b"), again.Explain("b")); diff != "" {
		t.Errorf("the set loaded again explains b differently (-want +got):\n%s", diff)
	}
	if (*Set)(nil).Sources() != nil {
		t.Error("a nil set has sources")
	}
}
