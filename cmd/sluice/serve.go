package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/sluice-mesh/sluice/cmd/internal/admin"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
	"github.com/sluice-mesh/sluice/xds/tlsfiles"
)

type serveOptions struct {
	xdsAddr, adminAddr     string
	registries             registryOptions
	policyDir              string
	otelEndpoint           string
	groupIdleTTL           time.Duration
	nackRollback           bool
	adminTokenFile         string
	maxRequestBytes        int
	maxStreamsPerConn      uint32
	maxGroups              int
	groupRate              float64
	otelInsecure           bool
	holdOff, maxDelay      time.Duration
	outboundPort           uint32
	outboundAddress        string
	tlsCert, tlsKey, tlsCA string
}

func (a *app) serveCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Watch the registries and serve xDS to Envoy proxies and gRPC clients",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := a.serveOptions()
			if err != nil {
				return err
			}
			log, err := a.logger()
			if err != nil {
				return err
			}
			return serve(cmd.Context(), log, o)
		},
	}
	f := cmd.Flags()
	f.String("xds-addr", "127.0.0.1:18000", "address of the xDS (ADS) gRPC server")
	f.String("admin-addr", defaultAdminAddr, "address of the admin HTTP server (health, metrics, debug views)")
	f.String("admin-token-file", "", "file holding a bearer token the admin API's /debug/ views and profiles require (read on each request); without it they are served on a loopback --admin-addr only")
	addRegistryFlags(f)
	f.String("policy-dir", "", "directory of policy files (*.yaml), re-read on change; nothing is served until it holds a valid policy set")
	f.Bool("nack-rollback", true, "when a client rejects config that a policy change made, serve the policy set it had accepted until the policy files change again")
	f.Duration("debounce", 100*time.Millisecond, "wait this long after a change for more changes before pushing")
	f.Duration("max-delay", time.Second, "push at the latest this long after the first of a burst of changes")
	f.Uint32("outbound-port", translator.DefaultOutboundPort, "port of Envoy's outbound listener unless the node's metadata sets outbound_port")
	f.String("outbound-address", translator.DefaultOutboundAddress, "address of Envoy's outbound listener unless the node's metadata sets outbound_address")
	f.Duration("proxy-group-ttl", snapshot.DefaultGroupIdleTTL, "forget a proxy group (and stop translating for it) this long after its last proxy disconnected")
	f.Int("xds-max-request-bytes", xds.DefaultMaxRequestBytes, "largest xDS request accepted; a bigger one ends its stream with ResourceExhausted")
	f.Uint32("xds-max-streams-per-connection", xds.DefaultMaxStreamsPerConnection, "most concurrent xDS streams one client connection may open")
	f.Int("max-proxy-groups", snapshot.DefaultMaxGroups, "most proxy groups (distinct proxy identities); a client that would make one more is refused (ResourceExhausted) unless a group without proxies can be forgotten")
	f.Float64("proxy-group-rate", snapshot.DefaultGroupRate, fmt.Sprintf("most new proxy groups a second, with a burst of %d seconds' worth; clients beyond it are refused (ResourceExhausted) and retry", snapshot.DefaultGroupBurstSeconds))
	f.String("otel-endpoint", "", "export sluice's own traces (source updates, translations, pushes) over OTLP/gRPC to this host:port; off when empty")
	f.Bool("otel-insecure", true, "talk plaintext to --otel-endpoint (set false for TLS)")
	f.String("xds-tls-cert", "", "serve xDS over TLS with this certificate (PEM); needs --xds-tls-key")
	f.String("xds-tls-key", "", "private key (PEM) for --xds-tls-cert")
	f.String("xds-tls-client-ca", "", "require xDS clients to present a certificate signed by this CA (PEM)")
	return cmd
}

