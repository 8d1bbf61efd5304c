package xds

import (
	"fmt"
	"hash/maphash"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// sotwRequest is a state-of-the-world request as the server receives it.
// Every request of an Envoy repeats its whole subscription: an ACK of a
// load assignment names every cluster of the mesh again. Decoding those
// names costs an allocation each, a thousand per ACK per proxy, for a list
// that is almost always the one the client sent last. So the codec leaves
// them encoded, with a hash of their encoding, and the session decodes
// them only when the hash differs from the last request's.
type sotwRequest struct {
	discoveryv3.DiscoveryRequest
	names requestNames
}

// requestNames is the resource names of a state-of-the-world request.
type requestNames struct {
	// decoded is the names, once decoded (or when they never were
	// encoded: a request built in a test, see applySotw).
	decoded []string
	// raw is the names' encoding (their fields of a DiscoveryRequest), n
	// their number and hash a hash of raw; hashed says raw and hash are
	// set.
	raw    []byte
	n      int
	hash   uint64
	hashed bool
}

// list returns the names, decoding them if needed; a name that is not
// valid UTF-8 is an error, as it is for any proto3 string.
func (r *requestNames) list() ([]string, error) {
	if r.decoded != nil || r.n == 0 {
		return r.decoded, nil
	}
	var m discoveryv3.DiscoveryRequest
	if err := proto.Unmarshal(r.raw, &m); err != nil {
		return nil, fmt.Errorf("decoding the request's resource names: %w", err)
	}
	r.decoded = m.ResourceNames
	return r.decoded, nil
}

// sameAs reports whether the names are the very list whose hash and number
// were seen before (a 64-bit hash of the encoding, with a seed chosen when
// the process starts: a change of the list goes unseen with a probability
// of about 2^-64).
func (r *requestNames) sameAs(hash uint64, n int) bool {
	return r.hashed && r.hash == hash && r.n == n
}

// resourceNamesField is resource_names' field number in DiscoveryRequest.
const resourceNamesField = 3

// unmarshalSotwRequest decodes b into r, leaving the resource names
// encoded.
func unmarshalSotwRequest(seed maphash.Seed, b []byte, r *sotwRequest) error {
	var rest, names []byte
	n := 0
	for off := 0; off < len(b); {
		num, typ, tagLen := protowire.ConsumeTag(b[off:])
		if tagLen < 0 {
			return protowire.ParseError(tagLen)
		}
		valLen := protowire.ConsumeFieldValue(num, typ, b[off+tagLen:])
		if valLen < 0 {
			return protowire.ParseError(valLen)
		}
		field := b[off : off+tagLen+valLen]
		if num == resourceNamesField && typ == protowire.BytesType {
			names = append(names, field...)
			n++
		} else {
			rest = append(rest, field...)
		}
		off += tagLen + valLen
	}
	if err := proto.Unmarshal(rest, &r.DiscoveryRequest); err != nil {
		return err
	}
	r.names = requestNames{raw: names, n: n, hash: maphash.Bytes(seed, names), hashed: true}
	return nil
}
