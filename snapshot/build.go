package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sluice-mesh/sluice/envoy"
	"google.golang.org/protobuf/proto"
)

// Build turns translated resources into a go-control-plane snapshot whose
// version for each type is a content hash of that type's resources. Equal
// resources give equal versions on every replica and after every restart, and
// a type whose resources did not change keeps its version, so it is not pushed.
func Build(resources map[resource.Type][]types.Resource) (*cache.Snapshot, error) {
	return NewBuilder().Build(resources)
}

// Builder builds snapshots like Build and remembers, by identity, what it
// worked out about each resource of its last build: its content hash, and
// the names it refers to. Fed by an incremental translation, which hands
// unchanged resources back as the same values in the same order, a build
// then marshals only what changed and otherwise compares pointers.
// Resources must not be modified once built. A Builder is not safe for
// concurrent use.
type Builder struct {
	last map[resource.Type]*built
	// shared, when set, is what this Builder shares with the Builders of
	// other proxy groups.
	shared *Shared
}

// built is one type of the last build, in name order.
type built struct {
	items []types.Resource
	facts []*resourceFacts
	// res is the snapshot's resources of the type.
	res cache.Resources
	// names and refs are multiset hashes of the names and of the names
	// referred to: two builts with equal ones refer and are referred to
	// alike.
	names, refs uint64
}

type resourceFacts struct {
	name string
	// nameMix and refsMix are this resource's terms of built.names and
	// built.refs.
	nameMix, refsMix uint64
	// mix is this resource's term of its type's version: a hash of its
	// name and content.
	mix [2]uint64
	// refs are the names of the resources this one refers to: a cluster's
	// load assignment, a listener's route configurations.
	refs []string
}

// NewBuilder returns a Builder with nothing remembered.
func NewBuilder() *Builder {
	return &Builder{last: map[resource.Type]*built{}}
}

// Build is Build, reusing what b remembers.
func (b *Builder) Build(resources map[resource.Type][]types.Resource) (*cache.Snapshot, error) {
	snap := &cache.Snapshot{}
	next := make(map[resource.Type]*built, len(resources))
	unchanged := len(resources) == len(b.last)
	for typ, items := range resources {
		idx := cache.GetResponseType(typ)
		if idx == types.UnknownType {
			return nil, fmt.Errorf("building snapshot: unknown resource type %q", typ)
		}
		prev := b.last[typ]
		cur, err := b.built(typ, items, prev)
		if err != nil {
			return nil, fmt.Errorf("building snapshot: %s: %w", typ, err)
		}
		unchanged = unchanged && prev != nil && cur.names == prev.names && cur.refs == prev.refs && len(cur.facts) == len(prev.facts)
		next[typ] = cur
		snap.Resources[idx] = cur.res
	}
	// References only change with names: equal names, equal answer (and
	// the last build's was yes).
	if !unchanged {
		if err := checkReferences(next); err != nil {
			return nil, err
		}
	}
	b.last = next
	return snap, nil
}

// built works out a type's facts and resources for items: the last
// build's when items is the very list it had (an incremental translation
// hands unchanged lists back), another group's when the list is shared
// with it, otherwise from the facts of each resource.
func (b *Builder) built(typ resource.Type, items []types.Resource, prev *built) (*built, error) {
	if prev != nil && sameList(prev.items, items) {
		return prev, nil
	}
	if cur := b.shared.list(items); cur != nil {
		return cur, nil
	}
	cur, err := b.facts(typ, items)
	if err != nil {
		return nil, err
	}
	version := contentVersion(cur.facts)
	for _, f := range cur.facts {
		cur.names += f.nameMix
		cur.refs += f.refsMix
	}
	switch {
	case prev != nil && prev.res.Version == version:
		// Unchanged content: the last build's resources (and their
		// index by name) serve again.
		cur.res = prev.res
	default:
		if res, ok := b.shared.resources(typ, version, len(items)); ok {
			cur.res = res
		} else {
			cur.res = cache.NewResources(version, cur.items)
			b.shared.addResources(typ, cur.res, len(items))
		}
	}
	b.shared.addList(items, cur)
	return cur, nil
}

// sameList reports whether a and b are the same list (same elements in the
// same backing array).
func sameList(a, b []types.Resource) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0]
}

// facts works out the facts of items, sorted by name, taking those of
// resources the last build had from there: by position first (the common
// case: the same resources in the same order), else by identity.
func (b *Builder) facts(typ resource.Type, items []types.Resource) (*built, error) {
	prev := b.last[typ]
	if prev == nil {
		prev = &built{}
	}
	cur := &built{items: items, facts: make([]*resourceFacts, len(items))}
	var byRes map[types.Resource]*resourceFacts
	for i, r := range items {
		if i < len(prev.items) && prev.items[i] == r {
			cur.facts[i] = prev.facts[i]
			continue
		}
		if byRes == nil {
			byRes = make(map[types.Resource]*resourceFacts, len(prev.items))
			for j, p := range prev.items {
				byRes[p] = prev.facts[j]
			}
		}
		if f := byRes[r]; f != nil {
			cur.facts[i] = f
			continue
		}
		if f := b.shared.facts(r); f != nil {
			cur.facts[i] = f
			continue
		}
		f, err := newFacts(typ, r)
		if err != nil {
			return nil, err
		}
		b.shared.addFacts(r, f)
		cur.facts[i] = f
	}
	byName := func(i, j int) int { return strings.Compare(cur.facts[i].name, cur.facts[j].name) }
	if !isSorted(len(items), byName) {
		order := make([]int, len(items))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, byName)
		sorted := &built{items: make([]types.Resource, len(items)), facts: make([]*resourceFacts, len(items))}
		for i, j := range order {
			sorted.items[i], sorted.facts[i] = items[j], cur.facts[j]
		}
		cur = sorted
	}
	for i := 1; i < len(cur.facts); i++ {
		if cur.facts[i].name == cur.facts[i-1].name {
			// The snapshot indexes by name: one of them would be lost.
			return nil, fmt.Errorf("%q is listed twice", cur.facts[i].name)
		}
	}
	return cur, nil
}

