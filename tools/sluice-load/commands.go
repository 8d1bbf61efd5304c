package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluice-mesh/sluice/sources/etcd"
	"github.com/sluice-mesh/sluice/tools/sluice-load/internal/loadgen"
)

func populateCommand() *cobra.Command {
	var m meshFlags
	var file, ep, dir string
	cmd := &cobra.Command{
		Use:   "populate",
		Short: "Write the synthetic mesh into a registry file or an etcd, and its dependencies as policy files",
		Long: "Write the synthetic mesh into a registry file or an etcd (at most one), and with\n" +
			"--policy-dir the dependencies of --groups services (see `sluice-load --help` for the rule)\n" +
			"as policy files, DIR/svc-NNNN.yaml, one ServicePolicy each. Give the same --services,\n" +
			"--groups and --dependencies to `sluice-load`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := m.topology()
			if err != nil {
				return err
			}
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
	m.register(f, true)
	f.StringVar(&file, "registry-file", "", "write the mesh as this registry file")
	f.StringVar(&ep, "etcd", "", "write the mesh into the etcd at this endpoint (sluice's default key layout)")
	f.StringVar(&dir, "policy-dir", "", "write one policy file per group into this directory (created if missing), naming the service's dependencies")
	return cmd
}

func baselineCommand() *cobra.Command {
	var m meshFlags
	var xdsAddr, adminAddr string
	cmd := &cobra.Command{
		Use:   "baseline",
		Short: "Serve the synthetic mesh from a bare go-control-plane snapshot cache, for comparison",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mesh, err := m.mesh()
			if err != nil {
				return err
			}
			b := &loadgen.Baseline{Mesh: mesh, XDSAddr: xdsAddr, AdminAddr: adminAddr}
			return b.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	m.register(f, false)
	f.StringVar(&xdsAddr, "xds-addr", "127.0.0.1:18100", "ADS address")
	f.StringVar(&adminAddr, "admin-addr", "127.0.0.1:18180", "admin address: GET /metrics, POST /change")
	return cmd
}

func reportCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "report NAME=RESULT.json...",
		Short: "Print load results as a Markdown table (used by make bench-scale)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return report(stdout, args)
		},
	}
}

// report prints the results named NAME=FILE as a Markdown table, one row
// each.
func report(w io.Writer, args []string) error {
	fmt.Fprintln(w, "| server | ADS | proxies | groups | dependencies | initial sync p50 / p99 / max | proxies affected by the change | change → affected proxies p50 / p99 / max | memory per proxy: resident / live Go heap | errors |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
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
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %d |\n",
			name, r.Mode, r.Proxies, groups, deps, ms(r.InitialSync), affected, conv, mem, len(r.Errors))
	}
	return nil
}
