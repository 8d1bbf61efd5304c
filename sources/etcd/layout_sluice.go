package etcd

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/sluice-mesh/sluice/sources"
)

// FormatSluice is `<prefix>/<service>/<host:port>` with a JSON (or empty,
// or bare host:port) value; see Registration. It is the default layout.
const FormatSluice = "sluice"

// DefaultPrefix is the sluice layout's default root.
const DefaultPrefix = "/services"

// sluiceLayout: <prefix>/<service>/<host:port> → "", "host:port" or a JSON
// object (Registration).
type sluiceLayout struct{}

func (sluiceLayout) format() string        { return FormatSluice }
func (sluiceLayout) defaultPrefix() string { return DefaultPrefix }

func (sluiceLayout) parse(b *builder, rel string, value []byte) {
	svc, hp, found := strings.Cut(rel, "/")
	if !found || svc == "" || hp == "" || strings.Contains(hp, "/") {
		b.badShape("/<service>/<host:port>")
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
