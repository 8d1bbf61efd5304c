package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// testPKI writes a CA, a server certificate for sluice.test and 127.0.0.1,
// and a client certificate, all signed by the CA, into dir.
type testPKI struct{ CA, ServerCert, ServerKey, ClientCert, ClientKey string }

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, usage x509.ExtKeyUsage, uris ...*url.URL) ([]byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "sluice.test"},
			DNSNames: []string{"sluice.test"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, URIs: uris,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der, kd
	}
	sc, sk := leaf(2, x509.ExtKeyUsageServerAuth)
	// The client's certificate names the service its Envoy fronts: sluice
	// lets it claim that service only.
	cc, ck := leaf(3, x509.ExtKeyUsageClientAuth, &url.URL{Scheme: "spiffe", Host: "sluice.test", Path: "/ns/default/sa/frontend"})
	return testPKI{
		CA:         write("ca.crt", "CERTIFICATE", caDER),
		ServerCert: write("server.crt", "CERTIFICATE", sc), ServerKey: write("server.key", "EC PRIVATE KEY", sk),
		ClientCert: write("client.crt", "CERTIFICATE", cc), ClientKey: write("client.key", "EC PRIVATE KEY", ck),
	}
}

// TestEnvoyOverMutualTLS: sluice serves xDS over TLS requiring client
// certificates; an Envoy bootstrapped with `sluice bootstrap --xds-ca
// --xds-cert --xds-key` gets its config and carries traffic, a client
// without a certificate gets nothing, and a client whose certificate names
// frontend is refused (PermissionDenied) when it claims another service.
func TestEnvoyOverMutualTLS(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	pki := newTestPKI(t)
	bs := startHTTPBackends(t, 1)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registry("user-service", instance(bs[0].addr, "")))
	s := startSluice(t, "--registry-file", reg,
		"--xds-tls-cert", pki.ServerCert, "--xds-tls-key", pki.ServerKey, "--xds-tls-client-ca", pki.CA)

	e := startEnvoy(t, s, "frontend", "frontend-tls",
		"--xds-ca", pki.CA, "--xds-cert", pki.ClientCert, "--xds-key", pki.ClientKey, "--xds-server-name", "sluice.test")
	envoyWaitOnly(t, e, "user-service", "http-0")

	// Without a client certificate the handshake fails: no config.
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	conn, err := grpc.NewClient(s.XDSAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "sluice.test", MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err == nil {
		err = stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"})
		if err == nil {
			_, err = stream.Recv()
		}
	}
	if err == nil {
		t.Fatal("a client without a certificate got config")
	}

	// frontend's certificate, claiming payments' gateway: refused.
	clientCert, err := tls.LoadX509KeyPair(pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := grpc.NewClient(s.XDSAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "sluice.test", Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS12})))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = impostor.Close() }()
	gateway, err := structpb.NewStruct(map[string]any{"role": "gateway"})
	if err != nil {
		t.Fatal(err)
	}
	stream, err = discoveryv3.NewAggregatedDiscoveryServiceClient(impostor).StreamAggregatedResources(ctx)
	if err == nil {
		err = stream.Send(&discoveryv3.DiscoveryRequest{
			Node:    &corev3.Node{Id: "impostor", Cluster: "payments", Metadata: gateway},
			TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
		})
		if err == nil {
			_, err = stream.Recv()
		}
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "payments") {
		t.Fatalf("frontend's certificate claiming payments: %v, want PermissionDenied naming payments", err)
	}
}
