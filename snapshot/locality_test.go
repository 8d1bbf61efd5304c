package snapshot

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

func inst(addr, region, zone string) sources.Instance {
	return sources.Instance{Address: addr, Port: 8080, Health: sources.HealthHealthy, Region: region, Zone: zone}
}

func state(source string, svcs ...sources.Service) *sources.State {
	st := &sources.State{Services: svcs}
	st.Normalize(source)
	return st
}

// TestLoopLocalityAt: the locality of the catalog's instances at an
// address, the client's own service's first; unknown when there are none
// or they disagree; answered from the sources that reported before every
// source synced, and from the new catalog after a change.
func TestLoopLocalityAt(t *testing.T) {
	l := NewLoop(Config{Sources: []string{"a", "b"}})
	eu1 := translator.Locality{Region: "eu", Zone: "eu-1"}
	eu2 := translator.Locality{Region: "eu", Zone: "eu-2"}
	ip := netip.MustParseAddr
	check := func(when string, addr netip.Addr, service string, want translator.Locality) {
		t.Helper()
		got, ok := l.LocalityAt(addr, service)
		if got != want || ok != want.Known() {
			t.Errorf("%s: LocalityAt(%s, %q) = %+v, %v; want %+v, %v", when, addr, service, got, ok, want, want.Known())
		}
	}

	check("no source reported", ip("10.0.0.1"), "web", translator.Locality{})
	l.apply(sources.Event{Source: "a", State: state("a",
		sources.Service{Name: "web", Instances: []sources.Instance{inst("10.0.0.1", "eu", "eu-1")}},
	)})
	check("before b synced", ip("10.0.0.1"), "web", eu1)

	l.apply(sources.Event{Source: "b", State: state("b",
		// 10.0.0.2 runs web in eu-2, and a sidecar-less job that says eu-1.
		sources.Service{Name: "web", Instances: []sources.Instance{inst("10.0.0.2", "eu", "eu-2"), inst("10.0.0.4", "eu", "eu-1"), inst("10.0.0.5", "", "")}},
		sources.Service{Name: "batch", Instances: []sources.Instance{
			inst("10.0.0.2", "eu", "eu-1"), inst("10.0.0.3", "eu", "eu-1"),
			inst("10.0.0.4", "eu", "eu-2"), inst("10.0.0.5", "eu", "eu-2"), inst("db.internal", "eu", "eu-1"),
		}},
		// Two instances of api on one host, in different zones.
		sources.Service{Name: "api", Instances: []sources.Instance{
			{Address: "10.0.0.6", Port: 1, Region: "eu", Zone: "eu-1"}, {Address: "10.0.0.6", Port: 2, Region: "eu", Zone: "eu-2"},
		}},
	)})
	check("own service first", ip("10.0.0.2"), "web", eu2)
	check("own service first, whatever others say", ip("10.0.0.4"), "web", eu1)
	check("own service without a locality", ip("10.0.0.5"), "web", translator.Locality{})
	check("another service's when the own has none there", ip("10.0.0.3"), "web", eu1)
	check("no service named: all must agree", ip("10.0.0.2"), "", translator.Locality{})
	check("no service named, one instance", ip("10.0.0.3"), "", eu1)
	check("instances of one service disagree", ip("10.0.0.6"), "api", translator.Locality{})
	check("IPv4-mapped IPv6 peer", ip("::ffff:10.0.0.1"), "web", eu1)
	check("nobody there", ip("10.9.9.9"), "web", translator.Locality{})
	check("loopback is looked up like any address", ip("127.0.0.1"), "web", translator.Locality{})

	l.apply(sources.Event{Source: "a", State: state("a",
		sources.Service{Name: "web", Instances: []sources.Instance{inst("10.0.0.1", "us", "us-1"), inst("127.0.0.1", "dev", "laptop")}},
	)})
	check("after a change", ip("10.0.0.1"), "web", translator.Locality{Region: "us", Zone: "us-1"})
	check("loopback in the registry", ip("127.0.0.1"), "web", translator.Locality{Region: "dev", Zone: "laptop"})

	// A registry's locality is held to node.locality's limits: it becomes
	// part of a group key.
	l.apply(sources.Event{Source: "a", State: state("a",
		sources.Service{Name: "web", Instances: []sources.Instance{inst("10.0.0.1", "eu", strings.Repeat("z", 4096)), inst("10.0.0.7", "eu\x1b[2J", "eu-1")}},
	)})
	check("an oversized zone", ip("10.0.0.1"), "web", translator.Locality{})
	check("a control character", ip("10.0.0.7"), "web", translator.Locality{})
}

// TestLoopLocalityAware: only a policy set with a locality mode makes
// localities part of group keys.
func TestLoopLocalityAware(t *testing.T) {
	l := NewLoop(Config{Sources: []string{"a"}})
	if l.LocalityAware() {
		t.Error("aware without a policy set")
	}
	set, diags := policy.Load([]policy.File{{Name: "p.yaml", Data: []byte("apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: web}\nspec:\n  locality: {mode: failover}\n  outlierDetection: {maxEjectionPercent: 100}\n")}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	l.applyPolicy(watch.Update{Set: set})
	if !l.LocalityAware() {
		t.Error("not aware under a failover policy")
	}
}

// BenchmarkLoopLocalityAtBeforeSync: lookups before every source synced
// share one index until a source changes.
//
//	go test -run '^$' -bench LocalityAtBeforeSync ./snapshot/
func BenchmarkLoopLocalityAtBeforeSync(b *testing.B) {
	l := NewLoop(Config{Sources: []string{"etcd", "consul"}}) // consul never reports
	st := meshState(1000, 10)
	l.apply(sources.Event{Source: "etcd", State: &st})
	addr := netip.MustParseAddr("10.0.1.1")
	for b.Loop() {
		l.LocalityAt(addr, "svc-0001")
	}
}
