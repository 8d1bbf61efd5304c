package translator

import (
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
)

// Incremental translates for one proxy group again and again. The
// per-service part comes from a Shared (the segment of the group's view
// and dependency set); what is the group's own (an Envoy's listeners,
// outbound route configuration, inbound side and tracing collector) is
// remembered with what it was built from, and each type's list is put
// together again only when the segment's list or the group's own part
// changed. Unchanged resources and lists therefore keep their identity
// from call to call, and from group to group, for the snapshot builder's
// and the xDS cache's memos.
//
// Its results equal Translate's for the same input. An Incremental is not
// safe for concurrent use, nor are the Incrementals of one Shared.
type Incremental struct {
	shared *Shared
	// private: the Shared is this Incremental's alone, swept after
	// every call.
	private bool
	proxy   Proxy
	view    serviceView
	// deps is the group's dependency set under depsPolicy, and depsKey
	// its key among the segments.
	deps       policy.Dependencies
	depsPolicy *policy.Set
	depsKey    string

	// own is the group's own part and what it was built from.
	own *ownMemo
	// out is the last result, and outRevs the segment list revisions and
	// own part it was put together from.
	out     map[resource.Type][]types.Resource
	outSeg  *segment
	outRevs [numLists]uint64
	outOwn  *ownMemo
	// outRev is out's revision (Result.Revision).
	outRev uint64
}

// ownMemo is an Envoy group's own resources and their inputs.
type ownMemo struct {
	policySet *policy.Set
	// tracing is the group's service's tracing under policySet.
	tracing  policy.Tracing
	outbound *routev3.RouteConfiguration // the segment's
	filters  outboundFilters
	// collector is the catalog entry of a tracing collector that is a
	// catalog service, by revision (or value, see serviceMemo.current).
	collectorName string
	collector     sources.CatalogService
	lineage       uint64
	added         *Result
}

// NewIncremental returns an Incremental translating for p with t's options
// and a Shared of its own.
func (t *Translator) NewIncremental(p Proxy) *Incremental {
	return &Incremental{shared: t.NewShared(), private: true, proxy: p, view: viewOf(p)}
}

// NewIncremental returns an Incremental translating for p that shares
// per-service work with every other Incremental of s.
func (s *Shared) NewIncremental(p Proxy) *Incremental {
	return &Incremental{shared: s, proxy: p, view: viewOf(p)}
}

// Translate is Translator.Translate for the Incremental's proxy. Groups of
// one Shared are translated one after another for the same catalog and
// policy set (the first call of a new input starts a pass of the Shared).
func (m *Incremental) Translate(catalog sources.Catalog, pol *policy.Set) (*Result, error) {
	s := m.shared
	if err := s.prepare(catalog, pol); err != nil {
		return nil, err
	}
	if m.private {
		defer s.Sweep()
	}
	if m.depsPolicy != pol || m.depsKey == "" {
		// Once per policy set: the set and its key cost an allocation.
		m.deps = Dependencies(m.proxy, pol)
		m.depsPolicy, m.depsKey = pol, depsKey(m.deps)
	}
	seg := s.segment(m.view, m.depsKey, m.deps)
	var own *ownMemo
	if m.proxy.Kind != KindGRPC {
		own = m.ownPart(seg, pol)
	}
	diags := seg.diags
	if own != nil && len(own.added.Diagnostics) > 0 {
		diags = append(slices.Clip(diags), own.added.Diagnostics...)
	}
	revs := seg.listRev
	eds, edsRev := s.endpoints(seg, m.proxy.Locality)
	revs[listEndpoints] = edsRev
	if m.out != nil && seg == m.outSeg && revs == m.outRevs && own == m.outOwn {
		return &Result{Resources: m.out, Revision: m.outRev, Diagnostics: diags}, nil
	}
	out := map[resource.Type][]types.Resource{
		resource.ClusterType:  seg.lists[listClusters],
		resource.EndpointType: eds,
		resource.ListenerType: seg.lists[listListeners],
		resource.RouteType:    seg.lists[listRoutes],
	}
	if own != nil {
		for typ, rs := range own.added.Resources {
			if m.out != nil && seg == m.outSeg && own == m.outOwn && revs[listOf(typ)] == m.outRevs[listOf(typ)] {
				out[typ] = m.out[typ]
				continue
			}
			out[typ] = mergeByName(out[typ], rs)
		}
	}
	for typ, rs := range out {
		if rs == nil {
			out[typ] = []types.Resource{}
		}
	}
	m.out, m.outSeg, m.outRevs, m.outOwn = out, seg, revs, own
	m.outRev = s.nextRev()
	return &Result{Resources: out, Revision: m.outRev, Diagnostics: diags}, nil
}

func listOf(typ resource.Type) int {
	switch typ {
	case resource.ClusterType:
		return listClusters
	case resource.EndpointType:
		return listEndpoints
	case resource.ListenerType:
		return listListeners
	}
	return listRoutes
}

// mergeByName returns the name-ordered union of two name-ordered lists
// whose names differ; shared is not modified.
func mergeByName(shared, own []types.Resource) []types.Resource {
	if len(own) == 0 {
		return shared
	}
	out := make([]types.Resource, 0, len(shared)+len(own))
	i := 0
	for _, r := range own {
		name := cache.GetResourceName(r)
		j, _ := slices.BinarySearchFunc(shared[i:], name, func(x types.Resource, n string) int {
			return strings.Compare(cache.GetResourceName(x), n)
		})
		out = append(out, shared[i:i+j]...)
		out = append(out, r)
		i += j
	}
	return append(out, shared[i:]...)
}

// ownPart returns an Envoy group's own resources, the last ones when
// nothing they are built from changed.
func (m *Incremental) ownPart(seg *segment, pol *policy.Set) *ownMemo {
	s := m.shared
	o := m.own
	var tr policy.Tracing
	if o != nil && o.policySet == pol {
		tr = o.tracing
	} else {
		tr = pol.Resolve(m.proxy.Service).Tracing
	}
	var collector sources.CatalogService
	if tr.Enabled {
		if i, ok := slices.BinarySearchFunc(s.services, tr.CollectorHost, func(c sources.CatalogService, n string) int {
			return strings.Compare(c.Name, n)
		}); ok {
			collector = s.services[i]
		}
	}
	if o != nil && o.policySet == pol && o.outbound == seg.outbound && o.filters == seg.filters &&
		o.collectorName == collector.Name && m.sameCollector(o, collector) {
		return o
	}
	o = &ownMemo{
		policySet: pol, tracing: tr, outbound: seg.outbound, filters: seg.filters,
		collectorName: collector.Name, collector: collector, lineage: s.catalog.Lineage,
		added: &Result{Resources: map[resource.Type][]types.Resource{}},
	}
	in := Input{Catalog: s.catalog, Policy: pol, Proxy: m.proxy}
	s.t.envoyListeners(o.added, in, s.services, m.deps, seg.outbound, seg.filters)
	for _, rs := range o.added.Resources {
		sortByName(rs)
	}
	m.own = o
	return o
}

// sameCollector reports whether the collector's catalog entry is the one o
// was built from.
func (m *Incremental) sameCollector(o *ownMemo, c sources.CatalogService) bool {
	lineage := m.shared.catalog.Lineage
	if lineage != 0 && c.Revision != 0 && o.lineage == lineage && o.collector.Revision != 0 {
		return o.collector.Revision == c.Revision
	}
	return sameEndpoints(o.collector.Endpoints, c.Endpoints)
}
