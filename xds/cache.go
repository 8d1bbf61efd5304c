// Package xds serves snapshots to Envoy proxies and gRPC clients over ADS
// (state-of-the-world and delta) with stream handling of its own (see
// docs/xds.md), and tracks what every connected client was sent,
// acknowledged and rejected.
package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Cache holds what sluice serves: each proxy group's current generation of
// each type, shared between groups. It is built for many proxies sharing
// few snapshots:
//
//   - every resource is marshalled once per content, into an Any that all
//     streams share; a response is a small struct pointing at those Anys;
//   - each resource has its own version (a content hash), so a change to one
//     cluster's endpoints sends that one load assignment — over delta, and
//     over state-of-the-world for EDS and RDS, whose responses need not
//     carry the full state;
//   - groups that publish the same (type, version) share one generation,
//     and so the differences worked out from earlier generations and the
//     responses built from them: a change costs each client that held the
//     same earlier generation a few map operations, whatever the size of
//     the mesh.
//
// Streams (see stream.go) attach to their group, and are woken when it
// changes; each works out its own responses, in its own goroutine, from
// the group's current generations. Publishing never waits for a stream.
type Cache struct {
	log *slog.Logger
	// shared holds the encodings of resource lists many responses carry;
	// the server's codec reuses them.
	shared *sharedEncodings

	// now is the clock the entries table ages by.
	now func() time.Time

	mu     sync.Mutex
	groups map[string]*group
	genID  atomic.Int64

	// pub serialises publishing; it guards shared and entries, which
	// only publishers use.
	pub sync.Mutex
	// sharedGens holds the generations that are some group's current one,
	// by type, version and size, with the number of groups using each:
	// groups that publish the same content (every sidecar group's load
	// assignments, when they depend on the whole mesh) share one
	// generation, and so its worked-out differences and responses.
	sharedGens map[sharedKey]*sharedGen
	// entries finds the entry of a resource value another group
	// published, so that it is marshalled once for the whole mesh; it
	// forgets what was not published for a while (entriesTTL).
	entries        [2]map[types.Resource]*entry
	entriesRotated time.Time
}

type sharedKey struct {
	typ     types.ResponseType
	version string
	n       int
}

type sharedGen struct {
	gen    *generation
	groups int
}

// entriesTTL is how long the entry of a resource value nobody published
// stays findable: between one and two rotations.
const entriesTTL = time.Minute

type group struct {
	snap *cache.Snapshot
	// types are the group's current generations, by type
	// (go-control-plane's response type index).
	types [types.UnknownType]*generation
	// streams are the attached streams, woken when types change.
	streams map[*waker]struct{}
}

func newGroup() *group {
	return &group{streams: map[*waker]struct{}{}}
}

// waker wakes a stream: a buffer of one, so that wake-ups while the stream
// is busy coalesce and publishing never blocks.
type waker struct {
	ch chan struct{}
}

func newWaker() *waker { return &waker{ch: make(chan struct{}, 1)} }

func (w *waker) wake() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// typeIndex is the index of a type URL in a group's arrays; ok is false
// for a type sluice does not serve.
func typeIndex(url string) (types.ResponseType, bool) {
	i := cache.GetResponseType(url)
	return i, i != types.UnknownType
}

// generation is one version of one resource type of a group.
type generation struct {
	id      int64
	version string
	names   []string // sorted
	entries map[string]*entry
	// all is every resource, in name order, for full-state responses.
	all []*anypb.Any
	// namesID identifies the set of resource names: generations with the
	// same names share it.
	namesID int64
	// mu guards the memos below, which the streams of every group that
	// holds the generation fill as they need them; retired says the
	// generation is no group's current one any more, so what is worked
	// out from it now is not shared (see forget).
	mu      sync.Mutex
	retired bool
	// diffs memoises, per earlier generation id, the names that changed
	// since, and removed the names that went away, for the many clients
	// that held that generation.
	diffs   map[int64][]string
	removed map[int64][]string
	// diffAny memoises the resources of diffs, and allDelta the whole
	// generation as delta resources, so that the responses of many clients
	// share one list (and one encoding, see sharedEncodings).
	diffAny  map[int64][]*anypb.Any
	allDelta []*discoveryv3.Resource
	// diffDelta is the delta response's resources for the clients that
	// held an earlier generation.
	diffDelta map[int64][]*discoveryv3.Resource
}

type entry struct {
	hash string
	any  *anypb.Any
	// src is the resource value the entry was marshalled from: a snapshot
	// that hands over the same value again (an incremental translation
	// does, for everything that did not change) is not marshalled again.
	src types.Resource
}

