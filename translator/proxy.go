package translator

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// ProxyKind tells Envoy proxies and proxyless gRPC clients apart; each gets
// only resources it can use.
type ProxyKind string

// Proxy kinds.
const (
	KindEnvoy ProxyKind = "envoy"
	KindGRPC  ProxyKind = "grpc"
)

// Roles an Envoy proxy can play.
const (
	RoleSidecar = "sidecar"
	RoleGateway = "gateway"
)

// Node metadata keys a proxy may set to refine its identity.
const (
	MetaProxyType       = "proxy_type"
	MetaRole            = "role"
	MetaOutboundAddress = "outbound_address"
	MetaOutboundPort    = "outbound_port"
	MetaInboundPort     = "inbound_port"
	// MetaInboundListenerAddress and MetaInboundListenerPort are where a
	// sidecar's inbound listener binds (it forwards to 127.0.0.1:inbound_port).
	MetaInboundListenerAddress = "inbound_listener_address"
	MetaInboundListenerPort    = "inbound_listener_port"
)

// Proxy is what the translator needs to know about a client: every client
// with an equal Proxy gets identical config, so Key() is also the snapshot
// group of the client.
type Proxy struct {
	Kind ProxyKind `json:"kind"`
	// Service is the service the proxy fronts (Envoy's node.cluster); empty
	// when unknown.
	Service string `json:"service,omitempty"`
	Role    string `json:"role,omitempty"`
	// OutboundAddress and OutboundPort are where an Envoy listens for
	// requests from its application; zero values take the translator's defaults.
	OutboundAddress string `json:"outbound_address,omitempty"`
	OutboundPort    uint32 `json:"outbound_port,omitempty"`
	// InboundPort is the local application's port; a sidecar with one
	// gets an inbound listener in front of 127.0.0.1:InboundPort.
	InboundPort uint32 `json:"inbound_port,omitempty"`
	// InboundListenerAddress and InboundListenerPort are where that
	// listener binds; zero values take the translator's defaults.
	InboundListenerAddress string `json:"inbound_listener_address,omitempty"`
	InboundListenerPort    uint32 `json:"inbound_listener_port,omitempty"`
	// Locality is where the client runs (node.locality, or the registry
	// instance at its address); empty when unknown. A service with a
	// locality policy gives clients of different localities different
	// load assignments.
	Locality Locality `json:"locality,omitzero"`
}

// Locality is a region and a zone, as in the registries and Envoy's
// node.locality; either may be empty.
type Locality struct {
	Region string `json:"region,omitempty"`
	Zone   string `json:"zone,omitempty"`
}

// Known reports whether anything of the locality is known.
func (l Locality) Known() bool { return l.Region != "" || l.Zone != "" }

// String is "region/zone", escaped so that distinct localities never give
// the same string.
func (l Locality) String() string {
	return url.PathEscape(l.Region) + "/" + url.PathEscape(l.Zone)
}

// Key is a stable, readable identifier of the proxy's config group.
func (p Proxy) Key() string {
	if p.Kind == KindGRPC {
		if p.Locality.Known() {
			return string(KindGRPC) + "/loc=" + p.Locality.String()
		}
		return string(KindGRPC)
	}
	var b strings.Builder
	b.WriteString(string(p.Kind))
	b.WriteString("/" + p.Role)
	// Escaped: node.cluster is the client's to choose, and must not be
	// able to spell another group's key.
	b.WriteString("/" + url.PathEscape(p.Service))
	if p.OutboundAddress != "" || p.OutboundPort != 0 {
		fmt.Fprintf(&b, "/out=%s:%d", p.OutboundAddress, p.OutboundPort)
	}
	if p.InboundPort != 0 {
		fmt.Fprintf(&b, "/in=%d", p.InboundPort)
	}
	if p.InboundListenerAddress != "" || p.InboundListenerPort != 0 {
		fmt.Fprintf(&b, "/inl=%s:%d", p.InboundListenerAddress, p.InboundListenerPort)
	}
	if p.Locality.Known() {
		b.WriteString("/loc=" + p.Locality.String())
	}
	return b.String()
}

