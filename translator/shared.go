package translator

import (
	"reflect"
	"slices"
	"strings"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
)

// Shared is the part of translation that proxy groups have in common, built
// once per change instead of once per group: each service's resources per
// view (client kind, gateway or not), and per view and dependency set the
// name-ordered lists of them (segments). Every group translating with an
// Incremental of the same Shared gets the very same resource values and
// lists, so the snapshot builder hashes, and the xDS cache encodes, each
// of them once for the whole mesh.
//
// Change detection is by explicit revisions, not by identity: a service's
// memo is current while the catalog revision it was built from
// (sources.CatalogService.Revision, within one catalog lineage; by value
// when the catalog has none) and the hash of its resolved policy are
// unchanged. Each memo has a revision of its own, bumped whenever its
// resources change, and each segment list one, bumped whenever the list
// does; the groups compare those numbers.
//
// A Shared is not safe for concurrent use; resources it returns must not be
// modified.
type Shared struct {
	t *Translator
	// catalog and pol are the input of the current pass; pass numbers the
	// passes (a pass starts when the input changes).
	catalog  sources.Catalog
	services []sources.CatalogService // sorted by name
	pol      *policy.Set
	pass     uint64
	err      error
	views    map[serviceView]*viewMemo
	// rev is the last revision handed out to a memo or a list.
	rev uint64
	// epoch counts Sweeps: what was not used in an epoch is swept.
	epoch uint64
}

type viewMemo struct {
	services map[string]*serviceMemo
	segments map[string]*segment
}

// serviceMemo is one service's resources in one view.
type serviceMemo struct {
	// What it was built from: the catalog entry (its lineage and
	// revision, and the endpoints for catalogs without revisions) and
	// the policy (the set it was last checked against and the resolved
	// policy's hash).
	lineage, catalogRev uint64
	endpoints           []sources.Endpoint
	policySet           *policy.Set
	policyHash          string
	domains             []string
	built               bool
	res                 serviceResources
	// diags, when not nil, says why res is invalid: the service is left
	// out of its segments.
	diags []sources.Diagnostic
	// warnings are about the service's subsets without instances (see
	// subsetWarnings); they do not leave it out.
	warnings []sources.Diagnostic
	// subsets are the service's subsets, and empty those of them with no
	// instance (the routes were built for them).
	subsets []policy.Subset
	empty   []string
	// locality is the service's locality policy (nil: off), and local its
	// load assignments for callers of known localities, built as groups
	// ask for them.
	locality *policy.Locality
	local    map[Locality]*localAssignment
	// rev changes whenever res, diags or locality do.
	rev uint64
	// pass is the last pass that brought it up to date, used the last
	// epoch that asked for it.
	pass, used uint64
}

// Kinds of segment lists.
const (
	listClusters = iota
	listEndpoints
	listListeners // proxyless gRPC's API listeners
	listRoutes    // proxyless gRPC's route configurations
	numLists
)

// segment is one view's resources of one dependency set, each type in name
// order.
type segment struct {
	members []*serviceMemo
	revs    []uint64
	lists   [numLists][]types.Resource
	// raw is lists in member order (gRPC's listener names do not sort
	// with their services'), for comparing a rebuilt list with the last.
	raw     [numLists][]types.Resource
	listRev [numLists]uint64
	// vhosts, filters and outbound are an Envoy's outbound route
	// configuration and what it is built from.
	vhosts   []*routev3.VirtualHost
	filters  outboundFilters
	outbound *routev3.RouteConfiguration
	// diags are the members' diagnostics, in member order.
	diags []sources.Diagnostic
	// localized says a member has a locality policy: callers of known
	// localities then get load assignments of their own (local).
	localized bool
	local     map[Locality]*localList
	// pass is the last pass that brought it up to date, used the last
	// epoch that asked for it.
	pass, used uint64
}

// localAssignment is a service's load assignment, and its subsets', for
// callers of one locality, built at its memo's revision rev.
type localAssignment struct {
	cla       *endpointv3.ClusterLoadAssignment
	subsets   []*endpointv3.ClusterLoadAssignment
	rev, used uint64
}

