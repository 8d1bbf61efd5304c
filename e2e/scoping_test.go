package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestScopingEnvoySidecars: dependency scoping with real Envoy sidecars of
// two services (two proxy groups) and a gateway, over state-of-the-world and
// delta ADS. Three backend services alpha, beta and gamma are in the
// registry; ServicePolicy frontend declares dependencies [alpha], worker's
// leaves the field out (every service).
//
//   - frontend's sidecar routes Host: alpha and answers Envoy's own 404 (no
//     route: router's no_route counter, no backend hit) for beta and gamma;
//     it was never sent their clusters or load assignments (its config dump
//     has none, and no cluster was ever removed from it);
//   - worker's sidecar and a gateway that names service frontend reach all
//     three; the cluster of alpha is the same bytes in both sidecar groups;
//   - /debug/snapshots shows each group's dependency set;
//   - rewriting frontend's policy file to [alpha, beta] makes beta reachable
//     through the running sidecar (gamma still 404) without disturbing
//     alpha's cluster or the versions of the worker and gateway groups;
//   - a dependency on delta, not yet registered, is a warning and a missing
//     dependency, and is served once delta appears in the registry;
//   - [] leaves frontend no outbound service but its inbound listener;
//     removing the file gives it every service again;
//   - each Envoy did all of it over the one ADS stream it opened at start.
func TestScopingEnvoySidecars(t *testing.T) {
	requireE2E(t)
	for _, mode := range []string{"sotw", "delta"} {
		t.Run(mode, func(t *testing.T) {
			envoyBinary(t)
			testScoping(t, mode)
		})
	}
}

