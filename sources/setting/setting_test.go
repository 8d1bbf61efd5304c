package setting

import (
	"errors"
	"io/fs"
	"testing"
	"time"
)

func TestError(t *testing.T) {
	for _, tc := range []struct {
		err  *Error
		want string
	}{
		{&Error{Field: "--debounce", Value: time.Duration(0), Reason: "must be positive"}, "--debounce: must be positive, got 0s"},
		{&Error{Field: "--max-proxy-groups", Value: 0, Reason: "must be at least 1"}, "--max-proxy-groups: must be at least 1, got 0"},
		{&Error{Scope: "etcd", Field: "Format", Value: "zk", Reason: "must be one of sluice, kratos, gozero"}, `etcd: Format: must be one of sluice, kratos, gozero, got "zk"`},
		{&Error{Scope: "etcd", Field: "Username", Reason: "is required with", With: []string{"Password"}}, "etcd: Username: is required with Password"},
		{&Error{Field: "--a", Reason: "needs", With: []string{"--b", "--c"}}, "--a: needs --b and --c"},
		{&Error{Field: "--ca", Reason: "cannot be loaded", Err: fs.ErrNotExist}, "--ca: cannot be loaded: file does not exist"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	err := error(&Error{Field: "--ca", Reason: "cannot be loaded", Err: fs.ErrNotExist})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Error("Err is not unwrapped")
	}
}

func TestRename(t *testing.T) {
	flags := map[string]string{"Endpoints": "--etcd-endpoints", "Username": "--etcd-username", "Password": "--etcd-password"}
	name := func(f string) (string, bool) { n, ok := flags[f]; return n, ok }
	for _, tc := range []struct {
		err  *Error
		want string
	}{
		{&Error{Scope: "etcd", Field: "Endpoints[1]", Value: "ftp://x", Reason: "must be host:port"}, `--etcd-endpoints[1]: must be host:port, got "ftp://x"`},
		{&Error{Scope: "etcd", Field: "Username", Reason: "is required with", With: []string{"Password"}}, "--etcd-username: is required with --etcd-password"},
		{&Error{Scope: "etcd", Field: "DialTimeout", Value: -time.Second, Reason: "must not be negative"}, "etcd: DialTimeout: must not be negative, got -1s"},
		{&Error{Scope: "etcd", Field: "Endpoints", Reason: "must be given with", With: []string{"TLS"}}, "--etcd-endpoints: must be given with TLS"},
	} {
		orig := tc.err.Error()
		if got := tc.err.Rename(name).Error(); got != tc.want {
			t.Errorf("Rename: %q, want %q", got, tc.want)
		}
		if tc.err.Error() != orig {
			t.Errorf("Rename changed the original: %q, was %q", tc.err.Error(), orig)
		}
	}
}
