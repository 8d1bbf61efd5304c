// Package file is the static registry source: services and instances listed in
// a YAML file, re-read whenever the file changes.
package file

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

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
	p := parser{file: filename}
	if len(data) > MaxFileSize {
		// Parsing keeps a node per value with its position: a 12 MB file
		// took the process to nearly 800 MB, for good.
		p.errorf(1, "", "the file is %d bytes, more than %d; a registry this size belongs in etcd or Consul", len(data), MaxFileSize)
		return nil, p.diags
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		p.errorf(lineOfYAMLError(err), "", "invalid YAML: %s", stripLinePrefix(err.Error()))
		return nil, p.diags
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(extra.Line, "", "a registry file holds one YAML document; found another")
	} else if !errors.Is(err, io.EOF) {
		p.errorf(lineOfYAMLError(err), "", "invalid YAML: %s", stripLinePrefix(err.Error()))
	}
	st := &sources.State{Services: []sources.Service{}}
	if root.Kind == 0 {
		// An empty file is also what a file looks like while a writer
		// rewrites it in place: refusing it keeps the catalog from being
		// wiped in between. An empty catalog is said explicitly.
		p.errorf(1, "", "the file is empty; write `services: []` to serve an empty catalog")
		return nil, p.diags
	}
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		p.document(root.Content[0], st)
	} else if root.Kind != 0 {
		p.errorf(root.Line, "", "expected a mapping with a services list")
	}
	if len(p.diags) > 0 {
		return nil, p.diags
	}
	st.Normalize(SourceName)
	return st, nil
}

type parser struct {
	file  string
	diags []sources.Diagnostic
}

func (p *parser) errorf(line int, field, format string, args ...any) {
	p.diags = append(p.diags, sources.Diagnostic{
		Severity: sources.SeverityError,
		Source:   SourceName,
		Location: p.file + ":" + strconv.Itoa(line),
		Field:    field,
		Message:  fmt.Sprintf(format, args...),
	})
}

// fields walks a mapping node, rejecting keys not in known, and calls visit
// for each known key with its value node.
func (p *parser) fields(n *yaml.Node, path string, known []string, visit func(key string, v *yaml.Node)) bool {
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, path, "expected a mapping, got %s", kindName(n))
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fp := join(path, k.Value)
		if !contains(known, k.Value) {
			p.errorf(k.Line, fp, "unknown field (known: %v)", known)
			continue
		}
		if seen[k.Value] {
			p.errorf(k.Line, fp, "field given twice")
			continue
		}
		seen[k.Value] = true
		visit(k.Value, v)
	}
	return true
}

func (p *parser) document(n *yaml.Node, st *sources.State) {
	p.fields(n, "", []string{"services"}, func(_ string, v *yaml.Node) {
		if !p.isSeq(v, "services") {
			return
		}
		names := map[string]int{}
		for i, sn := range v.Content {
			path := fmt.Sprintf("services[%d]", i)
			svc, ok := p.service(sn, path)
			if !ok {
				continue
			}
			if prev, dup := names[svc.Name]; dup {
				p.errorf(sn.Line, path+".name", "service %q is already listed at line %d", svc.Name, prev)
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
	p.fields(n, path, []string{"name", "instances"}, func(key string, v *yaml.Node) {
		switch key {
		case "name":
			hasName = true
			if v.Kind != yaml.ScalarNode || !sources.ValidServiceName(v.Value) {
				p.errorf(v.Line, path+".name", "%q is not a valid service name (lowercase letters, digits, '-', '.', '_'; starts and ends alphanumeric; at most 253 characters)", v.Value)
				ok = false
				return
			}
			svc.Name = v.Value
		case "instances":
			if !p.isSeq(v, path+".instances") {
				ok = false
				return
			}
			keys := map[string]int{}
			for i, in := range v.Content {
				ipath := fmt.Sprintf("%s.instances[%d]", path, i)
				inst, iok := p.instance(in, ipath)
				if !iok {
					ok = false
					continue
				}
				if prev, dup := keys[inst.Key()]; dup {
					p.errorf(in.Line, ipath, "duplicate instance %s (first listed at line %d)", inst.Key(), prev)
					ok = false
					continue
				}
				keys[inst.Key()] = in.Line
				svc.Instances = append(svc.Instances, inst)
			}
		}
	})
	if n.Kind == yaml.MappingNode && !hasName {
		p.errorf(n.Line, path+".name", "required field is missing")
		ok = false
	}
	return svc, ok && n.Kind == yaml.MappingNode
}

func (p *parser) instance(n *yaml.Node, path string) (sources.Instance, bool) {
	in := sources.Instance{Origin: p.file + ":" + strconv.Itoa(n.Line), Health: sources.HealthHealthy}
	ok, hasAddr, hasPort := true, false, false
	fail := func(v *yaml.Node, field, format string, args ...any) {
		p.errorf(v.Line, path+"."+field, format, args...)
		ok = false
	}
	p.fields(n, path, []string{"address", "port", "health", "weight", "zone", "region", "metadata"}, func(key string, v *yaml.Node) {
		if key != "metadata" && v.Kind != yaml.ScalarNode {
			fail(v, key, "expected a scalar, got %s", kindName(v))
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
			if v.Kind != yaml.MappingNode {
				fail(v, key, "expected a mapping of strings, got %s", kindName(v))
				return
			}
			for i := 0; i+1 < len(v.Content); i += 2 {
				mk, mv := v.Content[i], v.Content[i+1]
				if mv.Kind != yaml.ScalarNode {
					fail(mv, key+"."+mk.Value, "metadata values must be strings, got %s", kindName(mv))
					continue
				}
				md[mk.Value] = mv.Value
			}
			in.Metadata = md
		}
	})
	if n.Kind != yaml.MappingNode {
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

func (p *parser) isSeq(v *yaml.Node, path string) bool {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		v.Content = nil
		return true
	}
	if v.Kind != yaml.SequenceNode {
		p.errorf(v.Line, path, "expected a list, got %s", kindName(v))
		return false
	}
	return true
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

func lineOfYAMLError(err error) int {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 1
}

func stripLinePrefix(s string) string {
	if loc := yamlLine.FindStringIndex(s); loc != nil {
		return s[loc[1]:]
	}
	return strings.TrimPrefix(s, "yaml: ")
}
