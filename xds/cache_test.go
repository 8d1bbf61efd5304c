package xds

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// These tests drive the cache and the session rules (session.go,
// respond.go) through the drivers of driver_test.go; the server-level
// tests (ads_test.go, conformance_test.go) run the same over gRPC.

func edsSnapshot(t testing.TB, ports map[string]uint32) *cache.Snapshot {
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

// names lists the load assignments (or clusters) of a SotW response.
func names(r *discoveryv3.DiscoveryResponse) []string {
	var out []string
	for _, a := range r.GetResources() {
		cla := &endpointv3.ClusterLoadAssignment{}
		if a.UnmarshalTo(cla) == nil {
			out = append(out, cla.GetClusterName())
			continue
		}
		cl := &clusterv3.Cluster{}
		_ = a.UnmarshalTo(cl)
		out = append(out, cl.GetName())
	}
	return out
}

// deltaNames lists the resources of a delta response.
func deltaNames(r *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	return out
}

func webKey() string { return nodeKey(&corev3.Node{Cluster: "web"}) }

// TestCacheSotwSendsOnlyWhatChanged: the first request gets everything; an
// ACK gets nothing; a change to one load assignment sends only that one; a
// NACK is never answered with what was rejected; an identical snapshot
// sends nothing (and wakes nobody).
func TestCacheSotwSendsOnlyWhatChanged(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := webKey()
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
	cc.woken() // attaching wakes the stream once
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 2, "c": 1})); err != nil {
		t.Fatal(err)
	}
	if !cc.woken() {
		t.Fatal("a change did not wake the client")
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
	if cc.woken() {
		t.Error("an identical snapshot woke the client")
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

// TestCacheSharesState: every response shares the marshalled resources;
// clients that take everything, or that held the same generation, share
// one resource list (so one encoding, see the codec). What a client holds
// is its own: one client's unsubscription does not touch another's
// holding, and a holding, once taken, is never edited (a NACK goes back to
// it).
func TestCacheSharesState(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := webKey()
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	c1 := newCacheClient(t, c, resource.EndpointType, "a", "b")
	c2 := newCacheClient(t, c, resource.EndpointType, "a", "b")
	r1, r2 := c1.request(false), c2.request(false)
	if r1.GetResources()[0] != r2.GetResources()[0] {
		t.Error("each response marshalled its own copy of a resource")
	}
	if &r1.GetResources()[0] != &r2.GetResources()[0] {
		t.Error("two new clients taking every resource got lists of their own")
	}
	c1.request(false)
	c2.request(false)

	// Both held the same generation: a change is one list for both.
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 2, "b": 1})); err != nil {
		t.Fatal(err)
	}
	gen := c.current(key, types.Endpoint)
	r1, r2 = c1.poll(), c2.poll()
	if len(r1.GetResources()) != 1 || len(r2.GetResources()) != 1 {
		t.Fatalf("after changing a: %v, %v", names(r1), names(r2))
	}
	if &r1.GetResources()[0] != &r2.GetResources()[0] {
		t.Error("two clients that held the same generation got lists of their own for the same change")
	}
	c1.request(false)
	c2.request(false)

	// c1 stops naming b: it holds a alone, in a map of its own; c2 still
	// holds the whole generation.
	held := c1.sub().held
	c1.names = []string{"a"}
	if r := c1.request(false); r != nil {
		t.Fatalf("dropping b answered %v", names(r))
	}
	if h := c1.sub().held; h.whole != nil || len(h.explicit) != 1 || h.explicit["a"] != gen.entries["a"].hash {
		t.Fatalf("c1 after dropping b holds %+v, want a alone", h)
	}
	if h := c2.sub().held; h.whole != gen {
		t.Fatalf("c1's unsubscription changed what c2 holds: %+v", h)
	}
	if held.whole != gen {
		t.Fatalf("the holding c1 had before was edited: %+v", held)
	}
	// Dropping a too leaves c1's earlier (explicit) holding as it was.
	held = c1.sub().held
	c1.names = []string{}
	c1.request(false)
	if len(c1.sub().held.explicit) != 0 || len(held.explicit) != 1 {
		t.Fatalf("c1 holds %v after dropping everything; its earlier holding became %v", c1.sub().held.explicit, held.explicit)
	}

	// A client subscribed to a subset gets its own, small holding.
	c3 := newCacheClient(t, c, resource.EndpointType, "a")
	r := c3.request(false)
	if h := c3.sub().held; len(r.GetResources()) != 1 || h.whole != nil || len(h.explicit) != 1 {
		t.Errorf("subset client: sent %v, holds %+v", names(r), h)
	}
}

