// Package xds serves snapshots to Envoy proxies and gRPC clients over ADS
// (state-of-the-world and delta) with go-control-plane's server, and tracks
// what every connected client was sent, acknowledged and rejected.
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

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluice-mesh/sluice/translator"
)

// NodeHash maps a node to its config group, so every proxy with the same
// identity shares one snapshot.
type NodeHash struct{}

// ID returns the group key of a node. Nodes whose metadata is invalid are
// refused by the callbacks before they reach the cache; "invalid" keeps them
// apart from everyone else should one slip through.
func (NodeHash) ID(node *corev3.Node) string {
	p, err := translator.ProxyFromNode(node)
	if err != nil {
		return "invalid"
	}
	return p.Key()
}

// Cache is the xDS cache sluice serves from, in place of go-control-plane's
// snapshot cache (the server is go-control-plane's). It is built for many
// proxies sharing few snapshots:
//
//   - every resource is marshalled once per content, into an Any that all
//     streams share; a response is a small struct pointing at those Anys;
//   - each resource has its own version (a content hash), so a change to one
//     cluster's endpoints sends that one load assignment — over delta, and
//     over state-of-the-world for EDS and RDS, whose responses need not
//     carry the full state;
//   - a client is answered only when something it subscribes to differs
//     from what it holds, so a NACKed version is never re-sent (the client
//     "holds" what it rejected) and an unchanged snapshot pushes nothing;
//   - a client that holds a whole generation (the usual case) says so with
//     a version map of five marked entries, and the clients that held the
//     same generation share one worked-out difference and one response, so
//     a change costs each of them a few map operations whatever the size
//     of the mesh (plus, over state of the world, one look at each name its
//     ACK repeats).
type Cache struct {
	log  *slog.Logger
	hash NodeHash
	// shared holds the encodings of resource lists many responses carry;
	// the server's codec reuses them.
	shared *sharedEncodings

	// now is the clock the lineage ages by.
	now func() time.Time

	mu     sync.Mutex
	groups map[string]*group
	nextID int64
	genID  atomic.Int64
}

type group struct {
	snap    *cache.Snapshot
	types   map[string]*generation
	watches map[int64]*watch
}

