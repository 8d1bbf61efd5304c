package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/translator"
)

// grpcCaveats says, per field of an explanation, what proxyless gRPC
// clients make of a setting they cannot honour as Envoy does (the table
// "What each kind of client receives" in docs/policies.md). Envoy gets
// every setting.
var grpcCaveats = []struct{ field, note string }{
	{"loadBalancer", "random is sent as round_robin (gRPC NACKs RANDOM); hashOn.sourceIP as channel affinity"},
	{"timeout", "sent as max_stream_duration (the call deadline), and only when a policy sets it: not the built-in 15s"},
	{"circuitBreaker.maxConnections", "gRPC ignores it"},
	{"circuitBreaker.maxPendingRequests", "gRPC ignores it"},
	{"circuitBreaker.maxRetries", "gRPC ignores it"},
	{"outlierDetection.consecutiveErrors", "not sent: gRPC ignores the consecutive forms"},
	{"outlierDetection.errorPercent", "a call failing with any status counts as an error; 0 means no outlier detection for gRPC"},
	{"healthyPanicThreshold", "not sent: gRPC has no panic mode"},
	{"slowStart", "not sent: gRPC has no slow start"},
	{"healthCheck", "not sent: gRPC clients run no active checks"},
	{"locality", "failover: gRPC moves to the next priority only when no instance of the current one can take calls"},
	{"retry.perTryTimeout", "gRPC ignores it"},
	{"retry.retryOn", "gRPC gets the gRPC statuses only (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)"},
	{"retry.retriableStatusCodes", "gRPC ignores it (HTTP statuses)"},
	{"retry.idempotencyHeader", "gRPC calls are POSTs: every route a POST can match gets the gRPC retries"},
	{"retry.retryBudget", "not available to gRPC"},
	{"rateLimit", "not sent: gRPC cannot enforce it"},
	{"tracing", "not sent"},
	{"tracing.samplingPercent", "not sent"},
	{"mirror", "not sent: gRPC has no mirroring"},
	{"match", "gRPC paths are /package.Service/Method; routes with queryParams, or only for methods other than POST, are left out"},
}

func grpcCaveat(field string) string {
	for _, c := range grpcCaveats {
		if c.field == field {
			return c.note
		}
	}
	return ""
}

func (a *app) explainCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "explain SERVICE (--registry-file F --policy-dir D | --admin-addr HOST:PORT) [--route PATH] [--client envoy|grpc]",
		Short: "Show each effective policy setting of a service and where it came from, offline or in a running sluice",
		Long: "Resolve the policy directory for SERVICE, as sluice serve does, and print each\n" +
			"effective setting with its source: the ServicePolicy or MeshPolicy line that set\n" +
			"it, a route's own, or the built-in default; and, unless --client envoy, what\n" +
			"proxyless gRPC clients make of the settings they cannot honour as Envoy does.\n" +
			"With --route PATH, the route a request to PATH takes (the first whose path or\n" +
			"prefix matches, most specific first; method, header and query matches are not\n" +
			"considered) and its effective settings. Invalid policies print file:line: field:\n" +
			"message on stderr and exit 2.\n" +
			"\n" +
			"With --admin-addr (and --admin-token-file, as sluice status), the policy set a\n" +
			"running sluice serves now and its catalog instead, from its admin API; sources\n" +
			"are its files' paths on its host. Exit status 2 when it cannot be reached.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.explain(cmd.Context(), args[0])
		},
	}
	f := cmd.Flags()
	addRegistryFlag(f)
	f.String("policy-dir", "", "the policy directory (default: none, built-in defaults)")
	f.String("route", "", "explain the route a request to this path takes")
	f.String("client", "", "the kind of client: envoy or grpc (default: both)")
	addAdminFlags(f, "")
	return cmd
}