// TestCacheDelta: delta clients get changed resources and removals.
func TestCacheDelta(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Cluster: "web"}
	key := nodeKey(node)
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	dc := newDeltaClient(t, c, node, "a", "b")
	if r := dc.request(nil); len(r.GetResources()) != 2 {
		t.Fatalf("initial: %v", r)
	}
	if r := dc.request(nil); r != nil {
		t.Fatalf("ACK answered: %v", r)
	}
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 2})); err != nil {
		t.Fatal(err)
	}
	r := dc.poll()
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "a" || len(r.GetRemovedResources()) != 1 || r.GetRemovedResources()[0] != "b" {
		t.Fatalf("after change: %v", r)
	}
}

// TestCacheResubscribeEDS: a client subscribed to every name drops one and
// names it again: it gets it again.
func TestCacheResubscribeEDS(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	if err := c.SetSnapshot(ctx, webKey(), edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.EndpointType, "a", "b")
	if r := cc.request(false); len(r.GetResources()) != 2 {
		t.Fatal(r)
	}
	cc.request(false) // ACK: memoises the generation's diff
	cc.names = []string{"a"}
	if r := cc.request(false); r != nil {
		t.Fatalf("dropping b answered %v", names(r))
	}
	cc.names = []string{"a", "b"}
	if got := names(cc.request(false)); len(got) != 1 || got[0] != "b" {
		t.Fatalf("re-subscribing to b sent %v; holds %+v", got, cc.sub().held)
	}
}

// TestCacheResubscribeFullState: the same for a full-state type, which
// answers with every subscribed resource.
func TestCacheResubscribeFullState(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	snap := &cache.Snapshot{}
	snap.Resources[types.Cluster] = edsSnapshot(t, map[string]uint32{"a": 1, "b": 1}).Resources[types.Endpoint]
	if err := c.SetSnapshot(ctx, webKey(), snap); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.ClusterType, "a", "b")
	if r := cc.request(false); len(r.GetResources()) != 2 {
		t.Fatal(r)
	}
	cc.request(false)
	cc.names = []string{"a"}
	cc.request(false)
	cc.names = []string{"a", "b"}
	if r := cc.request(false); len(r.GetResources()) != 2 {
		t.Fatalf("re-subscribing to b (full state) sent %v; holds %+v", names(r), cc.sub().held)
	}
}

// TestCacheReconnectToEmptyType: a client reconnecting with the version it
// held before is told the current set even when it is empty.
func TestCacheReconnectToEmptyType(t *testing.T) {
	c := NewCache(nil)
	snap := &cache.Snapshot{}
	snap.Resources[types.Cluster] = cache.NewResources("v2", nil)
	if err := c.SetSnapshot(context.Background(), webKey(), snap); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.ClusterType)
	cc.accepted = "v1-before-restart"
	if r := cc.request(false); r == nil || len(r.GetResources()) != 0 || r.GetVersionInfo() != "v2" {
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
	if err := c.SetSnapshot(ctx, nodeKey(node), edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	dc := newDeltaClient(t, c, node, "a", "b")
	if r := dc.request(nil); len(r.GetResources()) != 2 {
		t.Fatal(r)
	}
	if r := dc.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{"b"}}); r != nil {
		t.Fatalf("unsubscribing from b answered %v", r)
	}
	if r := dc.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"b"}}); len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "b" {
		t.Fatalf("re-subscribing to b: %v", r)
	}
}

// TestCacheNamesChangeBetweenGenerations: a client that held a generation
// with other names is not taken to hold the current one's.
func TestCacheNamesChangeBetweenGenerations(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := webKey()
	publish := func(ports map[string]uint32) {
		t.Helper()
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
	cc.names = []string{"a", "b", "c", "d"}
	r := cc.request(false)
	if got := names(r); !slices.Contains(got, "d") {
		t.Fatalf("subscribing to d sent %v; holds %+v", got, cc.sub().held)
	}
}

// TestCacheClearSnapshot: a cleared group is gone; one with an attached
// stream (its proxy came back) is kept, until the stream ends.
func TestCacheClearSnapshot(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	key := webKey()
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1})); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.EndpointType, "a")
	cc.request(false)
	cc.request(false)
	c.ClearSnapshot(key)
	if _, err := c.GetSnapshot(key); err != nil {
		t.Fatal("a group with an attached stream was cleared")
	}
	cc.detach()
	c.ClearSnapshot(key)
	if _, err := c.GetSnapshot(key); err == nil {
		t.Fatal("a group whose last stream ended was not cleared")
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
// protocol's rule: the client may have dropped it).
func TestCacheDeltaWildcardUnsubscribe(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Cluster: "web"}
	if err := c.SetSnapshot(ctx, nodeKey(node), edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	dc := newDeltaClient(t, c, node, "*", "b")
	if r := dc.request(nil); len(r.GetResources()) != 2 {
		t.Fatalf("initial: %v", r)
	}
	if r := dc.request(nil); r != nil {
		t.Fatalf("ACK answered: %v", r)
	}
	r := dc.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{"b"}})
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
	key := nodeKey(node)
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