func testScoping(t *testing.T, mode string) {
	backends := map[string]*httpBackend{}
	reg := "services:\n"
	for _, name := range []string{"alpha", "beta", "gamma"} {
		b := startHTTPBackend(t, name, answerName(name))
		backends[name] = b
		reg += serviceEntry(name, instance(b.addr, ""))
	}
	regFile := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, regFile, reg)
	dir := t.TempDir()
	frontendPolicy := filepath.Join(dir, "frontend.yaml")
	writeFile(t, frontendPolicy, servicePolicy("frontend", "  dependencies: [alpha]"))
	writeFile(t, filepath.Join(dir, "worker.yaml"), servicePolicy("worker", "  timeout: 10s"))
	s := startSluice(t, "--registry-file", regFile, "--policy-dir", dir)

	var extra []string
	if mode == "delta" {
		extra = append(extra, "--delta")
	}
	fe := startScopedSidecar(t, s, "frontend", "frontend-"+mode, extra)
	wk := startScopedSidecar(t, s, "worker", "worker-"+mode, extra)
	gw := startEnvoy(t, s, "frontend", "frontend-gw-"+mode, append([]string{"--role", "gateway"}, extra...)...)

	// Every proxy converges: the sidecars' inbound listeners reach their
	// applications, worker and the gateway reach every service, frontend
	// reaches alpha.
	waitServes(t, fe.inbound, "frontend", "frontend-app")
	waitServes(t, wk.inbound, "worker", "worker-app")
	for _, name := range []string{"alpha", "beta", "gamma"} {
		waitServes(t, wk.OutboundAddr, name, name)
		waitServes(t, gw.OutboundAddr, name, name)
	}
	waitServes(t, fe.OutboundAddr, "alpha", "alpha")
	s.noNACKs(t, 3)

	// frontend's sidecar: undeclared services have no route, and their
	// resources were never sent, not merely left out of the routes.
	wantNoRoute(t, fe.envoyProc, "beta", backends["beta"])
	wantNoRoute(t, fe.envoyProc, "gamma", backends["gamma"])
	fe.wantScope(t, "alpha")
	wk.wantScope(t, "alpha", "beta", "gamma")
	wantSent(t, s, fe, "frontend", "alpha")
	wantSent(t, s, wk, "worker", "alpha", "beta", "gamma")
	if n := fe.stat(t, "cluster_manager.cluster_removed"); n != 0 {
		t.Fatalf("frontend's envoy had %d clusters removed: it was sent services outside its dependencies", n)
	}

	// sluice's view of the groups.
	wantGroupDeps(t, s, "sidecar", "frontend", depsView{Services: []string{"alpha"}}, frontendPolicy)
	wantGroupDeps(t, s, "sidecar", "worker", depsView{All: true}, "")
	wantGroupDeps(t, s, "gateway", "frontend", depsView{All: true}, "")

	// The per-service resources of alpha are the same for both sidecar
	// groups (same view), whatever their dependency sets.
	feAlpha := groupResource(t, s, groupKey(t, s, "sidecar", "frontend"), clusterType, "alpha")
	wkAlpha := groupResource(t, s, groupKey(t, s, "sidecar", "worker"), clusterType, "alpha")
	if feAlpha != wkAlpha {
		t.Errorf("alpha's cluster differs between the sidecar groups:\nfrontend: %s\nworker:   %s", feAlpha, wkAlpha)
	}

	// Declare beta: the running sidecar gets it with the next push.
	workerVersions, gatewayVersions := groupVersions(t, s, "sidecar", "worker"), groupVersions(t, s, "gateway", "frontend")
	modified := fe.stat(t, "cluster_manager.cluster_modified")
	writeFile(t, frontendPolicy, servicePolicy("frontend", "  dependencies: [alpha, beta]"))
	waitServes(t, fe.OutboundAddr, "beta", "beta")
	wantServes(t, fe.OutboundAddr, "alpha", "alpha")
	wantNoRoute(t, fe.envoyProc, "gamma", backends["gamma"])
	fe.wantScope(t, "alpha", "beta")
	wantSent(t, s, fe, "frontend", "alpha", "beta")
	wantGroupDeps(t, s, "sidecar", "frontend", depsView{Services: []string{"alpha", "beta"}}, frontendPolicy)
	if n := fe.stat(t, "cluster_manager.cluster_removed"); n != 0 {
		t.Errorf("adding a dependency removed %d clusters from frontend's envoy", n)
	}
	if n := fe.stat(t, "cluster_manager.cluster_modified"); n != modified {
		t.Errorf("adding a dependency modified %d existing clusters of frontend's envoy (alpha's did not change)", n-modified)
	}
	if got := groupVersions(t, s, "sidecar", "worker"); !reflect.DeepEqual(got, workerVersions) {
		t.Errorf("frontend's policy change changed the worker group's versions:\nbefore %v\nafter  %v", workerVersions, got)
	}
	if got := groupVersions(t, s, "gateway", "frontend"); !reflect.DeepEqual(got, gatewayVersions) {
		t.Errorf("frontend's dependencies changed its gateway group's versions:\nbefore %v\nafter  %v", gatewayVersions, got)
	}
	wantGroupDeps(t, s, "gateway", "frontend", depsView{All: true}, "")
	for _, name := range []string{"alpha", "beta", "gamma"} {
		wantServes(t, wk.OutboundAddr, name, name)
	}
	s.noNACKs(t, 3)

	// A dependency declared before its service registers: a warning on the
	// entry and a missing dependency of the group, then served once the
	// service appears in the registry.
	delta := startHTTPBackend(t, "delta", answerName("delta"))
	backends["delta"] = delta
	writeFile(t, frontendPolicy, servicePolicy("frontend", "  dependencies: [alpha, beta, delta]"))
	eventually(t, 30*time.Second, "the missing dependency to be reported", func() error {
		if got := group(t, s, "sidecar", "frontend").Dependencies.Services; !slices.Equal(got, []string{"alpha", "beta", "delta"}) {
			return fmt.Errorf("frontend's dependencies %v", got)
		}
		return nil
	})
	wantGroupDeps(t, s, "sidecar", "frontend", depsView{Services: []string{"alpha", "beta", "delta"}}, frontendPolicy, "delta")
	eventually(t, 10*time.Second, "the warning on delta", func() error {
		if w := dependencyWarnings(t, s); !slices.Equal(w, []string{frontendPolicy + ":5: spec.dependencies[2]"}) {
			return fmt.Errorf("policy warnings on dependencies %v, want the one on delta; policy status %s", w, s.adminText(t, "/debug/snapshots"))
		}
		return nil
	})
	wantNoRoute(t, fe.envoyProc, "delta", delta)
	wantServes(t, fe.OutboundAddr, "beta", "beta")
	writeFile(t, regFile, reg+serviceEntry("delta", instance(delta.addr, "")))
	waitServes(t, fe.OutboundAddr, "delta", "delta")
	waitServes(t, wk.OutboundAddr, "delta", "delta")
	wantNoRoute(t, fe.envoyProc, "gamma", backends["gamma"])
	fe.wantScope(t, "alpha", "beta", "delta")
	wantSent(t, s, fe, "frontend", "alpha", "beta", "delta")
	wantGroupDeps(t, s, "sidecar", "frontend", depsView{Services: []string{"alpha", "beta", "delta"}}, frontendPolicy)
	if w := dependencyWarnings(t, s); len(w) != 0 {
		t.Errorf("policy warnings on dependencies %v after delta registered, want none", w)
	}
	s.noNACKs(t, 3)

	// No dependencies at all: no outbound service, the inbound side stays.
	writeFile(t, frontendPolicy, servicePolicy("frontend", "  dependencies: []"))
	eventually(t, 30*time.Second, "frontend's sidecar to drop every outbound service", func() error {
		code, _, _, err := request(fe.OutboundAddr, http.MethodGet, "alpha", "/", nil)
		switch {
		case err != nil:
			return fmt.Errorf("Host alpha: %w", err)
		case code != http.StatusNotFound:
			return fmt.Errorf("Host alpha: %d, want 404", code)
		}
		return nil
	})
	wantNoRoute(t, fe.envoyProc, "beta", backends["beta"])
	fe.wantScope(t)
	wantSent(t, s, fe, "frontend")
	wantGroupDeps(t, s, "sidecar", "frontend", depsView{Services: []string{}}, frontendPolicy)
	wantServes(t, fe.inbound, "frontend", "frontend-app")
	s.noNACKs(t, 3)

	// Without its policy file, frontend depends on every service again.
	if err := os.Remove(frontendPolicy); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"alpha", "beta", "gamma", "delta"} {
		waitServes(t, fe.OutboundAddr, name, name)
	}
	fe.wantScope(t, "alpha", "beta", "delta", "gamma")
	wantSent(t, s, fe, "frontend", "alpha", "beta", "delta", "gamma")
	wantGroupDeps(t, s, "sidecar", "frontend", depsView{All: true}, "")
	s.noNACKs(t, 3)

	// All of it over the ADS stream each Envoy opened at start.
	for _, e := range []*envoyProc{fe.envoyProc, wk.envoyProc, gw} {
		cx, streams := e.stat(t, "cluster.sluice_xds.upstream_cx_total"), e.stat(t, "cluster.sluice_xds.upstream_rq_total")
		if cx != 1 || streams != 1 {
			t.Errorf("envoy %s opened %d connections and %d streams to sluice, want 1 and 1", e.AdminAddr, cx, streams)
		}
	}
}

