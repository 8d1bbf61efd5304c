package xds_test

// A differential conformance test of sluice's xDS layer. Sluice serves ADS
// with go-control-plane's server in front of its own cache (xds.Cache); the
// oracle is go-control-plane's server in front of go-control-plane's own
// snapshot cache, through its public API. Both get the same snapshots, and
// the same scripted client, which keeps what it accepted the way Envoy does,
// runs against each over a real gRPC stream on 127.0.0.1. After every step
// the two clients must hold the same resources.
//
// What is compared is what a client ends up holding, not the messages that
// got it there: sluice intends to send less than the reference. It sends only
// what a client lacks (an EDS change over state of the world is the one load
// assignment that changed, where the reference sends every one the client
// names), it never sends a version again after the client rejected it (the
// reference answers each NACK with the rejected version, at once, for as long
// as the client keeps rejecting it), and it answers neither an ACK of the
// current version nor an unchanged snapshot published again. The last two are
// checked on sluice alone, with a short wait for the absence of a response.

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

const (
	// settleQuiet is how long both clients of a pair must have been idle
	// (nothing sent, accepted or published) before their states are taken
	// to be final. Waiting for an absence cannot be done otherwise; every
	// response here arrives within milliseconds. A step is over only when,
	// in addition, the two states are equal, so a slow server makes a step
	// take longer, never fail: it fails only when the states still differ
	// at settleTimeout. (A message later than settleQuiet would be compared
	// at the next step.)
	settleQuiet   = 100 * time.Millisecond
	settleTimeout = 5 * time.Second
	settlePoll    = 5 * time.Millisecond
	// absenceWindow is how long sluice's clients are watched to conclude
	// that sluice sends nothing (after an ACK of the current version, an
	// unchanged snapshot, a NACK). It follows a settle that saw both
	// servers finish, and sluice answers within milliseconds when it
	// answers at all.
	absenceWindow = 200 * time.Millisecond
)

// TestConformanceWithGoControlPlane runs each scenario over state of the
// world and over delta, against sluice and against go-control-plane.
func TestConformanceWithGoControlPlane(t *testing.T) {
	base := world{}.cluster("a", "10.0.0.1").cluster("b", "10.0.1.1").listener("l1", "a")
	four := world{}.cluster("a", "10.0.0.1").cluster("b", "10.0.1.1").cluster("c", "10.0.2.1").cluster("d", "10.0.3.1")
	changed := base.cluster("a", "10.0.0.9")

	scenarios := []confScenario{{
		// Envoy: CDS and LDS by wildcard, EDS and RDS by the names the
		// clusters and listeners give.
		name: "envoy", follow: true,
		steps: []confStep{
			publish(base),
			wildcard(cdsURL), wildcard(ldsURL),
			publish(changed), // one load assignment changes
			publish(changed.without("b")),
			publish(changed.without("b").cluster("c", "10.0.2.1").listener("l1", "c")),
			sluiceQuiet(),
		},
	}, {
		// Named EDS subscriptions that change, as a proxyless gRPC
		// client makes them.
		name: "named-eds", refWithoutADS: true,
		steps: []confStep{
			publish(four),
			subscribe(edsURL, "a", "b"),
			subscribe(edsURL, "a", "b", "c"),
			subscribe(edsURL, "b", "c"), // a dropped
			// a (no longer subscribed) and b change, c (subscribed) goes
			// away, e (not subscribed) appears.
			publish(four.cluster("a", "10.0.0.9").cluster("b", "10.0.1.9").without("c").cluster("e", "10.0.4.1")),
			subscribe(edsURL, "a", "b", "c", "e"), // a again: it must be sent again
			sluiceQuiet(),
		},
	}, {
		// The client rejects the second CDS version; the third, which
		// keeps the change to b it rejected, it accepts.
		name: "nack-cds", follow: true, deltaAheadFrom: 4,
		steps: []confStep{
			publish(base),
			wildcard(cdsURL), wildcard(ldsURL),
			rejectAndPublish(cdsURL, base.timeout("a", 5).timeout("b", 5)),
			publish(base.timeout("a", 7).timeout("b", 5)),
			sluiceQuiet(),
		},
	}, {
		// The same with EDS, named: the rejected version changes both
		// load assignments, the next one only a, so b's content is the
		// rejected version's. (Envoy rejects a response as a whole;
		// say a's change was the bad one.)
		//
		// Over state of the world sluice once diverged here: it took
		// the client to hold what it rejected, so the next version
		// brought a alone and the client kept b's first content. It now
		// works the next version out from the accepted one (the
		// request's version_info). Over delta go-control-plane leaves b
		// as it was (its delta server records what it sent, and a delta
		// NACK says nothing of what the client accepted); sluice's map
		// names the generation the client held before, and the client
		// gets b (see deltaAheadFrom).
		name: "nack-eds", deltaAheadFrom: 3,
		steps: []confStep{
			publish(base),
			subscribe(edsURL, "a", "b"),
			rejectAndPublish(edsURL, base.cluster("a", "10.0.0.5").cluster("b", "10.0.1.5")),
			publish(base.cluster("a", "10.0.0.6").cluster("b", "10.0.1.5")),
			sluiceQuiet(),
		},
	}, {
		// The stream ends; while the client is away a load assignment
		// changes, a cluster goes, another comes and the routes move;
		// it reconnects saying what it holds. Then once more with no
		// change.
		name: "reconnect", follow: true,
		steps: []confStep{
			publish(base),
			wildcard(cdsURL), wildcard(ldsURL),
			reconnect(ptr(changed.without("b").cluster("c", "10.0.2.1").listener("l1", "c"))),
			reconnect(nil),
			sluiceQuiet(),
		},
	}, {
		// Two groups publish the same content (sluice shares the
		// generations), then diverge, then meet again.
		name: "two-groups", follow: true, nodes: 2,
		steps: []confStep{
			publish(base),
			wildcard(cdsURL), wildcard(ldsURL),
			publishTo(changed, 0),
			publishTo(base.without("b"), 1),
			publishTo(changed, 1), // what group 0 has
			publishTo(base, 0),    // back to where both started
			sluiceQuiet(),
		},
	}, {
		// A wildcard subscription to a type that is empty yet: Envoy
		// waits for the first answer, empty or not, before it goes on
		// initialising. Then clusters appear.
		// (Over delta sluice once left the first wildcard request
		// unanswered while there was nothing to send.)
		name: "empty-wildcard",
		steps: []confStep{
			publish(world{}),
			wildcard(cdsURL),
			publish(base),
			sluiceQuiet(),
		},
	}, {
		// Names asked for before they exist: one that exists and one
		// that does not, then both.
		name: "not-yet-published",
		steps: []confStep{
			publish(world{}.cluster("a", "10.0.0.1").listener("l1", "a")),
			subscribe(edsURL, "a", "x"),
			subscribe(rdsURL, "l1-routes", "l2-routes"),
			publish(world{}.cluster("a", "10.0.0.2").cluster("x", "10.0.9.1").listener("l1", "a").listener("l2", "x")),
			sluiceQuiet(),
		},
	}}

	for _, sc := range scenarios {
		runOverBoth(t, sc)
	}
}

