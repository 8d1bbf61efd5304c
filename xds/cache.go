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
	"strconv"
	"strings"
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

// lineage is the recent generations of one type of one group, oldest
// first: a new one is made only when the type's content changes. It
// resolves the generation mark of a client's request; a watch keeps the
// generation it resolved, so an open watch never depends on it.
// Generations are kept for lineageAge, and at least the last lineageMin of
// them whatever their age, so that a client that is slow to ACK while the
// type keeps changing still gets only what changed. A request whose
// generation fell out of it (or whose group was dropped and made again) is
// answered with everything over state of the world, and over delta ends
// the stream (errLostTrack) so that the client resynchronises.
type lineage struct {
	gens []*generation
}

const (
	lineageMin = 8
	lineageMax = 128
	lineageAge = 30 * time.Second
)

// add appends gen (made at now) and forgets what is both beyond the
// minimum and old, or beyond the maximum.
func (l *lineage) add(gen *generation, now time.Time) {
	gen.made = now
	l.gens = append(l.gens, gen)
	for len(l.gens) > lineageMin && (now.Sub(l.gens[0].made) > lineageAge || len(l.gens) > lineageMax) {
		l.gens[0] = nil
		l.gens = l.gens[1:]
	}
}

func (l *lineage) find(id int64) *generation {
	for _, g := range l.gens {
		if g.id == id {
			return g
		}
	}
	return nil
}

type entry struct {
	hash string
	any  *anypb.Any
	// src is the resource value the entry was marshalled from: a snapshot
	// that hands over the same value again (an incremental translation
	// does, for everything that did not change) is not marshalled again.
	src types.Resource
}

// What a client holds of a type is kept in its version map, which
// go-control-plane stores with its stream and hands back with each request;
// the server edits it (it deletes the names a client stops naming, and
// blanks the version of a name a delta wildcard client unsubscribes from),
// so no map is ever shared between clients. Two forms:
//
//   - explicit: name → content hash of each resource the client holds;
//   - whole generation: the client holds every resource of one generation
//     (see lineage), said by a few marked entries: markKey, which no
//     resource is named and go-control-plane therefore only deletes when a
//     state-of-the-world client names resources explicitly, and four of
//     the generation's names (first, last and two between), whose
//     versions carry the mark "@<generation id>" after their hash. This is the common case (every
//     proxy of a group subscribes to everything): a response then costs
//     the same for 10 resources as for 10,000, and a proxy's version maps
//     are a few entries instead of a copy per name.
//
// Before a request is answered, normalize resolves the mark and turns a
// whole-generation map whose client changed its subscription (or next to
// which go-control-plane wrote something) into the explicit form.
const (
	genSep  = "@"
	markKey = "\x00sluice/generation"
)

// wholeMap is the version map of a client that holds all of gen: markKey
// and four names spread over the generation carry the mark, so that a
// state-of-the-world client (whose requests make go-control-plane delete
// markKey and every name they leave out) loses the mark only if it stops
// naming all four at once.
func wholeMap(gen *generation) map[string]string {
	m := genSep + strconv.FormatInt(gen.id, 10)
	held := map[string]string{markKey: m}
	if n := len(gen.names); n > 0 {
		for _, i := range []int{0, n / 3, 2 * n / 3, n - 1} {
			name := gen.names[i]
			held[name] = gen.entries[name].hash + m
		}
	}
	return held
}

// holding is what a client holds.
type holding struct {
	// whole is the generation the client holds all of; nil when its map
	// is explicit.
	whole *generation
	// explicit is the map itself, when whole is nil.
	explicit map[string]string
}

// hash is the version of n the client holds, "" if none.
func (h holding) hash(n string) string {
	if h.whole != nil {
		if e := h.whole.entries[n]; e != nil {
			return e.hash
		}
		return ""
	}
	return h.explicit[n]
}

// names calls f for every name the client holds.
func (h holding) names(f func(string)) {
	if h.whole != nil {
		for _, n := range h.whole.names {
			f(n)
		}
		return
	}
	for n := range h.explicit {
		if n != markKey { // only a client's own initial versions can have it
			f(n)
		}
	}
}

