package xds_test

import (
	"context"
	"fmt"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-mesh/sluice/sources"
)

// bigCatalog has enough endpoints that one EDS response overflows HTTP/2's
// initial flow-control window, so a client that stops reading blocks the
// server's sends to it.
func bigCatalog(services int, health sources.Health) sources.State {
	st := sources.State{}
	for s := range services {
		svc := sources.Service{Name: fmt.Sprintf("svc-%03d", s)}
		for i := range 10 {
			h := sources.HealthHealthy
			if s == 0 && i == 0 {
				h = health
			}
			svc.Instances = append(svc.Instances, sources.Instance{
				Address: fmt.Sprintf("10.%d.%d.%d", s/250, s%250, i+1), Port: 8080, Health: h, Zone: "z1",
			})
		}
		st.Services = append(st.Services, svc)
	}
	return st
}

// TestSlowReadersDoNotStallOthers: with streams that subscribed and then
// stopped reading (each on its own connection, as a stuck proxy would be),
// every other proxy still receives each change.
func TestSlowReadersDoNotStallOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("many streams; skipped with -short")
	}
	h := newHarness(t)
	h.syncCatalog(bigCatalog(300, sources.HealthHealthy))
	var clusters []string
	for s := range 300 {
		clusters = append(clusters, fmt.Sprintf("svc-%03d", s))
	}

	// Stuck proxies: subscribe to everything, never read.
	for i := range 20 {
		conn, err := grpc.NewClient(h.conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		ctx, cancel := context.WithCancel(h.ctx)
		t.Cleanup(cancel)
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		node := envoyNode(fmt.Sprintf("stuck-%d", i))
		for _, req := range []*discoveryv3.DiscoveryRequest{
			{Node: node, TypeUrl: resource.ClusterType},
			{Node: node, TypeUrl: resource.EndpointType, ResourceNames: clusters},
		} {
			if err := stream.Send(req); err != nil {
				t.Fatal(err)
			}
		}
	}

	readers := make([]*sotwClient, 100)
	for i := range readers {
		c := h.sotw(envoyNode(fmt.Sprintf("reader-%d", i)))
		c.request(cds)
		c.ack(c.recv(cds))
		c.request(eds, clusters...)
		c.ack(c.recv(eds), clusters...)
		readers[i] = c
	}

	for round, health := range []sources.Health{sources.HealthUnhealthy, sources.HealthHealthy} {
		h.setCatalog(bigCatalog(300, health))
		for i, c := range readers {
			resp := c.recv(eds)
			if len(resp.GetResources()) != 1 {
				t.Fatalf("round %d, reader %d: %d load assignments, want only the changed one", round, i, len(resp.GetResources()))
			}
			c.ack(resp, clusters...)
		}
	}
}
