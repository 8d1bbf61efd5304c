package etcd

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-mesh/sluice/sources"
)

// entry is what one etcd key contributes to the state: an instance of a
// service (when ok) and the diagnostics its key or value earned.
type entry struct {
	value []byte
	// ignored marks a key that is not a registration of the format at all;
	// only keys read from the keyspace root (empty prefix) are ignored
	// silently, since the root holds other applications' keys too.
	ignored bool
	service string
	inst    sources.Instance
	ap      netip.AddrPort // the instance's address, parsed
	ok      bool
	diags   []sources.Diagnostic
}

// sameResult reports whether a and b contribute the same to the state,
// whatever their raw values (a value that only changed its timestamp).
func sameResult(a, b *entry) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ignored == b.ignored && a.ok == b.ok && a.service == b.service && a.ap == b.ap &&
		reflect.DeepEqual(a.inst, b.inst) && reflect.DeepEqual(a.diags, b.diags)
}

// parser turns keys and values of one layout into entries. It is pure.
type parser struct {
	layout layout
	// prefix has no trailing slash; "" is the keyspace root.
	prefix string
}

// newParser returns the parser of a normalized config.
func newParser(cfg Config) parser {
	l, _ := layoutOf(cfg.Format) // normalize checked it
	return parser{layout: l, prefix: cfg.Prefix}
}

// keyRange is the etcd range (key, range end) that holds the registry.
func (p parser) keyRange() (key, end string) {
	if p.prefix == "" {
		// "\x00" to "\x00" is etcd's spelling of "every key".
		return "\x00", "\x00"
	}
	key = p.prefix + "/"
	return key, clientv3.GetPrefixRangeEnd(key)
}

func (p parser) parse(key string, value []byte) *entry {
	e := &entry{value: value}
	root := p.prefix == ""
	var rel string
	if root {
		rel = strings.TrimPrefix(key, "/")
	} else {
		var ok bool
		if rel, ok = strings.CutPrefix(key, p.prefix+"/"); !ok {
			e.ignored = true // outside the watched range; cannot happen
			return e
		}
	}
	b := &builder{key: key, prefix: p.prefix, e: e, root: root}
	p.layout.parse(b, rel, value)
	if e.ignored {
		return &entry{value: value, ignored: true}
	}
	e.inst.Origin = key
	// Every layout sets the address last, once the entry is good.
	e.ok = e.inst.Port != 0 && !hasError(e.diags)
	return e
}

func hasError(ds []sources.Diagnostic) bool {
	for _, d := range ds {
		if d.Severity == sources.SeverityError {
			return true
		}
	}
	return false
}

// builder is what a layout fills an entry with.
type builder struct {
	key    string
	prefix string
	e      *entry
	root   bool
}

func (b *builder) diag(sev sources.Severity, field, format string, args ...any) {
	b.e.diags = append(b.e.diags, sources.Diagnostic{
		Severity: sev,
		Source:   SourceName,
		Location: b.key,
		Field:    field,
		Message:  fmt.Sprintf(format, args...),
	})
}

func (b *builder) errorf(field, format string, args ...any) {
	b.diag(sources.SeverityError, field, format, args...)
}

// badShape reports a key that does not have the layout's shape, want
// below the prefix ("/<service>/<host:port>"): silently ignored at the
// keyspace root, a diagnostic under a prefix.
func (b *builder) badShape(want string) {
	if b.root {
		b.e.ignored = true
		return
	}
	b.errorf("", "key does not match the layout %s", b.prefix+want)
}

func (b *builder) service(name string) bool {
	if !sources.ValidServiceName(name) {
		b.errorf("", "invalid service name %q: use lower-case letters, digits, '.', '-' and '_', starting and ending with a letter or digit (at most 253 characters)", name)
		return false
	}
	b.e.service = name
	return true
}

func (b *builder) address(ap netip.AddrPort) {
	b.e.ap = ap
	b.e.inst.Address = ap.Addr().String()
	b.e.inst.Port = uint32(ap.Port())
}

// parseHostPort accepts an IP literal and a port, as the instance keys are
// matched on; host names are not resolved.
func parseHostPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		host, port, serr := net.SplitHostPort(s)
		if serr != nil {
			return ap, fmt.Errorf("%s is not host:port", preview([]byte(s)))
		}
		if p, perr := strconv.ParseUint(port, 10, 16); perr != nil || p == 0 {
			return ap, fmt.Errorf("%q: bad port %q (want 1-65535)", s, port)
		}
		if _, aerr := netip.ParseAddr(host); aerr != nil {
			return ap, fmt.Errorf("%q: %q is not an IP address (host names are not resolved)", s, host)
		}
		return ap, fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if ap.Port() == 0 {
		return ap, fmt.Errorf("%q: bad port 0 (want 1-65535)", s)
	}
	a := ap.Addr()
	if err := sources.CheckEndpointAddress(a); err != nil {
		return ap, fmt.Errorf("%q: %w", s, err)
	}
	return netip.AddrPortFrom(a.Unmap(), ap.Port()), nil
}

// preview quotes a value for a message, cut short if long.
func preview(v []byte) string {
	const limit = 64
	if len(v) > limit {
		return strconv.Quote(string(v[:limit])) + "..."
	}
	return strconv.Quote(string(v))
}
