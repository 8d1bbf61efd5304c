package main

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sort"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/xds"
)

// newAdminHandler serves health, metrics and the debug views. It is bound to
// loopback by default: the debug views show the whole catalog.
func newAdminHandler(reg *prometheus.Registry, loop *snapshot.Loop, srv *xds.Server, snaps *xds.Cache, guard adminGuard) http.Handler {
	mux := http.NewServeMux()
	// debug holds the views guard protects.
	debug := http.NewServeMux()
	mux.Handle("/debug/", guard.wrap(debug))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := loop.Status()
		code := http.StatusOK
		if !st.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ready": st.Ready, "sources": st.Sources, "policy": st.Policy, "last_error": st.LastError})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// Go profiles, for sizing and for reports of slow pushes.
	debug.HandleFunc("GET /debug/pprof/", pprof.Index)
	debug.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	debug.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	debug.HandleFunc("GET /debug/catalog", func(w http.ResponseWriter, _ *http.Request) {
		st := loop.Status()
		writeJSON(w, http.StatusOK, map[string]any{"catalog": loop.Catalog(), "sources": st.Sources})
	})
	debug.HandleFunc("GET /debug/snapshots", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, loop.Status())
	})
	debug.HandleFunc("GET /debug/proxies", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, srv.Tracker.Proxies())
	})
	// /debug/config?group=KEY shows the resources a proxy group is being
	// served (each proxy's group is in /debug/proxies).
	debug.HandleFunc("GET /debug/config", func(w http.ResponseWriter, r *http.Request) {
		group := r.URL.Query().Get("group")
		snap, err := snaps.GetSnapshot(group)
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no snapshot for group " + group})
			return
		}
		out := map[string]any{}
		for i := types.ResponseType(0); i < types.UnknownType; i++ {
			url, err := cache.GetResponseTypeURL(i)
			if err != nil {
				continue
			}
			res := snap.GetResources(url)
			if len(res) == 0 {
				continue
			}
			names := make([]string, 0, len(res))
			for n := range res {
				names = append(names, n)
			}
			sort.Strings(names)
			list := make([]json.RawMessage, 0, len(names))
			for _, n := range names {
				b, err := protojson.Marshal(res[n])
				if err != nil {
					writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
					return
				}
				list = append(list, b)
			}
			out[url] = map[string]any{"version": snap.GetVersion(url), "resources": list}
		}
		writeJSON(w, http.StatusOK, out)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
