package xds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/sluice-mesh/sluice/translator"
)

// nodeKey is the group key of a client whose node says all there is to
// say (no registry locality): the proxy's Key.
func nodeKey(node *corev3.Node) string {
	p, err := translator.ProxyFromNode(node)
	if err != nil {
		panic(err)
	}
	return p.Key()
}

// groupRecorder records what a Tracker tells the loop.
type groupRecorder struct {
	mu                sync.Mutex
	ensured, released []string
	// refuse, when set, is the error EnsureGroup refuses groups with.
	refuse error
}

func (r *groupRecorder) EnsureGroup(p translator.Proxy) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse != nil {
		return r.refuse
	}
	r.ensured = append(r.ensured, p.Key())
	return nil
}

func (r *groupRecorder) ReleaseGroup(p translator.Proxy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released = append(r.released, p.Key())
}

// TestTrackerReleasesGroupWithLastStream: a group is released when its last
// identified stream closes, SotW and delta streams counted together.
func TestTrackerReleasesGroupWithLastStream(t *testing.T) {
	rec := &groupRecorder{}
	tr := NewTracker(rec, slog.New(slog.DiscardHandler), nil, nil)
	node := &corev3.Node{Id: "n", Cluster: "web", UserAgentName: "envoy"}
	ctx := context.Background()
	tr.open(ctx, 1, false)
	tr.open(ctx, 1, true)
	if _, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.requestDelta(1, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	tr.closed(1, false)
	if len(rec.released) != 0 {
		t.Fatalf("released with a stream still open: %v", rec.released)
	}
	tr.closed(1, true)
	if len(rec.released) != 1 || rec.released[0] != "envoy/sidecar/web" {
		t.Fatalf("released %v after the last stream closed", rec.released)
	}
}

// TestTrackerBoundsNacks: a client that NACKs with a huge error, over and
// over (the same response, responses already answered, new versions) costs
// a bounded excerpt in the admin view and a bounded number of log lines:
// one per rejected version, within a per-stream budget.
func TestTrackerBoundsNacks(t *testing.T) {
	var logs bytes.Buffer
	tr := NewTracker(&groupRecorder{}, slog.New(slog.NewTextHandler(&logs, nil)), nil, nil)
	node := &corev3.Node{Id: "n", Cluster: "web", UserAgentName: "envoy"}
	ctx := context.Background()
	tr.open(ctx, 1, false)
	if _, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("é", 1<<19) // 1 MiB
	nack := func(nonce string) {
		t.Helper()
		if _, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, ResponseNonce: nonce,
			ErrorDetail: &status.Status{Code: 3, Message: huge}}); err != nil {
			t.Fatal(err)
		}
	}
	respond := func(version, nonce string) {
		tr.responseSotw(ctx, 1, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: version, Nonce: nonce}, holding{})
	}
	respond("v1", "n1")
	for range 200 {
		nack("n1") // the first answers n1; the rest name a nonce already answered
	}
	// The same version again under a new nonce: still one log line.
	respond("v1", "n2")
	nack("n2")
	if got := strings.Count(logs.String(), "rejected config"); got != 1 {
		t.Fatalf("%d NACK log lines for one rejected version, want 1", got)
	}
	// Many new versions: at most the per-minute budget is logged.
	for i := range 20 {
		v, n := fmt.Sprintf("v%d", i+2), fmt.Sprintf("m%d", i)
		respond(v, n)
		nack(n)
	}
	if got := strings.Count(logs.String(), "rejected config"); got != nackLogsPerMinute {
		t.Fatalf("%d NACK log lines for 21 rejected versions within a minute, want the budget of %d", got, nackLogsPerMinute)
	}
	if logs.Len() > 64<<10 {
		t.Fatalf("NACKs wrote %d bytes of logs, want at most 64 KiB", logs.Len())
	}
	ps := tr.Proxies()
	if len(ps) != 1 {
		t.Fatalf("%d proxies", len(ps))
	}
	last := ps[0].Types[resource.ClusterType].LastNack
	if last == nil || last.Version != "v21" || len(last.Error) > maxNackDetail+64 || !strings.Contains(last.Error, "bytes cut") || !utf8.ValidString(last.Error) {
		t.Fatalf("last NACK kept as %q… (%d bytes), want version v21 and a valid, bounded excerpt", func() string {
			if last == nil {
				return ""
			}
			return last.Error[:min(40, len(last.Error))]
		}(), func() int {
			if last == nil {
				return 0
			}
			return len(last.Error)
		}())
	}
}

// TestTrackerRefusesWhenGroupsAreRefused: a client whose group the
// registrar refuses gets ResourceExhausted and is not counted as a proxy
// of the group.
func TestTrackerRefusesWhenGroupsAreRefused(t *testing.T) {
	rec := &groupRecorder{refuse: errors.New("too many proxy groups")}
	tr := NewTracker(rec, slog.New(slog.DiscardHandler), nil, nil)
	node := &corev3.Node{Id: "n", Cluster: "made-up-1", UserAgentName: "envoy"}
	tr.open(context.Background(), 1, false)
	_, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType})
	if gs, _ := grpcstatus.FromError(err); gs.Code() != codes.ResourceExhausted || !strings.Contains(gs.Message(), "too many proxy groups") {
		t.Fatalf("refused group: %v, want ResourceExhausted with the reason", err)
	}
	tr.closed(1, false)
	if len(rec.released) != 0 || len(tr.inGroup) != 0 {
		t.Fatalf("a refused client was counted: released %v, in groups %v", rec.released, tr.inGroup)
	}
}