const (
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	endpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// scopedSidecar is a sidecar Envoy with an application behind its inbound
// listener.
type scopedSidecar struct {
	*envoyProc
	inbound string // the inbound listener's address
	appPort string
}

// startScopedSidecar starts a sidecar of service (its application: an HTTP
// server answering "<service>-app") with the given bootstrap flags.
func startScopedSidecar(t *testing.T, s *sluice, service, nodeID string, extra []string) *scopedSidecar {
	t.Helper()
	app := startHTTPBackend(t, service+"-app", answerName(service+"-app"))
	_, appPort, _ := net.SplitHostPort(app.addr)
	inbound := strconv.Itoa(listenerPort(t))
	args := append([]string{"--inbound-port", appPort, "--inbound-listener-address", "127.0.0.1", "--inbound-listener-port", inbound}, extra...)
	e := startEnvoy(t, s, service, nodeID, args...)
	return &scopedSidecar{envoyProc: e, inbound: net.JoinHostPort("127.0.0.1", inbound), appPort: appPort}
}

// wantServes checks, once, that Host: host through the Envoy listener at
// addr is answered 200 by the backend named want.
func wantServes(t *testing.T, addr, host, want string) {
	t.Helper()
	if err := serves(addr, host, want); err != nil {
		t.Fatal(err)
	}
}

// waitServes waits until Host: host through the Envoy listener at addr is
// answered 200 by the backend named want.
func waitServes(t *testing.T, addr, host, want string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("Host %s via %s to reach %s", host, addr, want), func() error {
		return serves(addr, host, want)
	})
}

