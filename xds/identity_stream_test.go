package xds

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net/url"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// certADSStream is an in-memory ADS stream whose context carries a client
// certificate.
type certADSStream struct {
	grpc.ServerStream
	ctx  context.Context
	reqs chan *discoveryv3.DiscoveryRequest
	resp chan *discoveryv3.DiscoveryResponse
}

func (s *certADSStream) Context() context.Context     { return s.ctx }
func (s *certADSStream) SetHeader(metadata.MD) error  { return nil }
func (s *certADSStream) SendHeader(metadata.MD) error { return nil }
func (s *certADSStream) SetTrailer(metadata.MD)       {}
func (s *certADSStream) SendMsg(any) error            { return nil }
func (s *certADSStream) Send(r *discoveryv3.DiscoveryResponse) error {
	s.resp <- r
	return nil
}

// RecvMsg is how the server receives SotW requests (see sotwRequest).
func (s *certADSStream) RecvMsg(m any) error {
	r, err := s.Recv()
	if err != nil {
		return err
	}
	req := m.(*sotwRequest)
	proto.Merge(&req.DiscoveryRequest, r)
	req.names = requestNames{decoded: r.GetResourceNames()}
	return nil
}

func (s *certADSStream) Recv() (*discoveryv3.DiscoveryRequest, error) {
	select {
	case r := <-s.reqs:
		return r, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// TestTrackerRefusesNodeChangeOnStream: a request may carry a node after
// the first; the stream keeps the group it was admitted to.
// A client whose certificate names "frontend", admitted as frontend, that
// names "payments" in a later request must be refused, not served
// payments' snapshot (it would also bypass the group limits).
func TestTrackerRefusesNodeChangeOnStream(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := NewCache(slog.New(slog.DiscardHandler))
	tr := NewTracker(&groupRecorder{}, slog.New(slog.DiscardHandler), nil, nil)
	tr.bindIdentity = true
	srv := adsService{&Server{Cache: c, Tracker: tr, ctx: ctx}}

	payments := &corev3.Node{Id: "evil", Cluster: "payments"}
	snap, err := cache.NewSnapshot("v1", map[resource.Type][]types.Resource{
		resource.ClusterType: {&clusterv3.Cluster{Name: "payments-private"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetSnapshot(ctx, nodeKey(payments), snap); err != nil {
		t.Fatal(err)
	}

	cert := &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: "mesh.local", Path: "/ns/default/sa/frontend"}}}
	sctx, scancel := context.WithCancel(withClientCert(cert))
	defer scancel()
	st := &certADSStream{ctx: sctx, reqs: make(chan *discoveryv3.DiscoveryRequest, 4), resp: make(chan *discoveryv3.DiscoveryResponse, 4)}
	done := make(chan error, 1)
	go func() { done <- srv.StreamAggregatedResources(st) }()

	// First request: the certificate's own service; accepted.
	st.reqs <- &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "evil", Cluster: "frontend"}, TypeUrl: resource.ClusterType}
	// Second request: another service's identity.
	st.reqs <- &discoveryv3.DiscoveryRequest{Node: payments, TypeUrl: resource.ClusterType}

	select {
	case r := <-st.resp:
		t.Fatalf("a client whose certificate names frontend was sent payments' config: version %q, %d resources", r.GetVersionInfo(), len(r.GetResources()))
	case err := <-done:
		t.Logf("stream ended: %v (refused: good)", err)
	case <-time.After(time.Second):
		// nothing sent: good
	}
}
