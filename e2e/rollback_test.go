package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRollbackOfAPolicyEnvoyRejects: a policy change that sluice validate
// accepts but a real Envoy rejects is rolled back: sluice serves the
// policy set the Envoy had accepted, says so in /readyz (the refused
// document by file:line) and its metrics, traffic never fails, and a
// second Envoy connecting meanwhile gets the accepted config and rejects
// nothing. Writing the policy file again ends the rollback.
func TestRollbackOfAPolicyEnvoyRejects(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	api := startHTTPBackend(t, "api", answerName("api"))
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registryOf("api", []string{api.addr}))
	dir := t.TempDir()
	file := filepath.Join(dir, "api.yaml")
	withHeader := func(match string) string {
		return servicePolicy("api", "  routes:\n    - match:\n        pathPrefix: /\n        headers: {x-user: "+match+"}\n      timeout: 2s")
	}
	writeFile(t, file, withHeader(`{regex: "^(alice|bob)$"}`))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", dir)
	e := startEnvoy(t, s, "frontend", "frontend-1")
	e.waitRoutes(t, "routes[0]/no-retry")
	s.noNACKs(t, 1)
	tr := startTraffic(t, e, "api")

	if out, err := runSluice(t, "validate", dir); err != nil {
		t.Fatalf("validate before the change: %v\n%s", err, out)
	}
	writeFile(t, file, withHeader(fmt.Sprintf("{regex: %q}", rejectedRegex)))
	if out, err := runSluice(t, "validate", dir); err != nil {
		t.Fatalf("sluice validate refuses the regex Envoy rejects; pick another input: %v\n%s", err, out)
	}
	var st struct {
		Rollback *struct {
			Node             string   `json:"node"`
			Type             string   `json:"type"`
			Error            string   `json:"error"`
			RefusedDocuments []string `json:"refused_documents"`
		} `json:"rollback"`
	}
	eventually(t, 30*time.Second, "the rejected policy change to be rolled back", func() error {
		s.adminJSON(t, "/readyz", &st)
		if st.Rollback == nil {
			return fmt.Errorf("no rollback yet")
		}
		return nil
	})
	rb := st.Rollback
	t.Logf("rolled back: %s rejected %s: %s; refused %v", rb.Node, rb.Type, rb.Error, rb.RefusedDocuments)
	if rb.Node != "frontend-1" || !strings.HasSuffix(rb.Type, "RouteConfiguration") || len(rb.RefusedDocuments) != 1 || !strings.HasPrefix(rb.RefusedDocuments[0], file+":1") {
		t.Errorf("rollback %+v, want frontend-1's route rejection and %s refused", rb, file)
	}
	if v := s.metric(t, "sluice_policy_rolled_back"); v != 1 {
		t.Errorf("sluice_policy_rolled_back %v, want 1", v)
	}
	out, err := runSluice(t, "status", "--admin-addr", s.AdminAddr)
	if err != nil || !strings.Contains(out, "POLICY ROLLED BACK") || !strings.Contains(out, "refused "+file+":1 (ServicePolicy api)") {
		t.Errorf("sluice status during the rollback (%v):\n%s", err, out)
	}
	t.Logf("sluice status:\n%s", out)

	// A proxy that connects now is sent what the first one accepted, and
	// rejects nothing.
	second := startEnvoy(t, s, "frontend", "frontend-2")
	second.waitRoutes(t, "routes[0]/no-retry")
	s.accepted(t, 1, "frontend-2")

	if c := statusCounts(t, second.OutboundAddr, http.MethodGet, "api", "/", map[string]string{"x-user": "alice"}, 10); c[http.StatusOK] != 10 {
		t.Errorf("through frontend-2: statuses %v, want all 200", c)
	}

	// The files change: the rollback is over.
	writeFile(t, file, withHeader(`{regex: "^(alice|carol)$"}`))
	eventually(t, 30*time.Second, "the rollback to end", func() error {
		st.Rollback = nil
		s.adminJSON(t, "/readyz", &st)
		if st.Rollback != nil {
			return fmt.Errorf("still rolled back")
		}
		return nil
	})
	if v := s.metric(t, "sluice_policy_rolled_back"); v != 0 {
		t.Errorf("sluice_policy_rolled_back %v after the files changed, want 0", v)
	}
	tr.check(t, "a rejected policy change and its rollback")
}

// runSluice runs a sluice command and returns its output.
func runSluice(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(sluiceBin, args...).CombinedOutput()
	return string(out), err
}
