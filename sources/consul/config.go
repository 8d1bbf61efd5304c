package consul

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/sluice-mesh/sluice/sources/setting"
)

// SourceName is the name this source reports under.
const SourceName = "consul"

// Defaults of the tuning fields of Config; see there.
const (
	DefaultWaitTime          = time.Minute
	DefaultRequestTimeout    = 10 * time.Second
	DefaultMinQueryInterval  = 100 * time.Millisecond
	DefaultMinResyncInterval = time.Second
	DefaultConcurrency       = 8
	DefaultRetryMin          = 500 * time.Millisecond
	DefaultRetryMax          = 30 * time.Second
)

// Config configures the Consul source.
//
// Start from DefaultConfig: its WarningIsHealthy is true, while the zero
// Config's is false.
type Config struct {
	// Address of the Consul HTTP API: "host:port", "http://host:port",
	// "https://host:port" or "unix:///path". Empty means Consul's standard
	// CONSUL_HTTP_ADDR, else 127.0.0.1:8500. Usually the local agent.
	Address string
	// Token is the ACL token (needs service:read and node:read on what
	// should be served). Empty means CONSUL_HTTP_TOKEN, else anonymous.
	Token string
	// Datacenter to read; empty means the agent's own.
	Datacenter string
	// TLS secures the connection; with any of its fields set the scheme is
	// https.
	TLS TLSConfig
	// Tags, when set, serve only instances that carry every one of them.
	Tags []string
	// Exclude names services that are never served. DefaultConfig
	// excludes "consul", the servers' own service (their RPC port, which
	// no proxy routes to).
	Exclude []string
	// WarningIsHealthy decides what a "warning" check status means. True
	// (DefaultConfig, and Consul's own xDS) serves the instance, weighted
	// by Weights.Warning; false marks it unhealthy.
	WarningIsHealthy bool
	// Log receives the source's logs; nil discards them.
	Log *slog.Logger

	// WaitTime is how long a blocking query waits for a change before the
	// agent answers anyway (Consul caps it at 10m). It also bounds how long
	// a silently dead connection goes unnoticed. 0 means DefaultWaitTime.
	WaitTime time.Duration
	// RequestTimeout bounds each non-blocking request, and is the grace on
	// top of WaitTime for blocking ones. 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MinQueryInterval is the least time between the starts of two
	// blocking queries of one watch (Consul's "rate limit" guidance: a
	// flapping check costs at most one list per interval). 0 means
	// DefaultMinQueryInterval.
	MinQueryInterval time.Duration
	// MinResyncInterval is the least time between two full re-reads of
	// every service, which a change of the service catalog triggers; the
	// gap also grows to four times the last re-read's duration, so re-reads
	// never take more than a fifth of the time. 0 means
	// DefaultMinResyncInterval.
	MinResyncInterval time.Duration
	// Concurrency bounds the per-service health reads in flight. 0 means
	// DefaultConcurrency.
	Concurrency int
	// RetryMin and RetryMax bound the jittered exponential backoff between
	// attempts to reach Consul. 0 means DefaultRetryMin/DefaultRetryMax.
	RetryMin, RetryMax time.Duration
}

// TLSConfig configures HTTPS to Consul. Empty fields fall back to Consul's
// standard CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY and
// CONSUL_TLS_SERVER_NAME environment variables.
type TLSConfig struct {
	// CAFile verifies the server's certificate (PEM); empty means the
	// system roots.
	CAFile string
	// CertFile and KeyFile are a client certificate and its key (PEM),
	// for agents that verify incoming HTTPS (verify_incoming).
	CertFile, KeyFile string
	// ServerName is the name expected in the server's certificate, when it
	// differs from the host in Address (e.g. "server.dc1.consul").
	ServerName string
	// InsecureSkipVerify disables certificate verification. For tests only.
	InsecureSkipVerify bool
}

func (t TLSConfig) enabled() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// DefaultConfig returns the recommended settings: the local agent, warning
// counted as healthy, Consul's own service left out, the default tuning.
func DefaultConfig() Config {
	return Config{WarningIsHealthy: true, Exclude: []string{ConsulServiceName}}
}

// ConsulServiceName is the service Consul servers register for themselves.
const ConsulServiceName = "consul"

