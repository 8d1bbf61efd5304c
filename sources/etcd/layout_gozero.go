package etcd

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/sluice-mesh/sluice/sources"
)

// FormatGoZero is go-zero's discov publisher: `<key>/<id>` with a bare
// host:port value; the service name is the key.
const FormatGoZero = "gozero"

// GoZeroPrefix is the gozero layout's default root, empty: go-zero writes
// its keys at the root of the keyspace (e.g. "user.rpc/7587864068988009477").
const GoZeroPrefix = ""

// goZeroLayout: <prefix>/<key>/<id> (at the root: <key>/<id>) →
// "host:port". The id is the lease id, or the publisher's configured
// numeric id.
type goZeroLayout struct{}

func (goZeroLayout) format() string        { return FormatGoZero }
func (goZeroLayout) defaultPrefix() string { return GoZeroPrefix }

func (goZeroLayout) parse(b *builder, rel string, value []byte) {
	i := strings.LastIndexByte(rel, '/')
	if i <= 0 || i == len(rel)-1 {
		b.badShape("/<key>/<numeric id>")
		return
	}
	name, id := rel[:i], rel[i+1:]
	if _, err := strconv.ParseInt(id, 10, 64); err != nil {
		b.badShape("/<key>/<numeric id>")
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
