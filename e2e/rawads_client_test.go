package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// adsTypes are the types an Envoy sidecar subscribes to, in the order it
// asks for them.
var adsTypes = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// adsDialOptions connect like a proxy that retries at once: gRPC's
// reconnect backoff from 100 ms, capped at 1 s, so that after a restart of
// sluice every client is back within about a second (the herd). window, if
// not zero, fixes HTTP/2's flow-control windows (no dynamic growth), so a
// client that stops reading blocks the server's sends after window bytes.
func adsDialOptions(window int32) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if window > 0 {
		opts = append(opts, grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	}
	return opts
}

// sidecarNode is the node of an Envoy sidecar of service.
func sidecarNode(id, service string) *corev3.Node {
	return &corev3.Node{Id: id, Cluster: service, UserAgentName: "envoy"}
}

// adsClient is a raw state-of-the-world ADS client that behaves as Envoy's
// subscriptions do: CDS and LDS as wildcards, EDS for the clusters it
// holds, RDS for the route configurations its listeners name; it ACKs
// every response. When its stream breaks it opens a new one on the same
// connection (which gRPC re-establishes), asking again for what it held
// with the versions it held.
type adsClient struct {
	node *corev3.Node
	conn *grpc.ClientConn
	// readDelay makes a slow reader: it waits this long before each Recv.
	readDelay time.Duration

	responses atomic.Int64 // responses received, over all streams
	streams   atomic.Int64 // streams opened

	mu       sync.Mutex
	versions map[string]string
	names    map[string][]string // EDS and RDS names held
	eds      map[string]*endpointv3.ClusterLoadAssignment
	// syncedAt is when the current stream had answered all four types.
	syncedAt time.Time
	lastErr  error
}

// startADSClient connects a client to addr and runs it until the test ends.
func startADSClient(t *testing.T, addr string, node *corev3.Node, readDelay time.Duration) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, adsDialOptions(0)...)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{node: node, conn: conn, readDelay: readDelay,
		versions: map[string]string{}, names: map[string][]string{}, eds: map[string]*endpointv3.ClusterLoadAssignment{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = conn.Close()
	})
	return c
}

func (c *adsClient) run(ctx context.Context) {
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn)
	for ctx.Err() == nil {
		err := c.stream(ctx, ads)
		c.mu.Lock()
		c.syncedAt, c.lastErr = time.Time{}, err
		c.mu.Unlock()
		// A stream refused at once (ResourceExhausted, say) is retried
		// after a pause, as Envoy backs off.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stream runs one ADS stream until it breaks.
func (c *adsClient) stream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := ads.StreamAggregatedResources(sctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	c.streams.Add(1)
	nonces := map[string]string{}
	requested := map[string][]string{}
	answered := map[string]bool{}
	send := func(typ string, names []string) error {
		c.mu.Lock()
		v := c.versions[typ]
		c.mu.Unlock()
		requested[typ] = names
		return stream.Send(&discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: typ, ResourceNames: names,
			VersionInfo: v, ResponseNonce: nonces[typ]})
	}
	c.mu.Lock()
	held := map[string][]string{resource.EndpointType: c.names[resource.EndpointType], resource.RouteType: c.names[resource.RouteType]}
	c.mu.Unlock()
	for _, typ := range adsTypes {
		if typ == resource.ClusterType || typ == resource.ListenerType || len(held[typ]) > 0 {
			if err := send(typ, held[typ]); err != nil {
				return err
			}
		}
	}
	for {
		if c.readDelay > 0 {
			select {
			case <-sctx.Done():
				return sctx.Err()
			case <-time.After(c.readDelay):
			}
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		c.responses.Add(1)
		typ := resp.GetTypeUrl()
		nonces[typ] = resp.GetNonce()
		// The names to ask for next, for the type this response names.
		var follow string
		var names []string
		switch typ {
		case resource.ClusterType:
			follow, names, err = resource.EndpointType, edsNames(resp.GetResources()), nil
		case resource.ListenerType:
			follow = resource.RouteType
			names, err = rdsNames(resp.GetResources())
		case resource.EndpointType:
			err = c.keepEndpoints(resp.GetResources())
		}
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.versions[typ] = resp.GetVersionInfo()
		if follow != "" {
			c.names[follow] = names
		}
		c.mu.Unlock()
		if err := send(typ, requested[typ]); err != nil { // the ACK
			return err
		}
		if follow != "" && !slices.Equal(requested[follow], names) {
			if err := send(follow, names); err != nil {
				return err
			}
		}
		answered[typ] = true
		if len(answered) == len(adsTypes) {
			c.mu.Lock()
			if c.syncedAt.IsZero() {
				c.syncedAt = time.Now()
			}
			c.mu.Unlock()
		}
	}
}

func (c *adsClient) keepEndpoints(res []*anypb.Any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range res {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := a.UnmarshalTo(cla); err != nil {
			return err
		}
		c.eds[cla.GetClusterName()] = cla
	}
	return nil
}

// edsNames lists the load assignments the EDS clusters among res need.
func edsNames(res []*anypb.Any) []string {
	var out []string
	for _, a := range res {
		cl := &clusterv3.Cluster{}
		if a.UnmarshalTo(cl) != nil || cl.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		name := cl.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = cl.GetName()
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// rdsNames lists the route configurations the listeners among res name.
func rdsNames(res []*anypb.Any) ([]string, error) {
	seen := map[string]bool{}
	for _, a := range res {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			return nil, err
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(hcm) == nil && hcm.GetRds().GetRouteConfigName() != "" {
					seen[hcm.GetRds().GetRouteConfigName()] = true
				}
			}
		}
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// synced reports when the current stream had all four types answered.
func (c *adsClient) synced() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.syncedAt, !c.syncedAt.IsZero()
}

// held returns the names the client holds of an xDS type.
func (c *adsClient) held(typ string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.names[typ])
}

// endpoints lists the healthy addresses of a cluster's load assignment, sorted.
func (c *adsClient) endpoints(cluster string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.eds[cluster].GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if e.GetHealthStatus() != corev3.HealthStatus_HEALTHY && e.GetHealthStatus() != corev3.HealthStatus_UNKNOWN {
				continue
			}
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
		}
	}
	sort.Strings(out)
	return out
}

// edsBytes is the encoded size of the load assignments the client holds.
func (c *adsClient) edsBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, cla := range c.eds {
		n += proto.Size(cla)
	}
	return n
}

// errNotSynced is what waitSynced reports about a client still syncing.
var errNotSynced = errors.New("not synced")

func (c *adsClient) syncErr() error {
	if _, ok := c.synced(); ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr != nil {
		return fmt.Errorf("%w (last stream error: %w)", errNotSynced, c.lastErr)
	}
	return errNotSynced
}

// stuckADS opens a stream on its own connection with fixed 64 KiB
// flow-control windows, subscribes to every cluster and to the load
// assignments names, and never reads: a proxy that hangs. It stays so until
// the test ends.
func stuckADS(t *testing.T, addr string, node *corev3.Node, names []string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, adsDialOptions(64<<10)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		_ = conn.Close()
	})
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*discoveryv3.DiscoveryRequest{
		{Node: node, TypeUrl: resource.ClusterType},
		{Node: node, TypeUrl: resource.EndpointType, ResourceNames: names},
		{Node: node, TypeUrl: resource.ListenerType},
	} {
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
}
