// Package loadgen simulates many Envoy-like xDS clients against an ADS
// server and measures how fast they get their config: the initial sync and
// the convergence after a change. It is the engine of `sluice load`.
package loadgen

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// Watch says which change a proxy waits for: the load assignment of Cluster
// no longer containing Address.
type Watch struct {
	Cluster string
	Address string // host:port
}

// proxy is one simulated client. Its handlers run on the stream's receive
// goroutine only, so its state needs no lock except what the runner reads.
type proxy struct {
	id string
	// want tracks what the proxy still waits for before it counts as
	// synced: a response for each type, and every named resource.
	gotCDS, gotLDS  bool
	clusters        map[string]bool // EDS names to receive
	haveEDS         map[string]bool
	routes          map[string]bool // RDS names to receive
	haveRDS         map[string]bool
	syncedAt        time.Time
	watch           Watch
	changeConverged time.Time

	mu sync.Mutex // guards syncedAt and changeConverged for the runner
}

func newProxy(id string) *proxy {
	return &proxy{id: id, clusters: map[string]bool{}, haveEDS: map[string]bool{}, routes: map[string]bool{}, haveRDS: map[string]bool{}}
}

func (p *proxy) node() *corev3.Node {
	return &corev3.Node{Id: p.id, Cluster: "load", UserAgentName: "envoy"}
}

func (p *proxy) checkSynced(now time.Time) {
	if !p.syncedAt.IsZero() || !p.gotCDS || !p.gotLDS {
		return
	}
	for c := range p.clusters {
		if !p.haveEDS[c] {
			return
		}
	}
	for r := range p.routes {
		if !p.haveRDS[r] {
			return
		}
	}
	p.mu.Lock()
	p.syncedAt = now
	p.mu.Unlock()
}

// onClusters records the EDS names of the clusters received and reports
// whether the set changed (so EDS must be re-requested).
func (p *proxy) onClusters(res []*anypb.Any, replace bool) (bool, error) {
	names := map[string]bool{}
	if !replace {
		for c := range p.clusters {
			names[c] = true
		}
	}
	for _, a := range res {
		name, err := stringField(a.GetValue(), 1) // Cluster.name
		if err != nil {
			return false, fmt.Errorf("cluster: %w", err)
		}
		names[name] = true
	}
	changed := len(names) != len(p.clusters)
	for n := range names {
		if !p.clusters[n] {
			changed = true
		}
	}
	p.clusters = names
	p.gotCDS = true
	return changed, nil
}

// onEndpoints marks load assignments received and checks the watched one.
func (p *proxy) onEndpoints(res []*anypb.Any, now time.Time) error {
	for _, a := range res {
		name, err := stringField(a.GetValue(), 1) // ClusterLoadAssignment.cluster_name
		if err != nil {
			return fmt.Errorf("load assignment: %w", err)
		}
		p.haveEDS[name] = true
		if p.watch.Cluster != "" && name == p.watch.Cluster {
			cla := &endpointv3.ClusterLoadAssignment{}
			if err := a.UnmarshalTo(cla); err != nil {
				return fmt.Errorf("load assignment %q: %w", name, err)
			}
			if !hasAddress(cla, p.watch.Address) {
				p.mu.Lock()
				if p.changeConverged.IsZero() {
					p.changeConverged = now
				}
				p.mu.Unlock()
			}
		}
	}
	return nil
}

// onListeners collects the route configurations the listeners refer to.
func (p *proxy) onListeners(res []*anypb.Any) (bool, error) {
	names := map[string]bool{}
	for _, a := range res {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			return false, fmt.Errorf("listener: %w", err)
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(hcm) == nil && hcm.GetRds() != nil {
					names[hcm.GetRds().GetRouteConfigName()] = true
				}
			}
		}
	}
	changed := len(names) != len(p.routes)
	for n := range names {
		if !p.routes[n] {
			changed = true
		}
	}
	p.routes = names
	p.gotLDS = true
	return changed, nil
}

func (p *proxy) onRoutes(res []*anypb.Any) error {
	for _, a := range res {
		name, err := stringField(a.GetValue(), 1) // RouteConfiguration.name
		if err != nil {
			return fmt.Errorf("route configuration: %w", err)
		}
		p.haveRDS[name] = true
	}
	return nil
}

func hasAddress(cla *endpointv3.ClusterLoadAssignment, hostport string) bool {
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			if fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()) == hostport {
				return true
			}
		}
	}
	return false
}