// localList is a segment's list of load assignments for callers of one
// locality: each member's own for that locality when it has a locality
// policy, its plain one otherwise.
type localList struct {
	raw, list []types.Resource
	rev       uint64
	pass      uint64
	used      uint64
}

// NewShared returns an empty Shared translating with t's options.
func (t *Translator) NewShared() *Shared {
	return &Shared{t: t, views: map[serviceView]*viewMemo{}}
}

// prepare starts a pass over catalog and pol, unless they are the input of
// the current one.
func (s *Shared) prepare(catalog sources.Catalog, pol *policy.Set) error {
	if s.pass > 0 && pol == s.pol && sameCatalog(catalog, s.catalog) {
		return s.err
	}
	s.pass++
	s.catalog, s.pol = catalog, pol
	s.services, s.err = sortedServices(catalog.Services)
	return s.err
}

// sameCatalog reports whether a and b are the same catalog value (catalogs
// are immutable once built).
func sameCatalog(a, b sources.Catalog) bool {
	if a.Lineage != b.Lineage || len(a.Services) != len(b.Services) {
		return false
	}
	return len(a.Services) == 0 || &a.Services[0] == &b.Services[0]
}

// Sweep forgets the services and segments no group asked for since the
// last Sweep: services that left the catalog, dependency sets no group has
// any more. The snapshot loop calls it after a build of every group.
func (s *Shared) Sweep() {
	for v, vm := range s.views {
		for name, sm := range vm.services {
			if sm.used < s.epoch {
				delete(vm.services, name)
			}
		}
		for _, sm := range vm.services {
			for loc, la := range sm.local {
				if la.used < s.epoch {
					delete(sm.local, loc)
				}
			}
		}
		for key, seg := range vm.segments {
			if seg.used < s.epoch {
				delete(vm.segments, key)
				continue
			}
			for loc, ll := range seg.local {
				if ll.used < s.epoch {
					delete(seg.local, loc)
				}
			}
		}
		if len(vm.services) == 0 && len(vm.segments) == 0 {
			delete(s.views, v)
		}
	}
	s.epoch++
}

func (s *Shared) view(v serviceView) *viewMemo {
	vm := s.views[v]
	if vm == nil {
		vm = &viewMemo{services: map[string]*serviceMemo{}, segments: map[string]*segment{}}
		s.views[v] = vm
	}
	return vm
}

func (s *Shared) nextRev() uint64 {
	s.rev++
	return s.rev
}

// service returns the memo of svc in view v, brought up to date.
func (s *Shared) service(vm *viewMemo, v serviceView, svc *sources.CatalogService) *serviceMemo {
	sm := vm.services[svc.Name]
	if sm == nil {
		sm = &serviceMemo{}
		vm.services[svc.Name] = sm
	}
	sm.used = s.epoch
	if sm.pass == s.pass {
		return sm
	}
	sm.pass = s.pass
	var resolved policy.Resolved
	policyOK := sm.built && sm.policySet == s.pol
	if sm.built && !policyOK {
		// Another policy set: most services' policies are as they were.
		resolved = s.pol.Resolve(svc.Name)
		if policyOK = resolved.Hash() == sm.policyHash; policyOK {
			sm.policySet = s.pol
		}
	}
	endpointsOK := sm.built && sm.current(svc, s.catalog.Lineage)
	if policyOK && endpointsOK {
		return sm
	}
	if !policyOK {
		if resolved.Service == "" {
			resolved = s.pol.Resolve(svc.Name)
		}
		sm.policySet, sm.policyHash = s.pol, resolved.Hash()
		sm.locality, sm.subsets = resolved.Locality, resolved.Subsets
	}
	// The routes depend on the endpoints through the domains (ports) and
	// the subsets that have no instances.
	doms, empty := domains(*svc), emptySubsets(*svc, sm.subsets)
	if !policyOK || !slices.Equal(doms, sm.domains) || !slices.Equal(empty, sm.empty) {
		if resolved.Service == "" {
			resolved = s.pol.Resolve(svc.Name)
		}
		endpoints, subsetEndpoints := sm.res.endpoints, sm.res.subsetEndpoints
		sm.res = s.t.serviceConfig(svc.Name, doms, resolved, v, empty)
		sm.res.endpoints, sm.res.subsetEndpoints = endpoints, subsetEndpoints
		sm.domains, sm.empty = doms, empty
		sm.warnings = subsetWarnings(svc.Name, empty, resolved)
	}
	if !endpointsOK {
		sm.res.endpoints = serviceEndpoints(*svc)
	}
	if !endpointsOK || !policyOK {
		sm.res.subsetEndpoints = subsetEndpoints(*svc, sm.subsets)
	}
	sm.lineage, sm.catalogRev, sm.endpoints = s.catalog.Lineage, svc.Revision, svc.Endpoints
	sm.built = true
	sm.diags = nil
	if bad := invalidResources(sm.res); len(bad) > 0 {
		if resolved.Service == "" {
			resolved = s.pol.Resolve(svc.Name)
		}
		sm.diags = []sources.Diagnostic{serviceDiagnostic(svc.Name, bad, resolved)}
	}
	sm.rev = s.nextRev()
	return sm
}

