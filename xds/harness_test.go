package xds_test

// Test harness for the in-process ADS feature tests in ads_test.go: a real
// snapshot loop and xDS server wired as in production, a gRPC connection to
// the server on 127.0.0.1:0, and minimal raw SotW and delta ADS clients.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

const (
	// recvTimeout bounds every wait for a message that must arrive; it only
	// matters when a test is about to fail.
	recvTimeout = 5 * time.Second
	// quietWindow is how long a test watches a stream to conclude that no
	// message is coming. Waiting for an absence cannot be done any other way;
	// every push the tests expect arrives within milliseconds, so half a
	// second is ample, and each use is preceded by a positive signal that the
	// loop has finished the work that could have produced a message.
	quietWindow = 500 * time.Millisecond
)

type harness struct {
	t      *testing.T
	ctx    context.Context
	events chan sources.Event
	loop   *snapshot.Loop
	srv    *xds.Server
	reg    *prometheus.Registry
	conn   *grpc.ClientConn
	ads    discoveryv3.AggregatedDiscoveryServiceClient
}

// newHarness starts a loop with the single source "file", an xDS server on a
// loopback port, and a client connection to it; everything stops at cleanup.
func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWith(t, harnessOptions{})
}

// harnessOptions change what newHarnessWith starts.
type harnessOptions struct {
	// policies, when set, feeds the loop policy updates (the first must
	// come before the loop builds anything).
	policies chan watch.Update
	// relocateInterval is the server's RelocateInterval.
	relocateInterval time.Duration
}

// newHarnessWith is newHarness with options.
func newHarnessWith(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() && os.Getenv("SLUICE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	reg := prometheus.NewRegistry()
	// Wired as cmd/sluice does: the loop publishes into the cache the
	// server serves from.
	snapshots := xds.NewCache(log)
	loop := snapshot.NewLoop(snapshot.Config{
		Sources:    []string{"file"},
		Translator: translator.New(),
		Publisher:  snapshots,
		HoldOff:    10 * time.Millisecond,
		Log:        log,
		Metrics:    snapshot.NewMetrics(reg),
		Policies:   o.policies,
	})
	srv := xds.NewServer(ctx, xds.Config{
		Cache:        snapshots,
		Groups:       loop,
		Log:          log,
		Metrics:      xds.NewMetrics(reg),
		DrainTimeout: time.Second,

		RelocateInterval: o.relocateInterval,
	})

	events := make(chan sources.Event)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = loop.Run(ctx, events) }()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, lis); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		wg.Wait()
	})
	return &harness{
		t: t, ctx: ctx, events: events, loop: loop, srv: srv, reg: reg,
		conn: conn, ads: discoveryv3.NewAggregatedDiscoveryServiceClient(conn),
	}
}

// setCatalog sends st as the "file" source's new state.
func (h *harness) setCatalog(st sources.State) {
	h.t.Helper()
	st.Normalize("file")
	select {
	case h.events <- sources.Event{Source: "file", State: &st}:
	case <-time.After(recvTimeout):
		h.t.Fatal("snapshot loop did not take the event")
	}
}

// syncCatalog sets the first catalog and waits until the loop is ready.
func (h *harness) syncCatalog(st sources.State) {
	h.t.Helper()
	h.setCatalog(st)
	waitFor(h.t, "loop ready", h.loop.Ready)
}

// builds reads sluice_snapshot_builds_total{result=result}.
func (h *harness) builds(result string) float64 {
	h.t.Helper()
	return counterValue(h.t, h.reg, "sluice_snapshot_builds_total", "result", result)
}

// setCatalogAndWait sets st and waits until the loop has built it for every
// group, observed as the builds counter for result growing by want.
func (h *harness) setCatalogAndWait(st sources.State, result string, want float64) {
	h.t.Helper()
	before := h.builds(result)
	h.setCatalog(st)
	waitFor(h.t, "snapshot build ("+result+")", func() bool { return h.builds(result) >= before+want })
}

// proxy returns the tracker's view of the stream of node id.
func (h *harness) proxy(nodeID string) xds.ProxyStatus {
	h.t.Helper()
	for _, p := range h.srv.Tracker.Proxies() {
		if p.NodeID == nodeID {
			return p
		}
	}
	h.t.Fatalf("tracker knows no proxy %q; it has %+v", nodeID, h.srv.Tracker.Proxies())
	return xds.ProxyStatus{}
}

// node returns the tracker's detailed view (Tracker.Node) of the one
// stream of node id.
func (h *harness) node(nodeID string) xds.ProxyStatus {
	h.t.Helper()
	ps := h.srv.Tracker.Node(nodeID)
	if len(ps) != 1 {
		h.t.Fatalf("tracker knows %d streams of node %q, want 1", len(ps), nodeID)
	}
	return ps[0]
}

