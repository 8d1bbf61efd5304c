package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluice-mesh/sluice/cmd/internal/loadgen"
	"github.com/sluice-mesh/sluice/sources/etcd"
)

func (a *app) loadCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Simulate many Envoy proxies against an ADS server and measure sync and convergence",
		Long: "Simulate N Envoy-like proxies (SotW or delta ADS; CDS, EDS, LDS, RDS; every response\n" +
			"ACKed) against any ADS server, and report as JSON how long the initial sync took and,\n" +
			"after one endpoint of svc-0000 in a synthetic mesh is removed, how long until every proxy\n" +
			"that can see svc-0000 had it (p50/p99/max). The mesh (svc-0000..., 10.x.y.z:8080) is\n" +
			"written by `sluice load populate`.\n\n" +
			"With --groups G the proxies are sidecars: proxy i fronts service i mod G (node.cluster\n" +
			"svc-NNNN, metadata role=sidecar, inbound_port=" + strconv.Itoa(loadgen.InboundPort) + "), so there are G proxy groups.\n" +
			"With --dependencies D too, service s depends on the D services before it, s-1 ... s-D\n" +
			"modulo --services; the server learns that from the policy files `sluice load populate\n" +
			"--policy-dir` writes. Only sidecars of svc-0001 ... svc-D then see the change; the others\n" +
			"are reported as not affected.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.loadRun(cmd.Context()) },
	}
	f := cmd.Flags()
	f.String("xds-addr", "127.0.0.1:18000", "the ADS server under test")
	f.Int("proxies", 100, "simulated proxies, one connection each")
	f.Bool("delta", false, "use incremental ADS")
	f.Int("services", 1000, "services in the synthetic mesh")
	f.Int("endpoints", 10, "instances per service")
	topologyFlags(f)
	f.String("change", "", "how to make the change: file:PATH (rewrite a registry file), etcd:ENDPOINT (delete a key), http:URL (POST, e.g. to the baseline's /change), or empty for none")
	f.String("server-metrics", "", "the server's Prometheus URL, to report its resident memory per proxy")
	f.String("node-prefix", "load", "node id prefix")
	f.Duration("sync-timeout", 2*time.Minute, "bound on the initial sync")
	f.Duration("change-timeout", time.Minute, "bound on convergence after the change")
	f.Duration("hold", 0, "keep the streams open, idle, this long after the run; streams dropped meanwhile are errors")
	f.String("cpu-profile", "", "write the load generator's own CPU profile to this file (is the simulator, not the server, the bottleneck?)")
	cmd.AddCommand(a.loadPopulateCommand(), a.loadBaselineCommand(), a.loadReportCommand())
	return cmd
}

func topologyFlags(f *pflag.FlagSet) {
	f.Int("groups", 0, "proxy groups: proxy i is a sidecar of service i mod N (0: every proxy in one group, node cluster \"load\")")
	f.Int("dependencies", 0, "with --groups: service s depends on the N services before it, s-1 ... s-N modulo --services, so svc-0000 (the changed one) is a dependency of svc-0001 ... svc-N (0: every service sees the whole mesh)")
}

// topology is the mesh with --groups and --dependencies.
func (a *app) topology() (loadgen.Topology, error) {
	m, err := a.mesh()
	if err != nil {
		return loadgen.Topology{}, err
	}
	t := loadgen.Topology{Mesh: m, Groups: a.v.GetInt("groups"), Dependencies: a.v.GetInt("dependencies")}
	if err := t.Validate(); err != nil {
		return t, fmt.Errorf("--%w", err)
	}
	return t, nil
}

func (a *app) mesh() (loadgen.Mesh, error) {
	m := loadgen.Mesh{Services: a.v.GetInt("services"), Endpoints: a.v.GetInt("endpoints")}
	if m.Services < 1 || m.Services > 62500 {
		return m, fmt.Errorf("--services: %d is not in 1-62500", m.Services)
	}
	if m.Endpoints < 1 || m.Endpoints > 254 {
		return m, fmt.Errorf("--endpoints: %d is not in 1-254", m.Endpoints)
	}
	return m, nil
}

func (a *app) loadRun(ctx context.Context) error {
	t, err := a.topology()
	if err != nil {
		return err
	}
	change, err := a.changeFunc(t.Mesh)
	if err != nil {
		return err
	}
	if path := a.v.GetString("cpu-profile"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := loadgen.Run(ctx, loadgen.Config{
		Target: a.v.GetString("xds-addr"), Proxies: a.v.GetInt("proxies"), Delta: a.v.GetBool("delta"),
		NodePrefix: a.v.GetString("node-prefix"), Topology: t,
		SyncTimeout: a.v.GetDuration("sync-timeout"), ChangeTimeout: a.v.GetDuration("change-timeout"),
		MetricsURL: a.v.GetString("server-metrics"), Hold: a.v.GetDuration("hold"),
	}, change)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		return err
	}
	if len(res.Errors) > 0 {
		return exitError(1)
	}
	return nil
}

