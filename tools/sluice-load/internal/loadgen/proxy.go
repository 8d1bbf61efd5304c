// Package loadgen simulates many Envoy-like xDS clients against an ADS
// server and measures how fast they get their config: the initial sync and
// the convergence after a change. It is the engine of sluice-load, the load
// generator in tools/sluice-load.
package loadgen

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
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
	node *corev3.Node
	// What the proxy holds and still waits for before it counts as
	// synced: a response for CDS and LDS, and every resource they name.
	gotCDS, gotLDS bool
	synced         bool                // syncedAt is set
	clusters       map[string]string   // cluster → its EDS name, "" when not EDS
	eds            map[string]bool     // EDS names to receive
	haveEDS        map[string]bool     // EDS names received
	listeners      map[string][]string // listener → the RDS names it uses
	routes         map[string]bool     // RDS names to receive
	haveRDS        map[string]bool     // RDS names received
	watch          Watch
	// edsNames and rdsNames are eds and routes sorted, as every SotW
	// request of the type repeats them: worked out when the set changes,
	// as Envoy keeps its subscriptions, not on every ACK (on a shared
	// machine the simulator's own work would otherwise be counted as the
	// server's latency).
	edsNames, rdsNames []string

	mu              sync.Mutex // guards the times below, which the runner reads
	syncedAt        time.Time
	changeConverged time.Time
	// sawWatched is set when the watched cluster's load assignment
	// arrived at all: for a proxy outside the change's scope, a sign the
	// server does not scope.
	sawWatched bool
}

func newProxy(node *corev3.Node, watch Watch) *proxy {
	return &proxy{
		node: node, watch: watch,
		clusters: map[string]string{}, eds: map[string]bool{}, haveEDS: map[string]bool{},
		listeners: map[string][]string{}, routes: map[string]bool{}, haveRDS: map[string]bool{},
	}
}

func (p *proxy) checkSynced(now time.Time) {
	if p.synced || !p.gotCDS || !p.gotLDS {
		return
	}
	for c := range p.eds {
		if !p.haveEDS[c] {
			return
		}
	}
	for r := range p.routes {
		if !p.haveRDS[r] {
			return
		}
	}
	p.synced = true
	p.mu.Lock()
	p.syncedAt = now
	p.mu.Unlock()
}

// onClusters records the clusters received (all of them when replace,
// as in SotW; else an update, with removed the names that went away) and
// reports whether the EDS names to request changed.
func (p *proxy) onClusters(res []*anypb.Any, removed []string, replace bool) (bool, error) {
	if replace {
		clear(p.clusters)
	}
	for _, r := range removed {
		delete(p.clusters, r)
	}
	for _, a := range res {
		name, eds, err := clusterEDS(a.GetValue())
		if err != nil {
			return false, fmt.Errorf("cluster: %w", err)
		}
		p.clusters[name] = eds
	}
	p.gotCDS = true
	want := map[string]bool{}
	for _, eds := range p.clusters {
		if eds != "" {
			want[eds] = true
		}
	}
	changed := !sameSet(want, p.eds)
	if changed {
		p.eds, p.edsNames = want, keys(want)
	}
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
			gone := !hasAddress(cla, p.watch.Address)
			p.mu.Lock()
			p.sawWatched = true
			if gone && p.changeConverged.IsZero() {
				p.changeConverged = now
			}
			p.mu.Unlock()
		}
	}
	return nil
}

