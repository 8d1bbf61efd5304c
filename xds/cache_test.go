package xds

import (
	"context"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestNodeHash(t *testing.T) {
	for _, tc := range []struct {
		name string
		node *corev3.Node
		want string
	}{
		{"envoy sidecar", &corev3.Node{Id: "n1", Cluster: "web", UserAgentName: "envoy"}, "envoy/sidecar/web"},
		{"gRPC client", &corev3.Node{Id: "g1", Cluster: "web", UserAgentName: "gRPC Go"}, "grpc"},
		{"invalid metadata", &corev3.Node{Id: "bad", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"outbound_port": structpb.NewStringValue("abc"),
		}}}, "invalid"},
	} {
		if got := (NodeHash{}).ID(tc.node); got != tc.want {
			t.Errorf("%s: NodeHash.ID = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestNackGuard drives CreateWatch directly, the way go-control-plane's SotW
// server does after a NACK, and shows the difference the guard makes: the
// plain cache answers the NACK at once with the very version the client just
// rejected; the guard waits for a new version. Responses are produced inside
// CreateWatch and SetSnapshot, so no waiting is involved.
func TestNackGuard(t *testing.T) {
	node := &corev3.Node{Id: "n1", Cluster: "web"}
	key := NodeHash{}.ID(node)
	snapshot := func(version string, loadAssignments ...string) *cache.Snapshot {
		var rs []types.Resource
		for _, n := range loadAssignments {
			rs = append(rs, &endpointv3.ClusterLoadAssignment{ClusterName: n})
		}
		snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{resource.EndpointType: rs})
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	// The client accepted v1, was then sent v2 under nonce "2", and answers.
	request := func(nack bool) *cache.Request {
		r := &cache.Request{Node: node, TypeUrl: resource.EndpointType, ResourceNames: []string{"a"}, VersionInfo: "v1", ResponseNonce: "2"}
		if nack {
			r.ErrorDetail = &status.Status{Code: 3, Message: "rejected"}
		}
		return r
	}
	subscription := func(returned map[string]string) stream.Subscription {
		sub := stream.NewSotwSubscription([]string{"a"}, true)
		sub.SetReturnedResources(returned)
		return sub
	}
	responseVersion := func(out chan cache.Response) string {
		select {
		case r := <-out:
			v, err := r.GetVersion()
			if err != nil {
				t.Fatal(err)
			}
			return v
		default:
			return "" // no response
		}
	}

	for _, tc := range []struct {
		name     string
		guard    bool
		nack     bool
		v2       []string          // the load assignments in v2
		returned map[string]string // what the server last sent on the stream
		want     string            // version answered at once, "" for none
	}{
		{name: "plain cache resends the rejected version", nack: true, v2: []string{"a"}, returned: map[string]string{"a": "v2"}, want: "v2"},
		{name: "guard holds the rejected version", guard: true, nack: true, v2: []string{"a"}, returned: map[string]string{"a": "v2"}},
		{name: "guard holds an empty rejected response", guard: true, nack: true, returned: map[string]string{}},
		{name: "guard passes an ordinary request through", guard: true, v2: []string{"a"}, returned: map[string]string{"a": "v2"}, want: "v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cache.NewSnapshotCache(true, NodeHash{}, nil)
			w := c
			if tc.guard {
				w = nackGuard{SnapshotCache: c}
			}
			if err := c.SetSnapshot(context.Background(), key, snapshot("v2", tc.v2...)); err != nil {
				t.Fatal(err)
			}
			out := make(chan cache.Response, 1)
			cancel, err := w.CreateWatch(request(tc.nack), subscription(tc.returned), out)
			if err != nil {
				t.Fatal(err)
			}
			defer cancel()
			if got := responseVersion(out); got != tc.want {
				t.Fatalf("CreateWatch answered with version %q, want %q", got, tc.want)
			}
			if tc.want != "" {
				return
			}
			// The held watch fires as soon as there is a new version.
			if err := c.SetSnapshot(context.Background(), key, snapshot("v3", "a")); err != nil {
				t.Fatal(err)
			}
			if got := responseVersion(out); got != "v3" {
				t.Fatalf("after a new snapshot the watch answered with %q, want v3", got)
			}
		})
	}
}
