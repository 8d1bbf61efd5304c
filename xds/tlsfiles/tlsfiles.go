// Package tlsfiles loads TLS certificates and CA bundles from PEM files and
// loads them again when the files change, so a renewed certificate or a
// rotated CA bundle (cert-manager, for one) is used without a restart.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sluice-mesh/sluice/sources/setting"
)

// Reloader holds a value loaded from files and loads it again when one of
// them changes (a later modification time). A change that does not load
// keeps the previous value.
type Reloader[T any] struct {
	files []string
	load  func() (T, error)

	mu      sync.Mutex
	val     T
	loaded  bool
	modTime time.Time
}

// Get returns the value as the files are now, or the last value that
// loaded if they do not load any more. Only the first load's error is
// returned.
func (r *Reloader[T]) Get() (T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var latest time.Time
	for _, f := range r.files {
		fi, err := os.Stat(f)
		if err != nil {
			if r.loaded {
				return r.val, nil
			}
			return r.val, err
		}
		if fi.ModTime().After(latest) {
			latest = fi.ModTime()
		}
	}
	if r.loaded && !latest.After(r.modTime) {
		return r.val, nil
	}
	v, err := r.load()
	if err != nil {
		if r.loaded {
			return r.val, nil
		}
		return v, err
	}
	r.val, r.loaded, r.modTime = v, true, latest
	return v, nil
}

// KeyPair serves the certificate and key in certFile and keyFile.
func KeyPair(certFile, keyFile string) *Reloader[*tls.Certificate] {
	return &Reloader[*tls.Certificate]{files: []string{certFile, keyFile}, load: func() (*tls.Certificate, error) {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		return &cert, err
	}}
}

// CAs serves the CA certificates of a PEM bundle.
func CAs(file string) *Reloader[*x509.CertPool] {
	return &Reloader[*x509.CertPool]{files: []string{file}, load: func() (*x509.CertPool, error) { return LoadCAs(file) }}
}

// LoadCAs reads the CA certificates of a PEM bundle once.
func LoadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates found", file)
	}
	return pool, nil
}

// Scope is the Scope of the *setting.Error of a bad Server; its Field is
// the field of Server.
const Scope = "TLS"

// Server names the PEM files of a TLS server.
type Server struct {
	// CertFile and KeyFile are the server's certificate and key.
	CertFile, KeyFile string
	// ClientCAFile, when set, is the CA bundle client certificates must
	// be signed by; clients without one are refused.
	ClientCAFile string
}

// Config returns a server configuration (TLS 1.2 or later) that serves the
// certificate as the files are at each handshake and, with ClientCAFile,
// verifies client certificates against the bundle as it is at each
// handshake. Without CertFile and KeyFile it returns nil (no TLS). The files must
// load now; errors are *setting.Error naming the field.
func (s Server) Config() (*tls.Config, error) {
	if s.CertFile == "" && s.KeyFile == "" {
		if s.ClientCAFile != "" {
			return nil, &setting.Error{Scope: Scope, Field: "ClientCAFile", Reason: "needs", With: []string{"CertFile", "KeyFile"}}
		}
		return nil, nil
	}
	if s.CertFile == "" {
		return nil, &setting.Error{Scope: Scope, Field: "CertFile", Reason: "is required with", With: []string{"KeyFile"}}
	}
	if s.KeyFile == "" {
		return nil, &setting.Error{Scope: Scope, Field: "KeyFile", Reason: "is required with", With: []string{"CertFile"}}
	}
	certs := KeyPair(s.CertFile, s.KeyFile)
	if _, err := certs.Get(); err != nil {
		return nil, &setting.Error{Scope: Scope, Field: "CertFile", Reason: "cannot be loaded with", With: []string{"KeyFile"}, Err: err}
	}
	cfg := &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return certs.Get() },
		MinVersion:     tls.VersionTLS12,
	}
	if s.ClientCAFile == "" {
		return cfg, nil
	}
	cas := CAs(s.ClientCAFile)
	pool, err := cas.Get()
	if err != nil {
		return nil, &setting.Error{Scope: Scope, Field: "ClientCAFile", Reason: "cannot be loaded", Err: err}
	}
	cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	// Each handshake verifies against the CA bundle as it is now, so a
	// rotated CA applies without a restart.
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool, err := cas.Get()
		if err != nil {
			return nil, err
		}
		c := cfg.Clone()
		c.ClientCAs, c.GetConfigForClient = pool, nil
		return c, nil
	}
	return cfg, nil
}
