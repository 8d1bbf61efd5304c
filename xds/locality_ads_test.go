package xds_test

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

// The snapshot loop places clients whose node names no locality, and says
// whether localities matter.
var (
	_ xds.LocalityResolver = (*snapshot.Loop)(nil)
	_ xds.LocalityPolicy   = (*snapshot.Loop)(nil)
)

// localityPolicy is a policy set under which localities matter.
func localityPolicy(t *testing.T) *policy.Set {
	t.Helper()
	set, diags := policy.Load([]policy.File{{Name: "mesh.yaml", Data: []byte("apiVersion: sluice.dev/v1\nkind: MeshPolicy\nmetadata: {name: mesh}\nspec:\n  defaults:\n    locality: {mode: failover}\n    outlierDetection: {maxEjectionPercent: 100}\n")}})
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	return set
}

// TestADSRelocatesWhenLocalitiesStartToMatter: without a locality policy
// a client's locality stays out of its group key (no group per zone for
// nothing); once a policy makes localities matter, the server ends the
// stream with UNAVAILABLE, and the client, reconnecting, joins its
// locality's group. The policy going away moves it back.
func TestADSRelocatesWhenLocalitiesStartToMatter(t *testing.T) {
	policies := make(chan watch.Update, 1)
	empty, diags := policy.Load(nil)
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	policies <- watch.Update{Set: empty}
	h := newHarnessWith(t, harnessOptions{policies: policies, relocateInterval: 50 * time.Millisecond})
	h.syncCatalog(catalog())
	n := envoyNode("zoned")
	n.Locality = &corev3.Locality{Region: "eu", Zone: "eu-a"}

	// connect opens a stream, waits for its clusters and returns it with
	// its group.
	connect := func() (*sotwClient, string) {
		c := h.sotw(n)
		c.request(cds)
		c.recv(cds)
		return c, h.proxy("zoned").Group
	}
	c, group := connect()
	if group != "envoy/sidecar/web" {
		t.Fatalf("without a locality policy the group is %q, want envoy/sidecar/web", group)
	}
	for _, step := range []struct {
		set  *policy.Set
		want string
	}{
		{localityPolicy(t), "envoy/sidecar/web/loc=eu/eu-a"},
		{empty, "envoy/sidecar/web"},
	} {
		policies <- watch.Update{Set: step.set}
		select {
		case <-c.done:
		case <-time.After(recvTimeout):
			t.Fatalf("the stream was not ended for the client to join %s", step.want)
		}
		if code := grpcstatus.Code(c.err); code != codes.Unavailable {
			t.Fatalf("the stream ended with %v, want UNAVAILABLE", c.err)
		}
		c, group = connect()
		if group != step.want {
			t.Errorf("after reconnecting the group is %q, want %q", group, step.want)
		}
	}
}

// TestADSLocalityFromRegistry: with the loop and server wired as in
// production, an Envoy whose node names no locality, connecting from the
// address of an instance of its service, is placed in that instance's
// locality (its group says so, and so does the admin view) and served;
// one whose node names a locality keeps it.
func TestADSLocalityFromRegistry(t *testing.T) {
	policies := make(chan watch.Update, 1)
	policies <- watch.Update{Set: localityPolicy(t)}
	h := newHarnessWith(t, harnessOptions{policies: policies})
	st := catalog()
	st.Services = append(st.Services, sources.Service{Name: "web", Instances: []sources.Instance{
		{Address: "127.0.0.1", Port: 8080, Health: sources.HealthHealthy, Region: "eu", Zone: "eu-a"},
	}})
	h.syncCatalog(st)

	placed := h.sotw(envoyNode("placed"))
	placed.request(cds)
	placed.recv(cds)
	p := h.proxy("placed")
	if want := (translator.Locality{Region: "eu", Zone: "eu-a"}); p.Proxy.Locality != want || p.LocalitySource != "registry" || p.Group != "envoy/sidecar/web/loc=eu/eu-a" {
		t.Errorf("a client at the address of web's instance: %+v, want locality %+v from the registry", p, want)
	}

	n := envoyNode("own")
	n.Locality = &corev3.Locality{Region: "us", Zone: "us-b"}
	own := h.sotw(n)
	own.request(cds)
	own.recv(cds)
	if p := h.proxy("own"); p.LocalitySource != "node" || p.Group != "envoy/sidecar/web/loc=us/us-b" {
		t.Errorf("a client whose node names its locality: %+v, want the node's locality", p)
	}
}

// TestADSRelocatesWhenTheRegistryPlacesAClient: a client that connected
// before its instance registered (a sidecar starts before its
// application) is unplaced; once the registry has an instance of its
// service at its address, the server ends its stream and the client
// reconnects into that instance's locality.
func TestADSRelocatesWhenTheRegistryPlacesAClient(t *testing.T) {
	policies := make(chan watch.Update, 1)
	policies <- watch.Update{Set: localityPolicy(t)}
	h := newHarnessWith(t, harnessOptions{policies: policies, relocateInterval: 50 * time.Millisecond})
	h.syncCatalog(catalog())
	c := h.sotw(envoyNode("early"))
	c.request(cds)
	c.recv(cds)
	if g := h.proxy("early").Group; g != "envoy/sidecar/web" {
		t.Fatalf("before its instance registered the group is %q, want envoy/sidecar/web", g)
	}

	st := catalog()
	st.Services = append(st.Services, sources.Service{Name: "web", Instances: []sources.Instance{
		{Address: "127.0.0.1", Port: 8080, Health: sources.HealthHealthy, Region: "eu", Zone: "eu-a"},
	}})
	h.setCatalog(st)
	select {
	case <-c.done:
	case <-time.After(recvTimeout):
		t.Fatal("the stream was not ended once the registry placed the client")
	}
	if code := grpcstatus.Code(c.err); code != codes.Unavailable {
		t.Fatalf("the stream ended with %v, want UNAVAILABLE", c.err)
	}
	c = h.sotw(envoyNode("early"))
	c.request(cds)
	c.recv(cds)
	if p := h.proxy("early"); p.Group != "envoy/sidecar/web/loc=eu/eu-a" || p.LocalitySource != "registry" {
		t.Errorf("after reconnecting: group %q, locality from %q; want envoy/sidecar/web/loc=eu/eu-a from the registry", p.Group, p.LocalitySource)
	}
}
