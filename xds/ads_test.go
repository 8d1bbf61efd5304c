package xds_test

// In-process feature tests of the ADS server: a real snapshot loop feeds a
// real gRPC server on 127.0.0.1:0, and raw ADS clients (SotW and delta) play
// an Envoy sidecar or a proxyless gRPC client. See harness_test.go.

import (
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

const (
	cds = resource.ClusterType
	eds = resource.EndpointType
	lds = resource.ListenerType
	rds = resource.RouteType
)

// catalog is the registry the tests start from: two services, three
// healthy instances. Each call returns a fresh copy that callers may modify.
func catalog() sources.State {
	return sources.State{Services: []sources.Service{
		{Name: "user-service", Instances: []sources.Instance{
			{Address: "10.0.0.2", Port: 8080, Health: sources.HealthHealthy, Zone: "z1"},
			{Address: "10.0.0.1", Port: 8080, Health: sources.HealthHealthy, Zone: "z1"},
		}},
		{Name: "order-service", Instances: []sources.Instance{
			{Address: "10.0.1.1", Port: 9090, Health: sources.HealthHealthy, Zone: "z2"},
		}},
	}}
}

// withHealth returns st with the health of the instance at addr changed.
func withHealth(t *testing.T, st sources.State, addr string, h sources.Health) sources.State {
	t.Helper()
	for si := range st.Services {
		for ii := range st.Services[si].Instances {
			if st.Services[si].Instances[ii].Address == addr {
				st.Services[si].Instances[ii].Health = h
				return st
			}
		}
	}
	t.Fatalf("no instance %s in catalog", addr)
	return st
}

// without returns st without the named service.
func without(st sources.State, service string) sources.State {
	var kept []sources.Service
	for _, s := range st.Services {
		if s.Name != service {
			kept = append(kept, s)
		}
	}
	st.Services = kept
	return st
}

var clusterNames = []string{"order-service", "user-service"}

// Expected resources, written out by hand rather than with the envoy
// builders so that the tests check what a client really gets.

func wantCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
			ServiceName: name,
		},
		ConnectTimeout: durationpb.New(translator.DefaultConnectTimeout),
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
}

// endpointHealth summarises a load assignment as host:port -> health.
func endpointHealth(cla *endpointv3.ClusterLoadAssignment) map[string]corev3.HealthStatus {
	out := map[string]corev3.HealthStatus{}
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out[sources.JoinHostPort(sa.GetAddress(), sa.GetPortValue())] = e.GetHealthStatus()
		}
	}
	return out
}

var healthy = corev3.HealthStatus_HEALTHY

// routeTable summarises a route configuration as virtual host -> domains
// and cluster of its (single) route.
type vhostSummary struct {
	Domains []string
	Cluster string
}

func routeTable(rc *routev3.RouteConfiguration) map[string]vhostSummary {
	out := map[string]vhostSummary{}
	for _, vh := range rc.GetVirtualHosts() {
		var cluster string
		for _, r := range vh.GetRoutes() {
			cluster = r.GetRoute().GetCluster()
		}
		out[vh.GetName()] = vhostSummary{Domains: vh.GetDomains(), Cluster: cluster}
	}
	return out
}

