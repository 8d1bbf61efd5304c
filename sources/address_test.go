package sources_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/sluice-mesh/sluice/sources"
)

func TestCheckEndpointAddress(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"10.0.0.1", ""},
		{"::1", ""},
		{"2001:db8::1", ""},
		{"::ffff:10.0.0.1", ""},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"::ffff:0.0.0.0", "unspecified"},
		{"255.255.255.255", "broadcast"},
		{"224.0.0.1", "multicast"},
		{"ff02::1", "multicast"},
		{"fe80::1%eth0", "zones"},
	} {
		err := sources.CheckEndpointAddress(netip.MustParseAddr(c.addr))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want it accepted", c.addr, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error about %s", c.addr, err, c.want)
		}
	}
}