// runOverBoth runs sc over state of the world and over delta, in parallel
// subtests.
func runOverBoth(t *testing.T, sc confScenario) {
	for _, delta := range []bool{false, true} {
		protocol := "sotw"
		if delta {
			protocol = "delta"
		}
		t.Run(sc.name+"/"+protocol, func(t *testing.T) {
			t.Parallel()
			runConfScenario(t, sc, delta)
		})
	}
}

// runConfScenario runs sc's steps against both servers, settling and
// comparing after each.
func runConfScenario(t *testing.T, sc confScenario, delta bool) {
	r := newConfRun(t, sc, delta)
	for i, st := range sc.steps {
		r.history = append(r.history, st.what)
		if st.do != nil {
			st.do(r)
		}
		r.ahead = delta && sc.deltaAheadFrom > 0 && i >= sc.deltaAheadFrom
		r.settle(st.until)
		if st.check != nil {
			st.check(r)
		}
	}
}

// TestConformanceRandomSequences drives both servers with random sequences
// of what happens to Envoys of two groups: new content for one group, the
// other or both (from a small space, so content comes back and groups
// share it), and clients that reconnect, with and without a change while
// they are away. After every step the clients of both servers must hold the
// same resources. Seeded: a failure names its steps.
func TestConformanceRandomSequences(t *testing.T) {
	for seed := int64(1); seed <= 3; seed++ {
		rng := rand.New(rand.NewSource(seed))
		randomWorld := func() world {
			w := world{}
			var in []string
			for _, name := range []string{"a", "b", "c", "d", "e"} {
				if rng.Intn(5) < 3 {
					w = w.cluster(name, fmt.Sprintf("10.0.%d.%d", rng.Intn(2), 1+rng.Intn(2)))
					in = append(in, name)
				}
			}
			if len(in) > 0 {
				w = w.listener("l1", in[rng.Intn(len(in))])
			}
			return w
		}
		steps := []confStep{publish(randomWorld()), wildcard(cdsURL), wildcard(ldsURL)}
		for range 12 {
			switch rng.Intn(5) {
			case 0:
				steps = append(steps, publishTo(randomWorld(), 0))
			case 1:
				steps = append(steps, publishTo(randomWorld(), 1))
			case 2:
				steps = append(steps, publish(randomWorld()))
			case 3:
				steps = append(steps, reconnect(ptr(randomWorld())))
			default:
				steps = append(steps, reconnect(nil))
			}
		}
		steps = append(steps, sluiceQuiet())
		runOverBoth(t, confScenario{name: fmt.Sprintf("random-%d", seed), follow: true, nodes: 2, steps: steps})
	}
}