// markOf finds the generation mark in a version map. ok is false when
// there is none; consistent is false when marks disagree or do not parse,
// or when unmarked entries sit next to them.
func markOf(held map[string]string) (id int64, ok, consistent bool) {
	consistent = true
	for _, v := range held {
		i := strings.Index(v, genSep)
		if i < 0 {
			consistent = false
			continue
		}
		got, err := strconv.ParseInt(v[i+len(genSep):], 10, 64)
		switch {
		case err != nil:
			consistent = false
		case ok && got != id:
			consistent = false
		default:
			id, ok = got, true
		}
	}
	return id, ok, consistent
}

// errLostTrack ends a delta stream whose client's holdings can no longer be
// worked out (it fell too far behind, or its group was dropped and made
// again): the client reconnects and says what it holds
// (initial_resource_versions), instead of being told too little about what
// went away.
var errLostTrack = errors.New("xds: lost track of the resources this client holds; reconnect to resynchronise")

// normalize runs before a request is answered, in the stream's goroutine,
// which owns the client's version map until the watch is open (and
// outside the cache's lock: it may read the whole subscription). whole is
// the generation the map's mark names (nil when there is no mark, or it
// names a generation no longer known). It returns what the client holds:
// the whole generation while the client still subscribes to all of it and
// go-control-plane wrote nothing next to the mark; otherwise the map in
// its explicit form, so that the client is not taken to hold what it
// dropped (a resource it names again must be sent again).
func normalize(w *watch, whole *generation, marked, consistent bool) (holding, error) {
	held := w.sub.ReturnedResources()
	if !marked {
		return holding{explicit: held}, nil
	}
	if whole == nil {
		if w.dreq != nil {
			return holding{}, errLostTrack
		}
		// Over state of the world the client is simply sent everything it
		// names again; for full-state types that also says what is gone.
		clear(held)
		return holding{explicit: held}, nil
	}
	subs := w.sub.SubscribedResources()
	expand := !consistent
	if !expand && w.dreq != nil {
		expand = len(w.dreq.GetResourceNamesSubscribe()) > 0 || len(w.dreq.GetResourceNamesUnsubscribe()) > 0 ||
			len(w.dreq.GetInitialResourceVersions()) > 0
	}
	if !expand && w.dreq == nil && !w.sub.IsWildcard() {
		// A state-of-the-world request names everything it wants; a
		// client that stopped naming something has dropped it. (This is
		// the one per-name cost of an ACK.)
		for _, n := range whole.names {
			if _, ok := subs[n]; !ok {
				expand = true
				break
			}
		}
	}
	if !expand {
		return holding{whole: whole}, nil
	}
	overrule := map[string]string{}
	for k, v := range held {
		if k != markKey && !strings.Contains(v, genSep) {
			overrule[k] = v
		}
	}
	clear(held)
	for _, n := range whole.names {
		if _, ok := subs[n]; ok || w.sub.IsWildcard() {
			held[n] = whole.entries[n].hash
		}
	}
	// What go-control-plane wrote next to the mark wins: over delta it
	// blanks the version of a resource a wildcard client unsubscribed
	// from, so that the resource is sent again.
	for k, v := range overrule {
		held[k] = v
	}
	return holding{explicit: held}, nil
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

// respond answers w from gen if the client lacks something it subscribes
// to, and reports whether it did. Called with c.mu held; the channels have
// room for one response per type, and a watch is answered at most once.
func (c *Cache) respond(w *watch, gen *generation) bool {
	if gen == nil {
		return false
	}
	held := w.held
	if w.dout != nil {
		return c.respondDelta(w, gen, held)
	}
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
	switch {
	case full && covers, covers && len(d) == len(gen.names):
		// Everything (a new client, say): the list all such clients share.
		send = gen.all
		c.shared.shareSotw(send)
	case covers && held.whole != nil:
		// Every client that held the same generation gets the same list.
		send = gen.diffAny[held.whole.id]
		if send == nil {
			for _, n := range d {
				send = append(send, gen.entries[n].any)
			}
			gen.diffAny[held.whole.id] = send
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
		next = wholeMap(gen)
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
func (c *Cache) lost(w *watch, gen *generation, held holding) bool {
	if held.whole != nil {
		// normalize made sure the client still subscribes to all of it.
		return len(c.removedSince(gen, held.whole)) > 0
	}
	subs := w.sub.SubscribedResources()
	for n := range held.explicit {
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
func (c *Cache) diff(w *watch, gen *generation, held holding) []string {
	candidates := gen.names
	if held.whole != nil {
		candidates = c.diffSince(gen, held.whole)
	}
	var out []string
	subs := w.sub.SubscribedResources()
	for _, n := range candidates {
		if !w.sub.IsWildcard() {
			if _, ok := subs[n]; !ok {
				continue
			}
		}
		if held.hash(n) != gen.entries[n].hash {
			out = append(out, n)
		}
	}
	return out
}

// diffSince lists the names of gen whose content differs from generation
// from (or that from lacks): the same for every client that holds from, so
// it is worked out once.
func (c *Cache) diffSince(gen, from *generation) []string {
	d, ok := gen.diffs[from.id]
	if !ok {
		d = []string{}
		for _, n := range gen.names {
			if old := from.entries[n]; old == nil || old.hash != gen.entries[n].hash {
				d = append(d, n)
			}
		}
		gen.diffs[from.id] = d
	}
	return d
}

// removedSince lists the names of generation from that gen lacks.
func (c *Cache) removedSince(gen, from *generation) []string {
	r, ok := gen.removed[from.id]
	if !ok {
		r = []string{}
		for _, n := range from.names {
			if gen.entries[n] == nil {
				r = append(r, n)
			}
		}
		gen.removed[from.id] = r
	}
	return r
}

// coversAll reports whether the client subscribes to every resource of gen,
// so that after this response it holds the whole generation.
func (c *Cache) coversAll(w *watch, gen *generation, held holding) bool {
	if w.sub.IsWildcard() {
		return true
	}
	// A client holding a whole generation with the same names still
	// subscribes to all of them (normalize checked).
	if held.whole != nil && held.whole.namesID == gen.namesID {
		return true
	}
	subs := w.sub.SubscribedResources()
	if len(subs) < len(gen.names) {
		return false
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
func (c *Cache) respondDelta(w *watch, gen *generation, held holding) bool {
	covers := c.coversAll(w, gen, held)
	var updated []*discoveryv3.Resource
	var removed []string
	switch {
	case held.whole == gen:
		// It holds this very generation: an ACK, or a snapshot that
		// changed other types.
		return false
	case held.whole != nil && covers:
		// It holds a whole earlier generation: what changed since is the
		// same for every such client, and so is the response.
		from := held.whole.id
		if _, ok := gen.diffDelta[from]; !ok {
			for _, n := range c.diffSince(gen, held.whole) {
				e := gen.entries[n]
				gen.diffDelta[from] = append(gen.diffDelta[from], &discoveryv3.Resource{Name: n, Version: e.hash, Resource: e.any})
			}
			c.shared.shareDelta(gen.diffDelta[from])
		}
		updated, removed = gen.diffDelta[from], c.removedSince(gen, held.whole)
	case held.whole == nil && len(held.explicit) == 0 && covers:
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
			if (sub || w.sub.IsWildcard()) && held.hash(n) != e.hash {
				updated = append(updated, &discoveryv3.Resource{Name: n, Version: e.hash, Resource: e.any})
			}
		}
		held.names(func(n string) {
			if gen.entries[n] == nil {
				removed = append(removed, n)
			}
		})
		sort.Strings(removed)
	}
	if len(updated) == 0 && len(removed) == 0 {
		return false
	}
	var next map[string]string
	if covers {
		// It now holds exactly this generation.
		next = wholeMap(gen)
	} else {
		next = map[string]string{}
		held.names(func(n string) { next[n] = held.hash(n) })
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
