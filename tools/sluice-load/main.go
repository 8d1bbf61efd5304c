// Command sluice-load is sluice's load generator, a development tool kept out
// of the sluice binary operators deploy. It simulates many Envoy proxies
// against any ADS server and measures sync and convergence (the command
// itself), writes the synthetic mesh it uses into a registry file, an etcd
// or policy files (populate), serves that mesh from a bare go-control-plane
// server for comparison (baseline), and prints results as a Markdown table
// (report). make bench-scale (tools/bench-scale.sh) drives it.
//
//	go build -o bin/sluice-load ./tools/sluice-load
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluice-mesh/sluice/sources/etcd"
	"github.com/sluice-mesh/sluice/tools/sluice-load/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "sluice-load:", err)
		os.Exit(1)
	}
}

// exitError carries an exit code after the output has been printed (a run
// whose result lists errors exits 1).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// meshFlags are the flags that describe the synthetic mesh.
type meshFlags struct {
	services, endpoints, groups, dependencies int
}

func (m *meshFlags) register(f *pflag.FlagSet, topology bool) {
	f.IntVar(&m.services, "services", 1000, "services in the synthetic mesh")
	f.IntVar(&m.endpoints, "endpoints", 10, "instances per service")
	if topology {
		f.IntVar(&m.groups, "groups", 0, "proxy groups: proxy i is a sidecar of service i mod N (0: every proxy in one group, node cluster \"load\")")
		f.IntVar(&m.dependencies, "dependencies", 0, "with --groups: service s depends on the N services before it, s-1 ... s-N modulo --services, so svc-0000 (the changed one) is a dependency of svc-0001 ... svc-N (0: every service sees the whole mesh)")
	}
}

func (m *meshFlags) mesh() (loadgen.Mesh, error) {
	mesh := loadgen.Mesh{Services: m.services, Endpoints: m.endpoints}
	if mesh.Services < 1 || mesh.Services > 62500 {
		return mesh, fmt.Errorf("--services: %d is not in 1-62500", mesh.Services)
	}
	if mesh.Endpoints < 1 || mesh.Endpoints > 254 {
		return mesh, fmt.Errorf("--endpoints: %d is not in 1-254", mesh.Endpoints)
	}
	return mesh, nil
}

// topology is the mesh with --groups and --dependencies.
func (m *meshFlags) topology() (loadgen.Topology, error) {
	mesh, err := m.mesh()
	if err != nil {
		return loadgen.Topology{}, err
	}
	t := loadgen.Topology{Mesh: mesh, Groups: m.groups, Dependencies: m.dependencies}
	if err := t.Validate(); err != nil {
		return t, fmt.Errorf("--%w", err)
	}
	return t, nil
}

// runFlags are the flags of a load run.
type runFlags struct {
	meshFlags
	xdsAddr, change, serverMetrics, nodePrefix, cpuProfile string
	proxies                                                int
	delta                                                  bool
	syncTimeout, changeTimeout, hold                       time.Duration
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	var o runFlags
	cmd := &cobra.Command{
		Use:   "sluice-load",
		Short: "Simulate many Envoy proxies against an ADS server and measure sync and convergence",
		Long: "Simulate N Envoy-like proxies (SotW or delta ADS; CDS, EDS, LDS, RDS; every response\n" +
			"ACKed) against any ADS server, and report as JSON how long the initial sync took and,\n" +
			"after one endpoint of svc-0000 in a synthetic mesh is removed, how long until every proxy\n" +
			"that can see svc-0000 had it (p50/p99/max). The mesh (svc-0000..., 10.x.y.z:8080) is\n" +
			"written by `sluice-load populate`.\n\n" +
			"With --groups G the proxies are sidecars: proxy i fronts service i mod G (node.cluster\n" +
			"svc-NNNN, metadata role=sidecar, inbound_port=" + strconv.Itoa(loadgen.InboundPort) + "), so there are G proxy groups.\n" +
			"With --dependencies D too, service s depends on the D services before it, s-1 ... s-D\n" +
			"modulo --services; the server learns that from the policy files `sluice-load populate\n" +
			"--policy-dir` writes. Only sidecars of svc-0001 ... svc-D then see the change; the others\n" +
			"are reported as not affected.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), stdout, &o)
		},
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	f := cmd.Flags()
	f.StringVar(&o.xdsAddr, "xds-addr", "127.0.0.1:18000", "the ADS server under test")
	f.IntVar(&o.proxies, "proxies", 100, "simulated proxies, one connection each")
	f.BoolVar(&o.delta, "delta", false, "use incremental ADS")
	o.register(f, true)
	f.StringVar(&o.change, "change", "", "how to make the change: file:PATH (rewrite a registry file), etcd:ENDPOINT (delete a key), http:URL (POST, e.g. to the baseline's /change), or empty for none")
	f.StringVar(&o.serverMetrics, "server-metrics", "", "the server's Prometheus URL, to report its resident memory per proxy")
	f.StringVar(&o.nodePrefix, "node-prefix", "load", "node id prefix")
	f.DurationVar(&o.syncTimeout, "sync-timeout", 2*time.Minute, "bound on the initial sync")
	f.DurationVar(&o.changeTimeout, "change-timeout", time.Minute, "bound on convergence after the change")
	f.DurationVar(&o.hold, "hold", 0, "keep the streams open, idle, this long after the run; streams dropped meanwhile are errors")
	f.StringVar(&o.cpuProfile, "cpu-profile", "", "write the load generator's own CPU profile to this file (is the simulator, not the server, the bottleneck?)")
	cmd.AddCommand(populateCommand(), baselineCommand(), reportCommand(stdout))
	return cmd
}

func run(ctx context.Context, stdout io.Writer, o *runFlags) error {
	t, err := o.topology()
	if err != nil {
		return err
	}
	change, err := changeFunc(o.change, t.Mesh)
	if err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
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
		Target: o.xdsAddr, Proxies: o.proxies, Delta: o.delta,
		NodePrefix: o.nodePrefix, Topology: t,
		SyncTimeout: o.syncTimeout, ChangeTimeout: o.changeTimeout,
		MetricsURL: o.serverMetrics, Hold: o.hold,
	}, change)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		return err
	}
	if len(res.Errors) > 0 {
		return exitError(1)
	}
	return nil
}

// changeFunc returns what makes the change a run measures, as --change
// spec says; nil for none.
func changeFunc(spec string, m loadgen.Mesh) (func(context.Context) error, error) {
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
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, arg, nil)
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
