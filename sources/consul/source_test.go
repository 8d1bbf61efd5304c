package consul

import (
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/sluice-mesh/sluice/sources"
)

const wait = 20 * time.Second

func registerTTL(t *testing.T, cl *api.Client, reg *api.AgentServiceRegistration, status string) {
	t.Helper()
	reg.Check = &api.AgentServiceCheck{CheckID: "ttl-" + reg.ID, Name: "ttl", TTL: "10m", Status: status}
	if err := cl.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("registering %s: %v", reg.ID, err)
	}
}

// TestExcludeNothing: with no exclusions, the servers' own "consul"
// service is read like any other.
func TestExcludeNothing(t *testing.T) {
	a := startAgent(t)
	cfg := testConfig(t, a)
	cfg.Exclude = nil
	c := runSource(t, cfg)
	c.waitState("the agent's own consul service", wait, func(st *sources.State) bool {
		s := service(st, ConsulServiceName)
		return s != nil && len(s.Instances) == 1
	})
}

func TestTTLChecksLifecycle(t *testing.T) {
	a := startAgent(t)
	cl := a.Client()
	registerTTL(t, cl, &api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 9001}, api.HealthPassing)
	registerTTL(t, cl, &api.AgentServiceRegistration{ID: "web-2", Name: "web", Address: "127.0.0.1", Port: 9002}, api.HealthPassing)
	c := runSource(t, testConfig(t, a))

	const one, two = "127.0.0.1:9001", "127.0.0.1:9002"
	st := c.waitState("both web instances healthy", wait, healthIs("web", map[string]sources.Health{one: sources.HealthHealthy, two: sources.HealthHealthy}))
	in := instance(st, "web", one)
	if in.Source != SourceName || in.Origin != "consul:service/web/web-1" || in.Weight != 1 {
		t.Errorf("instance = %+v, want source consul, origin consul:service/web/web-1, weight 1", *in)
	}
	if s := service(st, ConsulServiceName); s != nil {
		t.Errorf("the agent's own consul service is served by default: %s", describe(st))
	}

	if err := cl.Agent().UpdateTTL("ttl-web-1", "boom", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	c.waitState("web-1 unhealthy after its TTL check failed", wait, healthIs("web", map[string]sources.Health{one: sources.HealthUnhealthy, two: sources.HealthHealthy}))

	if err := cl.Agent().UpdateTTL("ttl-web-1", "ok", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	c.waitState("web-1 healthy again", wait, healthIs("web", map[string]sources.Health{one: sources.HealthHealthy, two: sources.HealthHealthy}))

	// Maintenance mode is a critical check with a reserved ID.
	if err := cl.Agent().EnableServiceMaintenance("web-2", "upgrade"); err != nil {
		t.Fatal(err)
	}
	c.waitState("web-2 unhealthy in maintenance", wait, healthIs("web", map[string]sources.Health{one: sources.HealthHealthy, two: sources.HealthUnhealthy}))
	if err := cl.Agent().DisableServiceMaintenance("web-2"); err != nil {
		t.Fatal(err)
	}
	c.waitState("web-2 back from maintenance", wait, healthIs("web", map[string]sources.Health{one: sources.HealthHealthy, two: sources.HealthHealthy}))

	if err := cl.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}
	c.waitState("web-1 removed", wait, healthIs("web", map[string]sources.Health{two: sources.HealthHealthy}))
	if err := cl.Agent().ServiceDeregister("web-2"); err != nil {
		t.Fatal(err)
	}
	c.waitState("web removed", wait, func(st *sources.State) bool { return service(st, "web") == nil })
}

