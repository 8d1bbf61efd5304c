// Package xds serves snapshots to Envoy proxies and gRPC clients over ADS
// (state-of-the-world and delta) with go-control-plane's server, and tracks
// what every connected client was sent, acknowledged and rejected.
package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

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
//   - state-of-the-world clients that hold a whole generation share one
//     version map instead of keeping a copy each.
type Cache struct {
	log  *slog.Logger
	hash NodeHash
	// shared holds the encodings of resource lists many responses carry;
	// the server's codec reuses them.
	shared *sharedEncodings

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
	// held is the version map of a client holding this whole generation,
	// without the generation mark; each such client gets a copy (see mark).
	held map[string]string
	// namesID identifies the set of resource names: generations with the
	// same names share it.
	namesID int64
	// diffs memoises, per earlier generation id, the names that changed
	// since, for the many clients that held that generation.
	diffs map[int64][]string
	// diffAny memoises the resources of diffs, and allDelta the whole
	// generation as delta resources, so that the responses of many clients
	// share one list (and one encoding, see sharedEncodings).
	diffAny  map[int64][]*anypb.Any
	allDelta []*discoveryv3.Resource
	// diffDelta and removedSince are a delta response to the clients
	// that held an earlier generation.
	diffDelta    map[int64][]*discoveryv3.Resource
	removedSince map[int64][]string
}

type entry struct {
	hash string
	any  *anypb.Any
	// src is the resource value the entry was marshalled from: a snapshot
	// that hands over the same value again (an incremental translation
	// does, for everything that did not change) is not marshalled again.
	src types.Resource
}

// A client that holds a whole generation is told so by a mark appended to
// the version of the generation's first name in its version map:
// "@<generation>:<names>:<names id>". The map is the client's own:
// go-control-plane edits a subscriber's map (it deletes every name the
// client stops naming), so no map is ever shared between clients. The mark
// counts only while the map still has all <names> entries, so a client
// that dropped a resource is not taken for one that holds everything.
const genSep = "@"

// mark is the generation mark of gen.
func mark(gen *generation) string {
	return fmt.Sprintf("%s%d:%d:%d", genSep, gen.id, len(gen.names), gen.namesID)
}

// heldHash is the version of n the client holds, without a generation mark.
func heldHash(held map[string]string, n string) string {
	v := held[n]
	if i := strings.Index(v, genSep); i >= 0 {
		return v[:i]
	}
	return v
}

// heldGen returns the generation the client holds in full, and the id of
// that generation's name set, if it does.
func heldGen(gen *generation, held map[string]string) (from, namesID int64, ok bool) {
	if len(gen.names) == 0 {
		return 0, 0, false
	}
	v := held[gen.names[0]]
	i := strings.Index(v, genSep)
	if i < 0 {
		return 0, 0, false
	}
	var n int
	if _, err := fmt.Sscanf(v[i+len(genSep):], "%d:%d:%d", &from, &n, &namesID); err != nil || n != len(held) {
		return 0, 0, false
	}
	return from, namesID, true
}

type watch struct {
	typeURL string
	sub     cache.Subscription
	// SotW
	req *discoveryv3.DiscoveryRequest
	out chan cache.Response
	// delta
	dreq *discoveryv3.DeltaDiscoveryRequest
	dout chan cache.DeltaResponse
}

// NewCache returns an empty cache.
func NewCache(log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cache{log: log, groups: map[string]*group{}, shared: &sharedEncodings{}}
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// SetSnapshot publishes a group's resources and answers the watches that
// now have something to receive. Resources must not be modified once
// published: a resource value published again is taken to have the
// content it had.
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
	for _, old := range g.types {
		c.forget(old)
	}
	g.snap, g.types = snap, next
	for id, w := range g.watches {
		if c.respond(w, next[w.typeURL]) {
			delete(g.watches, id)
		}
	}
	return nil
}