// TestCacheWholeGenerationHolding: a client that takes everything keeps no
// per-name state: it holds the generation itself, and a client naming
// exactly the generation's names shares the generation's index instead of
// a set of its own, over SotW and delta, before and after a change. One
// that drops names (the generation's first and last, say) holds the rest
// explicitly: nothing is re-sent, and the dropped names are sent again
// when named again, after which it holds the whole generation again.
func TestCacheWholeGenerationHolding(t *testing.T) {
	c := NewCache(nil)
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	key := nodeKey(node)
	ports, all, publish := fiftyServices(t, c, key)
	sotw := newCacheClient(t, c, resource.EndpointType, all...)
	delta := newDeltaClient(t, c, node, all...)
	if r := sotw.request(false); len(r.GetResources()) != 50 {
		t.Fatalf("SotW initial: %d resources", len(r.GetResources()))
	}
	if r := delta.request(nil); len(r.GetResources()) != 50 {
		t.Fatalf("delta initial: %d resources", len(r.GetResources()))
	}
	wholeAndShared := func(when string, gen *generation) {
		t.Helper()
		for name, ts := range map[string]*typeSub{"SotW": sotw.sub(), "delta": delta.sub()} {
			if ts.held.whole != gen || ts.held.explicit != nil {
				t.Fatalf("%s, %s client holds %p / %d names, want the whole generation %p", when, name, ts.held.whole, len(ts.held.explicit), gen)
			}
			if ts.names.same == nil || ts.names.own != nil {
				t.Fatalf("%s, %s client naming every resource keeps a name set of its own (%d names)", when, name, len(ts.names.own))
			}
		}
	}
	wholeAndShared("after the first response", c.current(key, types.Endpoint))
	if sotw.request(false) != nil || delta.request(nil) != nil {
		t.Fatal("an ACK was answered")
	}
	ports["svc-07"] = 2
	publish()
	gen := c.current(key, types.Endpoint)
	if r := sotw.poll(); fmt.Sprint(names(r)) != "[svc-07]" {
		t.Fatalf("SotW after one change: %v", names(r))
	}
	if r := delta.poll(); fmt.Sprint(deltaNames(r)) != "[svc-07]" {
		t.Fatalf("delta after one change: %v", r)
	}
	wholeAndShared("after a change", gen)
	if sotw.request(false) != nil || delta.request(nil) != nil {
		t.Fatal("an ACK was answered")
	}

	// SotW: the client stops naming the first and last names.
	sotw.names = all[1:49]
	if r := sotw.request(false); r != nil {
		t.Fatalf("dropping svc-00 and svc-49 re-sent %v, which the client holds unchanged", names(r))
	}
	if h := sotw.sub().held; h.whole != nil || len(h.explicit) != 48 || h.explicit["svc-07"] != gen.entries["svc-07"].hash {
		t.Fatalf("after dropping two names the client holds %p / %d names, want 48 names", h.whole, len(h.explicit))
	}
	sotw.names = all
	if r := sotw.request(false); fmt.Sprint(names(r)) != "[svc-00 svc-49]" {
		t.Fatalf("naming svc-00 and svc-49 again sent %v", names(r))
	}
	// Delta: the client unsubscribes from one and subscribes again.
	if r := delta.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{"svc-00"}}); r != nil {
		t.Fatalf("unsubscribing from svc-00 answered %v", r)
	}
	if h := delta.sub().held; h.whole != nil || len(h.explicit) != 49 {
		t.Fatalf("after unsubscribing from one name the client holds %p / %d names, want 49 names", h.whole, len(h.explicit))
	}
	if r := delta.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"svc-00"}}); fmt.Sprint(deltaNames(r)) != "[svc-00]" {
		t.Fatalf("subscribing to svc-00 again sent %v", r)
	}
	wholeAndShared("after naming the dropped names again", gen)
}

