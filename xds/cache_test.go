package xds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-mesh/sluice/translator"
)

func TestNodeHash(t *testing.T) {
	for _, tc := range []struct {
		name string
		node *corev3.Node
		want string
	}{
		{"envoy sidecar", &corev3.Node{Id: "n1", Cluster: "web", UserAgentName: "envoy"}, "envoy/sidecar/web"},
		{"gRPC client", &corev3.Node{Id: "g1", Cluster: "web", UserAgentName: "gRPC Go"}, "grpc"},
		{"invalid metadata", &corev3.Node{Id: "bad", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"outbound_port": structpb.NewStringValue("abc"),
		}}}, "invalid"},
	} {
		if got := (NodeHash{}).ID(tc.node); got != tc.want {
			t.Errorf("%s: NodeHash.ID = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// cacheClient drives the cache directly the way go-control-plane's SotW
// server does: each request creates a watch; a response updates what the
// client holds. Responses happen inside CreateWatch and SetSnapshot, so
// nothing waits.
type cacheClient struct {
	t    *testing.T
	c    *Cache
	node *corev3.Node
	typ  string
	sub  stream.Subscription
	out  chan cache.Response
	last *discoveryv3.DiscoveryResponse
}

func newCacheClient(t *testing.T, c *Cache, typ string, names ...string) *cacheClient {
	return &cacheClient{t: t, c: c, node: &corev3.Node{Id: "n1", Cluster: "web"}, typ: typ,
		sub: stream.NewSotwSubscription(names, true), out: make(chan cache.Response, 1)}
}

// request sends a request (an ACK of the last response, or a NACK) and
// returns the response it got at once, or nil.
func (cc *cacheClient) request(nack bool) *discoveryv3.DiscoveryResponse {
	cc.t.Helper()
	req := &cache.Request{Node: cc.node, TypeUrl: cc.typ, ResourceNames: keysOf(cc.sub.SubscribedResources())}
	if cc.last != nil {
		req.VersionInfo = cc.last.GetVersionInfo()
	}
	if nack {
		req.ErrorDetail = &status.Status{Code: 3, Message: "rejected"}
	}
	if _, err := cc.c.CreateWatch(req, cc.sub, cc.out); err != nil {
		cc.t.Fatal(err)
	}
	return cc.poll()
}

// poll returns the response the open watch got, or nil.
func (cc *cacheClient) poll() *discoveryv3.DiscoveryResponse {
	cc.t.Helper()
	select {
	case r := <-cc.out:
		d, err := r.GetDiscoveryResponse()
		if err != nil {
			cc.t.Fatal(err)
		}
		cc.sub.SetReturnedResources(r.GetReturnedResources())
		cc.last = d
		return d
	default:
		return nil
	}
}

// deltaClient drives the cache the way go-control-plane's delta server
// does: each request creates a watch; a response updates what it holds.
type deltaClient struct {
	t    *testing.T
	c    *Cache
	node *corev3.Node
	typ  string
	sub  stream.Subscription
	out  chan cache.DeltaResponse
}

func newDeltaClient(t *testing.T, c *Cache, node *corev3.Node, names ...string) *deltaClient {
	return &deltaClient{t: t, c: c, node: node, typ: resource.EndpointType, sub: stream.NewDeltaSubscription(names, nil, nil, false), out: make(chan cache.DeltaResponse, 1)}
}

// request sends req (nil: an ACK) and returns the response it got at once,
// or nil.
func (dc *deltaClient) request(req *cache.DeltaRequest) *discoveryv3.DeltaDiscoveryResponse {
	dc.t.Helper()
	if req == nil {
		req = &cache.DeltaRequest{}
	}
	req.Node, req.TypeUrl = dc.node, dc.typ
	if _, err := dc.c.CreateDeltaWatch(req, dc.sub, dc.out); err != nil {
		dc.t.Fatal(err)
	}
	return dc.poll()
}

// poll returns the response the open watch got, or nil.
func (dc *deltaClient) poll() *discoveryv3.DeltaDiscoveryResponse {
	select {
	case r := <-dc.out:
		dc.sub.SetReturnedResources(r.GetNextVersionMap())
		d, _ := r.GetDeltaDiscoveryResponse()
		return d
	default:
		return nil
	}
}

func keysOf(m map[string]struct{}) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func edsSnapshot(t *testing.T, ports map[string]uint32) *cache.Snapshot {
	t.Helper()
	var rs []types.Resource
	for name, port := range ports {
		rs = append(rs, &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
			}}}},
		}}})
	}
	snap, err := cache.NewSnapshot(fmt.Sprint(ports), map[resource.Type][]types.Resource{resource.EndpointType: rs})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func names(r *discoveryv3.DiscoveryResponse) []string {
	var out []string
	for _, a := range r.GetResources() {
		cla := &endpointv3.ClusterLoadAssignment{}
		_ = a.UnmarshalTo(cla)
		out = append(out, cla.GetClusterName())
	}
	return out
}