// TestConformanceRandomNamedSequences is the same for clients that name
// what they want, as proxyless gRPC clients do: random subscriptions to
// load assignments (names that exist, that went away, that never did)
// between random publications and reconnects.
func TestConformanceRandomNamedSequences(t *testing.T) {
	all := []string{"a", "b", "c", "d", "e"}
	for seed := int64(1); seed <= 3; seed++ {
		rng := rand.New(rand.NewSource(100 + seed))
		randomWorld := func() world {
			w := world{}
			for _, name := range all[:4] { // e never exists
				if rng.Intn(5) < 3 {
					w = w.cluster(name, fmt.Sprintf("10.0.%d.%d", rng.Intn(2), 1+rng.Intn(2)))
				}
			}
			return w
		}
		randomNames := func() []string {
			var names []string
			for _, n := range all {
				if rng.Intn(2) == 0 {
					names = append(names, n)
				}
			}
			if len(names) == 0 {
				names = all[:1] // an empty list would be a wildcard
			}
			return names
		}
		steps := []confStep{publish(randomWorld()), subscribe(edsURL, randomNames()...)}
		for range 12 {
			switch rng.Intn(4) {
			case 0:
				steps = append(steps, publish(randomWorld()))
			case 1:
				steps = append(steps, subscribe(edsURL, randomNames()...))
			case 2:
				steps = append(steps, reconnect(ptr(randomWorld())))
			default:
				steps = append(steps, reconnect(nil))
			}
		}
		steps = append(steps, sluiceQuiet())
		runOverBoth(t, confScenario{name: fmt.Sprintf("random-named-%d", seed), refWithoutADS: true, steps: steps})
	}
}

// Scenarios.

type confScenario struct {
	name string
	// nodes is the number of clients, each in a group of its own (node
	// clusters web, api, ...); 0 means 1.
	nodes int
	// follow makes the client subscribe to EDS and RDS by the names its
	// clusters and listeners give, as Envoy does.
	follow bool
	// refWithoutADS runs the reference cache without its ADS flag. With
	// it, go-control-plane holds a state-of-the-world response back until
	// the request names every resource of the type in the snapshot (it
	// expects an Envoy, which names every cluster's load assignment), so
	// a client naming a subset is never answered. Without it the cache
	// only stops doing that (and ordering responses to several watches).
	refWithoutADS bool
	// deltaAheadFrom, when not 0, is the step from which, over delta,
	// sluice is compared with what the client should hold (the last
	// published resources it subscribes to) instead of with the
	// reference: after a delta NACK sluice sends what the client lacks,
	// while go-control-plane takes the client to hold what it rejected
	// and never sends a resource of the rejected response that does not
	// change again.
	deltaAheadFrom int
	steps          []confStep
}

// confStep is one step of a scenario: do acts on both servers and their
// clients alike; the run then waits until both sides settle (and until
// holds for every client), compares, and runs check.
type confStep struct {
	what  string
	do    func(r *confRun)
	until func(c *confClient) bool
	check func(r *confRun)
}

func publish(w world) confStep {
	st := publishTo(w)
	st.what = "publish " + w.String()
	return st
}

// publishTo publishes w to the groups of the given clients (all if none).
func publishTo(w world, nodes ...int) confStep {
	return confStep{
		what: fmt.Sprintf("publish %s to the groups of clients %v", w, nodes),
		do:   func(r *confRun) { r.publish(w, nodes...) },
	}
}

func wildcard(typ string) confStep {
	return confStep{
		what: "subscribe to every " + shortType(typ),
		do: func(r *confRun) {
			r.each(func(c *confClient) { c.subscribe(typ, true) })
		},
	}
}

// subscribe sets the names the clients subscribe to.
func subscribe(typ string, names ...string) confStep {
	return confStep{
		what: fmt.Sprintf("subscribe to %s %v", shortType(typ), names),
		do: func(r *confRun) {
			r.each(func(c *confClient) { c.subscribe(typ, false, names...) })
		},
	}
}

// rejectAndPublish publishes w, whose version of typ the clients reject
// (every time they get it), and waits until they have. Sluice must not send
// it again; the reference does, once per NACK.
func rejectAndPublish(typ string, w world) confStep {
	snap, err := w.build()
	if err != nil {
		panic(err) // the scenario table is wrong
	}
	version := snap.GetVersion(typ)
	return confStep{
		what: fmt.Sprintf("publish %s, whose %s the clients NACK", w, shortType(typ)),
		do: func(r *confRun) {
			r.each(func(c *confClient) { c.rejectVersion(typ, version) })
			r.publish(w)
		},
		until: func(c *confClient) bool { return c.receivedVersion(typ, version) > 0 },
		check: func(r *confRun) {
			r.expectSluiceSilent("the NACK", nil)
			for _, c := range r.sides[0].clients {
				if n := c.receivedVersion(typ, version); n != 1 {
					r.t.Errorf("sluice sent the rejected %s version %s %d times; want once", shortType(typ), version, n)
				}
			}
			for _, c := range r.sides[1].clients {
				r.t.Logf("reference: sent the rejected %s version %d times", shortType(typ), c.receivedVersion(typ, version))
			}
		},
	}
}

