package sources

import (
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
)

// Catalog is the merged view of every source: one entry per service name, one
// endpoint per host:port, each remembering what every source said about it.
type Catalog struct {
	Services []CatalogService `json:"services"`
	// Lineage names the Merger that made the catalog; its services'
	// revisions mean something only among catalogs of the same lineage.
	// 0 means unknown (a catalog built by hand, or by Merge): consumers
	// then compare services by value.
	Lineage uint64 `json:"-"`
}

// CatalogService is a service in the merged catalog.
type CatalogService struct {
	Name      string     `json:"name"`
	Endpoints []Endpoint `json:"endpoints"`
	// Revision changes whenever the service's merged value does, and only
	// then, within one Lineage: equal revisions mean equal endpoints, so
	// the translator's memos compare one number per service. 0 means
	// unknown.
	Revision uint64 `json:"revision,omitempty"`
}

// Endpoint is one merged instance. Instance holds the effective values; Views
// holds each source's own report (sorted by source name), so the admin API can
// show where a value came from and where sources disagree.
type Endpoint struct {
	Instance
	Views []Instance `json:"views,omitempty"`
}

// Merge combines the states of several sources (keyed by source name).
//
// The rule, applied per host:port, is deterministic and independent of the
// order in which sources reported:
//   - health: the worst view wins (unhealthy > draining > healthy > unknown),
//     so an instance any registry considers down gets no traffic;
//   - weight, locality and metadata: taken from the first source in name
//     order that reported the instance;
//   - metadata keys missing there are filled from later sources.
func Merge(states map[string]State) Catalog {
	c := new(Merger).Merge(states)
	// A throwaway Merger's revisions say nothing about other catalogs.
	c.Lineage = 0
	for i := range c.Services {
		c.Services[i].Revision = 0
	}
	return c
}

// Merger merges like Merge and remembers its last result, so that a change
// costs work in proportion to the services it touches. A service whose
// contributions are the same as in the previous call keeps its merged value
// — the very same Endpoints slice — which tells consumers (the translator's
// memo) by identity alone that it did not change.
//
// Contributions are compared by identity first (a source that keeps the
// Instances slices of unchanged services, as the etcd source does, costs
// one pointer comparison per service) and by value otherwise (a source that
// rebuilds its whole state, such as a re-read file, costs one comparison
// per instance but still changes nothing downstream).
//
// States and catalogs are immutable once built: Merger never writes to the
// states it is given, and nobody may write to a catalog it returned. A
// Merger is not safe for concurrent use.
type Merger struct {
	// lineage is drawn at random on first use, so that two Mergers (two
	// processes, a restarted loop) never pass one another's revisions as
	// their own; rev is the last revision handed out.
	lineage uint64
	rev     uint64
	prev    []*merged // sorted by name
	// scratch collects one service's contributions.
	scratch []contribution
}

// merged is one service of the last result and what it was merged from.
type merged struct {
	inputs []contribution
	out    CatalogService
}

// contribution is what one source said about one service.
type contribution struct {
	source    string
	instances []Instance
}

