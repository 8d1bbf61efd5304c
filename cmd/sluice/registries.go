package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/consul"
	"github.com/sluice-mesh/sluice/sources/etcd"
	"github.com/sluice-mesh/sluice/sources/etcd/embedded"
	"github.com/sluice-mesh/sluice/sources/file"
	"github.com/sluice-mesh/sluice/sources/setting"
)

// registryOptions say which registries sluice watches.
type registryOptions struct {
	registryFile string

	// dev starts an embedded etcd; it is also what happens when no
	// registry is configured at all.
	dev     bool
	dataDir string

	etcd etcdOptions
	// etcdSet says --etcd-endpoints was given (flag, env or config file).
	etcdSet bool

	// consul is the Consul source's config; nil without --consul-addr.
	consul *consul.Config
}

type etcdOptions struct {
	endpoints                 []string
	prefix, format            string
	username, password        string
	caFile, certFile, keyFile string
}

func addRegistryFlags(f *pflag.FlagSet) {
	f.String("registry-file", "", "YAML file of services and instances (the file source), re-read on change")
	f.Bool("dev", false, "start an embedded etcd on --etcd-endpoints and watch it (the default when no registry is configured)")
	f.String("data-dir", "", "data directory of the embedded etcd (default: a temporary directory removed on exit)")
	addEtcdFlags(f)
	f.String("consul-addr", "", "Consul agent HTTP address (host:port or URL); setting it watches Consul")
	f.String("consul-token", "", "Consul ACL token (prefer SLUICE_CONSUL_TOKEN over the flag)")
	f.String("consul-datacenter", "", "Consul datacenter to watch (default: the agent's)")
	f.StringSlice("consul-tag", nil, "only serve Consul instances that have all of these tags (repeatable)")
	f.StringSlice("consul-exclude-service", []string{consul.ConsulServiceName}, "Consul services never to serve (repeatable; the default leaves out the servers' own service; --consul-exclude-service= serves everything)")
	f.String("consul-ca", "", "CA certificate (PEM) that signed the Consul agent's HTTPS certificate")
	f.String("consul-cert", "", "client certificate (PEM) for Consul agents that verify incoming HTTPS")
	f.String("consul-key", "", "client key (PEM) for --consul-cert")
	f.String("consul-tls-server-name", "", "name expected in the Consul agent's certificate, when it differs from the address")
	f.Bool("consul-warning-healthy", true, "serve instances whose checks are in warning state (false: treat warning as unhealthy)")
}

// addEtcdFlags are shared by serve and register.
func addEtcdFlags(f *pflag.FlagSet) {
	f.StringSlice("etcd-endpoints", []string{"127.0.0.1:2379"}, "etcd client endpoints (host:port, http:// or https:// URLs); setting this watches an external etcd")
	f.String("etcd-prefix", "", "root of the registry keys (default: /services; /microservices for kratos; the keyspace root for gozero)")
	f.String("etcd-format", etcd.FormatSluice, "key layout: sluice (<prefix>/<service>/<host:port> → JSON), kratos or gozero")
	f.String("etcd-username", "", "etcd user name, when etcd auth is enabled")
	f.String("etcd-password", "", "etcd password (prefer SLUICE_ETCD_PASSWORD over the flag)")
	f.String("etcd-ca", "", "CA certificate (PEM) that signed etcd's server certificate")
	f.String("etcd-cert", "", "client certificate (PEM) for etcd")
	f.String("etcd-key", "", "client key (PEM) for --etcd-cert")
}

func (a *app) etcdOptions() etcdOptions {
	v := a.v
	eps := v.GetStringSlice("etcd-endpoints")
	// From an environment variable the list arrives as one string.
	if len(eps) == 1 && strings.Contains(eps[0], ",") {
		eps = strings.Split(eps[0], ",")
	}
	return etcdOptions{
		endpoints: eps,
		prefix:    v.GetString("etcd-prefix"),
		format:    v.GetString("etcd-format"),
		username:  v.GetString("etcd-username"),
		password:  v.GetString("etcd-password"),
		caFile:    v.GetString("etcd-ca"),
		certFile:  v.GetString("etcd-cert"),
		keyFile:   v.GetString("etcd-key"),
	}
}

