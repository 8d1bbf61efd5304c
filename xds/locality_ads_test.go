package xds_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

// The snapshot loop places clients whose node names no locality.
var _ xds.LocalityResolver = (*snapshot.Loop)(nil)

// TestADSLocalityFromRegistry: with the loop and server wired as in
// production, an Envoy whose node names no locality, connecting from the
// address of an instance of its service, is placed in that instance's
// locality (its group says so, and so does the admin view) and served;
// one whose node names a locality keeps it.
func TestADSLocalityFromRegistry(t *testing.T) {
	h := newHarness(t)
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