// TestCacheSotwSendsOnlyWhatChanged: the first request gets everything; an
// ACK gets nothing; a change to one load assignment sends only that one; a
// NACK is never answered with what was rejected; an identical snapshot
// sends nothing.
func TestCacheSotwSendsOnlyWhatChanged(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := NodeHash{}.ID(&corev3.Node{Cluster: "web"})
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1, "c": 1})); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.EndpointType, "a", "b", "c")
	if r := cc.request(false); r == nil || len(r.GetResources()) != 3 {
		t.Fatalf("first request: %v", r)
	}
	if r := cc.request(false); r != nil {
		t.Fatalf("ACK answered: %v", names(r))
	}
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 2, "c": 1})); err != nil {
		t.Fatal(err)
	}
	r := cc.poll()
	if got := names(r); len(got) != 1 || got[0] != "b" {
		t.Fatalf("after changing b: sent %v, want only b", got)
	}
	// The client rejects that b: nothing is re-sent...
	if r := cc.request(true); r != nil {
		t.Fatalf("NACK answered with %v", names(r))
	}
	// ...not even when an identical snapshot is published again...
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 2, "c": 1})); err != nil {
		t.Fatal(err)
	}
	if r := cc.poll(); r != nil {
		t.Fatalf("identical snapshot pushed %v", names(r))
	}
	// ...until b changes again.
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 3, "c": 1})); err != nil {
		t.Fatal(err)
	}
	if got := names(cc.poll()); len(got) != 1 || got[0] != "b" {
		t.Fatalf("after changing b again: sent %v", got)
	}
}

// TestCacheSharesState: every response shares the marshalled resources, and
// no two clients share a version map (the server edits them).
func TestCacheSharesState(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := NodeHash{}.ID(&corev3.Node{Cluster: "web"})
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	c1 := newCacheClient(t, c, resource.EndpointType, "a", "b")
	c2 := newCacheClient(t, c, resource.EndpointType, "a", "b")
	r1, r2 := c1.request(false), c2.request(false)
	if r1.GetResources()[0] != r2.GetResources()[0] {
		t.Error("each response marshalled its own copy of a resource")
	}
	// New clients taking everything share one list, so its encoding is
	// made once (see the codec).
	if &r1.GetResources()[0] != &r2.GetResources()[0] {
		t.Error("two new clients taking every resource got lists of their own")
	}
	// The server deletes from a subscriber's map the names it stops
	// naming, which must not touch what another client holds.
	if reflect.ValueOf(c1.sub.ReturnedResources()).UnsafePointer() == reflect.ValueOf(c2.sub.ReturnedResources()).UnsafePointer() {
		t.Fatal("two explicit subscribers share one version map")
	}
	before := maps.Clone(c2.sub.ReturnedResources())
	c1.sub.SetResourceSubscription([]string{"a"})
	if !maps.Equal(before, c2.sub.ReturnedResources()) {
		t.Fatalf("one client's unsubscription changed another's versions: %v", c2.sub.ReturnedResources())
	}
	// A client subscribed to a subset gets its own, small map.
	c3 := newCacheClient(t, c, resource.EndpointType, "a")
	if r := c3.request(false); len(r.GetResources()) != 1 || len(c3.sub.ReturnedResources()) != 1 {
		t.Errorf("subset client: sent %v, holds %v", names(r), c3.sub.ReturnedResources())
	}
}

// TestCacheDelta: delta clients get changed resources and removals.
func TestCacheDelta(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Cluster: "web"}
	key := NodeHash{}.ID(node)
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	sub := stream.NewDeltaSubscription([]string{"a", "b"}, nil, nil, false)
	out := make(chan cache.DeltaResponse, 1)
	next := func() *discoveryv3.DeltaDiscoveryResponse {
		select {
		case r := <-out:
			sub.SetReturnedResources(r.GetNextVersionMap())
			d, _ := r.GetDeltaDiscoveryResponse()
			return d
		default:
			return nil
		}
	}
	watch := func() {
		if _, err := c.CreateDeltaWatch(&cache.DeltaRequest{Node: node, TypeUrl: resource.EndpointType}, sub, out); err != nil {
			t.Fatal(err)
		}
	}
	watch()
	if r := next(); len(r.GetResources()) != 2 {
		t.Fatalf("initial: %v", r)
	}
	watch()
	if r := next(); r != nil {
		t.Fatalf("ACK answered: %v", r)
	}
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 2})); err != nil {
		t.Fatal(err)
	}
	r := next()
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "a" || len(r.GetRemovedResources()) != 1 || r.GetRemovedResources()[0] != "b" {
		t.Fatalf("after change: %v", r)
	}
}

// The regression tests below come from an independent review: each failed
// before the generation mark counted the names the client holds.

// TestCacheResubscribeEDS: a client subscribed to every name drops one and
// names it again: it gets it again.
func TestCacheResubscribeEDS(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := NodeHash{}.ID(&corev3.Node{Cluster: "web"})
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.EndpointType, "a", "b")
	if r := cc.request(false); len(r.GetResources()) != 2 {
		t.Fatal(r)
	}
	cc.request(false) // ACK: memoises the generation's diff
	cc.sub.SetResourceSubscription([]string{"a"})
	if r := cc.request(false); r != nil {
		t.Fatalf("dropping b answered %v", names(r))
	}
	cc.sub.SetResourceSubscription([]string{"a", "b"})
	if got := names(cc.request(false)); len(got) != 1 || got[0] != "b" {
		t.Fatalf("re-subscribing to b sent %v; holds %v", got, cc.sub.ReturnedResources())
	}
}

