package etcd

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/setting"
)

// TestParse covers the parser key by key, without etcd: what is served,
// what is rejected with which field, and what is ignored silently.
func TestParse(t *testing.T) {
	sluice := parser{layout: sluiceLayout{}, prefix: "/services"}
	sluiceRoot := parser{layout: sluiceLayout{}, prefix: ""}
	kratos := parser{layout: kratosLayout{}, prefix: "/microservices"}
	gozero := parser{layout: goZeroLayout{}, prefix: ""}
	gozeroPrefixed := parser{layout: goZeroLayout{}, prefix: "/gz"}

	type want struct {
		service string
		inst    sources.Instance // Origin is filled in from the key
		field   string           // of the (first) error, when not served
		message string
		ignored bool
	}
	healthy := func(addr string, port uint32) sources.Instance {
		return sources.Instance{Address: addr, Port: port, Health: sources.HealthHealthy}
	}
	tests := []struct {
		name       string
		p          parser
		key, value string
		want       want
	}{
		{"empty value", sluice, "/services/api/10.0.0.1:80", "", want{service: "api", inst: healthy("10.0.0.1", 80)}},
		{"whitespace value", sluice, "/services/api/10.0.0.1:80", " \n", want{service: "api", inst: healthy("10.0.0.1", 80)}},
		{"bare host:port", sluice, "/services/api/10.0.0.1:80", "10.0.0.1:80", want{service: "api", inst: healthy("10.0.0.1", 80)}},
		{"ipv6", sluice, "/services/api/[2001:db8::1]:443", "", want{service: "api", inst: healthy("2001:db8::1", 443)}},
		{"v4-mapped ipv6", sluice, "/services/api/[::ffff:10.0.0.1]:80", "", want{service: "api", inst: healthy("10.0.0.1", 80)}},
		{"full JSON", sluice, "/services/api.v2/10.0.0.1:80",
			`{"status":"unhealthy","weight":65536,"zone":"z","region":"r","metadata":{"a":"b"},"timestamp":1.7e9,"extra":[1]}`,
			want{service: "api.v2", inst: sources.Instance{Address: "10.0.0.1", Port: 80, Health: sources.HealthUnhealthy,
				Weight: 65536, Zone: "z", Region: "r", Metadata: map[string]string{"a": "b"}}}},
		{"null fields are absent", sluice, "/services/api/10.0.0.1:80", `{"status":null,"weight":null,"metadata":null}`,
			want{service: "api", inst: healthy("10.0.0.1", 80)}},
		{"status synonyms", sluice, "/services/api/10.0.0.1:80", `{"status":"maintenance"}`,
			want{service: "api", inst: sources.Instance{Address: "10.0.0.1", Port: 80, Health: sources.HealthDraining}}},
		{"JSON null value", sluice, "/services/api/10.0.0.1:80", `null`, want{message: "must be a JSON object, got null"}},
		{"float weight", sluice, "/services/api/10.0.0.1:80", `{"weight":1.5}`, want{field: "weight", message: "integer"}},
		{"bool status", sluice, "/services/api/10.0.0.1:80", `{"status":true}`, want{field: "status", message: "must be a string, got boolean"}},
		{"metadata not an object", sluice, "/services/api/10.0.0.1:80", `{"metadata":["a"]}`, want{field: "metadata", message: "object of strings"}},
		{"timestamp not a number", sluice, "/services/api/10.0.0.1:80", `{"timestamp":"now"}`, want{field: "timestamp", message: "must be a number"}},
		{"port 0", sluice, "/services/api/10.0.0.1:0", "", want{message: "bad port"}},
		{"no port", sluice, "/services/api/10.0.0.1", "", want{message: "not host:port"}},
		{"zone id", sluice, "/services/api/[fe80::1%eth0]:80", "", want{message: "zones"}},
		{"key too short", sluice, "/services/api", "", want{message: "does not match the layout /services/<service>/<host:port>"}},
		{"empty service", sluice, "/services//10.0.0.1:80", "", want{message: "does not match the layout"}},
		{"root: foreign key ignored", sluiceRoot, "/config/db/pool/size", "10", want{ignored: true}},
		{"root: registration", sluiceRoot, "/api/10.0.0.1:80", "", want{service: "api", inst: healthy("10.0.0.1", 80)}},

		{"kratos grpc preferred", kratos, "/microservices/hello/id1",
			`{"id":"id1","name":"hello","version":"","metadata":null,"endpoints":["http://10.0.0.1:8000","grpcs://10.0.0.1:9443"]}`,
			want{service: "hello", inst: healthy("10.0.0.1", 9443)}},
		{"kratos id with slashes", kratos, "/microservices/hello/host/1",
			`{"name":"hello","endpoints":["grpc://10.0.0.1:9000"]}`, want{service: "hello", inst: healthy("10.0.0.1", 9000)}},
		{"kratos unknown schemes skipped", kratos, "/microservices/hello/id1",
			`{"name":"hello","endpoints":["tcp://10.0.0.9:1","https://10.0.0.1:8443"]}`, want{service: "hello", inst: healthy("10.0.0.1", 8443)}},
		{"kratos name mismatch", kratos, "/microservices/hello/id1", `{"name":"other","endpoints":["grpc://10.0.0.1:9000"]}`,
			want{field: "name", message: `"other" does not match`}},
		{"kratos host name", kratos, "/microservices/hello/id1", `{"name":"hello","endpoints":["grpc://hello.svc:9000"]}`,
			want{field: "endpoints[0]", message: "not an IP address"}},
		{"kratos endpoints not strings", kratos, "/microservices/hello/id1", `{"name":"hello","endpoints":[9000]}`,
			want{field: "endpoints[0]", message: "must be a string"}},
		{"kratos bad weight", kratos, "/microservices/hello/id1", `{"name":"hello","metadata":{"weight":"heavy"},"endpoints":["grpc://10.0.0.1:9000"]}`,
			want{field: "metadata.weight", message: "integer"}},
		{"kratos not JSON", kratos, "/microservices/hello/id1", `10.0.0.1:9000`, want{message: "not a go-kratos ServiceInstance"}},
		{"kratos key without id", kratos, "/microservices/hello", `{}`, want{message: "does not match the layout"}},

		{"gozero", gozero, "user.rpc/7587864068988009477", "10.0.0.1:8080", want{service: "user.rpc", inst: healthy("10.0.0.1", 8080)}},
		{"gozero leading slash", gozero, "/user.rpc/1", "10.0.0.1:8080", want{service: "user.rpc", inst: healthy("10.0.0.1", 8080)}},
		{"gozero foreign key ignored", gozero, "/services/api/10.0.0.1:80", "", want{ignored: true}},
		{"gozero foreign key without slash ignored", gozero, "settings", "{}", want{ignored: true}},
		{"gozero bad value", gozero, "user.rpc/1", ":8080", want{message: "not an IP address"}},
		{"gozero invalid name", gozero, "User.RPC/1", "10.0.0.1:8080", want{message: "invalid service name"}},
		{"gozero prefixed", gozeroPrefixed, "/gz/user.rpc/1", "10.0.0.1:8080", want{service: "user.rpc", inst: healthy("10.0.0.1", 8080)}},
		{"gozero prefixed bad shape", gozeroPrefixed, "/gz/user.rpc/abc", "10.0.0.1:8080", want{message: "does not match the layout /gz/<key>/<numeric id>"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.p.parse(tc.key, []byte(tc.value))
			switch {
			case tc.want.ignored:
				if !e.ignored || len(e.diags) > 0 {
					t.Fatalf("want the key ignored silently, got %+v", e)
				}
			case tc.want.message == "":
				if !e.ok || len(e.diags) > 0 {
					t.Fatalf("want a served instance, got diagnostics %v", e.diags)
				}
				tc.want.inst.Origin = tc.key
				if e.service != tc.want.service {
					t.Errorf("service = %q, want %q", e.service, tc.want.service)
				}
				if diff := cmp.Diff(tc.want.inst, e.inst); diff != "" {
					t.Errorf("instance (-want +got):\n%s", diff)
				}
			default:
				if e.ok || e.ignored || len(e.diags) == 0 {
					t.Fatalf("want a rejected key, got %+v", e)
				}
				d := e.diags[0]
				if d.Severity != sources.SeverityError || d.Source != "etcd" || d.Location != tc.key ||
					d.Field != tc.want.field || !strings.Contains(d.Message, tc.want.message) {
					t.Errorf("diagnostic = %+v, want field %q and a message containing %q", d, tc.want.field, tc.want.message)
				}
			}
		})
	}
}