// reconnect ends every client's stream, publishes w (if not nil) while they
// are away, and reconnects them.
func reconnect(w *world) confStep {
	what := "reconnect"
	if w != nil {
		what = fmt.Sprintf("disconnect, publish %s, reconnect", w)
	}
	return confStep{
		what: what,
		do: func(r *confRun) {
			r.each(func(c *confClient) { c.disconnect() })
			if w != nil {
				r.publish(*w)
			}
			r.each(func(c *confClient) { c.connect(r.ctx) })
		},
	}
}

func ptr[T any](v T) *T { return &v }

// sluiceQuiet checks what sluice intends and the reference does not promise:
// an ACK of the current version gets no response, nor does an unchanged
// snapshot published again (as new values, which the snapshot loop makes
// when it rebuilds).
func sluiceQuiet() confStep {
	return confStep{
		what: "ACK the current versions again; publish the same snapshots again",
		check: func(r *confRun) {
			r.expectSluiceSilent("an ACK of the current version", func() {
				for _, c := range r.sides[0].clients {
					c.ackAgain()
				}
			})
			r.expectSluiceSilent("an unchanged snapshot published again", func() {
				for key, w := range r.last {
					r.publishKey(key, w)
				}
			})
			r.settle(nil)
		},
	}
}

// Resources.

const (
	cdsURL = resource.ClusterType
	edsURL = resource.EndpointType
	ldsURL = resource.ListenerType
	rdsURL = resource.RouteType
)

func shortType(typ string) string {
	switch typ {
	case cdsURL:
		return "CDS"
	case edsURL:
		return "EDS"
	case ldsURL:
		return "LDS"
	case rdsURL:
		return "RDS"
	}
	return typ
}

// world is what a group's snapshot holds, small enough to write in a line:
// each cluster is an EDS cluster with a load assignment of its name, with
// one endpoint; each listener takes the route configuration named
// "<listener>-routes", which sends everything to one cluster.
type world struct {
	clusters  map[string]string // cluster → its endpoint's address
	timeouts  map[string]int    // cluster → connect timeout in seconds, if not 1
	listeners map[string]string // listener → the cluster its routes send to
}

func (w world) clone() world {
	return world{clusters: maps.Clone(w.clusters), timeouts: maps.Clone(w.timeouts), listeners: maps.Clone(w.listeners)}
}

func (w world) cluster(name, addr string) world {
	w = w.clone()
	if w.clusters == nil {
		w.clusters = map[string]string{}
	}
	w.clusters[name] = addr
	return w
}

func (w world) without(cluster string) world {
	w = w.clone()
	delete(w.clusters, cluster)
	delete(w.timeouts, cluster)
	return w
}

func (w world) timeout(cluster string, seconds int) world {
	w = w.clone()
	if w.timeouts == nil {
		w.timeouts = map[string]int{}
	}
	w.timeouts[cluster] = seconds
	return w
}

func (w world) listener(name, cluster string) world {
	w = w.clone()
	if w.listeners == nil {
		w.listeners = map[string]string{}
	}
	w.listeners[name] = cluster
	return w
}

func (w world) String() string {
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(w.clusters)) {
		p := c + "@" + w.clusters[c]
		if s, ok := w.timeouts[c]; ok {
			p += fmt.Sprintf("/%ds", s)
		}
		parts = append(parts, p)
	}
	for _, l := range slices.Sorted(maps.Keys(w.listeners)) {
		parts = append(parts, l+"→"+w.listeners[l])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// snapshot builds w's resources, as new values every time, into a snapshot
// with sluice's content-hash versions (snapshot.Build, what sluice's loop
// publishes; the snapshot is go-control-plane's).
func (w world) snapshot(t *testing.T) *cache.Snapshot {
	t.Helper()
	snap, err := w.build()
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func (w world) build() (*cache.Snapshot, error) {
	ads := func() *corev3.ConfigSource {
		return &corev3.ConfigSource{
			ResourceApiVersion:    corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}
	}
	addr := func(host string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}}
	}
	res := map[resource.Type][]types.Resource{cdsURL: {}, edsURL: {}, ldsURL: {}, rdsURL: {}}
	for name, ip := range w.clusters {
		timeout := 1
		if s, ok := w.timeouts[name]; ok {
			timeout = s
		}
		res[cdsURL] = append(res[cdsURL], &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name},
			ConnectTimeout:       durationpb.New(time.Duration(timeout) * time.Second),
		})
		res[edsURL] = append(res[edsURL], &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr(ip, 8080)}},
			}}}},
		})
	}
	for name, target := range w.listeners {
		routes := name + "-routes"
		manager := &anypb.Any{}
		err := anypb.MarshalFrom(manager, &hcmv3.HttpConnectionManager{
			StatPrefix:     name,
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: routes}},
		}, proto.MarshalOptions{Deterministic: true})
		if err != nil {
			return nil, err
		}
		res[ldsURL] = append(res[ldsURL], &listenerv3.Listener{
			Name:    name,
			Address: addr("0.0.0.0", 15001),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: manager},
			}}}},
		})
		res[rdsURL] = append(res[rdsURL], &routev3.RouteConfiguration{
			Name: routes,
			VirtualHosts: []*routev3.VirtualHost{{
				Name: name, Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: target},
					}},
				}},
			}},
		})
	}
	return snapshot.Build(res)
}

