package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-mesh/sluice/translator"
)

// GroupRegistrar learns about proxy groups as clients connect and leave;
// the snapshot loop implements it.
type GroupRegistrar interface {
	// EnsureGroup registers p's group; an error refuses the client (the
	// registrar bounds the number of groups and how fast they come).
	EnsureGroup(p translator.Proxy) error
	// ReleaseGroup says the group's last connected proxy left.
	ReleaseGroup(p translator.Proxy)
}

// Tracker identifies each stream's client, registers its config group, and
// records per type what was sent, acknowledged and rejected, for the admin
// API and metrics. The server's streams call it (stream.go).
type Tracker struct {
	// bindIdentity requires an Envoy's claimed service (node.cluster) to
	// be one its client certificate names (see certNames); set when the
	// server requires client certificates.
	bindIdentity bool

	groups  GroupRegistrar
	log     *slog.Logger
	metrics *Metrics
	tracer  trace.Tracer
	now     func() time.Time

	mu      sync.Mutex
	streams map[streamKey]*streamState
	// inGroup counts the identified streams of each group.
	inGroup map[string]int
}

// streamKey identifies a stream. The server numbers every stream once, but
// the tracker's tests (and earlier servers) number SotW and delta streams
// independently.
type streamKey struct {
	delta bool
	id    int64
}

type streamState struct {
	id     int64
	delta  bool
	opened time.Time
	node   *corev3.Node
	// peer is the client's IP address, invalid when unknown.
	peer netip.Addr
	// claimed is the identity the client's node gives; proxy is the one
	// the stream was admitted with: claimed, with the locality of the
	// registry instance at peer when the node names none. localitySource
	// says where proxy's locality came from ("" when unknown).
	claimed, proxy translator.Proxy
	// key is proxy.Key(), worked out once: every request needs it.
	key            string
	localitySource string
	identified     bool
	// cancel ends the stream (Relocate), nil for streams not served by
	// the server's handlers; relocating says it was called.
	cancel     context.CancelCauseFunc
	relocating bool
	// certIDs are the identities of the client's certificate (its URI
	// and DNS SANs), nil without one.
	certIDs *certIdentity
	types   map[string]*typeState
	// nonces maps the nonce of each response still awaiting an answer to
	// its version, so an ACK or NACK can be attributed to what it answers.
	nonces map[string]sent
	// order is the nonces in the order they were sent, so that the
	// oldest are forgotten beyond maxPendingNonces (a client that never
	// answers some responses must not grow the map without end).
	order []string
	// nackLogs bounds the NACK log lines of the stream.
	nackLogs logBudget
}

// Bounds on what a client's NACKs cost: the excerpt of its error kept and
// logged, and the NACK log lines per stream per minute. A NACK of a
// version already rejected, or of a response already answered, is counted
// but not logged.
const (
	maxNackDetail     = 4 << 10
	nackLogsPerMinute = 5
	// maxPendingNonces bounds the responses of a stream still awaiting an
	// answer that the tracker remembers: a client has one per type.
	maxPendingNonces = 64
)

// truncateDetail keeps the first maxNackDetail bytes of a client's error
// (whole UTF-8 characters) and says how long it was.
func truncateDetail(s string) string {
	if len(s) <= maxNackDetail {
		return s
	}
	cut := maxNackDetail
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… [%d bytes cut]", s[:cut], len(s)-cut)
}

// logBudget allows nackLogsPerMinute lines a minute.
type logBudget struct {
	start time.Time
	n     int
}

func (b *logBudget) allow(now time.Time) bool {
	if now.Sub(b.start) >= time.Minute {
		b.start, b.n = now, 0
	}
	b.n++
	return b.n <= nackLogsPerMinute
}

type sent struct {
	version string
	at      time.Time
}

// TypeStatus is one type of one stream as the admin API shows it: the
// version last sent and last acknowledged, and the client's last NACK.
type TypeStatus struct {
	Sent      string    `json:"sent,omitempty"`
	SentAt    time.Time `json:"sent_at,omitzero"`
	Acked     string    `json:"acked,omitempty"`
	AckedAt   time.Time `json:"acked_at,omitzero"`
	Resources int       `json:"resources"`
	Pushes    int       `json:"pushes"`
	LastNack  *Nack     `json:"last_nack,omitempty"`
	// Changes, set by Tracker.Node only, is what the last response
	// changes of what the client acked, when the two versions differ.
	Changes *Changes `json:"changes,omitempty"`
}

