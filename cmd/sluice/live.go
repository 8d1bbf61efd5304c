package main

// The offline commands (translate, diff, explain) against a running
// sluice: with --admin-addr, the merged catalog, the policy set served and
// the proxy groups come from its admin API (/debug/catalog, /debug/policy,
// /debug/snapshots) instead of registry files and a policy directory.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluice-mesh/sluice/cmd/internal/admin"
	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/snapshot"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/translator"
)

// liveInputs are what a running sluice translates now.
type liveInputs struct {
	addr    string
	catalog sources.Catalog
	// policy is the set served (nil: the built-in defaults); its file
	// names are the paths on the sluice's host.
	policy *policy.Set
	// groups are the proxy groups the loop builds, by key; nil unless
	// asked for.
	groups []snapshot.GroupStatus
}

// isLive reports whether the command runs against a running sluice
// (--admin-addr given).
func (a *app) isLive() bool { return a.v.GetString("admin-addr") != "" }

// offlineOnly refuses a flag given alongside --admin-addr, whose sluice
// supplies what the flag would.
func offlineOnly(flag string, given bool, what string) error {
	if !given {
		return nil
	}
	return &setting.Error{Field: flag, Reason: "does not go with --admin-addr: " + what + " come from the running sluice"}
}

// loadLive reads the running sluice's catalog and policy set, and its
// groups when withGroups, from the admin API that --admin-addr and
// --admin-token-file name. It prints what goes wrong on stderr, prefixed
// with the command's name, and returns exit status 2 then; a rollback in
// effect is noted on stderr, since the policy compared against is then
// not the newest files.
func (a *app) loadLive(ctx context.Context, command string, withGroups bool) (*liveInputs, error) {
	addr, token, err := a.adminTarget()
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*liveInputs, error) {
		fmt.Fprintf(a.stderr, "sluice %s: %v\n", command, err)
		return nil, exitAdminUnavailable
	}
	in := &liveInputs{addr: addr}
	var cat struct {
		Catalog sources.Catalog `json:"catalog"`
	}
	if err := getAdminJSON(ctx, addr, token, "/debug/catalog", "a catalog", &cat); err != nil {
		return fail(err)
	}
	in.catalog = cat.Catalog
	var pol admin.Policy
	if err := getAdminJSON(ctx, addr, token, "/debug/policy", "a policy set", &pol); err != nil {
		return fail(err)
	}
	if len(pol.Files) > 0 {
		files := make([]policy.File, len(pol.Files))
		for i, f := range pol.Files {
			files[i] = policy.File{Name: f.Name, Data: []byte(f.Content)}
		}
		set, diags := policy.Load(files)
		if set == nil {
			// The server loaded these: this binary reads policies
			// differently (another version).
			printDiagnostics(a.stderr, diags)
			fmt.Fprintf(a.stderr, "sluice %s: the policy set the sluice at %s serves does not load here: is this sluice another version?\n", command, addr)
			return nil, exitError(2)
		}
		in.policy = set
	}
	if rb := pol.Rollback; rb != nil {
		fmt.Fprintf(a.stderr, "note: the sluice at %s rolled its policy back %s ago (%s rejected %s %s): the current policy is the set it serves instead, %s\n",
			addr, age(time.Now(), rb.Since), rb.Node, shortTypeName(rb.Type), rb.Version, strings.Join(rb.Serving, ", "))
	}
	if withGroups {
		var st snapshot.Status
		if err := getAdminJSON(ctx, addr, token, "/debug/snapshots", "the snapshots' status", &st); err != nil {
			return fail(err)
		}
		in.groups = st.Groups
	}
	return in, nil
}

// getAdminJSON gets path from the admin API and decodes its JSON into v;
// what names the answer expected, for the error when it is something else.
func getAdminJSON(ctx context.Context, addr, token, path, what string, v any) error {
	body, err := fetchAdmin(ctx, addr, token, path, nil)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("the admin API at %s answered %s with something else than %s: %w", addr, path, what, err)
	}
	return nil
}

// liveGroups are the proxies of the running groups, by key; with
// services, only those services' Envoys. A service without a running
// group is an error.
func liveGroups(gs []snapshot.GroupStatus, services []string) ([]translator.Proxy, error) {
	var out []translator.Proxy
	for _, g := range gs {
		if len(services) == 0 || g.Proxy.Kind == translator.KindEnvoy && slices.Contains(services, g.Proxy.Service) {
			out = append(out, g.Proxy)
		}
	}
	for _, s := range services {
		if !slices.ContainsFunc(out, func(p translator.Proxy) bool { return p.Service == s }) {
			return nil, &setting.Error{Field: "--service", Value: s, Reason: "has no Envoy connected to the running sluice (see sluice status)"}
		}
	}
	return out, nil
}

// liveGroup is the running group whose key is key.
func liveGroup(gs []snapshot.GroupStatus, key string) (translator.Proxy, error) {
	keys := make([]string, 0, len(gs))
	for _, g := range gs {
		if g.Key == key {
			return g.Proxy, nil
		}
		keys = append(keys, g.Key)
	}
	known := "none"
	if len(keys) > 0 {
		known = strings.Join(keys, ", ")
	}
	return translator.Proxy{}, &setting.Error{Field: "--group", Value: key, Reason: "is not a group of the running sluice (its groups: " + known + ")"}
}