// current reports whether the memo was built from svc's endpoints: by
// revision within a lineage, by value otherwise.
func (sm *serviceMemo) current(svc *sources.CatalogService, lineage uint64) bool {
	if lineage != 0 && svc.Revision != 0 && sm.lineage == lineage && sm.catalogRev != 0 {
		return sm.catalogRev == svc.Revision
	}
	return sameEndpoints(sm.endpoints, svc.Endpoints)
}

// sameEndpoints compares endpoints by value (what the translator reads of
// them, and their sources' views, which it does not read but which cost
// little to compare).
func sameEndpoints(a, b []sources.Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return reflect.DeepEqual(a, b)
}

// depsKey identifies a dependency set.
func depsKey(d policy.Dependencies) string {
	if d.All {
		return "*"
	}
	return "=" + strings.Join(d.Services, "\x00")
}

// segment returns view v's segment for deps (whose depsKey is key),
// brought up to date.
func (s *Shared) segment(v serviceView, key string, deps policy.Dependencies) *segment {
	vm := s.view(v)
	seg := vm.segments[key]
	if seg == nil {
		seg = &segment{}
		vm.segments[key] = seg
	}
	if seg.used != s.epoch {
		// Its members are in use as long as it is, even when no new
		// pass brings them up to date (see Sweep).
		seg.used = s.epoch
		for _, sm := range seg.members {
			sm.used = s.epoch
		}
	}
	if seg.pass == s.pass {
		return seg
	}
	seg.pass = s.pass
	members := make([]*serviceMemo, 0, len(seg.members))
	if deps.All {
		for i := range s.services {
			members = append(members, s.service(vm, v, &s.services[i]))
		}
	} else {
		for _, name := range deps.Services {
			if i, ok := slices.BinarySearchFunc(s.services, name, func(c sources.CatalogService, n string) int {
				return strings.Compare(c.Name, n)
			}); ok {
				members = append(members, s.service(vm, v, &s.services[i]))
			}
		}
	}
	if seg.same(members) {
		return seg
	}
	var raw [numLists][]types.Resource
	var vhosts []*routev3.VirtualHost
	var diags []sources.Diagnostic
	var filters outboundFilters
	localized := false
	for _, sm := range members {
		if sm.diags != nil {
			diags = append(diags, sm.diags...)
			continue
		}
		diags = append(diags, sm.warnings...)
		localized = localized || sm.locality != nil
		raw[listClusters] = append(raw[listClusters], sm.res.cluster)
		raw[listEndpoints] = append(raw[listEndpoints], sm.res.endpoints)
		for i, c := range sm.res.subsetClusters {
			raw[listClusters] = append(raw[listClusters], c)
			raw[listEndpoints] = append(raw[listEndpoints], sm.res.subsetEndpoints[i])
		}
		if sm.res.routes != nil {
			raw[listRoutes] = append(raw[listRoutes], sm.res.routes)
		}
		for _, l := range sm.res.listeners {
			raw[listListeners] = append(raw[listListeners], l)
		}
		if sm.res.vhost != nil {
			vhosts = append(vhosts, sm.res.vhost)
		}
		filters = filters.or(sm.res.filters)
	}
	for k := range raw {
		if seg.listRev[k] != 0 && samePointers(raw[k], seg.raw[k]) {
			continue
		}
		seg.raw[k] = raw[k]
		// Clusters and load assignments come in name order already;
		// gRPC's listener names do not sort with their services'.
		seg.lists[k] = raw[k]
		if !isSortedByName(raw[k]) {
			seg.lists[k] = slices.Clone(raw[k])
			sortByName(seg.lists[k])
		}
		seg.listRev[k] = s.nextRev()
	}
	if v.kind != KindGRPC && (seg.outbound == nil || !samePointers(vhosts, seg.vhosts)) {
		seg.vhosts = vhosts
		seg.outbound = envoy.RouteConfiguration(OutboundRouteName, vhosts)
	}
	seg.filters = filters
	seg.localized = localized
	seg.diags = diags
	seg.members = members
	seg.revs = make([]uint64, len(members))
	for i, sm := range members {
		seg.revs[i] = sm.rev
	}
	return seg
}