// hcm extracts the HTTP connection manager of a listener: its API listener
// or the filter of its only filter chain.
func hcm(t *testing.T, l *listenerv3.Listener) *hcmv3.HttpConnectionManager {
	t.Helper()
	m := &hcmv3.HttpConnectionManager{}
	if api := l.GetApiListener().GetApiListener(); api != nil {
		if err := api.UnmarshalTo(m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if n := len(l.GetFilterChains()); n != 1 {
		t.Fatalf("listener %s has %d filter chains", l.GetName(), n)
	}
	fs := l.GetFilterChains()[0].GetFilters()
	if len(fs) != 1 {
		t.Fatalf("listener %s has %d filters", l.GetName(), len(fs))
	}
	if err := fs[0].GetTypedConfig().UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func diff(t *testing.T, what string, want, got any) {
	t.Helper()
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

// syncEnvoySotw walks an Envoy sidecar through its start-up on c: CDS
// (wildcard), EDS for the clusters, LDS (wildcard), RDS for outbound_http,
// ACKing each, and checks what it gets. It returns the responses by type.
func syncEnvoySotw(t *testing.T, c *sotwClient) map[string]*discoveryv3.DiscoveryResponse {
	t.Helper()
	got := map[string]*discoveryv3.DiscoveryResponse{}

	c.request(cds)
	got[cds] = c.recv(cds)
	clusters := unpack[*clusterv3.Cluster](t, got[cds].GetResources())
	diff(t, "cluster names", clusterNames, names(clusters))
	diff(t, "user-service cluster", wantCluster("user-service"), clusters["user-service"])
	c.ack(got[cds])

	c.request(eds, clusterNames...)
	got[eds] = c.recv(eds)
	loadAssignments := unpack[*endpointv3.ClusterLoadAssignment](t, got[eds].GetResources())
	diff(t, "load assignment names", clusterNames, names(loadAssignments))
	diff(t, "user-service endpoints", map[string]corev3.HealthStatus{"10.0.0.1:8080": healthy, "10.0.0.2:8080": healthy}, endpointHealth(loadAssignments["user-service"]))
	diff(t, "order-service endpoints", map[string]corev3.HealthStatus{"10.0.1.1:9090": healthy}, endpointHealth(loadAssignments["order-service"]))
	c.ack(got[eds], clusterNames...)

	c.request(lds)
	got[lds] = c.recv(lds)
	listeners := unpack[*listenerv3.Listener](t, got[lds].GetResources())
	diff(t, "listener names", []string{translator.OutboundListenerName}, names(listeners))
	if l := listeners[translator.OutboundListenerName]; l != nil {
		sa := l.GetAddress().GetSocketAddress()
		if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != translator.DefaultOutboundPort {
			t.Errorf("outbound listener binds %s:%d, want 127.0.0.1:%d", sa.GetAddress(), sa.GetPortValue(), translator.DefaultOutboundPort)
		}
		if rn := hcm(t, l).GetRds().GetRouteConfigName(); rn != translator.OutboundRouteName {
			t.Errorf("outbound listener uses routes %q, want %q", rn, translator.OutboundRouteName)
		}
	}
	c.ack(got[lds])

	c.request(rds, translator.OutboundRouteName)
	got[rds] = c.recv(rds)
	routes := unpack[*routev3.RouteConfiguration](t, got[rds].GetResources())
	diff(t, "route config names", []string{translator.OutboundRouteName}, names(routes))
	diff(t, "outbound routes", map[string]vhostSummary{
		"order-service": {Domains: []string{"order-service", "order-service:9090"}, Cluster: "order-service"},
		"user-service":  {Domains: []string{"user-service", "user-service:8080"}, Cluster: "user-service"},
	}, routeTable(routes[translator.OutboundRouteName]))
	c.ack(got[rds], translator.OutboundRouteName)
	return got
}

// syncEnvoyDelta is syncEnvoySotw over the delta protocol.
func syncEnvoyDelta(t *testing.T, c *deltaClient) map[string]*discoveryv3.DeltaDiscoveryResponse {
	t.Helper()
	got := map[string]*discoveryv3.DeltaDiscoveryResponse{}

	c.subscribe(cds)
	got[cds] = c.recv(cds)
	clusters := unpackDelta[*clusterv3.Cluster](t, got[cds])
	diff(t, "cluster names", clusterNames, names(clusters))
	diff(t, "user-service cluster", wantCluster("user-service"), clusters["user-service"])
	c.ack(got[cds])

	c.subscribe(eds, clusterNames...)
	got[eds] = c.recv(eds)
	loadAssignments := unpackDelta[*endpointv3.ClusterLoadAssignment](t, got[eds])
	diff(t, "load assignment names", clusterNames, names(loadAssignments))
	diff(t, "user-service endpoints", map[string]corev3.HealthStatus{"10.0.0.1:8080": healthy, "10.0.0.2:8080": healthy}, endpointHealth(loadAssignments["user-service"]))
	c.ack(got[eds])

	c.subscribe(lds)
	got[lds] = c.recv(lds)
	diff(t, "listener names", []string{translator.OutboundListenerName}, deltaNames(got[lds]))
	c.ack(got[lds])

	c.subscribe(rds, translator.OutboundRouteName)
	got[rds] = c.recv(rds)
	diff(t, "route config names", []string{translator.OutboundRouteName}, deltaNames(got[rds]))
	c.ack(got[rds])
	return got
}

// TestADSSotwEnvoy: an Envoy sidecar gets its config over SotW ADS; an
// unchanged catalog pushes nothing, and an endpoint's health change pushes
// EDS alone.
func TestADSSotwEnvoy(t *testing.T) {
	h := newHarness(t)
	h.syncCatalog(catalog())
	c := h.sotw(envoyNode("n1"))
	first := syncEnvoySotw(t, c)

	// The same catalog again: the loop rebuilds, finds every version
	// unchanged and publishes nothing, so the proxy hears nothing.
	h.setCatalogAndWait(catalog(), "unchanged", 1)
	c.expectNothing(quietWindow)

	// One endpoint turns unhealthy: only the EDS version changes, so EDS is
	// the only type pushed, and it carries only the load assignment that
	// changed (EDS responses need not hold the full state).
	h.setCatalog(withHealth(t, catalog(), "10.0.0.2", sources.HealthUnhealthy))
	resp := c.recv(eds)
	if resp.GetVersionInfo() == first[eds].GetVersionInfo() {
		t.Errorf("EDS pushed again with the same version %s", resp.GetVersionInfo())
	}
	loadAssignments := unpack[*endpointv3.ClusterLoadAssignment](t, resp.GetResources())
	diff(t, "load assignment names", []string{"user-service"}, names(loadAssignments))
	diff(t, "user-service endpoints", map[string]corev3.HealthStatus{
		"10.0.0.1:8080": healthy,
		"10.0.0.2:8080": corev3.HealthStatus_UNHEALTHY,
	}, endpointHealth(loadAssignments["user-service"]))
	c.ack(resp, clusterNames...)
	c.expectNothing(quietWindow)

	// The tracker agrees: one push of each type but EDS, all acknowledged.
	p := h.proxy("n1")
	if p.Group != "envoy/sidecar/web" || p.Delta || p.UserAgent != "envoy" {
		t.Errorf("tracker: group %q, delta %v, user agent %q", p.Group, p.Delta, p.UserAgent)
	}
	for typ, pushes := range map[string]int{cds: 1, eds: 2, lds: 1, rds: 1} {
		ts := p.Types[typ]
		wantVersion := first[typ].GetVersionInfo()
		if typ == eds {
			wantVersion = resp.GetVersionInfo()
		}
		if ts.Pushes != pushes || ts.Sent != wantVersion || ts.Acked != wantVersion || ts.LastNack != nil {
			t.Errorf("tracker %s: %d pushes, sent %q, acked %q, nack %v; want %d pushes of %q, acked",
				typ, ts.Pushes, ts.Sent, ts.Acked, ts.LastNack, pushes, wantVersion)
		}
	}
}

// TestADSDeltaEnvoy: the same flow over delta ADS; a changed endpoint is sent
// as a delta of only its load assignment, a removed service as removals.
func TestADSDeltaEnvoy(t *testing.T) {
	h := newHarness(t)
	h.syncCatalog(catalog())
	c := h.delta(envoyNode("n1"))
	syncEnvoyDelta(t, c)

	h.setCatalogAndWait(catalog(), "unchanged", 1)
	c.expectNothing(quietWindow)

	draining := withHealth(t, catalog(), "10.0.0.2", sources.HealthDraining)
	h.setCatalog(draining)
	resp := c.recv(eds)
	loadAssignments := unpackDelta[*endpointv3.ClusterLoadAssignment](t, resp)
	diff(t, "changed load assignments", []string{"user-service"}, names(loadAssignments))
	diff(t, "user-service endpoints", map[string]corev3.HealthStatus{
		"10.0.0.1:8080": healthy,
		"10.0.0.2:8080": corev3.HealthStatus_DRAINING,
	}, endpointHealth(loadAssignments["user-service"]))
	if len(resp.GetRemovedResources()) != 0 {
		t.Errorf("EDS delta removes %v", resp.GetRemovedResources())
	}
	c.ack(resp)
	c.expectNothing(quietWindow)

	// order-service goes away: its cluster and load assignment are removed,
	// the outbound route table loses its virtual host, the listener stays.
	h.setCatalog(without(draining, "order-service"))
	got := c.recvTypes(cds, eds, rds)
	for _, typ := range []string{cds, eds} {
		diff(t, typ+" removed", []string{"order-service"}, got[typ].GetRemovedResources())
		diff(t, typ+" updated", []string(nil), deltaNames(got[typ]))
	}
	routes := unpackDelta[*routev3.RouteConfiguration](t, got[rds])
	diff(t, "outbound routes", map[string]vhostSummary{
		"user-service": {Domains: []string{"user-service", "user-service:8080"}, Cluster: "user-service"},
	}, routeTable(routes[translator.OutboundRouteName]))
	for _, r := range got {
		c.ack(r)
	}
	c.expectNothing(quietWindow)

	p := h.proxy("n1")
	if !p.Delta || p.Types[eds].Pushes != 3 || p.Types[lds].Pushes != 1 {
		t.Errorf("tracker: delta %v, EDS pushes %d (want 3), LDS pushes %d (want 1)", p.Delta, p.Types[eds].Pushes, p.Types[lds].Pushes)
	}
}

// TestADSGRPCClient: a proxyless gRPC client dialing xds:///user-service in
// a mesh of several services names just what it needs: the API listener
// "user-service" (whose HTTP connection manager takes routes "user-service"
// over ADS), then that route configuration, cluster and load assignment.
// Asking for every listener, it gets API listeners only (one per name it may
// dial, name and name:port), never Envoy's outbound listener.
func TestADSGRPCClient(t *testing.T) {
	h := newHarness(t)
	h.syncCatalog(catalog())
	const target = "user-service"
	c := h.sotw(grpcNode("grpc-1"))
	c.request(lds, target)
	resp := c.recv(lds)
	listeners := unpack[*listenerv3.Listener](t, resp.GetResources())
	diff(t, "listener names", []string{target}, names(listeners))
	checkAPIListener(t, target, listeners[target], target)
	c.ack(resp, target)

	c.request(rds, target)
	resp = c.recv(rds)
	routes := unpack[*routev3.RouteConfiguration](t, resp.GetResources())
	diff(t, "route config names", []string{target}, names(routes))
	diff(t, "routes", map[string]vhostSummary{
		target: {Domains: []string{target, target + ":8080"}, Cluster: target},
	}, routeTable(routes[target]))
	c.ack(resp, target)

	c.request(cds, target)
	resp = c.recv(cds)
	clusters := unpack[*clusterv3.Cluster](t, resp.GetResources())
	diff(t, "clusters", map[string]*clusterv3.Cluster{target: wantCluster(target)}, clusters)
	c.ack(resp, target)

	c.request(eds, target)
	resp = c.recv(eds)
	loadAssignments := unpack[*endpointv3.ClusterLoadAssignment](t, resp.GetResources())
	diff(t, "load assignment names", []string{target}, names(loadAssignments))
	diff(t, "endpoints", map[string]corev3.HealthStatus{"10.0.0.1:8080": healthy, "10.0.0.2:8080": healthy}, endpointHealth(loadAssignments[target]))
	for _, l := range loadAssignments[target].GetEndpoints() {
		// gRPC rejects localities without a locality weight.
		if l.GetLoadBalancingWeight().GetValue() == 0 {
			t.Errorf("locality %v has no load-balancing weight", l.GetLocality())
		}
	}
	c.ack(resp, target)

	all := h.sotw(grpcNode("grpc-2"))
	all.request(lds)
	resp = all.recv(lds)
	listeners = unpack[*listenerv3.Listener](t, resp.GetResources())
	diff(t, "all listener names", []string{"order-service", "order-service:9090", "user-service", "user-service:8080"}, names(listeners))
	for name, l := range listeners {
		checkAPIListener(t, name, l, strings.Split(name, ":")[0])
	}

	p := h.proxy("grpc-1")
	if p.Group != "grpc" || p.Proxy.Kind != translator.KindGRPC || p.UserAgent != "gRPC Go" {
		t.Errorf("tracker: gRPC client is in group %q, kind %q, user agent %q", p.Group, p.Proxy.Kind, p.UserAgent)
	}
}

// checkAPIListener checks that l is a gRPC API listener (no address, an HTTP
// connection manager ending in the router) taking routes named route.
func checkAPIListener(t *testing.T, name string, l *listenerv3.Listener, route string) {
	t.Helper()
	if name == translator.OutboundListenerName {
		t.Errorf("gRPC client got the %s listener", name)
	}
	if l.GetApiListener() == nil || l.GetAddress() != nil || len(l.GetFilterChains()) != 0 {
		t.Errorf("listener %s is not an API listener: %v", name, l)
		return
	}
	m := hcm(t, l)
	if rn := m.GetRds().GetRouteConfigName(); rn != route {
		t.Errorf("API listener %s uses routes %q, want %q", name, rn, route)
	}
	if fs := m.GetHttpFilters(); len(fs) == 0 || fs[len(fs)-1].GetName() != "envoy.filters.http.router" {
		t.Errorf("API listener %s: HTTP filters %v do not end in the router", name, fs)
	}
}

// TestADSSotwNack: a NACKed EDS response is not sent again (go-control-plane's
// own cache would resend it at once, forever); the next version is. The
// tracker records the rejection.
func TestADSSotwNack(t *testing.T) {
	const window = time.Second
	h := newHarness(t)
	h.syncCatalog(catalog())
	c := h.sotw(envoyNode("n1"))
	first := syncEnvoySotw(t, c)
	// A second proxy of the same group NACKs its very first EDS response,
	// so it reports no accepted version at all.
	c2 := h.sotw(envoyNode("n2"))
	c2.request(eds, clusterNames...)
	c2.nack(c2.recv(eds), "", "no thanks", clusterNames...)

	h.setCatalog(withHealth(t, catalog(), "10.0.0.1", sources.HealthUnhealthy))
	rejected := c.recv(eds)
	c.nack(rejected, first[eds].GetVersionInfo(), "endpoint 10.0.0.1 is bogus", clusterNames...)
	// n2 was not sent its rejected version again, only the new one.
	rejected2 := c2.recv(eds)
	if rejected2.GetVersionInfo() != rejected.GetVersionInfo() {
		t.Fatalf("n2 got EDS %s, n1 got %s", rejected2.GetVersionInfo(), rejected.GetVersionInfo())
	}
	c2.nack(rejected2, "", "no thanks", clusterNames...)

	c.expectNothing(window)
	c2.expectNothing(0) // the window above covered both streams

	p := h.proxy("n1")
	ts := p.Types[eds]
	if ts.LastNack == nil {
		t.Fatalf("tracker recorded no NACK: %+v", ts)
	}
	if ts.LastNack.Version != rejected.GetVersionInfo() || !strings.Contains(ts.LastNack.Error, "endpoint 10.0.0.1 is bogus") {
		t.Errorf("tracker NACK = %+v, want version %s and the client's message", ts.LastNack, rejected.GetVersionInfo())
	}
	// The error names no resource: the NACK concerns what the rejected
	// response changed of what n1 acked.
	if !slices.Equal(ts.LastNack.Resources, []string{"user-service"}) || ts.LastNack.ResourcesTotal != 1 {
		t.Errorf("tracker NACK resources %v (%d), want [user-service]", ts.LastNack.Resources, ts.LastNack.ResourcesTotal)
	}
	if ts.Sent != rejected.GetVersionInfo() || ts.Acked != first[eds].GetVersionInfo() {
		t.Errorf("tracker EDS sent %q acked %q, want sent %q acked %q", ts.Sent, ts.Acked, rejected.GetVersionInfo(), first[eds].GetVersionInfo())
	}
	if n := p.Types[cds]; n.LastNack != nil || n.Acked != first[cds].GetVersionInfo() {
		t.Errorf("tracker CDS = %+v, want acked %s and no NACK", n, first[cds].GetVersionInfo())
	}
	// What n1 was last sent changes one load assignment of what it
	// acked; n2 acked nothing, so the tracker cannot say.
	diff(t, "n1 EDS changes", &xds.Changes{Acked: first[eds].GetVersionInfo(), Sent: rejected.GetVersionInfo(), Retained: true,
		Changed: []string{"user-service"}}, h.node("n1").Types[eds].Changes)
	if ch := h.node("n1").Types[cds].Changes; ch != nil {
		t.Errorf("n1 CDS is acked, yet has changes %+v", ch)
	}
	diff(t, "n2 EDS changes", &xds.Changes{Sent: rejected2.GetVersionInfo()}, h.node("n2").Types[eds].Changes)
	if n := counterValue(t, h.reg, "sluice_xds_nacks_total", "type", "ClusterLoadAssignment"); n != 3 {
		t.Errorf("sluice_xds_nacks_total{type=ClusterLoadAssignment} = %v, want 3", n)
	}

	// A new version is sent to both, NACK or not.
	h.setCatalog(withHealth(t, catalog(), "10.0.0.1", sources.HealthDraining))
	next := c.recv(eds)
	if next.GetVersionInfo() == rejected.GetVersionInfo() || next.GetVersionInfo() == first[eds].GetVersionInfo() {
		t.Errorf("EDS after the NACK has version %s again", next.GetVersionInfo())
	}
	c.ack(next, clusterNames...)
	if v := c2.recv(eds).GetVersionInfo(); v != next.GetVersionInfo() {
		t.Errorf("n2 got EDS %s, want %s", v, next.GetVersionInfo())
	}
	waitFor(t, "tracker to record the ACK", func() bool { return h.proxy("n1").Types[eds].Acked == next.GetVersionInfo() })
}

// TestADSDeltaNack: a NACKed delta is not sent again either, and the next
// change is.
func TestADSDeltaNack(t *testing.T) {
	h := newHarness(t)
	h.syncCatalog(catalog())
	c := h.delta(envoyNode("n1"))
	first := syncEnvoyDelta(t, c)

	h.setCatalog(withHealth(t, catalog(), "10.0.0.1", sources.HealthUnhealthy))
	rejected := c.recv(eds)
	c.nack(rejected, "endpoint 10.0.0.1 is bogus")
	c.expectNothing(time.Second)

	ts := h.proxy("n1").Types[eds]
	if ts.LastNack == nil || !strings.Contains(ts.LastNack.Error, "endpoint 10.0.0.1 is bogus") || ts.LastNack.Version != rejected.GetSystemVersionInfo() {
		t.Errorf("tracker EDS NACK = %+v, want a NACK of %s with the client's message", ts.LastNack, rejected.GetSystemVersionInfo())
	}
	if ts.Sent != rejected.GetSystemVersionInfo() || ts.Acked != first[eds].GetSystemVersionInfo() {
		t.Errorf("tracker EDS sent %q acked %q, want sent %q acked %q", ts.Sent, ts.Acked, rejected.GetSystemVersionInfo(), first[eds].GetSystemVersionInfo())
	}
	diff(t, "EDS changes", &xds.Changes{Acked: first[eds].GetSystemVersionInfo(), Sent: rejected.GetSystemVersionInfo(), Retained: true,
		Changed: []string{"user-service"}}, h.node("n1").Types[eds].Changes)

	h.setCatalog(withHealth(t, catalog(), "10.0.0.2", sources.HealthUnhealthy))
	next := c.recv(eds)
	loadAssignments := unpackDelta[*endpointv3.ClusterLoadAssignment](t, next)
	diff(t, "user-service endpoints", map[string]corev3.HealthStatus{
		"10.0.0.1:8080": healthy,
		"10.0.0.2:8080": corev3.HealthStatus_UNHEALTHY,
	}, endpointHealth(loadAssignments["user-service"]))
	c.ack(next)
	c.expectNothing(0)
}

// TestADSInvalidNodeMetadata: a node whose metadata does not parse is refused
// with InvalidArgument and a message naming the key, on either protocol.
func TestADSInvalidNodeMetadata(t *testing.T) {
	h := newHarness(t)
	h.syncCatalog(catalog())
	node := nodeWithMetadata(t, "bad", map[string]any{translator.MetaOutboundPort: "abc"})

	check := func(proto string, err error) {
		t.Helper()
		st := grpcstatus.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "outbound_port") {
			t.Errorf("%s stream ended with %v, want InvalidArgument naming outbound_port", proto, err)
		}
	}
	s := h.sotw(node)
	s.request(cds)
	check("SotW", s.streamErr())

	d := h.delta(node)
	d.subscribe(cds)
	check("delta", d.streamErr())

	if ps := h.srv.Tracker.Proxies(); len(ps) != 0 {
		t.Errorf("tracker lists refused proxies: %+v", ps)
	}
	if n := counterValue(t, h.reg, "sluice_xds_rejected_streams_total", "", ""); n != 2 {
		t.Errorf("sluice_xds_rejected_streams_total = %v, want 2", n)
	}
}

// TestADSSotwAndDeltaStreamsTogether: a SotW and a delta proxy connected at
// the same time are tracked apart, and one leaving does not disturb the other.
func TestADSSotwAndDeltaStreamsTogether(t *testing.T) {
	// go-control-plane numbers SotW and delta streams independently, so
	// these two streams have the same id.
	h := newHarness(t)
	h.syncCatalog(catalog())
	s := h.sotw(envoyNode("sotw"))
	syncEnvoySotw(t, s)
	d := h.delta(envoyNode("delta"))
	syncEnvoyDelta(t, d)

	var ids []string
	for _, p := range h.srv.Tracker.Proxies() {
		ids = append(ids, p.NodeID)
	}
	diff(t, "tracked proxies", []string{"delta", "sotw"}, ids)
	if ps := h.srv.Tracker.Proxies(); len(ps) == 2 && ps[0].Stream != ps[1].Stream {
		t.Logf("streams have ids %d and %d; the test is meant for equal ids", ps[0].Stream, ps[1].Stream)
	}

	// The SotW proxy leaves; the delta proxy keeps working.
	if err := s.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SotW stream to close", func() bool { return len(h.srv.Tracker.Proxies()) == 1 })
	h.setCatalog(withHealth(t, catalog(), "10.0.0.1", sources.HealthUnhealthy))
	resp := d.recv(eds)
	d.ack(resp)
	d.expectNothing(quietWindow)
	diff(t, "tracked proxies", "delta", h.proxy("delta").NodeID)
}

// TestADSGRPCResubscribe: a gRPC client closes its channel to a service
// (its CDS request drops the name) and dials it again: it gets the cluster
// again. Found by an independent review.
func TestADSGRPCResubscribe(t *testing.T) {
	h := newHarness(t)
	h.syncCatalog(catalog())
	c := h.sotw(grpcNode("grpc-1"))
	c.request(cds, "order-service", "user-service")
	resp := c.recv(cds)
	c.ack(resp, "order-service", "user-service")
	c.expectNothing(quietWindow)
	c.ack(resp, "order-service")
	c.expectNothing(quietWindow)
	c.ack(resp, "order-service", "user-service")
	got := names(unpack[*clusterv3.Cluster](t, c.recv(cds).GetResources()))
	diff(t, "clusters after re-subscribing", []string{"order-service", "user-service"}, got)
}
