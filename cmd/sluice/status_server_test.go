package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-mesh/sluice/cmd/internal/admin"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
	"github.com/sluice-mesh/sluice/xds"
)

// statusServer is sluice's snapshot loop, xDS server and admin API wired
// as serve wires them, fed catalogs directly.
type statusServer struct {
	events chan sources.Event
	loop   *snapshot.Loop
	srv    *xds.Server
	xds    string
	admin  admin.Config
}

func startStatusServer(t *testing.T) *statusServer {
	t.Helper()
	return startStatusServerWith(t, nil)
}

// startStatusServerWith starts the loop with policies delivering its
// policy sets (nil: the built-in defaults).
func startStatusServerWith(t *testing.T, policies <-chan watch.Update) *statusServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	snapshots := xds.NewCache(log)
	loop := snapshot.NewLoop(snapshot.Config{
		Sources: []string{"file"}, Translator: translator.New(), Publisher: snapshots, Policies: policies,
		HoldOff: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond, Log: log, Metrics: snapshot.NewMetrics(reg),
	})
	srv := xds.NewServer(ctx, xds.Config{Cache: snapshots, Groups: loop, Log: log, Metrics: xds.NewMetrics(reg), DrainTimeout: time.Second})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &statusServer{
		events: make(chan sources.Event), loop: loop, srv: srv, xds: lis.Addr().String(),
		admin: admin.Config{Metrics: reg, Loop: loop, Proxies: srv.Tracker, Snapshots: snapshots, Replica: "replica-a", Guard: admin.Guard{Loopback: true}},
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = loop.Run(ctx, s.events) }()
	go func() { defer wg.Done(); _ = srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return s
}

// setCatalog gives the loop web's instances.
func (s *statusServer) setCatalog(t *testing.T, addrs ...string) {
	t.Helper()
	var insts []sources.Instance
	for _, a := range addrs {
		insts = append(insts, sources.Instance{Address: a, Port: 8080, Health: sources.HealthHealthy})
	}
	st := sources.State{Services: []sources.Service{{Name: "web", Instances: insts}}}
	st.Normalize("file")
	select {
	case s.events <- sources.Event{Source: "file", State: &st}:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not take the catalog")
	}
}

