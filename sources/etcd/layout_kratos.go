package etcd

import (
	"bytes"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sluice-mesh/sluice/sources"
)

// FormatKratos is go-kratos' etcd registry: `<prefix>/<name>/<id>` with its
// ServiceInstance JSON.
const FormatKratos = "kratos"

// KratosPrefix is go-kratos' default registry namespace, the kratos
// layout's default root.
const KratosPrefix = "/microservices"

// kratosInstance mirrors go-kratos' registry.ServiceInstance (see
// formats_test.go for where it is defined and marshalled).
type kratosInstance struct {
	ID        string
	Name      string
	Version   string
	Metadata  map[string]string
	Endpoints []string
}

// kratosLayout: <prefix>/<name>/<id> → ServiceInstance JSON. The instance
// is the first grpc:// (or grpcs://) endpoint, else the first http:// (or
// https://) one: sluice serves one port per service, and gRPC is what
// kratos services call each other with.
type kratosLayout struct{}

func (kratosLayout) format() string        { return FormatKratos }
func (kratosLayout) defaultPrefix() string { return KratosPrefix }

func (kratosLayout) parse(b *builder, rel string, value []byte) {
	name, id, found := strings.Cut(rel, "/")
	if !found || name == "" || id == "" {
		b.badShape("/<service name>/<instance id>")
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
			if u, err := url.Parse(e); err == nil && slices.Contains(rank, strings.ToLower(u.Scheme)) {
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