func (a *app) serveOptions() (serveOptions, error) {
	v := a.v
	o := serveOptions{
		xdsAddr:           v.GetString("xds-addr"),
		adminAddr:         v.GetString("admin-addr"),
		adminTokenFile:    v.GetString("admin-token-file"),
		policyDir:         v.GetString("policy-dir"),
		otelEndpoint:      v.GetString("otel-endpoint"),
		groupIdleTTL:      v.GetDuration("proxy-group-ttl"),
		nackRollback:      v.GetBool("nack-rollback"),
		maxGroups:         v.GetInt("max-proxy-groups"),
		maxRequestBytes:   v.GetInt("xds-max-request-bytes"),
		maxStreamsPerConn: v.GetUint32("xds-max-streams-per-connection"),
		groupRate:         v.GetFloat64("proxy-group-rate"),
		otelInsecure:      v.GetBool("otel-insecure"),
		holdOff:           v.GetDuration("debounce"),
		maxDelay:          v.GetDuration("max-delay"),
		outboundAddress:   v.GetString("outbound-address"),
		tlsCert:           v.GetString("xds-tls-cert"),
		tlsKey:            v.GetString("xds-tls-key"),
		tlsCA:             v.GetString("xds-tls-client-ca"),
	}
	for _, addr := range []struct{ flag, value string }{{"xds-addr", o.xdsAddr}, {"admin-addr", o.adminAddr}} {
		if _, _, err := net.SplitHostPort(addr.value); err != nil {
			return o, &setting.Error{Field: "--" + addr.flag, Value: addr.value, Reason: "must be host:port", Err: err}
		}
	}
	if o.holdOff <= 0 {
		return o, &setting.Error{Field: "--debounce", Value: o.holdOff, Reason: "must be positive"}
	}
	if o.maxDelay < o.holdOff {
		return o, &setting.Error{Field: "--max-delay", Value: o.maxDelay, Reason: fmt.Sprintf("must be at least --debounce (%s)", o.holdOff)}
	}
	port := v.GetUint64("outbound-port")
	if port < 1 || port > 65535 {
		return o, &setting.Error{Field: "--outbound-port", Value: v.GetString("outbound-port"), Reason: "must be a port (1-65535)"}
	}
	o.outboundPort = uint32(port)
	if net.ParseIP(o.outboundAddress) == nil {
		return o, &setting.Error{Field: "--outbound-address", Value: o.outboundAddress, Reason: "must be an IP address"}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return o, &setting.Error{Field: "--xds-tls-cert", Reason: "must be given together with", With: []string{"--xds-tls-key"}}
	}
	if o.tlsCA != "" && o.tlsCert == "" {
		return o, &setting.Error{Field: "--xds-tls-client-ca", Reason: "needs", With: []string{"--xds-tls-cert", "--xds-tls-key"}}
	}
	if o.policyDir != "" {
		if fi, err := os.Stat(o.policyDir); err != nil || !fi.IsDir() {
			return o, &setting.Error{Field: "--policy-dir", Value: o.policyDir, Reason: "must be a directory", Err: err}
		}
	}
	if o.maxRequestBytes < 64<<10 {
		return o, &setting.Error{Field: "--xds-max-request-bytes", Value: o.maxRequestBytes, Reason: "must be at least 65536"}
	}
	if o.maxStreamsPerConn < 1 {
		return o, &setting.Error{Field: "--xds-max-streams-per-connection", Value: o.maxStreamsPerConn, Reason: "must be at least 1"}
	}
	if o.maxGroups < 1 {
		return o, &setting.Error{Field: "--max-proxy-groups", Value: o.maxGroups, Reason: "must be at least 1"}
	}
	if o.groupRate <= 0 || math.IsNaN(o.groupRate) || math.IsInf(o.groupRate, 0) {
		return o, &setting.Error{Field: "--proxy-group-rate", Value: o.groupRate, Reason: "must be a positive number of groups a second"}
	}
	if o.groupIdleTTL <= 0 {
		return o, &setting.Error{Field: "--proxy-group-ttl", Value: o.groupIdleTTL, Reason: "must be positive"}
	}
	if o.otelEndpoint != "" {
		if _, _, err := net.SplitHostPort(o.otelEndpoint); err != nil {
			return o, &setting.Error{Field: "--otel-endpoint", Value: o.otelEndpoint, Reason: "must be host:port", Err: err}
		}
	}
	var err error
	o.registries, err = a.registryOptions()
	return o, err
}

// defaultAdminAddr is where serve's admin API listens, and where
// `sluice status` looks for it, by default.
const defaultAdminAddr = "127.0.0.1:18080"

// replicaName names this sluice in the admin API's /debug/status: its
// hostname (a pod's name in Kubernetes).
func replicaName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}

func (o serveOptions) tlsConfig() (*tls.Config, error) {
	cfg, err := tlsfiles.Server{CertFile: o.tlsCert, KeyFile: o.tlsKey, ClientCAFile: o.tlsCA}.Config()
	return cfg, flagError(err)
}