// The run: two servers, a client of each per node.

type confRun struct {
	t   *testing.T
	ctx context.Context
	// sides are sluice's (0) and the reference's (1).
	sides [2]*confSide
	keys  []string         // the group of each client (node)
	last  map[string]world // what each group was last published
	// history is the steps so far, for failure messages.
	history []string
	// ahead compares sluice with what its clients should hold, not with
	// the reference (see confScenario.deltaAheadFrom).
	ahead bool
}

type confSide struct {
	name    string
	publish func(ctx context.Context, key string, snap cache.ResourceSnapshot) error
	clients []*confClient
	// responses gets a line per response any of the side's clients
	// receives (dropped when full).
	responses chan string
}

// confGroups is the GroupRegistrar sluice's server needs (the snapshot
// loop, in production); the test publishes every group itself.
type confGroups struct{}

func (confGroups) EnsureGroup(translator.Proxy) error { return nil }
func (confGroups) ReleaseGroup(translator.Proxy)      {}

// nodeGroups keys groups as sluice's tracker does when the node says all
// there is to say (confGroups looks up no localities): by the proxy's
// Key. It is the reference cache's NodeHash too.
type nodeGroups struct{}

func (nodeGroups) ID(node *corev3.Node) string {
	p, err := translator.ProxyFromNode(node)
	if err != nil {
		return "invalid"
	}
	return p.Key()
}

func newConfRun(t *testing.T, sc confScenario, delta bool) *confRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	listen := func() net.Listener {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return lis
	}

	// Sluice's server, as cmd/sluice wires it, minus the snapshot loop.
	sluiceCache := xds.NewCache(nil)
	srv := xds.NewServer(ctx, xds.Config{Cache: sluiceCache, Groups: confGroups{}, DrainTimeout: time.Second})
	sluiceLis := listen()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, sluiceLis); err != nil {
			t.Errorf("sluice Serve: %v", err)
		}
	}()

	// The reference: go-control-plane's server and snapshot cache, keying
	// groups as sluice does.
	refCache := cache.NewSnapshotCache(!sc.refWithoutADS, nodeGroups{}, nil)
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, refCache, nil))
	refLis := listen()
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = gs.Serve(refLis)
	}()

	r := &confRun{t: t, ctx: ctx, last: map[string]world{}}
	r.sides[0] = &confSide{name: "sluice", publish: sluiceCache.SetSnapshot}
	r.sides[1] = &confSide{name: "reference", publish: refCache.SetSnapshot}
	var conns []*grpc.ClientConn
	for i, lis := range []net.Listener{sluiceLis, refLis} {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		side := r.sides[i]
		side.responses = make(chan string, 64)
		ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
		for n := range max(sc.nodes, 1) {
			service := []string{"web", "api", "db"}[n]
			node := &corev3.Node{Id: service + "-1", Cluster: service, UserAgentName: "envoy"}
			if i == 0 {
				r.keys = append(r.keys, nodeGroups{}.ID(node))
			}
			c := &confClient{
				side: side.name, node: node, delta: delta, follow: sc.follow, ads: ads, responses: side.responses,
				types: map[string]*confType{}, reject: map[string]bool{}, received: map[string]int{},
			}
			c.connect(ctx)
			side.clients = append(side.clients, c)
		}
	}
	t.Cleanup(func() {
		r.each(func(c *confClient) { c.disconnect() })
		for _, conn := range conns {
			_ = conn.Close()
		}
		cancel()
		gs.Stop()
		wg.Wait()
	})
	return r
}

// each calls f for every client of both sides.
func (r *confRun) each(f func(c *confClient)) {
	for _, s := range r.sides {
		for _, c := range s.clients {
			f(c)
		}
	}
}

// publish publishes w to the groups of the given clients (all if none), on
// both servers.
func (r *confRun) publish(w world, nodes ...int) {
	r.t.Helper()
	if len(nodes) == 0 {
		for i := range r.keys {
			nodes = append(nodes, i)
		}
	}
	for _, n := range nodes {
		r.publishKey(r.keys[n], w)
	}
}

func (r *confRun) publishKey(key string, w world) {
	r.t.Helper()
	r.last[key] = w
	snap := w.snapshot(r.t)
	// The same resources, in a snapshot value of each cache's own: the
	// reference writes its version maps into the snapshot it is given.
	for i, s := range r.sides {
		var rs cache.ResourceSnapshot = snap
		if i == 1 {
			rs = &cache.Snapshot{Resources: snap.Resources}
		}
		if err := s.publish(r.ctx, key, rs); err != nil {
			r.t.Fatalf("%s: publishing to %s: %v", s.name, key, err)
		}
	}
	r.each(func(c *confClient) { c.touch() })
}

// settle waits until every client has been idle for settleQuiet (and until
// holds for it), and each client's state is the same on both sides; it
// fails the test with the difference if that does not happen within
// settleTimeout.
func (r *confRun) settle(until func(c *confClient) bool) {
	r.t.Helper()
	if r.ahead {
		r.settleWith(until, r.diffWithWanted)
		return
	}
	r.settleWith(until, r.diffWithReference)
}

