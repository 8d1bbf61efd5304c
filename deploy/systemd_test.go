package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// unitLines reads a systemd unit: key=value lines with continuation
// backslashes joined, comments dropped.
func unitLines(t *testing.T, file string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[")) {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		if k, v, ok := strings.Cut(cur.String(), "="); ok {
			out[k] = append(out[k], v)
		}
		cur.Reset()
	}
	return out
}

// readEnvFile reads KEY=VALUE lines.
func readEnvFile(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env
}

// TestVMConfig: the VM config file's keys are flags of sluice serve, and
// sluice.service runs serve with it.
func TestVMConfig(t *testing.T) {
	flags := serveFlags(t)
	b, err := os.ReadFile("systemd/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for k := range cfg {
		if !flags[k] {
			t.Errorf("systemd/config.yaml: key %q is not a flag of sluice serve", k)
		}
	}
	exec := unitLines(t, "systemd/sluice.service")["ExecStart"]
	if len(exec) != 1 || exec[0] != "/usr/local/bin/sluice serve --config=/etc/sluice/config.yaml" {
		t.Errorf("sluice.service ExecStart = %q", exec)
	}
}

// TestVMSidecarBootstrap runs the sidecar unit's ExecStartPre (sluice
// bootstrap) as systemd would for envoy-sidecar@user-service on host vm-1,
// with the example environment file, and has Envoy validate the result
// when SLUICE_ENVOY is set.
func TestVMSidecarBootstrap(t *testing.T) {
	unit := unitLines(t, "systemd/envoy-sidecar@.service")
	env := readEnvFile(t, "systemd/envoy-sidecar.env.example")
	pre := unit["ExecStartPre"]
	if len(pre) != 1 {
		t.Fatalf("ExecStartPre = %q, want one sluice bootstrap", pre)
	}
	line := strings.NewReplacer("%i", "user-service", "%H", "vm-1").Replace(pre[0])
	line = regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(line, func(m string) string {
		v, ok := env[m[2:len(m)-1]]
		if !ok {
			t.Errorf("ExecStartPre uses %s, which envoy-sidecar.env.example does not set", m)
		}
		return v
	})
	args := strings.Fields(line)
	if len(args) < 2 || args[0] != "/usr/local/bin/sluice" || args[1] != "bootstrap" {
		t.Fatalf("ExecStartPre = %q", line)
	}
	out := filepath.Join(t.TempDir(), "bootstrap.yaml")
	want := "/run/envoy-user-service/bootstrap.yaml"
	if args[len(args)-1] != want || !strings.Contains(strings.Join(unit["ExecStart"], " "), "-c /run/envoy-%i/bootstrap.yaml") {
		t.Errorf("the bootstrap is written to %s, but Envoy reads %q", args[len(args)-1], unit["ExecStart"])
	}
	args[len(args)-1] = out
	if msg, err := exec.Command(sluiceBinary(t), args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	checkBootstrapNode(t, "envoy-sidecar@user-service", out, "user-service-vm-1", "user-service")
	if envoyBin := os.Getenv("SLUICE_ENVOY"); envoyBin != "" {
		if _, err := os.Stat(envoyBin); err == nil {
			if msg, err := exec.Command(envoyBin, "--mode", "validate", "-c", out, "--disable-hot-restart", "--log-level", "error").CombinedOutput(); err != nil {
				t.Errorf("envoy --mode validate: %v\n%s", err, msg)
			}
		}
	}
}

// TestSystemdUnitsVerify runs systemd-analyze verify on both units (with
// the binaries they start pointed at real files), when the tool is there.
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; unit syntax not verified")
	}
	envoyBin := os.Getenv("SLUICE_ENVOY")
	if _, err := os.Stat(envoyBin); envoyBin == "" || err != nil {
		envoyBin = "/bin/true"
	}
	dir := t.TempDir()
	for src, dst := range map[string]string{"sluice.service": "sluice.service", "envoy-sidecar@.service": "envoy-sidecar@user-service.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", src))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer("/usr/local/bin/sluice", sluiceBinary(t), "/usr/local/bin/envoy", envoyBin).Replace(string(b))
		if err := os.WriteFile(filepath.Join(dir, dst), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", "--man=no", filepath.Join(dir, dst)).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) != 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", src, err, out)
		}
	}
}