// TestCacheSlowClientStaysIncremental: clients that ACK only after many
// further changes still get only what changed since what they hold, round
// after round (they hold the generation itself, however old), over SotW
// and delta; a delta client is told of what went away meanwhile.
func TestCacheSlowClientStaysIncremental(t *testing.T) {
	const changes = 40
	c := NewCache(nil)
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	ports, all, publish := fiftyServices(t, c, nodeKey(node))
	sotw := newCacheClient(t, c, resource.EndpointType, all...)
	delta := newDeltaClient(t, c, node, all...)
	sotw.request(false)
	delta.request(nil)
	for round := range 3 {
		if sotw.request(false) != nil || delta.request(nil) != nil {
			t.Fatalf("round %d: an ACK was answered", round)
		}
		for i := range changes {
			ports[fmt.Sprintf("svc-%02d", i)] = uint32(100*round + i + 2)
			publish()
			if i == 0 {
				// The first change's response; the ACK comes after the rest.
				sotw.poll()
				delta.poll()
			}
		}
		if r := sotw.request(false); len(r.GetResources()) != changes-1 {
			t.Fatalf("round %d: SotW: %d of 50 resources sent, want the %d changed since the last response", round, len(r.GetResources()), changes-1)
		}
		if r := delta.request(nil); len(r.GetResources()) != changes-1 || len(r.GetRemovedResources()) != 0 {
			t.Fatalf("round %d: delta: %d of 50 resources sent, removals %v, want the %d changed since the last response", round, len(r.GetResources()), r.GetRemovedResources(), changes-1)
		}
	}
	delta.request(nil)
	// Two resources go away and one changes, among many snapshots.
	delete(ports, "svc-48")
	publish()
	delta.poll()
	delete(ports, "svc-49")
	publish()
	for i := range changes {
		ports["svc-00"] = uint32(1000 + i)
		publish()
	}
	if r := delta.request(nil); fmt.Sprint(deltaNames(r), r.GetRemovedResources()) != "[svc-00] [svc-49]" {
		t.Fatalf("delta client after %d snapshots: sent %v, removed %v; want svc-00 sent and svc-49 removed", changes+1, deltaNames(r), r.GetRemovedResources())
	}
}

// TestCacheNackRestoresBefore: after a NACK the client is back to what it
// held before the rejected response; the rejected generation is not sent
// again; the next generation brings what changed since what the client
// accepted, which includes what the rejected response carried and did not
// change again. Over SotW and delta, for clients holding a whole
// generation or some names of it; and after two NACKs in a row the client
// is back to what it held before the first.
func TestCacheNackRestoresBefore(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delta bool
		names []string
	}{
		{"sotw", false, []string{"a", "b", "c"}},
		{"sotw subset", false, []string{"a", "b"}},
		{"delta", true, []string{"a", "b", "c"}},
		{"delta subset", true, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCache(nil)
			node := &corev3.Node{Id: "n1", Cluster: "web"}
			key := nodeKey(node)
			publish := func(a, b, cc uint32) *generation {
				t.Helper()
				if err := c.SetSnapshot(context.Background(), key, edsSnapshot(t, map[string]uint32{"a": a, "b": b, "c": cc})); err != nil {
					t.Fatal(err)
				}
				return c.current(key, types.Endpoint)
			}
			cl := newBothClient(t, c, node, tc.delta, resource.EndpointType, tc.names...)
			sameHolding := func(what string, got, want holding) {
				t.Helper()
				if got.whole != want.whole || fmt.Sprint(got.explicit) != fmt.Sprint(want.explicit) {
					t.Fatalf("%s: the client holds %p %v, want %p %v", what, got.whole, got.explicit, want.whole, want.explicit)
				}
			}

			g1 := publish(1, 1, 1)
			cl.ack()
			if got := cl.ack(); got != "-" {
				t.Fatalf("ACK answered: %s", got)
			}
			accepted := cl.sub().held
			if len(tc.names) == 3 && accepted.whole != g1 {
				t.Fatalf("a client naming every resource holds %p, want the generation %p", accepted.whole, g1)
			}

			// a and b change; the client rejects them.
			g2 := publish(2, 2, 1)
			if got := cl.poll(); got != "[a b]" {
				t.Fatalf("the change of a and b: sent %s", got)
			}
			if got := cl.nack(); got != "-" {
				t.Fatalf("NACK answered: %s", got)
			}
			sameHolding("after the NACK", cl.sub().held, accepted)
			if cl.sub().rejected != g2 {
				t.Fatal("the rejected generation is not remembered")
			}
			if got := cl.poll(); got != "-" {
				t.Fatalf("the rejected generation was sent again: %s", got)
			}

			// b changes again: a (rejected, unchanged since) comes too.
			publish(2, 3, 1)
			if got := cl.poll(); got != "[a b]" {
				t.Fatalf("the next change: sent %s, want a and b", got)
			}
			// Rejected again: back to what it held before the first NACK.
			if got := cl.nack(); got != "-" {
				t.Fatalf("second NACK answered: %s", got)
			}
			sameHolding("after two NACKs in a row", cl.sub().held, accepted)
			if got := cl.poll(); got != "-" {
				t.Fatalf("the rejected generation was sent again: %s", got)
			}

			// Only c changes: the client gets a and b again, and c if it
			// subscribes to it.
			g4 := publish(2, 3, 2)
			want := "[a b c]"
			if len(tc.names) == 2 {
				want = "[a b]"
			}
			if got := cl.poll(); got != want {
				t.Fatalf("the change after two NACKs: sent %s, want %s", got, want)
			}
			if got := cl.ack(); got != "-" {
				t.Fatalf("ACK answered: %s", got)
			}
			if got := cl.sub().held; got.hash("a") != g4.entries["a"].hash || got.hash("b") != g4.entries["b"].hash {
				t.Fatalf("after the ACK the client holds %p %v, want g4's a and b", got.whole, got.explicit)
			}
		})
	}
}