// generation is one version of one resource type of a group.
type generation struct {
	id      int64
	version string
	names   []string // sorted
	entries map[string]*entry
	// all is every resource, in name order, for full-state responses.
	all []*anypb.Any
	// lineage holds this generation's recent predecessors, which the
	// clients holding them are compared against; made is when it joined.
	lineage *lineage
	made    time.Time
	// namesID identifies the set of resource names: generations with the
	// same names share it.
	namesID int64
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

type watch struct {
	typeURL string
	sub     cache.Subscription
	// held is what the client holds, worked out when the watch was made
	// (nothing changes it while the watch is open).
	held holding
	// SotW
	req *discoveryv3.DiscoveryRequest
	out chan cache.Response
	// delta
	dreq *discoveryv3.DeltaDiscoveryRequest
	dout chan cache.DeltaResponse
}

// trimRequest drops the resource names (a thousand, for a proxy's EDS) from
// the request a watch keeps until it is answered, which can be long: they
// were read by now, and nothing after needs them (go-control-plane reads
// only the type of a response's request).
func (w *watch) trimRequest() {
	if r := w.req; r != nil {
		w.req = &discoveryv3.DiscoveryRequest{
			VersionInfo: r.VersionInfo, Node: r.Node, TypeUrl: r.TypeUrl, ResponseNonce: r.ResponseNonce, ErrorDetail: r.ErrorDetail,
		}
	}
	if r := w.dreq; r != nil {
		w.dreq = &discoveryv3.DeltaDiscoveryRequest{
			Node: r.Node, TypeUrl: r.TypeUrl, ResponseNonce: r.ResponseNonce, ErrorDetail: r.ErrorDetail,
		}
	}
}

// NewCache returns an empty cache.
func NewCache(log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cache{log: log, groups: map[string]*group{}, shared: &sharedEncodings{}, now: time.Now}
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// SetSnapshot publishes a group's resources and answers the watches that
// now have something to receive. Resources must not be modified once
// published: a resource value published again is taken to have the
// content it had, and a type published again under its previous (non-empty)
// version is taken to be unchanged.
func (c *Cache) SetSnapshot(_ context.Context, key string, rs cache.ResourceSnapshot) error {
	snap, ok := rs.(*cache.Snapshot)
	if !ok {
		return errors.New("xds cache: unsupported snapshot type")
	}
	c.mu.Lock()
	g := c.groups[key]
	if g == nil {
		g = &group{types: map[string]*generation{}, watches: map[int64]*watch{}}
		c.groups[key] = g
	}
	prev := g.types
	c.mu.Unlock()

	// Marshal outside the lock; only this goroutine publishes a group.
	next := map[string]*generation{}
	for i := types.ResponseType(0); i < types.UnknownType; i++ {
		url, err := cache.GetResponseTypeURL(i)
		if err != nil {
			continue
		}
		gen, err := c.newGeneration(snap.Resources[i], prev[url])
		if err != nil {
			return err
		}
		next[url] = gen
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	for url, old := range g.types {
		if next[url] != old {
			c.forget(old)
		}
	}
	for url, gen := range next {
		if gen != prev[url] {
			gen.lineage.add(gen, c.now())
		}
	}
	g.snap, g.types = snap, next
	for id, w := range g.watches {
		if next[w.typeURL] == prev[w.typeURL] {
			// Nothing about this watch changed since it was answered
			// or made.
			continue
		}
		if c.respond(w, next[w.typeURL]) {
			delete(g.watches, id)
		}
	}
	return nil
}

func (c *Cache) newGeneration(res cache.Resources, prev *generation) (*generation, error) {
	if prev != nil && res.Version != "" && res.Version == prev.version && len(res.Items) == len(prev.entries) {
		// The version names the content (snapshot.Build's are content
		// hashes, as go-control-plane's own cache assumes): most types do
		// not change in most snapshots, and this skips looking at each of
		// their resources, for every group.
		return prev, nil
	}
	gen := &generation{
		id:        c.genID.Add(1),
		version:   res.Version,
		entries:   make(map[string]*entry, len(res.Items)),
		diffs:     map[int64][]string{},
		removed:   map[int64][]string{},
		diffAny:   map[int64][]*anypb.Any{},
		diffDelta: map[int64][]*discoveryv3.Resource{},
		lineage:   &lineage{},
	}
	if prev != nil {
		gen.lineage = prev.lineage
	}
	for name, r := range res.Items {
		if prev != nil {
			if old := prev.entries[name]; old != nil && old.src == r.Resource {
				gen.entries[name] = old
				continue
			}
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
				continue
			}
		}
		gen.entries[name] = &entry{hash: h, any: &anypb.Any{TypeUrl: typeURLOf(r.Resource), Value: b}, src: r.Resource}
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
// open watches (a proxy came back) is kept.
func (c *Cache) ClearSnapshot(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[key]
	if g == nil || len(g.watches) > 0 {
		return
	}
	for _, gen := range g.types {
		c.forget(gen)
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

// CreateWatch implements cache.ConfigWatcher for state-of-the-world streams.
func (c *Cache) CreateWatch(req *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	return c.watch(&watch{typeURL: req.GetTypeUrl(), sub: sub, req: req, out: out}, req.GetNode())
}

// CreateDeltaWatch implements cache.ConfigWatcher for delta streams.
func (c *Cache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), error) {
	return c.watch(&watch{typeURL: req.GetTypeUrl(), sub: sub, dreq: req, dout: out}, req.GetNode())
}

// Fetch implements cache.ConfigFetcher; sluice serves streams only.
func (c *Cache) Fetch(context.Context, *cache.Request) (cache.Response, error) {
	return nil, errors.New("sluice serves xDS over ADS streams only")
}

func (c *Cache) watch(w *watch, node *corev3.Node) (func(), error) {
	key := c.hash.ID(node)
	id, marked, consistent := markOf(w.sub.ReturnedResources())
	if w.dreq != nil {
		// Over delta go-control-plane never touches markKey, so a map
		// without it was not written by this cache: versions a client
		// brought to a new stream (initial_resource_versions) are its
		// own, compared as they are.
		_, hasKey := w.sub.ReturnedResources()[markKey]
		marked = marked && hasKey && len(w.dreq.GetInitialResourceVersions()) == 0
	}
	var whole *generation
	if marked {
		c.mu.Lock()
		if g := c.groups[key]; g != nil && g.types[w.typeURL] != nil {
			whole = g.types[w.typeURL].lineage.find(id)
		}
		c.mu.Unlock()
	}
	held, err := normalize(w, whole, marked, consistent)
	if err != nil {
		return nil, err
	}
	w.held = held
	w.trimRequest()
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[key]
	if g == nil {
		g = &group{types: map[string]*generation{}, watches: map[int64]*watch{}}
		c.groups[key] = g
	}
	if gen := g.types[w.typeURL]; gen != nil && c.respond(w, gen) {
		return func() {}, nil
	}
	c.nextID++
	wid := c.nextID
	g.watches[wid] = w
	return func() {
		c.mu.Lock()
		delete(g.watches, wid)
		c.mu.Unlock()
	}, nil
}
