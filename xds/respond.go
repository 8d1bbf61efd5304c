package xds

import (
	"sort"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// respondSotw works out the state-of-the-world response t's client needs
// from gen, and what the client holds once it has it; ok is false when the
// client lacks nothing it subscribes to.
func (c *Cache) respondSotw(t *typeSub, gen *generation) (resp *discoveryv3.DiscoveryResponse, next holding, ok bool) {
	if gen == nil {
		return nil, holding{}, false
	}
	if gen == t.rejected {
		return c.respondRejectedSotw(t, gen)
	}
	held := t.held
	d := c.diff(t, gen, held)
	changed := len(d) > 0
	if t.full && !changed {
		// A full-state response also tells the client what does not exist:
		// answer the first request even if nothing it names exists, and
		// whenever something it holds went away.
		// A client whose version differs (a new stream, or a reconnect
		// after the resources it held went away) is told the current set,
		// even if empty; a NACK is not (it would get what it rejected).
		changed = (!t.reqNack && t.reqVersion != gen.version) || c.lost(t, gen, held)
	}
	if !changed {
		return nil, holding{}, false
	}
	var send []*anypb.Any
	covers := c.coversAll(t, gen, held)
	switch {
	case t.full && covers, covers && len(d) == len(gen.names):
		// Everything (a new client, say): the list all such clients share.
		send = gen.allSotw(c)
	case covers && held.whole != nil:
		// Every client that held the same generation gets the same list.
		send = gen.diffAnySince(c, held.whole, d)
	case t.full:
		for _, n := range gen.names {
			if t.names.has(n) {
				send = append(send, gen.entries[n].any)
			}
		}
	default:
		for _, n := range d {
			send = append(send, gen.entries[n].any)
		}
	}
	if covers {
		next = holding{whole: gen}
	} else {
		m := map[string]string{}
		for _, n := range gen.names {
			if t.names.has(n) {
				m[n] = gen.entries[n].hash
			}
		}
		next = holding{explicit: m}
	}
	return &discoveryv3.DiscoveryResponse{VersionInfo: gen.version, Resources: send, TypeUrl: t.typeURL}, next, true
}

// lost reports whether the client holds a resource that is gone (or that it
// no longer subscribes to).
func (c *Cache) lost(t *typeSub, gen *generation, held holding) bool {
	if held.whole != nil {
		// The session made sure the client still subscribes to all of it.
		return len(gen.removedSince(held.whole)) > 0
	}
	for n := range held.explicit {
		if gen.entries[n] == nil {
			return true
		}
		if !t.wildcard && !t.names.has(n) {
			return true
		}
	}
	return false
}

// diff lists the subscribed resources whose content the client lacks.
func (c *Cache) diff(t *typeSub, gen *generation, held holding) []string {
	candidates := gen.names
	if held.whole != nil {
		candidates = gen.diffSince(held.whole)
	}
	var out []string
	for _, n := range candidates {
		if !t.wildcard && !t.names.has(n) {
			continue
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
func (gen *generation) diffSince(from *generation) []string {
	gen.mu.Lock()
	defer gen.mu.Unlock()
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
func (gen *generation) removedSince(from *generation) []string {
	gen.mu.Lock()
	defer gen.mu.Unlock()
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

// diffAnySince is the resources of d (gen.diffSince(from)), as one list
// every client that held from shares.
func (gen *generation) diffAnySince(c *Cache, from *generation, d []string) []*anypb.Any {
	gen.mu.Lock()
	defer gen.mu.Unlock()
	send := gen.diffAny[from.id]
	if send == nil {
		for _, n := range d {
			send = append(send, gen.entries[n].any)
		}
		gen.diffAny[from.id] = send
		if !gen.retired {
			c.shared.shareSotw(send)
		}
	}
	return send
}

// coversAll reports whether the client subscribes to every resource of gen,
// so that after this response it holds the whole generation.
func (c *Cache) coversAll(t *typeSub, gen *generation, held holding) bool {
	if t.wildcard {
		return true
	}
	// A client holding a whole generation with the same names still
	// subscribes to all of them (the session checked).
	if held.whole != nil && held.whole.namesID == gen.namesID {
		return true
	}
	if s := t.names.same; s != nil && s.namesID == gen.namesID {
		return true
	}
	if t.names.len() < len(gen.names) {
		return false
	}
	for _, n := range gen.names {
		if !t.names.has(n) {
			return false
		}
	}
	return true
}

// respondDelta works out the delta response t's client needs from gen:
// the subscribed resources whose version it lacks and the removal of
// those it holds that are gone.
func (c *Cache) respondDelta(t *typeSub, gen *generation) (resp *discoveryv3.DeltaDiscoveryResponse, next holding, ok bool) {
	if gen == nil {
		return nil, holding{}, false
	}
	if gen == t.rejected {
		return c.respondRejectedDelta(t, gen)
	}
	held := t.held
	covers := c.coversAll(t, gen, held)
	var updated []*discoveryv3.Resource
	var removed []string
	switch {
	case held.whole == gen:
		// It holds this very generation: an ACK, or a snapshot that
		// changed other types.
		return nil, holding{}, false
	case held.whole != nil && covers:
		// It holds a whole earlier generation: what changed since is the
		// same for every such client, and so is the response.
		updated, removed = gen.deltaSince(c, held.whole), gen.removedSince(held.whole)
	case held.empty() && covers:
		// A new client taking everything: one shared list for all of them.
		updated = gen.deltaAll(c)
	default:
		for _, n := range gen.names {
			e := gen.entries[n]
			if (t.wildcard || t.names.has(n)) && held.hash(n) != e.hash {
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
	// A wildcard client's first request is answered even when the type is
	// empty: Envoy does not finish initialising until it has an answer
	// for each wildcard type (it would wait out its initial fetch
	// timeout).
	first := t.wildcard && t.reqFirst && held.empty()
	if len(updated) == 0 && len(removed) == 0 && !first {
		return nil, holding{}, false
	}
	if covers {
		next = holding{whole: gen}
	} else {
		m := held.explicitCopy()
		if m == nil {
			m = map[string]string{}
		}
		for _, r := range updated {
			m[r.Name] = r.Version
		}
		for _, n := range removed {
			delete(m, n)
		}
		next = holding{explicit: m}
	}
	return &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: gen.version, Resources: updated, RemovedResources: removed, TypeUrl: t.typeURL,
	}, next, true
}

// deltaSince is the delta resources of gen.diffSince(from), one list for
// every client that held from.
func (gen *generation) deltaSince(c *Cache, from *generation) []*discoveryv3.Resource {
	d := gen.diffSince(from)
	gen.mu.Lock()
	defer gen.mu.Unlock()
	rs, ok := gen.diffDelta[from.id]
	if !ok {
		for _, n := range d {
			e := gen.entries[n]
			rs = append(rs, &discoveryv3.Resource{Name: n, Version: e.hash, Resource: e.any})
		}
		gen.diffDelta[from.id] = rs
		if !gen.retired {
			c.shared.shareDelta(rs)
		}
	}
	return rs
}

// deltaAll is the whole generation as delta resources, one list for every
// client that takes it all.
func (gen *generation) deltaAll(c *Cache) []*discoveryv3.Resource {
	gen.mu.Lock()
	defer gen.mu.Unlock()
	if gen.allDelta == nil {
		gen.allDelta = make([]*discoveryv3.Resource, len(gen.names))
		for i, n := range gen.names {
			e := gen.entries[n]
			gen.allDelta[i] = &discoveryv3.Resource{Name: n, Version: e.hash, Resource: e.any}
		}
		if !gen.retired {
			c.shared.shareDelta(gen.allDelta)
		}
	}
	return gen.allDelta
}

// allSotw is the whole generation, one list for every client that takes it
// all.
func (gen *generation) allSotw(c *Cache) []*anypb.Any {
	gen.mu.Lock()
	defer gen.mu.Unlock()
	if !gen.retired {
		c.shared.shareSotw(gen.all)
	}
	return gen.all
}

// unrefused lists the names of gen, the generation t's client rejected,
// that it subscribes to and lacks, but did not refuse: those it subscribed
// to after the NACK.
func unrefused(t *typeSub, gen *generation) []string {
	var out []string
	for _, n := range gen.names {
		if !t.wildcard && !t.names.has(n) {
			continue
		}
		if _, ok := t.refused[n]; ok {
			continue
		}
		if t.held.hash(n) != gen.entries[n].hash {
			out = append(out, n)
		}
	}
	return out
}

// respondRejectedSotw is respondSotw for a client that rejected gen: it
// is sent what it subscribed to since, not what it rejected, unless the
// type needs the full state (its subscription then took the rejected
// resources back, as go-control-plane's servers do).
func (c *Cache) respondRejectedSotw(t *typeSub, gen *generation) (resp *discoveryv3.DiscoveryResponse, next holding, ok bool) {
	fresh := unrefused(t, gen)
	if len(fresh) == 0 {
		return nil, holding{}, false
	}
	var send []*anypb.Any
	var m map[string]string
	if t.full {
		m = map[string]string{}
		for _, n := range gen.names {
			if t.wildcard || t.names.has(n) {
				send = append(send, gen.entries[n].any)
				m[n] = gen.entries[n].hash
			}
		}
	} else {
		m = t.held.explicitCopy()
		if m == nil {
			m = map[string]string{}
		}
		for _, n := range fresh {
			send = append(send, gen.entries[n].any)
			m[n] = gen.entries[n].hash
		}
	}
	return &discoveryv3.DiscoveryResponse{VersionInfo: gen.version, Resources: send, TypeUrl: t.typeURL}, holding{explicit: m}, true
}

// respondRejectedDelta is respondDelta for a client that rejected gen: it
// is sent what it subscribed to since, not what it rejected.
func (c *Cache) respondRejectedDelta(t *typeSub, gen *generation) (resp *discoveryv3.DeltaDiscoveryResponse, next holding, ok bool) {
	fresh := unrefused(t, gen)
	if len(fresh) == 0 {
		return nil, holding{}, false
	}
	m := t.held.explicitCopy()
	if m == nil {
		m = map[string]string{}
	}
	updated := make([]*discoveryv3.Resource, len(fresh))
	for i, n := range fresh {
		e := gen.entries[n]
		updated[i] = &discoveryv3.Resource{Name: n, Version: e.hash, Resource: e.any}
		m[n] = e.hash
	}
	return &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: gen.version, Resources: updated, TypeUrl: t.typeURL,
	}, holding{explicit: m}, true
}