// TestCacheRetiredGenerationsShareNothing: shared encodings are kept only
// for the lists of generations that are some group's current one. A client
// that held an old generation, answered after the group moved on twice,
// registers the list it gets under the current generation, which forgets
// it when it is replaced in turn; a response worked out from a generation
// that was replaced meanwhile (a stream that took the group's generation
// just before a publish) registers nothing.
func TestCacheRetiredGenerationsShareNothing(t *testing.T) {
	c := NewCache(nil)
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	key := nodeKey(node)
	ports, all, publish := fiftyServices(t, c, key)
	count := func() (n int) {
		c.shared.sotw.Range(func(any, any) bool { n++; return true })
		c.shared.delta.Range(func(any, any) bool { n++; return true })
		return n
	}
	// sharedOf counts the shared lists of gen's (its memos).
	sharedOf := func(gen *generation) (n int) {
		gen.mu.Lock()
		defer gen.mu.Unlock()
		for _, rs := range append(slices.Collect(maps.Values(gen.diffAny)), gen.all) {
			if len(rs) > 0 {
				if _, ok := c.shared.sotw.Load(sotwKey{&rs[0], len(rs)}); ok {
					n++
				}
			}
		}
		for _, rs := range append(slices.Collect(maps.Values(gen.diffDelta)), gen.allDelta) {
			if len(rs) > 0 {
				if _, ok := c.shared.delta.Load(deltaKey{&rs[0], len(rs)}); ok {
					n++
				}
			}
		}
		return n
	}
	sotw := newCacheClient(t, c, resource.EndpointType, all...)
	delta := newDeltaClient(t, c, node, all...)
	lateSotw := newCacheClient(t, c, resource.EndpointType, all...)
	lateDelta := newDeltaClient(t, c, node, all...)
	for _, cc := range []*cacheClient{sotw, lateSotw} {
		cc.request(false)
		cc.request(false)
	}
	for _, dc := range []*deltaClient{delta, lateDelta} {
		dc.request(nil)
		dc.request(nil)
	}
	g1 := c.current(key, types.Endpoint)
	if n := count(); n != 2 || sharedOf(g1) != 2 {
		t.Fatalf("after the first responses: %d shared lists (%d of the current generation), want its SotW and delta lists", n, sharedOf(g1))
	}

	// The group moves on twice; the clients answer late.
	ports["svc-01"] = 2
	publish()
	g2 := c.current(key, types.Endpoint)
	ports["svc-02"] = 2
	publish()
	g3 := c.current(key, types.Endpoint)
	if n := count(); n != 0 {
		t.Fatalf("after two publishes nobody was answered from: %d shared lists, want none", n)
	}
	if r := sotw.poll(); len(r.GetResources()) != 2 {
		t.Fatalf("SotW client two generations behind: %v", names(r))
	}
	if r := delta.poll(); len(r.GetResources()) != 2 {
		t.Fatalf("delta client two generations behind: %v", r)
	}
	if n := count(); n != 2 || sharedOf(g3) != 2 {
		t.Fatalf("after answering from the current generation: %d shared lists (%d of it), want its SotW and delta lists", n, sharedOf(g3))
	}

	// Late clients answered from g2, retired meanwhile: their response is
	// right, and registers nothing.
	ts, td := lateSotw.sub(), lateDelta.sub()
	r, _, ok := c.respondSotw(ts, g2)
	if !ok || fmt.Sprint(names(r)) != "[svc-01]" {
		t.Fatalf("SotW from a retired generation: %v", names(r))
	}
	rd, _, ok := c.respondDelta(td, g2)
	if !ok || fmt.Sprint(deltaNames(rd)) != "[svc-01]" {
		t.Fatalf("delta from a retired generation: %v", rd)
	}
	// New clients answered from a retired generation (whole lists).
	fresh := newCacheClient(t, c, resource.EndpointType, all...)
	freshDelta := newDeltaClient(t, c, node, all...)
	applySotw(&fresh.sess, &discoveryv3.DiscoveryRequest{TypeUrl: fresh.typ, ResourceNames: all})
	freshDelta.sess.deltaRequest(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: freshDelta.typ, ResourceNamesSubscribe: all})
	if r, _, _ := c.respondSotw(fresh.sub(), g2); len(r.GetResources()) != 50 {
		t.Fatalf("new SotW client from a retired generation: %d resources", len(r.GetResources()))
	}
	if r, _, _ := c.respondDelta(freshDelta.sub(), g2); len(r.GetResources()) != 50 {
		t.Fatalf("new delta client from a retired generation: %d resources", len(r.GetResources()))
	}
	if n := count(); n != 2 || sharedOf(g2) != 0 {
		t.Fatalf("after answering from a retired generation: %d shared lists (%d of it), want the current generation's 2", n, sharedOf(g2))
	}

	// The group moves on again: g3's lists are forgotten.
	ports["svc-03"] = 2
	publish()
	if n := count(); n != 0 {
		t.Fatalf("after g3 was replaced: %d shared lists, want none", n)
	}
}

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

