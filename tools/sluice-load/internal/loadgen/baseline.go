package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// oneGroup puts every node in one snapshot, as the baseline measurement
// does.
type oneGroup struct{}

func (oneGroup) ID(*corev3.Node) string { return "all" }

// Baseline is a bare go-control-plane ADS server: its snapshot cache with
// one snapshot for every node, built once from the mesh, and rebuilt when
// POST /change on the admin address asks for the run's change. It is the
// reference sluice is measured against.
type Baseline struct {
	Mesh      Mesh
	XDSAddr   string
	AdminAddr string
}

// Serve runs the baseline until ctx ends.
func (b *Baseline) Serve(ctx context.Context) error {
	snaps := cache.NewSnapshotCache(false, oneGroup{}, nil)
	build := func(version string, without bool) (*cache.Snapshot, error) {
		cat := sources.Merge(map[string]sources.State{"load": b.Mesh.State(without)})
		res, err := translator.New().Translate(translator.Input{Catalog: cat, Proxy: translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar}})
		if err != nil {
			return nil, err
		}
		return cache.NewSnapshot(version, res.Resources)
	}
	snap, err := build("1", false)
	if err != nil {
		return err
	}
	if err := snaps.SetSnapshot(ctx, "all", snap); err != nil {
		return err
	}
	gs := grpc.NewServer(grpc.MaxConcurrentStreams(1 << 20))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, snaps, nil))
	lis, err := net.Listen("tcp", b.XDSAddr)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("POST /change", func(w http.ResponseWriter, r *http.Request) {
		snap, err := build("2", true)
		if err == nil {
			err = snaps.SetSnapshot(r.Context(), "all", snap)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	admin := &http.Server{Addr: b.AdminAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	adminLis, err := net.Listen("tcp", b.AdminAddr)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(lis) }()
	go func() { errc <- admin.Serve(adminLis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("baseline: %w", err)
	case <-ctx.Done():
	}
	gs.Stop()
	if err := admin.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