// TestCacheResubscribeFullState: the same for a full-state type, which
// answers with every subscribed resource.
func TestCacheResubscribeFullState(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := NodeHash{}.ID(&corev3.Node{Cluster: "web"})
	snap := &cache.Snapshot{}
	snap.Resources[types.Cluster] = edsSnapshot(t, map[string]uint32{"a": 1, "b": 1}).Resources[types.Endpoint]
	if err := c.SetSnapshot(ctx, key, snap); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.ClusterType, "a", "b")
	if r := cc.request(false); len(r.GetResources()) != 2 {
		t.Fatal(r)
	}
	cc.request(false)
	cc.sub.SetResourceSubscription([]string{"a"})
	cc.request(false)
	cc.sub.SetResourceSubscription([]string{"a", "b"})
	if r := cc.request(false); len(r.GetResources()) != 2 {
		t.Fatalf("re-subscribing to b (full state) sent %v; holds %v", names(r), cc.sub.ReturnedResources())
	}
}

// TestCacheReconnectToEmptyType: a client reconnecting with the version it
// held before is told the current set even when it is empty.
func TestCacheReconnectToEmptyType(t *testing.T) {
	c := NewCache(nil)
	key := NodeHash{}.ID(&corev3.Node{Cluster: "web"})
	snap := &cache.Snapshot{}
	snap.Resources[types.Cluster] = cache.NewResources("v2", nil)
	if err := c.SetSnapshot(context.Background(), key, snap); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.ClusterType)
	if _, err := c.CreateWatch(&cache.Request{Node: cc.node, TypeUrl: cc.typ, VersionInfo: "v1-before-restart"}, cc.sub, cc.out); err != nil {
		t.Fatal(err)
	}
	if r := cc.poll(); r == nil || len(r.GetResources()) != 0 || r.GetVersionInfo() != "v2" {
		t.Fatalf("reconnecting client holding v1: %v, want an empty v2", r)
	}
	if r := cc.request(false); r != nil {
		t.Fatalf("the ACK of the empty set was answered: %v", r)
	}
}

// TestCacheDeltaResubscribe: a delta client unsubscribes and subscribes
// again: it gets the resource again.
func TestCacheDeltaResubscribe(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Cluster: "web"}
	if err := c.SetSnapshot(ctx, NodeHash{}.ID(node), edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	dc := newDeltaClient(t, c, node, "a", "b")
	if r := dc.request(nil); len(r.GetResources()) != 2 {
		t.Fatal(r)
	}
	// As go-control-plane's delta server does: apply the request's
	// changes to the subscription, then create the watch with it.
	dc.sub.UpdateResourceSubscriptions(nil, []string{"b"})
	dc.request(&cache.DeltaRequest{ResourceNamesUnsubscribe: []string{"b"}})
	dc.sub.UpdateResourceSubscriptions([]string{"b"}, nil)
	if r := dc.request(&cache.DeltaRequest{ResourceNamesSubscribe: []string{"b"}}); len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "b" {
		t.Fatalf("re-subscribing to b: %v", r)
	}
}

// TestCacheNamesChangeBetweenGenerations: a client that held a generation
// with other names is not taken to hold the current one's.
func TestCacheNamesChangeBetweenGenerations(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := NodeHash{}.ID(&corev3.Node{Cluster: "web"})
	publish := func(ports map[string]uint32) {
		if err := c.SetSnapshot(ctx, key, edsSnapshot(t, ports)); err != nil {
			t.Fatal(err)
		}
	}
	publish(map[string]uint32{"a": 1, "b": 1, "c": 1})
	cc := newCacheClient(t, c, resource.EndpointType, "a", "b", "c")
	cc.request(false)
	cc.request(false)
	publish(map[string]uint32{"a": 1, "b": 1, "d": 1})
	cc.poll()
	publish(map[string]uint32{"a": 2, "b": 1, "d": 1})
	if r := cc.poll(); r != nil {
		cc.request(false)
	}
	cc.sub.SetResourceSubscription([]string{"a", "b", "c", "d"})
	r := cc.request(false)
	if got := names(r); !slices.Contains(got, "d") {
		t.Fatalf("subscribing to d sent %v; holds %v", got, cc.sub.ReturnedResources())
	}
}

// groupRecorder records what a Tracker tells the loop.
type groupRecorder struct {
	mu                sync.Mutex
	ensured, released []string
	// refuse, when set, is the error EnsureGroup refuses groups with.
	refuse error
}

func (r *groupRecorder) EnsureGroup(p translator.Proxy) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse != nil {
		return r.refuse
	}
	r.ensured = append(r.ensured, p.Key())
	return nil
}

func (r *groupRecorder) ReleaseGroup(p translator.Proxy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released = append(r.released, p.Key())
}

// TestTrackerReleasesGroupWithLastStream: a group is released when its last
// identified stream closes, SotW and delta streams counted together.
func TestTrackerReleasesGroupWithLastStream(t *testing.T) {
	rec := &groupRecorder{}
	tr := NewTracker(rec, slog.New(slog.DiscardHandler), nil, nil)
	node := &corev3.Node{Id: "n", Cluster: "web", UserAgentName: "envoy"}
	ctx := context.Background()
	_ = tr.OnStreamOpen(ctx, 1, "")
	_ = tr.OnDeltaStreamOpen(ctx, 1, "")
	if err := tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if err := tr.OnStreamDeltaRequest(1, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	tr.OnStreamClosed(1, node)
	if len(rec.released) != 0 {
		t.Fatalf("released with a stream still open: %v", rec.released)
	}
	tr.OnDeltaStreamClosed(1, node)
	if len(rec.released) != 1 || rec.released[0] != "envoy/sidecar/web" {
		t.Fatalf("released %v after the last stream closed", rec.released)
	}
}

// TestCacheClearSnapshot: a cleared group is gone; one with an open watch
// (its proxy came back) is kept.
func TestCacheClearSnapshot(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := NodeHash{}.ID(&corev3.Node{Cluster: "web"})
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1})); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.EndpointType, "a")
	cc.request(false)
	cc.request(false) // an open watch
	c.ClearSnapshot(key)
	if _, err := c.GetSnapshot(key); err != nil {
		t.Fatal("a group with an open watch was cleared")
	}
	c2 := NewCache(nil)
	if err := c2.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1})); err != nil {
		t.Fatal(err)
	}
	c2.ClearSnapshot(key)
	if _, err := c2.GetSnapshot(key); err == nil {
		t.Fatal("an unused group was not cleared")
	}
}