// wildcardDelta is a delta wildcard client (Envoy's CDS): its first
// request names nothing.
func wildcardDelta(t *testing.T, c *Cache, node *corev3.Node, typ string) *deltaClient {
	dc := newDeltaClient(t, c, node)
	dc.typ = typ
	return dc
}

// TestCacheUnchangedTypeKeepsItsGeneration: snapshots that change only
// endpoints leave the clusters' generation as it is: SotW clients are not
// sent the clusters again (nor a NACKed set), delta clients are not
// answered, a slow client's ACK is not answered, and a cluster that goes
// away afterwards is reported removed.
func TestCacheUnchangedTypeKeepsItsGeneration(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	key := nodeKey(node)
	publish := func(clusters []string, port uint32) {
		t.Helper()
		if err := c.SetSnapshot(ctx, key, twoTypeSnapshot(t, clusters, port)); err != nil {
			t.Fatal(err)
		}
	}
	publish([]string{"a", "b"}, 1)
	cds := c.current(key, types.Cluster)
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
	for i := range 20 {
		publish([]string{"a", "b"}, uint32(i+2))
		if c.current(key, types.Cluster) != cds {
			t.Fatalf("endpoint-only snapshot %d made a new generation of clusters", i+1)
		}
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
	// The same clusters under another version (a snapshot built by hand
	// says nothing of its content): the generation is kept too.
	relabelled := twoTypeSnapshot(t, []string{"a", "b"}, 50)
	relabelled.Resources[types.Cluster].Version = "relabelled"
	if err := c.SetSnapshot(ctx, key, relabelled); err != nil {
		t.Fatal(err)
	}
	if c.current(key, types.Cluster) != cds {
		t.Fatal("the same clusters under another version made a new generation")
	}
	if sotw.poll() != nil || nacker.poll() != nil || delta.poll() != nil {
		t.Fatal("the same clusters under another version were sent")
	}
	publish([]string{"a"}, 100)
	if r := delta.poll(); len(r.GetResources()) != 0 || fmt.Sprint(r.GetRemovedResources()) != "[b]" {
		t.Fatalf("cluster b went away: delta client got %d resources, removals %v", len(r.GetResources()), r.GetRemovedResources())
	}
}

// TestCacheDroppedNames: clients that drop a name, or unsubscribe from it,
// while resources go away. A SotW EDS client is not told of a removal (it
// drops names itself) nor sent what it still holds; delta clients are told;
// a delta wildcard client that unsubscribes from a name it named is told
// whether it still exists, along with what went away meanwhile.
func TestCacheDroppedNames(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	key := nodeKey(node)
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
	wild.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"*", "a"}})
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
	sotw.names = all[1:]
	if r := sotw.request(false); r != nil {
		t.Fatalf("SotW client that stopped naming a was sent %v again", names(r))
	}

	// The wildcard client unsubscribes from a; meanwhile b went away. Both
	// are reported removed.
	if r := wild.poll(); fmt.Sprint(r.GetRemovedResources()) != "[a]" {
		t.Fatalf("wildcard client got removals %v", r.GetRemovedResources())
	}
	publish([]string{"c", "d"})
	if r := wild.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{"a"}}); fmt.Sprint(r.GetRemovedResources()) != "[a b]" {
		t.Fatalf("wildcard client that unsubscribed from a: removals %v, want [a b]", r.GetRemovedResources())
	}
	if r := delta.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{"b"}}); r != nil && len(r.GetResources()) > 0 {
		t.Fatalf("delta client that unsubscribed from b was sent %d resources", len(r.GetResources()))
	}
}