func counterValue(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// waitFor polls cond until it holds, failing the test after recvTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(recvTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Nodes.

func envoyNode(id string) *corev3.Node {
	return &corev3.Node{Id: id, Cluster: "web", UserAgentName: "envoy"}
}

func grpcNode(id string) *corev3.Node {
	return &corev3.Node{Id: id, UserAgentName: "gRPC Go"}
}

func nodeWithMetadata(t *testing.T, id string, md map[string]any) *corev3.Node {
	t.Helper()
	s, err := structpb.NewStruct(md)
	if err != nil {
		t.Fatal(err)
	}
	n := envoyNode(id)
	n.Metadata = s
	return n
}

// State-of-the-world client.

type sotwClient struct {
	t      *testing.T
	node   *corev3.Node
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	resps  chan *discoveryv3.DiscoveryResponse
	done   chan struct{} // closed when Recv fails; err holds why
	err    error
}

// pump hands what recv returns to out until it fails, then records why in
// *errp and closes done.
func pump[T any](recv func() (T, error), out chan<- T, done chan struct{}, errp *error) {
	defer close(done)
	for {
		resp, err := recv()
		if err != nil {
			*errp = err
			return
		}
		out <- resp
	}
}

func (h *harness) sotw(node *corev3.Node) *sotwClient {
	h.t.Helper()
	ctx, cancel := context.WithCancel(h.ctx)
	h.t.Cleanup(cancel)
	stream, err := h.ads.StreamAggregatedResources(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	c := &sotwClient{t: h.t, node: node, stream: stream, resps: make(chan *discoveryv3.DiscoveryResponse, 100), done: make(chan struct{})}
	go pump(stream.Recv, c.resps, c.done, &c.err)
	return c
}

func (c *sotwClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	req.Node = c.node
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("sending %s request: %v", req.GetTypeUrl(), err)
	}
}

// request subscribes to typeURL (names empty: wildcard).
func (c *sotwClient) request(typeURL string, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
}

// ack accepts resp, keeping the subscription to names.
func (c *sotwClient) ack(resp *discoveryv3.DiscoveryResponse, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), ResourceNames: names,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
	})
}

// nack rejects resp; accepted is the last version the client accepted.
func (c *sotwClient) nack(resp *discoveryv3.DiscoveryResponse, accepted, msg string, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), ResourceNames: names,
		VersionInfo: accepted, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: msg},
	})
}

// recv returns the next response, which must be of type typeURL.
func (c *sotwClient) recv(typeURL string) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case resp := <-c.resps:
		if resp.GetTypeUrl() != typeURL {
			c.t.Fatalf("got a %s response (version %s), want %s", resp.GetTypeUrl(), resp.GetVersionInfo(), typeURL)
		}
		return resp
	case <-c.done:
		c.t.Fatalf("stream failed while waiting for %s: %v", typeURL, c.err)
	case <-time.After(recvTimeout):
		c.t.Fatalf("no %s response within %v", typeURL, recvTimeout)
	}
	return nil
}

// expectNothing asserts that no response arrives within window (see
// quietWindow); with window 0 it checks that none is pending.
func (c *sotwClient) expectNothing(window time.Duration) {
	c.t.Helper()
	select {
	case resp := <-c.resps:
		c.t.Fatalf("unexpected %s response, version %s, %d resources", resp.GetTypeUrl(), resp.GetVersionInfo(), len(resp.GetResources()))
	case <-c.done:
		c.t.Fatalf("stream failed: %v", c.err)
	case <-time.After(window):
	}
	select {
	case resp := <-c.resps:
		c.t.Fatalf("unexpected %s response, version %s, %d resources", resp.GetTypeUrl(), resp.GetVersionInfo(), len(resp.GetResources()))
	default:
	}
}

// streamErr waits for the stream to fail and returns the error.
func (c *sotwClient) streamErr() error {
	c.t.Helper()
	select {
	case <-c.done:
		return c.err
	case resp := <-c.resps:
		c.t.Fatalf("got a %s response, want the stream to fail", resp.GetTypeUrl())
	case <-time.After(recvTimeout):
		c.t.Fatal("stream did not fail")
	}
	return nil
}

// Delta client.

type deltaClient struct {
	t      *testing.T
	node   *corev3.Node
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	resps  chan *discoveryv3.DeltaDiscoveryResponse
	done   chan struct{}
	err    error
}

func (h *harness) delta(node *corev3.Node) *deltaClient {
	h.t.Helper()
	ctx, cancel := context.WithCancel(h.ctx)
	h.t.Cleanup(cancel)
	stream, err := h.ads.DeltaAggregatedResources(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	c := &deltaClient{t: h.t, node: node, stream: stream, resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 100), done: make(chan struct{})}
	go pump(stream.Recv, c.resps, c.done, &c.err)
	return c
}