// diffWithReference compares client i of sluice with client i of the
// reference.
func (r *confRun) diffWithReference(i int) string {
	a, b := r.sides[0].clients[i].state(), r.sides[1].clients[i].state()
	if d := cmp.Diff(b, a, protocmp.Transform()); d != "" {
		return fmt.Sprintf("client %s, reference (-) vs sluice (+):\n%s", r.sides[0].clients[i].node.GetId(), d)
	}
	return ""
}

// diffWithWanted compares client i of sluice with what it should hold: of
// the resources last published to its group, those it subscribes to.
func (r *confRun) diffWithWanted(i int) string {
	c := r.sides[0].clients[i]
	got := c.state()
	want := c.wanted(r.last[r.keys[i]].snapshot(r.t))
	want.Answered = got.Answered // not a matter of content
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		return fmt.Sprintf("client %s, wanted (-) vs sluice (+):\n%s", c.node.GetId(), d)
	}
	return ""
}

// settleWith is settle with diff as the comparison of each client.
func (r *confRun) settleWith(until func(c *confClient) bool, diff func(i int) string) {
	r.t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for {
		now := time.Now()
		busy := ""
		r.each(func(c *confClient) {
			if err := c.failed(); err != nil {
				r.fatalf("%s client %s: %v", c.side, c.node.GetId(), err)
			}
			switch {
			case !c.idle(now):
				busy = fmt.Sprintf("%s client %s is still busy", c.side, c.node.GetId())
			case until != nil && !until(c):
				busy = fmt.Sprintf("%s client %s did not get what the step waits for", c.side, c.node.GetId())
			}
		})
		var diffs []string
		if busy == "" {
			for i := range r.keys {
				if d := diff(i); d != "" {
					diffs = append(diffs, d)
				}
			}
			if len(diffs) == 0 {
				return
			}
		}
		if now.After(deadline) {
			if busy != "" {
				r.fatalf("%s", busy)
			}
			r.fatalf("the clients' states differ:\n%s", strings.Join(diffs, "\n"))
		}
		time.Sleep(settlePoll)
	}
}

// expectSluiceSilent runs action (if any) and fails if any of sluice's
// clients gets a response within absenceWindow.
func (r *confRun) expectSluiceSilent(what string, action func()) {
	r.t.Helper()
	responses := r.sides[0].responses
	for len(responses) > 0 {
		<-responses
	}
	if action != nil {
		action()
	}
	timer := time.NewTimer(absenceWindow)
	defer timer.Stop()
	select {
	case got := <-responses:
		r.t.Errorf("after %s (steps %s): sluice sent %s; it should send nothing", what, r.steps(), got)
	case <-timer.C:
	}
}

func (r *confRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("after steps %s:\n%s", r.steps(), fmt.Sprintf(format, args...))
}

func (r *confRun) steps() string {
	var b strings.Builder
	for i, s := range r.history {
		fmt.Fprintf(&b, "\n  %d. %s", i+1, s)
	}
	return b.String()
}

// The client.

// confClient is a scripted ADS client (state of the world or delta) that
// keeps, per type, what it accepted as Envoy does: a state-of-the-world
// response replaces the state of a full-state type (CDS, LDS) and updates
// the resources it carries of the others; a delta response updates and
// removes. It ACKs every response, except that it NACKs (and does not
// apply) the versions it was told to reject, every time it gets them. When
// it follows (an Envoy), it subscribes to EDS and RDS by the names its
// clusters and listeners give. It forgets what it unsubscribes from.
type confClient struct {
	side      string
	node      *corev3.Node
	delta     bool
	follow    bool
	ads       discoveryv3.AggregatedDiscoveryServiceClient
	responses chan<- string

	mu      sync.Mutex
	sctx    context.Context // the current stream's
	cancel  context.CancelFunc
	done    chan struct{} // closed when the current stream's receiver ends
	sotw    discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	dstream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	types   map[string]*confType
	order   []string // types in the order first subscribed to
	// reject holds the "type version"s the client NACKs; received counts
	// the responses of each "type version".
	reject   map[string]bool
	received map[string]int
	// active is when the client last sent a request other than a NACK,
	// accepted a response, or was published to.
	active time.Time
	err    error
}

type confType struct {
	wildcard bool
	names    map[string]bool
	held     map[string]confHeld
	// version is the state-of-the-world version last accepted, nonce the
	// last response's on the current stream.
	version, nonce string
	// answered is set by the first response accepted.
	answered bool
}

type confHeld struct {
	msg     proto.Message
	version string
}

// confState is what a client holds: the resources by type and name, and
// which of the types it subscribes to by wildcard were answered (Envoy
// finishes initialising only when each of them was, even if empty).
type confState struct {
	Resources map[string]map[string]proto.Message
	Answered  []string
}

