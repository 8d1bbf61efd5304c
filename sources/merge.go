package sources

import (
	"sort"
	"strings"
)

// Catalog is the merged view of every source: one entry per service name, one
// endpoint per host:port, each remembering what every source said about it.
type Catalog struct {
	Services []CatalogService `json:"services"`
}

// CatalogService is a service in the merged catalog.
type CatalogService struct {
	Name      string     `json:"name"`
	Endpoints []Endpoint `json:"endpoints"`
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
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	sort.Strings(names)

	type acc struct {
		byKey map[string]*Endpoint
	}
	services := map[string]*acc{}
	for _, src := range names {
		for _, svc := range states[src].Services {
			a := services[svc.Name]
			if a == nil {
				a = &acc{byKey: map[string]*Endpoint{}}
				services[svc.Name] = a
			}
			for _, in := range svc.Instances {
				k := in.Key()
				ep := a.byKey[k]
				if ep == nil {
					ep = &Endpoint{Instance: in}
					ep.Metadata = copyMap(in.Metadata)
					a.byKey[k] = ep
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
	}

	out := Catalog{Services: make([]CatalogService, 0, len(services))}
	for name, a := range services {
		cs := CatalogService{Name: name, Endpoints: make([]Endpoint, 0, len(a.byKey))}
		for _, ep := range a.byKey {
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
		out.Services = append(out.Services, cs)
	}
	sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Name < out.Services[j].Name })
	return out
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
