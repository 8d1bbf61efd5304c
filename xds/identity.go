package xds

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/sluice-mesh/sluice/translator"
)

// certIdentity is what a client certificate says its holder is.
type certIdentity struct {
	// spiffe are the SPIFFE IDs (URI SANs with the spiffe scheme), dns
	// the DNS SANs.
	spiffe, dns []string
}

// peerIdentity reads the verified client certificate of a stream, nil
// without one.
func peerIdentity(ctx context.Context) *certIdentity {
	if ctx == nil {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil
	}
	cert := info.State.PeerCertificates[0]
	id := &certIdentity{dns: cert.DNSNames}
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			id.spiffe = append(id.spiffe, u.String())
		}
	}
	return id
}

// names reports whether the certificate names service: a SPIFFE ID whose
// last path segment is the service (as in spiffe://domain/ns/NS/sa/NAME,
// where the service account is named after the service), or a DNS SAN
// that is the service's name, or whose first label is (NAME.NS.svc...).
// Only the first label: a certificate for a.ns.svc names a, not a
// service called a.ns.
func (id *certIdentity) names(service string) bool {
	for _, s := range id.spiffe {
		if i := strings.LastIndexByte(s, '/'); i >= 0 && s[i+1:] == service {
			return true
		}
	}
	for _, d := range id.dns {
		if first, _, _ := strings.Cut(d, "."); d == service || first == service {
			return true
		}
	}
	return false
}

func (id *certIdentity) String() string {
	return fmt.Sprintf("SPIFFE IDs %q, DNS names %q", id.spiffe, id.dns)
}

// checkIdentity refuses an Envoy that claims a service (node.cluster,
// sidecar or gateway) its client certificate does not name: with client
// certificates required, one workload's certificate must not fetch
// another's configuration. Proxyless gRPC clients and Envoys that name no
// service claim nothing beyond the mesh's outbound configuration.
func (t *Tracker) checkIdentity(s *streamState, p translator.Proxy) error {
	if !t.bindIdentity || p.Kind != translator.KindEnvoy || p.Service == "" {
		return nil
	}
	if s.certIDs == nil {
		return fmt.Errorf("node.cluster %q needs a client certificate that names it", p.Service)
	}
	if !s.certIDs.names(p.Service) {
		return fmt.Errorf("the client certificate (%s) does not name service %q (node.cluster)", s.certIDs, p.Service)
	}
	return nil
}
