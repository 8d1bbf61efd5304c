package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/translator"
)

// Exit statuses of sluice diff, for CI.
const (
	diffNoChange = 0
	diffChanges  = 1
	diffError    = 2
)

func (a *app) diffCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diff (--registry-file F --policy-dir CURRENT | --admin-addr HOST:PORT) --proposed-policy-dir PROPOSED",
		Short: "Show how a proposed policy directory would change what proxies get, offline or for a running sluice",
		Long: "Translate the registry files with the current and with the proposed policy\n" +
			"directory, for each proxy group, and list the groups whose configuration would\n" +
			"change: each resource added (+), removed (-) or changed (~), with the fields of a\n" +
			"changed one as path: old → new (+ path: value and - path: value for fields that\n" +
			"appear or go). Fields are protojson with Envoy's names; lists compare by index.\n" +
			"\n" +
			"The groups compared: the Envoy sidecar of each catalog service, fronting the port\n" +
			"its instances listen on (the most common one; the lowest on a tie), an Envoy\n" +
			"gateway (role gateway, service \"gateway\"), which gets every service, and the\n" +
			"proxyless gRPC clients. With --service, only those services' sidecars. --region\n" +
			"and --zone place every group's clients (it matters under a locality policy).\n" +
			"\n" +
			"With --admin-addr (and --admin-token-file, as sluice status), against a running\n" +
			"sluice instead: its merged catalog, the policy set it serves now, and the proxy\n" +
			"groups it builds (those of the clients connected to it, each with its own port\n" +
			"and locality) from its admin API; --service still narrows them. What the\n" +
			"proposed directory would change for the proxies actually connected.\n" +
			"\n" +
			"Exit status: 0 no change, 1 changes, 2 errors (an invalid proposed or current\n" +
			"policy, or registry file, is printed as file:line: field: message on stderr; an\n" +
			"admin API that cannot be reached or refuses is an error too).",
		Args: cobra.NoArgs,
		// Errors of any kind, flags included, exit 2: 1 means changes.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.diffStatus(a.loadConfig(cmd))
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.diffStatus(a.diff(cmd.Context()))
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return a.diffStatus(err) })
	f := cmd.Flags()
	addRegistryFlag(f)
	f.String("policy-dir", "", "the current policy directory (required without --admin-addr)")
	f.String("proposed-policy-dir", "", "the proposed policy directory (required)")
	f.StringArray("service", nil, "compare only the sidecars of this service (repeatable)")
	addLocalityFlags(f)
	addAdminFlags(f, "")
	return cmd
}

// diffStatus turns an error into exit status 2, after printing it; the
// exit statuses diff itself returns pass through.
func (a *app) diffStatus(err error) error {
	if _, ok := err.(exitError); ok || err == nil { //nolint:errorlint // diff's own statuses are never wrapped
		return err
	}
	fmt.Fprintln(a.stderr, "sluice diff:", flagError(err))
	return exitError(diffError)
}

func (a *app) diff(ctx context.Context) error {
	v := a.v
	proposed := v.GetString("proposed-policy-dir")
	if proposed == "" {
		return &setting.Error{Field: "--proposed-policy-dir", Reason: "is required"}
	}
	var (
		in    diffInputs
		diags []sources.Diagnostic
		err   error
	)
	if a.isLive() {
		in, err = a.diffLiveInputs(ctx)
	} else {
		in, diags, err = a.diffOfflineInputs()
	}
	if err != nil {
		return err
	}
	propSet, pds := loadPolicy(proposed)
	if printDiagnostics(a.stderr, append(diags, pds...)) > 0 {
		return exitError(diffError)
	}
	catalog, curSet, groups := in.catalog, in.current, in.groups
	tr := translator.New()
	changed := 0
	for _, g := range groups {
		before, err := translateDocs(tr, translator.Input{Catalog: catalog, Policy: curSet, Proxy: g}, nil)
		if err != nil {
			return err
		}
		after, err := translateDocs(tr, translator.Input{Catalog: catalog, Policy: propSet, Proxy: g}, a.stderr)
		if err != nil {
			return err
		}
		if lines := diffResources(before, after); len(lines) > 0 {
			changed++
			fmt.Fprintf(a.stdout, "group %s:\n", g.Key())
			for _, l := range lines {
				fmt.Fprintln(a.stdout, "  "+l)
			}
		}
	}
	if changed == 0 {
		fmt.Fprintf(a.stdout, "no changes in %d groups\n", len(groups))
		if len(groups) == 0 && a.isLive() {
			fmt.Fprintln(a.stderr, "note: no proxy group is built on the running sluice: no xDS client is connected to it (see sluice status)")
		}
		return nil
	}
	fmt.Fprintf(a.stdout, "%d of %d groups change\n", changed, len(groups))
	return exitError(diffChanges)
}

