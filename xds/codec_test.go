package xds

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/google/go-cmp/cmp"
)

// TestCodecSharedEncodingRoundTrips: a response whose resource list is
// shared decodes to exactly the response, and so does one that is not.
func TestCodecSharedEncodingRoundTrips(t *testing.T) {
	shared := &sharedEncodings{}
	c, err := newCodec(shared)
	if err != nil {
		t.Fatal(err)
	}
	var rs []*anypb.Any
	for _, id := range []string{"a", "b", "c"} {
		a, err := anypb.New(&corev3.Node{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, a)
	}
	shared.shareSotw(rs)
	delta := []*discoveryv3.Resource{{Name: "a", Version: "1", Resource: rs[0]}, {Name: "b", Version: "2", Resource: rs[1]}}
	shared.shareDelta(delta)

	for _, msg := range []proto.Message{
		&discoveryv3.DiscoveryResponse{VersionInfo: "v1", Resources: rs, TypeUrl: "t", Nonce: "7"},
		&discoveryv3.DiscoveryResponse{VersionInfo: "v1", Resources: rs[1:], TypeUrl: "t", Nonce: "8"}, // not shared
		&discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "v2", Resources: delta, RemovedResources: []string{"x"}, TypeUrl: "t", Nonce: "9"},
	} {
		buf, err := c.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		got := msg.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(buf.Materialize(), got); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(msg, got, protocmp.Transform()); d != "" {
			t.Errorf("round trip (-sent +decoded):\n%s", d)
		}
	}
	if n := len(mustMarshal(t, c, &discoveryv3.DiscoveryResponse{Resources: rs})); n != 2 {
		t.Errorf("shared response encoded as %d buffers, want head + shared bytes", n)
	}
	shared.forgetSotw(rs)
	if n := len(mustMarshal(t, c, &discoveryv3.DiscoveryResponse{Resources: rs})); n == 2 {
		t.Error("forgotten list still encoded from the shared bytes")
	}
}

func mustMarshal(t *testing.T, c codec, m proto.Message) [][]byte {
	t.Helper()
	buf, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, b := range buf {
		out = append(out, b.ReadOnlyData())
	}
	return out
}