// serve wires sources, the snapshot loop, the xDS server and the admin server,
// and runs them until ctx ends or one of them fails.
func serve(ctx context.Context, log *slog.Logger, o serveOptions) error {
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	tp, stopTracing, err := tracing(ctx, log, o.otelEndpoint, o.otelInsecure)
	if err != nil {
		return err
	}
	defer stopTracing()
	tracer := tp.Tracer("github.com/sluice-mesh/sluice")

	regs, err := openRegistries(ctx, log, o.registries)
	if err != nil {
		return err
	}
	defer regs.close()
	srcs := regs.sources
	names := make([]string, len(srcs))
	for i, s := range srcs {
		names[i] = s.Name()
	}

	var policies chan watch.Update
	if o.policyDir != "" {
		policies = make(chan watch.Update, 1)
	}

	tr := translator.New()
	tr.OutboundPort, tr.OutboundAddress = o.outboundPort, o.outboundAddress
	snapshots := xds.NewCache(log)
	loop := snapshot.NewLoop(snapshot.Config{
		Sources: names, Translator: tr, Publisher: snapshots, Policies: policies,
		HoldOff: o.holdOff, MaxDelay: o.maxDelay,
		Log: log.With("component", "snapshot"), Metrics: snapshot.NewMetrics(reg), Tracer: tracer,
		GroupIdleTTL: o.groupIdleTTL,
		MaxGroups:    o.maxGroups,
		GroupRate:    o.groupRate,
		NackRollback: o.nackRollback,
	})
	// One context ends everything: a signal, or the failure of any part.
	// The xDS server's streams follow it too, so shutdown does not wait
	// out the drain timeout on streams that never end by themselves.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := xds.NewServer(ctx, xds.Config{
		Log: log.With("component", "xds"), Metrics: xds.NewMetrics(reg),
		Cache: snapshots, Groups: loop, TLS: tlsCfg, Tracer: tracer,
		MaxRequestBytes: o.maxRequestBytes, MaxStreamsPerConnection: o.maxStreamsPerConn,
	})

	xdsLis, err := net.Listen("tcp", o.xdsAddr)
	if err != nil {
		return &setting.Error{Field: "--xds-addr", Value: o.xdsAddr, Reason: "cannot be listened on", Err: err}
	}
	adminLis, err := net.Listen("tcp", o.adminAddr)
	if err != nil {
		_ = xdsLis.Close()
		return &setting.Error{Field: "--admin-addr", Value: o.adminAddr, Reason: "cannot be listened on", Err: err}
	}
	adminServer := &http.Server{
		Handler: admin.NewHandler(admin.Config{
			Metrics: reg, Loop: loop, Proxies: srv.Tracker, Snapshots: snapshots, Replica: replicaName(),
			Guard: admin.Guard{TokenFile: o.adminTokenFile, Loopback: isLoopback(o.adminAddr)},
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info("sluice serving", "xds", xdsLis.Addr().String(), "admin", adminLis.Addr().String(), "sources", names)
	if !isLoopback(o.adminAddr) && o.adminTokenFile == "" {
		log.Warn("the admin API listens beyond loopback without --admin-token-file: /debug/ views and profiles are refused; health, readiness and metrics are served", "admin", o.adminAddr)
	}
	if !isLoopback(o.xdsAddr) && tlsCfg == nil {
		log.Warn("xDS is served in plaintext beyond loopback: any client that reaches it gets the mesh's configuration; set --xds-tls-cert/--xds-tls-key (and --xds-tls-client-ca)", "xds", o.xdsAddr)
	}

	events := make(chan sources.Event, 16)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, context.Canceled) {
				errOnce.Do(func() { firstErr = fmt.Errorf("%s: %w", name, err) })
				cancel()
			}
		}()
	}
	for _, s := range srcs {
		run("source "+s.Name(), func() error { return s.Run(ctx, events) })
	}
	if policies != nil {
		w := &watch.Watcher{Dir: o.policyDir, Log: log.With("component", "policy")}
		run("policy watcher", func() error { return w.Run(ctx, policies) })
	}
	if regs.fatal != nil {
		run("embedded etcd", func() error {
			select {
			case err := <-regs.fatal:
				return fmt.Errorf("embedded etcd failed: %w", err)
			case <-ctx.Done():
				return nil
			}
		})
	}
	run("snapshot loop", func() error { return loop.Run(ctx, events) })
	run("xds server", func() error { return srv.Serve(ctx, xdsLis) })
	run("admin server", func() error {
		if err := adminServer.Serve(adminLis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	<-ctx.Done()
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = adminServer.Shutdown(shutdownCtx)
	wg.Wait()
	log.Info("sluice stopped")
	return firstErr
}
