// Package admin is sluice's admin HTTP API: health and readiness for
// probes, Prometheus metrics, and debug views of the merged catalog, the
// snapshot loop, the connected proxies, the config each proxy group is
// served, and Go's profiles. The debug views show the whole mesh, so a
// Guard decides who may read them.
//
// It reads the rest of sluice through the small interfaces below, so it
// depends on what it shows, not on how the loop or the xDS server are
// built.
package admin

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/xds"
)

// Loop is what the API reads of the snapshot loop: its readiness and
// status, the merged catalog of its last build, and the policy set it
// serves (nil: the built-in defaults).
type Loop interface {
	Status() snapshot.Status
	Catalog() sources.Catalog
	Policy() *policy.Set
}

// Proxies lists the connected xDS clients and what each was sent and
// acknowledged.
type Proxies interface {
	Proxies() []xds.ProxyStatus
	// Node lists the streams of one client, with what each type's last
	// response changes of what the client acknowledged.
	Node(id string) []xds.ProxyStatus
}

// Status is the body of /debug/status, what `sluice status` shows. Its
// field names are stable (docs/deploy.md documents them).
type Status struct {
	// Replica names the sluice that answers (its hostname): the one the
	// listed clients are connected to.
	Replica string `json:"replica"`
	// Proxies are the connected clients' streams, in node id order, as
	// in /debug/proxies; with ?node=ID, that node's streams only, each
	// type with its changes.
	Proxies []xds.ProxyStatus `json:"proxies"`
	// Groups, with ?node=ID only, are the snapshot status of the node's
	// groups (versions and dependencies), as in /debug/snapshots.
	Groups []snapshot.GroupStatus `json:"groups,omitempty"`
	// Rollback, when set, is the policy rollback in effect: clients
	// rejected what the newest policy set made (as in /readyz).
	Rollback *snapshot.RollbackStatus `json:"rollback,omitempty"`
}

// Policy is the body of /debug/policy: the policy set the loop serves
// now, file by file as it was read, so that `sluice diff --admin-addr`
// and its kin load it again (policy.Load) and resolve what the running
// sluice resolves. Its field names are stable (docs/deploy.md).
type Policy struct {
	// Files are the set's files in load order; empty when sluice serves
	// the built-in defaults (no --policy-dir).
	Files []PolicyFile `json:"files"`
	// Rollback, when set, says the set served is not the newest valid
	// one: clients rejected what that made (as in /readyz).
	Rollback *snapshot.RollbackStatus `json:"rollback,omitempty"`
}

// PolicyFile is one policy file: its path on the sluice that serves it,
// and its content as read.
type PolicyFile struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// Snapshots returns the snapshot a proxy group is being served.
type Snapshots interface {
	GetSnapshot(group string) (cache.ResourceSnapshot, error)
}

// Config is what the API serves.
type Config struct {
	// Metrics is served at /metrics; promhttp's own metrics are
	// registered in it too.
	Metrics *prometheus.Registry
	Loop    Loop
	// Replica names this sluice in /debug/status.
	Replica   string
	Proxies   Proxies
	Snapshots Snapshots
	// Guard protects /debug/ (the views and the profiles).
	Guard Guard
}

// NewHandler serves /healthz, /readyz and /metrics to anyone, and the
// /debug/ views to whom c.Guard lets through.
func NewHandler(c Config) http.Handler {
	mux := http.NewServeMux()
	// debug holds the views the guard protects.
	debug := http.NewServeMux()
	mux.Handle("/debug/", c.Guard.wrap(debug))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := c.Loop.Status()
		code := http.StatusOK
		if !st.Ready {
			code = http.StatusServiceUnavailable
		}
		body := map[string]any{"ready": st.Ready, "sources": st.Sources, "policy": st.Policy, "translator": st.Translator, "last_error": st.LastError}
		if st.Rollback != nil {
			// Still ready: the accepted policy set is served.
			body["rollback"] = st.Rollback
		}
		writeJSON(w, code, body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.Metrics, promhttp.HandlerOpts{Registry: c.Metrics}))
	// Go profiles, for sizing and for reports of slow pushes.
	debug.HandleFunc("GET /debug/pprof/", pprof.Index)
	debug.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	debug.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	debug.HandleFunc("GET /debug/catalog", func(w http.ResponseWriter, _ *http.Request) {
		st := c.Loop.Status()
		writeJSON(w, http.StatusOK, map[string]any{"catalog": c.Loop.Catalog(), "sources": st.Sources})
	})
	debug.HandleFunc("GET /debug/policy", func(w http.ResponseWriter, _ *http.Request) {
		// Status first: a rollback that ends in between shows the newer
		// set without it, never the older set without it.
		p := Policy{Files: []PolicyFile{}, Rollback: c.Loop.Status().Rollback}
		for _, f := range c.Loop.Policy().Sources() {
			p.Files = append(p.Files, PolicyFile{Name: f.Name, Content: string(f.Data)})
		}
		writeJSON(w, http.StatusOK, p)
	})
	debug.HandleFunc("GET /debug/snapshots", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.Loop.Status())
	})
	debug.HandleFunc("GET /debug/proxies", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.Proxies.Proxies())
	})
	// /debug/status lists the connected clients with the replica that
	// serves them; ?node=ID shows one client's detail.
	debug.HandleFunc("GET /debug/status", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("node")
		if id == "" {
			writeJSON(w, http.StatusOK, Status{Replica: c.Replica, Proxies: c.Proxies.Proxies(), Rollback: c.Loop.Status().Rollback})
			return
		}
		st := Status{Replica: c.Replica, Proxies: c.Proxies.Node(id), Rollback: c.Loop.Status().Rollback}
		if len(st.Proxies) == 0 {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no connected xDS client has node id " + strconv.Quote(id)})
			return
		}
		groups := map[string]bool{}
		for _, p := range st.Proxies {
			groups[p.Group] = true
		}
		for _, g := range c.Loop.Status().Groups {
			if groups[g.Key] {
				st.Groups = append(st.Groups, g)
			}
		}
		writeJSON(w, http.StatusOK, st)
	})
	// /debug/config?group=KEY shows the resources a proxy group is being
	// served (each proxy's group is in /debug/proxies).
	debug.HandleFunc("GET /debug/config", func(w http.ResponseWriter, r *http.Request) {
		group := r.URL.Query().Get("group")
		snap, err := c.Snapshots.GetSnapshot(group)
		if err != nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no snapshot for group " + group})
			return
		}
		out, err := snapshotJSON(snap)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
	return mux
}

// snapshotJSON is a snapshot's resources by type URL, each type with its
// version and its resources (protojson) in name order.
func snapshotJSON(snap cache.ResourceSnapshot) (map[string]any, error) {
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
				return nil, err
			}
			list = append(list, b)
		}
		out[url] = map[string]any{"version": snap.GetVersion(url), "resources": list}
	}
	return out, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
