package xds

import (
	"context"
	"net"
	"net/netip"

	"google.golang.org/grpc/peer"

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
// none, and says where the locality came from ("" when unknown).
//
// The lookup happens once, when a stream is identified: a client keeps the
// locality it was admitted with until it reconnects, even if its registry
// instance moves meanwhile. Clients that must be exact set node.locality
// (sluice bootstrap --region/--zone).
func (t *Tracker) withLocality(p translator.Proxy, addr netip.Addr) (translator.Proxy, string) {
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
