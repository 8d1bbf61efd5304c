package consul

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/sluice-mesh/sluice/sources"
)

// testPKI writes a CA, a server certificate for "server.dc1.consul" only (no
// IP), and a client certificate into dir.
type testPKI struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, dns []string) (string, string) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(cn+".pem", "CERTIFICATE", der), write(cn+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p := testPKI{ca: write("ca.pem", "CERTIFICATE", caDER)}
	p.serverCert, p.serverKey = leaf(2, "server.dc1.consul", x509.ExtKeyUsageServerAuth, []string{"server.dc1.consul", "localhost"})
	p.clientCert, p.clientKey = leaf(3, "sluice", x509.ExtKeyUsageClientAuth, nil)
	return p
}

func TestTLSWithClientCertificate(t *testing.T) {
	pki := newTestPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpsPort := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	hcl := fmt.Sprintf(`ports { https = %d }
tls {
  defaults { ca_file = %q, cert_file = %q, key_file = %q }
  https { verify_incoming = true }
}`, httpsPort, pki.ca, pki.serverCert, pki.serverKey)
	a := startAgent(t, "-hcl", hcl)
	registerTTL(t, a.Client(), &api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 9001}, api.HealthPassing)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpsPort))

	cfg := testConfig(t, a)
	cfg.Address = addr
	cfg.TLS = TLSConfig{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey, ServerName: "server.dc1.consul"}
	c := runSource(t, cfg)
	c.waitState("web over HTTPS with a client certificate", wait, healthIs("web", map[string]sources.Health{"127.0.0.1:9001": sources.HealthHealthy}))

	// Without the client certificate the agent refuses us: an Err, no State.
	cfg.TLS.CertFile, cfg.TLS.KeyFile = "", ""
	c = runSource(t, cfg)
	c.waitEvent("an Err without a client certificate", 0, wait, func(ev sources.Event) bool { return ev.Err != nil })
	if evs, _ := c.snapshot(); evs[0].State != nil {
		t.Errorf("first event is a State without a client certificate")
	}

	// A wrong server name fails verification.
	cfg = testConfig(t, a)
	cfg.Address = addr
	cfg.TLS = TLSConfig{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey}
	c = runSource(t, cfg)
	i := c.waitEvent("an Err for a certificate without 127.0.0.1", 0, wait, func(ev sources.Event) bool { return ev.Err != nil })
	if evs, _ := c.snapshot(); i != 0 || evs[0].State != nil {
		t.Errorf("got a State though the server certificate does not name 127.0.0.1")
	}
}