func (c *Cache) newGeneration(res cache.Resources, prev *generation) (*generation, error) {
	gen := &generation{
		id:      c.genID.Add(1),
		version: res.Version,
		entries: make(map[string]*entry, len(res.Items)),
		diffs:   map[int64][]string{},
		diffAny: map[int64][]*anypb.Any{},

		diffDelta:    map[int64][]*discoveryv3.Resource{},
		removedSince: map[int64][]string{},
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
		h := cache.HashResource(b)
		if prev != nil {
			if old := prev.entries[name]; old != nil && old.hash == h {
				// Same content, new value: keep the shared Any, and
				// remember the new value for the next comparison.
				gen.entries[name] = &entry{hash: old.hash, any: old.any, src: r.Resource}
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
	gen.held = make(map[string]string, len(gen.names))
	for i, n := range gen.names {
		gen.all[i] = gen.entries[n].any
		gen.held[n] = gen.entries[n].hash
	}
	gen.namesID = gen.id
	if prev != nil && slices.Equal(prev.names, gen.names) {
		gen.namesID = prev.namesID
	}
	return gen, nil
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
	id := c.nextID
	g.watches[id] = w
	return func() {
		c.mu.Lock()
		delete(g.watches, id)
		c.mu.Unlock()
	}, nil
}

// respond answers w from gen if the client lacks something it subscribes
// to, and reports whether it did. Called with c.mu held; the channels have
// room for one response per type, and a watch is answered at most once.
func (c *Cache) respond(w *watch, gen *generation) bool {
	if gen == nil {
		return false
	}
	if w.dout != nil {
		return c.respondDelta(w, gen)
	}
	held := w.sub.ReturnedResources()
	full := cache.ResourceRequiresFullStateInSotw(w.typeURL)
	d := c.diff(w, gen, held)
	changed := len(d) > 0
	if full && !changed {
		// A full-state response also tells the client what does not exist:
		// answer the first request even if nothing it names exists, and
		// whenever something it holds went away.
		// A client whose version differs (a new stream, or a reconnect
		// after the resources it held went away) is told the current set,
		// even if empty; a NACK is not (it would get what it rejected).
		changed = (w.req.GetErrorDetail() == nil && w.req.GetVersionInfo() != gen.version) || c.lost(w, gen, held)
	}
	if !changed {
		return false
	}
	var send []*anypb.Any
	var next map[string]string
	covers := c.coversAll(w, gen, held)
	from, _, hasGen := heldGen(gen, held)
	switch {
	case full && covers:
		send = gen.all
		c.shared.shareSotw(send)
	case covers && hasGen:
		// Every client that held the same generation gets the same list.
		send = gen.diffAny[from]
		if send == nil {
			for _, n := range d {
				send = append(send, gen.entries[n].any)
			}
			gen.diffAny[from] = send
		}
		c.shared.shareSotw(send)
	case full:
		for _, n := range gen.names {
			if _, ok := w.sub.SubscribedResources()[n]; ok {
				send = append(send, gen.entries[n].any)
			}
		}
	default:
		for _, n := range d {
			send = append(send, gen.entries[n].any)
		}
	}
	switch {
	case covers:
		next = c.heldMap(gen)
	default:
		next = make(map[string]string, len(w.sub.SubscribedResources()))
		for n := range w.sub.SubscribedResources() {
			if e := gen.entries[n]; e != nil {
				next[n] = e.hash
			}
		}
	}
	w.out <- &cache.PassthroughResponse{
		Request:           w.req,
		DiscoveryResponse: &discoveryv3.DiscoveryResponse{VersionInfo: gen.version, Resources: send, TypeUrl: w.typeURL},
		ReturnedResources: next,
	}
	return true
}

// lost reports whether the client holds a resource that is gone (or that it
// no longer subscribes to).
func (c *Cache) lost(w *watch, gen *generation, held map[string]string) bool {
	subs := w.sub.SubscribedResources()
	for n := range held {
		if gen.entries[n] == nil {
			return true
		}
		if _, ok := subs[n]; !ok && !w.sub.IsWildcard() {
			return true
		}
	}
	return false
}

// diff lists the subscribed resources whose content the client lacks.
func (c *Cache) diff(w *watch, gen *generation, held map[string]string) []string {
	var candidates []string
	if from, _, ok := heldGen(gen, held); ok {
		candidates = c.diffSince(gen, from, held)
	} else {
		candidates = gen.names
	}
	var out []string
	subs := w.sub.SubscribedResources()
	for _, n := range candidates {
		if !w.sub.IsWildcard() {
			if _, ok := subs[n]; !ok {
				continue
			}
		}
		if heldHash(held, n) != gen.entries[n].hash {
			out = append(out, n)
		}
	}
	return out
}

// diffSince lists the names of gen whose content differs from generation
// from, given the held map of a client that holds all of from: the same for
// every such client, so it is worked out once.
func (c *Cache) diffSince(gen *generation, from int64, held map[string]string) []string {
	d, ok := gen.diffs[from]
	if !ok {
		d = []string{}
		for _, n := range gen.names {
			if heldHash(held, n) != gen.entries[n].hash {
				d = append(d, n)
			}
		}
		gen.diffs[from] = d
	}
	return d
}

// heldMap is the version map of a client that holds all of gen: its own
// copy (see mark) of gen.held, with the generation mark.
func (c *Cache) heldMap(gen *generation) map[string]string {
	next := maps.Clone(gen.held)
	if len(gen.names) > 0 {
		next[gen.names[0]] += mark(gen)
	}
	return next
}

// coversAll reports whether the client subscribes to every resource of gen,
// so that after this response it holds the whole generation.
func (c *Cache) coversAll(w *watch, gen *generation, held map[string]string) bool {
	if w.sub.IsWildcard() {
		return true
	}
	subs := w.sub.SubscribedResources()
	if len(subs) < len(gen.names) {
		return false
	}
	// A client that still holds every resource of a generation with the
	// same names still subscribes to all of them (the server drops what a
	// client stops naming).
	if _, namesID, ok := heldGen(gen, held); ok && namesID == gen.namesID {
		return true
	}
	for _, n := range gen.names {
		if _, ok := subs[n]; !ok {
			return false
		}
	}
	return true
}

// respondDelta sends the subscribed resources whose version the client
// lacks and the removal of those it holds that are gone.
func (c *Cache) respondDelta(w *watch, gen *generation) bool {
	held := w.sub.ReturnedResources()
	covers := c.coversAll(w, gen, held)
	var updated []*discoveryv3.Resource
	var removed []string
	from, _, hasGen := heldGen(gen, held)
	// The mark is trusted only when this request did not change the
	// subscription: go-control-plane edits the held map on unsubscribing
	// (it may blank a version instead of deleting it), and the client
	// then has to be compared name by name.
	trusted := hasGen && covers && len(w.dreq.GetResourceNamesSubscribe()) == 0 &&
		len(w.dreq.GetResourceNamesUnsubscribe()) == 0 && len(w.dreq.GetInitialResourceVersions()) == 0
	switch {
	case trusted && from == gen.id:
		// It holds this very generation: an ACK, or a snapshot that
		// changed other types.
		return false
	case trusted:
		// It holds a whole earlier generation: what changed since is the
		// same for every such client, and so is the response.
		if _, ok := gen.diffDelta[from]; !ok {
			for _, n := range c.diffSince(gen, from, held) {
				e := gen.entries[n]
				gen.diffDelta[from] = append(gen.diffDelta[from], &discoveryv3.Resource{Name: n, Version: e.hash, Resource: e.any})
			}
			var gone []string
			for n := range held {
				if gen.entries[n] == nil {
					gone = append(gone, n)
				}
			}
			sort.Strings(gone)
			gen.removedSince[from] = gone
			c.shared.shareDelta(gen.diffDelta[from])
		}
		updated, removed = gen.diffDelta[from], gen.removedSince[from]
	case len(held) == 0 && covers:
		// A new client taking everything: one shared list for all of them.
		if gen.allDelta == nil {
			gen.allDelta = make([]*discoveryv3.Resource, len(gen.names))
			for i, n := range gen.names {
				e := gen.entries[n]
				gen.allDelta[i] = &discoveryv3.Resource{Name: n, Version: e.hash, Resource: e.any}
			}
			c.shared.shareDelta(gen.allDelta)
		}
		updated = gen.allDelta
	default:
		subs := w.sub.SubscribedResources()
		for _, n := range gen.names {
			e := gen.entries[n]
			_, sub := subs[n]
			if (sub || w.sub.IsWildcard()) && heldHash(held, n) != e.hash {
				updated = append(updated, &discoveryv3.Resource{Name: n, Version: e.hash, Resource: e.any})
			}
		}
		for n := range held {
			if gen.entries[n] == nil {
				removed = append(removed, n)
			}
		}
		sort.Strings(removed)
	}
	if len(updated) == 0 && len(removed) == 0 {
		return false
	}
	var next map[string]string
	if covers {
		// It now holds exactly this generation: say so, so that its
		// next comparisons cost nothing.
		next = c.heldMap(gen)
	} else {
		next = maps.Clone(held)
		if next == nil {
			next = map[string]string{}
		}
		for _, r := range updated {
			next[r.Name] = r.Version
		}
		for _, n := range removed {
			delete(next, n)
		}
	}
	w.dout <- &cache.DeltaPassthroughResponse{
		DeltaRequest:   w.dreq,
		NextVersionMap: next,
		DeltaDiscoveryResponse: &discoveryv3.DeltaDiscoveryResponse{
			SystemVersionInfo: gen.version, Resources: updated, RemovedResources: removed, TypeUrl: w.typeURL,
		},
	}
	return true
}
