package snapshot

import (
	"net/netip"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// LocalityAt tells where a client connecting from addr runs, for a client
// whose node names no locality (the xDS tracker's LocalityResolver): the
// locality of the catalog's instances at addr, preferring those of
// service, the client's own, when there are any. It reports false when
// there are no such instances, when they disagree (an instance without a
// locality disagrees with one that has one), or when their locality is
// empty.
//
// It is asked once per new xDS stream, and again now and then for
// streams placed by the registry or not at all (the tracker's Relocate).
// The instances are indexed by address on the first lookup after a source
// changes, so a lookup costs a map access and a change one pass over the
// instances, whether or not clients connect. Before every source has
// synced there is no catalog yet; the index is then built from the
// sources that have reported, so that clients reconnecting to a restarted
// sluice are placed too.
func (l *Loop) LocalityAt(addr netip.Addr, service string) (translator.Locality, bool) {
	addr = addr.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.localities == nil {
		l.localities = l.indexLocalities()
	}
	return l.localities.at(addr, service)
}

// LocalityAware reports whether the current policy set makes clients of
// different localities get different configuration: only then do their
// localities belong in their group keys.
func (l *Loop) LocalityAware() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.policy.UsesLocality()
}

// indexLocalities indexes the merged catalog, or before the first sync the
// states of the sources that have reported. Called with l.mu held.
func (l *Loop) indexLocalities() localityIndex {
	if l.synced() {
		l.mergeCatalog()
		return indexLocalities(l.catalog)
	}
	states := map[string]sources.State{}
	for name, s := range l.sources {
		if s.state != nil {
			states[name] = *s.state
		}
	}
	return indexLocalities(sources.Merge(states))
}

// localityIndex holds the localities of a catalog's instances by IP
// address. Instances whose address is a host name are not in it.
type localityIndex map[netip.Addr][]located

type located struct {
	service  string
	locality translator.Locality
}

func indexLocalities(c sources.Catalog) localityIndex {
	ix := localityIndex{}
	for _, svc := range c.Services {
		for _, e := range svc.Endpoints {
			a, err := netip.ParseAddr(e.Address)
			if err != nil || a.Zone() != "" {
				continue
			}
			a = a.Unmap()
			ix[a] = append(ix[a], located{svc.Name, translator.Locality{Region: e.Region, Zone: e.Zone}})
		}
	}
	return ix
}

// at is LocalityAt's rule over the index.
func (ix localityIndex) at(addr netip.Addr, service string) (translator.Locality, bool) {
	all := ix[addr]
	candidates := all
	if service != "" {
		var own []located
		for _, c := range all {
			if c.service == service {
				own = append(own, c)
			}
		}
		if len(own) > 0 {
			candidates = own
		}
	}
	if len(candidates) == 0 {
		return translator.Locality{}, false
	}
	loc := candidates[0].locality
	for _, c := range candidates[1:] {
		if c.locality != loc {
			return translator.Locality{}, false
		}
	}
	// A registry's locality becomes part of a group key, as node.locality
	// does: the same limits apply.
	if translator.CheckLocalityPart(loc.Region) != nil || translator.CheckLocalityPart(loc.Zone) != nil {
		return translator.Locality{}, false
	}
	return loc, loc.Known()
}
