package loadgen

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestLightCodecDecodesWhatProxiesRead encodes responses with every field
// the simulated proxies read (and some they do not) and expects the light
// decode to equal a full decode on the fields they read.
func TestLightCodecDecodesWhatProxiesRead(t *testing.T) {
	c, err := newLightCodec()
	if err != nil {
		t.Fatal(err)
	}
	var anys []*anypb.Any
	for _, name := range []string{"svc-a", "svc-b", "svc-c"} {
		a, err := anypb.New(&clusterv3.Cluster{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		anys = append(anys, a)
	}
	sotw := &discoveryv3.DiscoveryResponse{VersionInfo: "v1", Resources: anys, TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Nonce: "7",
		ControlPlane: &corev3.ControlPlane{Identifier: "not read"}}
	delta := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "s1", TypeUrl: sotw.TypeUrl, Nonce: "8", RemovedResources: []string{"gone-1", "gone-2"},
		ControlPlane: sotw.ControlPlane}
	for i, a := range anys {
		delta.Resources = append(delta.Resources, &discoveryv3.Resource{Name: []string{"svc-a", "svc-b", "svc-c"}[i], Version: "h" + string(rune('0'+i)), Resource: a})
	}
	for _, tc := range []struct {
		in, light proto.Message
	}{
		{sotw, &discoveryv3.DiscoveryResponse{}},
		{delta, &discoveryv3.DeltaDiscoveryResponse{}},
	} {
		b, err := proto.Marshal(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, tc.light); err != nil {
			t.Fatalf("light decode: %v", err)
		}
		// What is not read is left out: the names and versions of delta
		// resources, the control plane.
		want := proto.Clone(tc.in)
		switch w := want.(type) {
		case *discoveryv3.DiscoveryResponse:
			w.ControlPlane = nil
		case *discoveryv3.DeltaDiscoveryResponse:
			w.ControlPlane = nil
			for _, r := range w.Resources {
				r.Name, r.Version = "", ""
			}
		}
		if diff := cmp.Diff(want, tc.light, protocmp.Transform()); diff != "" {
			t.Errorf("light decode differs from the message (-want +got):\n%s", diff)
		}
	}
	// Anything else is decoded in full.
	req := &discoveryv3.DiscoveryRequest{VersionInfo: "v1", ResourceNames: []string{"a"}}
	enc, err := c.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	got := &discoveryv3.DiscoveryRequest{}
	if err := c.Unmarshal(enc, got); err != nil || !proto.Equal(got, req) {
		t.Fatalf("request round trip: %v, %v", got, err)
	}
	// A truncated message is an error, not a partial response.
	b, _ := proto.Marshal(sotw)
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:len(b)-3])}, &discoveryv3.DiscoveryResponse{}); err == nil {
		t.Fatal("truncated response decoded without error")
	}
}