// TestCacheUnchangedTypeRemembersNewValues: a type whose content did not
// change keeps its generation, and remembers the new values it was handed
// (after a policy reload every resource is a new value with old content),
// so that later snapshots do not marshal them all again.
//
// With a version (as snapshot.Build makes them) the type is not even looked
// at; without one, each resource is, and must not be marshalled again.
func TestCacheUnchangedTypeRemembersNewValues(t *testing.T) {
	for _, version := range []string{"cds", ""} {
		t.Run(fmt.Sprintf("version %q", version), func(t *testing.T) {
			ctx := context.Background()
			c := NewCache(nil)
			key := webKey()
			clusters := func() []types.Resource {
				var out []types.Resource
				for i := range 1000 {
					out = append(out, &clusterv3.Cluster{Name: fmt.Sprintf("svc-%04d", i), ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
				}
				return out
			}
			snap := func(cds []types.Resource, port uint32) *cache.Snapshot {
				s := edsSnapshot(t, map[string]uint32{"a": port})
				s.Resources[types.Cluster] = cache.NewResources(version, cds)
				return s
			}
			v1, v2 := clusters(), clusters() // equal content, new values
			for i, cds := range [][]types.Resource{v1, v2} {
				if err := c.SetSnapshot(ctx, key, snap(cds, uint32(i+1))); err != nil {
					t.Fatal(err)
				}
			}
			gen := c.current(key, types.Cluster)
			port := uint32(10)
			allocs := testing.AllocsPerRun(5, func() {
				port++
				if err := c.SetSnapshot(ctx, key, snap(v2, port)); err != nil {
					t.Fatal(err)
				}
			})
			if c.current(key, types.Cluster) != gen {
				t.Fatal("the unchanged clusters got a new generation")
			}
			if allocs > 500 {
				t.Fatalf("an endpoint-only snapshot with the same 1,000 cluster values: %.0f allocations (the clusters were marshalled again)", allocs)
			}
		})
	}
}

// TestCacheDeltaForeignInitialVersions: versions a client brings to a new
// delta stream are its own (they may look like anything); they are
// compared with the resources' versions, nothing more: a resource whose
// version differs is sent, one whose version is the current one is not.
func TestCacheDeltaForeignInitialVersions(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Cluster: "web"}
	key := nodeKey(node)
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	dc := newDeltaClient(t, c, node, "a", "b")
	r := dc.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"a", "b"}, InitialResourceVersions: map[string]string{
		"a": "v@7", "b": c.current(key, types.Endpoint).entries["b"].hash,
	}})
	if fmt.Sprint(deltaNames(r)) != "[a]" {
		t.Fatalf("got %v, want a alone (the client's version of it is not ours; it holds b as it is)", r)
	}
	if r := dc.request(nil); r != nil {
		t.Fatalf("ACK answered: %v", r)
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
	kWeb, kAPI, kIdle := nodeKey(web), nodeKey(api), "idle"
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
		t.Fatal("ClearSnapshot kept a group without streams")
	}
	if sg := c.sharedGens[sharedKey{eds, gen.version, 2}]; sg != nil {
		t.Fatalf("generation no group uses is still shared: %+v", sg)
	}
	if !gen.retired {
		t.Fatal("generation no group uses is not retired")
	}
}

