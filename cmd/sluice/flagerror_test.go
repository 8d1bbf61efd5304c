package main

import (
	"errors"
	"testing"

	"github.com/sluice-mesh/sluice/sources/setting"
)

// TestFlagErrors: the settings the etcd and Consul sources, the embedded
// etcd and the xDS server's TLS files refuse are named by the flags that set them, the other
// settings they refer to too, with the refused value.
func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"etcd endpoint", []string{"--etcd-endpoints", "127.0.0.1:2379,ftp://x"}, `--etcd-endpoints[1]: must have the scheme http, https, unix or unixs, got "ftp://x"`},
		{"etcd password alone", []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-password", "pw"}, "--etcd-username: is required with --etcd-password"},
		{"etcd cert alone", []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-cert", "c.pem"}, "--etcd-key: is required with --etcd-cert"},
		{"etcd format", []string{"--etcd-format", "zk"}, `--etcd-format: unknown format (want sluice, kratos or gozero), got "zk"`},
		{"consul cert alone", []string{"--consul-addr", "127.0.0.1:8500", "--consul-cert", "c.pem"}, "--consul-key: is required with --consul-cert"},
		{"consul plaintext with TLS", []string{"--consul-addr", "http://127.0.0.1:8500", "--consul-ca", "ca.pem"}, `--consul-addr: must be https:// or host:port (not plaintext http://) when TLS is configured, got "http://127.0.0.1:8500"`},
		{"xDS certificate missing", []string{"--xds-tls-cert", "/nonexistent/tls.crt", "--xds-tls-key", "/nonexistent/tls.key"}, "--xds-tls-cert: cannot be loaded with --xds-tls-key: stat /nonexistent/tls.crt: no such file or directory"},
		{"embedded etcd beyond loopback", []string{"--dev", "--etcd-endpoints", "http://10.0.0.1:2379"}, `--etcd-endpoints: must be on loopback (127.0.0.1, ::1 or localhost), as the embedded etcd has no authentication, got "http://10.0.0.1:2379"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, nil, append([]string{"serve", "--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, tc.args...)...)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %s", err, tc.want)
			}
			var bad *setting.Error
			if !errors.As(err, &bad) || bad.Scope != "" {
				t.Errorf("err = %#v, want a *setting.Error of a flag", err)
			}
		})
	}
}
