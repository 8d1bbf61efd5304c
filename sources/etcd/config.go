package etcd

import (
	"crypto/tls"
	"crypto/x509"
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

	"github.com/sluice-mesh/sluice/sources/etcd/internal/zaplog"
	"github.com/sluice-mesh/sluice/sources/setting"
)

// SourceName is the name this source reports under.
const SourceName = "etcd"

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

// normalize validates c and fills in defaults. Errors are *setting.Error
// naming the field.
func (c Config) normalize() (Config, error) {
	if len(c.Endpoints) == 0 {
		return c, configError("Endpoints", nil, "at least one endpoint is required")
	}
	c.Endpoints = append([]string(nil), c.Endpoints...)
	for i, ep := range c.Endpoints {
		field := "Endpoints[" + strconv.Itoa(i) + "]"
		if reason, err := checkEndpoint(ep); reason != "" {
			return c, &setting.Error{Scope: SourceName, Field: field, Value: ep, Reason: reason, Err: err}
		}
		if c.TLS != nil && strings.HasPrefix(ep, "http://") {
			return c, configError(field, ep, "must be https:// or host:port (not plaintext http://) when TLS is configured")
		}
	}
	l, ok := layoutOf(c.Format)
	if !ok {
		return c, configError("Format", c.Format, "unknown format (want "+formatNames()+")")
	}
	c.Format = l.format()
	if c.Prefix == "" {
		c.Prefix = l.defaultPrefix()
	}
	if strings.ContainsAny(c.Prefix, "\x00") {
		return c, configError("Prefix", c.Prefix, "must not contain a NUL byte")
	}
	c.Prefix = strings.TrimRight(c.Prefix, "/")
	if c.Username == "" && c.Password != "" {
		return c, &setting.Error{Scope: SourceName, Field: "Username", Reason: "is required with", With: []string{"Password"}}
	}
	if c.Username != "" && c.Password == "" {
		return c, &setting.Error{Scope: SourceName, Field: "Password", Reason: "is required with", With: []string{"Username"}}
	}
	if c.DialTimeout < 0 {
		return c, configError("DialTimeout", c.DialTimeout, "must not be negative")
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// configError is an *setting.Error of a field of Config.
func configError(field string, value any, reason string) error {
	return &setting.Error{Scope: SourceName, Field: field, Value: value, Reason: reason}
}

// checkEndpoint accepts the endpoint forms clientv3 understands. It
// returns what is wrong with ep ("" if nothing), and the error found, if
// any.
func checkEndpoint(ep string) (string, error) {
	const form = "must be host:port or http(s)://host:port"
	if ep == "" || strings.TrimSpace(ep) != ep {
		return form, nil
	}
	hostport := ep
	if i := strings.Index(ep, "://"); i >= 0 {
		u, err := url.Parse(ep)
		if err != nil {
			return form, err
		}
		switch u.Scheme {
		case "http", "https":
		case "unix", "unixs":
			return "", nil
		default:
			return "must have the scheme http, https, unix or unixs", nil
		}
		if u.Path != "" && u.Path != "/" {
			return "must not have a path", nil
		}
		hostport = u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return form, err
	}
	if host == "" {
		return "must name a host", nil
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "must have a port from 1 to 65535", nil
	}
	return "", nil
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
		Logger:               zaplog.New(cfg.Log.With("component", "etcd-client"), zapcore.ErrorLevel),
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
// roots verify the server. Errors are *setting.Error naming the file as
// the field of Config's TLS it makes: TLS.CAFile, TLS.CertFile or
// TLS.KeyFile.
func LoadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" && keyFile != "" {
		return nil, &setting.Error{Scope: SourceName, Field: "TLS.CertFile", Reason: "is required with", With: []string{"TLS.KeyFile"}}
	}
	if keyFile == "" && certFile != "" {
		return nil, &setting.Error{Scope: SourceName, Field: "TLS.KeyFile", Reason: "is required with", With: []string{"TLS.CertFile"}}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, &setting.Error{Scope: SourceName, Field: "TLS.CertFile", Reason: "cannot be loaded with", With: []string{"TLS.KeyFile"}, Err: err}
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pool, err := loadCAs(caFile)
		if err != nil {
			return nil, &setting.Error{Scope: SourceName, Field: "TLS.CAFile", Reason: "cannot be loaded", Err: err}
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// loadCAs reads the CA certificates of a PEM bundle. (The xDS server's
// reloading version is in xds/tlsfiles; a source does not import xds.)
func loadCAs(file string) (*x509.CertPool, error) {
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
