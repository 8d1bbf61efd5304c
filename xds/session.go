package xds

import (
	"maps"
	"strconv"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// A session is the xDS protocol state of one stream: per type, what the
// client subscribes to, what it holds, and the response it has not
// answered yet. It is owned by the stream's goroutine (see stream.go); the
// cache's generations it points at are shared and immutable, but for
// their memos, which have a lock of their own.
//
// The rules follow the xDS protocol as go-control-plane's servers apply
// them (TestConformanceWithGoControlPlane compares the two):
//
//   - Subscriptions. A first request that names nothing is a wildcard
//     subscription ("legacy wildcard") until the client names something;
//     "*" subscribes to everything explicitly. Over state of the world
//     every request names the whole subscription; over delta, requests
//     add and remove names.
//   - One response in flight per type. After a response, a type is sent
//     nothing more until the client answers (ACK or NACK); over state of
//     the world a request whose nonce is not the last response's is stale
//     and ignored, over delta every request counts.
//   - What a client holds is what it was sent, once sent. A NACK of the
//     last response puts it back to what it held before that response,
//     and the rejected generation is not sent again, but for the names
//     the client subscribes to afterwards (which the rejected responses
//     did not carry).
type session struct {
	delta bool
	// nonce numbers the stream's responses.
	nonce int64
	types [types.UnknownType]*typeSub
}

// typeSub is one type of one stream.
type typeSub struct {
	typeURL string
	idx     types.ResponseType
	// full: a state-of-the-world response of this type carries the full
	// state (clusters and listeners).
	full bool

	// legacy is true while the subscription is a wildcard only because
	// the client has named nothing yet.
	legacy   bool
	wildcard bool
	// explicitWildcard is true when the last state-of-the-world request
	// named "*".
	explicitWildcard bool
	names            nameSet
	// namesHash and namesN are the hash and number of the names of the
	// last state-of-the-world request, as the codec saw them encoded
	// (namesHashed), so that a request repeating them is not decoded.
	namesHash   uint64
	namesN      int
	namesHashed bool

	// held is what the client holds.
	held holding
	// pending is true from a response until the next request of the
	// type; awaiting, until the client answers that very response (over
	// state of the world the two are the same).
	pending  bool
	awaiting bool
	// nonce, sent and before are the last response's nonce, the
	// generation it came from, and what the client held before it.
	nonce  string
	sent   *generation
	before holding
	// rejected is the generation of the last response the client
	// rejected: it is not sent again. refused is the names the client
	// rejected of it (what the rejected responses of that generation
	// changed); the others, subscribed since, are still sent from it.
	rejected *generation
	refused  map[string]struct{}

	// What the last request said: the version the client has (state of
	// the world), whether it was a NACK, and whether it answered a
	// response at all (its nonce).
	reqVersion string
	reqNack    bool
	reqFirst   bool
}

// nameSet is the names a client subscribes to. Clients that name
// exactly the names of a generation (every Envoy of a group, for its load
// assignments) share that generation's index instead of a map each.
type nameSet struct {
	same *generation
	own  map[string]struct{}
}

func (s nameSet) has(n string) bool {
	if s.own != nil {
		_, ok := s.own[n]
		return ok
	}
	if s.same != nil {
		_, ok := s.same.entries[n]
		return ok
	}
	return false
}

func (s nameSet) len() int {
	if s.own != nil {
		return len(s.own)
	}
	if s.same != nil {
		return len(s.same.names)
	}
	return 0
}

// mutable returns the set as a map of its own, to change.
func (s *nameSet) mutable() map[string]struct{} {
	if s.own == nil {
		s.own = map[string]struct{}{}
		if s.same != nil {
			for _, n := range s.same.names {
				s.own[n] = struct{}{}
			}
		}
		s.same = nil
	}
	return s.own
}

// share replaces a set of its own that has exactly gen's names by gen's
// index, and moves a shared one on to gen when gen has the same names (so
// that it does not keep an old generation alive).
func (s *nameSet) share(gen *generation) {
	if gen == nil {
		return
	}
	if s.same != nil && s.same != gen && s.same.namesID == gen.namesID {
		s.same = gen
		return
	}
	if s.own == nil || len(s.own) != len(gen.names) || len(s.own) == 0 {
		return
	}
	for n := range s.own {
		if _, ok := gen.entries[n]; !ok {
			return
		}
	}
	s.own, s.same = nil, gen
}

// holding is what a client holds of a type.
type holding struct {
	// whole is the generation the client holds all of (and, unless it is
	// a wildcard subscriber, subscribes to all of); nil when explicit
	// says what it holds.
	whole *generation
	// explicit is name → content hash, when whole is nil. It is never
	// shared between clients, and never changed once a holding holds it
	// (sessions copy it first), so holdings can be kept as values.
	explicit map[string]string
}

// hash is the version of n the client holds, "" if none.
func (h holding) hash(n string) string {
	if h.whole != nil {
		if e := h.whole.entries[n]; e != nil {
			return e.hash
		}
		return ""
	}
	return h.explicit[n]
}

// has reports whether the client holds n (at any version, even "").
func (h holding) has(n string) bool {
	if h.whole != nil {
		return h.whole.entries[n] != nil
	}
	_, ok := h.explicit[n]
	return ok
}

// names calls f for every name the client holds.
func (h holding) names(f func(string)) {
	if h.whole != nil {
		for _, n := range h.whole.names {
			f(n)
		}
		return
	}
	for n := range h.explicit {
		f(n)
	}
}

func (h holding) empty() bool { return h.whole == nil && len(h.explicit) == 0 }

// explicitCopy returns what the client holds as a map of its own.
func (h holding) explicitCopy() map[string]string {
	if h.whole == nil {
		return maps.Clone(h.explicit)
	}
	m := make(map[string]string, len(h.whole.names))
	for _, n := range h.whole.names {
		m[n] = h.whole.entries[n].hash
	}
	return m
}

// typeSub returns the state of typeURL, made on the first request for it;
// nil for a type sluice does not serve (such requests are never answered,
// and keep no state).
func (s *session) typeSub(typeURL string, made func(*typeSub)) *typeSub {
	i, ok := typeIndex(typeURL)
	if !ok {
		return nil
	}
	if t := s.types[i]; t != nil {
		return t
	}
	t := &typeSub{typeURL: typeURL, idx: i, full: cache.ResourceRequiresFullStateInSotw(typeURL), legacy: true}
	made(t)
	s.types[i] = t
	return t
}

func (s *session) nextNonce() string {
	s.nonce++
	return strconv.FormatInt(s.nonce, 10)
}

// sotwApply applies a state-of-the-world request, whose names may still be
// encoded (see sotwRequest in request.go); it reports false for a request that is
// ignored (a stale nonce, or a type sluice does not serve). An error
// (names that do not decode) ends the stream.
func (s *session) sotwApply(req *discoveryv3.DiscoveryRequest, names *requestNames) (*typeSub, bool, error) {
	t := s.typeSub(req.GetTypeUrl(), func(t *typeSub) {
		t.wildcard = names.n == 0
	})
	if t == nil {
		return nil, false, nil
	}
	if t.nonce != "" && req.GetResponseNonce() != t.nonce {
		return t, false, nil
	}
	nack := req.GetErrorDetail() != nil
	if t.nonce != "" {
		t.answered(nack)
	}
	t.reqVersion, t.reqNack, t.reqFirst = req.GetVersionInfo(), nack, req.GetResponseNonce() == ""
	if err := t.setNames(names); err != nil {
		return nil, false, err
	}
	return t, true, nil
}

// answered records the client's answer to the last response.
func (t *typeSub) answered(nack bool) {
	if nack && t.awaiting {
		if t.sent != t.rejected || t.refused == nil {
			t.refused = map[string]struct{}{}
		}
		t.held.names(func(n string) {
			if t.held.hash(n) != t.before.hash(n) {
				t.refused[n] = struct{}{}
			}
		})
		t.held, t.rejected = t.before, t.sent
	}
	t.pending, t.awaiting = false, false
}

// setNames applies the names of a state-of-the-world request, the whole
// subscription.
func (t *typeSub) setNames(req *requestNames) error {
	if t.legacy {
		if req.n == 0 {
			return nil
		}
		t.legacy = false
	}
	// Most requests are ACKs that repeat the subscription, byte for byte:
	// they cost a hash of its encoding, and nothing else.
	if req.sameAs(t.namesHash, t.namesN) && t.namesHashed {
		return nil
	}
	names, err := req.list()
	if err != nil {
		return err
	}
	t.namesHash, t.namesN, t.namesHashed = req.hash, req.n, req.hashed
	star := false
	n := 0
	same := true
	for _, name := range names {
		if name == "*" {
			star = true
			continue
		}
		n++
		if same && !t.names.has(name) {
			same = false
		}
	}
	// A request that names the same set in another order (or one whose
	// names came decoded) costs a look-up per name, and nothing else.
	changed := !same || n != t.names.len()
	if changed {
		own := make(map[string]struct{}, n)
		for _, name := range names {
			if name != "*" {
				own[name] = struct{}{}
			}
		}
		t.names = nameSet{own: own}
	}
	wasWildcard := t.wildcard
	t.wildcard, t.explicitWildcard = star, star
	if star || !changed && !wasWildcard {
		// Either it subscribes to everything, or to the same names as
		// before: what it holds is within them already.
		return nil
	}
	// The client drops what it no longer names: named again, it is sent
	// again (even if it refused it).
	if changed {
		for name := range t.refused {
			if !t.names.has(name) {
				delete(t.refused, name)
			}
		}
	}
	if w := t.held.whole; w != nil {
		for _, name := range w.names {
			if !t.names.has(name) {
				t.held = holding{explicit: t.held.explicitCopy()}
				break
			}
		}
	}
	if t.held.whole == nil {
		var drop []string
		for name := range t.held.explicit {
			if !t.names.has(name) {
				drop = append(drop, name)
			}
		}
		if len(drop) > 0 {
			m := maps.Clone(t.held.explicit)
			for _, name := range drop {
				delete(m, name)
			}
			t.held = holding{explicit: m}
		}
	}
	return nil
}

// deltaRequest applies a delta request; it reports false for a type sluice
// does not serve.
func (s *session) deltaRequest(req *discoveryv3.DeltaDiscoveryRequest) (*typeSub, bool) {
	t := s.typeSub(req.GetTypeUrl(), func(t *typeSub) {
		t.wildcard = len(req.GetResourceNamesSubscribe()) == 0
		if v := req.GetInitialResourceVersions(); len(v) > 0 {
			t.held = holding{explicit: maps.Clone(v)}
		}
	})
	if t == nil {
		return nil, false
	}
	nack := req.GetErrorDetail() != nil
	if t.nonce != "" && req.GetResponseNonce() == t.nonce {
		t.answered(nack)
	}
	// Every delta request re-arms the type, as go-control-plane's delta
	// server does: the client holds what it was sent.
	t.pending = false
	t.reqNack, t.reqFirst = nack, req.GetResponseNonce() == ""
	t.updateNames(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	return t, true
}

// updateNames applies a delta request's subscribe and unsubscribe lists.
func (t *typeSub) updateNames(sub, unsub []string) {
	if t.legacy {
		if len(sub) == 0 {
			return
		}
		t.legacy = false
	}
	for _, n := range sub {
		if n == "*" {
			t.wildcard = true
			continue
		}
		if !t.names.has(n) {
			t.names.mutable()[n] = struct{}{}
		}
	}
	if len(unsub) == 0 {
		return
	}
	held := t.held.explicitCopy()
	for _, n := range unsub {
		if n == "*" {
			t.wildcard = false
			continue
		}
		delete(t.refused, n)
		if t.names.has(n) && t.wildcard {
			// Still a wildcard subscriber: the protocol wants the
			// resource sent again (or said removed), so the client is
			// taken to hold no version of it.
			held[n] = ""
		} else {
			delete(held, n)
		}
		if t.names.has(n) {
			delete(t.names.mutable(), n)
		}
	}
	t.held = holding{explicit: held}
}

// answerSotw works out t's state-of-the-world response from gen, if the
// client lacks something, and records it as sent; nil if not.
func (s *session) answerSotw(c *Cache, t *typeSub, gen *generation) *discoveryv3.DiscoveryResponse {
	t.names.share(gen)
	resp, next, ok := c.respondSotw(t, gen)
	if !ok {
		return nil
	}
	resp.Nonce = s.nextNonce()
	t.sentResponse(resp.Nonce, gen, next)
	return resp
}

// answerDelta is answerSotw over delta.
func (s *session) answerDelta(c *Cache, t *typeSub, gen *generation) *discoveryv3.DeltaDiscoveryResponse {
	t.names.share(gen)
	resp, next, ok := c.respondDelta(t, gen)
	if !ok {
		return nil
	}
	resp.Nonce = s.nextNonce()
	t.sentResponse(resp.Nonce, gen, next)
	return resp
}

// sentResponse records a response: the client now holds next.
func (t *typeSub) sentResponse(nonce string, gen *generation, next holding) {
	t.before, t.held = t.held, next
	t.nonce, t.sent, t.pending, t.awaiting = nonce, gen, true, true
}