// onListeners records the route configurations the listeners refer to
// (replace and removed as for onClusters) and reports whether the RDS
// names to request changed.
func (p *proxy) onListeners(res []*anypb.Any, removed []string, replace bool) (bool, error) {
	if replace {
		clear(p.listeners)
	}
	for _, r := range removed {
		delete(p.listeners, r)
	}
	for _, a := range res {
		name, routes, err := listenerRoutes(a.GetValue())
		if err != nil {
			return false, fmt.Errorf("listener: %w", err)
		}
		p.listeners[name] = routes
	}
	p.gotLDS = true
	want := map[string]bool{}
	for _, routes := range p.listeners {
		for _, r := range routes {
			want[r] = true
		}
	}
	changed := !sameSet(want, p.routes)
	if changed {
		p.routes, p.rdsNames = want, keys(want)
	}
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

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
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

// sotw runs one state-of-the-world ADS stream until ctx ends. Like Envoy,
// it subscribes to CDS and LDS with wildcards, to EDS by the names of the
// EDS clusters it holds and to RDS by the names its listeners' connection
// managers use, and ACKs every response.
func (p *proxy) sotw(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient) error {
	stream, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	send := func(typ, version, nonce string, names []string) error {
		return stream.Send(&discoveryv3.DiscoveryRequest{Node: p.node, TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names})
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
		var next string // the type to request anew after the ACK
		switch typ {
		case resource.ClusterType:
			changed, err := p.onClusters(resp.GetResources(), nil, true)
			if err != nil {
				return err
			}
			if changed {
				next = resource.EndpointType
			}
		case resource.EndpointType:
			if err := p.onEndpoints(resp.GetResources(), now); err != nil {
				return err
			}
		case resource.ListenerType:
			changed, err := p.onListeners(resp.GetResources(), nil, true)
			if err != nil {
				return err
			}
			if changed {
				next = resource.RouteType
			}
		case resource.RouteType:
			if err := p.onRoutes(resp.GetResources()); err != nil {
				return err
			}
		}
		// ACK, naming the same resources as before for non-wildcard types.
		if err := send(typ, resp.GetVersionInfo(), resp.GetNonce(), p.names(typ)); err != nil {
			return err
		}
		if next != "" {
			if err := send(next, versions[next], nonces[next], p.names(next)); err != nil {
				return err
			}
		}
		p.checkSynced(now)
	}
}

// names are the resource names a SotW request of typ names: none for the
// wildcard types.
func (p *proxy) names(typ string) []string {
	switch typ {
	case resource.EndpointType:
		return p.edsNames
	case resource.RouteType:
		return p.rdsNames
	}
	return nil
}

// delta runs one incremental ADS stream until ctx ends, subscribing as
// sotw does; when EDS clusters or RDS names go away it unsubscribes them.
func (p *proxy) delta(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient) error {
	stream, err := client.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	send := func(typ, nonce string, subscribe, unsubscribe []string) error {
		return stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: p.node, TypeUrl: typ, ResponseNonce: nonce,
			ResourceNamesSubscribe: subscribe, ResourceNamesUnsubscribe: unsubscribe})
	}
	if err := send(resource.ClusterType, "", nil, nil); err != nil {
		return err
	}
	if err := send(resource.ListenerType, "", nil, nil); err != nil {
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
		var next string
		var want map[string]bool
		switch typ {
		case resource.ClusterType:
			if _, err := p.onClusters(res, resp.GetRemovedResources(), false); err != nil {
				return err
			}
			next, want = resource.EndpointType, p.eds
		case resource.EndpointType:
			if err := p.onEndpoints(res, now); err != nil {
				return err
			}
		case resource.ListenerType:
			if _, err := p.onListeners(res, resp.GetRemovedResources(), false); err != nil {
				return err
			}
			next, want = resource.RouteType, p.routes
		case resource.RouteType:
			if err := p.onRoutes(res); err != nil {
				return err
			}
		}
		if err := send(typ, resp.GetNonce(), nil, nil); err != nil {
			return err
		}
		if next != "" {
			var sub, unsub []string
			have := subscribed[next]
			for n := range want {
				if !have[n] {
					have[n] = true
					sub = append(sub, n)
				}
			}
			for n := range have {
				if !want[n] {
					delete(have, n)
					unsub = append(unsub, n)
				}
			}
			if len(sub) > 0 || len(unsub) > 0 {
				sort.Strings(sub)
				sort.Strings(unsub)
				if err := send(next, "", sub, unsub); err != nil {
					return err
				}
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
