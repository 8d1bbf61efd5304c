package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/sluice-mesh/sluice/envoy"
	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/translator"
)

func (a *app) bootstrapCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Print an Envoy bootstrap that fetches its config from sluice over ADS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.bootstrap()
		},
	}
	f := cmd.Flags()
	f.String("service", "", "the service this Envoy fronts (node.cluster); required")
	f.String("node-id", "", "unique id of this Envoy (default: SERVICE-HOSTNAME)")
	f.StringSlice("xds-addr", []string{"127.0.0.1:18000"}, "sluice's xDS address as Envoy reaches it (host:port; a DNS name is resolved by Envoy); several (repeated or comma-separated) for replicas Envoy fails over between")
	f.Uint32("admin-port", 15000, "Envoy admin port (0 lets the OS pick)")
	f.String("admin-address", "127.0.0.1", "Envoy admin address")
	f.String("role", translator.RoleSidecar, "sidecar or gateway")
	f.String("outbound-address", "", "address of Envoy's outbound listener (default: sluice's --outbound-address)")
	f.Uint32("outbound-port", 0, "port of Envoy's outbound listener (default: sluice's --outbound-port)")
	f.Uint32("inbound-port", 0, "port of the local application that Envoy's inbound listener fronts (127.0.0.1:PORT); a sidecar with one gets an inbound listener")
	f.String("inbound-listener-address", "", "address of Envoy's inbound listener (default: 0.0.0.0)")
	f.Uint32("inbound-listener-port", 0, "port of Envoy's inbound listener (default: 15006)")
	f.String("region", "", "the region this Envoy runs in (node.locality.region); without --region and --zone, sluice takes the locality of the registry instance at Envoy's address when it connects")
	f.String("zone", "", "the zone this Envoy runs in (node.locality.zone)")
	f.Bool("delta", false, "use incremental (delta) ADS instead of state-of-the-world")
	f.String("xds-ca", "", "reach sluice over TLS, verifying its certificate with this CA (PEM file path, read by Envoy)")
	f.String("xds-cert", "", "client certificate (PEM file path) Envoy presents to sluice, for mutual TLS; needs --xds-ca")
	f.String("xds-key", "", "private key (PEM file path) for --xds-cert")
	f.String("xds-server-name", "", "SNI and the DNS name sluice's certificate must carry (default: the host of --xds-addr when it is a name)")
	f.String("format", "yaml", "output format: yaml or json")
	f.StringP("output", "o", "-", "write the bootstrap to this file ('-' for stdout)")
	return cmd
}

func (a *app) bootstrap() error {
	v := a.v
	service := v.GetString("service")
	if service == "" {
		return &setting.Error{Field: "--service", Reason: "is required"}
	}
	nodeID := v.GetString("node-id")
	if nodeID == "" {
		host, err := os.Hostname()
		if err != nil {
			return &setting.Error{Field: "--node-id", Reason: "is required when the hostname is unknown", Err: err}
		}
		nodeID = service + "-" + host
	}
	md := map[string]string{translator.MetaProxyType: string(translator.KindEnvoy)}
	switch role := v.GetString("role"); role {
	case translator.RoleSidecar, translator.RoleGateway:
		md[translator.MetaRole] = role
	default:
		return &setting.Error{Field: "--role", Value: role, Reason: "must be sidecar or gateway"}
	}
	for _, a := range []struct{ flag, key string }{
		{"outbound-address", translator.MetaOutboundAddress},
		{"inbound-listener-address", translator.MetaInboundListenerAddress},
	} {
		if addr := v.GetString(a.flag); addr != "" {
			if net.ParseIP(addr) == nil {
				return &setting.Error{Field: "--" + a.flag, Value: addr, Reason: "must be an IP address"}
			}
			md[a.key] = addr
		}
	}
	for _, p := range []struct{ flag, key string }{
		{"outbound-port", translator.MetaOutboundPort},
		{"inbound-port", translator.MetaInboundPort},
		{"inbound-listener-port", translator.MetaInboundListenerPort},
	} {
		n := v.GetUint64(p.flag)
		if n > 65535 {
			return &setting.Error{Field: "--" + p.flag, Value: n, Reason: "must be a port (1-65535)"}
		}
		if n != 0 {
			md[p.key] = strconv.FormatUint(n, 10)
		}
	}
	region, zone := v.GetString("region"), v.GetString("zone")
	for _, l := range []struct{ flag, value string }{{"region", region}, {"zone", zone}} {
		if err := translator.CheckLocalityPart(l.value); err != nil {
			if len(l.value) > translator.MaxLocalityBytes {
				return &setting.Error{Field: "--" + l.flag, Reason: fmt.Sprintf("%v (it is %d)", err, len(l.value))}
			}
			return &setting.Error{Field: "--" + l.flag, Value: l.value, Reason: err.Error()}
		}
	}
	adminPort := v.GetUint64("admin-port")
	if adminPort > 65535 {
		return &setting.Error{Field: "--admin-port", Value: adminPort, Reason: "must be a port (1-65535)"}
	}
	// Repeated flags, a comma-separated flag, or SLUICE_XDS_ADDR with
	// commas: every form ends up as one list.
	var xdsAddrs []string
	for _, a := range v.GetStringSlice("xds-addr") {
		for _, part := range strings.Split(a, ",") {
			if part = strings.TrimSpace(part); part != "" {
				xdsAddrs = append(xdsAddrs, part)
			}
		}
	}
	if len(xdsAddrs) == 0 {
		return &setting.Error{Field: "--xds-addr", Reason: "needs at least one address"}
	}
	var tlsOpts *envoy.XDSTLS
	if ca := v.GetString("xds-ca"); ca != "" {
		tlsOpts = &envoy.XDSTLS{CAFile: ca, CertFile: v.GetString("xds-cert"), KeyFile: v.GetString("xds-key"), ServerName: v.GetString("xds-server-name")}
		if tlsOpts.ServerName == "" {
			if host, _, err := net.SplitHostPort(xdsAddrs[0]); err == nil && net.ParseIP(host) == nil {
				tlsOpts.ServerName = host
			}
		}
	} else if v.GetString("xds-cert") != "" || v.GetString("xds-key") != "" || v.GetString("xds-server-name") != "" {
		return &setting.Error{Field: "--xds-cert, --xds-key and --xds-server-name", Reason: "need", With: []string{"--xds-ca"}}
	}
	b, err := envoy.Bootstrap(envoy.BootstrapOptions{
		NodeID: nodeID, Service: service, XDSAddrs: xdsAddrs,
		AdminAddress: v.GetString("admin-address"), AdminPort: uint32(adminPort),
		Delta: v.GetBool("delta"), Metadata: md, TLS: tlsOpts,
		Region: region, Zone: zone,
	})
	if err != nil {
		return err
	}
	if err := b.ValidateAll(); err != nil {
		return fmt.Errorf("generated bootstrap is invalid: %w", err)
	}
	out, err := protojson.MarshalOptions{Indent: "  "}.Marshal(b)
	if err != nil {
		return fmt.Errorf("encoding bootstrap: %w", err)
	}
	switch f := v.GetString("format"); f {
	case "json":
	case "yaml":
		if out, err = yaml.JSONToYAML(out); err != nil {
			return fmt.Errorf("encoding bootstrap as YAML: %w", err)
		}
	default:
		return &setting.Error{Field: "--format", Value: f, Reason: "must be yaml or json"}
	}
	if path := v.GetString("output"); path != "-" {
		return os.WriteFile(path, out, 0o644)
	}
	_, err = a.stdout.Write(out)
	return err
}