func (c *deltaClient) send(req *discoveryv3.DeltaDiscoveryRequest) {
	c.t.Helper()
	req.Node = c.node
	if err := c.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		c.t.Fatalf("sending %s request: %v", req.GetTypeUrl(), err)
	}
}

func (c *deltaClient) subscribe(typeURL string, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

func (c *deltaClient) ack(resp *discoveryv3.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
}

func (c *deltaClient) nack(resp *discoveryv3.DeltaDiscoveryResponse, msg string) {
	c.t.Helper()
	c.send(&discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: msg},
	})
}

func (c *deltaClient) recv(typeURL string) *discoveryv3.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case resp := <-c.resps:
		if resp.GetTypeUrl() != typeURL {
			c.t.Fatalf("got a %s delta (resources %v, removed %v), want %s", resp.GetTypeUrl(), deltaNames(resp), resp.GetRemovedResources(), typeURL)
		}
		return resp
	case <-c.done:
		c.t.Fatalf("stream failed while waiting for %s: %v", typeURL, c.err)
	case <-time.After(recvTimeout):
		c.t.Fatalf("no %s delta within %v", typeURL, recvTimeout)
	}
	return nil
}

// recvTypes collects one response for each of typeURLs, in any order.
func (c *deltaClient) recvTypes(typeURLs ...string) map[string]*discoveryv3.DeltaDiscoveryResponse {
	c.t.Helper()
	want := map[string]bool{}
	for _, u := range typeURLs {
		want[u] = true
	}
	got := map[string]*discoveryv3.DeltaDiscoveryResponse{}
	timeout := time.After(recvTimeout)
	for len(got) < len(want) {
		select {
		case resp := <-c.resps:
			u := resp.GetTypeUrl()
			if !want[u] || got[u] != nil {
				c.t.Fatalf("unexpected %s delta (resources %v, removed %v); want one each of %v", u, deltaNames(resp), resp.GetRemovedResources(), typeURLs)
			}
			got[u] = resp
		case <-c.done:
			c.t.Fatalf("stream failed: %v", c.err)
		case <-timeout:
			c.t.Fatalf("got deltas for %d of %v within %v", len(got), typeURLs, recvTimeout)
		}
	}
	return got
}

// expectNothing is sotwClient.expectNothing for delta.
func (c *deltaClient) expectNothing(window time.Duration) {
	c.t.Helper()
	select {
	case resp := <-c.resps:
		c.t.Fatalf("unexpected %s delta: resources %v, removed %v", resp.GetTypeUrl(), deltaNames(resp), resp.GetRemovedResources())
	case <-c.done:
		c.t.Fatalf("stream failed: %v", c.err)
	case <-time.After(window):
	}
	select {
	case resp := <-c.resps:
		c.t.Fatalf("unexpected %s delta: resources %v, removed %v", resp.GetTypeUrl(), deltaNames(resp), resp.GetRemovedResources())
	default:
	}
}

func (c *deltaClient) streamErr() error {
	c.t.Helper()
	select {
	case <-c.done:
		return c.err
	case resp := <-c.resps:
		c.t.Fatalf("got a %s delta, want the stream to fail", resp.GetTypeUrl())
	case <-time.After(recvTimeout):
		c.t.Fatal("stream did not fail")
	}
	return nil
}

// Decoding.

// unpack decodes SotW resources into messages of type M, keyed by name.
func unpack[M proto.Message](t *testing.T, anys []*anypb.Any) map[string]M {
	t.Helper()
	out := map[string]M{}
	for _, a := range anys {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("decoding %s: %v", a.GetTypeUrl(), err)
		}
		typed, ok := m.(M)
		if !ok {
			t.Fatalf("resource is a %T", m)
		}
		out[cache.GetResourceName(typed)] = typed
	}
	return out
}

// unpackDelta decodes delta resources into messages of type M, keyed by the
// name the delta response gives them.
func unpackDelta[M proto.Message](t *testing.T, resp *discoveryv3.DeltaDiscoveryResponse) map[string]M {
	t.Helper()
	anys := make([]*anypb.Any, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		anys = append(anys, r.GetResource())
	}
	out := unpack[M](t, anys)
	for _, r := range resp.GetResources() {
		if _, ok := out[r.GetName()]; !ok {
			t.Fatalf("delta resource named %q does not hold a resource of that name", r.GetName())
		}
	}
	return out
}

func names[M any](m map[string]M) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func deltaNames(resp *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, r := range resp.GetResources() {
		out = append(out, r.GetName())
	}
	sort.Strings(out)
	return out
}
