package xds

import (
	"context"
	"errors"
	"io"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sluice-mesh/sluice/envoy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Each stream has two goroutines: gRPC's handler goroutine, which runs the
// session (requests, wake-ups, sends), and one that receives requests.
// Sends block only the stream itself: the cache wakes a stream through a
// buffer of one and never waits for it, so a client that does not read
// holds up nothing but its own updates, which coalesce meanwhile.

// pushOrder is the order a wake-up looks at types in: envoy.Kinds', so
// that clusters come before their load assignments and listeners before
// their routes, as the xDS protocol advises; a proxy then never waits for
// a resource a response names.
var pushOrder = func() []types.ResponseType {
	var out []types.ResponseType
	for _, k := range envoy.Kinds {
		if i, ok := typeIndex(k.Type); ok {
			out = append(out, i)
		}
	}
	return out
}()

// errStopping ends streams when the server stops.
var errStopping = status.Error(codes.Unavailable, "sluice: the xDS server is stopping")

// adsStream is what the SotW and delta handlers share.
type adsStream struct {
	srv *Server
	ctx context.Context
	// cancel ends the stream with its cause (Tracker.Relocate).
	cancel context.CancelCauseFunc
	id     int64
	delta  bool
	// typeURL is the one type of a non-aggregated stream; "" for ADS.
	typeURL string
	sess    session
	node    *corev3.Node
	key     string
	wake    *waker
}

func (s *Server) newStream(ctx context.Context, delta bool, typeURL string) *adsStream {
	ctx, cancel := context.WithCancelCause(ctx)
	return &adsStream{
		srv: s, ctx: ctx, cancel: cancel, id: s.streams.Add(1), delta: delta, typeURL: typeURL,
		sess: session{delta: delta}, wake: newWaker(),
	}
}

// recvLoop receives requests into out until the stream ends; the error it
// ends with goes to errc.
func recvLoop[Req any](ctx context.Context, recv func() (*Req, error), out chan<- *Req, errc chan<- error) {
	for {
		req, err := recv()
		if err != nil {
			errc <- err
			return
		}
		select {
		case out <- req:
		case <-ctx.Done():
			return
		}
	}
}

// run serves a stream: handle takes a request, push a wake-up.
func run[Req any](st *adsStream, recv func() (*Req, error), handle func(*Req) error, push func() error) error {
	st.srv.Tracker.openCancelable(st.ctx, st.id, st.delta, st.cancel)
	defer st.cancel(nil)
	defer func() {
		if st.key != "" {
			st.srv.Cache.detach(st.key, st.wake)
		}
		st.srv.Tracker.closed(st.id, st.delta)
	}()
	reqs := make(chan *Req)
	errc := make(chan error, 1)
	go recvLoop(st.ctx, recv, reqs, errc)
	for {
		select {
		case <-st.srv.ctx.Done():
			return errStopping
		case <-st.ctx.Done():
			// The client's cancellation, or the tracker's status.
			return context.Cause(st.ctx)
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req := <-reqs:
			if err := handle(req); err != nil {
				return err
			}
		case <-st.wake.ch:
			if err := push(); err != nil {
				return err
			}
		}
	}
}

// checkType checks a request's type URL, which a non-aggregated stream may
// leave out.
func (st *adsStream) checkType(typeURL *string) error {
	if *typeURL == "" {
		if st.typeURL == "" {
			return status.Error(codes.InvalidArgument, "sluice: a type URL is required over ADS")
		}
		*typeURL = st.typeURL
	}
	if st.typeURL != "" && *typeURL != st.typeURL {
		return status.Errorf(codes.InvalidArgument, "sluice: this stream serves %s only", st.typeURL)
	}
	return nil
}

// admitted attaches the stream to its group once its client is admitted.
// key is the group the tracker admitted the client to: it depends on more
// than the node (a locality from the registry, looked up by the client's
// address), so it is not worked out again from the node here.
func (st *adsStream) admitted(node *corev3.Node, key string) {
	if st.key != "" {
		return
	}
	if node != nil {
		st.node = node
	}
	st.key = key
	st.srv.Cache.attach(st.key, st.wake)
}

// push answers a wake-up: every type the client is not answering yet is
// sent what it lacks of the group's current generations.
func (st *adsStream) push(send func(*typeSub, *generation) error) error {
	gens := st.srv.Cache.currentAll(st.key)
	for _, i := range pushOrder {
		if t := st.sess.types[i]; t != nil && !t.pending {
			if err := send(t, gens[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// serveSotw serves a state-of-the-world stream.
func (s *Server) serveSotw(str grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], typeURL string) error {
	st := s.newStream(str.Context(), false, typeURL)
	send := func(t *typeSub, gen *generation) error {
		resp := st.sess.answerSotw(s.Cache, t, gen)
		if resp == nil {
			return nil
		}
		s.Tracker.responseSotw(st.ctx, st.id, resp, t.held)
		return str.Send(resp)
	}
	handle := func(r *sotwRequest) error {
		req := &r.DiscoveryRequest
		if req.Node == nil {
			req.Node = st.node
		}
		if err := st.checkType(&req.TypeUrl); err != nil {
			return err
		}
		key, err := s.Tracker.requestSotw(st.id, req)
		if err != nil {
			return err
		}
		st.admitted(req.Node, key)
		t, ok, err := st.sess.sotwApply(req, &r.names)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "sluice: %v", err)
		}
		if !ok || t.pending {
			return nil
		}
		return send(t, s.Cache.current(st.key, t.idx))
	}
	recv := func() (*sotwRequest, error) {
		r := new(sotwRequest)
		return r, str.RecvMsg(r)
	}
	return run(st, recv, handle, func() error { return st.push(send) })
}

// serveDelta serves a delta stream.
func (s *Server) serveDelta(str grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse], typeURL string) error {
	st := s.newStream(str.Context(), true, typeURL)
	send := func(t *typeSub, gen *generation) error {
		resp := st.sess.answerDelta(s.Cache, t, gen)
		if resp == nil {
			return nil
		}
		s.Tracker.responseDelta(st.ctx, st.id, resp, t.held)
		return str.Send(resp)
	}
	handle := func(req *discoveryv3.DeltaDiscoveryRequest) error {
		if req.Node == nil {
			req.Node = st.node
		}
		if err := st.checkType(&req.TypeUrl); err != nil {
			return err
		}
		key, err := s.Tracker.requestDelta(st.id, req)
		if err != nil {
			return err
		}
		st.admitted(req.Node, key)
		t, ok := st.sess.deltaRequest(req)
		if !ok {
			return nil
		}
		return send(t, s.Cache.current(st.key, t.idx))
	}
	return run(st, str.Recv, handle, func() error { return st.push(send) })
}

// The gRPC services. Envoy and gRPC clients use ADS; the per-type services
// serve one type each, for clients configured without ADS.

type adsService struct{ s *Server }

func (a adsService) StreamAggregatedResources(str grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return a.s.serveSotw(str, "")
}

func (a adsService) DeltaAggregatedResources(str grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return a.s.serveDelta(str, "")
}

var errNoFetch = status.Error(codes.Unimplemented, "sluice serves xDS over streams only")

type cdsService struct{ s *Server }

func (c cdsService) StreamClusters(str grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return c.s.serveSotw(str, resource.ClusterType)
}

func (c cdsService) DeltaClusters(str grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return c.s.serveDelta(str, resource.ClusterType)
}

func (cdsService) FetchClusters(context.Context, *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return nil, errNoFetch
}

type edsService struct{ s *Server }

func (e edsService) StreamEndpoints(str grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return e.s.serveSotw(str, resource.EndpointType)
}

func (e edsService) DeltaEndpoints(str grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return e.s.serveDelta(str, resource.EndpointType)
}

func (edsService) FetchEndpoints(context.Context, *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return nil, errNoFetch
}

type ldsService struct{ s *Server }

func (l ldsService) StreamListeners(str grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return l.s.serveSotw(str, resource.ListenerType)
}

func (l ldsService) DeltaListeners(str grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return l.s.serveDelta(str, resource.ListenerType)
}

func (ldsService) FetchListeners(context.Context, *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return nil, errNoFetch
}

type rdsService struct{ s *Server }

func (r rdsService) StreamRoutes(str grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return r.s.serveSotw(str, resource.RouteType)
}

func (r rdsService) DeltaRoutes(str grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return r.s.serveDelta(str, resource.RouteType)
}

func (rdsService) FetchRoutes(context.Context, *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	return nil, errNoFetch
}

// register registers every service on gs.
func (s *Server) register(gs *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, adsService{s})
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, cdsService{s})
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, edsService{s})
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, ldsService{s})
	routeservice.RegisterRouteDiscoveryServiceServer(gs, rdsService{s})
}
