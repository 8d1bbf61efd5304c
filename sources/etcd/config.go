package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// SourceName is the name this source reports under.
const SourceName = "etcd"

// Key layouts, selected by Config.Format.
const (
	// FormatSluice is `<prefix>/<service>/<host:port>` with a JSON (or empty,
	// or bare host:port) value; see Registration.
	FormatSluice = "sluice"
	// FormatKratos is go-kratos' etcd registry: `<prefix>/<name>/<id>` with
	// its ServiceInstance JSON.
	FormatKratos = "kratos"
	// FormatGoZero is go-zero's discov publisher: `<key>/<id>` with a bare
	// host:port value; the service name is the key.
	FormatGoZero = "gozero"
)

// Default roots of the key layouts. A Config.Prefix replaces them.
const (
	DefaultPrefix = "/services"
	// KratosPrefix is go-kratos' default registry namespace.
	KratosPrefix = "/microservices"
	// GoZeroPrefix is empty: go-zero writes its keys at the root of the
	// keyspace (e.g. "user.rpc/7587864068988009477").
	GoZeroPrefix = ""
)

// DefaultDialTimeout bounds connecting (and authenticating) to etcd.
const DefaultDialTimeout = 5 * time.Second

const (
	// defaultRequestTimeout bounds each request (a page of the initial list,
	// a lease grant, a put), so a dead etcd never hangs the source.
	defaultRequestTimeout = 5 * time.Second
	// Keepalive pings detect a silently dead connection (no RST). The
	// interval stays at or above etcd's default --grpc-keepalive-min-time
	// (5s), below which the server closes the connection.
	keepAliveTime    = 10 * time.Second
	keepAliveTimeout = 5 * time.Second
	// maxReconnectDelay caps gRPC's reconnect backoff (default 120s), so a
	// recovered etcd is noticed within seconds.
	maxReconnectDelay = 5 * time.Second
)

// Config configures the etcd source (and NewClient).
type Config struct {
	// Endpoints are etcd client URLs: "host:port", "http://host:port" or
	// "https://host:port". Required.
	Endpoints []string
	// Prefix is the root of the registry keys. Empty means the format's
	// default: /services (sluice), /microservices (kratos), the keyspace
	// root (gozero). "/" explicitly selects the keyspace root.
	Prefix string
	// Format is the key layout: "sluice" (default), "kratos" or "gozero".
	Format string
	// TLS, when set, secures the connection (with "host:port" or https://
	// endpoints). See LoadTLS.
	TLS *tls.Config
	// Username and Password authenticate to etcd when auth is enabled.
	Username, Password string
	// DialTimeout bounds connecting and authenticating; 0 means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// Log receives the source's logs; nil discards them.
	Log *slog.Logger
}

// normalize validates c and fills in defaults. Errors name the field.
func (c Config) normalize() (Config, error) {
	if len(c.Endpoints) == 0 {
		return c, errors.New("etcd: Endpoints: at least one endpoint is required")
	}
	c.Endpoints = append([]string(nil), c.Endpoints...)
	for i, ep := range c.Endpoints {
		if err := checkEndpoint(ep); err != nil {
			return c, fmt.Errorf("etcd: Endpoints[%d]: %w", i, err)
		}
		if c.TLS != nil && strings.HasPrefix(ep, "http://") {
			return c, fmt.Errorf("etcd: Endpoints[%d]: %q is plaintext (http://) but TLS is configured; use https:// or host:port", i, ep)
		}
	}
	switch c.Format {
	case "":
		c.Format = FormatSluice
	case FormatSluice, FormatKratos, FormatGoZero:
	default:
		return c, fmt.Errorf("etcd: Format: unknown format %q (want %s, %s or %s)", c.Format, FormatSluice, FormatKratos, FormatGoZero)
	}
	if c.Prefix == "" {
		c.Prefix = defaultPrefix(c.Format)
	}
	if strings.ContainsAny(c.Prefix, "\x00") {
		return c, fmt.Errorf("etcd: Prefix: %q contains a NUL byte", c.Prefix)
	}
	c.Prefix = strings.TrimRight(c.Prefix, "/")
	if c.Username == "" && c.Password != "" {
		return c, errors.New("etcd: Username: required when Password is set")
	}
	if c.Username != "" && c.Password == "" {
		return c, errors.New("etcd: Password: required when Username is set")
	}
	if c.DialTimeout < 0 {
		return c, fmt.Errorf("etcd: DialTimeout: must not be negative, got %s", c.DialTimeout)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

func defaultPrefix(format string) string {
	switch format {
	case FormatKratos:
		return KratosPrefix
	case FormatGoZero:
		return GoZeroPrefix
	}
	return DefaultPrefix
}

// checkEndpoint accepts the endpoint forms clientv3 understands.
func checkEndpoint(ep string) error {
	if ep == "" || strings.TrimSpace(ep) != ep {
		return fmt.Errorf("%q is not an endpoint (want host:port or http(s)://host:port)", ep)
	}
	hostport := ep
	if i := strings.Index(ep, "://"); i >= 0 {
		u, err := url.Parse(ep)
		if err != nil {
			return fmt.Errorf("%q is not a URL: %w", ep, err)
		}
		switch u.Scheme {
		case "http", "https":
		case "unix", "unixs":
			return nil
		default:
			return fmt.Errorf("%q: unsupported scheme %q (want http, https, unix or unixs)", ep, u.Scheme)
		}
		if u.Path != "" && u.Path != "/" {
			return fmt.Errorf("%q: an endpoint has no path", ep)
		}
		hostport = u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", ep, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", ep)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%q: bad port %q (want 1-65535)", ep, port)
	}
	return nil
}

// NewClient connects to etcd as cfg says: a client-level dial timeout,
// keepalive pings that detect a dead connection, a capped reconnect backoff,
// and etcd's client logs routed to cfg.Log (errors only: the source reports
// outages itself). The connection is established lazily, except that
// authentication (Username) needs etcd to answer within the dial timeout.
func NewClient(cfg Config) (*clientv3.Client, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	return newClient(cfg)
}

func newClient(cfg Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		TLS:                  cfg.TLS,
		Username:             cfg.Username,
		Password:             cfg.Password,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		PermitWithoutStream:  true,
		Logger:               newZapLogger(cfg.Log.With("component", "etcd-client"), zapcore.ErrorLevel),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   maxReconnectDelay,
			},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return cli, nil
}

// LoadTLS builds a client TLS configuration from PEM files, as the
// --etcd-ca, --etcd-cert and --etcd-key flags give them. All empty means no
// TLS (nil). caFile alone verifies the server with that CA; certFile and
// keyFile (together) add a client certificate; without caFile the system
// roots verify the server.
func LoadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("etcd TLS: a client certificate and its key must be given together")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: loading client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: reading CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd TLS: CA %s: no PEM certificates found", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
