package main

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Inputs of the offline command tests.
const (
	offRegistry = "testdata/offline/registry.yaml"
	offCurrent  = "testdata/offline/current"
	offProposed = "testdata/offline/proposed"
	offInvalid  = "testdata/offline/invalid"
)

func exitStatus(err error) int {
	var ee exitError
	if errors.As(err, &ee) {
		return int(ee)
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestDiffGolden pins diff's output: field-level changes, added and
// removed resources, per group.
func TestDiffGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"diff-all", nil},
		{"diff-service", []string{"--service", "reviews"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"diff", "--registry-file", offRegistry, "--policy-dir", offCurrent, "--proposed-policy-dir", offProposed}, tc.args...)
			out, errOut, err := run(t, nil, args...)
			if exitStatus(err) != 1 {
				t.Fatalf("err %v, want exit status 1 (stderr %q)", err, errOut)
			}
			golden(t, filepath.Join("offline", tc.name+".golden"), out)
		})
	}
}

// TestDiffExitStatus: 0 without changes, 1 with, 2 for an invalid policy
// (with its file:line diagnostics) or any other error.
func TestDiffExitStatus(t *testing.T) {
	base := []string{"diff", "--registry-file", offRegistry, "--policy-dir", offCurrent}
	for _, tc := range []struct {
		name       string
		args       []string
		status     int
		wantOut    string
		wantStderr string
	}{
		{"no change", []string{"--proposed-policy-dir", offCurrent}, 0, "no changes in 4 groups\n", ""},
		{"changes", []string{"--proposed-policy-dir", offProposed}, 1, "4 of 4 groups change\n", ""},
		{"invalid proposed policy", []string{"--proposed-policy-dir", offInvalid}, 2, "",
			"testdata/offline/invalid/reviews.yaml:7: spec.retry.attempts: must be a whole number from 0 to 10, got 42\n"},
		{"missing proposed policy", nil, 2, "", "sluice diff: --proposed-policy-dir: is required\n"},
		{"unknown service", []string{"--proposed-policy-dir", offProposed, "--service", "nope"}, 2, "", `sluice diff: --service: is not a service of the registry files, got "nope"` + "\n"},
		{"unknown flag", []string{"--bogus"}, 2, "", "sluice diff: unknown flag: --bogus\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := run(t, nil, append(base, tc.args...)...)
			if got := exitStatus(err); got != tc.status {
				t.Fatalf("exit status %d (%v), want %d; stderr %q", got, err, tc.status, errOut)
			}
			if !strings.HasSuffix(out, tc.wantOut) {
				t.Errorf("stdout %q, want it to end with %q", out, tc.wantOut)
			}
			if errOut != tc.wantStderr {
				t.Errorf("stderr %q, want %q", errOut, tc.wantStderr)
			}
		})
	}
}

// TestExplainGolden pins explain's output: the service's settings with
// their sources and gRPC notes, and the route a path takes.
func TestExplainGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"explain-service", nil},
		{"explain-route-envoy", []string{"--route", "/reviews/slow/42", "--client", "envoy"}},
		{"explain-route-grpc", []string{"--route", "/reviews/post", "--client", "grpc"}},
		{"explain-no-route", []string{"--route", "/ratings", "--client", "envoy"}},
		{"explain-no-policy", []string{"--client", "envoy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			service, dir := "reviews", offCurrent
			if tc.name == "explain-no-policy" {
				service = "ratings"
			}
			out, errOut, err := run(t, nil, append([]string{"explain", service, "--registry-file", offRegistry, "--policy-dir", dir}, tc.args...)...)
			if err != nil || errOut != "" {
				t.Fatalf("err %v, stderr %q", err, errOut)
			}
			golden(t, filepath.Join("offline", tc.name+".golden"), out)
		})
	}
}

// TestExplainErrors: an invalid policy exits 2 with its diagnostics; a
// service no registry file lists is a warning.
func TestExplainErrors(t *testing.T) {
	_, errOut, err := run(t, nil, "explain", "reviews", "--registry-file", offRegistry, "--policy-dir", offInvalid)
	if exitStatus(err) != 2 || !strings.HasPrefix(errOut, "testdata/offline/invalid/reviews.yaml:7: spec.retry.attempts: ") {
		t.Errorf("invalid policy: err %v, stderr %q", err, errOut)
	}
	out, errOut, err := run(t, nil, "explain", "ghost", "--registry-file", offRegistry, "--policy-dir", offCurrent)
	if err != nil || errOut != "ghost: is not a service of the registry files: no proxy gets this policy until it appears (warning)\n" || !strings.HasPrefix(out, "service ghost, ") {
		t.Errorf("unknown service: err %v, stderr %q", err, errOut)
	}
}

