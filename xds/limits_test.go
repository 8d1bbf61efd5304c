package xds_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

type acceptAll struct{}

func (acceptAll) EnsureGroup(translator.Proxy) error { return nil }
func (acceptAll) ReleaseGroup(translator.Proxy)      {}

// TestServerLimits: a request over MaxRequestBytes ends its stream with
// ResourceExhausted, and a node over MaxNodeBytes (kept for the stream's
// life) is refused with InvalidArgument; a client within the limits is
// served.
func TestServerLimits(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := xds.NewServer(ctx, xds.Config{Cache: xds.NewCache(nil), Groups: acceptAll{}, MaxRequestBytes: 256 << 10, DrainTimeout: time.Second})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)

	// send sends req on a new stream and returns the stream's outcome:
	// the error it ended with, or nil if it is still open after a
	// response or a moment (a valid first request to an empty cache gets
	// no response).
	send := func(req *discoveryv3.DiscoveryRequest) error {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer scancel()
		stream, err := ads.StreamAggregatedResources(sctx)
		if err != nil {
			return err
		}
		if err := stream.Send(req); err != nil {
			return err
		}
		_, err = stream.Recv()
		if status.Code(err) == codes.DeadlineExceeded {
			return nil // still open: accepted
		}
		return err
	}
	var names []string
	for i := range 12000 {
		names = append(names, fmt.Sprintf("service-with-a-long-name-%05d", i))
	}
	big := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n", Cluster: "web"}, TypeUrl: resource.EndpointType, ResourceNames: names}
	if err := send(big); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a request of over 256 KiB: %v, want ResourceExhausted", err)
	}
	md, err := structpb.NewStruct(map[string]any{"filler": strings.Repeat("x", xds.MaxNodeBytes)})
	if err != nil {
		t.Fatal(err)
	}
	fat := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n", Cluster: "web", Metadata: md}, TypeUrl: resource.ClusterType}
	if err := send(fat); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "node") {
		t.Errorf("a node of over %d bytes: %v, want InvalidArgument about the node", xds.MaxNodeBytes, err)
	}
	ok := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "n", Cluster: "web"}, TypeUrl: resource.ClusterType}
	if err := send(ok); err != nil {
		t.Errorf("a request within the limits: %v, want it accepted", err)
	}
}
