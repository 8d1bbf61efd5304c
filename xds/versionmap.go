package xds

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

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
	gens []lineageEntry
}

// lineageEntry is a generation and when it joined the lineage. Generations
// are shared between groups (see Cache), each of which has its own lineage.
type lineageEntry struct {
	gen  *generation
	made time.Time
}

const (
	lineageMin = 8
	lineageMax = 128
	lineageAge = 30 * time.Second
)

// add appends gen (made at now) and forgets what is both beyond the
// minimum and old, or beyond the maximum.
func (l *lineage) add(gen *generation, now time.Time) {
	l.gens = append(l.gens, lineageEntry{gen: gen, made: now})
	for len(l.gens) > lineageMin && (now.Sub(l.gens[0].made) > lineageAge || len(l.gens) > lineageMax) {
		l.gens[0] = lineageEntry{}
		l.gens = l.gens[1:]
	}
}

// findVersion returns the newest generation of the lineage with type
// version v, or nil.
func (l *lineage) findVersion(v string) *generation {
	if v == "" {
		return nil
	}
	for i := len(l.gens) - 1; i >= 0; i-- {
		if g := l.gens[i].gen; g.version == v {
			return g
		}
	}
	return nil
}

// acceptedHolding is the explicit version map of a client that holds, of
// generation gen (nil: nothing known), the resources it subscribes to.
func acceptedHolding(gen *generation, sub interface {
	IsWildcard() bool
	SubscribedResources() map[string]struct{}
}) map[string]string {
	held := map[string]string{}
	if gen == nil {
		return held
	}
	subs := sub.SubscribedResources()
	for _, n := range gen.names {
		if _, ok := subs[n]; ok || sub.IsWildcard() {
			held[n] = gen.entries[n].hash
		}
	}
	return held
}

func (l *lineage) find(id int64) *generation {
	if l == nil {
		return nil
	}
	for _, e := range l.gens {
		if e.gen.id == id {
			return e.gen
		}
	}
	return nil
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
//     versions carry the mark "@<generation id>" after their hash. This
//     is the common case (every proxy of a group subscribes to
//     everything): a response then costs the same for 10 resources as for
//     10,000, and a proxy's version maps are a few entries instead of a
//     copy per name.
//
// Before a request is answered, normalize resolves the mark and turns a
// whole-generation map whose client changed its subscription (or next to
// which go-control-plane wrote something) into the explicit form.
const (
	genSep  = "@"
	markKey = "\x00sluice/generation"
	// prevKey, in a delta client's map, names the generation the client
	// held before the response that gave it this map ("@0": nothing), so
	// that a NACK of that response can be answered from what the client
	// kept (see Cache.watch). No resource has this name either.
	prevKey = "\x00sluice/previous"
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
		if n != markKey && n != prevKey { // only a client's own initial versions can have them
			f(n)
		}
	}
}

// previousOf reads prevKey: the id of the generation the client held before
// its last response (0: nothing), and whether the map says.
func previousOf(held map[string]string) (int64, bool) {
	v, ok := held[prevKey]
	if !ok || !strings.HasPrefix(v, genSep) {
		return 0, false
	}
	id, err := strconv.ParseInt(v[len(genSep):], 10, 64)
	return id, err == nil
}

// markOf finds the generation mark in a version map. ok is false when
// there is none; consistent is false when marks disagree or do not parse,
// or when unmarked entries sit next to them.
func markOf(held map[string]string) (id int64, ok, consistent bool) {
	consistent = true
	for k, v := range held {
		if k == prevKey {
			continue
		}
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
