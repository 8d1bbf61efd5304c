package xds

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

func benchCLA(name string, port uint32) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for i := range 10 {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: fmt.Sprintf("10.0.0.%d", i+1), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
		}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

// BenchmarkFanOut measures what one changed load assignment costs when
// 1,000 clients hold all of 1,000: publishing the snapshot, and answering
// every client the way its stream does (the wake-up's response, then the
// client's ACK, which repeats its 1,000 names), per change. The gRPC send
// is not included (see the codec and sluice load for that).
//
//	go test -run '^$' -bench FanOut -benchmem ./xds/
func BenchmarkFanOut(b *testing.B) {
	const clients, services = 1000, 1000
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			c := NewCache(nil)
			node := &corev3.Node{Id: "n1", Cluster: "web"}
			key := nodeKey(node)
			rs := make([]types.Resource, services)
			names := make([]string, services)
			for i := range rs {
				names[i] = fmt.Sprintf("svc-%04d", i)
				rs[i] = benchCLA(names[i], 8080)
			}
			publish := func() {
				snap, err := cache.NewSnapshot("", map[resource.Type][]types.Resource{resource.EndpointType: rs})
				if err != nil {
					b.Fatal(err)
				}
				if err := c.SetSnapshot(ctx, key, snap); err != nil {
					b.Fatal(err)
				}
			}
			publish()
			// take answers a wake-up of one client and its ACK; it returns
			// the number of resources sent.
			var take []func() int
			for range clients {
				if delta {
					dc := newDeltaClient(b, c, node, names...)
					if r := dc.request(nil); len(r.GetResources()) != services {
						b.Fatalf("initial response has %d resources, want %d", len(r.GetResources()), services)
					}
					take = append(take, func() int {
						n := len(dc.poll().GetResources())
						if dc.request(nil) != nil {
							b.Fatal("an ACK was answered")
						}
						return n
					})
				} else {
					cc := newCacheClient(b, c, resource.EndpointType, names...)
					if r := cc.request(false); len(r.GetResources()) != services {
						b.Fatalf("initial response has %d resources, want %d", len(r.GetResources()), services)
					}
					take = append(take, func() int {
						n := len(cc.poll().GetResources())
						if cc.request(false) != nil {
							b.Fatal("an ACK was answered")
						}
						return n
					})
				}
			}
			for _, f := range take {
				f() // the ACK of the initial response
			}
			i := 0
			for b.Loop() {
				rs[i%services] = benchCLA(names[i%services], uint32(9000+i))
				i++
				publish()
				for _, f := range take {
					if n := f(); n != 1 {
						b.Fatalf("a change of one load assignment sent %d", n)
					}
				}
			}
		})
	}
}

// BenchmarkTrackerPushAck measures what the tracker's record of one push
// costs a stream: the response recorded, then the client's ACK of it.
//
//	go test -run '^$' -bench TrackerPushAck -benchmem ./xds/
func BenchmarkTrackerPushAck(b *testing.B) {
	tr := NewTracker(&groupRecorder{}, slog.New(slog.DiscardHandler), nil, nil)
	node := &corev3.Node{Id: "n1", Cluster: "web", UserAgentName: "envoy"}
	ctx := context.Background()
	tr.open(ctx, 1, false)
	if _, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType}); err != nil {
		b.Fatal(err)
	}
	versions := []string{"v1", "v2"}
	nonces := make([]string, 1024)
	for i := range nonces {
		nonces[i] = fmt.Sprint(i)
	}
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: resource.EndpointType}
	ack := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.EndpointType}
	i := 0
	for b.Loop() {
		resp.VersionInfo, resp.Nonce = versions[i%2], nonces[i%len(nonces)]
		tr.responseSotw(ctx, 1, resp, holding{})
		ack.VersionInfo, ack.ResponseNonce = resp.VersionInfo, resp.Nonce
		if _, err := tr.requestSotw(1, ack); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