func serves(addr, host, want string) error {
	code, _, body, err := request(addr, http.MethodGet, host, "/", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK || body != want {
		return fmt.Errorf("Host %s via %s: %d %q, want 200 %q", host, addr, code, body, want)
	}
	return nil
}

// wantNoRoute checks that Host: host through e's outbound listener gets
// Envoy's own 404 for a request without a route: the router counts it as
// no_route and the service's backend never sees it.
func wantNoRoute(t *testing.T, e *envoyProc, host string, b *httpBackend) {
	t.Helper()
	const stat = "http.outbound_http.no_route"
	before, hits := e.stat(t, stat), b.hits.Load()
	code, hdr, body, err := request(e.OutboundAddr, http.MethodGet, host, "/", nil)
	if err != nil || code != http.StatusNotFound {
		t.Fatalf("Host %s: %d %q %v, want Envoy's 404", host, code, body, err)
	}
	if got := hdr.Get("Server"); got != "envoy" {
		t.Errorf("Host %s: 404 with server %q, want envoy", host, got)
	}
	if got := e.stat(t, stat); got != before+1 {
		t.Errorf("Host %s: %s went from %d to %d, want +1", host, stat, before, got)
	}
	if got := b.hits.Load(); got != hits {
		t.Errorf("Host %s: the backend got %d requests through a sidecar without a route to it", host, got-hits)
	}
}

// wantScope checks what the sidecar holds, per its config dump: clusters
// and load assignments for exactly services plus its inbound application
// (Envoy dumps that cluster's inline endpoints with the ones it got over
// EDS), and outbound virtual hosts for exactly services. It waits a little,
// for the types of one push that Envoy applies one after the other.
func (e *scopedSidecar) wantScope(t *testing.T, services ...string) {
	t.Helper()
	if services == nil {
		services = []string{}
	}
	want := append(slices.Clone(services), "inbound|"+e.appPort)
	slices.Sort(want)
	eventually(t, 10*time.Second, fmt.Sprintf("envoy to hold exactly %v", services), func() error {
		var dump struct {
			Configs []map[string]json.RawMessage `json:"configs"`
		}
		if err := json.Unmarshal(e.admin(t, "/config_dump?include_eds"), &dump); err != nil {
			return err
		}
		clusters, vhosts := envoyClustersAndVhosts(dump.Configs)
		if !reflect.DeepEqual(clusters, want) {
			return fmt.Errorf("envoy's dynamic clusters %v, want %v", clusters, want)
		}
		eds := []string{}
		for name := range envoyEndpoints(dump.Configs) {
			eds = append(eds, name)
		}
		slices.Sort(eds)
		if !reflect.DeepEqual(eds, want) {
			return fmt.Errorf("envoy's load assignments %v, want %v", eds, want)
		}
		if !reflect.DeepEqual(vhosts, services) {
			return fmt.Errorf("envoy's outbound virtual hosts serve %v, want %v", vhosts, services)
		}
		return nil
	})
}

// envoyClustersAndVhosts lists, sorted, the dynamic clusters in a config
// dump and the services (bare domains) of the outbound route configuration.
func envoyClustersAndVhosts(configs []map[string]json.RawMessage) (clusters, vhosts []string) {
	clusters, vhosts = []string{}, []string{}
	for _, c := range configs {
		var typ string
		_ = json.Unmarshal(c["@type"], &typ)
		switch {
		case strings.HasSuffix(typ, "ClustersConfigDump"):
			var d struct {
				Active []struct {
					Cluster struct {
						Name string `json:"name"`
					} `json:"cluster"`
				} `json:"dynamic_active_clusters"`
			}
			_ = json.Unmarshal(mustJSON(c), &d)
			for _, a := range d.Active {
				clusters = append(clusters, a.Cluster.Name)
			}
		case strings.HasSuffix(typ, "RoutesConfigDump"):
			var d struct {
				Dynamic []struct {
					RouteConfig struct {
						Name         string `json:"name"`
						VirtualHosts []struct {
							Domains []string `json:"domains"`
						} `json:"virtual_hosts"`
					} `json:"route_config"`
				} `json:"dynamic_route_configs"`
			}
			_ = json.Unmarshal(mustJSON(c), &d)
			for _, rc := range d.Dynamic {
				if rc.RouteConfig.Name != "outbound_http" {
					continue
				}
				for _, vh := range rc.RouteConfig.VirtualHosts {
					for _, dom := range vh.Domains {
						if !strings.ContainsAny(dom, ":*") {
							vhosts = append(vhosts, dom)
						}
					}
				}
			}
		}
	}
	slices.Sort(clusters)
	slices.Sort(vhosts)
	return clusters, vhosts
}

// depsView is a group's dependency set as /debug/snapshots shows it.
type depsView struct {
	All      bool     `json:"all"`
	Services []string `json:"services"`
	Origin   string   `json:"origin"`
}

type groupView struct {
	Key   string `json:"key"`
	Proxy struct {
		Kind    string `json:"kind"`
		Role    string `json:"role"`
		Service string `json:"service"`
	} `json:"proxy"`
	Versions     map[string]string `json:"versions"`
	Dependencies depsView          `json:"dependencies"`
	Missing      []string          `json:"missing_dependencies"`
}

// group returns the one Envoy group of role and service in /debug/snapshots.
func group(t *testing.T, s *sluice, role, service string) groupView {
	t.Helper()
	var st struct {
		Groups []groupView `json:"groups"`
	}
	s.adminJSON(t, "/debug/snapshots", &st)
	var found []groupView
	for _, g := range st.Groups {
		if g.Proxy.Kind == "envoy" && g.Proxy.Role == role && g.Proxy.Service == service {
			found = append(found, g)
		}
	}
	if len(found) != 1 {
		t.Fatalf("/debug/snapshots has %d envoy groups of %s %s, want 1: %+v", len(found), role, service, st.Groups)
	}
	return found[0]
}

func groupKey(t *testing.T, s *sluice, role, service string) string {
	t.Helper()
	return group(t, s, role, service).Key
}

func groupVersions(t *testing.T, s *sluice, role, service string) map[string]string {
	t.Helper()
	return group(t, s, role, service).Versions
}

// wantGroupDeps checks the dependency set /debug/snapshots shows for the
// group (origin: the policy file that set it, "" for the built-in default)
// and the ones it reports missing from the catalog.
// The proxies already run the config, so the view must already agree.
func wantGroupDeps(t *testing.T, s *sluice, role, service string, want depsView, originFile string, missing ...string) {
	t.Helper()
	g := group(t, s, role, service)
	got := g.Dependencies
	if got.Services == nil && !got.All {
		got.Services = []string{}
	}
	if got.All != want.All || !slices.Equal(got.Services, want.Services) || (want.All && got.Services != nil) {
		t.Errorf("group %s: dependencies %+v, want %+v", g.Key, got, want)
	}
	if originFile == "" && got.Origin != "" || originFile != "" && !strings.HasPrefix(got.Origin, originFile+":") {
		t.Errorf("group %s: dependencies from %q, want %q", g.Key, got.Origin, originFile)
	}
	if !slices.Equal(g.Missing, missing) {
		t.Errorf("group %s: missing dependencies %v, want %v", g.Key, g.Missing, missing)
	}
}

// dependencyWarnings lists the policy warnings on dependencies as
// "location: field".
func dependencyWarnings(t *testing.T, s *sluice) []string {
	t.Helper()
	var st struct {
		Policy struct {
			Diagnostics []struct{ Severity, Location, Field string }
		}
	}
	s.adminJSON(t, "/debug/snapshots", &st)
	var out []string
	for _, d := range st.Policy.Diagnostics {
		if strings.Contains(d.Field, "dependencies") {
			if d.Severity != "warning" {
				t.Errorf("%s: %s is an %s, want a warning", d.Location, d.Field, d.Severity)
			}
			out = append(out, d.Location+": "+d.Field)
		}
	}
	return out
}

// groupConfig returns the resources of one type a group is served, by
// name, as /debug/config shows them (protojson).
func groupConfig(t *testing.T, s *sluice, key, typ string) map[string]string {
	t.Helper()
	var out map[string]struct {
		Resources []json.RawMessage `json:"resources"`
	}
	s.adminJSON(t, "/debug/config?group="+url.QueryEscape(key), &out)
	byName := map[string]string{}
	for _, r := range out[typ].Resources {
		var n struct {
			Name        string `json:"name"`
			ClusterName string `json:"clusterName"`
		}
		if err := json.Unmarshal(r, &n); err != nil {
			t.Fatal(err)
		}
		byName[n.Name+n.ClusterName] = string(r)
	}
	return byName
}

// groupResource returns one resource a group is served.
func groupResource(t *testing.T, s *sluice, key, typ, name string) string {
	t.Helper()
	r, ok := groupConfig(t, s, key, typ)[name]
	if !ok {
		t.Fatalf("group %s is not served %s %s", key, typ, name)
	}
	return r
}

// wantSent checks that sluice serves the sidecar group of service clusters
// for exactly services plus its inbound application's, and load
// assignments for exactly services.
func wantSent(t *testing.T, s *sluice, e *scopedSidecar, service string, services ...string) {
	t.Helper()
	key := groupKey(t, s, "sidecar", service)
	names := func(typ string) []string {
		out := []string{}
		for n := range groupConfig(t, s, key, typ) {
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}
	want := append(slices.Clone(services), "inbound|"+e.appPort)
	slices.Sort(want)
	if got := names(clusterType); !reflect.DeepEqual(got, want) {
		t.Errorf("group %s is served clusters %v, want %v", key, got, want)
	}
	want = append([]string{}, services...)
	if got := names(endpointType); !reflect.DeepEqual(got, want) {
		t.Errorf("group %s is served load assignments %v, want %v", key, got, want)
	}
}
