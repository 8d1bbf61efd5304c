package embedded

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-mesh/sluice/sources/setting"
)

func TestValidatesURLs(t *testing.T) {
	for _, tc := range []struct{ client, peer, want string }{
		{"http://0.0.0.0:2379", "", "ClientURL"},
		{"http://10.1.2.3:2379", "", "ClientURL"},
		{"https://127.0.0.1:2379", "", "ClientURL"},
		{"127.0.0.1", "", "ClientURL"},
		{"", "http://192.168.0.1:2380", "PeerURL"},
	} {
		_, err := Start(t.Context(), Config{ClientURL: tc.client, PeerURL: tc.peer, DataDir: t.TempDir()})
		var bad *setting.Error
		if !errors.As(err, &bad) || bad.Scope != Scope || bad.Field != tc.want {
			t.Errorf("client %q peer %q: Start = %v, want a *setting.Error naming %s", tc.client, tc.peer, err, tc.want)
		}
	}
}

// TestStartAndClose: on port 0 the server picks a free loopback port and
// serves clients there; Close stops it and removes a temporary data
// directory, and may be called again.
func TestStartAndClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	e, err := Start(ctx, Config{ClientURL: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	eps := e.Endpoints()
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") || strings.HasSuffix(eps[0], ":0") {
		t.Fatalf("endpoints %v, want one http://127.0.0.1 URL with a real port", eps)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cli.Close() }()
	if _, err := cli.Put(ctx, "/services/api/10.0.0.1:80", ""); err != nil {
		t.Fatalf("put: %v", err)
	}
	dir := e.DataDir()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary data directory %s after Close: %v, want it removed", dir, err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// A data directory of one's own is kept.
	own := filepath.Join(t.TempDir(), "etcd")
	e, err = Start(ctx, Config{ClientURL: "127.0.0.1:0", DataDir: own})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(own, "member")); err != nil {
		t.Errorf("data directory after Close: %v, want it kept", err)
	}
}
