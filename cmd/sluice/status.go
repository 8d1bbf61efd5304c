package main

// `sluice status`: what each xDS client connected to a running sluice was
// sent and acknowledged, read from its admin API (GET /debug/status), in
// the manner of istioctl proxy-status.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluice-mesh/sluice/cmd/internal/admin"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/xds"
)

// adminTimeout bounds a request to the admin API, connecting included.
const adminTimeout = 5 * time.Second

// exitAdminUnavailable is the exit status when the admin API cannot be
// reached, refuses the request or answers something unexpected.
const exitAdminUnavailable = exitError(2)

// The sync states of a type of a client (see syncState).
const (
	stateSynced  = "SYNCED"
	stateStale   = "STALE"
	stateNacked  = "NACKED"
	stateNotSent = "NOT SENT"
)

func (a *app) statusCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [NODE_ID]",
		Short: "Show what each connected xDS client was sent and acknowledged, or one client's detail",
		Long: `Ask a running sluice's admin API (GET /debug/status) for its connected xDS
clients: one line each, by group and node id, with the state of each type:

  SYNCED       the client acknowledged the version last sent
  STALE (12s)  a version was sent this long ago and not acknowledged yet
  NACKED       the client rejected the version last sent
  NOT SENT     nothing of the type was sent (the client did not ask for it,
               or its first response is still being built)

With NODE_ID, that client's detail: identity, locality, dependencies, per type
the versions sent and acknowledged and the last NACK, and which resources the
last response changes of what the client acknowledged.

The /debug/ views are served on a loopback admin address, or to a bearer
token (serve's --admin-token-file): pass the same file here.

Exit status: 0 when the status was shown, whatever the clients' states; 1 on
bad flags or an unknown NODE_ID; 2 when the admin API cannot be reached or
refuses the request.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := ""
			if len(args) == 1 {
				node = args[0]
			}
			return a.status(cmd.Context(), node)
		},
	}
	f := cmd.Flags()
	addAdminFlags(f, defaultAdminAddr)
	f.StringP("output", "o", "text", "output format: text, or json (the admin API's answer as is)")
	return cmd
}

func (a *app) status(ctx context.Context, node string) error {
	output := a.v.GetString("output")
	addr, token, err := a.adminTarget()
	if err != nil {
		return err
	}
	if output != "text" && output != "json" {
		return &setting.Error{Field: "--output", Value: output, Reason: "must be one of text, json"}
	}
	var query url.Values
	if node != "" {
		query = url.Values{"node": {node}}
	}
	body, err := fetchAdmin(ctx, addr, token, "/debug/status", query)
	var nf notFoundError
	switch {
	case errors.As(err, &nf):
		return nf
	case err != nil:
		fmt.Fprintf(a.stderr, "sluice status: %v\n", err)
		return exitAdminUnavailable
	}
	if output == "json" {
		_, err := a.stdout.Write(body)
		return err
	}
	var st admin.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(a.stderr, "sluice status: the admin API at %s answered something else than a status: %v\n", addr, err)
		return exitAdminUnavailable
	}
	writeRollback(a.stdout, st.Rollback, time.Now())
	if node != "" {
		return writeStatusDetail(a.stdout, st, time.Now())
	}
	if len(st.Proxies) == 0 {
		fmt.Fprintf(a.stderr, "No xDS clients are connected to %s (%s).\n", st.Replica, addr)
		return nil
	}
	return writeStatusTable(a.stdout, st, time.Now())
}

// notFoundError is the admin API's answer for a node id no connected
// client has.
type notFoundError string

func (e notFoundError) Error() string { return string(e) }

// addAdminFlags adds --admin-addr (defaulting to addr) and
// --admin-token-file, which name the admin API of a running sluice.
func addAdminFlags(f *pflag.FlagSet, addr string) {
	f.String("admin-addr", addr, "host:port of the admin API of the sluice to ask (its serve --admin-addr)")
	f.String("admin-token-file", "", "file holding the bearer token the admin API's /debug/ views require (serve's --admin-token-file)")
}

// adminTarget reads --admin-addr, checked, and the token of
// --admin-token-file ("" without one).
func (a *app) adminTarget() (addr, token string, err error) {
	addr = a.v.GetString("admin-addr")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", &setting.Error{Field: "--admin-addr", Value: addr, Reason: "must be host:port", Err: err}
	}
	if path := a.v.GetString("admin-token-file"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", "", &setting.Error{Field: "--admin-token-file", Value: path, Reason: "cannot be read", Err: err}
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return "", "", &setting.Error{Field: "--admin-token-file", Value: path, Reason: "holds no token"}
		}
	}
	return addr, token, nil
}

// fetchAdmin gets path (with query, when not nil) from the admin API at
// addr, within adminTimeout. Its errors name the address and say what to
// do; a 404 with an error message in its body is a notFoundError.
func fetchAdmin(ctx context.Context, addr, token, path string, query url.Values) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	u := url.URL{Scheme: "http", Host: addr, Path: path}
	if query != nil {
		u.RawQuery = query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin API at %s (is sluice serving there? see --admin-addr): %w", addr, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the admin API's answer at %s: %w", addr, err)
	}
	msg := strings.TrimSpace(string(body))
	switch resp.StatusCode {
	case http.StatusOK:
		return body, nil
	case http.StatusUnauthorized:
		return nil, fmt.Errorf("the admin API at %s wants a bearer token: pass --admin-token-file (or SLUICE_ADMIN_TOKEN_FILE) with the file of sluice's --admin-token-file (%s)", addr, msg)
	case http.StatusForbidden:
		return nil, fmt.Errorf("the admin API at %s refuses its /debug/ views (%s)", addr, msg)
	case http.StatusNotFound:
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, notFoundError(e.Error)
		}
		return nil, fmt.Errorf("the admin API at %s has no %s: is it an older sluice?", addr, path)
	default:
		return nil, fmt.Errorf("the admin API at %s answered %s: %s", addr, resp.Status, msg)
	}
}

// statusType is a type of the table: its short name and type URL.
type statusType struct{ short, url string }

// statusTypes are the table's types, in the order sluice pushes them.
func statusTypes() []statusType {
	return []statusType{{"CDS", resource.ClusterType}, {"EDS", resource.EndpointType}, {"LDS", resource.ListenerType}, {"RDS", resource.RouteType}}
}

// shortTypeName is CDS, EDS, LDS or RDS, or the last part of another type
// URL.
func shortTypeName(url string) string {
	for _, t := range statusTypes() {
		if t.url == url {
			return t.short
		}
	}
	return url[strings.LastIndex(url, ".")+1:]
}

// syncState is the state of one type of a client: NOT SENT before the
// first response; NACKED when the client's last NACK rejects the version
// last sent (and came after its last ACK); SYNCED when it acknowledged
// the version last sent; STALE (age since sent) otherwise.
func syncState(ts xds.TypeStatus, now time.Time) string {
	switch {
	case ts.Sent == "":
		return stateNotSent
	case ts.LastNack != nil && ts.LastNack.Version == ts.Sent && !ts.LastNack.At.Before(ts.AckedAt):
		return stateNacked
	case ts.Acked == ts.Sent:
		return stateSynced
	default:
		return fmt.Sprintf("%s (%s)", stateStale, age(now, ts.SentAt))
	}
}

// age is how long before now t was, to the second, in at most two units.
func age(now, t time.Time) string {
	d := max(now.Sub(t), 0).Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

func protocolName(delta bool) string {
	if delta {
		return "delta"
	}
	return "sotw"
}

// writeStatusTable writes one line per stream, by group, node id and
// stream, as an aligned table.
func writeStatusTable(w io.Writer, st admin.Status, now time.Time) error {
	ps := slices.Clone(st.Proxies)
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.NodeID != b.NodeID {
			return a.NodeID < b.NodeID
		}
		return a.Stream < b.Stream
	})
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	header := []string{"NODE", "GROUP", "KIND", "PROTOCOL"}
	for _, t := range statusTypes() {
		header = append(header, t.short)
	}
	fmt.Fprintln(tw, strings.Join(append(header, "REPLICA"), "\t"))
	for _, p := range ps {
		row := []string{p.NodeID, p.Group, string(p.Proxy.Kind), protocolName(p.Delta)}
		for _, t := range statusTypes() {
			row = append(row, syncState(p.Types[t.url], now))
		}
		fmt.Fprintln(tw, strings.Join(append(row, st.Replica), "\t"))
	}
	return tw.Flush()
}

// writeStatusDetail writes each stream of a node: its identity, its
// group's dependencies, per type what was sent, acknowledged and rejected,
// and what the last response changes of what the client acknowledged.
func writeStatusDetail(w io.Writer, st admin.Status, now time.Time) error {
	var b bytes.Buffer
	for i, p := range st.Proxies {
		if i > 0 {
			b.WriteString("\n")
		}
		writeStreamDetail(&b, p, st, now)
	}
	_, err := w.Write(b.Bytes())
	return err
}

func writeStreamDetail(b *bytes.Buffer, p xds.ProxyStatus, st admin.Status, now time.Time) {
	tw := tabwriter.NewWriter(b, 0, 8, 2, ' ', 0)
	field := func(name, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t%s\n", name, fmt.Sprintf(format, args...))
	}
	field("Node", "%s", p.NodeID)
	field("Stream", "%d", p.Stream)
	field("Group", "%s", p.Group)
	kind := string(p.Proxy.Kind)
	if p.UserAgent != "" {
		kind += " (user agent " + p.UserAgent + ")"
	}
	field("Kind", "%s", kind)
	field("Protocol", "%s", protocolName(p.Delta))
	if p.Proxy.Locality.Known() {
		source := ""
		switch p.LocalitySource {
		case "node":
			source = " (from the node)"
		case "registry":
			source = " (from the registry instance at the client's address)"
		}
		field("Locality", "region %q, zone %q%s", p.Proxy.Locality.Region, p.Proxy.Locality.Zone, source)
	} else {
		field("Locality", "unknown")
	}
	field("Connected", "%s (%s ago)", p.Connected.UTC().Format(time.RFC3339), age(now, p.Connected))
	field("Replica", "%s", st.Replica)
	var group *struct {
		deps     policy.Dependencies
		missing  []string
		current  map[string]string
		lastNack *snapshot.NackReport
	}
	for _, g := range st.Groups {
		if g.Key == p.Group {
			group = &struct {
				deps     policy.Dependencies
				missing  []string
				current  map[string]string
				lastNack *snapshot.NackReport
			}{g.Dependencies, g.Missing, g.Versions, g.LastNack}
		}
	}
	if group == nil {
		field("Dependencies", "unknown (the group has no snapshot yet)")
	} else {
		field("Dependencies", "%s", dependencies(group.deps))
		if len(group.missing) > 0 {
			field("Missing", "%s (not in the catalog)", strings.Join(group.missing, ", "))
		}
	}
	_ = tw.Flush()

	b.WriteString("\n")
	tw = tabwriter.NewWriter(b, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tSTATE\tSENT\tACKED\tRESOURCES\tPUSHES")
	urls := typeURLs(p)
	for _, url := range urls {
		ts := p.Types[url]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", shortTypeName(url), syncState(ts, now),
			versionAge(ts.Sent, ts.SentAt, now), versionAge(ts.Acked, ts.AckedAt, now), ts.Resources, ts.Pushes)
	}
	_ = tw.Flush()

	var nacks, changes []string
	for _, url := range urls {
		ts := p.Types[url]
		if n := ts.LastNack; n != nil {
			nacks = append(nacks, fmt.Sprintf("  %s version %s, %s (%s ago): %s", shortTypeName(url), n.Version, n.At.UTC().Format(time.RFC3339), age(now, n.At), n.Error))
			if len(n.Resources) > 0 {
				nacks = append(nacks, "    resources: "+listed(n.Resources, n.ResourcesTotal))
			}
		}
		if c := ts.Changes; c != nil {
			var current string
			if group != nil {
				current = group.current[url]
			}
			changes = append(changes, "  "+shortTypeName(url)+" "+describeChanges(*c, current))
		}
	}
	if len(nacks) > 0 {
		b.WriteString("\nLast NACK:\n" + strings.Join(nacks, "\n") + "\n")
	}
	if group != nil && group.lastNack != nil {
		writeNackOrigins(b, *group.lastNack, p.NodeID, now)
	}
	if len(changes) > 0 {
		b.WriteString("\nSent, not acknowledged (the last response against what the client acknowledged):\n" + strings.Join(changes, "\n") + "\n")
	}
}

// writeNackOrigins writes where the resources of the group's last NACK
// came from (the admin API works them out from the group's inputs).
func writeNackOrigins(b *bytes.Buffer, n snapshot.NackReport, node string, now time.Time) {
	who := ""
	if n.Node != node {
		who = " by " + n.Node
	}
	fmt.Fprintf(b, "\nThe group's last NACK%s (%s version %s, %s ago), from:\n", who, n.Type, n.Version, age(now, n.At))
	if len(n.Origins) == 0 {
		b.WriteString("  unknown (the client's error names no resource sluice can place)\n")
	}
	for _, o := range n.Origins {
		b.WriteString("  " + o.Summary + "\n")
	}
	if n.LaterInputs {
		b.WriteString("  (as the group was built since: its inputs changed after the rejected version)\n")
	}
}

// listed is names, with how many more there are of total.
func listed(names []string, total int) string {
	s := strings.Join(names, ", ")
	if total > len(names) {
		s += fmt.Sprintf(" and %d more", total-len(names))
	}
	return s
}

// typeURLs are the types of a stream: the table's four, then any other
// the client asked for, by URL.
func typeURLs(p xds.ProxyStatus) []string {
	var out, other []string
	for _, t := range statusTypes() {
		out = append(out, t.url)
	}
	for url := range p.Types {
		if !slices.Contains(out, url) {
			other = append(other, url)
		}
	}
	sort.Strings(other)
	return append(out, other...)
}

func versionAge(version string, at, now time.Time) string {
	if version == "" {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", version, age(now, at))
}

func dependencies(d policy.Dependencies) string {
	var s string
	switch {
	case d.All:
		s = "every service"
	case len(d.Services) == 0:
		s = "none"
	default:
		s = strings.Join(d.Services, ", ")
	}
	if d.Origin != "" {
		return s + " (" + d.Origin + ")"
	}
	return s + " (the built-in default)"
}

// maxListedNames bounds the names describeChanges lists of each kind.
const maxListedNames = 10

// describeChanges says what a type's last response changes of what the
// client acknowledged, or that the tracker did not keep it. current is
// the group's current version of the type ("" if unknown).
func describeChanges(c xds.Changes, current string) string {
	acked := c.Acked
	if acked == "" {
		acked = "nothing"
	}
	head := fmt.Sprintf("acked %s, sent %s", acked, c.Sent)
	if current != "" && current != c.Sent {
		head += ", current " + current
	}
	if !c.Retained {
		if c.Acked == "" {
			return head + ": nothing acknowledged on this stream yet"
		}
		return head + ": resources not retained"
	}
	var parts []string
	for _, l := range []struct {
		what  string
		names []string
	}{{"changed", c.Changed}, {"added", c.Added}, {"removed", c.Removed}} {
		if len(l.names) == 0 {
			continue
		}
		names := strings.Join(l.names[:min(len(l.names), maxListedNames)], ", ")
		if n := len(l.names) - maxListedNames; n > 0 {
			names += fmt.Sprintf(" and %d more", n)
		}
		parts = append(parts, l.what+" "+names)
	}
	if len(parts) == 0 {
		return head + ": no resource differs"
	}
	return head + ": " + strings.Join(parts, "; ")
}

// writeRollback says, above the clients, that a policy rollback is in
// effect: which documents were refused and why.
func writeRollback(w io.Writer, rb *snapshot.RollbackStatus, now time.Time) {
	if rb == nil {
		return
	}
	fmt.Fprintf(w, "POLICY ROLLED BACK %s ago: %s rejected %s (%s): %s\n", age(now, rb.Since), rb.Node, shortTypeName(rb.Type), rb.Version, rb.Error)
	for _, d := range rb.RefusedDocuments {
		fmt.Fprintf(w, "  refused %s\n", d)
	}
	fmt.Fprintf(w, "  serving %s until the policy files change\n\n", strings.Join(rb.Serving, ", "))
}