// endpoints returns seg's load assignments for a caller in caller, and
// the list's revision: the segment's own list unless a member has a
// locality policy and the caller's locality is known. Lists and the
// load assignments in them are shared by every group of the segment
// whose callers are in the same locality.
func (s *Shared) endpoints(seg *segment, caller Locality) ([]types.Resource, uint64) {
	if !seg.localized || !caller.Known() {
		return seg.lists[listEndpoints], seg.listRev[listEndpoints]
	}
	ll := seg.local[caller]
	if ll == nil {
		if seg.local == nil {
			seg.local = map[Locality]*localList{}
		}
		ll = &localList{}
		seg.local[caller] = ll
	}
	if ll.used != s.epoch {
		// Its load assignments are in use as long as it is (see Sweep).
		ll.used = s.epoch
		for _, sm := range seg.members {
			if la := sm.local[caller]; la != nil {
				la.used = s.epoch
			}
		}
	}
	if ll.pass == s.pass {
		return ll.list, ll.rev
	}
	ll.pass = s.pass
	// each visits the list's load assignments in member order.
	each := func(visit func(types.Resource)) {
		for _, sm := range seg.members {
			switch {
			case sm.diags != nil:
			case sm.locality != nil:
				la := s.localAssignment(sm, caller)
				visit(la.cla)
				for _, e := range la.subsets {
					visit(e)
				}
			default:
				visit(sm.res.endpoints)
				for _, e := range sm.res.subsetEndpoints {
					visit(e)
				}
			}
		}
	}
	// Most passes change none of the list: compare before allocating.
	same, n := ll.rev != 0, 0
	each(func(x types.Resource) {
		if same && (n >= len(ll.raw) || ll.raw[n] != x) {
			same = false
		}
		n++
	})
	if same && n == len(ll.raw) {
		return ll.list, ll.rev
	}
	raw := make([]types.Resource, 0, n)
	each(func(x types.Resource) { raw = append(raw, x) })
	ll.raw, ll.list = raw, raw
	if !isSortedByName(raw) {
		ll.list = slices.Clone(raw)
		sortByName(ll.list)
	}
	ll.rev = s.nextRev()
	return ll.list, ll.rev
}

// localAssignment returns sm's load assignments for callers in caller,
// built once per revision of the memo.
func (s *Shared) localAssignment(sm *serviceMemo, caller Locality) *localAssignment {
	la := sm.local[caller]
	if la == nil || la.rev != sm.rev {
		if sm.local == nil {
			sm.local = map[Locality]*localAssignment{}
		}
		name := sm.res.endpoints.GetClusterName()
		la = &localAssignment{rev: sm.rev, cla: envoy.LoadAssignment(name, localized(localities(sm.endpoints), sm.locality, caller))}
		for _, ss := range sm.subsets {
			la.subsets = append(la.subsets, envoy.LoadAssignment(SubsetClusterName(name, ss.Name), localized(localities(subsetOf(sm.endpoints, ss)), sm.locality, caller)))
		}
		sm.local[caller] = la
	}
	la.used = s.epoch
	return la
}

// same reports whether members are the segment's members at the revisions
// its lists were built from.
func (seg *segment) same(members []*serviceMemo) bool {
	if seg.revs == nil || len(members) != len(seg.members) {
		return false
	}
	for i, sm := range members {
		if sm != seg.members[i] || sm.rev != seg.revs[i] {
			return false
		}
	}
	return true
}

func samePointers[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
