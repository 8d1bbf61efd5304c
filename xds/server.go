package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Defaults for the limits of Config.
const (
	// DefaultMaxRequestBytes is gRPC's own default: a SotW request naming
	// 100,000 resources fits.
	DefaultMaxRequestBytes = 4 << 20
	// DefaultMaxStreamsPerConnection leaves room for an Envoy's ADS
	// stream and a gRPC client's streams, and stops one connection from
	// opening streams by the thousand.
	DefaultMaxStreamsPerConnection = 100
	// connBufferSize is the read and the write buffer of a connection.
	connBufferSize = 8 << 10
	// MaxNodeBytes bounds a client's node (its identity and metadata),
	// which is kept for as long as its stream is open.
	MaxNodeBytes = 64 << 10
)

// Config configures a Server.
type Config struct {
	Log     *slog.Logger
	Metrics *Metrics
	// Tracer records a span per xDS response sent; nil records nothing.
	Tracer trace.Tracer
	// Cache holds the snapshots to serve (see NewCache); the snapshot loop
	// publishes into it.
	Cache *Cache
	// Groups learns about each new proxy group (the snapshot loop).
	Groups GroupRegistrar
	// TLS, when set, makes the server require TLS (and client certificates
	// if TLS.ClientAuth says so).
	TLS *tls.Config
	// KeepaliveTime is how often an idle connection is pinged; dead proxies
	// are dropped after KeepaliveTimeout without an answer.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// DrainTimeout bounds graceful stop; streams still open then are cut.
	DrainTimeout time.Duration
	// MaxRequestBytes bounds a request (gRPC answers a bigger one with
	// ResourceExhausted); 0 means DefaultMaxRequestBytes.
	MaxRequestBytes int
	// MaxStreamsPerConnection bounds the streams a client opens on one
	// connection (Envoy and gRPC open one or two); 0 means
	// DefaultMaxStreamsPerConnection.
	MaxStreamsPerConnection uint32
	// RelocateInterval is how often streams whose clients now belong to
	// another group are ended (Tracker.Relocate), at most RelocateLimit
	// at a time; 0 means the defaults. Only with a Groups registrar that
	// knows localities (LocalityResolver or LocalityPolicy).
	RelocateInterval time.Duration
	RelocateLimit    int
}

// Defaults of Config.RelocateInterval and RelocateLimit: a whole mesh of
// 10,000 clients moves in under four minutes, 50 reconnections a second.
const (
	DefaultRelocateInterval = 5 * time.Second
	DefaultRelocateLimit    = 250
)

// Server is the ADS server: it serves the Cache's snapshots over state of
// the world and delta streams (stream.go), and records what each client
// was sent, accepted and rejected in the Tracker.
type Server struct {
	cfg     Config
	Cache   *Cache
	Tracker *Tracker
	grpc    *grpc.Server
	// ctx ends every stream when it is done.
	ctx context.Context
	// streams numbers the streams.
	streams atomic.Int64
}

// NewServer builds an ADS server around cfg.Cache.
func NewServer(ctx context.Context, cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.KeepaliveTime <= 0 {
		cfg.KeepaliveTime = 30 * time.Second
	}
	if cfg.KeepaliveTimeout <= 0 {
		cfg.KeepaliveTimeout = 10 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 5 * time.Second
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxStreamsPerConnection == 0 {
		cfg.MaxStreamsPerConnection = DefaultMaxStreamsPerConnection
	}
	snapshots := cfg.Cache
	if snapshots == nil {
		snapshots = NewCache(cfg.Log)
	}
	tracker := NewTracker(cfg.Groups, cfg.Log, cfg.Metrics, cfg.Tracer)
	// With client certificates required, a client may claim only the
	// service its certificate names.
	tracker.bindIdentity = cfg.TLS != nil && cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert

	codec, err := newCodec(snapshots.shared)
	if err != nil {
		panic(err) // gRPC's proto codec is registered by the import in codec.go
	}
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout}),
		// Envoy and gRPC clients ping idle ADS connections; allow it rather
		// than answering with GOAWAY "too_many_pings".
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(cfg.MaxStreamsPerConnection),
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes),
		// Every connection holds a read and a write buffer from gRPC's
		// pools while it is busy; xDS requests are small and large
		// responses bypass the write buffer, so gRPC's 32 KiB each cost
		// memory at thousands of connections for no speed.
		grpc.ReadBufferSize(connBufferSize),
		grpc.WriteBufferSize(connBufferSize),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	gs := grpc.NewServer(opts...)
	s := &Server{cfg: cfg, Cache: snapshots, Tracker: tracker, grpc: gs, ctx: ctx}
	s.register(gs)
	_, resolves := cfg.Groups.(LocalityResolver)
	_, decides := cfg.Groups.(LocalityPolicy)
	if resolves || decides {
		go s.relocate(ctx)
	}
	return s
}

// relocate calls Tracker.Relocate every RelocateInterval until ctx ends.
func (s *Server) relocate(ctx context.Context) {
	every, limit := s.cfg.RelocateInterval, s.cfg.RelocateLimit
	if every <= 0 {
		every = DefaultRelocateInterval
	}
	if limit <= 0 {
		limit = DefaultRelocateLimit
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.Tracker.Relocate(limit)
		}
	}
}

// Serve serves on lis until ctx ends, then stops gracefully: open streams get
// DrainTimeout to finish before they are cut.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serving xDS on %s: %w", lis.Addr(), err)
		}
		return nil
	case <-ctx.Done():
	}
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(s.cfg.DrainTimeout):
		s.grpc.Stop()
		<-done
	}
	return nil
}
