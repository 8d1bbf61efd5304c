package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// withClientCert is a stream context whose peer presented cert.
func withClientCert(cert *x509.Certificate) context.Context {
	info := credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: info})
}

// TestTrackerBindsIdentityToCertificate: with client certificates
// required, an Envoy may claim (node.cluster, as sidecar or gateway) only a
// service its certificate names, by SPIFFE ID or DNS name; a claim of
// another service is refused with PermissionDenied. Proxyless gRPC clients
// and Envoys that claim no service are not affected.
func TestTrackerBindsIdentityToCertificate(t *testing.T) {
	spiffe := &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: "mesh.local", Path: "/ns/default/sa/frontend"}}}
	dns := &x509.Certificate{DNSNames: []string{"frontend.default.svc.cluster.local"}}
	other := &x509.Certificate{DNSNames: []string{"frontend-admin"}, URIs: []*url.URL{{Scheme: "https", Host: "x", Path: "/payments"}}}
	gateway, _ := structpb.NewStruct(map[string]any{"role": "gateway"})
	grpcClient, _ := structpb.NewStruct(map[string]any{"proxy_type": "grpc"})
	for _, c := range []struct {
		name string
		ctx  context.Context
		node *corev3.Node
		want codes.Code
	}{
		{"SPIFFE ID names the service", withClientCert(spiffe), &corev3.Node{Id: "a", Cluster: "frontend"}, codes.OK},
		{"DNS name names the service", withClientCert(dns), &corev3.Node{Id: "a", Cluster: "frontend"}, codes.OK},
		{"claims another service", withClientCert(spiffe), &corev3.Node{Id: "a", Cluster: "payments"}, codes.PermissionDenied},
		{"claims another service's gateway", withClientCert(spiffe), &corev3.Node{Id: "a", Cluster: "payments", Metadata: gateway}, codes.PermissionDenied},
		{"a name that only starts like the service", withClientCert(other), &corev3.Node{Id: "a", Cluster: "frontend"}, codes.PermissionDenied},
		// frontend.default.svc... names frontend, not a service that
		// happens to be called frontend.default.
		{"DNS name's first labels", withClientCert(dns), &corev3.Node{Id: "a", Cluster: "frontend.default"}, codes.PermissionDenied},
		{"DNS name exactly a dotted service", withClientCert(&x509.Certificate{DNSNames: []string{"frontend.default"}}), &corev3.Node{Id: "a", Cluster: "frontend.default"}, codes.OK},
		{"an https URI is not an identity", withClientCert(other), &corev3.Node{Id: "a", Cluster: "payments"}, codes.PermissionDenied},
		{"no certificate", context.Background(), &corev3.Node{Id: "a", Cluster: "frontend"}, codes.PermissionDenied},
		{"no service claimed", withClientCert(spiffe), &corev3.Node{Id: "a"}, codes.OK},
		{"proxyless gRPC", withClientCert(spiffe), &corev3.Node{Id: "a", Cluster: "payments", Metadata: grpcClient}, codes.OK},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := NewTracker(&groupRecorder{}, slog.New(slog.DiscardHandler), nil, nil)
			tr.bindIdentity = true
			tr.open(c.ctx, 1, false)
			_, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: c.node, TypeUrl: resource.ClusterType})
			if got := grpcstatus.Code(err); got != c.want {
				t.Fatalf("%v, want %v", err, c.want)
			}
			if c.want == codes.PermissionDenied && !strings.Contains(err.Error(), c.node.GetCluster()) {
				t.Errorf("the refusal does not name the claimed service: %v", err)
			}
		})
	}
	// Without client certificates required, nothing is checked.
	tr := NewTracker(&groupRecorder{}, slog.New(slog.DiscardHandler), nil, nil)
	tr.open(context.Background(), 1, false)
	if _, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "a", Cluster: "payments"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatalf("without mTLS: %v", err)
	}
}
