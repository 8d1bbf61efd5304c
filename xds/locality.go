package xds

import (
	"context"
	"net"
	"net/netip"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sluice-mesh/sluice/translator"
)

// LocalityResolver is what a GroupRegistrar may also implement to tell where
// a client runs when its node does not say (node.locality): the locality
// the registry gives the instances at the client's address. The snapshot
// loop implements it.
type LocalityResolver interface {
	// LocalityAt returns the locality of the registry instances whose
	// address is addr, preferring instances of service (the proxy's own,
	// empty when unknown) when there are any; false when there are none or
	// they disagree.
	LocalityAt(addr netip.Addr, service string) (translator.Locality, bool)
}

// LocalityPolicy is what a GroupRegistrar may also implement to say
// whether localities matter: when no policy makes clients of different
// localities get different configuration, a client's locality stays out
// of its group key, so that the groups do not multiply by the zones for
// nothing. Without it, localities always matter.
type LocalityPolicy interface {
	LocalityAware() bool
}

// Where a stream's locality came from, as the admin API shows it.
const (
	localityFromNode     = "node"
	localityFromRegistry = "registry"
)

// peerAddr is the IP address a stream's client connects from; invalid when
// unknown (a test's stream, a Unix socket).
func peerAddr(ctx context.Context) netip.Addr {
	if ctx == nil {
		return netip.Addr{}
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	var a netip.Addr
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		a = tcp.AddrPort().Addr()
	} else if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
		a = ap.Addr()
	}
	// Registries hold IPv4 addresses as such, and no IPv6 zones.
	return a.Unmap().WithZone("")
}

// withLocality fills in p's locality from the registry when the node named
// none, and says where the locality came from ("" when unknown); with
// aware false (see LocalityPolicy) it leaves p without one.
//
// The lookup happens when a stream is identified, and again when the
// tracker relocates streams (Relocate): a client whose instance registers
// after it connected, or whose registry locality changes, is moved to its
// group then.
func (t *Tracker) withLocality(p translator.Proxy, addr netip.Addr, aware bool) (translator.Proxy, string) {
	if !aware {
		p.Locality = translator.Locality{}
		return p, ""
	}
	if p.Locality.Known() {
		return p, localityFromNode
	}
	r, ok := t.groups.(LocalityResolver)
	if !ok || !addr.IsValid() {
		return p, ""
	}
	loc, ok := r.LocalityAt(addr, p.Service)
	if !ok || !loc.Known() {
		return p, ""
	}
	p.Locality = loc
	return p, localityFromRegistry
}

// localityAware is the registrar's LocalityAware, true without one.
func (t *Tracker) localityAware() bool {
	lp, ok := t.groups.(LocalityPolicy)
	return !ok || lp.LocalityAware()
}

// Relocate ends, with UNAVAILABLE, up to limit streams whose group would
// differ if they connected now: their registry locality became known or
// changed, or localities started or stopped mattering (LocalityPolicy).
// Their clients reconnect at once, keeping their config meanwhile, and
// join the right group. It returns how many streams it ended. The server
// calls it every RelocateInterval; limit spreads the reconnections of a
// whole mesh over several calls.
func (t *Tracker) Relocate(limit int) int {
	type placed struct {
		s              *streamState
		claimed, proxy translator.Proxy
		peer           netip.Addr
		key            string
	}
	t.mu.Lock()
	var all []placed
	for _, s := range t.streams {
		if s.identified && s.cancel != nil && !s.relocating {
			all = append(all, placed{s, s.claimed, s.proxy, s.peer, s.key})
		}
	}
	t.mu.Unlock()
	if len(all) == 0 {
		return 0
	}
	aware := t.localityAware()
	moved := 0
	for _, c := range all {
		if moved >= limit {
			break
		}
		p, _ := t.withLocality(c.claimed, c.peer, aware)
		if p != c.proxy {
			key := p.Key()
			t.mu.Lock()
			c.s.relocating = true
			t.mu.Unlock()
			c.s.cancel(status.Errorf(codes.Unavailable, "sluice: this client's config group is now %s (was %s): reconnect to join it", key, c.key))
			moved++
		}
	}
	if moved > 0 {
		t.metrics.relocated.Add(float64(moved))
		t.log.Info("ended xDS streams whose clients belong to another group now (their locality changed, or localities started or stopped mattering); they reconnect", "streams", moved)
	}
	return moved
}