func (a *app) explain(ctx context.Context, service string) error {
	v := a.v
	client := v.GetString("client")
	if client != "" && client != string(translator.KindEnvoy) && client != string(translator.KindGRPC) {
		return &setting.Error{Field: "--client", Value: client, Reason: "must be one of envoy, grpc"}
	}
	var (
		catalog sources.Catalog
		set     *policy.Set
		diags   []sources.Diagnostic
		where   = "the registry files"
	)
	if a.isLive() {
		for _, err := range []error{
			offlineOnly("--registry-file", len(v.GetStringSlice("registry-file")) > 0, "the catalog"),
			offlineOnly("--policy-dir", v.GetString("policy-dir") != "", "the policies"),
		} {
			if err != nil {
				return err
			}
		}
		in, err := a.loadLive(ctx, "explain", false)
		if err != nil {
			return err
		}
		catalog, set, where = in.catalog, in.policy, "the running sluice's catalog"
	} else {
		var pds []sources.Diagnostic
		catalog, diags = loadCatalog(v.GetStringSlice("registry-file"))
		set, pds = loadPolicy(v.GetString("policy-dir"))
		diags = append(diags, pds...)
	}
	if len(diags) == 0 && (a.isLive() || len(v.GetStringSlice("registry-file")) > 0) && !slices.Contains(serviceNames(catalog), service) {
		diags = append(diags, sources.Diagnostic{Severity: sources.SeverityWarning, Location: service,
			Message: "is not a service of " + where + ": no proxy gets this policy until it appears"})
	}
	if printDiagnostics(a.stderr, diags) > 0 {
		return exitError(2)
	}
	r := set.Resolve(service)
	origins := "none (built-in defaults)"
	if len(r.Origins) > 0 {
		origins = strings.Join(r.Origins, ", ")
	}
	fmt.Fprintf(a.stdout, "service %s, policies: %s\n", service, origins)
	withGRPC := client != string(translator.KindEnvoy)
	if path := v.GetString("route"); path != "" {
		a.explainPath(set, r, path, client == string(translator.KindGRPC), withGRPC)
		return nil
	}
	fmt.Fprintln(a.stdout)
	a.explainTable(set.Explain(service), withGRPC)
	fmt.Fprintln(a.stdout)
	fmt.Fprintln(a.stdout, "routes, most specific first (a request takes the first that matches; explain one with --route PATH):")
	var rows [][]string
	for _, rr := range r.Routes {
		rows = append(rows, []string{"  " + rr.Name, rr.Match.String(), rr.Origin})
	}
	writeTable(a.stdout, append(rows, []string{"  default", "every other request", "the service's settings above"}))
	return nil
}

// explainPath explains the route a request to path takes.
func (a *app) explainPath(set *policy.Set, r policy.Resolved, path string, grpcOnly, withGRPC bool) {
	route, notes := routeFor(r.Routes, path, grpcOnly)
	for _, n := range notes {
		fmt.Fprintln(a.stdout, "note: "+n)
	}
	if route == nil {
		fmt.Fprintf(a.stdout, "a request to %s matches no policy route: it takes the catch-all route (default), with the service's settings\n\n", path)
		a.explainTable(set.Explain(r.Service), withGRPC)
		return
	}
	fmt.Fprintf(a.stdout, "a request to %s takes route %s (%s, %s)\n\n", path, route.Name, route.Match, route.Origin)
	ps, _ := set.ExplainRoute(r.Service, route.Name)
	a.explainTable(ps, withGRPC)
}

// routeFor is the first route (most specific first, as they are served)
// whose path matches: exact, or by prefix. Method, header and query
// matches are not considered; notes say where that matters. grpcOnly
// skips the routes gRPC clients do not get.
func routeFor(routes []policy.ResolvedRoute, path string, grpcOnly bool) (*policy.ResolvedRoute, []string) {
	var notes []string
	for i := range routes {
		rr := &routes[i]
		m := rr.Match
		if m.Path != "" && m.Path != path || m.Path == "" && !strings.HasPrefix(path, m.PathPrefix) {
			continue
		}
		if grpcOnly && (len(m.QueryParams) > 0 || len(m.Methods) > 0 && !slices.Contains(m.Methods, "POST")) {
			notes = append(notes, fmt.Sprintf("%s (%s) is left out for gRPC clients", rr.Name, m))
			continue
		}
		if len(m.Methods) > 0 || len(m.Headers) > 0 || len(m.QueryParams) > 0 {
			notes = append(notes, fmt.Sprintf("%s also matches on methods, headers or query parameters (%s), which explain does not consider: a request that does not match them takes the next route", rr.Name, m))
		}
		return rr, notes
	}
	return nil, notes
}

// explainTable prints provenances as a table: FIELD, VALUE, SOURCE and,
// with gRPC, what gRPC clients receive.
func (a *app) explainTable(ps []policy.Provenance, withGRPC bool) {
	var rows [][]string
	header := []string{"FIELD", "VALUE", "SOURCE"}
	if withGRPC {
		header = append(header, "PROXYLESS gRPC")
	}
	rows = append(rows, header)
	for _, p := range ps {
		source := p.Source()
		if p.Note != "" {
			source += " (" + p.Note + ")"
		}
		row := []string{p.Field, p.Value, source}
		if withGRPC {
			row = append(row, grpcCaveat(p.Field))
		}
		rows = append(rows, row)
	}
	writeTable(a.stdout, rows)
}

// writeTable writes rows in aligned columns two spaces apart, without
// trailing spaces.
func writeTable(w io.Writer, rows [][]string) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	_ = tw.Flush() // to a strings.Builder: cannot fail
	for _, line := range strings.SplitAfter(b.String(), "\n") {
		if line != "" {
			fmt.Fprintln(w, strings.TrimRight(line, " \n"))
		}
	}
}
