package etcd

import (
	"strings"
	"testing"

	"github.com/sluice-mesh/sluice/sources"
)

// FuzzParseEntry: for every key layout, whatever the key and value, parsing
// never panics, and an entry is either a registration with a service and a
// reachable address or carries diagnostics that say why not (or is a key
// of another application under the keyspace root, ignored).
//
//	go test -run '^$' -fuzz FuzzParseEntry -fuzztime 30s ./sources/etcd/
func FuzzParseEntry(f *testing.F) {
	for _, c := range []struct{ key, value string }{
		{"/services/api/10.0.0.1:8080", `{"status":"healthy","weight":3,"zone":"a","metadata":{"v":"2"},"timestamp":1}`},
		{"/services/api/10.0.0.1:8080", ``},
		{"/services/api/0.0.0.0:80", `{}`},
		{"/services/api/[::1]:80", `{"status":"draining"}`},
		{"/services/api/10.0.0.1", `{"weight":-1}`},
		{"/services/microservices/api/1", `{"id":"1","name":"api","version":"v1","metadata":{},"endpoints":["grpc://10.0.0.1:9000?isSecure=false"]}`},
		{"/services/api/10.0.0.1:8080", "10.0.0.1:8080"},
		{"/services/api/10.0.0.1:8080/x", `{"status":"weird"}`},
		{"/elsewhere", `not json`},
	} {
		f.Add(c.key, []byte(c.value))
	}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		for _, l := range layouts() {
			format := l.format()
			for _, prefix := range []string{"/services", ""} {
				e := parser{layout: l, prefix: prefix}.parse(key, value)
				switch {
				case e.ignored:
				case e.ok:
					if e.service == "" || sources.CheckEndpointAddress(e.ap.Addr()) != nil || e.ap.Port() == 0 {
						t.Fatalf("%s %q: registration of %q at %s let through", format, key, e.service, e.ap)
					}
				case len(e.diags) == 0:
					t.Fatalf("%s %q: neither a registration nor a diagnostic", format, key)
				}
				for _, d := range e.diags {
					if d.Message == "" || !strings.Contains(d.Location, strings.TrimPrefix(prefix, "/")) {
						t.Fatalf("%s %q: diagnostic without a message or the key: %+v", format, key, d)
					}
				}
			}
		}
	})
}