// TestTranslateOutput: translate prints valid JSON and YAML holding every
// resource of the group, each of which passes Envoy's validation, in the
// same content for both formats and on every run.
func TestTranslateOutput(t *testing.T) {
	groups := [][]string{
		{"--service", "reviews", "--inbound-port", "9080"},
		{"--service", "edge", "--role", "gateway"},
		{"--grpc"},
		{"--service", "ratings", "--region", "eu", "--zone", "eu-1"},
	}
	for _, g := range groups {
		base := append([]string{"translate", "--registry-file", offRegistry, "--policy-dir", offProposed}, g...)
		jsonOut, errOut, err := run(t, nil, append(base, "-o", "json")...)
		if err != nil || errOut != "" {
			t.Fatalf("%v: err %v, stderr %q", g, err, errOut)
		}
		yamlOut, _, err := run(t, nil, base...)
		if err != nil {
			t.Fatalf("%v: %v", g, err)
		}
		fromYAML, err := yaml.YAMLToJSON([]byte(yamlOut))
		if err != nil {
			t.Fatalf("%v: YAML output: %v", g, err)
		}
		var a, b any
		if err := json.Unmarshal([]byte(jsonOut), &a); err != nil {
			t.Fatalf("%v: JSON output: %v", g, err)
		}
		if err := json.Unmarshal(fromYAML, &b); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(a, b); diff != "" {
			t.Errorf("%v: JSON and YAML differ:\n%s", g, diff)
		}
		again, _, _ := run(t, nil, append(base, "-o", "json")...)
		if again != jsonOut {
			t.Errorf("%v: two runs differ", g)
		}
		var byType map[string][]json.RawMessage
		if err := json.Unmarshal([]byte(jsonOut), &byType); err != nil {
			t.Fatal(err)
		}
		newMsg := map[string]func() proto.Message{
			"clusters":  func() proto.Message { return &clusterv3.Cluster{} },
			"endpoints": func() proto.Message { return &endpointv3.ClusterLoadAssignment{} },
			"listeners": func() proto.Message { return &listenerv3.Listener{} },
			"routes":    func() proto.Message { return &routev3.RouteConfiguration{} },
		}
		if len(byType) != len(newMsg) {
			t.Errorf("%v: types %v", g, byType)
		}
		n := 0
		for typ, rs := range byType {
			for _, r := range rs {
				m := newMsg[typ]()
				if err := protojson.Unmarshal(r, m); err != nil {
					t.Fatalf("%v: %s: %v", g, typ, err)
				}
				if err := m.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
					t.Errorf("%v: %s: %v", g, typ, err)
				}
				n++
			}
		}
		if len(byType["clusters"]) == 0 || len(byType["routes"]) == 0 {
			t.Errorf("%v: no clusters or routes (%d resources)", g, n)
		}
	}
}

// TestTranslateTypeAndErrors: --type keeps one type; invalid input exits 2
// with file:line diagnostics; bad flags are setting errors.
func TestTranslateTypeAndErrors(t *testing.T) {
	out, _, err := run(t, nil, "translate", "--registry-file", offRegistry, "--grpc", "--type", "cds", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var byType map[string]any
	if err := json.Unmarshal([]byte(out), &byType); err != nil || len(byType) != 1 || byType["clusters"] == nil {
		t.Errorf("--type cds: %v %v", err, byType)
	}
	_, errOut, err := run(t, nil, "translate", "--registry-file", offRegistry, "--policy-dir", offInvalid, "--grpc")
	if exitStatus(err) != 2 || !strings.HasPrefix(errOut, "testdata/offline/invalid/reviews.yaml:7: ") {
		t.Errorf("invalid policy: err %v, stderr %q", err, errOut)
	}
	for _, bad := range [][]string{
		{"--grpc", "--service", "x"},
		{"--role", "king", "--service", "x"},
		{},
		{"--grpc", "--type", "sds"},
		{"--grpc", "-o", "toml"},
		{"--grpc", "--zone", "a\tb"},
	} {
		if _, _, err := run(t, nil, append([]string{"translate", "--registry-file", offRegistry}, bad...)...); err == nil {
			t.Errorf("translate %v: no error", bad)
		}
	}
}

// TestDiffValues pins the field-level walk on small values.
func TestDiffValues(t *testing.T) {
	dec := func(s string) any {
		var v any
		d := json.NewDecoder(strings.NewReader(s))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	got := diffValues("",
		dec(`{"a": 1, "b": {"c": "x", "gone": true}, "l": [1, 2], "named": [{"name": "r", "t": "1s"}], "shape": 1, "f.g": 0}`),
		dec(`{"a": 2, "b": {"c": "x", "new": {}}, "l": [1], "named": [{"name": "r", "t": "2s"}], "shape": [3], "f.g": 0}`), nil)
	want := []string{
		"a: 1 → 2",
		"- b.gone: true",
		"+ b.new: {}",
		"- l[1]: 2",
		`named[0:r].t: "1s" → "2s"`,
		"- shape: 1",
		"+ shape[0]: 3",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("diffValues mismatch (-want +got):\n%s", diff)
	}
}
