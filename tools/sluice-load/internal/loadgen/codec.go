package loadgen

import (
	"fmt"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// lightCodec is the simulated proxies' gRPC codec. Requests are encoded by
// gRPC's proto codec; responses are decoded into only the fields a proxy
// reads (versions, nonce, type, removed names and each resource as an Any,
// which a proxy reads the names it needs from), with every resource
// pointing into one copy of the message. A full
// decode allocates every resource twice over, and with a thousand proxies
// on the server's own cores that cost would be measured as the server's.
type lightCodec struct {
	base encoding.CodecV2
}

func newLightCodec() (lightCodec, error) {
	base := encoding.GetCodecV2("proto")
	if base == nil {
		return lightCodec{}, fmt.Errorf("gRPC's proto codec is not registered")
	}
	return lightCodec{base: base}, nil
}

func (c lightCodec) Name() string { return c.base.Name() }

func (c lightCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c lightCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *discoveryv3.DiscoveryResponse:
		return decodeSotw(data.Materialize(), m)
	case *discoveryv3.DeltaDiscoveryResponse:
		return decodeDelta(data.Materialize(), m)
	}
	return c.base.Unmarshal(data, v)
}

// fields walks the top-level fields of an encoded message, calling f with
// each length-delimited one; other wire types are skipped.
func fields(b []byte, f func(num protowire.Number, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := f(num, v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// count is the number of times field num occurs at the top level of b.
func count(b []byte, num protowire.Number) (int, error) {
	n := 0
	err := fields(b, func(got protowire.Number, _ []byte) error {
		if got == num {
			n++
		}
		return nil
	})
	return n, err
}

// decodeAny fills in an Any from its encoding; the value aliases b. The
// resources of a response share their type URL: *typeURL holds the last
// one, so it is allocated once per response.
func decodeAny(b []byte, a *anypb.Any, typeURL *string) error {
	return fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			if string(v) != *typeURL {
				*typeURL = string(v)
			}
			a.TypeUrl = *typeURL
		case 2:
			a.Value = v
		}
		return nil
	})
}

// decodeSotw reads a DiscoveryResponse's version_info (1), resources (2),
// type_url (4) and nonce (5).
func decodeSotw(b []byte, m *discoveryv3.DiscoveryResponse) error {
	n, err := count(b, 2)
	if err != nil {
		return err
	}
	slab := make([]anypb.Any, n)
	m.Resources = make([]*anypb.Any, 0, n)
	var typeURL string
	return fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			m.VersionInfo = string(v)
		case 2:
			a := &slab[len(m.Resources)]
			m.Resources = append(m.Resources, a)
			return decodeAny(v, a, &typeURL)
		case 4:
			m.TypeUrl = string(v)
		case 5:
			m.Nonce = string(v)
		}
		return nil
	})
}

// decodeDelta reads a DeltaDiscoveryResponse's system_version_info (1),
// resources (2: only their resource, 2), type_url (4), nonce (5) and
// removed_resources (6).
func decodeDelta(b []byte, m *discoveryv3.DeltaDiscoveryResponse) error {
	n, err := count(b, 2)
	if err != nil {
		return err
	}
	slab := make([]discoveryv3.Resource, n)
	anys := make([]anypb.Any, n)
	m.Resources = make([]*discoveryv3.Resource, 0, n)
	var typeURL string
	return fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			m.SystemVersionInfo = string(v)
		case 2:
			i := len(m.Resources)
			r := &slab[i]
			m.Resources = append(m.Resources, r)
			return fields(v, func(num protowire.Number, v []byte) error {
				if num == 2 {
					r.Resource = &anys[i]
					return decodeAny(v, r.Resource, &typeURL)
				}
				return nil
			})
		case 4:
			m.TypeUrl = string(v)
		case 5:
			m.Nonce = string(v)
		case 6:
			m.RemovedResources = append(m.RemovedResources, string(v))
		}
		return nil
	})
}
