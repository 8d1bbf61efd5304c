package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/sluice-mesh/sluice/translator"
)

// locRegistrar is a registrar whose registry knows the locality of some
// addresses; any other address has no instance, or instances that
// disagree.
type locRegistrar struct {
	groupRecorder
	at map[netip.Addr]translator.Locality
}

func (r *locRegistrar) LocalityAt(addr netip.Addr, _ string) (translator.Locality, bool) {
	loc, ok := r.at[addr]
	return loc, ok
}

// fromPeer is a stream context whose client connects from addr.
func fromPeer(ctx context.Context, addr string) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(addr), Port: 40000}})
}

func withLocality(n *corev3.Node, region, zone string) *corev3.Node {
	n.Locality = &corev3.Locality{Region: region, Zone: zone}
	return n
}

var (
	euA = translator.Locality{Region: "eu", Zone: "eu-a"}
	// atEuA is where the registry puts 10.0.0.1.
	atEuA = map[netip.Addr]translator.Locality{netip.MustParseAddr("10.0.0.1"): euA}
)

// TestTrackerLocalityFromRegistry: a client whose node names no locality
// is given the locality of the registry instance at its address, which
// makes its group key, and is kept on later requests; a node's own
// locality wins; an address the registry cannot place leaves the locality
// unknown.
func TestTrackerLocalityFromRegistry(t *testing.T) {
	rec := &locRegistrar{at: atEuA}
	tr := NewTracker(rec, slog.New(slog.DiscardHandler), nil, nil)
	ctx := context.Background()
	web := func(id string) *corev3.Node { return &corev3.Node{Id: id, Cluster: "web", UserAgentName: "envoy"} }
	for _, c := range []struct {
		name     string
		peer     string
		node     *corev3.Node
		key      string
		locality translator.Locality
		source   string
	}{
		{"registry", "10.0.0.1", web("reg"), "envoy/sidecar/web/loc=eu/eu-a", euA, "registry"},
		{"IPv4-mapped peer", "::ffff:10.0.0.1", web("mapped"), "envoy/sidecar/web/loc=eu/eu-a", euA, "registry"},
		{"node wins", "10.0.0.1", withLocality(web("own"), "us", "us-b"), "envoy/sidecar/web/loc=us/us-b", translator.Locality{Region: "us", Zone: "us-b"}, "node"},
		{"unknown address", "10.0.0.9", web("unknown"), "envoy/sidecar/web", translator.Locality{}, ""},
		{"gRPC client", "10.0.0.1", &corev3.Node{Id: "grpc", UserAgentName: "gRPC Go"}, "grpc/loc=eu/eu-a", euA, "registry"},
		{"no peer address", "", web("nopeer"), "envoy/sidecar/web", translator.Locality{}, ""},
	} {
		id := int64(len(tr.streams) + 1)
		sctx := ctx
		if c.peer != "" {
			sctx = fromPeer(ctx, c.peer)
		}
		tr.open(sctx, id, false)
		key, err := tr.requestSotw(id, &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: resource.ClusterType})
		if err != nil || key != c.key {
			t.Errorf("%s: first request: key %q, %v; want %q", c.name, key, err, c.key)
			continue
		}
		// A later request repeating the node (a copy, as a client that
		// sends it every time does) is the same identity: accepted, and
		// in the same group.
		again := &corev3.Node{Id: c.node.Id, Cluster: c.node.Cluster, UserAgentName: c.node.UserAgentName, Locality: c.node.Locality}
		if key, err := tr.requestSotw(id, &discoveryv3.DiscoveryRequest{Node: again, TypeUrl: resource.EndpointType}); err != nil || key != c.key {
			t.Errorf("%s: second request: key %q, %v; want %q", c.name, key, err, c.key)
		}
		var got *ProxyStatus
		for _, p := range tr.Proxies() {
			if p.NodeID == c.node.Id {
				got = &p
			}
		}
		if got == nil || got.Group != c.key || got.Proxy.Locality != c.locality || got.LocalitySource != c.source {
			t.Errorf("%s: admin view %+v, want group %q, locality %+v from %q", c.name, got, c.key, c.locality, c.source)
		}
	}
	if want := []string{"envoy/sidecar/web/loc=eu/eu-a", "envoy/sidecar/web/loc=eu/eu-a", "envoy/sidecar/web/loc=us/us-b", "envoy/sidecar/web", "grpc/loc=eu/eu-a", "envoy/sidecar/web"}; strings.Join(rec.ensured, " ") != strings.Join(want, " ") {
		t.Errorf("groups ensured %q, want %q", rec.ensured, want)
	}

	// A stream placed by the registry may not then claim a locality of
	// its own: that is another identity.
	_, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: withLocality(web("reg"), "eu", "eu-a"), TypeUrl: resource.ClusterType})
	if gs, _ := grpcstatus.FromError(err); gs.Code() != codes.InvalidArgument {
		t.Errorf("a node that changes its locality on an open stream: %v, want InvalidArgument", err)
	}

	// The group with the registry's locality is released with its last
	// stream.
	tr.closed(1, false)
	tr.closed(2, false)
	if len(rec.released) != 1 || rec.released[0] != "envoy/sidecar/web/loc=eu/eu-a" {
		t.Errorf("released %q, want the registry-placed group", rec.released)
	}
}

