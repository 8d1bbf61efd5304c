package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// rejectedRegex passes sluice validate (Go's regexp takes it) but is far
// over the RE2 program size Envoy accepts by default (100; this one is
// 611), so a real Envoy NACKs the route configuration that carries it.
const rejectedRegex = `^(alpha|bravo|charlie|delta|echo|foxtrot|golf|hotel|india|juliet|kilo|lima|mike){3,9}$`

// TestNackCause: a policy change a real Envoy rejects is reported with its
// cause: the tracker names the rejected resource (the outbound route
// configuration, which holds the header match), /debug/snapshots explains
// it down to the policy file and line of the route, the NACK is counted
// by type and group, the log names the file, and `sluice status NODE`
// shows it all.
func TestNackCause(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	hs := startHTTPBackends(t, 1)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registry("user-service", instance(hs[0].addr, "")))
	dir := policyDir(t, servicePolicy("user-service", "  timeout: 3s"))
	s := startSluice(t, "--registry-file", reg, "--policy-dir", dir)
	e := startEnvoy(t, s, "frontend", "frontend-1")
	envoyWaitOnly(t, e, "user-service", "http-0")

	bad := servicePolicy("user-service", `  timeout: 3s
  routes:
    - match: {pathPrefix: /, headers: {x-team: {regex: "`+rejectedRegex+`"}}}
      timeout: 1s`)
	file := filepath.Join(dir, "policy.yaml")
	if out, err := exec.Command(sluiceBin, "validate", policyDir(t, bad)).CombinedOutput(); err != nil {
		t.Fatalf("sluice validate refuses the policy Envoy is to reject: %v\n%s", err, out)
	}
	writeFile(t, file, bad)

	// The tracker: the NACK of RDS names outbound_http.
	const rds = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	var group, nackErr string
	eventually(t, 30*time.Second, "Envoy's NACK of the route configuration", func() error {
		var st struct {
			Proxies []struct {
				Group string `json:"group"`
				Types map[string]struct {
					LastNack *struct {
						Error     string   `json:"error"`
						Resources []string `json:"resources"`
					} `json:"last_nack"`
				} `json:"types"`
			} `json:"proxies"`
		}
		s.adminJSON(t, "/debug/status?node=frontend-1", &st)
		if len(st.Proxies) != 1 {
			return fmt.Errorf("%d streams of frontend-1", len(st.Proxies))
		}
		n := st.Proxies[0].Types[rds].LastNack
		if n == nil {
			return fmt.Errorf("no NACK of RDS yet")
		}
		if fmt.Sprint(n.Resources) != "[outbound_http]" {
			return fmt.Errorf("NACK %q concerns %v, want [outbound_http]", n.Error, n.Resources)
		}
		group, nackErr = st.Proxies[0].Group, n.Error
		return nil
	})
	t.Logf("Envoy's NACK: %s", nackErr)
	if !strings.Contains(nackErr, "RE2 program size") {
		t.Errorf("Envoy's error %q does not say why", nackErr)
	}

	// The loop: the group's last NACK, explained down to the route's line.
	var snaps struct {
		Groups []struct {
			Key      string `json:"key"`
			LastNack *struct {
				Node    string `json:"node"`
				Type    string `json:"type"`
				Origins []struct {
					Name     string `json:"name"`
					Services []string
					Summary  string `json:"summary"`
				} `json:"origins"`
			} `json:"last_nack"`
		} `json:"groups"`
	}
	s.adminJSON(t, "/debug/snapshots", &snaps)
	var summary string
	for _, g := range snaps.Groups {
		if g.Key == group && g.LastNack != nil && len(g.LastNack.Origins) == 1 {
			summary = g.LastNack.Origins[0].Summary
			if g.LastNack.Node != "frontend-1" || g.LastNack.Type != "RouteConfiguration" || fmt.Sprint(g.LastNack.Origins[0].Services) != "[user-service]" {
				t.Errorf("group %s's last NACK: %+v", group, g.LastNack)
			}
		}
	}
	t.Logf("origin: %s", summary)
	route := regexp.MustCompile(`policy\.yaml:\d+ \(ServicePolicy user-service: routes\[0\] .* at \S*policy\.yaml:7 `)
	if !route.MatchString(summary) {
		t.Errorf("/debug/snapshots: group %s's last NACK origin %q does not name the route at policy.yaml:7", group, summary)
	}

	metric := regexp.MustCompile(`(?m)^sluice_xds_nacks_total\{group="` + regexp.QuoteMeta(group) + `",type="RouteConfiguration"\} ([1-9]\d*)$`)
	if m := s.adminText(t, "/metrics"); !metric.MatchString(m) {
		t.Errorf("no sluice_xds_nacks_total{type=RouteConfiguration,group=%s} >= 1 in /metrics", group)
	}
	logs := s.logs.String()
	if !regexp.MustCompile(`"msg":"where the rejected config came from".*policy\.yaml:7`).MatchString(logs) {
		t.Errorf("no log line explains the NACK with policy.yaml:7")
	}

	out, err := sluiceStatus(s, "frontend-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sluice status frontend-1:\n%s", out)
	for _, want := range []string{"resources: outbound_http", "The group's last NACK (RouteConfiguration", "policy.yaml:7"} {
		if !strings.Contains(out, want) {
			t.Errorf("sluice status frontend-1 lacks %q", want)
		}
	}
}
