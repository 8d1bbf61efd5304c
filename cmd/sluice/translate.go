package main

import (
	"context"
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
		Use:   "translate (--registry-file F --policy-dir D (--service S [--role R] [--inbound-port N] | --grpc) | --admin-addr HOST:PORT --group KEY)",
		Short: "Print the xDS resources a proxy group would get, offline or in a running sluice",
		Long: "Translate registry files and a policy directory, as sluice serve would, for one proxy\n" +
			"group: the Envoy sidecar (or gateway) of --service, or the proxyless gRPC clients\n" +
			"(--grpc). Prints every resource as protojson with Envoy's field names, under\n" +
			"clusters, endpoints, listeners and routes, each sorted by name.\n" +
			"Invalid registry files or policies print file:line: field: message on stderr and\n" +
			"exit 2; the translation's own warnings go to stderr too.\n" +
			"\n" +
			"With --admin-addr (and --admin-token-file, as sluice status) and --group KEY, for\n" +
			"one of a running sluice's groups (sluice status lists them), with the catalog and\n" +
			"the policy set it serves now, from its admin API. Exit status 2 when it cannot be\n" +
			"reached.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.translate(cmd.Context())
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
	addAdminFlags(f, "")
	f.String("group", "", "with --admin-addr: the key of the running group to translate for (as sluice status shows it)")
	return cmd
}

func (a *app) translate(ctx context.Context) error {
	v := a.v
	format := v.GetString("output")
	if format != "yaml" && format != "json" {
		return &setting.Error{Field: "--output", Value: format, Reason: "must be one of yaml, json"}
	}
	only := v.GetString("type")
	if _, ok := xdsTypes[only]; only != "" && !ok {
		return &setting.Error{Field: "--type", Value: only, Reason: "must be one of cds, eds, lds, rds"}
	}
	var in translator.Input
	var err error
	if a.isLive() {
		in, err = a.translateLiveInput(ctx)
	} else {
		in, err = a.translateOfflineInput()
	}
	if err != nil {
		return err
	}
	res, err := translator.New().Translate(in)
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

// translateOfflineInput is the group the flags name, with the catalog of
// --registry-file and the policy set of --policy-dir.
func (a *app) translateOfflineInput() (translator.Input, error) {
	v := a.v
	if v.GetString("group") != "" {
		return translator.Input{}, &setting.Error{Field: "--group", Reason: "names a running group: it needs --admin-addr (offline, name the group with --service or --grpc)"}
	}
	proxy, err := proxyOf(v.GetString("service"), v.GetString("role"), uint32(v.GetUint("inbound-port")), v.GetBool("grpc"))
	if err != nil {
		return translator.Input{}, err
	}
	if proxy.Locality, err = localityOf(v.GetString("region"), v.GetString("zone")); err != nil {
		return translator.Input{}, err
	}
	registries := v.GetStringSlice("registry-file")
	if len(registries) == 0 {
		return translator.Input{}, &setting.Error{Field: "--registry-file", Reason: "is required (or --admin-addr)"}
	}
	catalog, diags := loadCatalog(registries)
	set, pds := loadPolicy(v.GetString("policy-dir"))
	if printDiagnostics(a.stderr, append(diags, pds...)) > 0 {
		return translator.Input{}, exitError(2)
	}
	return translator.Input{Catalog: catalog, Policy: set, Proxy: proxy}, nil
}

// translateLiveInput is the running group --group names, with the
// running sluice's catalog and the policy set it serves.
func (a *app) translateLiveInput(ctx context.Context) (translator.Input, error) {
	v := a.v
	const group = "the group (--group), with its port and locality,"
	for _, err := range []error{
		offlineOnly("--registry-file", len(v.GetStringSlice("registry-file")) > 0, "the catalog"),
		offlineOnly("--policy-dir", v.GetString("policy-dir") != "", "the policies"),
		offlineOnly("--service", v.GetString("service") != "", group),
		offlineOnly("--role", v.GetString("role") != translator.RoleSidecar, group),
		offlineOnly("--inbound-port", v.GetUint("inbound-port") != 0, group),
		offlineOnly("--grpc", v.GetBool("grpc"), group),
		offlineOnly("--region", v.GetString("region") != "", group),
		offlineOnly("--zone", v.GetString("zone") != "", group),
	} {
		if err != nil {
			return translator.Input{}, err
		}
	}
	key := v.GetString("group")
	if key == "" {
		return translator.Input{}, &setting.Error{Field: "--group", Reason: "is required with --admin-addr (sluice status lists the groups)"}
	}
	in, err := a.loadLive(ctx, "translate", true)
	if err != nil {
		return translator.Input{}, err
	}
	proxy, err := liveGroup(in.groups, key)
	if err != nil {
		return translator.Input{}, err
	}
	return translator.Input{Catalog: in.catalog, Policy: in.policy, Proxy: proxy}, nil
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