func (a *app) changeFunc(m loadgen.Mesh) (func(context.Context) error, error) {
	spec := a.v.GetString("change")
	kind, arg, _ := strings.Cut(spec, ":")
	switch {
	case spec == "":
		return nil, nil
	case kind == "file" && arg != "":
		return func(context.Context) error { return m.WriteRegistryFile(arg, true) }, nil
	case kind == "etcd" && arg != "":
		return func(ctx context.Context) error {
			cli, err := etcd.NewClient(etcd.Config{Endpoints: []string{arg}})
			if err != nil {
				return err
			}
			defer func() { _ = cli.Close() }()
			return m.RemoveFromEtcd(ctx, cli)
		}, nil
	case kind == "http" && arg != "":
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec[len("http:"):], nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("POST %s: %s", arg, resp.Status)
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("--change: %q is not file:PATH, etcd:ENDPOINT or http:URL", spec)
}

func (a *app) loadPopulateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "populate",
		Short: "Write the synthetic mesh into a registry file or an etcd, and its dependencies as policy files",
		Long: "Write the synthetic mesh into a registry file or an etcd (at most one), and with\n" +
			"--policy-dir the dependencies of --groups services (see `sluice load --help` for the rule)\n" +
			"as policy files, DIR/svc-NNNN.yaml, one ServicePolicy each. Give the same --services,\n" +
			"--groups and --dependencies to `sluice load`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := a.topology()
			if err != nil {
				return err
			}
			file, ep, dir := a.v.GetString("registry-file"), a.v.GetString("etcd"), a.v.GetString("policy-dir")
			switch {
			case file != "" && ep != "":
				return errors.New("give at most one of --registry-file and --etcd")
			case file == "" && ep == "" && dir == "":
				return errors.New("give --registry-file, --etcd or --policy-dir")
			case dir != "" && (t.Groups == 0 || t.Dependencies == 0):
				return errors.New("--policy-dir needs --groups and --dependencies")
			}
			if dir != "" {
				if err := t.WritePolicies(dir); err != nil {
					return err
				}
			}
			switch {
			case file != "":
				return t.WriteRegistryFile(file, false)
			case ep != "":
				cli, err := etcd.NewClient(etcd.Config{Endpoints: []string{ep}})
				if err != nil {
					return err
				}
				defer func() { _ = cli.Close() }()
				return t.PopulateEtcd(cmd.Context(), cli)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Int("services", 1000, "services in the synthetic mesh")
	f.Int("endpoints", 10, "instances per service")
	topologyFlags(f)
	f.String("registry-file", "", "write the mesh as this registry file")
	f.String("etcd", "", "write the mesh into the etcd at this endpoint (sluice's default key layout)")
	f.String("policy-dir", "", "write one policy file per group into this directory (created if missing), naming the service's dependencies")
	return cmd
}

func (a *app) loadBaselineCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "baseline",
		Short: "Serve the synthetic mesh from a bare go-control-plane snapshot cache, for comparison",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := a.mesh()
			if err != nil {
				return err
			}
			b := &loadgen.Baseline{Mesh: m, XDSAddr: a.v.GetString("xds-addr"), AdminAddr: a.v.GetString("admin-addr")}
			return b.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.Int("services", 1000, "services in the synthetic mesh")
	f.Int("endpoints", 10, "instances per service")
	f.String("xds-addr", "127.0.0.1:18100", "ADS address")
	f.String("admin-addr", "127.0.0.1:18180", "admin address: GET /metrics, POST /change")
	return cmd
}

func (a *app) loadReportCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "report NAME=RESULT.json...",
		Short: "Print load results as a Markdown table (used by make bench-scale)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			fmt.Fprintln(a.stdout, "| server | ADS | proxies | groups | dependencies | initial sync p50 / p99 / max | proxies affected by the change | change → affected proxies p50 / p99 / max | memory per proxy: resident / live Go heap | errors |")
			fmt.Fprintln(a.stdout, "|---|---|---|---|---|---|---|---|---|---|")
			for _, arg := range args {
				name, path, ok := strings.Cut(arg, "=")
				if !ok {
					return fmt.Errorf("%q is not NAME=FILE", arg)
				}
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				var r loadgen.Result
				if err := json.Unmarshal(data, &r); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				ms := func(s loadgen.Stats) string {
					return fmt.Sprintf("%.0f / %.0f / %.0f ms", s.P50, s.P99, s.Max)
				}
				conv, mem, affected := "–", "–", "–"
				if r.Convergence != nil {
					conv = ms(*r.Convergence)
				}
				if r.Scope != nil {
					affected = fmt.Sprintf("%d of %d", r.Scope.Affected, r.Scope.Affected+r.Scope.NotAffected)
				}
				groups, deps := "1", "all"
				if r.Groups > 0 {
					groups = fmt.Sprint(r.Groups)
				}
				if r.Dependencies > 0 {
					deps = fmt.Sprint(r.Dependencies)
				}
				if r.Memory != nil {
					mem = fmt.Sprintf("%.0f / %.0f KiB", r.Memory.PerProxyKiB, r.Memory.HeapPerProxyKiB)
				}
				fmt.Fprintf(a.stdout, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %d |\n",
					name, r.Mode, r.Proxies, groups, deps, ms(r.InitialSync), affected, conv, mem, len(r.Errors))
			}
			return nil
		},
	}
}