// Merge returns the merged catalog of states (see the package func Merge).
func (m *Merger) Merge(states map[string]State) Catalog {
	for m.lineage == 0 {
		m.lineage = rand.Uint64()
	}
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	sort.Strings(names)
	// Walk every source's services in name order at once (sources send
	// them sorted; any that does not is sorted here), so the service list
	// and the previous result are joined without maps.
	lists := make([][]Service, len(names))
	for i, n := range names {
		lists[i] = sortedServices(states[n].Services)
	}
	pos := make([]int, len(names))
	var next []*merged
	prev := m.prev
	for {
		name, ok := "", false
		for i, l := range lists {
			if pos[i] < len(l) && (!ok || l[pos[i]].Name < name) {
				name, ok = l[pos[i]].Name, true
			}
		}
		if !ok {
			break
		}
		in := m.scratch[:0]
		for i, l := range lists {
			for pos[i] < len(l) && l[pos[i]].Name == name {
				in = append(in, contribution{names[i], l[pos[i]].Instances})
				pos[i]++
			}
		}
		m.scratch = in
		for len(prev) > 0 && prev[0].out.Name < name {
			prev = prev[1:]
		}
		var p *merged
		if len(prev) > 0 && prev[0].out.Name == name {
			p = prev[0]
		}
		switch {
		case p != nil && sameIdentity(p.inputs, in):
		case p != nil && sameContributions(p.inputs, in):
			// Equal, but new slices: remember those, so the next
			// comparison is by identity again.
			p = &merged{inputs: slices.Clone(in), out: p.out}
		default:
			p = &merged{inputs: slices.Clone(in), out: mergeService(name, in)}
			m.rev++
			p.out.Revision = m.rev
		}
		next = append(next, p)
	}
	m.prev = next
	out := Catalog{Services: make([]CatalogService, len(next)), Lineage: m.lineage}
	for i, p := range next {
		out.Services[i] = p.out
	}
	return out
}

// sortedServices returns ss in name order: ss itself when it already is.
func sortedServices(ss []Service) []Service {
	less := func(a, b Service) int { return strings.Compare(a.Name, b.Name) }
	if slices.IsSortedFunc(ss, less) {
		return ss
	}
	ss = slices.Clone(ss)
	slices.SortStableFunc(ss, less)
	return ss
}

// sameIdentity reports whether a and b are the same slices from the same
// sources.
func sameIdentity(a, b []contribution) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i].instances, b[i].instances
		if a[i].source != b[i].source || len(x) != len(y) || len(x) > 0 && &x[0] != &y[0] {
			return false
		}
	}
	return true
}

func sameContributions(a, b []contribution) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].source != b[i].source || !sameInstances(a[i].instances, b[i].instances) {
			return false
		}
	}
	return true
}

func sameInstances(a, b []Instance) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Address != y.Address || x.Port != y.Port || x.Health != y.Health || x.Weight != y.Weight ||
			x.Region != y.Region || x.Zone != y.Zone || x.Source != y.Source || x.Origin != y.Origin ||
			!maps.Equal(x.Metadata, y.Metadata) {
			return false
		}
	}
	return true
}

// mergeService merges the contributions of every source (in source name
// order) to one service.
func mergeService(name string, inputs []contribution) CatalogService {
	byKey := map[string]*Endpoint{}
	for _, c := range inputs {
		for _, in := range c.instances {
			k := in.Key()
			ep := byKey[k]
			if ep == nil {
				ep = &Endpoint{Instance: in}
				ep.Metadata = copyMap(in.Metadata)
				byKey[k] = ep
			} else {
				if in.Health > ep.Health {
					ep.Health = in.Health
				}
				for mk, mv := range in.Metadata {
					if _, ok := ep.Metadata[mk]; !ok {
						if ep.Metadata == nil {
							ep.Metadata = map[string]string{}
						}
						ep.Metadata[mk] = mv
					}
				}
			}
			ep.Views = append(ep.Views, in)
		}
	}
	cs := CatalogService{Name: name, Endpoints: make([]Endpoint, 0, len(byKey))}
	for _, ep := range byKey {
		if len(ep.Views) > 1 {
			srcs := make([]string, len(ep.Views))
			for i, v := range ep.Views {
				srcs[i] = v.Source
			}
			ep.Source = strings.Join(srcs, ",")
			ep.Origin = ""
		} else {
			ep.Views = nil
		}
		cs.Endpoints = append(cs.Endpoints, *ep)
	}
	sort.Slice(cs.Endpoints, func(i, j int) bool {
		return lessInstance(cs.Endpoints[i].Instance, cs.Endpoints[j].Instance)
	})
	return cs
}

// InstanceCount is the number of endpoints across all services.
func (c Catalog) InstanceCount() int {
	n := 0
	for _, s := range c.Services {
		n += len(s.Endpoints)
	}
	return n
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
