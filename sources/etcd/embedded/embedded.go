// Package embedded runs an etcd server in-process: the zero-setup registry
// of `sluice serve` (--dev, or no registry configured) and the real etcd
// of the tests. It is a single member on loopback, without
// authentication, serving plain http.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"

	"github.com/sluice-mesh/sluice/sources/etcd/internal/zaplog"
	"github.com/sluice-mesh/sluice/sources/setting"
)

// DefaultClientURL is where the embedded etcd listens unless told otherwise:
// etcd's own default client port, on loopback.
const DefaultClientURL = "http://127.0.0.1:2379"

// readyTimeout bounds how long Start waits for the server to
// become ready (WAL replay of a large data dir included).
const readyTimeout = time.Minute

// Config configures an in-process etcd.
type Config struct {
	// ClientURL is where clients connect, "http://127.0.0.1:2379" when
	// empty; "host:port" is accepted too. Port 0 picks a free port (see
	// Server.Endpoints). The host must be a loopback address: the
	// embedded etcd has no authentication.
	ClientURL string
	// PeerURL is the raft peer listener, a free loopback port when empty.
	// A single member never dials it, but etcd needs one.
	PeerURL string
	// DataDir holds etcd's data. Empty means a temporary directory, removed
	// by Close; its data is throwaway, so etcd also skips fsync there.
	DataDir string
	// Log receives etcd's warnings and errors; nil discards them.
	Log *slog.Logger
}

// Server is a running in-process etcd. Stop it with Close.
type Server struct {
	etcd      *embed.Etcd
	dir       string
	removeDir bool
	endpoints []string
	closeOnce sync.Once
	closeErr  error
}

// Start starts a single-member etcd on loopback and waits until it serves
// clients (or ctx ends, or a minute passes). A bad cfg is a *setting.Error
// with Scope Scope naming the field of Config.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	clientURL, err := loopbackURL("ClientURL", cfg.ClientURL, DefaultClientURL)
	if err != nil {
		return nil, err
	}
	peerURL, err := loopbackURL("PeerURL", cfg.PeerURL, "http://127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Server{dir: cfg.DataDir}
	if e.dir == "" {
		if e.dir, err = os.MkdirTemp("", "sluice-etcd-"); err != nil {
			return nil, fmt.Errorf("embedded etcd: creating a data directory: %w", err)
		}
		e.removeDir = true
	} else if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return nil, &setting.Error{Scope: Scope, Field: "DataDir", Reason: "cannot be created", Err: err}
	}

	ec := embed.NewConfig()
	ec.Name = "sluice"
	ec.Dir = e.dir
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	ec.Logger = "zap"
	ec.LogLevel = "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zaplog.New(log.With("component", "embedded-etcd"), zapcore.WarnLevel,
		// Expected of a loopback development etcd; not worth a warning.
		"Running http and grpc server on single port. This is not recommended for production.",
		"simple token is not cryptographically signed",
		// What etcd logs when it is stopped on purpose (sluice shutting down).
		"setting up serving from embedded etcd failed.",
		"stopping insecure grpc server due to error",
		"stopped insecure grpc server due to error",
	))
	// Keep an hour of history; a watch that falls further behind re-lists.
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "1h"
	ec.UnsafeNoFsync = e.removeDir

	srv, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("starting embedded etcd on %s: %w", clientURL.Host, err), e.removeData())
	}
	e.etcd = srv
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-srv.Server.ReadyNotify():
	case err := <-srv.Err():
		_ = e.Close()
		return nil, fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-timer.C:
		_ = e.Close()
		return nil, fmt.Errorf("embedded etcd was not ready within %s", readyTimeout)
	case <-ctx.Done():
		_ = e.Close()
		return nil, ctx.Err()
	}
	for _, l := range srv.Clients {
		e.endpoints = append(e.endpoints, clientURL.Scheme+"://"+l.Addr().String())
	}
	log.Info("embedded etcd started", "endpoints", e.endpoints, "data_dir", e.dir)
	return e, nil
}

// Scope is the Scope of the *setting.Error of a bad Config.
const Scope = "embedded etcd"

// loopbackURL parses the http URL (or bare host:port) on a loopback
// address that field gives, def if it is empty.
func loopbackURL(field, s, def string) (*url.URL, error) {
	if s == "" {
		s = def
	}
	given := s
	refuse := func(reason string, err error) (*url.URL, error) {
		return nil, &setting.Error{Scope: Scope, Field: field, Value: given, Reason: reason, Err: err}
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return refuse("must be a URL", err)
	}
	if u.Scheme != "http" {
		return refuse("must be plain http:// (the embedded etcd has no TLS)", nil)
	}
	if u.Path != "" && u.Path != "/" {
		return refuse("must not have a path", nil)
	}
	host, _, err := net.SplitHostPort(u.Host)
	if err != nil {
		return refuse("must be host:port or http://host:port", err)
	}
	if host != "localhost" {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.IsLoopback() {
			return refuse("must be on loopback (127.0.0.1, ::1 or localhost), as the embedded etcd has no authentication", nil)
		}
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// Endpoints are the client URLs to connect to, with real ports.
func (e *Server) Endpoints() []string { return append([]string(nil), e.endpoints...) }

// DataDir is the directory holding etcd's data.
func (e *Server) DataDir() string { return e.dir }

// Err reports a fatal error of the running server.
func (e *Server) Err() <-chan error { return e.etcd.Err() }

// Close stops etcd and, if the data directory was temporary, removes it.
func (e *Server) Close() error {
	e.closeOnce.Do(func() {
		if e.etcd != nil {
			e.etcd.Close()
		}
		e.closeErr = e.removeData()
	})
	return e.closeErr
}

func (e *Server) removeData() error {
	if !e.removeDir {
		return nil
	}
	if err := os.RemoveAll(e.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing embedded etcd data %s: %w", e.dir, err)
	}
	return nil
}