func TestWarningMapping(t *testing.T) {
	a := startAgent(t)
	cl := a.Client()
	registerTTL(t, cl, &api.AgentServiceRegistration{
		ID: "cache-1", Name: "cache", Address: "127.0.0.1", Port: 6379,
		Weights: &api.AgentWeights{Passing: 10, Warning: 3},
	}, api.HealthWarning)
	registerTTL(t, cl, &api.AgentServiceRegistration{
		ID: "cache-2", Name: "cache", Address: "127.0.0.2", Port: 6379,
		Weights: &api.AgentWeights{Passing: 10, Warning: 0},
	}, api.HealthWarning)

	healthy := runSource(t, testConfig(t, a))
	cfg := testConfig(t, a)
	cfg.WarningIsHealthy = false
	unhealthy := runSource(t, cfg)

	st := healthy.waitState("warning served as healthy", wait, healthIs("cache", map[string]sources.Health{
		"127.0.0.1:6379": sources.HealthHealthy,
		// A warning weight of 0 means no traffic while warning.
		"127.0.0.2:6379": sources.HealthUnhealthy,
	}))
	if w := instance(st, "cache", "127.0.0.1:6379").Weight; w != 3 {
		t.Errorf("weight while warning = %d, want Weights.Warning 3", w)
	}
	unhealthy.waitState("warning as unhealthy with WarningIsHealthy=false", wait, healthIs("cache", map[string]sources.Health{
		"127.0.0.1:6379": sources.HealthUnhealthy, "127.0.0.2:6379": sources.HealthUnhealthy,
	}))

	if err := cl.Agent().UpdateTTL("ttl-cache-1", "", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	st = healthy.waitState("passing weight", wait, func(st *sources.State) bool {
		in := instance(st, "cache", "127.0.0.1:6379")
		return in != nil && in.Weight == 10 && in.Health == sources.HealthHealthy
	})
	_ = st
	unhealthy.waitState("passing is healthy either way", wait, func(st *sources.State) bool {
		in := instance(st, "cache", "127.0.0.1:6379")
		return in != nil && in.Health == sources.HealthHealthy
	})
}

func TestHTTPCheck(t *testing.T) {
	a := startAgent(t)
	cl := a.Client()
	var status atomic.Int32
	status.Store(http.StatusOK)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer app.Close()
	port := app.Listener.Addr().(*net.TCPAddr).Port

	err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "api-1", Name: "api", Address: "127.0.0.1", Port: port,
		Check: &api.AgentServiceCheck{CheckID: "http-api-1", HTTP: app.URL + "/healthz", Interval: "1s", Timeout: "1s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := runSource(t, testConfig(t, a))
	key := sources.JoinHostPort("127.0.0.1", uint32(port))
	c.waitState("api healthy once its HTTP check passed", wait, healthIs("api", map[string]sources.Health{key: sources.HealthHealthy}))

	status.Store(http.StatusInternalServerError)
	c.waitState("api unhealthy while its endpoint returns 500", wait, healthIs("api", map[string]sources.Health{key: sources.HealthUnhealthy}))

	status.Store(http.StatusOK)
	c.waitState("api healthy after its endpoint recovered", wait, healthIs("api", map[string]sources.Health{key: sources.HealthHealthy}))
}

func TestAgentRestart(t *testing.T) {
	a := startAgent(t)
	cl := a.Client()
	registerTTL(t, cl, &api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 9001}, api.HealthPassing)

	logs := &logCounter{counts: map[string]int{}}
	cfg := testConfig(t, a)
	logs.next = cfg.Log.Handler()
	cfg.Log = slog.New(logs)
	c := runSource(t, cfg)
	c.waitState("web-1 served", wait, healthIs("web", map[string]sources.Health{"127.0.0.1:9001": sources.HealthHealthy}))

	before := c.count()
	a.Stop()
	errAt := c.waitEvent("an Err event once the agent is gone", before, wait, func(ev sources.Event) bool { return ev.Err != nil })
	// Let the source fail to reconnect a few times: still one Err, and no
	// State at all (so no empty one) while Consul is down.
	eventually(t, "three failed reconnects", wait, func() bool { return logs.count("consul still unreachable") >= 3 })
	evs, _ := c.snapshot()
	for i, ev := range evs[before:] {
		if ev.State != nil {
			t.Fatalf("event %d during the outage is a State (%s); want the last State kept", before+i, describe(ev.State))
		}
		if ev.Err != nil && before+i != errAt {
			t.Fatalf("event %d is a second Err during one outage: %v", before+i, ev.Err)
		}
	}
	if !strings.Contains(evs[errAt].Err.Error(), "consul") {
		t.Errorf("Err = %v, want it to say consul", evs[errAt].Err)
	}

	// A new (empty, dev-mode) agent on the same address; the registry now
	// holds different instances.
	b := restartAgentOn(t, a.Ports)
	cl = b.Client()
	registerTTL(t, cl, &api.AgentServiceRegistration{ID: "web-2", Name: "web", Address: "127.0.0.1", Port: 9002}, api.HealthPassing)
	registerTTL(t, cl, &api.AgentServiceRegistration{ID: "db-1", Name: "db", Address: "127.0.0.1", Port: 5432}, api.HealthCritical)
	st := c.waitState("the new agent's registrations", wait, func(st *sources.State) bool {
		return healthIs("web", map[string]sources.Health{"127.0.0.1:9002": sources.HealthHealthy})(st) &&
			healthIs("db", map[string]sources.Health{"127.0.0.1:5432": sources.HealthUnhealthy})(st)
	})
	_ = st
	// And it keeps following changes.
	if err := cl.Agent().UpdateTTL("ttl-db-1", "", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	c.waitState("db healthy after the restart", wait, healthIs("db", map[string]sources.Health{"127.0.0.1:5432": sources.HealthHealthy}))
}

// registerExternal registers a node and service through the catalog API,
// the way external services (and tools like consul-esm) are registered.
func registerExternal(t *testing.T, cl *api.Client, reg *api.CatalogRegistration) {
	t.Helper()
	if reg.Datacenter == "" {
		reg.Datacenter = "dc1"
	}
	if _, err := cl.Catalog().Register(reg, nil); err != nil {
		t.Fatalf("catalog register %s/%v: %v", reg.Node, reg.Service, err)
	}
}

func TestMappingWeightsTagsMetaLocality(t *testing.T) {
	a := startAgent(t)
	cl := a.Client()
	node := func(addr string) *api.CatalogRegistration {
		return &api.CatalogRegistration{Node: "ext-1", Address: addr, NodeMeta: map[string]string{"zone": "z-node", "region": "r-node"}}
	}
	r := node("10.1.2.3")
	r.Service = &api.AgentService{
		ID: "pay-1", Service: "pay", Port: 7000, Tags: []string{"b", "a"},
		Meta: map[string]string{"version": "v2", "zone": "z-svc"}, Weights: api.AgentWeights{Passing: 5, Warning: 1},
	}
	registerExternal(t, cl, r)
	r = node("10.1.2.3")
	r.Service = &api.AgentService{ID: "pay-2", Service: "pay", Address: "10.1.2.4", Port: 7000}
	registerExternal(t, cl, r)

	c := runSource(t, testConfig(t, a))
	st := c.waitState("pay's two instances", wait, healthIs("pay", map[string]sources.Health{
		"10.1.2.3:7000": sources.HealthHealthy, "10.1.2.4:7000": sources.HealthHealthy,
	}))
	one := instance(st, "pay", "10.1.2.3:7000") // no service address: the node's
	if one.Weight != 5 || one.Zone != "z-svc" || one.Region != "r-node" {
		t.Errorf("pay-1 = %+v, want weight 5, zone z-svc (service meta), region r-node (node meta)", *one)
	}
	wantMeta := map[string]string{"version": "v2", "zone": "z-svc", "tag.a": "true", "tag.b": "true"}
	if !maps.Equal(one.Metadata, wantMeta) {
		t.Errorf("pay-1 metadata = %v, want %v", one.Metadata, wantMeta)
	}
	two := instance(st, "pay", "10.1.2.4:7000")
	if two.Weight != 1 || two.Zone != "z-node" || two.Region != "r-node" || two.Metadata != nil {
		t.Errorf("pay-2 = %+v, want weight 1, zone z-node, region r-node, no metadata", *two)
	}

	// A node-level check applies to every service on the node.
	r = node("10.1.2.3")
	r.Check = &api.AgentCheck{Node: "ext-1", CheckID: "node-alive", Name: "node alive", Status: api.HealthCritical}
	registerExternal(t, cl, r)
	c.waitState("every instance on a failed node unhealthy", wait, healthIs("pay", map[string]sources.Health{
		"10.1.2.3:7000": sources.HealthUnhealthy, "10.1.2.4:7000": sources.HealthUnhealthy,
	}))
	r.Check.Status = api.HealthPassing
	registerExternal(t, cl, r)
	c.waitState("node healthy again", wait, healthIs("pay", map[string]sources.Health{
		"10.1.2.3:7000": sources.HealthHealthy, "10.1.2.4:7000": sources.HealthHealthy,
	}))

	// The node moves: the instance without its own address follows it.
	registerExternal(t, cl, node("10.9.9.9"))
	c.waitState("pay-1 at the node's new address", wait, healthIs("pay", map[string]sources.Health{
		"10.9.9.9:7000": sources.HealthHealthy, "10.1.2.4:7000": sources.HealthHealthy,
	}))
}

func TestInvalidEntriesAreSkippedWithDiagnostics(t *testing.T) {
	a := startAgent(t)
	cl := a.Client()
	ext := func(id, name, addr string, port int) {
		registerExternal(t, cl, &api.CatalogRegistration{
			Node: "ext-" + id, Address: "10.2.0.1",
			Service: &api.AgentService{ID: id, Service: name, Address: addr, Port: port},
		})
	}
	ext("db-1", "db", "db.example.com", 5432)
	ext("db-2", "db", "10.2.0.2", 0)
	ext("db-3", "db", "10.2.0.3", 5432)
	ext("bad-1", "Bad_Name", "10.2.0.4", 80)

	c := runSource(t, testConfig(t, a))
	st := c.waitState("db-3 served and three diagnostics", wait, func(st *sources.State) bool {
		return healthIs("db", map[string]sources.Health{"10.2.0.3:5432": sources.HealthHealthy})(st) && len(st.Diagnostics) == 3
	})
	want := map[string]string{
		"consul:service/Bad_Name": "not a valid sluice service name",
		"consul:service/db/db-1":  `"db.example.com" is not an IP address`,
		"consul:service/db/db-2":  "port 0 is not in 1-65535",
	}
	for _, d := range st.Diagnostics {
		frag, ok := want[d.Location]
		if !ok || !strings.Contains(d.Message, frag) || d.Source != SourceName || d.Severity != sources.SeverityError {
			t.Errorf("unexpected diagnostic %+v", d)
		}
	}
	if service(st, "Bad_Name") != nil {
		t.Errorf("invalid service name served: %s", describe(st))
	}
}

func TestTagFilter(t *testing.T) {
	a := startAgent(t)
	cl := a.Client()
	registerTTL(t, cl, &api.AgentServiceRegistration{ID: "a-1", Name: "a", Address: "127.0.0.1", Port: 8001, Tags: []string{"prod", "v1"}}, api.HealthPassing)
	registerTTL(t, cl, &api.AgentServiceRegistration{ID: "a-2", Name: "a", Address: "127.0.0.1", Port: 8002, Tags: []string{"canary"}}, api.HealthPassing)
	registerTTL(t, cl, &api.AgentServiceRegistration{ID: "b-1", Name: "b", Address: "127.0.0.1", Port: 8003, Tags: []string{"dev"}}, api.HealthPassing)
	cfg := testConfig(t, a)
	cfg.Tags = []string{"prod"}
	c := runSource(t, cfg)
	st := c.waitState("only a-1", wait, healthIs("a", map[string]sources.Health{"127.0.0.1:8001": sources.HealthHealthy}))
	if len(st.Services) != 1 {
		t.Errorf("services = %s, want only a", describe(st))
	}
	// Tagging another instance brings it in.
	registerTTL(t, cl, &api.AgentServiceRegistration{ID: "b-1", Name: "b", Address: "127.0.0.1", Port: 8003, Tags: []string{"prod"}}, api.HealthPassing)
	c.waitState("b-1 once tagged prod", wait, healthIs("b", map[string]sources.Health{"127.0.0.1:8003": sources.HealthHealthy}))
}

// TestACLFiltering runs an agent with default-deny ACLs. A token that may
// read only some services gets those, with a warning that others were
// filtered out; once the token may read none, Consul's empty (and
// successful) answer is taken as losing the registry, not as an empty
// catalog: the source reports an error and sends no State, so the last
// catalog stays in effect.
func TestACLFiltering(t *testing.T) {
	a := startAgent(t, "-hcl", `acl { enabled = true, default_policy = "deny", tokens { initial_management = "root" } }`)
	admin := a.ClientAs("root")
	registerTTL(t, admin, &api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 9001}, api.HealthPassing)
	registerTTL(t, admin, &api.AgentServiceRegistration{ID: "db-1", Name: "db", Address: "127.0.0.1", Port: 5432}, api.HealthPassing)
	pol, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: "read-web", Rules: `service "web" { policy = "read" }
node_prefix "" { policy = "read" }`}, nil)
	if err != nil {
		t.Fatalf("creating policy: %v", err)
	}
	tok, _, err := admin.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
	if err != nil {
		t.Fatalf("creating token: %v", err)
	}

	cfg := testConfig(t, a)
	cfg.Token = tok.SecretID
	// ACL changes do not end a blocking query; a short wait re-reads soon.
	cfg.WaitTime = 500 * time.Millisecond
	c := runSource(t, cfg)
	st := c.waitState("web, the one readable service", wait, healthIs("web", map[string]sources.Health{"127.0.0.1:9001": sources.HealthHealthy}))
	if service(st, "db") != nil {
		t.Errorf("db is served although the token may not read it: %s", describe(st))
	}
	warned := false
	for _, d := range st.Diagnostics {
		warned = warned || d.Severity == sources.SeverityWarning && d.Location == "consul:catalog/services" && strings.Contains(d.Message, "service:read")
	}
	if !warned {
		t.Errorf("no warning that Consul filtered services by ACLs: %+v", st.Diagnostics)
	}

	before := c.count()
	pol.Rules = `node_prefix "" { policy = "read" }`
	if _, _, err := admin.ACL().PolicyUpdate(pol, nil); err != nil {
		t.Fatalf("updating policy: %v", err)
	}
	errAt := c.waitEvent("an Err once the token may read no service", before, wait, func(ev sources.Event) bool { return ev.Err != nil })
	evs, _ := c.snapshot()
	if !strings.Contains(evs[errAt].Err.Error(), "ACL") {
		t.Errorf("Err = %v, want it to name ACLs", evs[errAt].Err)
	}
	for i, ev := range evs[before:] {
		if ev.State != nil && service(ev.State, "web") == nil {
			t.Fatalf("event %d is a State without web (%s); want the last catalog kept", before+i, describe(ev.State))
		}
	}
}