func (c *confClient) connect(ctx context.Context) {
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sctx, c.cancel, c.done = sctx, cancel, done
	var err error
	if c.delta {
		var s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
		if s, err = c.ads.DeltaAggregatedResources(sctx); err == nil {
			c.dstream = s
			go receive(sctx, c, done, s.Recv, c.handleDelta)
		}
	} else {
		var s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
		if s, err = c.ads.StreamAggregatedResources(sctx); err == nil {
			c.sotw = s
			go receive(sctx, c, done, s.Recv, c.handleSotw)
		}
	}
	if err != nil {
		c.fail(err)
		close(done)
		return
	}
	// A reconnect: subscribe again to what the client had, saying what
	// it holds, as Envoy does: over delta its resources' versions, over
	// state of the world the version it last accepted (and no nonce).
	c.touchLocked()
	for _, typ := range c.order {
		ts := c.types[typ]
		ts.nonce = ""
		if !ts.wildcard && len(ts.names) == 0 {
			continue
		}
		if c.delta {
			initial := map[string]string{}
			for n, h := range ts.held {
				initial[n] = h.version
			}
			c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{
				TypeUrl: typ, ResourceNamesSubscribe: ts.sortedNames(), InitialResourceVersions: initial,
			})
		} else {
			c.sendSotw(c.request(typ))
		}
	}
}

// receive hands each response of a stream to handle until the stream ends;
// responses after the client disconnected are dropped.
func receive[T any](ctx context.Context, c *confClient, done chan struct{}, recv func() (T, error), handle func(T)) {
	defer close(done)
	for {
		resp, err := recv()
		c.mu.Lock()
		switch {
		case ctx.Err() != nil:
		case err != nil:
			c.fail(fmt.Errorf("stream ended: %w", err))
		default:
			handle(resp)
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// disconnect ends the client's stream and waits until its receiver is done.
func (c *confClient) disconnect() {
	c.mu.Lock()
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	cancel()
	<-done
}

// touch marks the client active (a publisher calls it); touchLocked is
// touch with c.mu held.
func (c *confClient) touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.touchLocked()
}

func (c *confClient) touchLocked() { c.active = time.Now() }

func (c *confClient) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

func (c *confClient) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *confClient) idle(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return now.Sub(c.active) >= settleQuiet
}

func (c *confClient) rejectVersion(typ, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reject[shortType(typ)+" "+version] = true
}

func (c *confClient) receivedVersion(typ, version string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.received[shortType(typ)+" "+version]
}

func (c *confClient) state() confState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := confState{Resources: map[string]map[string]proto.Message{}}
	for typ, ts := range c.types {
		if len(ts.held) > 0 {
			m := map[string]proto.Message{}
			for n, h := range ts.held {
				m[n] = h.msg
			}
			st.Resources[shortType(typ)] = m
		}
		if ts.wildcard && ts.answered {
			st.Answered = append(st.Answered, shortType(typ))
		}
	}
	sort.Strings(st.Answered)
	return st
}

// wanted is what the client should hold of snap: per type it subscribes
// to, the resources it names (or all, by wildcard).
func (c *confClient) wanted(snap *cache.Snapshot) confState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := confState{Resources: map[string]map[string]proto.Message{}}
	for typ, ts := range c.types {
		m := map[string]proto.Message{}
		for name, r := range snap.GetResources(typ) {
			if ts.wildcard || ts.names[name] {
				m[name] = r
			}
		}
		if len(m) > 0 {
			st.Resources[shortType(typ)] = m
		}
	}
	return st
}

func (ts *confType) sortedNames() []string {
	return slices.Sorted(maps.Keys(ts.names))
}

// subscribe sets what the client subscribes to of typ (names, or every
// resource) and tells the server.
func (c *confClient) subscribe(typ string, wildcard bool, names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setSubscription(typ, wildcard, names)
}

func (c *confClient) setSubscription(typ string, wildcard bool, names []string) {
	ts := c.types[typ]
	if ts == nil {
		ts = &confType{names: map[string]bool{}, held: map[string]confHeld{}}
		c.types[typ] = ts
		c.order = append(c.order, typ)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var added, dropped []string
	for n := range want {
		if !ts.names[n] {
			added = append(added, n)
		}
	}
	for n := range ts.names {
		if !want[n] {
			dropped = append(dropped, n)
		}
	}
	sort.Strings(added)
	sort.Strings(dropped)
	ts.wildcard, ts.names = wildcard, want
	if !wildcard {
		for n := range ts.held {
			if !want[n] {
				delete(ts.held, n)
			}
		}
	}
	c.touchLocked()
	if c.delta {
		c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: added, ResourceNamesUnsubscribe: dropped})
	} else {
		c.sendSotw(c.request(typ))
	}
}

// request is the state-of-the-world request for typ: what the client
// subscribes to, the version it accepted last, and the last nonce.
func (c *confClient) request(typ string) *discoveryv3.DiscoveryRequest {
	ts := c.types[typ]
	return &discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: ts.sortedNames(), VersionInfo: ts.version, ResponseNonce: ts.nonce}
}

func (c *confClient) sendSotw(req *discoveryv3.DiscoveryRequest) {
	req.Node = c.node
	if err := c.sotw.Send(req); err != nil && c.sctx.Err() == nil {
		c.fail(fmt.Errorf("sending %s request: %w", shortType(req.GetTypeUrl()), err))
	}
}

