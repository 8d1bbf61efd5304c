package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-mesh/sluice/sources"
)

// lines joins its arguments into a YAML file, so test inputs can be read
// with their line numbers in mind (the first argument is line 1).
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// svc is a ServicePolicy for service "web" whose spec is the given lines
// (indented by the caller); the first of them is line 5.
func svc(spec ...string) string {
	return lines(append([]string{"apiVersion: sluice.dev/v1", "kind: ServicePolicy", "metadata: {name: web}", "spec:"}, spec...)...)
}

// svcNamed is svc for another service.
func svcNamed(name string, spec ...string) string {
	return lines(append([]string{"apiVersion: sluice.dev/v1", "kind: ServicePolicy", "metadata: {name: " + name + "}", "spec:"}, spec...)...)
}

// mesh is a MeshPolicy whose spec is the given lines; the first is line 5.
func mesh(spec ...string) string {
	return lines(append([]string{"apiVersion: sluice.dev/v1", "kind: MeshPolicy", "metadata: {name: mesh}", "spec:"}, spec...)...)
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// mustLoad loads named file contents (name, data, name, data, ...) and
// fails the test on any diagnostic.
func mustLoad(t testing.TB, nameData ...string) *Set {
	t.Helper()
	var files []File
	for i := 0; i+1 < len(nameData); i += 2 {
		files = append(files, File{Name: nameData[i], Data: []byte(nameData[i+1])})
	}
	set, diags := Load(files)
	if len(diags) > 0 || set == nil {
		t.Fatalf("Load() = %v, diagnostics:\n%s", set != nil, diagText(diags))
	}
	return set
}

// loadDir reads the policy files of dir and loads them, as policy/watch
// and sluice validate do: a file that cannot be read rejects the directory.
func loadDir(dir string) (*Set, []sources.Diagnostic) {
	files, diags := ReadDir(dir)
	if len(diags) > 0 {
		return nil, diags
	}
	return Load(files)
}

func diagText(ds []sources.Diagnostic) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteString("  " + string(d.Severity) + " " + d.String() + "\n")
	}
	return b.String()
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
