package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/file"
	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/translator"
)

// This file holds what the offline commands (translate, diff, explain)
// share: reading registry files and policy directories as sluice serve
// would, the flags naming a proxy group, and resources as decoded JSON.

// addRegistryFlag adds --registry-file, repeatable.
func addRegistryFlag(f *pflag.FlagSet) {
	f.StringArray("registry-file", nil, "a registry file (the format of sluice serve --registry-file); repeat it to merge several, as sluice merges its sources")
}

// loadCatalog reads and merges registry files, each as a source of its own
// (named after its path). Diagnostics are the files' errors; the catalog
// is only meaningful without them.
func loadCatalog(paths []string) (sources.Catalog, []sources.Diagnostic) {
	states := map[string]sources.State{}
	var diags []sources.Diagnostic
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			diags = append(diags, ioError(path, err))
			continue
		}
		st, ds := file.Parse(path, data)
		diags = append(diags, ds...)
		if st != nil {
			states[path] = *st
		}
	}
	return sources.Merge(states), diags
}

// loadPolicy loads the policy directory dir as sluice serve does; "" is no
// directory: built-in defaults (a nil Set).
func loadPolicy(dir string) (*policy.Set, []sources.Diagnostic) {
	if dir == "" {
		return nil, nil
	}
	files, diags := policy.ReadDir(dir)
	if len(diags) > 0 {
		return nil, diags
	}
	set, diags := policy.Load(files)
	if set == nil && len(diags) == 0 { // unreachable: Load explains a nil Set
		diags = append(diags, sources.Diagnostic{Severity: sources.SeverityError, Location: dir, Message: "the policy set was refused"})
	}
	return set, diags
}

// serviceNames lists the catalog's services, sorted (as catalogs are).
func serviceNames(c sources.Catalog) []string {
	names := make([]string, 0, len(c.Services))
	for _, s := range c.Services {
		names = append(names, s.Name)
	}
	return names
}

// printDiagnostics writes one line per diagnostic, "file:line: field:
// message", with " (warning)" after warnings, and returns the number of
// errors.
func printDiagnostics(w io.Writer, diags []sources.Diagnostic) (errs int) {
	for _, d := range diags {
		line := d.String()
		if d.Severity == sources.SeverityWarning {
			line += " (warning)"
		} else {
			errs++
		}
		fmt.Fprintln(w, line)
	}
	return errs
}

// addLocalityFlags adds --region and --zone, the locality of the clients a
// group is for.
func addLocalityFlags(f *pflag.FlagSet) {
	f.String("region", "", "the clients' region (matters only under a locality policy)")
	f.String("zone", "", "the clients' zone")
}

// localityOf reads --region and --zone, checked as sluice checks a node's.
func localityOf(region, zone string) (translator.Locality, error) {
	for _, f := range []struct{ flag, value string }{{"--region", region}, {"--zone", zone}} {
		if err := translator.CheckLocalityPart(f.value); err != nil {
			return translator.Locality{}, &setting.Error{Field: f.flag, Value: f.value, Reason: err.Error()}
		}
	}
	return translator.Locality{Region: region, Zone: zone}, nil
}

// resourceDoc is one translated resource as protojson (Envoy's field
// names, as in its config dump), decoded into maps, slices and
// json.Numbers, so output and comparisons do not depend on protojson's
// whitespace.
type resourceDoc struct {
	kind  envoy.Kind
	name  string
	value any
}

// key identifies a resource in a group: its kind and name.
func (r resourceDoc) key() string { return r.kind.Files + "/" + r.name }

// decodeResources turns a translation into resourceDocs, in envoy.Kinds
// order and by name within a kind (as Translate sorts them).
func decodeResources(res *translator.Result) ([]resourceDoc, error) {
	var out []resourceDoc
	for _, k := range envoy.Kinds {
		for _, r := range res.Resources[k.Type] {
			v, err := decodeProto(r)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", k.Noun, cache.GetResourceName(r), err)
			}
			out = append(out, resourceDoc{kind: k, name: cache.GetResourceName(r), value: v})
		}
	}
	return out, nil
}

func decodeProto(m proto.Message) (any, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}