// ProxyFromNode derives a client's identity from the node it sent. Errors name
// the offending node metadata key, so a misconfigured bootstrap is easy to fix.
func ProxyFromNode(node *corev3.Node) (Proxy, error) {
	p := Proxy{Kind: KindEnvoy, Service: node.GetCluster()}
	md := node.GetMetadata().GetFields()
	switch t := stringField(md, MetaProxyType); t {
	case string(KindEnvoy), string(KindGRPC):
		p.Kind = ProxyKind(t)
	case "":
		if isGRPCAgent(node.GetUserAgentName()) {
			p.Kind = KindGRPC
		}
	default:
		return Proxy{}, fmt.Errorf("node metadata %q: %q is not a proxy type (want envoy or grpc)", MetaProxyType, t)
	}
	loc, err := localityOf(node)
	if err != nil {
		return Proxy{}, err
	}
	if p.Kind == KindGRPC {
		// gRPC clients share one config (per locality); their service and
		// ports don't matter.
		return Proxy{Kind: KindGRPC, Locality: loc}, nil
	}
	p.Locality = loc
	switch r := stringField(md, MetaRole); r {
	case "", RoleSidecar:
		p.Role = RoleSidecar
	case RoleGateway:
		p.Role = RoleGateway
	default:
		return Proxy{}, fmt.Errorf("node metadata %q: %q is not a role (want sidecar or gateway)", MetaRole, r)
	}
	if p.OutboundAddress, err = addressField(md, MetaOutboundAddress); err != nil {
		return Proxy{}, err
	}
	if p.OutboundPort, err = portField(md, MetaOutboundPort); err != nil {
		return Proxy{}, err
	}
	if p.InboundPort, err = portField(md, MetaInboundPort); err != nil {
		return Proxy{}, err
	}
	if p.InboundListenerAddress, err = addressField(md, MetaInboundListenerAddress); err != nil {
		return Proxy{}, err
	}
	if p.InboundListenerPort, err = portField(md, MetaInboundListenerPort); err != nil {
		return Proxy{}, err
	}
	return p, nil
}

// MaxLocalityBytes bounds a locality's region and zone: they become part of
// a proxy group's key, which is kept and shown for as long as the group
// lives.
const MaxLocalityBytes = 128

// CheckLocalityPart says what is wrong with s as a region or a zone, or
// returns nil: it must be valid UTF-8 of at most MaxLocalityBytes bytes,
// without control characters. The error is a reason without the value
// ("must be valid UTF-8"), for the caller to name the setting and show
// the value.
func CheckLocalityPart(s string) error {
	switch {
	case len(s) > MaxLocalityBytes:
		return fmt.Errorf("must be at most %d bytes", MaxLocalityBytes)
	case !utf8.ValidString(s):
		return errors.New("must be valid UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errors.New("must not hold control characters")
	}
	return nil
}

// localityOf reads node.locality: its region and zone (sub_zone is not
// used).
func localityOf(node *corev3.Node) (Locality, error) {
	l := Locality{Region: node.GetLocality().GetRegion(), Zone: node.GetLocality().GetZone()}
	for _, f := range []struct{ name, value string }{{"region", l.Region}, {"zone", l.Zone}} {
		if err := CheckLocalityPart(f.value); err != nil {
			if len(f.value) > MaxLocalityBytes {
				return Locality{}, fmt.Errorf("node.locality.%s: %w, got %d bytes", f.name, err, len(f.value))
			}
			return Locality{}, fmt.Errorf("node.locality.%s: %w, got %q", f.name, err, f.value)
		}
	}
	return l, nil
}

func isGRPCAgent(ua string) bool {
	return strings.Contains(strings.ToLower(ua), "grpc")
}

func stringField(md map[string]*structpb.Value, key string) string {
	return md[key].GetStringValue()
}

// addressField reads an address a listener binds to: Envoy binds
// listeners to IP addresses only, so anything else would reach a proxy as
// a listener it rejects.
func addressField(md map[string]*structpb.Value, key string) (string, error) {
	s := stringField(md, key)
	if s == "" {
		return "", nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("node metadata %q: %q is not an IP address", key, s)
	}
	return s, nil
}

func portField(md map[string]*structpb.Value, key string) (uint32, error) {
	v, ok := md[key]
	if !ok {
		return 0, nil
	}
	var n float64
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		n = k.NumberValue
	case *structpb.Value_StringValue:
		f, err := strconv.ParseFloat(k.StringValue, 64)
		if err != nil {
			return 0, fmt.Errorf("node metadata %q: %q is not a port number", key, k.StringValue)
		}
		n = f
	default:
		return 0, fmt.Errorf("node metadata %q: want a port number", key)
	}
	if n < 1 || n > 65535 || n != math.Trunc(n) {
		return 0, fmt.Errorf("node metadata %q: %v is not a port (1-65535)", key, n)
	}
	return uint32(n), nil
}