// TestCacheDeltaWildcardUnsubscribe: a wildcard client that explicitly
// unsubscribes from a resource it named must get that resource again (the
// protocol's rule; go-control-plane blanks its version in the held map
// rather than deleting it, so the generation mark still counts right).
func TestCacheDeltaWildcardUnsubscribe(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Cluster: "web"}
	if err := c.SetSnapshot(ctx, NodeHash{}.ID(node), edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	dc := newDeltaClient(t, c, node, "*", "b")
	if r := dc.request(&cache.DeltaRequest{ResourceNamesSubscribe: []string{"*", "b"}}); len(r.GetResources()) != 2 {
		t.Fatalf("initial: %v", r)
	}
	if r := dc.request(nil); r != nil {
		t.Fatalf("ACK answered: %v", r)
	}
	dc.sub.UpdateResourceSubscriptions(nil, []string{"b"})
	r := dc.request(&cache.DeltaRequest{ResourceNamesUnsubscribe: []string{"b"}})
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "b" {
		t.Fatalf("after explicitly unsubscribing b, a wildcard client got %v, want b again", r)
	}
}

// TestCacheDeltaManyClientsShareDiff: clients that all hold one generation
// get, after a change, only what changed and what went away, in one list
// shared by all of them; their ACKs are not answered.
func TestCacheDeltaManyClientsShareDiff(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Cluster: "web"}
	key := NodeHash{}.ID(node)
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1, "c": 1})); err != nil {
		t.Fatal(err)
	}
	var cls []*deltaClient
	for range 5 {
		dc := newDeltaClient(t, c, node, "a", "b", "c")
		if r := dc.request(nil); len(r.GetResources()) != 3 {
			t.Fatalf("initial: %v", r)
		}
		if r := dc.request(nil); r != nil {
			t.Fatalf("ACK answered: %v", r)
		}
		cls = append(cls, dc)
	}
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 2})); err != nil {
		t.Fatal(err)
	}
	var first *discoveryv3.DeltaDiscoveryResponse
	for i, dc := range cls {
		r := dc.poll()
		if got := fmt.Sprintf("%d %s %v", len(r.GetResources()), r.GetResources()[0].GetName(), r.GetRemovedResources()); got != "1 b [c]" {
			t.Fatalf("client %d got %s, want b updated and c removed", i, got)
		}
		if first == nil {
			first = r
		} else if &r.GetResources()[0] != &first.GetResources()[0] {
			t.Errorf("client %d got its own resource list, not the shared one", i)
		}
		if r := dc.request(nil); r != nil {
			t.Fatalf("client %d: ACK answered: %v", i, r)
		}
	}
}

