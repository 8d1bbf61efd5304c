package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPolicyHotReload: policy files are followed as they change; an invalid
// change is refused as a whole with file:line diagnostics in the admin API
// and metrics while the last valid set keeps being served; deleting the file
// removes its policy.
func TestPolicyHotReload(t *testing.T) {
	requireE2E(t)
	bs := startGRPCBackends(t, 1)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registry("user-service", instance(bs[0].addr, "")))
	dir := t.TempDir()
	file := filepath.Join(dir, "user-service.yaml")
	policyWith := func(timeout string) string {
		return "apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: user-service}\nspec:\n  timeout: " + timeout + "\n"
	}
	writeFile(t, file, policyWith("3s"))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", dir)
	client := dialXDS(t, s.XDSAddr, "user-service")
	waitOnly(t, client, "backend-0")

	// What gRPC clients are served, as the admin API shows it.
	served := func() string { return strings.Join(strings.Fields(s.adminText(t, "/debug/config?group=grpc")), "") }
	eventually(t, 10*time.Second, "the 3s timeout to be served", func() error {
		if !strings.Contains(served(), `"maxStreamDuration":"3s"`) {
			return fmt.Errorf("not served yet")
		}
		return nil
	})

	// A valid change.
	writeFile(t, file, policyWith("4s"))
	eventually(t, 10*time.Second, "the 4s timeout to be served", func() error {
		if !strings.Contains(served(), `"maxStreamDuration":"4s"`) {
			return fmt.Errorf("not served yet")
		}
		return nil
	})

	// An invalid change: refused, reported, and the 4s policy stays.
	writeFile(t, file, policyWith("soon"))
	eventually(t, 10*time.Second, "the invalid policy to be reported", func() error {
		var st struct {
			Policy struct {
				Stale       bool
				Diagnostics []struct{ Location, Field, Message string }
			}
		}
		s.adminJSON(t, "/readyz", &st)
		if !st.Policy.Stale || len(st.Policy.Diagnostics) == 0 {
			return fmt.Errorf("policy status %+v", st.Policy)
		}
		d := st.Policy.Diagnostics[0]
		if d.Location != file+":5" || d.Field != "spec.timeout" {
			return fmt.Errorf("diagnostic %+v, want %s:5 spec.timeout", d, file)
		}
		return nil
	})
	if m := s.adminText(t, "/metrics"); !strings.Contains(m, `sluice_source_stale{source="policy"} 1`) {
		t.Error("metrics do not show the policy set stale")
	}
	if !strings.Contains(served(), `"maxStreamDuration":"4s"`) {
		t.Error("the last valid policy is no longer served after an invalid change")
	}
	waitOnly(t, client, "backend-0")

	// Deleting the file removes its policy: back to built-ins.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the deleted policy to be gone", func() error {
		if strings.Contains(served(), "maxStreamDuration") {
			return fmt.Errorf("still served")
		}
		return nil
	})
	if m := s.adminText(t, "/metrics"); !strings.Contains(m, `sluice_source_stale{source="policy"} 0`) {
		t.Error("metrics still show the policy set stale")
	}
}