func (c *confClient) sendDelta(req *discoveryv3.DeltaDiscoveryRequest) {
	req.Node = c.node
	if err := c.dstream.Send(req); err != nil && c.sctx.Err() == nil {
		c.fail(fmt.Errorf("sending %s request: %w", shortType(req.GetTypeUrl()), err))
	}
}

// ackAgain sends an ACK of the last response of every type again.
func (c *confClient) ackAgain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, typ := range c.order {
		ts := c.types[typ]
		if ts.nonce == "" {
			continue
		}
		if c.delta {
			c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: ts.nonce})
		} else {
			c.sendSotw(c.request(typ))
		}
	}
}

// got records a response; it reports whether the client rejects it.
func (c *confClient) got(typ, version string, resources int) (rejected bool) {
	key := shortType(typ) + " " + version
	c.received[key]++
	select {
	case c.responses <- fmt.Sprintf("%s for %s: version %s, %d resources", shortType(typ), c.node.GetId(), version, resources):
	default:
	}
	return c.reject[key]
}

var confRejection = &status.Status{Code: int32(codes.InvalidArgument), Message: "rejected by the test script"}

func (c *confClient) handleSotw(resp *discoveryv3.DiscoveryResponse) {
	typ := resp.GetTypeUrl()
	ts := c.types[typ]
	if ts == nil {
		c.fail(fmt.Errorf("got a %s response, never asked for", typ))
		return
	}
	ts.nonce = resp.GetNonce()
	if c.got(typ, resp.GetVersionInfo(), len(resp.GetResources())) {
		req := c.request(typ)
		req.ErrorDetail = confRejection
		c.sendSotw(req)
		return
	}
	if cache.ResourceRequiresFullStateInSotw(typ) {
		clear(ts.held)
	}
	for _, a := range resp.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			c.fail(fmt.Errorf("decoding a %s resource: %w", typ, err))
			return
		}
		// Envoy ignores what it did not ask for.
		if n := cache.GetResourceName(m); ts.wildcard || ts.names[n] {
			ts.held[n] = confHeld{msg: m, version: resp.GetVersionInfo()}
		}
	}
	ts.version, ts.answered = resp.GetVersionInfo(), true
	c.touchLocked()
	c.sendSotw(c.request(typ))
	c.followUp(typ)
}

func (c *confClient) handleDelta(resp *discoveryv3.DeltaDiscoveryResponse) {
	typ := resp.GetTypeUrl()
	ts := c.types[typ]
	if ts == nil {
		c.fail(fmt.Errorf("got a %s delta, never asked for", typ))
		return
	}
	ts.nonce = resp.GetNonce()
	if c.got(typ, resp.GetSystemVersionInfo(), len(resp.GetResources())+len(resp.GetRemovedResources())) {
		c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: ts.nonce, ErrorDetail: confRejection})
		return
	}
	for _, r := range resp.GetResources() {
		m, err := r.GetResource().UnmarshalNew()
		if err != nil {
			c.fail(fmt.Errorf("decoding %s %q: %w", typ, r.GetName(), err))
			return
		}
		if n := cache.GetResourceName(m); n != r.GetName() {
			c.fail(fmt.Errorf("delta resource named %q holds %s %q", r.GetName(), typ, n))
			return
		}
		if ts.wildcard || ts.names[r.GetName()] {
			ts.held[r.GetName()] = confHeld{msg: m, version: r.GetVersion()}
		}
	}
	for _, n := range resp.GetRemovedResources() {
		delete(ts.held, n)
	}
	ts.answered = true
	c.touchLocked()
	c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: ts.nonce})
	c.followUp(typ)
}

// followUp subscribes, as Envoy does after accepting clusters or listeners,
// to the load assignments and route configurations they name.
func (c *confClient) followUp(typ string) {
	if !c.follow {
		return
	}
	var dep string
	var want []string
	switch typ {
	case cdsURL:
		dep = edsURL
		for _, h := range c.types[typ].held {
			cl := h.msg.(*clusterv3.Cluster)
			if cl.GetType() != clusterv3.Cluster_EDS {
				continue
			}
			name := cl.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = cl.GetName()
			}
			want = append(want, name)
		}
	case ldsURL:
		dep = rdsURL
		for _, h := range c.types[typ].held {
			for _, fc := range h.msg.(*listenerv3.Listener).GetFilterChains() {
				for _, f := range fc.GetFilters() {
					m := &hcmv3.HttpConnectionManager{}
					if f.GetTypedConfig().UnmarshalTo(m) == nil && m.GetRds() != nil {
						want = append(want, m.GetRds().GetRouteConfigName())
					}
				}
			}
		}
	default:
		return
	}
	slices.Sort(want)
	want = slices.Compact(want)
	ts := c.types[dep]
	if ts == nil && len(want) == 0 {
		return // Envoy asks for nothing (an empty first request would be a wildcard)
	}
	if ts != nil && slices.Equal(ts.sortedNames(), want) {
		return
	}
	c.setSubscription(dep, false, want)
}
