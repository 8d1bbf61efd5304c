package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/translator"
)

func run(t *testing.T, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errOut bytes.Buffer
	cmd := newRootCommand(&out, &errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestServeRejectsBadInput(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("registry-file: x.yaml\nxds-adr: 1.2.3.4:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown flag", nil, []string{"serve", "--bogus"}, "unknown flag: --bogus"},
		{"bad etcd format", nil, []string{"serve", "--etcd-format", "zk"}, "--etcd-format: unknown format"},
		{"bad etcd endpoint", nil, []string{"serve", "--etcd-endpoints", "ftp://x"}, "--etcd-endpoints"},
		{"data dir without dev", nil, []string{"serve", "--registry-file", "x", "--data-dir", "/tmp/x"}, "--data-dir"},
		{"bad xds addr", nil, []string{"serve", "--registry-file", "x", "--xds-addr", "nohost"}, `--xds-addr: must be host:port, got "nohost"`},
		{"bad admin addr", nil, []string{"serve", "--registry-file", "x", "--admin-addr", "::"}, "--admin-addr"},
		{"bad duration", nil, []string{"serve", "--registry-file", "x", "--debounce", "soon"}, `invalid argument "soon" for "--debounce"`},
		{"max delay below debounce", nil, []string{"serve", "--registry-file", "x", "--debounce", "2s", "--max-delay", "1s"}, "--max-delay: must be at least --debounce"},
		{"bad outbound port", nil, []string{"serve", "--registry-file", "x", "--outbound-port", "70000"}, "--outbound-port"},
		{"no proxy groups", nil, []string{"serve", "--registry-file", "x", "--max-proxy-groups", "0"}, "--max-proxy-groups: must be at least 1, got 0"},
		{"bad group rate", nil, []string{"serve", "--registry-file", "x", "--proxy-group-rate", "-1"}, "--proxy-group-rate: must be a positive number"},
		{"bad log level from env", map[string]string{"SLUICE_LOG_LEVEL": "loud"}, []string{"serve", "--registry-file", "x"}, `--log-level: must be one of debug, info, warn, error, got "loud"`},
		{"bad log format", nil, []string{"serve", "--registry-file", "x", "--log-format", "xml"}, `--log-format: must be one of text, json, got "xml"`},
		{"tls key without cert", nil, []string{"serve", "--registry-file", "x", "--xds-tls-key", "k.pem"}, "must be given together"},
		{"unknown config key", nil, []string{"serve", "--config", cfg}, `unknown key "xds-adr"`},
		{"missing config file", nil, []string{"serve", "--config", filepath.Join(t.TempDir(), "nope.yaml")}, "reading config file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, tc.env, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// serveOptionsOf parses `sluice serve args...` (with the environment as it
// is) into the options serve would run with, without running it.
func serveOptionsOf(t *testing.T, args ...string) serveOptions {
	t.Helper()
	a := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	root := a.rootCommand()
	serve, _, err := root.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	var got serveOptions
	serve.RunE = func(*cobra.Command, []string) error {
		got, err = a.serveOptions()
		return err
	}
	root.SetArgs(append([]string{"serve"}, args...))
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestConfigPrecedence: flags override SLUICE_* env vars, which override the
// config file.
func TestConfigPrecedence(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("registry-file: from-file.yaml\nxds-addr: 127.0.0.1:1\nadmin-addr: 127.0.0.1:2\ndebounce: 50ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SLUICE_XDS_ADDR", "127.0.0.1:3")
	t.Setenv("SLUICE_ADMIN_ADDR", "127.0.0.1:5")
	got := serveOptionsOf(t, "--config", cfg, "--admin-addr", "127.0.0.1:4")
	if got.registries.registryFile != "from-file.yaml" {
		t.Errorf("registry file %q, want the config file's", got.registries.registryFile)
	}
	if got.xdsAddr != "127.0.0.1:3" {
		t.Errorf("xds addr %q, want the env var's over the file's", got.xdsAddr)
	}
	if got.adminAddr != "127.0.0.1:4" {
		t.Errorf("admin addr %q, want the flag's over env and file", got.adminAddr)
	}
	if got.holdOff.String() != "50ms" {
		t.Errorf("debounce %s, want 50ms from the file", got.holdOff)
	}
}

// TestBootstrapIsValid: the bootstrap passes Envoy's proto validation and
// carries the node identity and ADS settings sluice relies on.
func TestBootstrapIsValid(t *testing.T) {
	for _, args := range [][]string{
		{"--service", "web", "--node-id", "web-1"},
		{"--service", "web", "--node-id", "web-1", "--delta", "--xds-addr", "sluice.mesh.svc:18000", "--role", "gateway",
			"--outbound-address", "0.0.0.0", "--outbound-port", "8080", "--inbound-port", "9090", "--format", "json"},
		{"--service", "web", "--node-id", "web-1", "--xds-addr", "sluice.mesh.svc:18000",
			"--xds-ca", "/etc/sluice/ca.crt", "--xds-cert", "/etc/envoy/tls.crt", "--xds-key", "/etc/envoy/tls.key"},
		{"--service", "web", "--node-id", "web-1", "--region", "eu-west-1", "--zone", "eu-west-1a"},
	} {
		out, _, err := run(t, nil, append([]string{"bootstrap"}, args...)...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		js := []byte(out)
		if !strings.Contains(strings.Join(args, " "), "json") {
			if js, err = yaml.YAMLToJSON(js); err != nil {
				t.Fatal(err)
			}
		}
		b := &bootstrapv3.Bootstrap{}
		if err := protojson.Unmarshal(js, b); err != nil {
			t.Fatalf("%v: decoding: %v\n%s", args, err, out)
		}
		if err := b.ValidateAll(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if b.GetNode().GetId() != "web-1" || b.GetNode().GetCluster() != "web" {
			t.Errorf("%v: node %v", args, b.GetNode())
		}
		if b.GetDynamicResources().GetAdsConfig() == nil || b.GetDynamicResources().GetCdsConfig().GetAds() == nil {
			t.Errorf("%v: not ADS: %v", args, b.GetDynamicResources())
		}
		// What sluice makes of the node is what the flags said.
		p, err := translator.ProxyFromNode(b.GetNode())
		if err != nil {
			t.Fatalf("%v: sluice refuses the node: %v", args, err)
		}
		if want := flagValue(args, "--zone"); p.Locality.Zone != want || p.Locality.Region != flagValue(args, "--region") {
			t.Errorf("%v: locality %+v", args, p.Locality)
		}
	}
	for _, bad := range [][]string{
		{},
		{"--service", "web", "--role", "king"},
		{"--service", "web", "--outbound-port", "70000"},
		{"--service", "web", "--xds-addr", "nope"},
		{"--service", "web", "--format", "toml"},
		{"--service", "web", "--xds-cert", "c.pem", "--xds-key", "k.pem"},
		{"--service", "web", "--xds-ca", "ca.pem", "--xds-cert", "c.pem"},
	} {
		if _, _, err := run(t, nil, append([]string{"bootstrap", "--node-id", "n"}, bad...)...); err == nil {
			t.Errorf("bootstrap %v: no error", bad)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--zone", "a\tb"}, `--zone: must not hold control characters, got "a\tb"`},
		{[]string{"--region", "eu\xff"}, `--region: must be valid UTF-8, got "eu\xff"`},
		{[]string{"--region", strings.Repeat("r", 129)}, `--region: must be at most 128 bytes (it is 129)`},
	} {
		_, _, err := run(t, nil, append([]string{"bootstrap", "--node-id", "n", "--service", "web"}, c.args...)...)
		var se *setting.Error
		if !errors.As(err, &se) || err.Error() != c.want {
			t.Errorf("bootstrap %q: %v, want a setting error %q", c.args, err, c.want)
		}
	}
}

// flagValue returns the value that follows flag in args, "" without one.
func flagValue(args []string, flag string) string {
	for i, a := range args[:max(0, len(args)-1)] {
		if a == flag {
			return args[i+1]
		}
	}
	return ""
}

// TestValidateExitCodes: validate prints file:line: field: message and
// returns exit status 1 on any error, nothing and success otherwise.
func TestValidateExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("services:\n  - name: a\n    instances:\n      - {address: 10.0.0.1, port: 80}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("services:\n  - name: a\n    instances:\n      - {address: 10.0.0.1, port: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, nil, "validate", good)
	if err != nil || out != "" {
		t.Fatalf("good file: out %q err %v", out, err)
	}
	out, _, err = run(t, nil, "validate", good, bad)
	var ee exitError
	if !errors.As(err, &ee) || ee != 1 {
		t.Fatalf("bad file: err %v, want exit status 1", err)
	}
	want := bad + ":4: services[0].instances[0].port: \"0\" is not a port (1-65535)\n"
	if out != want {
		t.Fatalf("bad file: output %q, want %q", out, want)
	}
}

// TestValidateSyntaxErrors: a syntax error is reported at the same line in a
// registry file and in a policy file: here the line of a "[" never closed.
func TestValidateSyntaxErrors(t *testing.T) {
	dir := t.TempDir()
	registry := filepath.Join(dir, "registry.yaml")
	pol := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(registry, []byte("services:\n  - name: a\n    instances: [{address: 10.0.0.1, port: 80}\n  - name: b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pol, []byte("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: [web\nspec: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, nil, "validate", registry, pol)
	var ee exitError
	if !errors.As(err, &ee) || ee != 1 {
		t.Fatalf("err %v, want exit status 1", err)
	}
	want := registry + ":3: invalid YAML: did not find expected ',' or ']'\n" +
		pol + ":3: invalid YAML: did not find expected ',' or ']'\n"
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}

// TestValidatePolicies: policy files and directories are checked as one set
// with file:line: field: message output and exit status 1 on errors.
func TestValidatePolicies(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: user-service}\nspec:\n  timeout: 2s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, err := run(t, nil, "validate", dir); err != nil || out != "" {
		t.Fatalf("good dir: out %q err %v", out, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: user-service}\nspec:\n  retry: {attempts: -1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, nil, "validate", bad)
	var ee exitError
	if !errors.As(err, &ee) || ee != 1 {
		t.Fatalf("bad file: err %v, want exit status 1", err)
	}
	if !strings.HasPrefix(out, bad+":5: spec.retry.attempts: ") {
		t.Fatalf("bad file: output %q, want file:line: field: message", out)
	}
	// The same service in two files given together is a duplicate.
	out, _, err = run(t, nil, "validate", good, dir)
	if !errors.As(err, &ee) || !strings.Contains(out, "good.yaml") {
		t.Fatalf("duplicate across files: out %q err %v", out, err)
	}
}

// TestValidateDependencyWarnings: a dependency naming no known service is a
// warning, printed as such, and validate still exits 0. Registry files given
// alongside are the catalog; without one, the services with a ServicePolicy
// are the known ones.
func TestValidateDependencyWarnings(t *testing.T) {
	dir := t.TempDir()
	web := filepath.Join(dir, "web.yaml")
	writeTestFile(t, web, "apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: web}\nspec:\n  dependencies:\n    - auth\n    - ghost\n")
	auth := filepath.Join(dir, "auth.yaml")
	writeTestFile(t, auth, "apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: auth}\nspec:\n  dependencies: []\n")
	regDir := t.TempDir()
	registry := filepath.Join(regDir, "registry.yaml")
	writeTestFile(t, registry, "services:\n  - name: web\n    instances: [{address: 10.0.0.1, port: 80}]\n  - name: ghost\n    instances: [{address: 10.0.0.2, port: 80}]\n")
	brokenRegistry := filepath.Join(regDir, "broken.yaml")
	writeTestFile(t, brokenRegistry, "services:\n  - name: web\n    instances: [{address: 10.0.0.1, port: 0}]\n")

	tests := []struct {
		name     string
		args     []string
		want     []string // output lines
		exitCode int
	}{
		{
			name: "no registry file: services with a ServicePolicy are known",
			args: []string{dir},
			want: []string{web + `:7: spec.dependencies[1]: service "ghost" is not in the catalog: its sidecars get no configuration for it until it appears; without a registry file, the known services are those with a ServicePolicy (warning)`},
		},
		{
			name: "registry file: its services are the catalog",
			args: []string{dir, registry},
			want: []string{
				auth + `:3: metadata.name: no service "auth" in the catalog: this policy applies to nothing until it appears (warning)`,
				web + `:6: spec.dependencies[0]: service "auth" is not in the catalog: its sidecars get no configuration for it until it appears (warning)`,
			},
		},
		{
			name:     "a broken registry file: its errors, no warnings",
			args:     []string{dir, brokenRegistry},
			want:     []string{brokenRegistry + `:3: services[0].instances[0].port: "0" is not a port (1-65535)`},
			exitCode: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, nil, append([]string{"validate"}, tc.args...)...)
			var ee exitError
			switch {
			case tc.exitCode == 0 && err != nil:
				t.Fatalf("err %v, want exit status 0 (output %q)", err, out)
			case tc.exitCode != 0 && (!errors.As(err, &ee) || int(ee) != tc.exitCode):
				t.Fatalf("err %v, want exit status %d", err, tc.exitCode)
			}
			if want := strings.Join(tc.want, "\n") + "\n"; out != want {
				t.Errorf("output:\n%s\nwant:\n%s", out, want)
			}
		})
	}
}

// TestValidateLocalityWarning: a locality mode without outlier detection
// or health checks is a warning (traffic only fails over when the
// registry notices), with or without a registry file; with either, none.
func TestValidateLocalityWarning(t *testing.T) {
	dir := t.TempDir()
	bare := filepath.Join(dir, "bare.yaml")
	writeTestFile(t, bare, "apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: web}\nspec:\n  locality: {mode: failover}\n")
	checked := filepath.Join(dir, "checked.yaml")
	writeTestFile(t, checked, "apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: api}\nspec:\n  locality: {mode: failover}\n  healthCheck: {tcp: {}}\n")
	registry := filepath.Join(t.TempDir(), "registry.yaml")
	writeTestFile(t, registry, "services:\n  - name: web\n    instances: [{address: 10.0.0.1, port: 80}]\n  - name: api\n    instances: [{address: 10.0.0.2, port: 80}]\n")
	want := bare + ":5: spec.locality: locality mode failover without outlierDetection or healthCheck: clients only learn that instances are down from the registry, so traffic stays on failing instances of the preferred locality until the registry marks them (warning)\n"
	for _, args := range [][]string{{dir}, {dir, registry}} {
		out, _, err := run(t, nil, append([]string{"validate"}, args...)...)
		if err != nil {
			t.Fatalf("validate %v: %v, want exit status 0", args, err)
		}
		if out != want {
			t.Errorf("validate %v output:\n%s\nwant:\n%s", args, out, want)
		}
	}
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConsulExcludeFlag: by default the Consul servers' own service is left
// out; the flag replaces the list, and an empty value serves everything.
func TestConsulExcludeFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "[consul]"},
		{[]string{"--consul-exclude-service", "vault", "--consul-exclude-service", "nomad"}, "[vault nomad]"},
		{[]string{"--consul-exclude-service="}, "[]"},
	} {
		got := serveOptionsOf(t, append([]string{"--consul-addr", "127.0.0.1:8500"}, tc.args...)...)
		if s := fmt.Sprint(got.registries.consul.Exclude); s != tc.want {
			t.Errorf("%v: excluded %s, want %s", tc.args, s, tc.want)
		}
	}
}