func TestSameResult(t *testing.T) {
	p := parser{layout: sluiceLayout{}, prefix: "/services"}
	a := p.parse("/services/api/10.0.0.1:80", []byte(`{"weight":2,"timestamp":1}`))
	b := p.parse("/services/api/10.0.0.1:80", []byte(`{"weight":2,"timestamp":2}`))
	c := p.parse("/services/api/10.0.0.1:80", []byte(`{"weight":3,"timestamp":2}`))
	if !sameResult(a, b) {
		t.Error("a timestamp-only change counts as a change")
	}
	if sameResult(b, c) || sameResult(nil, a) {
		t.Error("a weight change or a new key does not count as a change")
	}
}

// TestBuildStateIsDeterministic: duplicates keep the first key in byte
// order whatever the map order, and equal inputs give equal states.
func TestBuildStateIsDeterministic(t *testing.T) {
	p := parser{layout: kratosLayout{}, prefix: "/microservices"}
	kv := map[string]string{
		"/microservices/api/b": `{"name":"api","endpoints":["grpc://10.0.0.1:9000"],"metadata":{"weight":"2"}}`,
		"/microservices/api/a": `{"name":"api","endpoints":["grpc://10.0.0.1:9000"],"metadata":{"weight":"1"}}`,
		"/microservices/api/c": `{"name":"api","endpoints":["grpc://10.0.0.2:9000"]}`,
		"/microservices/web/a": `{"name":"web","endpoints":["grpc://10.0.0.1:9000"]}`,
	}
	var first *sources.State
	for range 20 {
		entries := map[string]*entry{}
		for k, v := range kv {
			entries[k] = p.parse(k, []byte(v))
		}
		st := buildState(entries)
		if first == nil {
			first = st
			continue
		}
		if diff := cmp.Diff(first, st); diff != "" {
			t.Fatalf("states differ (-first +now):\n%s", diff)
		}
	}
	if got, want := endpointsOf(first), []string{"api/10.0.0.1:9000", "api/10.0.0.2:9000", "web/10.0.0.1:9000"}; !sameStrings(got, want) {
		t.Errorf("endpoints = %v, want %v", got, want)
	}
	if in := find(first, "api", "10.0.0.1:9000"); in.Origin != "/microservices/api/a" || in.Weight != 1 {
		t.Errorf("duplicate resolved to %+v, want the key /microservices/api/a", in)
	}
	want := []sources.Diagnostic{{
		Severity: sources.SeverityWarning, Source: "etcd", Location: "/microservices/api/b",
		Message: "service api already has an instance at 10.0.0.1:9000 (key /microservices/api/a); this key is ignored",
	}}
	if diff := cmp.Diff(want, first.Diagnostics); diff != "" {
		t.Errorf("diagnostics (-want +got):\n%s", diff)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no endpoints", Config{}, "Endpoints: at least one"},
		{"empty endpoint", Config{Endpoints: []string{""}}, "Endpoints[0]"},
		{"bad port", Config{Endpoints: []string{"127.0.0.1:0"}}, "Endpoints[0]"},
		{"bad scheme", Config{Endpoints: []string{"ftp://127.0.0.1:2379"}}, "Endpoints[0]"},
		{"plaintext with TLS", Config{Endpoints: []string{"http://127.0.0.1:2379"}, TLS: mustTLS(t)}, "Endpoints[0]"},
		{"format", Config{Endpoints: []string{"127.0.0.1:2379"}, Format: "consul"}, "Format"},
		{"password alone", Config{Endpoints: []string{"127.0.0.1:2379"}, Password: "x"}, "Username"},
		{"username alone", Config{Endpoints: []string{"127.0.0.1:2379"}, Username: "x"}, "Password"},
		{"negative dial timeout", Config{Endpoints: []string{"127.0.0.1:2379"}, DialTimeout: -1}, "DialTimeout"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, want an error naming %q", tc.name, err, tc.want)
		}
		if bad := (*setting.Error)(nil); !errors.As(err, &bad) || bad.Field == "" || !strings.HasPrefix(tc.want, bad.Field) {
			t.Errorf("%s: New = %#v, want a *setting.Error of the field", tc.name, err)
		}
	}
	for _, tc := range []struct{ format, prefix, want string }{
		{"", "", "/services"},
		{FormatKratos, "", "/microservices"},
		{FormatGoZero, "", ""},
		{FormatSluice, "/", ""},
		{FormatSluice, "/registry/", "/registry"},
		{FormatKratos, "/ns", "/ns"},
	} {
		s, err := New(Config{Endpoints: []string{"127.0.0.1:2379", "https://etcd-1:2379"}, Format: tc.format, Prefix: tc.prefix})
		if err != nil {
			t.Fatal(err)
		}
		if s.cfg.Prefix != tc.want || s.Name() != "etcd" {
			t.Errorf("format %q prefix %q: effective prefix %q, want %q", tc.format, tc.prefix, s.cfg.Prefix, tc.want)
		}
	}
}

func mustTLS(t *testing.T) *tls.Config {
	t.Helper()
	return &tls.Config{MinVersion: tls.VersionTLS12}
}

func TestLoadTLS(t *testing.T) {
	if cfg, err := LoadTLS("", "", ""); cfg != nil || err != nil {
		t.Errorf("LoadTLS() = %v, %v; want no TLS", cfg, err)
	}
	for _, tc := range []struct{ ca, cert, key, field string }{
		{"", "cert.pem", "", "TLS.KeyFile"},
		{"", "", "key.pem", "TLS.CertFile"},
		{"/does/not/exist.pem", "", "", "TLS.CAFile"},
		{"", "/does/not/exist.pem", "/does/not/exist.key", "TLS.CertFile"},
	} {
		_, err := LoadTLS(tc.ca, tc.cert, tc.key)
		if bad := (*setting.Error)(nil); !errors.As(err, &bad) || bad.Field != tc.field {
			t.Errorf("LoadTLS(%q, %q, %q) = %v, want a *setting.Error naming %s", tc.ca, tc.cert, tc.key, err, tc.field)
		}
	}
}