// fiftyServices publishes 50 load assignments (svc-00...) to group key; the
// test edits ports and calls publish to publish them again.
func fiftyServices(t *testing.T, c *Cache, key string) (ports map[string]uint32, all []string, publish func()) {
	ports = map[string]uint32{}
	for i := range 50 {
		n := fmt.Sprintf("svc-%02d", i)
		ports[n] = 1
		all = append(all, n)
	}
	publish = func() {
		t.Helper()
		if err := c.SetSnapshot(context.Background(), key, edsSnapshot(t, ports)); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	return ports, all, publish
}

// TestCacheWholeGenerationMaps: a client that takes everything holds a
// version map of at most five entries (six over delta, which also names the
// generation held before, for NACKs) whatever the number of resources
// (the memory a proxy costs), over SotW and delta, before and after a change. One that
// falls so far behind that its generation left the lineage gets everything
// again over SotW, and over delta is asked to reconnect (it could not be
// told what went away).
func TestCacheWholeGenerationMaps(t *testing.T) {
	c := NewCache(nil)
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	ports, all, publish := fiftyServices(t, c, NodeHash{}.ID(node))
	sotw := newCacheClient(t, c, resource.EndpointType, all...)
	delta := newDeltaClient(t, c, node, all...)
	if r := sotw.request(false); len(r.GetResources()) != 50 {
		t.Fatalf("SotW initial: %d resources", len(r.GetResources()))
	}
	if r := delta.request(nil); len(r.GetResources()) != 50 {
		t.Fatalf("delta initial: %d resources", len(r.GetResources()))
	}
	if n, d := len(sotw.sub.ReturnedResources()), len(delta.sub.ReturnedResources()); n > 5 || d > 6 {
		t.Fatalf("a client holding all 50 resources has a version map of %d entries (SotW), %d (delta)", n, d)
	}
	if sotw.request(false) != nil || delta.request(nil) != nil {
		t.Fatal("an ACK was answered")
	}
	ports["svc-07"] = 2
	publish()
	if r := sotw.poll(); fmt.Sprint(names(r)) != "[svc-07]" {
		t.Fatalf("SotW after one change: %v", names(r))
	}
	if r := delta.poll(); len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "svc-07" {
		t.Fatalf("delta after one change: %v", r)
	}
	if len(sotw.sub.ReturnedResources()) > 5 || len(delta.sub.ReturnedResources()) > 6 {
		t.Fatalf("version maps after a change: %v, %v", sotw.sub.ReturnedResources(), delta.sub.ReturnedResources())
	}

	// The clients ACK only after the lineage moved on past what they hold:
	// more than lineageMin changes, the oldest more than lineageAge ago.
	clock := time.Now()
	c.now = func() time.Time { return clock }
	for i := range lineageMin + 1 {
		clock = clock.Add(lineageAge)
		ports["svc-07"] = uint32(10 + i)
		publish()
	}
	if r := sotw.request(false); len(r.GetResources()) != 50 {
		t.Fatalf("SotW client whose generation left the lineage got %d resources, want all 50", len(r.GetResources()))
	}
	if sotw.request(false) != nil {
		t.Fatal("an ACK was answered")
	}
	if _, err := c.CreateDeltaWatch(&cache.DeltaRequest{Node: node, TypeUrl: resource.EndpointType}, delta.sub, delta.out); !errors.Is(err, errLostTrack) {
		t.Fatalf("delta client whose generation left the lineage: %v, want errLostTrack", err)
	}
}

// The regression tests below come from a second independent review of the
// whole-generation maps; each failed before the fix it names.

// twoTypeSnapshot is a snapshot of one EDS cluster per name and its load
// assignment on port, with per-type versions as snapshot.Build makes them.
func twoTypeSnapshot(t *testing.T, clusters []string, port uint32) *cache.Snapshot {
	t.Helper()
	ports := map[string]uint32{}
	var cds []types.Resource
	for _, n := range clusters {
		ports[n] = port
		cds = append(cds, &clusterv3.Cluster{Name: n, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
	}
	snap := edsSnapshot(t, ports)
	snap.Resources[types.Cluster] = cache.NewResources(fmt.Sprint(clusters), cds)
	return snap
}

// wildcardDelta is a delta wildcard client (Envoy's CDS), driven as
// go-control-plane's delta server drives the cache: the request's changes
// are applied to the subscription before the watch is made.
func wildcardDelta(t *testing.T, c *Cache, node *corev3.Node, typ string) *deltaClient {
	dc := newDeltaClient(t, c, node)
	dc.sub = stream.NewDeltaSubscription(nil, nil, nil, true)
	dc.typ = typ
	return dc
}

// TestCacheUnchangedTypeKeepsItsGeneration: snapshots that change only
// endpoints leave the clusters' generation as it is. Before, every
// snapshot made a new generation of every type, so after eight of them a
// client holding the clusters was taken to hold nothing: SotW clients got
// every cluster again (and a NACKed set was re-sent), and a delta client
// was not told of a cluster that went away.
func TestCacheUnchangedTypeKeepsItsGeneration(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	key := NodeHash{}.ID(node)
	publish := func(clusters []string, port uint32) {
		t.Helper()
		if err := c.SetSnapshot(ctx, key, twoTypeSnapshot(t, clusters, port)); err != nil {
			t.Fatal(err)
		}
	}
	publish([]string{"a", "b"}, 1)
	sotw := newCacheClient(t, c, resource.ClusterType) // wildcard
	nacker := newCacheClient(t, c, resource.ClusterType)
	delta := wildcardDelta(t, c, node, resource.ClusterType)
	if r := sotw.request(false); len(r.GetResources()) != 2 {
		t.Fatalf("SotW initial: %v", names(r))
	}
	nacker.request(false)
	if r := delta.request(nil); len(r.GetResources()) != 2 {
		t.Fatalf("delta initial: %v", r)
	}
	if sotw.request(false) != nil || nacker.request(true) != nil || delta.request(nil) != nil {
		t.Fatal("an ACK or a NACK was answered")
	}
	// A slow client ACKs only after all the snapshots below.
	slow := wildcardDelta(t, c, node, resource.ClusterType)
	if r := slow.request(nil); len(r.GetResources()) != 2 {
		t.Fatalf("slow client initial: %v", r)
	}
	clock := time.Now()
	c.now = func() time.Time { return clock }
	for i := range 2 * lineageMin {
		clock = clock.Add(lineageAge)
		publish([]string{"a", "b"}, uint32(i+2))
		if r := sotw.poll(); r != nil {
			t.Fatalf("endpoint-only snapshot %d sent the unchanged clusters again", i+1)
		}
		if r := nacker.poll(); r != nil {
			t.Fatalf("endpoint-only snapshot %d re-sent the rejected clusters", i+1)
		}
		if r := delta.poll(); r != nil {
			t.Fatalf("endpoint-only snapshot %d answered the delta client: %v", i+1, r)
		}
	}
	if r := slow.request(nil); r != nil {
		t.Fatalf("the slow client's ACK was answered: %v", r)
	}
	publish([]string{"a"}, 100)
	if r := delta.poll(); fmt.Sprint(r.GetRemovedResources()) != "[b]" {
		t.Fatalf("cluster b went away: delta client got %d resources, removals %v", len(r.GetResources()), r.GetRemovedResources())
	}
}

// TestCacheMarkSurvivesDroppedNames: clients that drop the generation's
// first name, or unsubscribe from it, are still known to hold the rest.
// Before, the mark sat on that name only: dropping it cost a resend of
// every other resource, and a delta wildcard client that unsubscribed from
// it was not told of a resource that went away meanwhile.
func TestCacheMarkSurvivesDroppedNames(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	key := NodeHash{}.ID(node)
	all := []string{"a", "b", "c", "d"}
	publish := func(clusters []string) {
		t.Helper()
		if err := c.SetSnapshot(ctx, key, twoTypeSnapshot(t, clusters, 1)); err != nil {
			t.Fatal(err)
		}
	}
	publish(all)
	sotw := newCacheClient(t, c, resource.EndpointType, all...)
	delta := newDeltaClient(t, c, node, all...)
	wild := wildcardDelta(t, c, node, resource.ClusterType)
	sotw.request(false)
	delta.request(nil)
	wild.sub.UpdateResourceSubscriptions([]string{"*", "a"}, nil)
	wild.request(&cache.DeltaRequest{ResourceNamesSubscribe: []string{"*", "a"}})
	if sotw.request(false) != nil || delta.request(nil) != nil || wild.request(nil) != nil {
		t.Fatal("an ACK was answered")
	}

	// Cluster a goes away; SotW EDS is not told (the client drops names
	// itself), the others are.
	publish(all[1:])
	if r := sotw.poll(); r != nil {
		t.Fatalf("SotW EDS got %v", names(r))
	}
	if r := delta.poll(); fmt.Sprint(r.GetRemovedResources()) != "[a]" {
		t.Fatalf("delta EDS got removals %v", r.GetRemovedResources())
	}
	sotw.sub.SetResourceSubscription(all[1:])
	if r := sotw.request(false); r != nil {
		t.Fatalf("SotW client that stopped naming a was sent %v again", names(r))
	}

	// The wildcard client unsubscribes from a; meanwhile b went away. Both
	// are reported removed (a wildcard client that unsubscribes from a name
	// is told whether it still exists).
	if r := wild.poll(); fmt.Sprint(r.GetRemovedResources()) != "[a]" {
		t.Fatalf("wildcard client got removals %v", r.GetRemovedResources())
	}
	publish([]string{"c", "d"})
	wild.sub.UpdateResourceSubscriptions(nil, []string{"a"})
	if r := wild.request(&cache.DeltaRequest{ResourceNamesUnsubscribe: []string{"a"}}); fmt.Sprint(r.GetRemovedResources()) != "[a b]" {
		t.Fatalf("wildcard client that unsubscribed from a: removals %v, want [a b]", r.GetRemovedResources())
	}
	delta.sub.UpdateResourceSubscriptions(nil, []string{"b"})
	if r := delta.request(&cache.DeltaRequest{ResourceNamesUnsubscribe: []string{"b"}}); r != nil && len(r.GetResources()) > 0 {
		t.Fatalf("delta client that unsubscribed from b was sent %d resources", len(r.GetResources()))
	}
}

// The tests below come from a third review, of the fixes above.

// TestCacheUnchangedTypeRemembersNewValues: a type whose content did not
// change keeps its generation, and remembers the new values it was handed
// (after a policy reload every resource is a new value with old content),
// so that later snapshots do not marshal them all again.
func TestCacheUnchangedTypeRemembersNewValues(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := NodeHash{}.ID(&corev3.Node{Cluster: "web"})
	clusters := func() []types.Resource {
		var out []types.Resource
		for i := range 1000 {
			out = append(out, &clusterv3.Cluster{Name: fmt.Sprintf("svc-%04d", i), ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
		}
		return out
	}
	snap := func(cds []types.Resource, port uint32) *cache.Snapshot {
		s := edsSnapshot(t, map[string]uint32{"a": port})
		s.Resources[types.Cluster] = cache.NewResources("cds", cds)
		return s
	}
	v1, v2 := clusters(), clusters() // equal content, new values
	for i, cds := range [][]types.Resource{v1, v2} {
		if err := c.SetSnapshot(ctx, key, snap(cds, uint32(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	port := uint32(10)
	allocs := testing.AllocsPerRun(5, func() {
		port++
		if err := c.SetSnapshot(ctx, key, snap(v2, port)); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 500 {
		t.Fatalf("an endpoint-only snapshot with the same 1,000 cluster values: %.0f allocations (the clusters were marshalled again)", allocs)
	}
}

// TestCacheSotwDropsFirstAndLastNames: a SotW client that stops naming the
// generation's first and last names is still known to hold the rest.
func TestCacheSotwDropsFirstAndLastNames(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := NodeHash{}.ID(&corev3.Node{Cluster: "web"})
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1})); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.EndpointType, "a", "b", "c", "d", "e", "f")
	cc.request(false)
	if r := cc.request(false); r != nil {
		t.Fatal("ACK answered")
	}
	cc.sub.SetResourceSubscription([]string{"b", "c", "d", "e"})
	if r := cc.request(false); r != nil {
		t.Fatalf("dropping a and f re-sent %v, which the client holds unchanged", names(r))
	}
}

// TestCacheDeltaForeignInitialVersions: versions a client brings to a new
// delta stream are its own, even when they look like a generation mark;
// they are compared, not resolved (which would end every stream).
func TestCacheDeltaForeignInitialVersions(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Cluster: "web"}
	if err := c.SetSnapshot(ctx, NodeHash{}.ID(node), edsSnapshot(t, map[string]uint32{"a": 1})); err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{"a": "v@7", markKey: "@1"}
	sub := stream.NewDeltaSubscription([]string{"a"}, nil, maps.Clone(versions), false)
	out := make(chan cache.DeltaResponse, 1)
	req := &cache.DeltaRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"a"}, InitialResourceVersions: versions}
	if _, err := c.CreateDeltaWatch(req, sub, out); err != nil {
		t.Fatalf("a new stream with foreign versions ended: %v", err)
	}
	select {
	case r := <-out:
		d, _ := r.GetDeltaDiscoveryResponse()
		if len(d.GetResources()) != 1 || d.GetResources()[0].GetName() != "a" {
			t.Fatalf("got %v, want a (the client's version of it is not ours)", d)
		}
	default:
		t.Fatal("a client holding an unknown version of a was not sent a")
	}
}

// TestCacheSlowClientStaysIncremental: a SotW client that ACKs only after
// more than lineageMin further changes (within lineageAge) still gets only
// what changed, round after round.
func TestCacheSlowClientStaysIncremental(t *testing.T) {
	c := NewCache(nil)
	ports, all, publish := fiftyServices(t, c, NodeHash{}.ID(&corev3.Node{Cluster: "web"}))
	cc := newCacheClient(t, c, resource.EndpointType, all...)
	cc.request(false)
	for round := range 3 {
		cc.request(false)
		for i := range 2 * lineageMin {
			ports[fmt.Sprintf("svc-%02d", i)] = uint32(100*round + i + 2)
			publish()
			if i == 0 {
				cc.poll() // the first change's response; the ACK comes after the rest
			}
		}
		if r := cc.request(false); len(r.GetResources()) != 2*lineageMin-1 {
			t.Fatalf("round %d: %d of 50 resources sent, want the %d changed since the last response", round, len(r.GetResources()), 2*lineageMin-1)
		}
	}
}

// TestCacheGroupsShareGenerations: groups that publish the same content
// share one generation (built once, its responses shared by the clients
// of every such group); a group that publishes other content gets its
// own; a generation no group uses any more is forgotten.
func TestCacheGroupsShareGenerations(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	web, api := &corev3.Node{Cluster: "web"}, &corev3.Node{Cluster: "api"}
	kWeb, kAPI, kIdle := NodeHash{}.ID(web), NodeHash{}.ID(api), "idle"
	eds, _ := typeIndex(resource.EndpointType)
	publish := func(key string, ports map[string]uint32) {
		t.Helper()
		// A snapshot of new values each time, as each group's builder
		// would make: sharing must come from the content.
		if err := c.SetSnapshot(ctx, key, edsSnapshot(t, ports)); err != nil {
			t.Fatal(err)
		}
	}
	v1 := map[string]uint32{"a": 1, "b": 1}
	for _, k := range []string{kWeb, kAPI, kIdle} {
		publish(k, v1)
	}
	gen := c.groups[kWeb].types[eds]
	if c.groups[kAPI].types[eds] != gen || c.groups[kIdle].types[eds] != gen {
		t.Fatal("groups with the same content hold different generations")
	}
	if sg := c.sharedGens[sharedKey{eds, gen.version, 2}]; sg == nil || sg.groups != 3 {
		t.Fatalf("shared generation: %+v, want one used by 3 groups", sg)
	}
	dw, da := newDeltaClient(t, c, web, "a", "b"), newDeltaClient(t, c, api, "a", "b")
	for _, dc := range []*deltaClient{dw, da} {
		if r := dc.request(nil); len(r.GetResources()) != 2 {
			t.Fatalf("initial: %v", r)
		}
		if r := dc.request(nil); r != nil {
			t.Fatalf("ACK answered: %v", r)
		}
	}
	v2 := map[string]uint32{"a": 1, "b": 2}
	publish(kWeb, v2)
	publish(kAPI, v2)
	rw, ra := dw.poll(), da.poll()
	if len(rw.GetResources()) != 1 || len(ra.GetResources()) != 1 {
		t.Fatalf("after the change: web got %v, api got %v; want b alone", rw, ra)
	}
	if &rw.GetResources()[0] != &ra.GetResources()[0] {
		t.Error("the two groups' clients got separate responses for the same change, not one shared list")
	}
	if sg := c.sharedGens[sharedKey{eds, gen.version, 2}]; sg == nil || sg.groups != 1 {
		t.Fatalf("old generation: %+v, want it kept for the one group still on it", sg)
	}
	// Other content: a generation of its own.
	publish(kAPI, map[string]uint32{"a": 3, "b": 2})
	if c.groups[kAPI].types[eds] == c.groups[kWeb].types[eds] {
		t.Fatal("groups with different content share a generation")
	}
	c.ClearSnapshot(kIdle)
	if _, ok := c.groups[kIdle]; ok {
		t.Fatal("ClearSnapshot kept a group without watches")
	}
	if sg := c.sharedGens[sharedKey{eds, gen.version, 2}]; sg != nil {
		t.Fatalf("generation no group uses is still shared: %+v", sg)
	}
}

// TestCacheRefusesUnbufferedChannels: the cache answers under its lock, so
// a response channel without room would block every stream; such a watch
// is refused instead of being accepted and deadlocking later.
func TestCacheRefusesUnbufferedChannels(t *testing.T) {
	c := NewCache(nil)
	node := &corev3.Node{Cluster: "web"}
	if _, err := c.CreateWatch(&cache.Request{Node: node, TypeUrl: resource.EndpointType}, stream.NewSotwSubscription(nil, false), make(chan cache.Response)); !errors.Is(err, errUnbufferedResponses) {
		t.Errorf("SotW watch on an unbuffered channel: %v, want errUnbufferedResponses", err)
	}
	if _, err := c.CreateDeltaWatch(&cache.DeltaRequest{Node: node, TypeUrl: resource.EndpointType}, stream.NewDeltaSubscription(nil, nil, nil, false), make(chan cache.DeltaResponse)); !errors.Is(err, errUnbufferedResponses) {
		t.Errorf("delta watch on an unbuffered channel: %v, want errUnbufferedResponses", err)
	}
}

// TestTrackerBoundsNacks: a client that NACKs with a huge error, over and
// over (the same response, responses already answered, new versions) costs
// a bounded excerpt in the admin view and a bounded number of log lines:
// one per rejected version, within a per-stream budget.
func TestTrackerBoundsNacks(t *testing.T) {
	var logs bytes.Buffer
	tr := NewTracker(&groupRecorder{}, slog.New(slog.NewTextHandler(&logs, nil)), nil, nil)
	node := &corev3.Node{Id: "n", Cluster: "web", UserAgentName: "envoy"}
	ctx := context.Background()
	_ = tr.OnStreamOpen(ctx, 1, "")
	if err := tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("é", 1<<19) // 1 MiB
	nack := func(nonce string) {
		t.Helper()
		if err := tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, ResponseNonce: nonce,
			ErrorDetail: &status.Status{Code: 3, Message: huge}}); err != nil {
			t.Fatal(err)
		}
	}
	respond := func(version, nonce string) {
		tr.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: version, Nonce: nonce})
	}
	respond("v1", "n1")
	for range 200 {
		nack("n1") // the first answers n1; the rest name a nonce already answered
	}
	// The same version again under a new nonce: still one log line.
	respond("v1", "n2")
	nack("n2")
	if got := strings.Count(logs.String(), "rejected config"); got != 1 {
		t.Fatalf("%d NACK log lines for one rejected version, want 1", got)
	}
	// Many new versions: at most the per-minute budget is logged.
	for i := range 20 {
		v, n := fmt.Sprintf("v%d", i+2), fmt.Sprintf("m%d", i)
		respond(v, n)
		nack(n)
	}
	if got := strings.Count(logs.String(), "rejected config"); got != nackLogsPerMinute {
		t.Fatalf("%d NACK log lines for 21 rejected versions within a minute, want the budget of %d", got, nackLogsPerMinute)
	}
	if logs.Len() > 64<<10 {
		t.Fatalf("NACKs wrote %d bytes of logs, want at most 64 KiB", logs.Len())
	}
	ps := tr.Proxies()
	if len(ps) != 1 {
		t.Fatalf("%d proxies", len(ps))
	}
	last := ps[0].Types[resource.ClusterType].LastNack
	if last == nil || last.Version != "v21" || len(last.Error) > maxNackDetail+64 || !strings.Contains(last.Error, "bytes cut") || !utf8.ValidString(last.Error) {
		t.Fatalf("last NACK kept as %q… (%d bytes), want version v21 and a valid, bounded excerpt", func() string {
			if last == nil {
				return ""
			}
			return last.Error[:min(40, len(last.Error))]
		}(), func() int {
			if last == nil {
				return 0
			}
			return len(last.Error)
		}())
	}
}