func (a *app) registryOptions() (registryOptions, error) {
	o := registryOptions{
		registryFile: a.v.GetString("registry-file"),
		dev:          a.v.GetBool("dev"),
		dataDir:      a.v.GetString("data-dir"),
		etcd:         a.etcdOptions(),
		etcdSet:      a.v.IsSet("etcd-endpoints"),
	}
	if addr := a.v.GetString("consul-addr"); addr != "" {
		cfg := consul.DefaultConfig()
		cfg.Address = addr
		cfg.Token = a.v.GetString("consul-token")
		cfg.Datacenter = a.v.GetString("consul-datacenter")
		cfg.Tags = a.v.GetStringSlice("consul-tag")
		cfg.Exclude = slices.DeleteFunc(slices.Clone(a.v.GetStringSlice("consul-exclude-service")), func(s string) bool { return s == "" })
		cfg.WarningIsHealthy = a.v.GetBool("consul-warning-healthy")
		cfg.TLS = consul.TLSConfig{
			CAFile: a.v.GetString("consul-ca"), CertFile: a.v.GetString("consul-cert"),
			KeyFile: a.v.GetString("consul-key"), ServerName: a.v.GetString("consul-tls-server-name"),
		}
		if _, err := consul.New(cfg); err != nil {
			return o, flagError(err)
		}
		o.consul = &cfg
	}
	check := o.etcd
	if o.embedded() {
		// The embedded etcd may listen on port 0 (any free port); its real
		// address is only known once it runs, and embedded.Start checks it.
		check.endpoints = []string{embedded.DefaultClientURL}
	}
	if _, err := check.config(nil); err != nil {
		return o, err
	}
	if o.dataDir != "" && !o.embedded() {
		return o, &setting.Error{Field: "--data-dir", Reason: "only the embedded etcd (--dev) has a data directory"}
	}
	return o, nil
}

// embedded says whether sluice runs its own etcd: with --dev, or when
// nothing else is configured, so `sluice serve` alone gives a working
// control plane to register into.
func (o registryOptions) embedded() bool {
	return o.dev || (o.registryFile == "" && !o.etcdSet && o.consul == nil)
}

// config turns the flags into the etcd source's config; errors name flags.
func (o etcdOptions) config(log *slog.Logger) (etcd.Config, error) {
	tlsCfg, err := etcd.LoadTLS(o.caFile, o.certFile, o.keyFile)
	if err != nil {
		return etcd.Config{}, flagError(err)
	}
	cfg := etcd.Config{
		Endpoints: o.endpoints, Prefix: o.prefix, Format: o.format, TLS: tlsCfg,
		Username: o.username, Password: o.password, Log: log,
	}
	if _, err := etcd.New(cfg); err != nil {
		return cfg, flagError(err)
	}
	return cfg, nil
}

// registries are the running registry sources and what they need stopped.
type registries struct {
	sources []sources.Source
	// fatal reports the failure of something the sources depend on (the
	// embedded etcd); nil when there is nothing such.
	fatal <-chan error
	close func()
}

// openRegistries starts what the options ask for (the embedded etcd) and
// builds the sources.
func openRegistries(ctx context.Context, log *slog.Logger, o registryOptions) (*registries, error) {
	r := &registries{close: func() {}}
	if o.registryFile != "" {
		r.sources = append(r.sources, file.New(o.registryFile, log))
	}
	if o.embedded() || o.etcdSet {
		eo := o.etcd
		if o.embedded() {
			emb, err := embedded.Start(ctx, embedded.Config{
				ClientURL: eo.endpoints[0], DataDir: o.dataDir, Log: log,
			})
			if err != nil {
				if bad := (*setting.Error)(nil); errors.As(err, &bad) {
					// A bad URL or data directory: the flags say it all.
					return nil, flagError(err)
				}
				return nil, fmt.Errorf("--dev: starting the embedded etcd on %s (--etcd-endpoints): %w", eo.endpoints[0], err)
			}
			log.Info("embedded etcd serving", "endpoints", emb.Endpoints(), "data_dir", emb.DataDir())
			r.fatal = emb.Err()
			r.close = func() {
				if err := emb.Close(); err != nil {
					log.Warn("stopping the embedded etcd", "err", err)
				}
			}
			eo.endpoints = emb.Endpoints()
		}
		cfg, err := eo.config(log)
		if err != nil {
			r.close()
			return nil, err
		}
		src, err := etcd.New(cfg)
		if err != nil {
			r.close()
			return nil, flagError(err)
		}
		r.sources = append(r.sources, src)
	}
	if o.consul != nil {
		cfg := *o.consul
		cfg.Log = log
		src, err := consul.New(cfg)
		if err != nil {
			r.close()
			return nil, flagError(err)
		}
		r.sources = append(r.sources, src)
	}
	return r, nil
}
