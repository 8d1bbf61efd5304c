package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sluiceStatus runs `sluice status args...` against s's admin API.
func sluiceStatus(s *sluice, args ...string) (string, error) {
	cmd := exec.Command(sluiceBin, append([]string{"status", "--admin-addr", s.AdminAddr}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("sluice status %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// TestStatus: `sluice status` lists a real Envoy and gRPC's own xDS client
// as SYNCED for every type (both ask for all four), connected to this
// replica (its hostname); `sluice status NODE` shows the Envoy's detail.
func TestStatus(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	gs := startGRPCBackends(t, 1)
	hs := startHTTPBackends(t, 1)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registry("user-service", instance(gs[0].addr, ""))+serviceEntry("web-service", instance(hs[0].addr, "")))
	s := startSluice(t, "--registry-file", reg)
	e := startEnvoy(t, s, "frontend", "frontend-1")
	envoyWaitOnly(t, e, "web-service", "http-0")
	waitOnly(t, dialXDS(t, s.XDSAddr, "user-service"), "backend-0")

	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	synced := `\s+SYNCED\s+SYNCED\s+SYNCED\s+SYNCED\s+` + regexp.QuoteMeta(host) + `$`
	rows := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^frontend-1\s+envoy/sidecar/frontend/out=:\d+\s+envoy\s+sotw` + synced),
		regexp.MustCompile(`(?m)^grpc-e2e-client\s+grpc\s+grpc\s+sotw` + synced),
	}
	var out string
	eventually(t, 30*time.Second, "sluice status to list both clients in sync", func() error {
		out, err = sluiceStatus(s)
		if err != nil {
			return err
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "NODE ") {
			return fmt.Errorf("want a header and two rows, got\n%s", out)
		}
		for _, row := range rows {
			if !row.MatchString(out) {
				return fmt.Errorf("no row matches %s in\n%s", row, out)
			}
		}
		return nil
	})
	t.Logf("sluice status:\n%s", out)

	detail, err := sluiceStatus(s, "frontend-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sluice status frontend-1:\n%s", detail)
	for _, want := range []string{
		"Node:          frontend-1\n", "Group:         envoy/sidecar/frontend/out=:", "Kind:          envoy (user agent envoy)\n",
		"Protocol:      sotw\n", "Replica:       " + host + "\n", "Dependencies:  every service (the built-in default)\n",
	} {
		if !strings.Contains(detail, want) {
			t.Errorf("sluice status frontend-1 lacks %q", want)
		}
	}
	for _, typ := range []string{"CDS", "EDS", "LDS", "RDS"} {
		if !regexp.MustCompile(`(?m)^` + typ + `\s+SYNCED\s+[0-9a-f]{16} \(\S+ ago\)\s+[0-9a-f]{16} \(\S+ ago\)\s+\d+\s+\d+$`).MatchString(detail) {
			t.Errorf("sluice status frontend-1: no SYNCED %s row with its versions", typ)
		}
	}
	if strings.Contains(detail, "NACK") || strings.Contains(detail, "not acknowledged") {
		t.Errorf("sluice status frontend-1 reports NACKs or unacknowledged changes of a client in sync")
	}
	if _, err := sluiceStatus(s, "nobody"); err == nil || !strings.Contains(err.Error(), `no connected xDS client has node id "nobody"`) {
		t.Errorf("sluice status nobody: %v, want an error naming the node", err)
	}
}
