// Command sluice is the sluice control plane: it watches service registries,
// combines them with policy files and serves the result to Envoy proxies and
// proxyless gRPC clients over xDS.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

// exitError carries a specific exit code (e.g. validate's 1 on invalid input)
// after the message has already been printed.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// app is the per-invocation state shared by sub-commands; there is no
// package-level state, so tests can run commands side by side.
type app struct {
	v      *viper.Viper
	stdout io.Writer
	stderr io.Writer
}

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	return newApp(stdout, stderr).rootCommand()
}

func newApp(stdout, stderr io.Writer) *app {
	return &app{v: viper.New(), stdout: stdout, stderr: stderr}
}

func (a *app) rootCommand() *cobra.Command {
	stdout, stderr := a.stdout, a.stderr
	root := &cobra.Command{
		Use:           "sluice",
		Short:         "A service-mesh control plane: registries + policy files -> Envoy and gRPC xDS",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.loadConfig(cmd)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(a.statusCommand())
	pf := root.PersistentFlags()
	pf.String("config", "", "config file (YAML/JSON/TOML) whose keys are flag names; env vars SLUICE_<FLAG> override it, flags override both")
	pf.String("log-level", "info", "log level: debug, info, warn, error")
	pf.String("log-format", "text", "log format: text or json")
	root.AddCommand(a.serveCommand(), a.bootstrapCommand(), a.validateCommand(), a.registerCommand(), a.versionCommand(), a.translateCommand(), a.diffCommand(), a.explainCommand())
	return root
}

// loadConfig layers flags over SLUICE_* environment variables over the
// config file, for the command being run.
func (a *app) loadConfig(cmd *cobra.Command) error {
	a.v.SetEnvPrefix("SLUICE")
	a.v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	a.v.AutomaticEnv()
	if err := a.v.BindPFlags(cmd.Flags()); err != nil {
		return fmt.Errorf("binding flags: %w", err)
	}
	if err := a.v.BindPFlags(cmd.InheritedFlags()); err != nil {
		return fmt.Errorf("binding flags: %w", err)
	}
	if path := a.v.GetString("config"); path != "" {
		a.v.SetConfigFile(path)
		if err := a.v.ReadInConfig(); err != nil {
			return fmt.Errorf("reading config file %s: %w", path, err)
		}
		known := map[string]bool{}
		cmd.Flags().VisitAll(func(f *pflag.Flag) { known[f.Name] = true })
		cmd.InheritedFlags().VisitAll(func(f *pflag.Flag) { known[f.Name] = true })
		for _, k := range a.v.AllKeys() {
			if !known[k] && !strings.Contains(k, ".") {
				return fmt.Errorf("config file %s: unknown key %q for %q", path, k, cmd.CommandPath())
			}
		}
	}
	return nil
}

func (a *app) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(a.v.GetString("log-level"))); err != nil {
		return nil, &setting.Error{Field: "--log-level", Value: a.v.GetString("log-level"), Reason: "must be one of debug, info, warn, error"}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f := a.v.GetString("log-format"); f {
	case "text":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	default:
		return nil, &setting.Error{Field: "--log-format", Value: f, Reason: "must be one of text, json"}
	}
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the sluice version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(a.stdout, "sluice", Version)
			return nil
		},
	}
}