// adminAddr serves the admin API over HTTP, with guard, and returns its
// address.
func (s *statusServer) adminAddr(t *testing.T, guard admin.Guard) string {
	t.Helper()
	c := s.admin
	c.Guard = guard
	hs := httptest.NewServer(admin.NewHandler(c))
	t.Cleanup(hs.Close)
	return strings.TrimPrefix(hs.URL, "http://")
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStatusCommand runs `sluice status` against a real admin API whose
// tracker follows a real ADS stream: the client acks CDS, leaves an EDS
// update unanswered, rejects LDS and never asks for RDS.
func TestStatusCommand(t *testing.T) {
	s := startStatusServer(t)
	s.setCatalog(t, "10.0.0.1")
	waitUntil(t, "the loop to be ready", s.loop.Ready)

	conn, err := grpc.NewClient(s.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "web-1", Cluster: "web", UserAgentName: "envoy"}
	send := func(req *discoveryv3.DiscoveryRequest) {
		t.Helper()
		req.Node = node
		if err := ads.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(typ string) *discoveryv3.DiscoveryResponse {
		t.Helper()
		resp, err := ads.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTypeUrl() != typ {
			t.Fatalf("got a %s response, want %s", resp.GetTypeUrl(), typ)
		}
		return resp
	}
	ack := func(r *discoveryv3.DiscoveryResponse) {
		send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()})
	}
	send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType})
	ack(recv(resource.ClusterType))
	send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.EndpointType})
	eds1 := recv(resource.EndpointType)
	ack(eds1)
	send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType})
	lds := recv(resource.ListenerType)
	send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: lds.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "listener rejected for the test"}})
	s.setCatalog(t, "10.0.0.1", "10.0.0.2")
	eds2 := recv(resource.EndpointType) // not acked
	waitUntil(t, "the tracker to record the NACK", func() bool {
		ps := s.srv.Tracker.Proxies()
		return len(ps) == 1 && ps[0].Types[resource.ListenerType].LastNack != nil && ps[0].Types[resource.EndpointType].Sent == eds2.GetVersionInfo()
	})
	addr := s.adminAddr(t, admin.Guard{Loopback: true})

	out, stderr, err := run(t, nil, "status", "--admin-addr", addr)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, stderr)
	}
	row := regexp.MustCompile(`(?m)^web-1\s+envoy/sidecar/web\s+envoy\s+sotw\s+SYNCED\s+STALE \(\d+s\)\s+NACKED\s+NOT SENT\s+replica-a$`)
	if !strings.HasPrefix(out, "NODE ") || !row.MatchString(out) {
		t.Errorf("status printed\n%s\nwant a header and the row %s", out, row)
	}

	t.Logf("status:\n%s", out)
	out, stderr, err = run(t, nil, "status", "web-1", "--admin-addr", addr)
	t.Logf("status web-1:\n%s", out)
	if err != nil {
		t.Fatalf("status web-1: %v\n%s", err, stderr)
	}
	for _, want := range []string{
		"Node:          web-1\n", "Group:         envoy/sidecar/web\n", "Protocol:      sotw\n", "Replica:       replica-a\n",
		"Dependencies:  every service (the built-in default)\n",
		"LDS version " + lds.GetVersionInfo() + ", ",
		": listener rejected for the test (code 3)\n",
		"EDS acked " + eds1.GetVersionInfo() + ", sent " + eds2.GetVersionInfo() + ": changed web\n",
		"LDS acked nothing, sent " + lds.GetVersionInfo() + ": nothing acknowledged on this stream yet\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status web-1 lacks %q; it printed\n%s", want, out)
		}
	}

	out, _, err = run(t, nil, "status", "-o", "json", "--admin-addr", addr)
	var st admin.Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Replica != "replica-a" || len(st.Proxies) != 1 || st.Proxies[0].NodeID != "web-1" {
		t.Errorf("status -o json: %v\n%s", err, out)
	}

	_, _, err = run(t, nil, "status", "web-2", "--admin-addr", addr)
	var ee exitError
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), `no connected xDS client has node id "web-2"`) {
		t.Errorf("status of an unknown node: %v, want an error naming it (exit status 1)", err)
	}
}

// TestStatusAdminErrors: an admin API that is down, or wants a token,
// gives exit status 2 and a message naming its address; the token file
// passes the guard.
func TestStatusAdminErrors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := lis.Addr().String()
	_ = lis.Close()
	_, stderr, err := run(t, nil, "status", "--admin-addr", down)
	var ee exitError
	if !errors.As(err, &ee) || ee != 2 || !strings.Contains(stderr, "cannot reach the admin API at "+down) {
		t.Errorf("admin API down: err %v, stderr %q; want exit status 2 naming %s", err, stderr, down)
	}

	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startStatusServer(t)
	addr := s.adminAddr(t, admin.Guard{TokenFile: token})
	_, stderr, err = run(t, nil, "status", "--admin-addr", addr)
	if !errors.As(err, &ee) || ee != 2 || !strings.Contains(stderr, "the admin API at "+addr+" wants a bearer token: pass --admin-token-file") {
		t.Errorf("no token: err %v, stderr %q; want exit status 2 and the flag to pass", err, stderr)
	}
	_, stderr, err = run(t, map[string]string{"SLUICE_ADMIN_TOKEN_FILE": token}, "status", "--admin-addr", addr)
	if err != nil || !strings.Contains(stderr, "No xDS clients are connected to replica-a") {
		t.Errorf("with the token (from the environment): err %v, stderr %q", err, stderr)
	}
	if _, _, err := run(t, nil, "status", "--admin-addr", "nohost"); err == nil || !strings.Contains(err.Error(), "--admin-addr") {
		t.Errorf("bad --admin-addr: %v", err)
	}
}
