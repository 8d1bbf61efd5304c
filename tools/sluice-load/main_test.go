package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources/file"
)

func execute(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCommand(&out, &errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestPopulate: the mesh and the dependencies populate writes are a registry
// file and policy files sluice accepts.
func TestPopulate(t *testing.T) {
	dir := t.TempDir()
	reg, pols := filepath.Join(dir, "mesh.yaml"), filepath.Join(dir, "policies")
	if _, err := execute(t, "populate", "--services", "5", "--endpoints", "3", "--groups", "5", "--dependencies", "2",
		"--registry-file", reg, "--policy-dir", pols); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(reg)
	if err != nil {
		t.Fatal(err)
	}
	st, diags := file.Parse(reg, data)
	if len(diags) > 0 || len(st.Services) != 5 || len(st.Services[0].Instances) != 3 {
		t.Fatalf("registry file: %d services, diagnostics %v", len(st.Services), diags)
	}
	files, diags := policy.ReadDir(pols)
	if len(diags) > 0 || len(files) != 5 {
		t.Fatalf("policy files: %d, diagnostics %v", len(files), diags)
	}
	set, diags := policy.Load(files)
	if len(diags) > 0 {
		t.Fatalf("policy files do not load: %v", diags)
	}
	if got := set.Dependencies("svc-0001").Services; strings.Join(got, ",") != "svc-0000,svc-0004" {
		t.Errorf("svc-0001 depends on %v, want svc-0000 and svc-0004", got)
	}
}

// TestFlagErrors: bad flags are refused before anything runs.
func TestFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--services", "0"},
		{"--endpoints", "255"},
		{"--groups", "2", "--dependencies", "-1"},
		{"--change", "ftp:x"},
		{"populate"},
		{"populate", "--registry-file", "a", "--etcd", "b"},
		{"populate", "--policy-dir", "d"},
		{"baseline", "--services", "0"},
		{"report"},
	} {
		if _, err := execute(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// TestReport: a result file becomes a row of the table.
func TestReport(t *testing.T) {
	res := filepath.Join(t.TempDir(), "r.json")
	if err := os.WriteFile(res, []byte(`{"target":"x","mode":"delta","proxies":20,"groups":20,"dependencies":2,
		"initial_sync":{"p50_ms":10,"p99_ms":20,"max_ms":30},"change_scope":{"affected":2,"not_affected":18},
		"convergence":{"p50_ms":1,"p99_ms":2,"max_ms":3},"errors":["e"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := execute(t, "report", "sluice="+res)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := "| sluice | delta | 20 | 20 | 2 | 10 / 20 / 30 ms | 2 of 20 | 1 / 2 / 3 ms | – | 1 |"
	if len(lines) != 3 || lines[2] != want {
		t.Errorf("report:\n%s\nwant the row\n%s", out, want)
	}
}