// TestTrackerBoundsPendingNonces: a client that never answers its responses
// (a delta client that keeps subscribing with an empty nonce, say) does
// not grow the stream's record without end; answers to recent responses
// are still attributed.
func TestTrackerBoundsPendingNonces(t *testing.T) {
	tr := NewTracker(&groupRecorder{}, slog.New(slog.DiscardHandler), nil, nil)
	node := &corev3.Node{Id: "n", Cluster: "web", UserAgentName: "envoy"}
	ctx := context.Background()
	tr.open(ctx, 1, false)
	if _, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	for i := range 10000 {
		tr.responseSotw(ctx, 1, &discoveryv3.DiscoveryResponse{TypeUrl: resource.ClusterType, VersionInfo: fmt.Sprint(i), Nonce: fmt.Sprint("n", i)}, holding{})
	}
	s := tr.streams[streamKey{false, 1}]
	if len(s.nonces) > maxPendingNonces || len(s.order) > 2*maxPendingNonces+1 {
		t.Fatalf("10,000 unanswered responses left %d nonces and %d in order, want at most %d", len(s.nonces), len(s.order), maxPendingNonces)
	}
	if _, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, VersionInfo: "9999", ResponseNonce: "n9999"}); err != nil {
		t.Fatal(err)
	}
	if got := tr.Proxies()[0].Types[resource.ClusterType].Acked; got != "9999" {
		t.Fatalf("the ACK of the latest response was attributed to %q, want 9999", got)
	}
}

// TestCompareHoldings: the changes between two holdings, whole generations
// or explicit names, are the names added, removed and changed, sorted.
func TestCompareHoldings(t *testing.T) {
	gen := &generation{names: []string{"a", "b", "c"}, entries: map[string]*entry{"a": {hash: "1"}, "b": {hash: "2"}, "c": {hash: "3"}}}
	cases := []struct {
		name                    string
		was, next               holding
		added, removed, changed []string
	}{
		{"same generation", holding{whole: gen}, holding{whole: gen}, nil, nil, nil},
		{"from nothing", holding{}, holding{whole: gen}, []string{"a", "b", "c"}, nil, nil},
		{"generation to names", holding{whole: gen}, holding{explicit: map[string]string{"d": "4", "b": "2", "a": "9"}},
			[]string{"d"}, []string{"c"}, []string{"a"}},
		{"names to generation", holding{explicit: map[string]string{"c": "", "z": "1"}}, holding{whole: gen},
			[]string{"a", "b"}, []string{"z"}, []string{"c"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			added, removed, changed := compareHoldings(tc.was, tc.next)
			if !slices.Equal(added, tc.added) || !slices.Equal(removed, tc.removed) || !slices.Equal(changed, tc.changed) {
				t.Errorf("added %v removed %v changed %v, want %v %v %v", added, removed, changed, tc.added, tc.removed, tc.changed)
			}
		})
	}
}

// TestTrackerKeepsAckedHoldings: Node compares the holding of the last
// response with the one of the last ACK, when that ACK answered the
// response last sent at the time; an ACK of an older response leaves the
// changes unknown.
func TestTrackerKeepsAckedHoldings(t *testing.T) {
	tr := NewTracker(&groupRecorder{}, slog.New(slog.DiscardHandler), nil, nil)
	node := &corev3.Node{Id: "n", Cluster: "web", UserAgentName: "envoy"}
	ctx := context.Background()
	tr.open(ctx, 1, false)
	typ := resource.EndpointType
	request := func(version, nonce string) {
		t.Helper()
		if _, err := tr.requestSotw(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce}); err != nil {
			t.Fatal(err)
		}
	}
	respond := func(version, nonce string, held map[string]string) {
		tr.responseSotw(ctx, 1, &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: version, Nonce: nonce}, holding{explicit: held})
	}
	changes := func() *Changes {
		t.Helper()
		ps := tr.Node("n")
		if len(ps) != 1 {
			t.Fatalf("Node: %d streams, want 1", len(ps))
		}
		return ps[0].Types[typ].Changes
	}
	request("", "")
	respond("v1", "1", map[string]string{"a": "1", "b": "1"})
	if got := changes(); got == nil || got.Retained || got.Sent != "v1" || got.Acked != "" {
		t.Fatalf("before any ACK: %+v, want v1 sent and nothing known acked", got)
	}
	request("v1", "1")
	if got := changes(); got != nil {
		t.Fatalf("acked: changes %+v, want none", got)
	}
	respond("v2", "2", map[string]string{"a": "2", "c": "1"})
	want := &Changes{Acked: "v1", Sent: "v2", Retained: true, Added: []string{"c"}, Removed: []string{"b"}, Changed: []string{"a"}}
	if got := changes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("v2 sent: changes %+v, want %+v", got, want)
	}
	// The client answers v2 only after v3 was sent (as no client of
	// sluice's does): what it acked is not known.
	respond("v3", "3", map[string]string{"a": "3"})
	request("v2", "2")
	if got := changes(); got == nil || got.Retained || got.Acked != "v2" || got.Sent != "v3" || got.Added != nil {
		t.Fatalf("acked an older response: %+v, want v2 acked, v3 sent, not retained", got)
	}
	if got := tr.Proxies()[0].Types[typ].Changes; got != nil {
		t.Fatalf("Proxies lists changes %+v; only Node works them out", got)
	}
}
