package main

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/sources/etcd"
	"github.com/sluice-mesh/sluice/sources/setting"
)

func (a *app) registerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "register SERVICE HOST:PORT",
		Short: "Register an instance in etcd and keep its lease alive until interrupted",
		Long: "Register an instance in etcd the way Go services do (a key under a lease, kept\n" +
			"alive), for trying sluice out. The key disappears when the command stops.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.register(cmd, args[0], args[1])
		},
	}
	f := cmd.Flags()
	addEtcdFlags(f)
	f.Duration("ttl", 10*time.Second, "lease time-to-live; the key expires this long after the command dies")
	f.String("status", "healthy", "healthy, unhealthy or draining")
	f.Uint32("weight", 1, "load-balancing weight")
	f.String("zone", "", "the instance's zone")
	f.String("region", "", "the instance's region")
	f.StringToString("meta", nil, "metadata key=value pairs (repeatable, or comma-separated)")
	return cmd
}

func (a *app) register(cmd *cobra.Command, service, hostport string) error {
	v := a.v
	if !sources.ValidServiceName(service) {
		return fmt.Errorf("SERVICE: %q is not a valid service name", service)
	}
	if _, err := netip.ParseAddrPort(hostport); err != nil {
		return fmt.Errorf("HOST:PORT: %q is not an IP address and port: %w", hostport, err)
	}
	eo := a.etcdOptions()
	if eo.format != etcd.FormatSluice {
		return &setting.Error{Field: "--etcd-format", Value: eo.format, Reason: "must be sluice: register writes the sluice layout only"}
	}
	status := v.GetString("status")
	if h, err := sources.ParseHealth(status); err != nil || h == sources.HealthUnknown {
		return &setting.Error{Field: "--status", Value: status, Reason: "must be healthy, unhealthy or draining"}
	}
	ttl := v.GetDuration("ttl")
	if ttl < time.Second {
		return &setting.Error{Field: "--ttl", Value: ttl, Reason: "must be at least 1s"}
	}
	log, err := a.logger()
	if err != nil {
		return err
	}
	cfg, err := eo.config(log)
	if err != nil {
		return err
	}
	cli, err := etcd.NewClient(cfg)
	if err != nil {
		return flagError(err)
	}
	defer func() { _ = cli.Close() }()
	prefix := eo.prefix
	if prefix == "" {
		prefix = etcd.DefaultPrefix
	}
	meta := map[string]string{}
	for k, val := range v.GetStringMapString("meta") {
		meta[strings.TrimSpace(k)] = val
	}
	reg := etcd.Registration{
		Status: status, Weight: uint32(v.GetUint64("weight")), Zone: v.GetString("zone"),
		Region: v.GetString("region"), Metadata: meta, Timestamp: time.Now().Unix(),
	}
	log.Info("registering; interrupt to deregister", "key", etcd.RegistrationKey(prefix, service, hostport), "ttl", ttl)
	return etcd.Register(cmd.Context(), cli, prefix, service, hostport, ttl, reg)
}
