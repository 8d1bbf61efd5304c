package file

import (
	"bytes"
	"errors"
	"flag"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-mesh/sluice/sources"
)

// knownBugs runs the test cases that document bugs not fixed yet; they are
// skipped by default so the suite stays green. Run them with
//
//	go test ./sources/file/ -args -knownbugs
var knownBugs = flag.Bool("knownbugs", false, "run test cases that document known, unfixed bugs")

func skipKnownBug(t *testing.T, bug string) {
	t.Helper()
	if bug != "" && !*knownBugs {
		t.Skipf("known bug (run with -args -knownbugs): %s", bug)
	}
}

// lines joins its arguments into a YAML file, so test inputs can be read with
// their line numbers in mind (the first argument is line 1).
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseReadmeExample(t *testing.T) {
	st, diags := Parse("registry.yaml", readTestdata(t, "registry.yaml"))
	if len(diags) != 0 {
		t.Fatalf("Parse() diagnostics: %v", diags)
	}
	want := &sources.State{Services: []sources.Service{{
		Name: "user-service",
		Instances: []sources.Instance{
			{
				Address: "10.0.0.1", Port: 8080,
				Health: sources.HealthHealthy, Weight: 1,
				Source: "file", Origin: "registry.yaml:5",
			},
			{
				Address: "10.0.0.2", Port: 8080,
				Health: sources.HealthUnhealthy, Weight: 3, Zone: "east-1a",
				Metadata: map[string]string{"version": "v2"},
				Source:   "file", Origin: "registry.yaml:6",
			},
		},
	}}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}
}

