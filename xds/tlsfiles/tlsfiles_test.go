package tlsfiles

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mesh/sluice/sources/setting"
)

// writeSelfSigned writes a new self-signed certificate named cn (and, when
// keyFile is not empty, its key), with modification time when.
func writeSelfSigned(t *testing.T, certFile, keyFile, cn string, when time.Time) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	files := map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}}
	if keyFile != "" {
		files[keyFile] = &pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}
	}
	for path, block := range files {
		touch(t, path, pem.EncodeToMemory(block), when)
	}
}

// touch writes data to path and sets its modification time.
func touch(t *testing.T, path string, data []byte, when time.Time) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, when, when); err != nil {
		t.Fatal(err)
	}
}

// TestKeyPairReload: a renewed certificate is served without a restart; a
// renewal that does not load keeps the previous one.
func TestKeyPairReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	name := func(c *tls.Certificate) string {
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.Subject.CommonName
	}
	start := time.Now().Add(-time.Minute)
	writeSelfSigned(t, certFile, keyFile, "first", start)
	r := KeyPair(certFile, keyFile)
	c, err := r.Get()
	if err != nil || name(c) != "first" {
		t.Fatalf("first load: %v %v", c, err)
	}
	writeSelfSigned(t, certFile, keyFile, "renewed", start.Add(time.Second))
	if c, _ := r.Get(); name(c) != "renewed" {
		t.Fatalf("after renewal: serving %q", name(c))
	}
	touch(t, certFile, []byte("garbage"), start.Add(2*time.Second))
	if c, err := r.Get(); err != nil || name(c) != "renewed" {
		t.Fatalf("after a broken renewal: %v %v, want the previous certificate", c, err)
	}
}

// TestClientCAReload: the server verifies client certificates against the
// CA bundle as it is at each handshake: a rotated bundle applies without a
// restart, a broken one keeps the last good bundle.
func TestClientCAReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	start := time.Now().Add(-time.Minute)
	writeSelfSigned(t, certFile, keyFile, "sluice", start)
	writeSelfSigned(t, caFile, "", "ca-1", start)
	cfg, err := Server{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	subjects := func() string {
		t.Helper()
		c, err := cfg.GetConfigForClient(nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.ClientAuth != tls.RequireAndVerifyClientCert {
			t.Fatalf("client auth %v, want RequireAndVerifyClientCert", c.ClientAuth)
		}
		var names []string
		for _, raw := range c.ClientCAs.Subjects() { //nolint:staticcheck // only to name the CAs in the pool
			var rdn pkix.RDNSequence
			if _, err := asn1.Unmarshal(raw, &rdn); err != nil {
				t.Fatal(err)
			}
			var n pkix.Name
			n.FillFromRDNSequence(&rdn)
			names = append(names, n.CommonName)
		}
		return strings.Join(names, ",")
	}
	if got := subjects(); got != "ca-1" {
		t.Fatalf("client CAs %q, want ca-1", got)
	}
	writeSelfSigned(t, caFile, "", "ca-2", start.Add(time.Second))
	if got := subjects(); got != "ca-2" {
		t.Fatalf("after rotating the CA file: client CAs %q, want ca-2", got)
	}
	touch(t, caFile, []byte("garbage"), start.Add(2*time.Second))
	if got := subjects(); got != "ca-2" {
		t.Fatalf("after a broken CA file: client CAs %q, want ca-2 kept", got)
	}
}

// TestServerConfigErrors: no files is no TLS; a missing or unloadable file
// is an error naming its field.
func TestServerConfigErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, garbage := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "garbage.pem")
	writeSelfSigned(t, certFile, keyFile, "sluice", time.Now())
	touch(t, garbage, []byte("garbage"), time.Now())
	if cfg, err := (Server{}).Config(); cfg != nil || err != nil {
		t.Errorf("no files: %v, %v; want no TLS", cfg, err)
	}
	for _, tc := range []struct {
		name  string
		s     Server
		field string
	}{
		{"key without certificate", Server{KeyFile: keyFile}, "CertFile"},
		{"certificate without key", Server{CertFile: certFile}, "KeyFile"},
		{"CA without certificate", Server{ClientCAFile: certFile}, "ClientCAFile"},
		{"missing certificate", Server{CertFile: filepath.Join(dir, "nope.crt"), KeyFile: keyFile}, "CertFile"},
		{"CA without certificates", Server{CertFile: certFile, KeyFile: keyFile, ClientCAFile: garbage}, "ClientCAFile"},
	} {
		_, err := tc.s.Config()
		var se *setting.Error
		if !errors.As(err, &se) || se.Field != tc.field {
			t.Errorf("%s: %v, want a *setting.Error naming %s", tc.name, err, tc.field)
		}
	}
}