// diffInputs are what diff compares the proposed policy directory
// against: a catalog, the current policy set and the groups.
type diffInputs struct {
	catalog sources.Catalog
	current *policy.Set
	groups  []translator.Proxy
}

// diffOfflineInputs are the catalog of --registry-file, the policy set of
// --policy-dir and the groups diff guesses (see diffGroups), with the
// files' diagnostics.
func (a *app) diffOfflineInputs() (diffInputs, []sources.Diagnostic, error) {
	v := a.v
	current := v.GetString("policy-dir")
	if current == "" {
		return diffInputs{}, nil, &setting.Error{Field: "--policy-dir", Reason: "is required (or --admin-addr)"}
	}
	registries := v.GetStringSlice("registry-file")
	if len(registries) == 0 {
		return diffInputs{}, nil, &setting.Error{Field: "--registry-file", Reason: "is required (or --admin-addr)"}
	}
	loc, err := localityOf(v.GetString("region"), v.GetString("zone"))
	if err != nil {
		return diffInputs{}, nil, err
	}
	catalog, diags := loadCatalog(registries)
	set, pds := loadPolicy(current)
	diags = append(diags, pds...)
	if slices.ContainsFunc(diags, func(d sources.Diagnostic) bool { return d.Severity != sources.SeverityWarning }) {
		return diffInputs{}, diags, nil // diff prints them and stops
	}
	groups, err := diffGroups(catalog, v.GetStringSlice("service"), loc)
	return diffInputs{catalog, set, groups}, diags, err
}

// diffLiveInputs are the running sluice's catalog, the policy set it
// serves and its groups (narrowed by --service).
func (a *app) diffLiveInputs(ctx context.Context) (diffInputs, error) {
	v := a.v
	for _, err := range []error{
		offlineOnly("--registry-file", len(v.GetStringSlice("registry-file")) > 0, "the catalog and the groups"),
		offlineOnly("--policy-dir", v.GetString("policy-dir") != "", "the current policy"),
		offlineOnly("--region", v.GetString("region") != "", "the groups, each with its clients' locality,"),
		offlineOnly("--zone", v.GetString("zone") != "", "the groups, each with its clients' locality,"),
	} {
		if err != nil {
			return diffInputs{}, err
		}
	}
	in, err := a.loadLive(ctx, "diff", true)
	if err != nil {
		return diffInputs{}, err
	}
	groups, err := liveGroups(in.groups, v.GetStringSlice("service"))
	return diffInputs{in.catalog, in.policy, groups}, err
}

// translateDocs translates in, printing the translation's diagnostics on
// diags when it is not nil.
func translateDocs(tr *translator.Translator, in translator.Input, diags io.Writer) ([]resourceDoc, error) {
	res, err := tr.Translate(in)
	if err != nil {
		return nil, err
	}
	if diags != nil {
		for _, d := range res.Diagnostics {
			d.Message += " (group " + in.Proxy.Key() + ", proposed policy)"
			printDiagnostics(diags, []sources.Diagnostic{d})
		}
	}
	return decodeResources(res)
}

// diffGroups are the groups diff compares (see its help): a sidecar per
// service (only services, when given), then a gateway and the gRPC
// clients.
func diffGroups(c sources.Catalog, services []string, loc translator.Locality) ([]translator.Proxy, error) {
	known := serviceNames(c)
	for _, s := range services {
		if !slices.Contains(known, s) {
			return nil, &setting.Error{Field: "--service", Value: s, Reason: "is not a service of the registry files"}
		}
	}
	var groups []translator.Proxy
	for _, svc := range c.Services {
		if len(services) > 0 && !slices.Contains(services, svc.Name) {
			continue
		}
		groups = append(groups, translator.Proxy{
			Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: svc.Name,
			InboundPort: commonPort(svc), Locality: loc,
		})
	}
	if len(services) == 0 {
		groups = append(groups,
			translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleGateway, Service: "gateway", Locality: loc},
			translator.Proxy{Kind: translator.KindGRPC, Locality: loc})
	}
	return groups, nil
}

// commonPort is the port most of svc's instances listen on (the lowest on
// a tie), 0 without instances.
func commonPort(svc sources.CatalogService) uint32 {
	count := map[uint32]int{}
	var best uint32
	for _, e := range svc.Endpoints {
		count[e.Port]++
		if n := count[e.Port]; best == 0 || n > count[best] || (n == count[best] && e.Port < best) {
			best = e.Port
		}
	}
	return best
}

