package consul

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/sluice-mesh/sluice/sources"
)

// FuzzMapEntries feeds the health endpoint's JSON, as a Consul agent (or
// anything answering in its place) could send it, to the mapping: it must
// never panic, and every instance it keeps must be one the other sources
// would keep too (a reachable IP address, a port, a known health), each
// skipped entry a diagnostic naming the service's key.
func FuzzMapEntries(f *testing.F) {
	for _, s := range []string{
		`[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"a","Service":"svc","Address":"10.0.0.5","Port":80,"Tags":["v1"],"Meta":{"zone":"z1"},"Weights":{"Passing":3,"Warning":1}},"Checks":[{"CheckID":"serfHealth","Status":"passing"}]}]`,
		`[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"b","Service":"svc","Address":"","Port":81},"Checks":[{"CheckID":"c","Status":"warning"}]}]`,
		`[{"Node":{"Node":"n1","Address":"0.0.0.0"},"Service":{"ID":"c","Service":"svc","Port":82}}]`,
		`[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"d","Service":"svc","Address":"svc.example.com","Port":83}}]`,
		`[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"e","Service":"svc","Address":"fe80::1%eth0","Port":84}}]`,
		`[{"Node":{"Node":"n1"},"Service":{"ID":"f","Kind":"connect-proxy","Service":"svc","Address":"10.0.0.7","Port":21000}}]`,
		`[null, {"Node":null,"Service":null}]`,
		`[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"g","Service":"svc","Address":"10.0.0.8","Port":70000}}]`,
	} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, warningIsHealthy bool) {
		var entries []*api.ServiceEntry
		if json.Unmarshal(data, &entries) != nil {
			return
		}
		m := mapEntries("svc", entries, warningIsHealthy)
		seen := map[string]bool{}
		for _, in := range m.instances {
			a, err := netip.ParseAddr(in.Address)
			if err != nil || sources.CheckEndpointAddress(a) != nil || in.Port < 1 || in.Port > 65535 {
				t.Fatalf("kept an instance no other source would serve: %+v", in)
			}
			if in.Health != sources.HealthHealthy && in.Health != sources.HealthUnhealthy {
				t.Fatalf("instance %s has health %v", in.Key(), in.Health)
			}
			if seen[in.Key()] {
				t.Fatalf("instance %s kept twice", in.Key())
			}
			seen[in.Key()] = true
		}
		for _, d := range m.diags {
			if d.Message == "" || !strings.HasPrefix(d.Location, "consul:service/svc") {
				t.Fatalf("malformed diagnostic %+v", d)
			}
		}
		// The result does not depend on the entries' order.
		reversed := make([]*api.ServiceEntry, len(entries))
		for i, e := range entries {
			reversed[len(entries)-1-i] = e
		}
		again := mapEntries("svc", reversed, warningIsHealthy)
		if len(again.instances) != len(m.instances) {
			t.Fatalf("%d instances in one order, %d in the other", len(m.instances), len(again.instances))
		}
		for i := range m.instances {
			if m.instances[i].Key() != again.instances[i].Key() || m.instances[i].Health != again.instances[i].Health {
				t.Fatalf("instance %d differs with the entries' order: %+v, %+v", i, m.instances[i], again.instances[i])
			}
		}
	})
}