// TestParseShippedExample keeps the example registry in the repository valid.
func TestParseShippedExample(t *testing.T) {
	const path = "../../examples/registry.yaml"
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s not present", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	st, diags := Parse(path, data)
	if len(diags) != 0 {
		t.Fatalf("%s is invalid: %v", path, diags)
	}
	checkStateInvariants(t, st, path)
	if len(st.Services) == 0 {
		t.Errorf("%s lists no services", path)
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *sources.State
		bug  string
	}{
		{
			name: "null services",
			in:   "services:\n",
			want: &sources.State{Services: []sources.Service{}},
		},
		{
			name: "empty services list",
			in:   "services: []\n",
			want: &sources.State{Services: []sources.Service{}},
		},
		{
			name: "service without instances",
			in:   lines("services:", "  - name: lonely"),
			want: &sources.State{Services: []sources.Service{{Name: "lonely"}}},
		},
		{
			name: "services and instances are sorted, IPv6 and v4-mapped addresses normalised",
			in: lines(
				"services:",
				"  - name: zeta",
				"    instances:",
				"      - {address: 10.0.0.10, port: 80}",
				"      - {address: '::ffff:10.0.0.9', port: 80, region: r1, zone: z1}",
				"      - {address: '2001:db8::1', port: 443, health: draining, weight: 65536}",
				"  - name: alpha",
				"    instances:",
				"      - {address: 10.0.0.1, port: 1, health: critical}",
			),
			want: &sources.State{Services: []sources.Service{
				{Name: "alpha", Instances: []sources.Instance{
					{Address: "10.0.0.1", Port: 1, Health: sources.HealthUnhealthy, Weight: 1, Source: "file", Origin: "f.yaml:9"},
				}},
				{Name: "zeta", Instances: []sources.Instance{
					{Address: "10.0.0.9", Port: 80, Health: sources.HealthHealthy, Weight: 1, Region: "r1", Zone: "z1", Source: "file", Origin: "f.yaml:5"},
					{Address: "10.0.0.10", Port: 80, Health: sources.HealthHealthy, Weight: 1, Source: "file", Origin: "f.yaml:4"},
					{Address: "2001:db8::1", Port: 443, Health: sources.HealthDraining, Weight: 65536, Source: "file", Origin: "f.yaml:6"},
				}},
			}},
		},
		{
			name: "same address on two ports is two instances",
			in: lines(
				"services:",
				"  - name: a",
				"    instances:",
				"      - {address: 10.0.0.1, port: 81}",
				"      - {address: 10.0.0.1, port: 80}",
			),
			want: &sources.State{Services: []sources.Service{{Name: "a", Instances: []sources.Instance{
				{Address: "10.0.0.1", Port: 80, Health: sources.HealthHealthy, Weight: 1, Source: "file", Origin: "f.yaml:5"},
				{Address: "10.0.0.1", Port: 81, Health: sources.HealthHealthy, Weight: 1, Source: "file", Origin: "f.yaml:4"},
			}}}},
		},
		{
			name: "explicit unknown health is kept",
			in:   lines("services:", "  - name: a", "    instances:", "      - {address: 10.0.0.1, port: 80, health: unknown}"),
			want: &sources.State{Services: []sources.Service{{Name: "a", Instances: []sources.Instance{
				{Address: "10.0.0.1", Port: 80, Health: sources.HealthUnknown, Weight: 1, Source: "file", Origin: "f.yaml:4"},
			}}}},
			bug: "parse.go instance(): `health: unknown` is overwritten with healthy because the default is applied after parsing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			skipKnownBug(t, tt.bug)
			st, diags := Parse("f.yaml", []byte(tt.in))
			if len(diags) != 0 {
				t.Fatalf("Parse() diagnostics: %v", diags)
			}
			if diff := cmp.Diff(tt.want, st); diff != "" {
				t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// oneInstance is a file with a single instance whose fields are given, one
// per line, starting at line 5.
func oneInstance(fields ...string) string {
	ls := []string{"services:", "  - name: svc", "    instances:", "      -"}
	for _, f := range fields {
		ls = append(ls, "        "+f)
	}
	return lines(ls...)
}

func TestParseInvalid(t *testing.T) {
	const inst0 = "services[0].instances[0]"
	tests := []struct {
		name string
		in   string
		// The first diagnostic must be at f.yaml:<line> on field, and its
		// message must contain msg.
		line  int
		field string
		msg   string
		// ndiags, when non-zero, is the exact number of diagnostics.
		ndiags int
		bug    string
	}{
		{
			// What a file looks like while it is being rewritten in place:
			// refused, so the catalog is not wiped in between.
			name: "empty file",
			in:   "",
			line: 1, msg: "the file is empty",
		},
		{
			name: "only comments",
			in:   "# nothing here yet\n",
			line: 1, msg: "the file is empty",
		},
		{
			name: "bad YAML syntax",
			in:   oneInstance("address: 10.0.0.1", "port: 80: 1"),
			line: 6, msg: "invalid YAML: mapping values are not allowed",
		},
		{
			name: "tab indentation",
			in:   lines("services:", "  - name: a", "\tinstances: []"),
			line: 3, msg: "invalid YAML",
		},
		{
			name: "tab at the start of the file",
			in:   lines("\tservices: []"),
			line: 1, msg: "invalid YAML",
		},
		{
			name: "unterminated quoted string",
			in:   lines("services:", "  - name: \"a"),
			line: 2, msg: "invalid YAML",
		},
		{
			name: "plain scalar where a key is expected",
			in:   lines("services:", "  - name: a", "    instances: x", "    y"),
			line: 4, msg: "invalid YAML: could not find expected ':'",
		},
		{
			name: "unterminated flow sequence",
			in:   lines("services:", "  - name: a", "    instances: ["),
			line: 3, msg: "invalid YAML",
		},
		{
			// The key of line 3 breaks out of the list that line 2
			// starts: the YAML library names the list's line (as it
			// names a "[" never closed), not the key's.
			name: "bad indentation (parser error)",
			in:   lines("services:", "  - name: a", "  instances: []"),
			line: 2, msg: "invalid YAML: did not find expected '-' indicator",
		},
		{
			name: "port 0",
			in:   oneInstance("address: 10.0.0.1", "port: 0"),
			line: 6, field: inst0 + ".port", msg: `"0" is not a port (1-65535)`,
		},
		{
			name: "port 70000",
			in:   oneInstance("address: 10.0.0.1", "port: 70000"),
			line: 6, field: inst0 + ".port", msg: `"70000" is not a port`,
		},
		{
			name: "port abc",
			in:   oneInstance("address: 10.0.0.1", "port: abc"),
			line: 6, field: inst0 + ".port", msg: `"abc" is not a port`,
		},
		{
			name: "negative port",
			in:   oneInstance("address: 10.0.0.1", "port: -1"),
			line: 6, field: inst0 + ".port", msg: "not a port",
		},
		{
			name: "port is a list",
			in:   oneInstance("address: 10.0.0.1", "port: [80]"),
			line: 6, field: inst0 + ".port", msg: "expected a scalar, got a list",
		},
		{
			name: "invalid name",
			in:   lines("services:", "  - name: Bad_Name!"),
			line: 2, field: "services[0].name", msg: `"Bad_Name!" is not a valid service name`,
		},
		{
			name: "empty name",
			in:   lines("services:", "  - name: \"\""),
			line: 2, field: "services[0].name", msg: `"" is not a valid service name`,
		},
		{
			name: "name with a port",
			in:   lines("services:", "  - name: web", "  - name: api:80"),
			line: 3, field: "services[1].name", msg: "not a valid service name",
		},
		{
			name: "missing name",
			in:   lines("services:", "  - name: ok", "  - instances:", "      - {address: 10.0.0.1, port: 80}"),
			line: 3, field: "services[1].name", msg: "required field is missing",
		},
		{
			name: "duplicate instance",
			in: lines(
				"services:",
				"  - name: a",
				"    instances:",
				"      - {address: 10.0.0.1, port: 80}",
				"      - {address: 10.0.0.2, port: 80}",
				"      - address: '::ffff:10.0.0.1'",
				"        port: 80",
			),
			line: 6, field: "services[0].instances[2]", msg: "duplicate instance 10.0.0.1:80 (first listed at line 4)",
		},
		{
			name: "duplicate service",
			in: lines(
				"services:",
				"  - name: a",
				"  - name: b",
				"  - name: a",
				"    instances: []",
			),
			line: 4, field: "services[2].name", msg: `service "a" is already listed at line 2`,
		},
		{
			name: "unknown top-level field",
			in:   lines("services: []", "bogus: 1"),
			line: 2, field: "bogus", msg: "unknown field",
		},
		{
			name: "unknown service field",
			in:   lines("services:", "  - name: a", "    bogus: 1"),
			line: 3, field: "services[0].bogus", msg: "unknown field",
		},
		{
			name: "unknown instance field",
			in:   oneInstance("address: 10.0.0.1", "port: 80", "bogus: 1"),
			line: 7, field: inst0 + ".bogus", msg: "unknown field",
		},
		{
			name: "field given twice",
			in:   oneInstance("address: 10.0.0.1", "port: 80", "port: 81"),
			line: 7, field: inst0 + ".port", msg: "field given twice",
		},
		{
			name: "bad address",
			in:   oneInstance("address: 10.0.0.300", "port: 80"),
			line: 5, field: inst0 + ".address", msg: `"10.0.0.300" is not an IP address`,
		},
		{
			name: "hostname address",
			in:   oneInstance("address: db.example.com", "port: 80"),
			line: 5, field: inst0 + ".address", msg: "is not an IP address",
		},
		{
			name: "address with IPv6 zone",
			in:   oneInstance("address: 'fe80::1%eth0'", "port: 80"),
			line: 5, field: inst0 + ".address", msg: "IPv6 zones are not supported",
		},
		{
			name: "unspecified address",
			in:   oneInstance("address: 0.0.0.0", "port: 80"),
			line: 5, field: inst0 + ".address", msg: `"0.0.0.0": the unspecified address is not one a client can connect to`,
		},
		{
			name: "unspecified IPv6 address",
			in:   oneInstance("address: '::'", "port: 80"),
			line: 5, field: inst0 + ".address", msg: "the unspecified address",
		},
		{
			name: "broadcast address",
			in:   oneInstance("address: 255.255.255.255", "port: 80"),
			line: 5, field: inst0 + ".address", msg: "the broadcast address is not one",
		},
		{
			name: "multicast address",
			in:   oneInstance("address: 224.0.0.1", "port: 80"),
			line: 5, field: inst0 + ".address", msg: "a multicast address is not one",
		},
		{
			name: "missing address",
			in:   oneInstance("port: 80"),
			line: 5, field: inst0 + ".address", msg: "required field is missing",
		},
		{
			name: "missing port",
			in:   oneInstance("address: 10.0.0.1"),
			line: 5, field: inst0 + ".port", msg: "required field is missing",
		},
		{
			name: "bad health word",
			in:   oneInstance("address: 10.0.0.1", "port: 80", "health: sick"),
			line: 7, field: inst0 + ".health", msg: `unknown health "sick"`,
		},
		{
			name: "weight 0",
			in:   oneInstance("address: 10.0.0.1", "port: 80", "weight: 0"),
			line: 7, field: inst0 + ".weight", msg: `"0" is not a weight (1-65536)`,
		},
		{
			name: "weight too large",
			in:   oneInstance("address: 10.0.0.1", "port: 80", "weight: 65537"),
			line: 7, field: inst0 + ".weight", msg: "is not a weight",
		},
		{
			name: "metadata value is a mapping",
			in:   oneInstance("address: 10.0.0.1", "port: 80", "metadata:", "  version:", "    major: 2"),
			line: 9, field: inst0 + ".metadata.version", msg: "metadata values must be strings, got a mapping",
		},
		{
			name: "metadata value is a list",
			in:   oneInstance("address: 10.0.0.1", "port: 80", "metadata: {tags: [a, b]}"),
			line: 7, field: inst0 + ".metadata.tags", msg: "metadata values must be strings, got a list",
		},
		{
			name: "metadata key given twice",
			in:   oneInstance("address: 10.0.0.1", "port: 80", "metadata:", "  version: v1", "  version: v2"),
			line: 9, field: inst0 + ".metadata.version", msg: "key given twice (first at line 8)",
		},
		{
			name: "metadata is a list",
			in:   oneInstance("address: 10.0.0.1", "port: 80", "metadata: [a]"),
			line: 7, field: inst0 + ".metadata", msg: "expected a mapping of strings",
		},
		{
			name: "services is a mapping",
			in:   lines("services:", "  a: 1"),
			line: 2, field: "services", msg: "expected a list, got a mapping",
		},
		{
			name: "instances is a scalar",
			in:   lines("services:", "  - name: a", "    instances: many"),
			line: 3, field: "services[0].instances", msg: `expected a list, got "many"`,
		},
		{
			name: "instance is a scalar",
			in:   lines("services:", "  - name: a", "    instances:", "      - 10.0.0.1:80"),
			line: 4, field: "services[0].instances[0]", msg: "expected a mapping",
		},
		{
			name: "top level is a list",
			in:   lines("- name: a"),
			line: 1, field: "", msg: "expected a mapping",
		},
		{
			name: "alias instead of a service",
			in:   lines("services:", "  - &x", "    name: a", "  - *x"),
			line: 4, field: "services[1]", msg: "expected a mapping, got an alias",
		},
		{
			name: "second YAML document",
			in:   lines("services: []", "---", "services: []"),
			line: 2, msg: "one YAML document",
		},
		{
			name: "second YAML document with a syntax error",
			in:   lines("services: []", "---", "services: ["),
			line: 3, msg: "invalid YAML",
		},
		{
			name: "every problem is reported",
			in: lines(
				"services:",
				"  - name: Bad!",
				"    instances:",
				"      - {address: nope, port: 0, weight: 0}",
				"  - name: ok",
				"    bogus: true",
			),
			line: 2, field: "services[0].name", msg: "not a valid service name",
			ndiags: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			skipKnownBug(t, tt.bug)
			st, diags := Parse("f.yaml", []byte(tt.in))
			if st != nil {
				t.Errorf("Parse() state = %+v, want nil", st)
			}
			if len(diags) == 0 {
				t.Fatalf("Parse() gave no diagnostics")
			}
			if tt.ndiags != 0 && len(diags) != tt.ndiags {
				t.Errorf("Parse() gave %d diagnostics, want %d: %v", len(diags), tt.ndiags, diags)
			}
			for _, d := range diags {
				if d.Severity != sources.SeverityError || d.Source != SourceName {
					t.Errorf("diagnostic %v: severity %q source %q, want error/file", d, d.Severity, d.Source)
				}
			}
			d := diags[0]
			if want := "f.yaml:" + strconv.Itoa(tt.line); d.Location != want {
				t.Errorf("Location = %q, want %q (%v)", d.Location, want, d)
			}
			if d.Field != tt.field {
				t.Errorf("Field = %q, want %q (%v)", d.Field, tt.field, d)
			}
			if !strings.Contains(d.Message, tt.msg) {
				t.Errorf("Message = %q, want it to contain %q", d.Message, tt.msg)
			}
		})
	}
}

// FuzzParse checks that Parse never panics, that it returns either a state or
// error diagnostics (never both, never neither), and that any state it returns
// satisfies the invariants the rest of sluice relies on.
func FuzzParse(f *testing.F) {
	f.Add(readTestdata(f, "registry.yaml"))
	for _, seed := range []string{
		"",
		"services: []\n",
		"services:\n  - name: a\n",
		oneInstance("address: 10.0.0.1", "port: 80", "health: draining", "weight: 2", "zone: z", "region: r", "metadata: {a: b}"),
		oneInstance("address: 10.0.0.1", "port: 80: 1"),
		oneInstance("address: 10.0.0.300", "port: 70000", "weight: 0", "health: sick", "bogus: 1"),
		oneInstance("address: 0.0.0.0", "port: 80"),
		oneInstance("address: '::ffff:255.255.255.255'", "port: 80"),
		lines("services:", "  - name: a", "  - name: a"),
		lines("services: []", "---", "services: []"),
		lines("services:", "  - &x", "    name: a", "  - *x"),
		"services: {a: [1, {b: c}]}\n",
		"\tservices: []\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, diags := Parse("fuzz.yaml", data)
		if (st == nil) == (len(diags) == 0) {
			t.Fatalf("Parse() = state %v with %d diagnostics; want exactly one of them", st != nil, len(diags))
		}
		for _, d := range diags {
			if !strings.HasPrefix(d.Location, "fuzz.yaml:") {
				t.Errorf("diagnostic location %q lacks the file name", d.Location)
			}
			if n, err := strconv.Atoi(strings.TrimPrefix(d.Location, "fuzz.yaml:")); err != nil || n < 1 {
				t.Errorf("diagnostic location %q has no valid line", d.Location)
			}
			if d.Message == "" {
				t.Errorf("diagnostic %v has no message", d)
			}
		}
		if st == nil {
			return
		}
		checkStateInvariants(t, st, "fuzz.yaml")
	})
}

func checkStateInvariants(t *testing.T, st *sources.State, file string) {
	t.Helper()
	if st.Services == nil {
		t.Errorf("Services is nil, want empty")
	}
	if len(st.Diagnostics) != 0 {
		t.Errorf("accepted state carries diagnostics: %v", st.Diagnostics)
	}
	if !sort.SliceIsSorted(st.Services, func(i, j int) bool { return st.Services[i].Name < st.Services[j].Name }) {
		t.Errorf("services not sorted")
	}
	seen := map[string]bool{}
	for _, s := range st.Services {
		if !sources.ValidServiceName(s.Name) {
			t.Errorf("invalid service name %q accepted", s.Name)
		}
		if seen[s.Name] {
			t.Errorf("service %q listed twice", s.Name)
		}
		seen[s.Name] = true
		keys := map[string]bool{}
		for _, in := range s.Instances {
			if in.Port < 1 || in.Port > 65535 {
				t.Errorf("%s: port %d accepted", s.Name, in.Port)
			}
			if a, err := netip.ParseAddr(in.Address); err != nil || sources.CheckEndpointAddress(a) != nil {
				t.Errorf("%s: address %q accepted", s.Name, in.Address)
			}
			if in.Weight < 1 || in.Weight > sources.MaxWeight {
				t.Errorf("%s: weight %d accepted", s.Name, in.Weight)
			}
			if in.Source != SourceName || !strings.HasPrefix(in.Origin, file+":") {
				t.Errorf("%s: source %q origin %q", s.Name, in.Source, in.Origin)
			}
			if keys[in.Key()] {
				t.Errorf("%s: duplicate instance %s accepted", s.Name, in.Key())
			}
			keys[in.Key()] = true
		}
	}
}

// TestParseRefusesHugeFiles: a file beyond MaxFileSize is refused before it
// is parsed (parsing keeps a node per value).
func TestParseRefusesHugeFiles(t *testing.T) {
	data := append([]byte("services: []\n"), bytes.Repeat([]byte("# padding\n"), MaxFileSize/10+1)...)
	st, diags := Parse("big.yaml", data)
	if st != nil || len(diags) != 1 || diags[0].Location != "big.yaml:1" || !strings.Contains(diags[0].Message, "belongs in etcd or Consul") {
		t.Fatalf("Parse of %d bytes = %v, %v; want it refused at line 1", len(data), st, diags)
	}
}
