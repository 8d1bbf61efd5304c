package xds

import (
	"sort"
	"strconv"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// respond answers w from gen if the client lacks something it subscribes
// to, and reports whether it did. Called with c.mu held; the channels have
// room for one response per type, and a watch is answered at most once.
func (c *Cache) respond(w *watch, gen *generation) bool {
	if gen == nil || gen == w.rejected {
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
	// A wildcard client's first request is answered even when the type is
	// empty: Envoy does not finish initialising until it has an answer
	// for each wildcard type (it would wait out its initial fetch
	// timeout).
	first := w.sub.IsWildcard() && w.dreq.GetResponseNonce() == "" && held.whole == nil && len(held.explicit) == 0
	if len(updated) == 0 && len(removed) == 0 && !first {
		return false
	}
	var next map[string]string
	if covers {
		// It now holds exactly this generation; what it held before is
		// said too, for a NACK of this response.
		next = wholeMap(gen)
		switch {
		case held.whole != nil:
			next[prevKey] = genSep + strconv.FormatInt(held.whole.id, 10)
		case len(held.explicit) == 0:
			next[prevKey] = genSep + "0"
		}
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
