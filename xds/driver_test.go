package xds

import (
	"fmt"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
)

// The drivers run a session against the cache the way a stream does
// (stream.go), without gRPC: the first request attaches the client to its
// group (so that publishing wakes it, and ClearSnapshot keeps the group); a
// request is applied and answered at once if the client lacks something;
// poll answers what a wake-up would, whether or not one came (woken tells).

// cacheClient is a state-of-the-world client of one type.
type cacheClient struct {
	t     testing.TB
	c     *Cache
	key   string
	typ   string
	sess  session
	wake  *waker
	names []string
	// last is the last response, answered once the client sent a request
	// after it; accepted is the version of the last one the client
	// accepted.
	last     *discoveryv3.DiscoveryResponse
	answered bool
	accepted string
}

func newCacheClient(t testing.TB, c *Cache, typ string, names ...string) *cacheClient {
	return &cacheClient{t: t, c: c, key: nodeKey(&corev3.Node{Id: "n1", Cluster: "web"}), typ: typ, wake: newWaker(), names: names}
}

// request sends a request (an ACK of the last response, or a NACK) and
// returns the response it got at once, or nil.
func (cc *cacheClient) request(nack bool) *discoveryv3.DiscoveryResponse {
	cc.t.Helper()
	if cc.last != nil && !nack && !cc.answered {
		cc.accepted = cc.last.GetVersionInfo()
	}
	cc.answered = true
	req := &discoveryv3.DiscoveryRequest{TypeUrl: cc.typ, ResourceNames: cc.names, VersionInfo: cc.accepted, ResponseNonce: cc.last.GetNonce()}
	if nack {
		req.ErrorDetail = &status.Status{Code: 3, Message: "rejected"}
	}
	if cc.sub() == nil {
		cc.c.attach(cc.key, cc.wake) // the stream is admitted
	}
	t, ok := applySotw(&cc.sess, req)
	if !ok || t.pending {
		return nil
	}
	return cc.respond(t)
}

// poll returns what a wake-up sends now, or nil.
func (cc *cacheClient) poll() *discoveryv3.DiscoveryResponse {
	cc.t.Helper()
	cc.woken()
	t := cc.sub()
	if t == nil || t.pending {
		return nil
	}
	return cc.respond(t)
}

// sub is the session's state of the client's type, nil before the first
// request.
func (cc *cacheClient) sub() *typeSub {
	i, _ := typeIndex(cc.typ)
	return cc.sess.types[i]
}

// woken reports whether the client was woken since the last poll.
func (cc *cacheClient) woken() bool { return drain(cc.wake) }

// detach is the stream's end.
func (cc *cacheClient) detach() { cc.c.detach(cc.key, cc.wake) }

func (cc *cacheClient) respond(t *typeSub) *discoveryv3.DiscoveryResponse {
	resp := cc.sess.answerSotw(cc.c, t, cc.c.current(cc.key, t.idx))
	if resp == nil {
		return nil
	}
	cc.last, cc.answered = resp, false
	return resp
}

func drain(w *waker) bool {
	select {
	case <-w.ch:
		return true
	default:
		return false
	}
}

// deltaClient is a delta client of one type.
type deltaClient struct {
	t    testing.TB
	c    *Cache
	key  string
	typ  string
	sess session
	wake *waker
	last *discoveryv3.DeltaDiscoveryResponse
	// first is the subscription of the first request.
	first []string
	began bool
}

func newDeltaClient(t testing.TB, c *Cache, node *corev3.Node, names ...string) *deltaClient {
	return &deltaClient{t: t, c: c, key: nodeKey(node), typ: resource.EndpointType, wake: newWaker(), first: names}
}

// request sends req (nil: an ACK of the last response, or the first
// request) and returns the response it got at once, or nil. The first
// request subscribes to the names the client was made with, unless req
// says otherwise.
func (dc *deltaClient) request(req *discoveryv3.DeltaDiscoveryRequest) *discoveryv3.DeltaDiscoveryResponse {
	dc.t.Helper()
	if req == nil {
		req = &discoveryv3.DeltaDiscoveryRequest{ResponseNonce: dc.last.GetNonce()}
	}
	if !dc.began {
		if req.ResourceNamesSubscribe == nil {
			req.ResourceNamesSubscribe = dc.first
		}
		dc.c.attach(dc.key, dc.wake)
	}
	dc.began = true
	req.TypeUrl = dc.typ
	t, ok := dc.sess.deltaRequest(req)
	if !ok {
		return nil
	}
	return dc.respond(t)
}