// TestCachePublishNeverWaits: publishing wakes a group's streams through a
// buffer of one and never waits for them: a stream that does not take its
// wake-ups holds up nothing, and its wake-ups coalesce into one. (It
// replaces the old test that the cache refused watches on unbuffered
// channels: there are no channels of the caller's left.)
func TestCachePublishNeverWaits(t *testing.T) {
	c := NewCache(nil)
	key := webKey()
	asleep := newWaker()
	c.attach(key, asleep)
	for i := range 100 {
		if err := c.SetSnapshot(context.Background(), key, edsSnapshot(t, map[string]uint32{"a": uint32(i + 1)})); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(asleep.ch); n != 1 {
		t.Fatalf("a stream that took none of 100 wake-ups has %d pending, want 1", n)
	}
	drain(asleep)
	c.detach(key, asleep)
	if err := c.SetSnapshot(context.Background(), key, edsSnapshot(t, map[string]uint32{"a": 1000})); err != nil {
		t.Fatal(err)
	}
	if drain(asleep) {
		t.Fatal("a detached stream was woken")
	}
}

// TestCacheSubscribeAfterNack: the generation a client rejected is not
// sent again, but a name the client subscribes to after the NACK, which
// the rejected response did not carry, is sent from it, at once (else a
// cluster Envoy adds waits for its endpoints until the group publishes
// something new). Over SotW EDS and delta, only that name: what was
// rejected is not; a full-state type (a gRPC client's named listeners, say)
// gets every name it subscribes to, as full state requires. A NACK of that
// response too is not answered (no NACK loop); the next generation brings
// everything the client lacks.
func TestCacheSubscribeAfterNack(t *testing.T) {
	for _, tc := range []struct {
		name  string
		delta bool
		typ   string
		// want is what the response to the new subscription carries.
		want string
	}{
		{"sotw eds", false, resource.EndpointType, "[d]"},
		{"sotw full state", false, resource.ClusterType, "[a b d]"},
		{"delta", true, resource.EndpointType, "[d]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCache(nil)
			node := &corev3.Node{Id: "n1", Cluster: "web"}
			key := nodeKey(node)
			idx, _ := typeIndex(tc.typ)
			publish := func(a uint32) *generation {
				t.Helper()
				snap := edsSnapshot(t, map[string]uint32{"a": a, "b": 1, "d": 1})
				snap.Resources[idx] = snap.Resources[types.Endpoint]
				if err := c.SetSnapshot(context.Background(), key, snap); err != nil {
					t.Fatal(err)
				}
				return c.current(key, idx)
			}
			cl := newBothClient(t, c, node, tc.delta, tc.typ, "a", "b")
			g1 := publish(1)
			cl.ack()
			cl.ack()
			publish(2)
			if got := cl.poll(); got == "-" {
				t.Fatal("the change of a was not sent")
			}
			if got := cl.nack(); got != "-" {
				t.Fatalf("NACK answered: %s", got)
			}
			if got := cl.subscribe("d"); got != tc.want {
				t.Fatalf("subscribing to d after the NACK: sent %s, want %s", got, tc.want)
			}
			// Rejected again: not answered, not even on the next request.
			if got := cl.nack(); got != "-" {
				t.Fatalf("NACK of the response to the new subscription answered: %s", got)
			}
			if got := cl.ack(); got != "-" {
				t.Fatalf("the request after two NACKs answered: %s", got)
			}
			if h := cl.sub().held; h.hash("a") != g1.entries["a"].hash || h.has("d") {
				t.Fatalf("after two NACKs the client holds %p %v, want a as g1 has it and no d", h.whole, h.explicit)
			}
			// A request that changes nothing is not answered either; the
			// next generation brings what the client lacks, and this time
			// it accepts it.
			if got := cl.subscribe(); got != "-" {
				t.Fatalf("a request that changes nothing: sent %s", got)
			}
			g3 := publish(3)
			want := "[a d]"
			if tc.typ == resource.ClusterType {
				want = "[a b d]"
			}
			if got := cl.poll(); got != want {
				t.Fatalf("the next generation: sent %s, want %s", got, want)
			}
			if got := cl.ack(); got != "-" {
				t.Fatalf("ACK answered: %s", got)
			}
			if h := cl.sub().held; h.hash("a") != g3.entries["a"].hash || h.hash("d") != g3.entries["d"].hash {
				t.Fatalf("after the ACK the client holds %p %v", h.whole, h.explicit)
			}
		})
	}
}

// TestCacheResubscribeAfterNack: a client that stops naming a resource it
// refused, and names it again, is sent it again (it dropped it, and asks
// for it), over SotW and delta.
func TestCacheResubscribeAfterNack(t *testing.T) {
	ctx := context.Background()
	c := NewCache(nil)
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	key := nodeKey(node)
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 1, "b": 1})); err != nil {
		t.Fatal(err)
	}
	cc := newCacheClient(t, c, resource.EndpointType, "a", "b")
	dc := newDeltaClient(t, c, node, "a", "b")
	cc.request(false)
	cc.request(false)
	dc.request(nil)
	dc.request(nil)
	if err := c.SetSnapshot(ctx, key, edsSnapshot(t, map[string]uint32{"a": 2, "b": 1})); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(names(cc.poll()), deltaNames(dc.poll())) != "[a] [a]" {
		t.Fatal("the change of a was not sent")
	}
	if cc.request(true) != nil || dc.nack() != nil {
		t.Fatal("a NACK was answered")
	}
	cc.names = []string{"b"}
	if r := cc.request(false); r != nil {
		t.Fatalf("SotW: dropping a answered %v", names(r))
	}
	cc.names = []string{"a", "b"}
	if r := cc.request(false); fmt.Sprint(names(r)) != "[a]" {
		t.Fatalf("SotW: naming the refused a again sent %v, want a", names(r))
	}
	if r := dc.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{"a"}}); r != nil {
		t.Fatalf("delta: unsubscribing from a answered %v", r)
	}
	if r := dc.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"a"}}); fmt.Sprint(deltaNames(r)) != "[a]" {
		t.Fatalf("delta: subscribing to the refused a again sent %v, want a", r)
	}
}
