package xds

import (
	"fmt"
	"hash/maphash"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the default codec this one wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// sharedEncodings holds the wire encoding of resource lists that many
// responses share. gRPC encodes every message it sends, so without it each
// of a thousand proxies getting the same thousand clusters costs a thousand
// encodings (and buffers) of the same bytes. A response is encoded as its
// own small fields followed by the shared bytes of its resources: protobuf
// merges concatenated encodings of a message, appending repeated fields.
type sharedEncodings struct {
	sotw  sync.Map // sotwKey -> []byte
	delta sync.Map // deltaKey -> []byte
}

// The keys identify a slice by the address of its first element and its
// length. The registry keeps the slice alive while its entry exists, so the
// address cannot be reused by another slice in the meantime.
type sotwKey struct {
	first **anypb.Any
	n     int
}

type deltaKey struct {
	first **discoveryv3.Resource
	n     int
}

type sotwEntry struct {
	keep []*anypb.Any
	enc  []byte
}

type deltaEntry struct {
	keep []*discoveryv3.Resource
	enc  []byte
}

// shareSotw registers a resource list that several responses will carry.
func (s *sharedEncodings) shareSotw(rs []*anypb.Any) {
	if len(rs) == 0 {
		return
	}
	k := sotwKey{&rs[0], len(rs)}
	if _, ok := s.sotw.Load(k); ok {
		return
	}
	enc, err := proto.Marshal(&discoveryv3.DiscoveryResponse{Resources: rs})
	if err != nil {
		return // the codec falls back to encoding each response
	}
	s.sotw.Store(k, sotwEntry{keep: rs, enc: enc})
}

func (s *sharedEncodings) forgetSotw(rs []*anypb.Any) {
	if len(rs) > 0 {
		s.sotw.Delete(sotwKey{&rs[0], len(rs)})
	}
}

func (s *sharedEncodings) shareDelta(rs []*discoveryv3.Resource) {
	if len(rs) == 0 {
		return
	}
	k := deltaKey{&rs[0], len(rs)}
	if _, ok := s.delta.Load(k); ok {
		return
	}
	enc, err := proto.Marshal(&discoveryv3.DeltaDiscoveryResponse{Resources: rs})
	if err != nil {
		return
	}
	s.delta.Store(k, deltaEntry{keep: rs, enc: enc})
}

func (s *sharedEncodings) forgetDelta(rs []*discoveryv3.Resource) {
	if len(rs) > 0 {
		s.delta.Delete(deltaKey{&rs[0], len(rs)})
	}
}

// codec is gRPC's proto codec, except for responses whose resource list is
// shared: those reuse its encoding.
type codec struct {
	base   encoding.CodecV2
	shared *sharedEncodings
	// seed is the seed of the hashes of requests' resource names.
	seed maphash.Seed
}

func newCodec(shared *sharedEncodings) (codec, error) {
	base := encoding.GetCodecV2("proto")
	if base == nil {
		return codec{}, fmt.Errorf("xds: gRPC's proto codec is not registered")
	}
	return codec{base: base, shared: shared, seed: maphash.MakeSeed()}, nil
}

func (c codec) Name() string { return c.base.Name() }

// Unmarshal is gRPC's, except for state-of-the-world requests, whose
// resource names it leaves encoded (see sotwRequest).
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*sotwRequest); ok {
		// The names and the rest are copied out of gRPC's buffer.
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return unmarshalSotwRequest(c.seed, buf.ReadOnlyData(), r)
	}
	return c.base.Unmarshal(data, v)
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	switch r := v.(type) {
	case *discoveryv3.DiscoveryResponse:
		if len(r.Resources) > 0 {
			if e, ok := c.shared.sotw.Load(sotwKey{&r.Resources[0], len(r.Resources)}); ok {
				// Every field go-control-plane's server sets, but the resources.
				head := &discoveryv3.DiscoveryResponse{
					VersionInfo: r.VersionInfo, Canary: r.Canary, TypeUrl: r.TypeUrl, Nonce: r.Nonce,
					ControlPlane: r.ControlPlane, ResourceErrors: r.ResourceErrors,
				}
				return c.join(head, e.(sotwEntry).enc)
			}
		}
	case *discoveryv3.DeltaDiscoveryResponse:
		if len(r.Resources) > 0 {
			if e, ok := c.shared.delta.Load(deltaKey{&r.Resources[0], len(r.Resources)}); ok {
				head := &discoveryv3.DeltaDiscoveryResponse{
					SystemVersionInfo: r.SystemVersionInfo, TypeUrl: r.TypeUrl, RemovedResources: r.RemovedResources,
					RemovedResourceNames: r.RemovedResourceNames, Nonce: r.Nonce, ControlPlane: r.ControlPlane,
					ResourceErrors: r.ResourceErrors,
				}
				return c.join(head, e.(deltaEntry).enc)
			}
		}
	}
	return c.base.Marshal(v)
}

func (c codec) join(head proto.Message, shared []byte) (mem.BufferSlice, error) {
	h, err := proto.Marshal(head)
	if err != nil {
		return nil, err
	}
	// SliceBuffers are not pooled: gRPC's Free of them is a no-op, so the
	// shared bytes are never recycled under another stream.
	return mem.BufferSlice{mem.SliceBuffer(h), mem.SliceBuffer(shared)}, nil
}