// NewCache returns an empty cache.
func NewCache(log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cache{
		log: log, groups: map[string]*group{}, shared: &sharedEncodings{}, now: time.Now,
		sharedGens: map[sharedKey]*sharedGen{},
		entries:    [2]map[types.Resource]*entry{{}, {}},
	}
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// SetSnapshot publishes a group's resources and wakes the group's streams
// if a type changed. Resources must not be modified once
// published: a resource value published again is taken to have the
// content it had, and a type published again under its previous (non-empty)
// version is taken to be unchanged.
func (c *Cache) SetSnapshot(_ context.Context, key string, rs cache.ResourceSnapshot) error {
	snap, ok := rs.(*cache.Snapshot)
	if !ok {
		return errors.New("xds cache: unsupported snapshot type")
	}
	c.pub.Lock()
	defer c.pub.Unlock()
	c.mu.Lock()
	g := c.groups[key]
	if g == nil {
		g = newGroup()
		c.groups[key] = g
	}
	prev := g.types
	c.mu.Unlock()
	now := c.now()
	if now.Sub(c.entriesRotated) >= entriesTTL {
		c.entriesRotated = now
		c.entries = [2]map[types.Resource]*entry{{}, c.entries[0]}
	}

	// Marshal outside the lock that streams take.
	var next [types.UnknownType]*generation
	for i := range next {
		gen, err := c.newGeneration(types.ResponseType(i), snap.Resources[i], prev[i])
		if err != nil {
			return err
		}
		next[i] = gen
	}
	for i, gen := range next {
		if gen != prev[i] {
			c.hold(types.ResponseType(i), gen)
			c.release(types.ResponseType(i), prev[i])
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	g.snap, g.types = snap, next
	if next != prev {
		for w := range g.streams {
			w.wake()
		}
	}
	return nil
}

// hold records that one more group uses gen as its current generation of
// a type; release, one fewer. A generation no group uses any more is no
// longer shared, and its shared encodings are dropped (responses being
// sent keep the bytes they hold).
func (c *Cache) hold(typ types.ResponseType, gen *generation) {
	k := sharedKey{typ, gen.version, len(gen.names)}
	sg := c.sharedGens[k]
	if sg == nil || sg.gen != gen {
		// Only an unversioned type (a snapshot built by hand) can meet
		// another generation under its key: it is not shared.
		if gen.version == "" || sg != nil {
			return
		}
		sg = &sharedGen{gen: gen}
		c.sharedGens[k] = sg
	}
	sg.groups++
}

func (c *Cache) release(typ types.ResponseType, gen *generation) {
	if gen == nil {
		return
	}
	k := sharedKey{typ, gen.version, len(gen.names)}
	if sg := c.sharedGens[k]; sg != nil && sg.gen == gen {
		if sg.groups--; sg.groups > 0 {
			return
		}
		delete(c.sharedGens, k)
	}
	c.forget(gen)
}

// entry returns the entry another group published for the resource
// value r, if it is still known.
func (c *Cache) entry(r types.Resource) *entry {
	if e := c.entries[0][r]; e != nil {
		return e
	}
	e := c.entries[1][r]
	if e != nil {
		c.entries[0][r] = e
	}
	return e
}

func (c *Cache) newGeneration(typ types.ResponseType, res cache.Resources, prev *generation) (*generation, error) {
	if prev != nil && res.Version != "" && res.Version == prev.version && len(res.Items) == len(prev.entries) {
		// The version names the content (snapshot.Build's are content
		// hashes, as go-control-plane's own cache assumes): most types do
		// not change in most snapshots, and this skips looking at each of
		// their resources, for every group.
		return prev, nil
	}
	if prev != nil && res.Version == prev.version && len(res.Items) == 0 && len(prev.entries) == 0 {
		// A type the group does not use, still empty.
		return prev, nil
	}
	if res.Version != "" {
		// Another group published the same content: share its
		// generation.
		if sg := c.sharedGens[sharedKey{typ, res.Version, len(res.Items)}]; sg != nil {
			return sg.gen, nil
		}
	}
	gen := &generation{
		id:        c.genID.Add(1),
		version:   res.Version,
		entries:   make(map[string]*entry, len(res.Items)),
		diffs:     map[int64][]string{},
		removed:   map[int64][]string{},
		diffAny:   map[int64][]*anypb.Any{},
		diffDelta: map[int64][]*discoveryv3.Resource{},
	}
	for name, r := range res.Items {
		if prev != nil {
			if old := prev.entries[name]; old != nil && old.src == r.Resource {
				gen.entries[name] = old
				continue
			}
		}
		if e := c.entry(r.Resource); e != nil {
			gen.entries[name] = e
			continue
		}
		b, err := deterministic.Marshal(r.Resource)
		if err != nil {
			return nil, err
		}
		h := resourceVersion(b)
		if prev != nil {
			if old := prev.entries[name]; old != nil && old.hash == h {
				// Same content, new value: keep the entry (and its shared
				// Any), and remember the new value for the next
				// comparison, also when prev itself is kept (see
				// sameContent). Only this goroutine reads src.
				old.src = r.Resource
				gen.entries[name] = old
				c.entries[0][r.Resource] = old
				continue
			}
		}
		e := &entry{hash: h, any: &anypb.Any{TypeUrl: typeURLOf(r.Resource), Value: b}, src: r.Resource}
		gen.entries[name] = e
		c.entries[0][r.Resource] = e
	}
	gen.names = make([]string, 0, len(gen.entries))
	for n := range gen.entries {
		gen.names = append(gen.names, n)
	}
	sort.Strings(gen.names)
	gen.all = make([]*anypb.Any, len(gen.names))
	for i, n := range gen.names {
		gen.all[i] = gen.entries[n].any
	}
	gen.namesID = gen.id
	if prev != nil && slices.Equal(prev.names, gen.names) {
		gen.namesID = prev.namesID
		if sameContent(prev, gen) {
			// Nothing changed: the clients holding prev hold this, and
			// the lineage only moves on when content does.
			return prev, nil
		}
	}
	return gen, nil
}

// sameContent reports whether two generations with the same names have the
// same content.
func sameContent(a, b *generation) bool {
	for n, e := range b.entries {
		if a.entries[n].hash != e.hash {
			return false
		}
	}
	return true
}

// resourceVersion is the version of a resource: 64 bits of the SHA-256 of
// its encoding, in hex. Delta responses carry it with every resource and
// Envoy keeps it per resource, so it is a quarter of go-control-plane's
// full hash (64 hex digits); a change goes unseen only if the new content's
// hash collides with the old one's, about 2^-64 per change.
func resourceVersion(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// forget drops the shared encodings of a generation that was replaced;
// responses still being sent keep the bytes they hold.
func (c *Cache) forget(gen *generation) {
	gen.mu.Lock()
	defer gen.mu.Unlock()
	gen.retired = true
	c.shared.forgetSotw(gen.all)
	for _, rs := range gen.diffAny {
		c.shared.forgetSotw(rs)
	}
	c.shared.forgetDelta(gen.allDelta)
	for _, rs := range gen.diffDelta {
		c.shared.forgetDelta(rs)
	}
}

func typeURLOf(m proto.Message) string {
	return resource.APITypePrefix + string(m.ProtoReflect().Descriptor().FullName())
}

// ClearSnapshot forgets a group no proxy uses any more. A group that has
// attached streams (a proxy came back) is kept.
func (c *Cache) ClearSnapshot(key string) {
	c.pub.Lock()
	defer c.pub.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[key]
	if g == nil || len(g.streams) > 0 {
		return
	}
	for i, gen := range g.types {
		c.release(types.ResponseType(i), gen)
	}
	delete(c.groups, key)
}

// GetSnapshot returns the group's current snapshot (for the admin API).
func (c *Cache) GetSnapshot(key string) (cache.ResourceSnapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.groups[key]; g != nil && g.snap != nil {
		return g.snap, nil
	}
	return nil, errors.New("no snapshot for group " + key)
}

// attach registers a stream of group key, to be woken when the group's
// snapshot changes, and wakes it once.
func (c *Cache) attach(key string, w *waker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[key]
	if g == nil {
		g = newGroup()
		c.groups[key] = g
	}
	g.streams[w] = struct{}{}
	w.wake()
}

// detach undoes attach.
func (c *Cache) detach(key string, w *waker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.groups[key]; g != nil {
		delete(g.streams, w)
	}
}

// current returns group key's current generation of type i, nil if none.
func (c *Cache) current(key string, i types.ResponseType) *generation {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.groups[key]; g != nil {
		return g.types[i]
	}
	return nil
}

// currentAll returns group key's current generations.
func (c *Cache) currentAll(key string) [types.UnknownType]*generation {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.groups[key]; g != nil {
		return g.types
	}
	return [types.UnknownType]*generation{}
}
