package xds

import (
	"context"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
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

// BenchmarkFanOut measures what one changed load assignment costs the cache
// when 1,000 clients hold all of 1,000: publishing the snapshot and
// answering every client (each response taken and ACKed the way
// go-control-plane's server does), per change. The gRPC send is not
// included (see the codec and sluice load for that).
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
			node := &corev3.Node{Id: "bench", Cluster: "web"}
			key := NodeHash{}.ID(node)
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
			type client struct {
				sub  stream.Subscription
				out  chan cache.Response
				dout chan cache.DeltaResponse
			}
			cs := make([]*client, clients)
			watch := func(cl *client) {
				var err error
				if delta {
					_, err = c.CreateDeltaWatch(&cache.DeltaRequest{Node: node, TypeUrl: resource.EndpointType}, cl.sub, cl.dout)
				} else {
					_, err = c.CreateWatch(&cache.Request{Node: node, TypeUrl: resource.EndpointType, ResourceNames: names}, cl.sub, cl.out)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			// take reads the client's response, records what it now holds
			// and opens the next watch (its ACK).
			take := func(cl *client) int {
				var n int
				if delta {
					r := <-cl.dout
					cl.sub.SetReturnedResources(r.GetNextVersionMap())
					d, _ := r.GetDeltaDiscoveryResponse()
					n = len(d.GetResources())
				} else {
					r := <-cl.out
					cl.sub.SetReturnedResources(r.GetReturnedResources())
					d, _ := r.GetDiscoveryResponse()
					n = len(d.GetResources())
				}
				watch(cl)
				return n
			}
			for i := range cs {
				cl := &client{out: make(chan cache.Response, 1), dout: make(chan cache.DeltaResponse, 1)}
				if delta {
					cl.sub = stream.NewDeltaSubscription(names, nil, nil, false)
				} else {
					cl.sub = stream.NewSotwSubscription(names, false)
				}
				cs[i] = cl
				watch(cl)
				if n := take(cl); n != services {
					b.Fatalf("initial response has %d resources, want %d", n, services)
				}
			}
			i := 0
			for b.Loop() {
				rs[i%services] = benchCLA(names[i%services], uint32(9000+i))
				i++
				publish()
				for _, cl := range cs {
					if n := take(cl); n != 1 {
						b.Fatalf("a change of one load assignment sent %d", n)
					}
				}
			}
		})
	}
}
