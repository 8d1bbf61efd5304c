package main

import (
	"context"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluice-mesh/sluice/cmd/internal/admin"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/policy/watch"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/file"
)

// The groups the live tests connect: reviews' sidecar and the gRPC
// clients (two of the four groups offline diff guesses).
const (
	liveEnvoyGroup = "envoy/sidecar/reviews/in=9080"
	liveGRPCGroup  = "grpc"
)

// startLiveServer runs the loop, xDS server and admin API with the
// offline tests' registry file and current policy directory, connects an
// Envoy of reviews (inbound port 9080) and a gRPC client, waits until
// their groups are built, and returns the admin API's address.
func startLiveServer(t *testing.T) string {
	t.Helper()
	policies := make(chan watch.Update, 1)
	files, diags := policy.ReadDir(offCurrent)
	set, lds := policy.Load(files)
	if set == nil || len(diags) > 0 {
		t.Fatalf("loading %s: %v %v", offCurrent, diags, lds)
	}
	policies <- watch.Update{Set: set}
	s := startStatusServerWith(t, policies)

	data, err := os.ReadFile(offRegistry)
	if err != nil {
		t.Fatal(err)
	}
	st, ds := file.Parse(offRegistry, data)
	if st == nil || len(ds) > 0 {
		t.Fatalf("parsing %s: %v", offRegistry, ds)
	}
	select {
	case s.events <- sources.Event{Source: "file", State: st}:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not take the catalog")
	}
	waitUntil(t, "the loop to be ready", s.loop.Ready)

	conn, err := grpc.NewClient(s.xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	inbound, err := structpb.NewStruct(map[string]any{"inbound_port": "9080"})
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []*corev3.Node{
		{Id: "reviews-1", Cluster: "reviews", UserAgentName: "envoy", Metadata: inbound},
		{Id: "client-1", UserAgentName: "gRPC Go"},
	} {
		ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := ads.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
			t.Fatal(err)
		}
		if _, err := ads.Recv(); err != nil {
			t.Fatalf("%s: %v", node.GetId(), err)
		}
	}
	waitUntil(t, "both groups to be built", func() bool {
		var keys []string
		for _, g := range s.loop.Status().Groups {
			if g.Versions != nil {
				keys = append(keys, g.Key)
			}
		}
		return strings.Join(keys, " ") == liveEnvoyGroup+" "+liveGRPCGroup
	})
	return s.adminAddr(t, admin.Guard{Loopback: true})
}

// diffSections splits diff's output into its groups' sections, by key.
func diffSections(out string) map[string]string {
	sections := map[string]string{}
	var key string
	for _, line := range strings.SplitAfter(out, "\n") {
		switch {
		case strings.HasPrefix(line, "group "):
			key = strings.TrimSuffix(strings.TrimPrefix(line, "group "), ":\n")
			sections[key] = line
		case strings.HasPrefix(line, "  ") && key != "":
			sections[key] += line
		default:
			key = ""
		}
	}
	return sections
}

// TestLiveDiff: against a running sluice, diff compares for the groups
// connected to it, and says for each what offline diff says for the same
// registry file and policy directories; an identical proposal changes
// nothing.
func TestLiveDiff(t *testing.T) {
	addr := startLiveServer(t)
	offline, errOut, err := run(t, nil, "diff", "--registry-file", offRegistry, "--policy-dir", offCurrent, "--proposed-policy-dir", offProposed)
	if exitStatus(err) != 1 {
		t.Fatalf("offline diff: %v\n%s", err, errOut)
	}
	live, errOut, err := run(t, nil, "diff", "--admin-addr", addr, "--proposed-policy-dir", offProposed)
	if exitStatus(err) != 1 {
		t.Fatalf("live diff: err %v, want exit status 1\nstdout:\n%s\nstderr:\n%s", err, live, errOut)
	}
	want, got := diffSections(offline), diffSections(live)
	if len(got) != 2 || got[liveEnvoyGroup] == "" || got[liveGRPCGroup] == "" {
		t.Fatalf("live diff lists groups %v, want %s and %s; it printed\n%s", keysOf(got), liveEnvoyGroup, liveGRPCGroup, live)
	}
	for key, section := range got {
		if section != want[key] {
			t.Errorf("live diff of %s:\n%s\nwant, as offline:\n%s", key, section, want[key])
		}
	}
	if !strings.HasSuffix(live, "2 of 2 groups change\n") {
		t.Errorf("live diff ends\n%s\nwant 2 of 2 groups change", live)
	}

	out, errOut, err := run(t, nil, "diff", "--admin-addr", addr, "--proposed-policy-dir", offCurrent)
	if err != nil || out != "no changes in 2 groups\n" {
		t.Errorf("live diff with the served policy as proposal: err %v, stdout %q, stderr %q; want no changes in 2 groups, exit status 0", err, out, errOut)
	}

	out, errOut, err = run(t, nil, "diff", "--admin-addr", addr, "--proposed-policy-dir", offProposed, "--service", "reviews")
	if exitStatus(err) != 1 || strings.Join(keysOf(diffSections(out)), " ") != liveEnvoyGroup {
		t.Errorf("live diff --service reviews: err %v\n%s\n%s\nwant reviews' sidecar only", err, out, errOut)
	}
	_, errOut, err = run(t, nil, "diff", "--admin-addr", addr, "--proposed-policy-dir", offProposed, "--service", "ratings")
	if exitStatus(err) != 2 || !strings.Contains(errOut, "--service") || !strings.Contains(errOut, "has no Envoy connected") {
		t.Errorf("live diff --service ratings (not connected): err %v, stderr %q; want exit status 2 naming --service", err, errOut)
	}
	_, errOut, err = run(t, nil, "diff", "--admin-addr", addr, "--policy-dir", offCurrent, "--proposed-policy-dir", offProposed)
	if exitStatus(err) != 2 || !strings.Contains(errOut, "--policy-dir: does not go with --admin-addr") {
		t.Errorf("live diff with --policy-dir: err %v, stderr %q; want exit status 2 refusing it", err, errOut)
	}
}