// stringField reads string field num of an encoded message without
// decoding the rest: the simulated proxies must cost the machine far less
// than the server under test.
func stringField(b []byte, num protowire.Number) (string, error) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return "", protowire.ParseError(l)
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return "", protowire.ParseError(l)
			}
			return string(v), nil
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return "", protowire.ParseError(l)
		}
		b = b[l:]
	}
	return "", fmt.Errorf("field %d missing", num)
}

// sotw runs one state-of-the-world ADS stream until ctx ends.
func (p *proxy) sotw(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient) error {
	stream, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	send := func(typ, version, nonce string, names []string) error {
		return stream.Send(&discoveryv3.DiscoveryRequest{Node: p.node(), TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names})
	}
	if err := send(resource.ClusterType, "", "", nil); err != nil {
		return err
	}
	if err := send(resource.ListenerType, "", "", nil); err != nil {
		return err
	}
	// The last version and nonce per type: every later request of a type
	// carries them, or the server takes it for a stale one and ignores it.
	versions, nonces := map[string]string{}, map[string]string{}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		now := time.Now()
		typ := resp.GetTypeUrl()
		versions[typ], nonces[typ] = resp.GetVersionInfo(), resp.GetNonce()
		var more func() error
		switch typ {
		case resource.ClusterType:
			changed, err := p.onClusters(resp.GetResources(), true)
			if err != nil {
				return err
			}
			if changed {
				more = func() error {
					return send(resource.EndpointType, versions[resource.EndpointType], nonces[resource.EndpointType], keys(p.clusters))
				}
			}
		case resource.EndpointType:
			if err := p.onEndpoints(resp.GetResources(), now); err != nil {
				return err
			}
		case resource.ListenerType:
			changed, err := p.onListeners(resp.GetResources())
			if err != nil {
				return err
			}
			if changed {
				more = func() error {
					return send(resource.RouteType, versions[resource.RouteType], nonces[resource.RouteType], keys(p.routes))
				}
			}
		case resource.RouteType:
			if err := p.onRoutes(resp.GetResources()); err != nil {
				return err
			}
		}
		// ACK, naming the same resources as before for non-wildcard types.
		var names []string
		switch typ {
		case resource.EndpointType:
			names = keys(p.clusters)
		case resource.RouteType:
			names = keys(p.routes)
		}
		if err := send(typ, resp.GetVersionInfo(), resp.GetNonce(), names); err != nil {
			return err
		}
		if more != nil {
			if err := more(); err != nil {
				return err
			}
		}
		p.checkSynced(now)
	}
}

// delta runs one incremental ADS stream until ctx ends.
func (p *proxy) delta(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient) error {
	stream, err := client.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	send := func(typ, nonce string, subscribe []string) error {
		return stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: p.node(), TypeUrl: typ, ResponseNonce: nonce, ResourceNamesSubscribe: subscribe})
	}
	if err := send(resource.ClusterType, "", nil); err != nil {
		return err
	}
	if err := send(resource.ListenerType, "", nil); err != nil {
		return err
	}
	subscribed := map[string]map[string]bool{resource.EndpointType: {}, resource.RouteType: {}}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		now := time.Now()
		typ := resp.GetTypeUrl()
		res := make([]*anypb.Any, 0, len(resp.GetResources()))
		for _, r := range resp.GetResources() {
			res = append(res, r.GetResource())
		}
		var subscribe []string
		switch typ {
		case resource.ClusterType:
			if _, err := p.onClusters(res, false); err != nil {
				return err
			}
			for _, r := range resp.GetRemovedResources() {
				delete(p.clusters, r)
			}
			for c := range p.clusters {
				if !subscribed[resource.EndpointType][c] {
					subscribed[resource.EndpointType][c] = true
					subscribe = append(subscribe, c)
				}
			}
		case resource.EndpointType:
			if err := p.onEndpoints(res, now); err != nil {
				return err
			}
		case resource.ListenerType:
			if _, err := p.onListeners(res); err != nil {
				return err
			}
			for r := range p.routes {
				if !subscribed[resource.RouteType][r] {
					subscribed[resource.RouteType][r] = true
					subscribe = append(subscribe, r)
				}
			}
		case resource.RouteType:
			if err := p.onRoutes(res); err != nil {
				return err
			}
		}
		if err := send(typ, resp.GetNonce(), nil); err != nil {
			return err
		}
		if len(subscribe) > 0 {
			next := resource.EndpointType
			if typ == resource.ListenerType {
				next = resource.RouteType
			}
			if err := send(next, "", subscribe); err != nil {
				return err
			}
		}
		p.checkSynced(now)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
