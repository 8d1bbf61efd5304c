package xds

import (
	"hash/maphash"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

func encodeRequest(t *testing.T, req *discoveryv3.DiscoveryRequest) []byte {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSotwRequestLeavesNamesEncoded: the codec decodes everything of a
// state-of-the-world request but its names, which decode on demand to
// exactly what was sent; the same names hash the same, another order or
// another name does not.
func TestSotwRequestLeavesNamesEncoded(t *testing.T) {
	seed := maphash.MakeSeed()
	sent := &discoveryv3.DiscoveryRequest{
		VersionInfo: "v1", Node: &corev3.Node{Id: "n", Cluster: "web"}, TypeUrl: resource.EndpointType,
		ResourceNames: []string{"a", "b", "c"}, ResponseNonce: "4", ErrorDetail: &status.Status{Code: 3, Message: "bad"},
	}
	var got sotwRequest
	if err := unmarshalSotwRequest(seed, encodeRequest(t, sent), &got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceNames != nil || got.names.decoded != nil {
		t.Fatalf("the names were decoded with the request: %v", got.ResourceNames)
	}
	names, err := got.names.list()
	if err != nil {
		t.Fatal(err)
	}
	got.ResourceNames = names
	if d := cmp.Diff(sent, &got.DiscoveryRequest, protocmp.Transform()); d != "" {
		t.Errorf("decoded request (-sent +got):\n%s", d)
	}

	hashOf := func(names ...string) requestNames {
		var r sotwRequest
		if err := unmarshalSotwRequest(seed, encodeRequest(t, &discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names}), &r); err != nil {
			t.Fatal(err)
		}
		return r.names
	}
	same := hashOf("a", "b", "c")
	if !same.sameAs(got.names.hash, got.names.n) {
		t.Error("the same names, in another request, hash differently")
	}
	for _, other := range [][]string{{"b", "a", "c"}, {"a", "b"}, {"a", "b", "d"}, {"a", "b", "c", "*"}} {
		if o := hashOf(other...); o.sameAs(got.names.hash, got.names.n) {
			t.Errorf("%v taken for the same names as [a b c]", other)
		}
	}
}

// TestSotwRequestNamesInterleaved: names need not be one run of fields in
// the encoding; the others fields between them are decoded all the same.
func TestSotwRequestNamesInterleaved(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, resourceNamesField, protowire.BytesType)
	b = protowire.AppendString(b, "x")
	b = protowire.AppendTag(b, 4, protowire.BytesType) // type_url
	b = protowire.AppendString(b, resource.ClusterType)
	b = protowire.AppendTag(b, resourceNamesField, protowire.BytesType)
	b = protowire.AppendString(b, "y")
	var got sotwRequest
	if err := unmarshalSotwRequest(maphash.MakeSeed(), b, &got); err != nil {
		t.Fatal(err)
	}
	names, err := got.names.list()
	if err != nil {
		t.Fatal(err)
	}
	if got.TypeUrl != resource.ClusterType || !slices.Equal(names, []string{"x", "y"}) || got.names.n != 2 {
		t.Errorf("got type %q and names %v (n=%d), want %q and [x y]", got.TypeUrl, names, got.names.n, resource.ClusterType)
	}
}

// TestSotwRequestBadNames: a name that is not UTF-8 is refused when the
// names are decoded, and a truncated request at once.
func TestSotwRequestBadNames(t *testing.T) {
	var b []byte
	b = protowire.AppendTag(b, resourceNamesField, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0xff, 0xfe})
	var got sotwRequest
	if err := unmarshalSotwRequest(maphash.MakeSeed(), b, &got); err != nil {
		t.Fatal(err)
	}
	if _, err := got.names.list(); err == nil {
		t.Error("a name that is not UTF-8 decoded without error")
	}
	if err := unmarshalSotwRequest(maphash.MakeSeed(), b[:len(b)-1], &got); err == nil {
		t.Error("a truncated request decoded without error")
	}
}

// TestSessionSkipsRepeatedNames: an ACK whose names are encoded exactly as
// the last request's is applied without decoding them; a different list
// is decoded and applied.
func TestSessionSkipsRepeatedNames(t *testing.T) {
	seed := maphash.MakeSeed()
	var s session
	request := func(nonce string, names ...string) *sotwRequest {
		t.Helper()
		r := new(sotwRequest)
		if err := unmarshalSotwRequest(seed, encodeRequest(t, &discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names, ResponseNonce: nonce}), r); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.sotwApply(&r.DiscoveryRequest, &r.names); err != nil {
			t.Fatal(err)
		}
		return r
	}
	request("", "a", "b")
	sub := s.types[types.Endpoint]
	for _, n := range []string{"a", "b"} {
		if !sub.names.has(n) {
			t.Fatalf("subscription lacks %s", n)
		}
	}
	if r := request("", "a", "b"); r.names.decoded != nil {
		t.Error("a request repeating the names decoded them")
	}
	if r := request("", "a", "c"); r.names.decoded == nil || sub.names.has("b") || !sub.names.has("c") {
		t.Errorf("a request with other names: decoded %v, subscription has b: %v, c: %v", r.names.decoded, sub.names.has("b"), sub.names.has("c"))
	}
}