// typeState is a TypeStatus with what the client holds as of the last
// response and as of its last ACK: holdings are immutable values the
// stream's session shares (see session.go), so keeping them costs two
// pointers, and they are only compared when the admin API asks (Node).
type typeState struct {
	TypeStatus
	// sentNonce is the nonce of the last response, and sentHeld what
	// the client holds once it takes it.
	sentNonce string
	sentHeld  holding
	// ackedHeld is what the client held when it acknowledged the last
	// response it acknowledged; ackedKnown says the tracker knows it
	// (that ACK answered the response last sent at the time).
	ackedHeld  holding
	ackedKnown bool
}

// Changes are what a type's last response changes of what the client last
// acknowledged: the names of the resources it adds, removes (the server
// removed them, or the client unsubscribed) and changes (their content
// hash differs). Retained is false when the tracker does not know what the
// client acknowledged (nothing yet on this stream, or an earlier response
// than the last one sent then); the lists are empty then.
type Changes struct {
	Acked    string   `json:"acked"`
	Sent     string   `json:"sent"`
	Retained bool     `json:"retained"`
	Added    []string `json:"added,omitempty"`
	Removed  []string `json:"removed,omitempty"`
	Changed  []string `json:"changed,omitempty"`
}

// Nack is a client's most recent rejection of a response.
type Nack struct {
	Version string    `json:"version"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
	// Resources are the first names the rejection concerns (see
	// NackEvent.Resources), ResourcesTotal how many there are.
	Resources      []string `json:"resources,omitempty"`
	ResourcesTotal int      `json:"resources_total,omitempty"`
}

// NewTracker returns callbacks that register groups with groups. A nil
// tracer records no spans.
func NewTracker(groups GroupRegistrar, log *slog.Logger, m *Metrics, tracer trace.Tracer) *Tracker {
	if m == nil {
		m = NewMetrics(nil)
	}
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer("")
	}
	return &Tracker{groups: groups, log: log, metrics: m, tracer: tracer, now: time.Now,
		streams: map[streamKey]*streamState{}, inGroup: map[string]int{}}
}

func (t *Tracker) open(ctx context.Context, id int64, delta bool) {
	t.openCancelable(ctx, id, delta, nil)
}

// openCancelable opens a stream that cancel ends (see Relocate).
func (t *Tracker) openCancelable(ctx context.Context, id int64, delta bool, cancel context.CancelCauseFunc) {
	ids, addr := peerIdentity(ctx), peerAddr(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[streamKey{delta, id}] = &streamState{id: id, delta: delta, opened: t.now(), peer: addr, certIDs: ids, cancel: cancel, types: map[string]*typeState{}, nonces: map[string]sent{}}
}

func (t *Tracker) closed(id int64, delta bool) {
	t.mu.Lock()
	k := streamKey{delta, id}
	s := t.streams[k]
	delete(t.streams, k)
	var release *translator.Proxy
	if s != nil && s.identified {
		t.metrics.connected.WithLabelValues(string(s.proxy.Kind)).Dec()
		key := s.key
		if t.inGroup[key]--; t.inGroup[key] <= 0 {
			delete(t.inGroup, key)
			release = &s.proxy
		}
	}
	t.mu.Unlock()
	if release != nil {
		t.groups.ReleaseGroup(*release)
	}
}

// request handles any request: identify the client on its first one, then
// classify it as initial request, ACK or NACK. It returns the key of the
// stream's config group: the group of the identity the tracker made out,
// which may hold more than the node says (the locality of the registry
// instance at the client's address).
func (t *Tracker) request(id int64, delta bool, node *corev3.Node, typeURL, version, nonce string, errDetail error) (string, error) {
	t.mu.Lock()
	s := t.streams[streamKey{delta, id}]
	var identified bool
	if s != nil {
		identified = s.identified
	}
	t.mu.Unlock()
	if s == nil {
		return "", status.Error(codes.Internal, "unknown stream")
	}
	// A stream's requests come one at a time (its handler's goroutine),
	// so nothing identifies it meanwhile; identify runs unlocked, as the
	// registry lookup takes the registrar's lock.
	var register *translator.Proxy
	if !identified {
		claimed, p, source, err := t.identify(s, node)
		if err != nil {
			return "", err
		}
		t.mu.Lock()
		s.node, s.claimed, s.proxy, s.key, s.localitySource, s.identified = node, claimed, p, p.Key(), source, true
		t.inGroup[s.key]++
		t.metrics.connected.WithLabelValues(string(p.Kind)).Inc()
		t.mu.Unlock()
		register = &p
	}
	t.mu.Lock()
	if identified && node != nil && node != s.node {
		// A request may carry a node after the first: a stream must keep
		// the identity it was admitted with, or a client could switch to
		// a group its certificate does not name, or make groups past the
		// limits. The node is compared with what the first node said,
		// before any locality was filled in from the registry.
		if p, err := translator.ProxyFromNode(node); err != nil || p != s.claimed {
			t.mu.Unlock()
			t.metrics.rejected.Inc()
			t.log.Warn("refusing xDS request: the node changed on an open stream", "node_id", truncateDetail(node.GetId()), "was", s.key)
			return "", status.Errorf(codes.InvalidArgument, "sluice: a stream's node may not change its identity (it was admitted as %s)", s.key)
		}
	}
	ts := s.typeState(typeURL)
	var nacked *nackWork
	if nonce != "" {
		answered, known := s.nonces[nonce]
		delete(s.nonces, nonce)
		if errDetail != nil {
			t.metrics.nacks.WithLabelValues(shortTypeName(typeURL), s.key).Inc()
			now := t.now()
			// A client decides how long its error is and how often it
			// repeats it: keep a bounded excerpt, and log a version's
			// rejection once, within a per-stream budget.
			detail := truncateDetail(errDetail.Error())
			repeat := !known || ts.LastNack != nil && ts.LastNack.Version == answered.version
			if known {
				n := &Nack{Version: answered.version, Error: detail, At: now}
				if repeat {
					// Worked out when the version was first rejected.
					n.Resources, n.ResourcesTotal = ts.LastNack.Resources, ts.LastNack.ResourcesTotal
				}
				ts.LastNack = n
			}
			if !repeat && s.nackLogs.allow(now) {
				// A registrar that explains rejections logs them once
				// per group, with their cause; each stream's is then
				// only a debug line (a fleet rejecting one version
				// would otherwise log a warning per proxy).
				level := slog.LevelWarn
				if _, explained := t.groups.(NackObserver); explained {
					level = slog.LevelDebug
				}
				t.log.Log(context.Background(), level, "xDS client rejected config", "node_id", s.node.GetId(), "type", typeURL, "version", answered.version, "error", detail)
			}
			if !repeat {
				nacked = t.nackWork(s, ts, typeURL, nonce, answered.version, detail)
			}
		} else if known {
			ts.Acked, ts.AckedAt = answered.version, t.now()
			if version != "" && !s.delta {
				ts.Acked = version
			}
			ts.ackedKnown = nonce == ts.sentNonce
			ts.ackedHeld = holding{}
			if ts.ackedKnown {
				ts.ackedHeld = ts.sentHeld
			}
			t.metrics.acks.WithLabelValues(shortTypeName(typeURL)).Inc()
			t.metrics.ackSeconds.WithLabelValues(shortTypeName(typeURL)).Observe(t.now().Sub(answered.at).Seconds())
		}
	}
	key := s.key
	t.mu.Unlock()
	if nacked != nil {
		t.reportNack(nacked)
	}
	if register != nil {
		if err := t.groups.EnsureGroup(*register); err != nil {
			t.unidentify(s)
			t.log.Warn("refusing xDS client: its proxy group cannot be made", "node_id", node.GetId(), "group", key, "err", err)
			return "", status.Errorf(codes.ResourceExhausted, "sluice: %v", err)
		}
	}
	return key, nil
}

// identify works out the identity of a stream's client from its first
// request: the node's, checked against the client certificate, with the
// locality of the registry instance at the client's address when the node
// names none (withLocality). claimed is the identity the node itself
// gives, which later nodes on the stream must keep.
func (t *Tracker) identify(s *streamState, node *corev3.Node) (claimed, p translator.Proxy, localitySource string, err error) {
	if n := proto.Size(node); n > MaxNodeBytes {
		t.metrics.rejected.Inc()
		t.log.Warn("refusing xDS client with an oversized node", "node_id", truncateDetail(node.GetId()), "bytes", n)
		return claimed, p, "", status.Errorf(codes.InvalidArgument, "sluice: the node (identity and metadata) is %d bytes, more than %d", n, MaxNodeBytes)
	}
	claimed, err = translator.ProxyFromNode(node)
	if err != nil {
		t.metrics.rejected.Inc()
		t.log.Warn("refusing xDS client with invalid node", "node_id", node.GetId(), "err", err)
		return claimed, p, "", status.Errorf(codes.InvalidArgument, "sluice: %v", err)
	}
	if err := t.checkIdentity(s, claimed); err != nil {
		t.metrics.rejected.Inc()
		t.log.Warn("refusing xDS client: its certificate does not name the service it claims", "node_id", node.GetId(), "service", claimed.Service, "err", err)
		return claimed, p, "", status.Errorf(codes.PermissionDenied, "sluice: %v", err)
	}
	p, localitySource = t.withLocality(claimed, s.peer, t.localityAware())
	return claimed, p, localitySource, nil
}

// unidentify undoes the identification of a stream whose group was
// refused: the stream ends and must not count as a proxy of the group.
func (t *Tracker) unidentify(s *streamState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !s.identified {
		return
	}
	s.identified = false
	key := s.key
	if t.inGroup[key]--; t.inGroup[key] <= 0 {
		delete(t.inGroup, key)
	}
	t.metrics.connected.WithLabelValues(string(s.proxy.Kind)).Dec()
}

// response records a response; held is what the client holds once it
// takes it.
func (t *Tracker) response(ctx context.Context, id int64, delta bool, typeURL, version, nonce string, resources int, held holding) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.streams[streamKey{delta, id}]
	if s == nil {
		return
	}
	_, span := t.tracer.Start(ctx, "sluice.xds.push", trace.WithAttributes(
		attribute.String("sluice.node_id", s.node.GetId()),
		attribute.String("sluice.group", s.key),
		attribute.String("sluice.type", shortTypeName(typeURL)),
		attribute.String("sluice.version", version),
		attribute.Int("sluice.resources", resources),
		attribute.Bool("sluice.delta", delta),
	))
	span.End()
	ts := s.typeState(typeURL)
	now := t.now()
	ts.Sent, ts.SentAt, ts.Resources = version, now, resources
	ts.sentNonce, ts.sentHeld = nonce, held
	ts.Pushes++
	s.nonces[nonce] = sent{version: version, at: now}
	s.order = append(s.order, nonce)
	for len(s.nonces) > maxPendingNonces && len(s.order) > 0 {
		// An answer to a forgotten nonce is not attributed to a version.
		delete(s.nonces, s.order[0])
		s.order = s.order[1:]
	}
	if len(s.order) > 2*maxPendingNonces {
		// Nonces answered meanwhile left their names behind here.
		s.order = slices.DeleteFunc(s.order, func(n string) bool { _, ok := s.nonces[n]; return !ok })
	}
	t.metrics.pushes.WithLabelValues(shortTypeName(typeURL)).Inc()
}

func (s *streamState) typeState(typeURL string) *typeState {
	ts := s.types[typeURL]
	if ts == nil {
		ts = &typeState{}
		s.types[typeURL] = ts
	}
	return ts
}

// requestSotw handles a state-of-the-world request (see request).
func (t *Tracker) requestSotw(id int64, req *discoveryv3.DiscoveryRequest) (string, error) {
	return t.request(id, false, req.GetNode(), req.GetTypeUrl(), req.GetVersionInfo(), req.GetResponseNonce(), statusErr(req.GetErrorDetail()))
}

// requestDelta handles a delta request (see request).
func (t *Tracker) requestDelta(id int64, req *discoveryv3.DeltaDiscoveryRequest) (string, error) {
	return t.request(id, true, req.GetNode(), req.GetTypeUrl(), "", req.GetResponseNonce(), statusErr(req.GetErrorDetail()))
}

// responseSotw records a state-of-the-world response being sent, after
// which the client holds held.
func (t *Tracker) responseSotw(ctx context.Context, id int64, resp *discoveryv3.DiscoveryResponse, held holding) {
	t.response(ctx, id, false, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce(), len(resp.GetResources()), held)
}

// responseDelta records a delta response being sent (see responseSotw).
func (t *Tracker) responseDelta(ctx context.Context, id int64, resp *discoveryv3.DeltaDiscoveryResponse, held holding) {
	t.response(ctx, id, true, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce(), len(resp.GetResources())+len(resp.GetRemovedResources()), held)
}

func statusErr(st interface {
	GetCode() int32
	GetMessage() string
}) error {
	if st == nil || (st.GetCode() == 0 && st.GetMessage() == "") {
		return nil
	}
	return fmt.Errorf("%s (code %d)", st.GetMessage(), st.GetCode())
}

// ProxyStatus is one connected stream as the admin API shows it.
type ProxyStatus struct {
	Stream    int64            `json:"stream"`
	NodeID    string           `json:"node_id"`
	Cluster   string           `json:"cluster,omitempty"`
	UserAgent string           `json:"user_agent,omitempty"`
	Group     string           `json:"group"`
	Proxy     translator.Proxy `json:"proxy"`
	// LocalitySource says where Proxy.Locality came from: "node"
	// (node.locality) or "registry" (the instance at the client's
	// address, looked up when the stream was identified); empty when
	// the locality is unknown.
	LocalitySource string                `json:"locality_source,omitempty"`
	Delta          bool                  `json:"delta"`
	Connected      time.Time             `json:"connected"`
	Types          map[string]TypeStatus `json:"types"`
}

// Proxies returns every identified stream, ordered by node id and stream.
func (t *Tracker) Proxies() []ProxyStatus {
	return t.proxies(func(*streamState) bool { return true }, nil)
}

// Node returns the identified streams of the client(s) with node id id,
// like Proxies, with each type's Changes: what the last response changes
// of what the client acknowledged, when their versions differ.
func (t *Tracker) Node(id string) []ProxyStatus {
	type pending struct {
		c           *Changes
		acked, sent holding
	}
	var work []pending
	out := t.proxies(func(s *streamState) bool { return s.node.GetId() == id }, func(ts *typeState, st *TypeStatus) {
		if ts.Sent == "" || ts.Sent == ts.Acked {
			return
		}
		st.Changes = &Changes{Acked: ts.Acked, Sent: ts.Sent, Retained: ts.ackedKnown}
		if ts.ackedKnown {
			work = append(work, pending{st.Changes, ts.ackedHeld, ts.sentHeld})
		}
	})
	// Holdings are immutable: they are compared without the lock, which
	// every stream's requests and responses take.
	for _, w := range work {
		w.c.Added, w.c.Removed, w.c.Changed = compareHoldings(w.acked, w.sent)
	}
	return out
}

// compareHoldings lists the names next holds and was does not (added),
// was holds and next does not (removed), and both hold at different
// content hashes (changed), each sorted.
func compareHoldings(was, next holding) (added, removed, changed []string) {
	if was.whole != nil && was.whole == next.whole {
		return nil, nil, nil
	}
	next.names(func(n string) {
		switch {
		case !was.has(n):
			added = append(added, n)
		case was.hash(n) != next.hash(n):
			changed = append(changed, n)
		}
	})
	was.names(func(n string) {
		if !next.has(n) {
			removed = append(removed, n)
		}
	})
	sort.Strings(added)
	sort.Strings(removed)
	sort.Strings(changed)
	return added, removed, changed
}

// proxies lists the identified streams that match keep; each lets
// (when not nil) add to the status of each type.
func (t *Tracker) proxies(keep func(*streamState) bool, each func(*typeState, *TypeStatus)) []ProxyStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]ProxyStatus, 0, len(t.streams))
	for _, s := range t.streams {
		if !s.identified || !keep(s) {
			continue
		}
		ps := ProxyStatus{
			Stream: s.id, NodeID: s.node.GetId(), Cluster: s.node.GetCluster(),
			UserAgent: s.node.GetUserAgentName(), Group: s.key, Proxy: s.proxy,
			LocalitySource: s.localitySource,
			Delta:          s.delta, Connected: s.opened, Types: map[string]TypeStatus{},
		}
		for typ, ts := range s.types {
			c := ts.TypeStatus
			if ts.LastNack != nil {
				n := *ts.LastNack
				c.LastNack = &n
			}
			if each != nil {
				each(ts, &c)
			}
			ps.Types[typ] = c
		}
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].NodeID != out[j].NodeID {
			return out[i].NodeID < out[j].NodeID
		}
		return out[i].Stream < out[j].Stream
	})
	return out
}