// nack rejects the last response, and returns the response it got at
// once, or nil.
func (dc *deltaClient) nack() *discoveryv3.DeltaDiscoveryResponse {
	dc.t.Helper()
	return dc.request(&discoveryv3.DeltaDiscoveryRequest{
		ResponseNonce: dc.last.GetNonce(), ErrorDetail: &status.Status{Code: 3, Message: "rejected"},
	})
}

// poll returns what a wake-up sends now, or nil.
func (dc *deltaClient) poll() *discoveryv3.DeltaDiscoveryResponse {
	dc.woken()
	t := dc.sub()
	if t == nil || t.pending {
		return nil
	}
	return dc.respond(t)
}

// sub is the session's state of the client's type, nil before the first
// request.
func (dc *deltaClient) sub() *typeSub {
	i, _ := typeIndex(dc.typ)
	return dc.sess.types[i]
}

// woken reports whether the client was woken since the last poll.
func (dc *deltaClient) woken() bool { return drain(dc.wake) }

func (dc *deltaClient) respond(t *typeSub) *discoveryv3.DeltaDiscoveryResponse {
	resp := dc.sess.answerDelta(dc.c, t, dc.c.current(dc.key, t.idx))
	if resp == nil {
		return nil
	}
	dc.last = resp
	return resp
}

// bothClient is a client of one type over SotW or delta, for tests that
// run over both. Each operation returns what the response carried: the
// names sent, then over delta the names removed if any; "-" when nothing
// was sent.
type bothClient struct {
	ack, nack, poll func() string
	// subscribe adds names to the subscription.
	subscribe func(names ...string) string
	sub       func() *typeSub
}

func newBothClient(t testing.TB, c *Cache, node *corev3.Node, delta bool, typ string, names ...string) bothClient {
	if delta {
		dc := newDeltaClient(t, c, node, names...)
		dc.typ = typ
		str := func(r *discoveryv3.DeltaDiscoveryResponse) string {
			if r == nil {
				return "-"
			}
			var sent []string
			for _, res := range r.GetResources() {
				sent = append(sent, res.GetName())
			}
			if len(r.GetRemovedResources()) > 0 {
				return fmt.Sprint(sent, " removed ", r.GetRemovedResources())
			}
			return fmt.Sprint(sent)
		}
		return bothClient{
			ack:  func() string { return str(dc.request(nil)) },
			nack: func() string { return str(dc.nack()) },
			poll: func() string { return str(dc.poll()) },
			subscribe: func(n ...string) string {
				return str(dc.request(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: n}))
			},
			sub: dc.sub,
		}
	}
	cc := newCacheClient(t, c, typ, names...)
	cc.key = nodeKey(node)
	str := func(r *discoveryv3.DiscoveryResponse) string {
		if r == nil {
			return "-"
		}
		sent := make([]string, 0, len(r.GetResources()))
		for _, a := range r.GetResources() {
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, cache.GetResourceName(m))
		}
		return fmt.Sprint(sent)
	}
	return bothClient{
		ack:  func() string { return str(cc.request(false)) },
		nack: func() string { return str(cc.request(true)) },
		poll: func() string { return str(cc.poll()) },
		subscribe: func(n ...string) string {
			cc.names = append(slices.Clip(cc.names), n...)
			return str(cc.request(false))
		},
		sub: cc.sub,
	}
}

// applySotw applies a request whose names are decoded, as tests build
// them.
func applySotw(s *session, req *discoveryv3.DiscoveryRequest) (*typeSub, bool) {
	names := requestNames{decoded: req.GetResourceNames(), n: len(req.GetResourceNames())}
	t, ok, _ := s.sotwApply(req, &names) // decoded names do not fail
	return t, ok
}