func isSorted(n int, cmp func(i, j int) int) bool {
	for i := 1; i < n; i++ {
		if cmp(i-1, i) > 0 {
			return false
		}
	}
	return true
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// newFacts marshals r to hash it and finds the names it refers to.
func newFacts(typ resource.Type, r types.Resource) (*resourceFacts, error) {
	f := &resourceFacts{name: cache.GetResourceName(r)}
	data, err := deterministic.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("marshalling %q: %w", f.name, err)
	}
	content := sha256.Sum256(data)
	h := sha256.New()
	var lenbuf [8]byte
	putLen(lenbuf[:], len(f.name))
	h.Write(lenbuf[:])
	h.Write([]byte(f.name))
	h.Write(content[:])
	sum := h.Sum(nil)
	f.mix = [2]uint64{binary.LittleEndian.Uint64(sum), binary.LittleEndian.Uint64(sum[8:])}
	nh := fnv.New64a()
	nh.Write([]byte(f.name))
	f.nameMix = nh.Sum64()
	if k, ok := envoy.KindOf(typ); ok && k.Refs != nil {
		if f.refs, err = k.Refs(r); err != nil {
			return nil, fmt.Errorf("%s %q: %w", k.Noun, f.name, err)
		}
	}
	for _, ref := range f.refs {
		rh := fnv.New64a()
		rh.Write([]byte(ref))
		f.refsMix += rh.Sum64()
	}
	return f, nil
}

// contentVersion combines the terms of every resource of a type by
// addition (a multiset hash): it depends on the names and contents only,
// not on order, and costs two additions per resource on every build, the
// hashing having been done once per resource value.
func contentVersion(facts []*resourceFacts) string {
	var sum [2]uint64
	for _, f := range facts {
		sum[0] += f.mix[0]
		sum[1] += f.mix[1]
	}
	// An empty type is told apart from a type whose terms cancel out.
	return fmt.Sprintf("%016x", sum[0]^sum[1]^uint64(len(facts)))
}

func putLen(b []byte, n int) {
	for i := range b {
		b[i] = byte(n >> (8 * i))
	}
}

// checkReferences checks, with every type's facts in name order, that the
// load assignments the clusters name are exactly the snapshot's load
// assignments, and the route configurations the listeners name exactly its
// route configurations (including gRPC's API listeners, which
// go-control-plane's Consistent() does not follow). A client that got a
// dangling reference would wait forever for the missing resource.
func checkReferences(all map[resource.Type]*built) error {
	for _, k := range envoy.Kinds {
		if k.RefersTo == "" {
			continue
		}
		pair := struct{ from, to resource.Type }{k.Type, k.RefersTo}
		var want []string
		if b := all[pair.from]; b != nil {
			for _, f := range b.facts {
				want = append(want, f.refs...)
			}
		}
		if !slices.IsSorted(want) {
			slices.Sort(want)
		}
		want = slices.Compact(want)
		var have []string
		if b := all[pair.to]; b != nil {
			have = make([]string, len(b.facts))
			for i, f := range b.facts {
				have[i] = f.name
			}
		}
		// Both lists are sorted: walk them together. A dangling reference
		// is reported before a resource nothing needs (it is the one
		// that leaves a client waiting).
		var unused string
		i, j := 0, 0
		for i < len(want) || j < len(have) {
			switch {
			case j == len(have) || i < len(want) && want[i] < have[j]:
				return fmt.Errorf("inconsistent snapshot: %s %q is referenced but missing", shortType(pair.to), want[i])
			case i == len(want) || have[j] < want[i]:
				if unused == "" {
					unused = have[j]
				}
				j++
				continue
			}
			i++
			j++
		}
		if unused != "" {
			return fmt.Errorf("inconsistent snapshot: %s %q is not referenced by anything", shortType(pair.to), unused)
		}
	}
	return nil
}

func shortType(typ resource.Type) string {
	if k, ok := envoy.KindOf(typ); ok {
		return k.Noun
	}
	return typ
}

// Versions reports the version of each resource type in snap, for the admin
// API and for change detection.
func Versions(snap *cache.Snapshot) map[resource.Type]string {
	out := map[resource.Type]string{}
	for i := types.ResponseType(0); i < types.UnknownType; i++ {
		if snap.Resources[i].Version == "" {
			continue
		}
		url, err := cache.GetResponseTypeURL(i)
		if err != nil {
			continue
		}
		out[url] = snap.Resources[i].Version
	}
	return out
}