func keysOf(m map[string]string) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestLiveExplainTranslate: explain and translate against a running
// sluice print what they print offline for the same inputs (the served
// set was loaded from the same paths, so the sources match too).
func TestLiveExplainTranslate(t *testing.T) {
	addr := startLiveServer(t)
	for _, tc := range []struct {
		name          string
		offline, live []string
	}{
		{"explain", []string{"explain", "reviews", "--registry-file", offRegistry, "--policy-dir", offCurrent},
			[]string{"explain", "reviews", "--admin-addr", addr}},
		{"explain a route", []string{"explain", "reviews", "--route", "/api", "--registry-file", offRegistry, "--policy-dir", offCurrent},
			[]string{"explain", "reviews", "--route", "/api", "--admin-addr", addr}},
		{"translate the sidecar", []string{"translate", "--service", "reviews", "--inbound-port", "9080", "--registry-file", offRegistry, "--policy-dir", offCurrent},
			[]string{"translate", "--group", liveEnvoyGroup, "--admin-addr", addr}},
		{"translate for gRPC", []string{"translate", "--grpc", "-o", "json", "--registry-file", offRegistry, "--policy-dir", offCurrent},
			[]string{"translate", "-o", "json", "--group", liveGRPCGroup, "--admin-addr", addr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, wantErr, err := run(t, nil, tc.offline...)
			if err != nil {
				t.Fatalf("offline: %v\n%s", err, wantErr)
			}
			got, gotErr, err := run(t, nil, tc.live...)
			if err != nil {
				t.Fatalf("live: %v\n%s", err, gotErr)
			}
			if got != want || gotErr != wantErr {
				t.Errorf("live printed\n%s\nstderr %q\nwant, as offline:\n%s\nstderr %q", got, gotErr, want, wantErr)
			}
		})
	}

	_, errOut, err := run(t, nil, "translate", "--group", "envoy/sidecar/nope", "--admin-addr", addr)
	if err == nil || !strings.Contains(err.Error(), "is not a group of the running sluice (its groups: "+liveEnvoyGroup+", "+liveGRPCGroup+")") {
		t.Errorf("translate of an unknown group: err %v, stderr %q; want the running groups listed", err, errOut)
	}
	if _, _, err := run(t, nil, "translate", "--service", "reviews", "--group", liveGRPCGroup, "--admin-addr", addr); err == nil || !strings.Contains(err.Error(), "--service: does not go with --admin-addr") {
		t.Errorf("translate --service with --admin-addr: %v, want it refused", err)
	}
	if _, _, err := run(t, nil, "translate", "--admin-addr", addr); err == nil || !strings.Contains(err.Error(), "--group: is required with --admin-addr") {
		t.Errorf("translate without --group: %v", err)
	}
	if _, _, err := run(t, nil, "translate", "--group", liveGRPCGroup, "--registry-file", offRegistry); err == nil || !strings.Contains(err.Error(), "--group: names a running group: it needs --admin-addr") {
		t.Errorf("translate --group offline: %v", err)
	}
	out, errOut, err := run(t, nil, "explain", "nope", "--admin-addr", addr)
	if err != nil || !strings.Contains(errOut, "nope: is not a service of the running sluice's catalog") || !strings.HasPrefix(out, "service nope, policies: ") {
		t.Errorf("explain of a service not in the running catalog: err %v, stderr %q", err, errOut)
	}
}

// TestLiveAdminErrors: an admin API that is down, or wants a token, is
// exit status 2 with the address named, as for sluice status; the token
// file (from the environment) passes the guard.
func TestLiveAdminErrors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := lis.Addr().String()
	_ = lis.Close()
	for _, args := range [][]string{
		{"diff", "--admin-addr", down, "--proposed-policy-dir", offProposed},
		{"explain", "reviews", "--admin-addr", down},
		{"translate", "--admin-addr", down, "--group", "grpc"},
	} {
		_, errOut, err := run(t, nil, args...)
		if exitStatus(err) != 2 || !strings.Contains(errOut, "sluice "+args[0]+": cannot reach the admin API at "+down) {
			t.Errorf("%s with the admin API down: err %v, stderr %q; want exit status 2 naming %s", args[0], err, errOut, down)
		}
	}

	token := t.TempDir() + "/token"
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startStatusServer(t)
	s.setCatalog(t, "10.0.0.1")
	addr := s.adminAddr(t, admin.Guard{TokenFile: token})
	_, errOut, err := run(t, nil, "explain", "web", "--admin-addr", addr)
	if exitStatus(err) != 2 || !strings.Contains(errOut, "wants a bearer token: pass --admin-token-file") {
		t.Errorf("explain without the token: err %v, stderr %q; want exit status 2", err, errOut)
	}
	out, errOut, err := run(t, map[string]string{"SLUICE_ADMIN_TOKEN_FILE": token}, "explain", "web", "--admin-addr", addr)
	if err != nil || !strings.HasPrefix(out, "service web, policies: none (built-in defaults)\n") {
		t.Errorf("explain with the token: err %v\n%s\n%s", err, out, errOut)
	}
}
