// Package file is the static registry source: services and instances listed in
// a YAML file, re-read whenever the file changes.
package file

import (
	"net/netip"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-mesh/sluice/policy/strictyaml"
	"github.com/sluice-mesh/sluice/sources"
)

// SourceName is the name this source reports under.
const SourceName = "file"

// MaxFileSize bounds a registry file: 8 MiB is about 13,000 services of
// ten instances each.
const MaxFileSize = 8 << 20

// Parse decodes a registry file. On any error the whole file is rejected: the
// returned diagnostics say where (file:line) and which field, and the state is
// nil, so the caller keeps serving what it had.
func Parse(filename string, data []byte) (*sources.State, []sources.Diagnostic) {
	// Aliases are not followed (MaxAliases 0): a registry file lists its
	// instances plainly.
	p := parser{Reader: &strictyaml.Reader{File: filename, Source: SourceName}}
	if len(data) > MaxFileSize {
		// Parsing keeps a node per value with its position: a 12 MB file
		// took the process to nearly 800 MB, for good.
		p.Errorf(1, "", "the file is %d bytes, more than %d; a registry this size belongs in etcd or Consul", len(data), MaxFileSize)
		return nil, p.Diagnostics()
	}
	root := p.Document(data)
	if root == nil && len(p.Diagnostics()) == 0 {
		// An empty file is also what a file looks like while a writer
		// rewrites it in place: refusing it keeps the catalog from being
		// wiped in between. An empty catalog is said explicitly.
		p.Errorf(1, "", "the file is empty; write `services: []` to serve an empty catalog")
	}
	st := &sources.State{Services: []sources.Service{}}
	if root != nil {
		p.document(root, st)
	}
	if len(p.Diagnostics()) > 0 {
		return nil, p.Diagnostics()
	}
	st.Normalize(SourceName)
	return st, nil
}

// parser reads one registry file.
type parser struct {
	*strictyaml.Reader
}

func (p *parser) document(n *yaml.Node, st *sources.State) {
	p.Fields(n, "", []string{"services"}, nil, func(_ string, v *yaml.Node) {
		items, ok := p.Seq(v, "services")
		if !ok {
			return
		}
		names := map[string]int{}
		for i, sn := range items {
			path := strictyaml.Index("services", i)
			svc, ok := p.service(sn, path)
			if !ok {
				continue
			}
			if prev, dup := names[svc.Name]; dup {
				p.Errorf(sn.Line, path+".name", "service %q is already listed at line %d", svc.Name, prev)
				continue
			}
			names[svc.Name] = sn.Line
			st.Services = append(st.Services, svc)
		}
	})
}

func (p *parser) service(n *yaml.Node, path string) (sources.Service, bool) {
	var svc sources.Service
	ok := true
	hasName := false
	isMapping := p.Fields(n, path, []string{"name", "instances"}, nil, func(key string, v *yaml.Node) {
		switch key {
		case "name":
			hasName = true
			name, sok := p.Scalar(v, path+".name", "a service name")
			if !sok {
				ok = false
				return
			}
			if !sources.ValidServiceName(name) {
				p.Errorf(v.Line, path+".name", "%q is not a valid service name (lowercase letters, digits, '-', '.', '_'; starts and ends alphanumeric; at most 253 characters)", name)
				ok = false
				return
			}
			svc.Name = name
		case "instances":
			items, sok := p.Seq(v, path+".instances")
			if !sok {
				ok = false
				return
			}
			keys := map[string]int{}
			for i, in := range items {
				ipath := strictyaml.Index(path+".instances", i)
				inst, iok := p.instance(in, ipath)
				if !iok {
					ok = false
					continue
				}
				if prev, dup := keys[inst.Key()]; dup {
					p.Errorf(in.Line, ipath, "duplicate instance %s (first listed at line %d)", inst.Key(), prev)
					ok = false
					continue
				}
				keys[inst.Key()] = in.Line
				svc.Instances = append(svc.Instances, inst)
			}
		}
	})
	if isMapping && !hasName {
		p.Errorf(n.Line, path+".name", "required field is missing")
		ok = false
	}
	return svc, ok && isMapping
}

func (p *parser) instance(n *yaml.Node, path string) (sources.Instance, bool) {
	in := sources.Instance{Origin: strictyaml.Location(p.File, n.Line), Health: sources.HealthHealthy}
	ok, hasAddr, hasPort := true, false, false
	fail := func(v *yaml.Node, field, format string, args ...any) {
		p.Errorf(v.Line, path+"."+field, format, args...)
		ok = false
	}
	isMapping := p.Fields(n, path, []string{"address", "port", "health", "weight", "zone", "region", "metadata"}, nil, func(key string, v *yaml.Node) {
		if key != "metadata" && v.Kind != yaml.ScalarNode {
			fail(v, key, "expected a scalar, got %s", strictyaml.KindName(v))
			return
		}
		switch key {
		case "address":
			hasAddr = true
			a, err := netip.ParseAddr(v.Value)
			if err != nil {
				fail(v, key, "%q is not an IP address", v.Value)
				return
			}
			if err := sources.CheckEndpointAddress(a); err != nil {
				fail(v, key, "%q: %v", v.Value, err)
				return
			}
			in.Address = a.Unmap().String()
		case "port":
			hasPort = true
			port, err := strconv.ParseUint(v.Value, 10, 32)
			if err != nil || port < 1 || port > 65535 {
				fail(v, key, "%q is not a port (1-65535)", v.Value)
				return
			}
			in.Port = uint32(port)
		case "health":
			h, err := sources.ParseHealth(v.Value)
			if err != nil {
				fail(v, key, "%v", err)
				return
			}
			in.Health = h
		case "weight":
			w, err := strconv.ParseUint(v.Value, 10, 32)
			if err != nil || w < 1 || w > sources.MaxWeight {
				fail(v, key, "%q is not a weight (1-%d)", v.Value, sources.MaxWeight)
				return
			}
			in.Weight = uint32(w)
		case "zone":
			in.Zone = v.Value
		case "region":
			in.Region = v.Value
		case "metadata":
			md := map[string]string{}
			if !p.Mapping(v, path+".metadata", "a mapping of strings", func(mk string, _, mv *yaml.Node) {
				if mv.Kind != yaml.ScalarNode {
					fail(mv, key+"."+mk, "metadata values must be strings, got %s", strictyaml.KindName(mv))
					return
				}
				md[mk] = mv.Value
			}) {
				ok = false
				return
			}
			in.Metadata = md
		}
	})
	if !isMapping {
		return in, false
	}
	if !hasAddr {
		fail(n, "address", "required field is missing")
	}
	if !hasPort {
		fail(n, "port", "required field is missing")
	}
	return in, ok
}