// diffResources lists what changes from before to after, by resource
// kind and name: "+ cluster x" added, "~ cluster x" changed followed by
// its field changes, indented, then "- cluster x" removed. Resources come
// in envoy.Kinds order and by name, and so do the lines of each sort.
func diffResources(before, after []resourceDoc) []string {
	old := map[string]resourceDoc{}
	for _, r := range before {
		old[r.key()] = r
	}
	seen := map[string]bool{}
	var out []string
	for _, r := range after {
		seen[r.key()] = true
		o, ok := old[r.key()]
		if !ok {
			out = append(out, "+ "+r.kind.Noun+" "+r.name)
			continue
		}
		if fields := diffValues("", o.value, r.value, nil); len(fields) > 0 {
			out = append(out, "~ "+r.kind.Noun+" "+r.name)
			for _, f := range fields {
				out = append(out, "    "+f)
			}
		}
	}
	for _, r := range before {
		if !seen[r.key()] {
			out = append(out, "- "+r.kind.Noun+" "+r.name)
		}
	}
	return out
}

// diffValues compares two decoded JSON values and appends a line per
// difference: "path: old → new" for a changed scalar, "+ path: value" and
// "- path: value" for each leaf that appears or goes. Objects compare key
// by key (sorted), lists index by index (an index shows the element's name
// when it has one, and keeps it at both ends).
func diffValues(path string, a, b any, out []string) []string {
	am, aIsMap := a.(map[string]any)
	bm, bIsMap := b.(map[string]any)
	if aIsMap && bIsMap {
		keys := make([]string, 0, len(am)+len(bm))
		for k := range am {
			keys = append(keys, k)
		}
		for k := range bm {
			if _, ok := am[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			av, aok := am[k]
			bv, bok := bm[k]
			p := joinKey(path, k)
			switch {
			case !aok:
				out = leaves("+ ", p, bv, out)
			case !bok:
				out = leaves("- ", p, av, out)
			default:
				out = diffValues(p, av, bv, out)
			}
		}
		return out
	}
	al, aIsList := a.([]any)
	bl, bIsList := b.([]any)
	if aIsList && bIsList {
		for i := range max(len(al), len(bl)) {
			var p string
			switch {
			case i >= len(al):
				p = indexPath(path, i, bl[i])
			case i >= len(bl) || elementName(al[i]) == elementName(bl[i]):
				p = indexPath(path, i, al[i])
			default:
				p = indexPath(path, i, nil)
			}
			switch {
			case i >= len(al):
				out = leaves("+ ", p, bl[i], out)
			case i >= len(bl):
				out = leaves("- ", p, al[i], out)
			default:
				out = diffValues(p, al[i], bl[i], out)
			}
		}
		return out
	}
	if aIsMap || bIsMap || aIsList || bIsList {
		// A value changed shape: out with the old, in with the new.
		return leaves("+ ", path, b, leaves("- ", path, a, out))
	}
	if as, bs := scalar(a), scalar(b); as != bs {
		out = append(out, path+": "+as+" → "+bs)
	}
	return out
}

// leaves appends a line per scalar under v: prefix, its path, its value.
func leaves(prefix, path string, v any, out []string) []string {
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			return append(out, prefix+path+": {}")
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			out = leaves(prefix, joinKey(path, k), v[k], out)
		}
		return out
	case []any:
		if len(v) == 0 {
			return append(out, prefix+path+": []")
		}
		for i, e := range v {
			out = leaves(prefix, indexPath(path, i, e), e, out)
		}
		return out
	}
	return append(out, prefix+path+": "+scalar(v))
}

// indexPath appends a list index to a path, with the name of the element
// when it has one, for readers: routes[2:default/no-retry].
func indexPath(path string, i int, elem any) string {
	if name := elementName(elem); name != "" {
		return path + "[" + strconv.Itoa(i) + ":" + name + "]"
	}
	return path + "[" + strconv.Itoa(i) + "]"
}

// elementName is the "name" field of a list element, "" without one.
func elementName(elem any) string {
	m, _ := elem.(map[string]any)
	name, _ := m["name"].(string)
	return name
}

// joinKey appends an object key to a path: .key, or ["key"] for keys that
// a dot would make ambiguous (filter names such as envoy.filters.http.fault).
func joinKey(path, key string) string {
	if strings.ContainsAny(key, ".[]\" ") || key == "" {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// scalar formats a decoded JSON scalar: numbers and booleans as they are,
// strings quoted, null as null.
func scalar(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	case string:
		return strconv.Quote(v)
	}
	return fmt.Sprint(v)
}
