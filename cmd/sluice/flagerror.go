package main

import (
	"errors"

	"github.com/sluice-mesh/sluice/sources/consul"
	"github.com/sluice-mesh/sluice/sources/etcd"
	"github.com/sluice-mesh/sluice/sources/etcd/embedded"
	"github.com/sluice-mesh/sluice/sources/setting"
	"github.com/sluice-mesh/sluice/xds/tlsfiles"
)

// flagError names the flags behind a refused setting of a package sluice
// configures (*setting.Error): etcd's Endpoints[1] is --etcd-endpoints[1].
// Other errors, and settings no flag sets, are returned as they are.
func flagError(err error) error {
	var bad *setting.Error
	if !errors.As(err, &bad) {
		return err
	}
	flags := settingFlags()[bad.Scope]
	return bad.Rename(func(field string) (string, bool) {
		flag, ok := flags[field]
		return flag, ok
	})
}

// settingFlags maps each package's settings (by the Scope and Field of its
// *setting.Error) to the flags that set them.
func settingFlags() map[string]map[string]string {
	return map[string]map[string]string{
		etcd.SourceName: {
			"Endpoints": "--etcd-endpoints", "Prefix": "--etcd-prefix", "Format": "--etcd-format",
			"Username": "--etcd-username", "Password": "--etcd-password",
			"TLS.CAFile": "--etcd-ca", "TLS.CertFile": "--etcd-cert", "TLS.KeyFile": "--etcd-key",
		},
		embedded.Scope: {"ClientURL": "--etcd-endpoints", "DataDir": "--data-dir"},
		tlsfiles.Scope: {"CertFile": "--xds-tls-cert", "KeyFile": "--xds-tls-key", "ClientCAFile": "--xds-tls-client-ca"},
		consul.SourceName: {
			"Address": "--consul-addr", "Token": "--consul-token", "Datacenter": "--consul-datacenter",
			"Tags": "--consul-tag", "Exclude": "--consul-exclude-service",
			"TLS.CAFile": "--consul-ca", "TLS.CertFile": "--consul-cert", "TLS.KeyFile": "--consul-key",
			"TLS.ServerName": "--consul-tls-server-name",
		},
	}
}