// TestTrackerRefusesWhenGroupsAreRefused: a client whose group the
// registrar refuses gets ResourceExhausted and is not counted as a proxy
// of the group.
func TestTrackerRefusesWhenGroupsAreRefused(t *testing.T) {
	rec := &groupRecorder{refuse: errors.New("too many proxy groups")}
	tr := NewTracker(rec, slog.New(slog.DiscardHandler), nil, nil)
	node := &corev3.Node{Id: "n", Cluster: "made-up-1", UserAgentName: "envoy"}
	_ = tr.OnStreamOpen(context.Background(), 1, "")
	err := tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType})
	if gs, _ := grpcstatus.FromError(err); gs.Code() != codes.ResourceExhausted || !strings.Contains(gs.Message(), "too many proxy groups") {
		t.Fatalf("refused group: %v, want ResourceExhausted with the reason", err)
	}
	tr.OnStreamClosed(1, node)
	if len(rec.released) != 0 || len(tr.inGroup) != 0 {
		t.Fatalf("a refused client was counted: released %v, in groups %v", rec.released, tr.inGroup)
	}
}

// TestTrackerBoundsPendingNonces: a client that never answers its responses
// (a delta client that keeps subscribing with an empty nonce, say) does
// not grow the stream's record without end; answers to recent responses
// are still attributed.
func TestTrackerBoundsPendingNonces(t *testing.T) {
	tr := NewTracker(&groupRecorder{}, slog.New(slog.DiscardHandler), nil, nil)
	node := &corev3.Node{Id: "n", Cluster: "web", UserAgentName: "envoy"}
	ctx := context.Background()
	_ = tr.OnStreamOpen(ctx, 1, "")
	if err := tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	for i := range 10000 {
		tr.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: fmt.Sprint(i), Nonce: fmt.Sprint("n", i)})
	}
	s := tr.streams[streamKey{false, 1}]
	if len(s.nonces) > maxPendingNonces || len(s.order) > 2*maxPendingNonces+1 {
		t.Fatalf("10,000 unanswered responses left %d nonces and %d in order, want at most %d", len(s.nonces), len(s.order), maxPendingNonces)
	}
	if err := tr.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, VersionInfo: "9999", ResponseNonce: "n9999"}); err != nil {
		t.Fatal(err)
	}
	if got := tr.Proxies()[0].Types[resource.ClusterType].Acked; got != "9999" {
		t.Fatalf("the ACK of the latest response was attributed to %q, want 9999", got)
	}
}
