package translator

import (
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
)

// Incremental translates for one proxy again and again, remembering each
// service's resources between calls: a service whose catalog entry and
// policy set are the ones it was last translated from gets the very same
// resource values back, so a change to one service costs translating that
// service (plus a pass over the others that compares pointers), and the
// unchanged resources keep their identity for the snapshot builder's and
// the xDS cache's memos of hashes and encodings.
//
// It relies on the catalog's immutability (see sources.Merger): a service
// is taken as unchanged when its Endpoints slice is the one translated
// before, and every resource is the same as Translate would build. An
// Incremental is not safe for concurrent use.
type Incremental struct {
	t     *Translator
	proxy Proxy
	// policy is the set the memo was built under; another set (a policy
	// change) clears the memo.
	policy   *policy.Set
	services map[string]*memoService
	// seen counts the calls, to drop the services a call did not see.
	seen uint64
	// vhosts and routes are the outbound route configuration of the
	// last call and the virtual hosts it was built from.
	vhosts []*routev3.VirtualHost
	routes *routev3.RouteConfiguration
	// tracing is the proxy's own service's tracing under policy, and
	// listeners what the last call's envoyListeners added.
	tracing   policy.Tracing
	listeners *listenersMemo
}

// listenersMemo is an Envoy's listeners, inbound side and collector
// cluster, with everything they were built from besides the proxy and the
// policy set: the outbound route configuration, whether a gateway's
// routes enforce rate limits, and the endpoints of a collector that is a
// catalog service.
type listenersMemo struct {
	outbound    *routev3.RouteConfiguration
	rateLimited bool
	collector   []sources.Endpoint
	added       *Result
}

type memoService struct {
	endpoints []sources.Endpoint
	// domains are those the configuration in res was built for.
	domains []string
	res     serviceResources
	seen    uint64
}

// NewIncremental returns an Incremental translating for p with t's options.
func (t *Translator) NewIncremental(p Proxy) *Incremental {
	return &Incremental{t: t, proxy: p, services: map[string]*memoService{}}
}

// Translate is Translator.Translate for the Incremental's proxy; its result
// equals Translate's for the same catalog and policy.
func (m *Incremental) Translate(catalog sources.Catalog, pol *policy.Set) (*Result, error) {
	if pol != m.policy || m.seen == 0 {
		m.policy = pol
		clear(m.services)
		m.listeners = nil
		m.tracing = pol.Resolve(m.proxy.Service).Tracing
	}
	m.seen++
	return m.t.translate(Input{Catalog: catalog, Policy: pol, Proxy: m.proxy}, m)
}

// service returns the resources of svc, from the memo when svc is the
// catalog entry they were built from. A nil m translates every time.
func (m *Incremental) service(t *Translator, svc sources.CatalogService, pol *policy.Set, v serviceView) serviceResources {
	if m == nil {
		return t.service(svc, pol.Resolve(svc.Name), v)
	}
	ms := m.services[svc.Name]
	if ms != nil && sameEndpoints(ms.endpoints, svc.Endpoints) {
		ms.seen = m.seen
		return ms.res
	}
	doms := domains(svc)
	if ms == nil || !slices.Equal(doms, ms.domains) {
		// New, or serving on other ports: its virtual host (and, for
		// gRPC, its listeners) change too.
		ms = &memoService{domains: doms, res: t.serviceConfig(svc.Name, doms, pol.Resolve(svc.Name), v)}
		m.services[svc.Name] = ms
	}
	// Only the endpoints changed: everything else keeps its value.
	ms.endpoints, ms.seen = svc.Endpoints, m.seen
	ms.res.endpoints = serviceEndpoints(svc)
	return ms.res
}

// sameEndpoints reports whether a and b are the same slice.
func sameEndpoints(a, b []sources.Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0]
}

// outboundRoutes is Envoy's outbound route configuration over vhosts,
// the previous one when every virtual host is the same as last time.
func (m *Incremental) outboundRoutes(vhosts []*routev3.VirtualHost) *routev3.RouteConfiguration {
	if m == nil {
		return envoy.RouteConfiguration(OutboundRouteName, vhosts)
	}
	if m.routes == nil || len(vhosts) != len(m.vhosts) || !samePointers(vhosts, m.vhosts) {
		m.vhosts = vhosts
		m.routes = envoy.RouteConfiguration(OutboundRouteName, vhosts)
	}
	return m.routes
}

func samePointers[T any](a, b []*T) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// envoyListeners adds what Translator.envoyListeners adds, the previous
// call's values when nothing they are built from changed.
func (m *Incremental) envoyListeners(t *Translator, res *Result, in Input, services []sources.CatalogService, outbound *routev3.RouteConfiguration, rateLimited bool) {
	if m == nil {
		t.envoyListeners(res, in, services, outbound, rateLimited)
		return
	}
	var collector []sources.Endpoint
	if m.tracing.Enabled {
		i, found := slices.BinarySearchFunc(services, m.tracing.CollectorHost, func(s sources.CatalogService, name string) int {
			return strings.Compare(s.Name, name)
		})
		if found {
			collector = services[i].Endpoints
		}
	}
	l := m.listeners
	if l == nil || l.outbound != outbound || l.rateLimited != rateLimited || !sameEndpoints(l.collector, collector) {
		l = &listenersMemo{outbound: outbound, rateLimited: rateLimited, collector: collector, added: &Result{Resources: map[resource.Type][]types.Resource{}}}
		t.envoyListeners(l.added, in, services, outbound, rateLimited)
		m.listeners = l
	}
	for typ, rs := range l.added.Resources {
		res.Resources[typ] = append(res.Resources[typ], rs...)
	}
}

// done forgets the services the last call did not see.
func (m *Incremental) done() {
	if m == nil {
		return
	}
	for name, ms := range m.services {
		if ms.seen != m.seen {
			delete(m.services, name)
		}
	}
}
