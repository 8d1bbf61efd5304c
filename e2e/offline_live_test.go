package e2e

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLiveDiffAndExplain: sluice diff and explain --admin-addr against a
// real sluice serve with a real Envoy and a real gRPC xDS client
// connected. diff compares a proposed policy directory for the groups
// actually connected (the Envoy's and the gRPC clients', not the guessed
// set offline diff compares) and exits 1 on changes, 0 without; explain
// shows the served policy's file:line.
func TestLiveDiffAndExplain(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	bs := startGRPCBackends(t, 2)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registry("echo", instance(bs[0].addr, ""), instance(bs[1].addr, "")))
	current := policyDir(t, servicePolicy("echo", "  timeout: 2s"))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", current)

	startEnvoy(t, s, "frontend", "frontend-1")
	client := dialXDS(t, s.XDSAddr, "echo")
	eventually(t, 30*time.Second, "a call through the gRPC xDS client", func() error {
		_, err := callOnce(client)
		return err
	})
	s.noNACKs(t, 2)
	var proxies []struct {
		NodeID string `json:"node_id"`
		Group  string `json:"group"`
	}
	s.adminJSON(t, "/debug/proxies", &proxies)
	var groups []string
	for _, p := range proxies {
		groups = append(groups, p.Group)
	}
	slices.Sort(groups)
	if len(groups) != 2 || !strings.HasPrefix(groups[0], "envoy/sidecar/frontend") || groups[1] != "grpc" {
		t.Fatalf("connected groups %v, want frontend's Envoy's and grpc", groups)
	}

	proposed := policyDir(t, servicePolicy("echo", "  timeout: 3s"))
	out, errOut, code := runSluiceStatus(t, "diff", "--admin-addr", s.AdminAddr, "--proposed-policy-dir", proposed)
	t.Logf("sluice diff --admin-addr:\n%s%s", out, errOut)
	if code != 1 {
		t.Fatalf("diff with a timeout change exited %d, want 1\n%s", code, errOut)
	}
	sections := groupSections(out)
	var listed []string
	for g := range sections {
		listed = append(listed, g)
	}
	slices.Sort(listed)
	if !slices.Equal(listed, groups) {
		t.Errorf("diff lists groups %v, want exactly the connected %v", listed, groups)
	}
	for _, g := range groups {
		if !strings.Contains(sections[g], `"2s" → "3s"`) {
			t.Errorf("group %s's changes lack the timeout 2s → 3s:\n%s", g, sections[g])
		}
	}
	if !strings.HasSuffix(out, "2 of 2 groups change\n") {
		t.Errorf("diff's last line: %q, want 2 of 2 groups change", out)
	}

	same := policyDir(t, servicePolicy("echo", "  timeout: 2s"))
	out, errOut, code = runSluiceStatus(t, "diff", "--admin-addr", s.AdminAddr, "--proposed-policy-dir", same)
	if code != 0 || out != "no changes in 2 groups\n" {
		t.Errorf("diff with an identical proposal exited %d:\n%s%s\nwant 0 and no changes in 2 groups", code, out, errOut)
	}

	out, errOut, code = runSluiceStatus(t, "explain", "echo", "--admin-addr", s.AdminAddr)
	t.Logf("sluice explain --admin-addr:\n%s", out)
	source := "ServicePolicy " + filepath.Join(current, "policy.yaml") + ":5"
	if code != 0 || !strings.Contains(out, source) {
		t.Errorf("explain exited %d, printed\n%s%s\nwant the timeout's source %s", code, out, errOut, source)
	}

	_, errOut, code = runSluiceStatus(t, "diff", "--admin-addr", "127.0.0.1:1", "--proposed-policy-dir", same)
	if code != 2 || !strings.Contains(errOut, "cannot reach the admin API at 127.0.0.1:1") {
		t.Errorf("diff against no sluice exited %d, stderr %q; want 2 naming the address", code, errOut)
	}
}

// runSluiceStatus runs a sluice command and returns its stdout, its
// stderr and its exit status.
func runSluiceStatus(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(sluiceBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errOut.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("running sluice %v: %v", args, err)
	}
	return out.String(), errOut.String(), 0
}

// groupSections splits sluice diff's output into each group's lines, by
// group key.
func groupSections(out string) map[string]string {
	sections := map[string]string{}
	key := ""
	for _, line := range strings.SplitAfter(out, "\n") {
		if k, ok := strings.CutPrefix(line, "group "); ok {
			key = strings.TrimSuffix(k, ":\n")
			sections[key] = ""
			continue
		}
		if strings.HasPrefix(line, "  ") && key != "" {
			sections[key] += line
		} else {
			key = ""
		}
	}
	return sections
}
