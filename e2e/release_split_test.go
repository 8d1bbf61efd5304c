package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// splitSpec is a ServicePolicy spec with subsets v1 and v2 by version and
// a split of w1/w2 percent between them.
func splitSpec(w1, w2 int) string {
	return fmt.Sprintf(`  subsets:
    v1: {version: v1}
    v2: {version: v2}
  split:
    - {subset: v1, weight: %d}
    - {subset: v2, weight: %d}`, w1, w2)
}

// canarySpec sends every request to v1, except those with the header
// x-canary: true, which go to v2.
const canarySpec = `  subsets:
    v1: {version: v1}
    v2: {version: v2}
  split:
    - {subset: v1, weight: 100}
  routes:
    - match:
        pathPrefix: /
        headers: {x-canary: "true"}
      subset: v2`

// TestReleaseSplitAndCanary: one sluice, one real Envoy and gRPC's xDS
// client; services with two v1 instances and one v2 instance each (HTTP
// backends for Envoy, gRPC backends for gRPC, all answering their name).
// A 90/10 split sends 10% ± 3 points to v2 through both; rewriting the
// policy file to 50/50 moves traffic to 50% ± 3 without restarting
// anything. A header canary route sends every request with x-canary: true
// (HTTP header, gRPC call metadata) to v2 and none without it.
func TestReleaseSplitAndCanary(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, "services:\n"+
		serviceEntry("split", versionedHTTP(t, "v1", "v1", "v2")...)+
		serviceEntry("split-grpc", versionedGRPC(t, "v1", "v1", "v2")...)+
		serviceEntry("canary", versionedHTTP(t, "v1", "v1", "v2")...)+
		serviceEntry("canary-grpc", versionedGRPC(t, "v1", "v1", "v2")...))
	policy := func(w1, w2 int) string {
		return policies(
			servicePolicy("split", splitSpec(w1, w2)),
			servicePolicy("split-grpc", splitSpec(w1, w2)),
			servicePolicy("canary", canarySpec),
			servicePolicy("canary-grpc", canarySpec))
	}
	pol := policyDir(t, policy(90, 10))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", pol)
	e := startEnvoy(t, s, "frontend", "frontend-1")
	splitClient := dialXDS(t, s.XDSAddr, "split-grpc")
	canaryClient := dialXDS(t, s.XDSAddr, "canary-grpc")
	e.waitRoutes(t, "routes[0]/no-retry")
	web := loadClient(t)
	viaEnvoy := func(host string, header map[string]string) func() string {
		return func() string { return httpResult(web, e.OutboundAddr, host, "/", header) }
	}
	eventually(t, 30*time.Second, "envoy and gRPC to reach every service", func() error {
		for _, do := range []func() string{viaEnvoy("split", nil), viaEnvoy("canary", nil),
			viaGRPC(splitClient, nil), viaGRPC(canaryClient, nil)} {
			if got := do(); got != "v1-0" && got != "v1-1" && got != "v2-0" {
				return fmt.Errorf("answer %q", got)
			}
		}
		return nil
	})
	s.noNACKs(t, 3)

	t.Run("split 90/10", func(t *testing.T) {
		n := sampleSize(0.10, 0.03, 2000) // 2000: ±3 points is 4.5σ
		got := fanOut(n, 16, viaEnvoy("split", nil))
		onlyKeys(t, "envoy", got, "v1-", "v2-")
		checkShare(t, "envoy split 90/10", got, "v2-", 0.10, 0.03)
		got = fanOut(n, 16, viaGRPC(splitClient, nil))
		onlyKeys(t, "grpc", got, "v1-", "v2-")
		checkShare(t, "grpc split 90/10", got, "v2-", 0.10, 0.03)
	})

	t.Run("header canary", func(t *testing.T) {
		const n = 300
		canary := map[string]string{"x-canary": "true"}
		for _, c := range []struct {
			name string
			with func() string
			sans func() string
		}{
			{"envoy", viaEnvoy("canary", canary), viaEnvoy("canary", nil)},
			{"grpc", viaGRPC(canaryClient, canary), viaGRPC(canaryClient, nil)},
		} {
			with := fanOut(n, 8, c.with)
			onlyKeys(t, c.name+" with x-canary", with, "v2-")
			sans := fanOut(n, 8, c.sans)
			onlyKeys(t, c.name+" without x-canary", sans, "v1-")
			t.Logf("%s: with x-canary %v; without %v", c.name, sorted(with), sorted(sans))
		}
	})

	t.Run("reweighted to 50/50 by editing the policy", func(t *testing.T) {
		writeFile(t, filepath.Join(pol, "policy.yaml"), policy(50, 50))
		start := time.Now()
		// At 10% a share of 35% in 400 requests is 16σ away; at 50% it
		// is 6σ below: this only tells the two configurations apart.
		for _, c := range []struct {
			name string
			do   func() string
		}{
			{"envoy", viaEnvoy("split", nil)},
			{"grpc", viaGRPC(splitClient, nil)},
		} {
			eventually(t, 30*time.Second, c.name+" to follow the new weights", func() error {
				if got := fanOut(400, 16, c.do); share(got, "v2-") < 0.35 {
					return fmt.Errorf("counts %v", sorted(got))
				}
				return nil
			})
			t.Logf("%s: on the new weights %v after the file was written", c.name, time.Since(start).Round(10*time.Millisecond))
			n := sampleSize(0.5, 0.03, 2000) // 4445: ±3 points is 4σ
			got := fanOut(n, 16, c.do)
			onlyKeys(t, c.name, got, "v1-", "v2-")
			checkShare(t, c.name+" split 50/50", got, "v2-", 0.5, 0.03)
		}
	})
}
