package snapshot

import (
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// Shared is what the Builders of many proxy groups share: the facts (hash,
// references) of each resource value, the facts of whole resource lists
// that groups share (a translator.Shared hands every group with the same
// view and dependencies the same lists), and the snapshot resources of
// each type version. With it a change to one service costs one hash of
// each changed resource and one index of each changed list for the whole
// mesh; the groups after the first find them here.
//
// Entries not used for a while are forgotten (see Rotate): they cost
// memory, and a group that needs one again rebuilds it. A nil *Shared
// shares nothing. Not safe for concurrent use.
type Shared struct {
	cur, old sharedGen
	rotated  time.Time
}

type sharedGen struct {
	facts map[types.Resource]*resourceFacts
	lists map[listKey]*sharedList
	res   map[resKey]cache.Resources
}

type listKey struct {
	first *types.Resource
	n     int
}

type sharedList struct {
	// items keeps the list alive, so that its address is not reused by
	// another list while the entry exists.
	items []types.Resource
	built *built
}

type resKey struct {
	typ     resource.Type
	version string
	n       int
}

// SharedTTL is how long an entry unused stays in a Shared: between one and
// two rotations.
const SharedTTL = time.Minute

// NewShared returns an empty Shared.
func NewShared() *Shared {
	s := &Shared{}
	s.cur = newSharedGen()
	s.old = newSharedGen()
	return s
}

func newSharedGen() sharedGen {
	return sharedGen{
		facts: map[types.Resource]*resourceFacts{},
		lists: map[listKey]*sharedList{},
		res:   map[resKey]cache.Resources{},
	}
}

// NewBuilder returns a Builder that shares with the others of s.
func (s *Shared) NewBuilder() *Builder {
	b := NewBuilder()
	b.shared = s
	return b
}

// Rotate forgets what was not used since the rotation before the last one,
// once SharedTTL passed since the last rotation.
func (s *Shared) Rotate(now time.Time) {
	if s == nil || now.Sub(s.rotated) < SharedTTL {
		return
	}
	s.rotated = now
	s.old = s.cur
	s.cur = newSharedGen()
}

func (s *Shared) facts(r types.Resource) *resourceFacts {
	if s == nil {
		return nil
	}
	if f := s.cur.facts[r]; f != nil {
		return f
	}
	f := s.old.facts[r]
	if f != nil {
		s.cur.facts[r] = f
	}
	return f
}

func (s *Shared) addFacts(r types.Resource, f *resourceFacts) {
	if s != nil {
		s.cur.facts[r] = f
	}
}

func keyOf(items []types.Resource) (listKey, bool) {
	if len(items) == 0 {
		return listKey{}, false
	}
	return listKey{&items[0], len(items)}, true
}

func (s *Shared) list(items []types.Resource) *built {
	k, ok := keyOf(items)
	if s == nil || !ok {
		return nil
	}
	if e := s.cur.lists[k]; e != nil {
		return e.built
	}
	e := s.old.lists[k]
	if e == nil {
		return nil
	}
	s.cur.lists[k] = e
	return e.built
}

func (s *Shared) addList(items []types.Resource, b *built) {
	if k, ok := keyOf(items); s != nil && ok {
		s.cur.lists[k] = &sharedList{items: items, built: b}
	}
}

func (s *Shared) resources(typ resource.Type, version string, n int) (cache.Resources, bool) {
	if s == nil {
		return cache.Resources{}, false
	}
	k := resKey{typ, version, n}
	if r, ok := s.cur.res[k]; ok {
		return r, true
	}
	r, ok := s.old.res[k]
	if ok {
		s.cur.res[k] = r
	}
	return r, ok
}

func (s *Shared) addResources(typ resource.Type, r cache.Resources, n int) {
	if s != nil {
		s.cur.res[resKey{typ, r.Version, n}] = r
	}
}
