package etcd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"sort"
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
	format string
	// prefix has no trailing slash; "" is the keyspace root.
	prefix string
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
	b := &builder{key: key, e: e, root: root}
	switch p.format {
	case FormatKratos:
		p.kratos(b, rel, value)
	case FormatGoZero:
		p.gozero(b, rel, value)
	default:
		p.sluice(b, rel, value)
	}
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

type builder struct {
	key  string
	e    *entry
	root bool
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

// badShape reports a key that does not have the layout's shape: silently
// ignored at the keyspace root, a diagnostic under a prefix.
func (b *builder) badShape(want string) {
	if b.root {
		b.e.ignored = true
		return
	}
	b.errorf("", "key does not match the layout %s", want)
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

// sluice: <prefix>/<service>/<host:port> → "", "host:port" or a JSON object.
func (p parser) sluice(b *builder, rel string, value []byte) {
	svc, hp, found := strings.Cut(rel, "/")
	if !found || svc == "" || hp == "" || strings.Contains(hp, "/") {
		b.badShape(p.prefix + "/<service>/<host:port>")
		return
	}
	okName := b.service(svc)
	ap, err := parseHostPort(hp)
	if err != nil {
		b.errorf("", "key: %v", err)
	}
	if !okName || err != nil {
		return
	}
	b.address(ap)
	b.e.inst.Health = sources.HealthHealthy
	v := bytes.TrimSpace(value)
	switch {
	case len(v) == 0:
		return
	case !json.Valid(v):
		vap, verr := parseHostPort(string(v))
		if verr != nil {
			b.errorf("", "value is neither a JSON object nor host:port: %s", preview(v))
			return
		}
		if vap != ap {
			b.errorf("", "value %s does not match the address %s in the key", vap, ap)
		}
		return
	}
	raw, err := jsonObject(v)
	if err != nil {
		b.errorf("", "value: %v", err)
		return
	}
	in := &b.e.inst
	if s, ok := jsonField[string](b, raw, "status", jsonString); ok {
		h, err := sources.ParseHealth(s)
		if err != nil {
			b.errorf("status", "%v", err)
		}
		in.Health = h
	}
	if n, ok := jsonField[int64](b, raw, "weight", jsonInt); ok {
		if n < 0 || n > sources.MaxWeight {
			b.errorf("weight", "must be from 0 to %d, got %d", sources.MaxWeight, n)
		} else {
			in.Weight = uint32(n)
		}
	}
	if s, ok := jsonField[string](b, raw, "zone", jsonString); ok {
		in.Zone = s
	}
	if s, ok := jsonField[string](b, raw, "region", jsonString); ok {
		in.Region = s
	}
	if m, ok := jsonField[map[string]string](b, raw, "metadata", jsonStringMap); ok && len(m) > 0 {
		in.Metadata = m
	}
	// timestamp is the registrant's business; only its type is checked.
	jsonField[int64](b, raw, "timestamp", jsonNumber)
}

// kratosInstance mirrors go-kratos' registry.ServiceInstance (see
// formats_test.go for where it is defined and marshalled).
type kratosInstance struct {
	ID        string
	Name      string
	Version   string
	Metadata  map[string]string
	Endpoints []string
}

// kratos: <prefix>/<name>/<id> → ServiceInstance JSON. The instance is the
// first grpc:// (or grpcs://) endpoint, else the first http:// (or https://)
// one: sluice serves one port per service, and gRPC is what kratos services
// call each other with.
func (p parser) kratos(b *builder, rel string, value []byte) {
	name, id, found := strings.Cut(rel, "/")
	if !found || name == "" || id == "" {
		b.badShape(p.prefix + "/<service name>/<instance id>")
		return
	}
	if !b.service(name) {
		return
	}
	raw, err := jsonObject(bytes.TrimSpace(value))
	if err != nil {
		b.errorf("", "value is not a go-kratos ServiceInstance: %v", err)
		return
	}
	var si kratosInstance
	si.ID, _ = jsonField[string](b, raw, "id", jsonString)
	si.Name, _ = jsonField[string](b, raw, "name", jsonString)
	si.Version, _ = jsonField[string](b, raw, "version", jsonString)
	si.Metadata, _ = jsonField[map[string]string](b, raw, "metadata", jsonStringMap)
	si.Endpoints, _ = jsonField[[]string](b, raw, "endpoints", jsonStringList)
	if hasError(b.e.diags) {
		return
	}
	if si.Name != "" && si.Name != name {
		b.errorf("name", "%q does not match the service name %q in the key", si.Name, name)
		return
	}
	ep, field, err := kratosEndpoint(si.Endpoints)
	if err != nil {
		b.errorf(field, "%v", err)
		return
	}
	b.address(ep)
	in := &b.e.inst
	in.Health = sources.HealthHealthy
	md := make(map[string]string, len(si.Metadata)+1)
	for k, v := range si.Metadata {
		md[k] = v
	}
	if si.Version != "" {
		if _, ok := md["version"]; !ok {
			md["version"] = si.Version
		}
	}
	if len(md) > 0 {
		in.Metadata = md
	}
	// kratos' selector reads an instance's initial weight from
	// metadata["weight"] (selector/default_node.go).
	if w, ok := si.Metadata["weight"]; ok {
		n, err := strconv.ParseInt(w, 10, 64)
		if err != nil || n < 0 || n > sources.MaxWeight {
			b.errorf("metadata.weight", "must be an integer from 0 to %d, got %q", sources.MaxWeight, w)
			return
		}
		in.Weight = uint32(n)
	}
}

func kratosEndpoint(eps []string) (netip.AddrPort, string, error) {
	pick := -1
	for _, rank := range [][]string{{"grpc", "grpcs"}, {"http", "https"}} {
		for i, e := range eps {
			if u, err := url.Parse(e); err == nil && contains(rank, strings.ToLower(u.Scheme)) {
				pick = i
				break
			}
		}
		if pick >= 0 {
			break
		}
	}
	if pick < 0 {
		return netip.AddrPort{}, "endpoints", fmt.Errorf("no grpc:// or http:// endpoint in %q", eps)
	}
	u, _ := url.Parse(eps[pick])
	ap, err := parseHostPort(u.Host)
	if err != nil {
		return ap, "endpoints[" + strconv.Itoa(pick) + "]", err
	}
	return ap, "", nil
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// gozero: <prefix>/<key>/<id> (at the root: <key>/<id>) → "host:port". The
// id is the lease id, or the publisher's configured numeric id.
func (p parser) gozero(b *builder, rel string, value []byte) {
	i := strings.LastIndexByte(rel, '/')
	if i <= 0 || i == len(rel)-1 {
		b.badShape(p.prefix + "/<key>/<numeric id>")
		return
	}
	name, id := rel[:i], rel[i+1:]
	if _, err := strconv.ParseInt(id, 10, 64); err != nil {
		b.badShape(p.prefix + "/<key>/<numeric id>")
		return
	}
	if b.root && strings.Contains(name, "/") {
		// A go-zero Etcd.Key with a path, such as "/gz/user.rpc": its
		// service is the last element, under a prefix.
		dir := b.key[:strings.LastIndexByte(b.key, '/')]
		b.diag(sources.SeverityWarning, "", "go-zero key %q has a path; to serve it, set the prefix to %q", dir, dir[:strings.LastIndexByte(dir, '/')])
		return
	}
	if !b.service(name) {
		return
	}
	ap, err := parseHostPort(string(bytes.TrimSpace(value)))
	if err != nil {
		b.errorf("", "value: %v", err)
		return
	}
	b.address(ap)
	b.e.inst.Health = sources.HealthHealthy
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

// JSON helpers: known fields are type-checked one by one so a diagnostic
// can name the field; unknown fields are ignored.

func jsonObject(v []byte) (map[string]json.RawMessage, error) {
	if k := jsonKind(v); k != "object" {
		if k == "" {
			return nil, fmt.Errorf("not JSON: %s", preview(v))
		}
		return nil, fmt.Errorf("must be a JSON object, got %s", k)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return raw, nil
}

// jsonField decodes raw[name] with dec; absent and null fields report false
// without a diagnostic, wrong types report false with one.
func jsonField[T any](b *builder, raw map[string]json.RawMessage, name string, dec func(json.RawMessage) (T, string, error)) (T, bool) {
	var zero T
	v, ok := raw[name]
	if !ok || jsonKind(v) == "null" {
		return zero, false
	}
	t, sub, err := dec(v)
	if err != nil {
		field := name
		if sub != "" {
			field += sub
		}
		b.errorf(field, "%v", err)
		return zero, false
	}
	return t, true
}

func jsonKind(v []byte) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || !json.Valid(v) {
		return ""
	}
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func jsonString(v json.RawMessage) (string, string, error) {
	if k := jsonKind(v); k != "string" {
		return "", "", fmt.Errorf("must be a string, got %s", k)
	}
	var s string
	err := json.Unmarshal(v, &s)
	return s, "", err
}

func jsonNumber(v json.RawMessage) (int64, string, error) {
	if k := jsonKind(v); k != "number" {
		return 0, "", fmt.Errorf("must be a number, got %s", k)
	}
	n, _ := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
	return n, "", nil
}

func jsonInt(v json.RawMessage) (int64, string, error) {
	if k := jsonKind(v); k != "number" {
		return 0, "", fmt.Errorf("must be an integer, got %s", k)
	}
	s := string(bytes.TrimSpace(v))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("must be an integer from 0 to %d, got %s", sources.MaxWeight, s)
	}
	return n, "", nil
}

func jsonStringMap(v json.RawMessage) (map[string]string, string, error) {
	if k := jsonKind(v); k != "object" {
		return nil, "", fmt.Errorf("must be an object of strings, got %s", k)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, "", err
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	m := make(map[string]string, len(raw))
	for _, k := range keys {
		s, _, err := jsonString(raw[k])
		if err != nil {
			return nil, "." + k, err
		}
		m[k] = s
	}
	return m, "", nil
}

func jsonStringList(v json.RawMessage) ([]string, string, error) {
	if k := jsonKind(v); k != "array" {
		return nil, "", fmt.Errorf("must be an array of strings, got %s", k)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, "", err
	}
	out := make([]string, len(raw))
	for i, r := range raw {
		s, _, err := jsonString(r)
		if err != nil {
			return nil, "[" + strconv.Itoa(i) + "]", err
		}
		out[i] = s
	}
	return out, "", nil
}
