// Package xds serves snapshots to Envoy proxies and gRPC clients over ADS
// (state-of-the-world and delta) with go-control-plane's server, and tracks
// what every connected client was sent, acknowledged and rejected.
package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-mesh/sluice/translator"
)

// NodeHash maps a node to its config group, so every proxy with the same
// identity shares one snapshot.
type NodeHash struct{}

// ID implements cache.NodeHash. Nodes whose metadata is invalid are refused
// by the callbacks before they reach the cache; "invalid" keeps them apart
// from everyone else should one slip through.
func (NodeHash) ID(node *corev3.Node) string {
	p, err := translator.ProxyFromNode(node)
	if err != nil {
		return "invalid"
	}
	return p.Key()
}

// nackGuard wraps go-control-plane's snapshot cache. After a NACK the client
// reports the last version it accepted, which differs from the snapshot's, so
// the plain cache answers at once with the very resources that were just
// rejected, in a tight loop. nackGuard treats a NACK as if the client held the
// rejected version: the watch then fires only when a new version exists.
type nackGuard struct {
	cache.SnapshotCache
	hash NodeHash
}

// CreateWatch implements cache.ConfigWatcher.
func (g nackGuard) CreateWatch(req *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	if req.GetErrorDetail() != nil {
		rejected := ""
		for _, v := range sub.ReturnedResources() {
			rejected = v
			break
		}
		if rejected == "" {
			// The rejected response carried no resources: it was the version
			// currently in the snapshot.
			if snap, err := g.GetSnapshot(g.hash.ID(req.GetNode())); err == nil {
				rejected = snap.GetVersion(req.GetTypeUrl())
			}
		}
		r := proto.Clone(req).(*cache.Request)
		r.VersionInfo = rejected
		req = r
	}
	return g.SnapshotCache.CreateWatch(req, sub, out)
}
