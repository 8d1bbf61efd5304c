// Command demo-service is the small HTTP service of sluice's Kubernetes demo
// and its kind end-to-end suite, written the way our users' Go services are:
// it registers itself in etcd (a key under a lease it keeps alive, in the
// layout sluice reads) or with a Consul agent (a service with an HTTP check),
// answers every request with its pod name, and on SIGTERM fails its health
// check, deregisters, keeps serving for DRAIN_DELAY while proxies catch up,
// then stops. Knobs (/fail, /flaky, /slow) make one instance misbehave on
// demand; see server.
//
// It is configured by environment variables; run it with -h for the list.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 {
		fmt.Fprintf(os.Stderr, "usage: demo-service (configured by the environment)\n\n%s\n", envHelp)
		if args[0] == "-h" || args[0] == "--help" {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo-service: %v\n\n%s\n", err, envHelp)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, log, cfg, nil); err != nil {
		log.Error("demo-service failed", "err", err)
		return 1
	}
	return 0
}

// registrar keeps an instance registered until its context ends, then
// deregisters it.
type registrar interface {
	Run(ctx context.Context) error
}

type noRegistrar struct{}

func (noRegistrar) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// newRegistrar connects to the configured registry. close releases the
// client once the registrar has finished.
func newRegistrar(c config, log *slog.Logger) (reg registrar, closeFn func(), err error) {
	switch c.Registry {
	case registryEtcd:
		cli, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints, DialTimeout: requestTimeout})
		if err != nil {
			return nil, nil, fmt.Errorf("etcd client for %v: %w", c.EtcdEndpoints, err)
		}
		return newEtcdRegistrar(cli, c, log), func() { _ = cli.Close() }, nil
	case registryConsul:
		cli, err := api.NewClient(&api.Config{Address: c.ConsulAddr})
		if err != nil {
			return nil, nil, fmt.Errorf("consul client for %s: %w", c.ConsulAddr, err)
		}
		return newConsulRegistrar(cli.Agent(), c, log), func() {}, nil
	default:
		return noRegistrar{}, func() {}, nil
	}
}

// serve runs the HTTP server and the registration until ctx ends, then
// shuts down in the order that loses no request: fail /healthz, deregister,
// wait DrainDelay, stop the server. ready, when not nil, receives the
// listen address once the server listens.
func serve(ctx context.Context, log *slog.Logger, c config, ready chan<- string) error {
	s := newServer(c)
	lis, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR: %w", err)
	}
	reg, closeReg, err := newRegistrar(c, log)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer closeReg()
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("demo-service serving", "addr", lis.Addr().String(), "service", c.Service, "pod", c.Pod, "registry", c.Registry)
	if ready != nil {
		ready <- lis.Addr().String()
	}

	regCtx, stopReg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReg()
	registered := make(chan error, 1)
	go func() { registered <- reg.Run(regCtx) }()

	select {
	case err := <-served:
		stopReg()
		return errors.Join(fmt.Errorf("http server: %w", err), <-registered)
	case <-ctx.Done():
	}
	log.Info("shutting down: deregistering, then draining", "drain_delay", c.DrainDelay)
	s.draining.Store(true)
	stopReg()
	if err := <-registered; err != nil {
		log.Warn("deregistering", "err", err)
	}
	wait(context.Background(), c.DrainDelay)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("http server shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	log.Info("demo-service stopped")
	return nil
}
