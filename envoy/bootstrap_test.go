package envoy

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// TestBootstrapReplicas: several xDS addresses make one xDS cluster with an
// endpoint each (STATIC for IP addresses, STRICT_DNS as soon as one is a
// name), so Envoy fails over between sluice replicas; a bad address is an
// error naming it.
func TestBootstrapReplicas(t *testing.T) {
	for _, c := range []struct {
		addrs []string
		want  clusterv3.Cluster_DiscoveryType
	}{
		{[]string{"127.0.0.1:18000", "127.0.0.2:18000"}, clusterv3.Cluster_STATIC},
		{[]string{"10.0.0.1:18000", "sluice.sluice-system.svc:18000"}, clusterv3.Cluster_STRICT_DNS},
	} {
		b, err := Bootstrap(BootstrapOptions{NodeID: "n", Service: "web", XDSAddrs: c.addrs, AdminAddress: "127.0.0.1", AdminPort: 9901})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ValidateAll(); err != nil {
			t.Fatalf("%v: %v", c.addrs, err)
		}
		xds := b.GetStaticResources().GetClusters()[0]
		if got := len(xds.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()); got != len(c.addrs) || xds.GetType() != c.want {
			t.Errorf("%v: %d endpoints of type %v, want %d of %v", c.addrs, got, xds.GetType(), len(c.addrs), c.want)
		}
	}
	if _, err := Bootstrap(BootstrapOptions{NodeID: "n", XDSAddrs: []string{"127.0.0.1:18000", "nohost"}}); err == nil || !strings.Contains(err.Error(), `"nohost"`) {
		t.Errorf("a bad second address: %v, want an error naming it", err)
	}
}

// TestBootstrapReconnectsPromptly: Envoy's default backoff for its xDS
// stream grows to 30 s, so a proxy could run on stale config that long after
// a control-plane restart; the bootstrap caps it at xdsRetryMax.
func TestBootstrapReconnectsPromptly(t *testing.T) {
	b, err := Bootstrap(BootstrapOptions{NodeID: "n", Service: "web", XDSAddrs: []string{"127.0.0.1:18000"}, AdminAddress: "127.0.0.1", AdminPort: 9901})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	backoff := b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetEnvoyGrpc().GetRetryPolicy().GetRetryBackOff()
	if got := backoff.GetMaxInterval().AsDuration(); got != xdsRetryMax || got > 5*time.Second {
		t.Errorf("xDS reconnect backoff grows to %v, want %v (at most 5s)", got, xdsRetryMax)
	}
	if got := backoff.GetBaseInterval().AsDuration(); got <= 0 || got > xdsRetryMax {
		t.Errorf("xDS reconnect backoff starts at %v, want a positive interval below the maximum", got)
	}
}

// TestBootstrapLocality: a region or a zone makes node.locality; neither
// leaves it out, for sluice to look the proxy up in the registry.
func TestBootstrapLocality(t *testing.T) {
	for _, c := range []struct{ region, zone string }{{"eu-west-1", "eu-west-1a"}, {"", "z1"}, {"eu", ""}, {"", ""}} {
		b, err := Bootstrap(BootstrapOptions{NodeID: "n", Service: "web", XDSAddr: "127.0.0.1:18000", AdminAddress: "127.0.0.1", AdminPort: 9901, Region: c.region, Zone: c.zone})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		loc := b.GetNode().GetLocality()
		if c.region == "" && c.zone == "" {
			if loc != nil {
				t.Errorf("no region or zone: node.locality %v, want none", loc)
			}
			continue
		}
		if loc.GetRegion() != c.region || loc.GetZone() != c.zone || loc.GetSubZone() != "" {
			t.Errorf("region %q, zone %q: node.locality %v", c.region, c.zone, loc)
		}
	}
}
