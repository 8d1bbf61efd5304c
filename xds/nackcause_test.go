package xds

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
)

// Client errors as real clients word them.
const (
	// Envoy 1.40 rejecting a route configuration whose header regex is
	// over RE2's program size limit, as observed in TestNackCause
	// (e2e/nack_cause_test.go): the message names no resource.
	envoyRegexError = `regex '^(alpha|bravo|charlie|delta|echo|foxtrot|golf|hotel|india|juliet|kilo|lima|mike){3,9}$' RE2 program size of 611 > max program size of 100 set for the error level threshold. Increase configured max program size if necessary. (code 13)`
	// Envoy, clusters and listeners: "Error adding/updating cluster(s)
	// NAMES: error" (source/common/upstream/cds_api_helper.cc,
	// source/common/listener_manager/lds_api.cc).
	envoyClusterError  = `Error adding/updating cluster(s) user-service|v2: Proto constraint validation failed (ClusterValidationError.LbPolicy: value must be one of the defined enum values) (code 13)`
	envoyListenerError = `Error adding/updating listener(s) outbound_http: unknown filter 'envoy.filters.http.nope' (code 13)`
	// gRPC-Go 1.85's xDS client: combineErrors in
	// internal/xds/clients/xdsclient/channel.go around the message of
	// unmarshal_rds.go.
	grpcRouteError = `error parsing "RouteConfigResource" response: resource "user-service": route retry policy: retry_policy.num_retries = 0; must be >= 1 (code 3)`
)

// TestQuotedNames: the names a client's error quotes are found among what
// it was sent, whatever punctuation surrounds them, and no shorter name
// is taken out of a longer one.
func TestQuotedNames(t *testing.T) {
	held := holding{explicit: map[string]string{
		"user-service": "1", "user-service|v2": "1", "user": "1", "outbound_http": "1", "web:8080": "1", "web": "1", "inbound|8080": "1",
	}}
	cases := []struct {
		name, text string
		want       []string
	}{
		{"envoy regex names nothing", envoyRegexError, nil},
		{"envoy cluster", envoyClusterError, []string{"user-service|v2"}},
		{"envoy listener", envoyListenerError, []string{"outbound_http"}},
		{"grpc", grpcRouteError, []string{"user-service"}},
		{"host and port", `resource "web:8080": bad`, []string{"web:8080"}},
		{"end of sentence", `cluster 'inbound|8080' refused. Also web.`, []string{"inbound|8080", "web"}},
		{"unheld names", `resource "nobody": bad`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := quotedNames(tc.text, held); !slices.Equal(got, tc.want) {
				t.Errorf("quotedNames(%q) = %v, want %v", tc.text, got, tc.want)
			}
		})
	}
}

// TestNackResources: the names the error quotes, else what the rejected
// response adds or changes of what the client acked, else (unknown)
// nothing.
func TestNackResources(t *testing.T) {
	acked := holding{explicit: map[string]string{"a": "1", "b": "1", "outbound_http": "1"}}
	rejected := holding{explicit: map[string]string{"a": "2", "c": "1", "outbound_http": "1"}}
	if got := nackResources("Error adding/updating cluster(s) c: bad", rejected, acked, true); !slices.Equal(got, []string{"c"}) {
		t.Errorf("quoted: %v, want [c]", got)
	}
	if got := nackResources(envoyRegexError, rejected, acked, true); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("unquoted: %v, want the added and changed [a c]", got)
	}
	if got := nackResources(envoyRegexError, rejected, holding{}, false); got != nil {
		t.Errorf("unquoted, acked holding unknown: %v, want nil", got)
	}
}

// nackRecorder is a registrar that observes NACKs.
type nackRecorder struct {
	groupRecorder
	mu     sync.Mutex
	events []NackEvent
}

func (r *nackRecorder) Nacked(n NackEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, n)
}

// TestTrackerReportsNacks: each rejected version of a stream is reported
// once to a registrar that observes NACKs, with the client, its group, the
// version it had accepted before and the resources concerned, which the
// admin view keeps too (bounded).
func TestTrackerReportsNacks(t *testing.T) {
	rec := &nackRecorder{}
	tr := NewTracker(rec, slog.New(slog.DiscardHandler), nil, nil)
	node := &corev3.Node{Id: "front-1", Cluster: "frontend", UserAgentName: "envoy"}
	ctx := context.Background()
	tr.open(ctx, 1, false)
	typ := resource.RouteType
	request := func(version, nonce, errText string) {
		t.Helper()
		req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce}
		if errText != "" {
			req.ErrorDetail = &status.Status{Code: 13, Message: errText}
		}
		if _, err := tr.requestSotw(1, req); err != nil {
			t.Fatal(err)
		}
	}
	respond := func(version, nonce string, held map[string]string) {
		tr.responseSotw(ctx, 1, &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: version, Nonce: nonce}, holding{explicit: held})
	}
	request("", "", "")
	respond("v1", "1", map[string]string{"outbound_http": "1", "inbound_http": "1"})
	request("v1", "1", "")
	respond("v2", "2", map[string]string{"outbound_http": "2", "inbound_http": "1"})
	request("v1", "2", "regex 'x{3,9}' RE2 program size of 611 > max program size of 100")
	// The same version again, and the same NACK: not reported again.
	respond("v2", "3", map[string]string{"outbound_http": "2", "inbound_http": "1"})
	request("v1", "3", "regex 'x{3,9}' RE2 program size of 611 > max program size of 100")

	want := NackEvent{NodeID: "front-1", Group: nodeKey(node), TypeURL: typ, Version: "v2", Accepted: "v1",
		Detail: "regex 'x{3,9}' RE2 program size of 611 > max program size of 100 (code 13)", Resources: []string{"outbound_http"}}
	if !reflect.DeepEqual(rec.events, []NackEvent{want}) {
		t.Fatalf("reported %+v, want once %+v", rec.events, want)
	}
	last := tr.Proxies()[0].Types[typ].LastNack
	if last == nil || !slices.Equal(last.Resources, []string{"outbound_http"}) || last.ResourcesTotal != 1 {
		t.Fatalf("last NACK %+v, want its resource outbound_http", last)
	}

	// A version that changes many resources: the admin view keeps the
	// first of them and their number, the event has them all.
	many := map[string]string{}
	for i := range 50 {
		many[fmt.Sprintf("svc-%02d", i)] = "1"
	}
	respond("v3", "4", many)
	request("v1", "4", "no")
	if n := len(rec.events); n != 2 || len(rec.events[1].Resources) != 50 {
		t.Fatalf("%d events, the last with %d resources; want 2, the last with 50", n, len(rec.events[n-1].Resources))
	}
	last = tr.Proxies()[0].Types[typ].LastNack
	if len(last.Resources) != maxNackResources || last.ResourcesTotal != 50 || last.Resources[0] != "svc-00" {
		t.Fatalf("last NACK keeps %d resources of %d, want the first %d of 50", len(last.Resources), last.ResourcesTotal, maxNackResources)
	}
}