// TestStreamServesTheRegistryLocalityGroup: a stream is served the
// snapshot of the group the tracker admitted it to, registry locality
// included, not the group its node alone would name.
func TestStreamServesTheRegistryLocalityGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := NewCache(slog.New(slog.DiscardHandler))
	tr := NewTracker(&locRegistrar{at: atEuA}, slog.New(slog.DiscardHandler), nil, nil)
	srv := adsService{&Server{Cache: c, Tracker: tr, ctx: ctx}}
	publish := func(key, cluster string) {
		t.Helper()
		// Versions are content hashes: distinct content, distinct versions.
		snap, err := cache.NewSnapshot(cluster, map[resource.Type][]types.Resource{
			resource.ClusterType: {&clusterv3.Cluster{Name: cluster}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetSnapshot(ctx, key, snap); err != nil {
			t.Fatal(err)
		}
	}
	publish("envoy/sidecar/web", "no-locality")
	publish("envoy/sidecar/web/loc=eu/eu-a", "eu-a")

	sctx, scancel := context.WithCancel(fromPeer(ctx, "10.0.0.1"))
	defer scancel()
	st := &certADSStream{ctx: sctx, reqs: make(chan *discoveryv3.DiscoveryRequest, 4), resp: make(chan *discoveryv3.DiscoveryResponse, 4)}
	done := make(chan error, 1)
	go func() { done <- srv.StreamAggregatedResources(st) }()
	st.reqs <- &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n", Cluster: "web", UserAgentName: "envoy"}, TypeUrl: resource.ClusterType}
	var nonce string
	select {
	case r := <-st.resp:
		nonce = r.GetNonce()
		var cl clusterv3.Cluster
		if len(r.GetResources()) != 1 || r.GetResources()[0].UnmarshalTo(&cl) != nil || cl.GetName() != "eu-a" {
			t.Fatalf("the stream was sent %v, want cluster eu-a of its locality's group", r.GetResources())
		}
	case err := <-done:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("nothing sent")
	}
	// The second request, without a node as Envoy sends it, is an ACK of
	// the same stream.
	st.reqs <- &discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: "eu-a", ResponseNonce: nonce}
	select {
	case err := <-done:
		t.Fatalf("stream ended after the second request: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if got := tr.Proxies()[0].Types[resource.ClusterType].Acked; got != "eu-a" {
		t.Errorf("the ACK was recorded as %q, want eu-a", got)
	}
}

// awareRegistrar is a locRegistrar that says whether localities matter.
type awareRegistrar struct {
	locRegistrar
	aware bool
}

func (r *awareRegistrar) LocalityAware() bool { return r.aware }

// TestTrackerRelocateLimit: Relocate ends only streams whose group would
// differ now, at most limit of them per call, each once, with
// UNAVAILABLE.
func TestTrackerRelocateLimit(t *testing.T) {
	rec := &awareRegistrar{locRegistrar: locRegistrar{at: atEuA}}
	tr := NewTracker(rec, slog.New(slog.DiscardHandler), nil, nil)
	causes := map[int64]*error{}
	open := func(id int64, node *corev3.Node) {
		ctx, cancel := context.WithCancelCause(fromPeer(context.Background(), "10.0.0.1"))
		var cause error
		causes[id] = &cause
		tr.openCancelable(ctx, id, false, func(err error) { cause = err; cancel(err) })
		if _, err := tr.requestSotw(id, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
			t.Fatal(err)
		}
	}
	for id := range int64(3) {
		open(id+1, withLocality(&corev3.Node{Id: fmt.Sprint("zoned-", id), Cluster: "web", UserAgentName: "envoy"}, "us", "us-b"))
	}
	// A client of no locality, at an address the registry cannot place,
	// is in the same group either way.
	ctx := fromPeer(context.Background(), "10.0.0.9")
	tr.openCancelable(ctx, 4, false, func(error) { t.Error("the unplaceable stream was ended") })
	if _, err := tr.requestSotw(4, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "nowhere", Cluster: "web", UserAgentName: "envoy"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if n := tr.Relocate(10); n != 0 {
		t.Fatalf("nothing changed, yet Relocate ended %d streams", n)
	}
	rec.aware = true // a locality policy arrives
	if n := tr.Relocate(2); n != 2 {
		t.Errorf("Relocate(2) ended %d streams, want 2", n)
	}
	if n := tr.Relocate(2); n != 1 {
		t.Errorf("the next Relocate(2) ended %d streams, want the last 1", n)
	}
	if n := tr.Relocate(2); n != 0 {
		t.Errorf("a third Relocate ended %d streams, want none (each once)", n)
	}
	for id, cause := range causes {
		if grpcstatus.Code(*cause) != codes.Unavailable {
			t.Errorf("stream %d ended with %v, want UNAVAILABLE", id, *cause)
		}
	}
}
