package sources

import (
	"errors"
	"net/netip"
)

// CheckEndpointAddress says why an instance's address is not one a client
// can send requests to, or returns nil. Registries can hold such
// addresses (a service registered by a process that bound to every
// interface reports 0.0.0.0); sent on as endpoints, they would make
// clients connect to themselves or nowhere.
func CheckEndpointAddress(a netip.Addr) error {
	a = a.Unmap()
	switch {
	case a.Zone() != "":
		return errors.New("IPv6 zones are not supported")
	case a.IsUnspecified():
		return errors.New("the unspecified address is not one a client can connect to")
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return errors.New("the broadcast address is not one a client can connect to")
	case a.IsMulticast():
		return errors.New("a multicast address is not one a client can connect to")
	}
	return nil
}
