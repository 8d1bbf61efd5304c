package etcd

import (
	"fmt"
	"reflect"
	"sort"

	"github.com/sluice-mesh/sluice/sources"
)

// registry holds the parsed entry of every key and assembles complete
// states from them. A change rebuilds only the services it touches, so one
// key changing among ten thousand costs little more than copying the state.
type registry struct {
	entries  map[string]*entry
	services map[string]*bucket
	// orphans are keys with diagnostics but no service (a bad key).
	orphans      map[string]*entry
	orphanDiags  []sources.Diagnostic
	orphansDirty bool
	dirty        map[string]bool // services to rebuild
	names        []string        // sorted service names, when namesOK
	namesOK      bool
}

// bucket is one service: its keys and what they last built.
type bucket struct {
	keys  map[string]*entry
	svc   sources.Service
	diags []sources.Diagnostic
}

func newRegistry() *registry {
	return &registry{
		entries:  map[string]*entry{},
		services: map[string]*bucket{},
		orphans:  map[string]*entry{},
		dirty:    map[string]bool{},
	}
}

// set records key's entry (nil: the key was deleted) and reports whether
// that changes what the key contributes.
func (r *registry) set(key string, e *entry) bool {
	old := r.entries[key]
	if sameResult(old, e) {
		if e != nil {
			r.entries[key] = e // the newest value, for parse caching
		}
		return false
	}
	if old != nil {
		r.detach(key, old)
	}
	if e == nil {
		delete(r.entries, key)
	} else {
		r.entries[key] = e
		r.attach(key, e)
	}
	return true
}

func (r *registry) attach(key string, e *entry) {
	switch {
	case e.ignored:
	case e.service == "":
		r.orphans[key] = e
		r.orphansDirty = true
	default:
		b := r.services[e.service]
		if b == nil {
			b = &bucket{keys: map[string]*entry{}}
			r.services[e.service] = b
			r.namesOK = false
		}
		b.keys[key] = e
		r.dirty[e.service] = true
	}
}

func (r *registry) detach(key string, e *entry) {
	switch {
	case e.ignored:
	case e.service == "":
		delete(r.orphans, key)
		r.orphansDirty = true
	default:
		delete(r.services[e.service].keys, key)
		r.dirty[e.service] = true
	}
}

// state rebuilds what changed since the last call and returns the complete,
// normalized state, and whether it differs from what the last call returned.
func (r *registry) state() (*sources.State, bool) {
	changed := false
	for name := range r.dirty {
		b := r.services[name]
		if len(b.keys) == 0 {
			changed = changed || len(b.svc.Instances) > 0 || len(b.diags) > 0
			delete(r.services, name)
			r.namesOK = false
			continue
		}
		svc, diags := b.build(name)
		if !reflect.DeepEqual(svc, b.svc) {
			// A service that did not change keeps its old slice, which
			// tells the merger by identity that nothing changed.
			b.svc, changed = svc, true
		}
		if !reflect.DeepEqual(diags, b.diags) {
			b.diags, changed = diags, true
		}
	}
	clear(r.dirty)
	if r.orphansDirty {
		keys := make([]string, 0, len(r.orphans))
		for k := range r.orphans {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var diags []sources.Diagnostic
		for _, k := range keys {
			diags = append(diags, r.orphans[k].diags...)
		}
		changed = changed || !reflect.DeepEqual(diags, r.orphanDiags)
		r.orphanDiags, r.orphansDirty = diags, false
	}
	if !r.namesOK {
		r.names = r.names[:0]
		for name := range r.services {
			r.names = append(r.names, name)
		}
		sort.Strings(r.names)
		r.namesOK = true
	}

	// Services are normalized when built and never written again, so
	// every state shares the Instances of the services it did not change
	// (states are immutable once sent).
	st := &sources.State{Services: make([]sources.Service, 0, len(r.names))}
	for _, name := range r.names {
		b := r.services[name]
		st.Diagnostics = append(st.Diagnostics, b.diags...)
		if len(b.svc.Instances) > 0 {
			st.Services = append(st.Services, sources.Service{Name: name, Instances: b.svc.Instances})
		}
	}
	st.Diagnostics = append(st.Diagnostics, r.orphanDiags...)
	st.SortDiagnostics()
	return st, changed
}

// build assembles a service from its keys. Of several keys with the same
// host:port, the first in byte order is served and the others get a
// warning. Instances come out in Normalize's order (address, then port).
func (b *bucket) build(name string) (sources.Service, []sources.Diagnostic) {
	keys := make([]string, 0, len(b.keys))
	for k := range b.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var (
		diags []sources.Diagnostic
		kept  []*entry
		first = map[string]string{} // host:port → key
	)
	for _, k := range keys {
		e := b.keys[k]
		diags = append(diags, e.diags...)
		if !e.ok {
			continue
		}
		hp := e.ap.String()
		if f, dup := first[hp]; dup {
			diags = append(diags, sources.Diagnostic{
				Severity: sources.SeverityWarning,
				Source:   SourceName,
				Location: k,
				Message:  fmt.Sprintf("service %s already has an instance at %s (key %s); this key is ignored", name, hp, f),
			})
			continue
		}
		first[hp] = k
		kept = append(kept, e)
	}
	sort.Slice(kept, func(i, j int) bool {
		a, b := kept[i].ap, kept[j].ap
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c < 0
		}
		return a.Port() < b.Port()
	})
	svc := sources.Service{Name: name}
	for _, e := range kept {
		svc.Instances = append(svc.Instances, e.inst)
	}
	sources.NormalizeService(&svc, SourceName)
	return svc, diags
}

// buildState is the state of a set of entries, built from scratch.
func buildState(entries map[string]*entry) *sources.State {
	r := newRegistry()
	for k, e := range entries {
		r.set(k, e)
	}
	st, _ := r.state()
	return st
}
