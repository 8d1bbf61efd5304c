package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/translator"
)

// xdsTypes maps --type's names to the kinds' Files names.
var xdsTypes = map[string]string{"cds": "clusters", "eds": "endpoints", "lds": "listeners", "rds": "routes"}

func (a *app) translateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "translate --registry-file F --policy-dir D (--service S [--role R] [--inbound-port N] | --grpc)",
		Short: "Print the xDS resources a proxy group would get, offline",
		Long: "Translate registry files and a policy directory, as sluice serve would, for one proxy\n" +
			"group: the Envoy sidecar (or gateway) of --service, or the proxyless gRPC clients\n" +
			"(--grpc). Prints every resource as protojson with Envoy's field names, under\n" +
			"clusters, endpoints, listeners and routes, each sorted by name.\n" +
			"Invalid registry files or policies print file:line: field: message on stderr and\n" +
			"exit 2; the translation's own warnings go to stderr too.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.translate()
		},
	}
	f := cmd.Flags()
	addRegistryFlag(f)
	f.String("policy-dir", "", "the policy directory (default: none, built-in defaults)")
	f.String("service", "", "the service whose Envoy the group is (node.cluster)")
	f.String("role", translator.RoleSidecar, "sidecar or gateway")
	f.Uint32("inbound-port", 0, "the port of the application a sidecar fronts; a sidecar with one gets an inbound listener")
	f.Bool("grpc", false, "the proxyless gRPC clients' group instead of an Envoy's")
	addLocalityFlags(f)
	f.StringP("output", "o", "yaml", "output format: yaml or json")
	f.String("type", "", "print only one type: cds, eds, lds or rds")
	return cmd
}

func (a *app) translate() error {
	v := a.v
	proxy, err := proxyOf(v.GetString("service"), v.GetString("role"), uint32(v.GetUint("inbound-port")), v.GetBool("grpc"))
	if err != nil {
		return err
	}
	if proxy.Locality, err = localityOf(v.GetString("region"), v.GetString("zone")); err != nil {
		return err
	}
	format := v.GetString("output")
	if format != "yaml" && format != "json" {
		return &setting.Error{Field: "--output", Value: format, Reason: "must be one of yaml, json"}
	}
	only := v.GetString("type")
	if _, ok := xdsTypes[only]; only != "" && !ok {
		return &setting.Error{Field: "--type", Value: only, Reason: "must be one of cds, eds, lds, rds"}
	}
	registries := v.GetStringSlice("registry-file")
	if len(registries) == 0 {
		return &setting.Error{Field: "--registry-file", Reason: "is required"}
	}

	catalog, diags := loadCatalog(registries)
	set, pds := loadPolicy(v.GetString("policy-dir"))
	diags = append(diags, pds...)
	if printDiagnostics(a.stderr, diags) > 0 {
		return exitError(2)
	}
	res, err := translator.New().Translate(translator.Input{Catalog: catalog, Policy: set, Proxy: proxy})
	if err != nil {
		fmt.Fprintln(a.stderr, "sluice translate:", err)
		return exitError(2)
	}
	printDiagnostics(a.stderr, res.Diagnostics)
	docs, err := decodeResources(res)
	if err != nil {
		return err
	}
	out := map[string][]any{}
	for _, k := range envoy.Kinds {
		if only == "" || xdsTypes[only] == k.Files {
			out[k.Files] = []any{}
		}
	}
	for _, d := range docs {
		if _, ok := out[d.kind.Files]; ok {
			out[d.kind.Files] = append(out[d.kind.Files], d.value)
		}
	}
	b, err := marshalOutput(out, format)
	if err != nil {
		return err
	}
	_, err = a.stdout.Write(b)
	return err
}

// proxyOf is the group --service, --role, --inbound-port and --grpc name.
func proxyOf(service, role string, inboundPort uint32, grpc bool) (translator.Proxy, error) {
	if grpc {
		if service != "" || inboundPort != 0 {
			return translator.Proxy{}, &setting.Error{Field: "--grpc", Reason: "stands for every proxyless gRPC client: it takes no --service or --inbound-port"}
		}
		return translator.Proxy{Kind: translator.KindGRPC}, nil
	}
	if service == "" {
		return translator.Proxy{}, &setting.Error{Field: "--service", Reason: "is required (or --grpc)"}
	}
	if !slices.Contains([]string{translator.RoleSidecar, translator.RoleGateway}, role) {
		return translator.Proxy{}, &setting.Error{Field: "--role", Value: role, Reason: "must be one of sidecar, gateway"}
	}
	return translator.Proxy{Kind: translator.KindEnvoy, Role: role, Service: service, InboundPort: inboundPort}, nil
}

// marshalOutput writes v as indented JSON (without HTML escaping, so
// regular expressions stay readable) or as YAML. Map keys are sorted either
// way, so equal input gives equal bytes.
func marshalOutput(v any, format string) ([]byte, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if format == "json" {
		return []byte(b.String()), nil
	}
	return yaml.JSONToYAML([]byte(b.String()))
}