// normalize validates c and fills in defaults. Errors are *setting.Error
// naming the field.
func (c Config) normalize() (Config, error) {
	if c.TLS.CertFile == "" && c.TLS.KeyFile != "" {
		return c, &setting.Error{Scope: SourceName, Field: "TLS.CertFile", Reason: "is required with", With: []string{"TLS.KeyFile"}}
	}
	if c.TLS.KeyFile == "" && c.TLS.CertFile != "" {
		return c, &setting.Error{Scope: SourceName, Field: "TLS.KeyFile", Reason: "is required with", With: []string{"TLS.CertFile"}}
	}
	if strings.HasPrefix(c.Address, "http://") && c.TLS.enabled() {
		return c, configError("Address", c.Address, "must be https:// or host:port (not plaintext http://) when TLS is configured")
	}
	var err error
	if c.Tags, err = nonEmpty("Tags", "tag", c.Tags); err != nil {
		return c, err
	}
	if c.Exclude, err = nonEmpty("Exclude", "service name", c.Exclude); err != nil {
		return c, err
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"WaitTime", &c.WaitTime, DefaultWaitTime},
		{"RequestTimeout", &c.RequestTimeout, DefaultRequestTimeout},
		{"MinQueryInterval", &c.MinQueryInterval, DefaultMinQueryInterval},
		{"MinResyncInterval", &c.MinResyncInterval, DefaultMinResyncInterval},
		{"RetryMin", &c.RetryMin, DefaultRetryMin},
		{"RetryMax", &c.RetryMax, DefaultRetryMax},
	} {
		if *d.v < 0 {
			return c, configError(d.name, *d.v, "must not be negative")
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.WaitTime > 10*time.Minute {
		return c, configError("WaitTime", c.WaitTime, "must be at most 10m, Consul's cap on blocking queries")
	}
	if c.RetryMax < c.RetryMin {
		return c, configError("RetryMax", c.RetryMax, fmt.Sprintf("must be at least RetryMin (%s)", c.RetryMin))
	}
	if c.Concurrency < 0 {
		return c, configError("Concurrency", c.Concurrency, "must not be negative")
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// client builds the Consul API client for c (already normalized).
func (c Config) client() (*api.Client, error) {
	ac := api.DefaultConfig() // reads the CONSUL_* environment variables
	if c.Address != "" {
		ac.Address = c.Address
	}
	if c.Token != "" {
		ac.Token = c.Token
	}
	if c.Datacenter != "" {
		ac.Datacenter = c.Datacenter
	}
	if c.TLS.enabled() {
		ac.Scheme = "https"
		if c.TLS.CAFile != "" {
			ac.TLSConfig.CAFile, ac.TLSConfig.CAPath = c.TLS.CAFile, ""
		}
		if c.TLS.CertFile != "" {
			ac.TLSConfig.CertFile, ac.TLSConfig.KeyFile = c.TLS.CertFile, c.TLS.KeyFile
		}
		if c.TLS.ServerName != "" {
			ac.TLSConfig.Address = c.TLS.ServerName
		}
		ac.TLSConfig.InsecureSkipVerify = ac.TLSConfig.InsecureSkipVerify || c.TLS.InsecureSkipVerify
	}
	// Keep a connection per watch and per concurrent read, instead of the
	// pooled transport's GOMAXPROCS+1, so reads never churn connections.
	ac.Transport.MaxIdleConnsPerHost = c.Concurrency + numWatches + 1
	cl, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consul: client for %q: %w", ac.Address, err)
	}
	return cl, nil
}

// configError is an *setting.Error of a field of Config.
func configError(field string, value any, reason string) error {
	return &setting.Error{Scope: SourceName, Field: field, Value: value, Reason: reason}
}

// nonEmpty returns a copy of vals (so the caller's slice is never shared),
// refusing empty entries.
func nonEmpty(field, what string, vals []string) ([]string, error) {
	out := make([]string, 0, len(vals))
	for i, v := range vals {
		if v == "" {
			return nil, configError(field+"["+strconv.Itoa(i)+"]", nil, "must not be an empty "+what)
		}
		out = append(out, v)
	}
	return out, nil
}
