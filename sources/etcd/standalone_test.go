package etcd

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// standaloneEtcd runs a real etcd server process (built from the very
// etcd module sluice depends on) on 127.0.0.1 and returns its client
// endpoint. Unlike the embedded server, it shares nothing with the test
// process, as an operator's etcd does not.
func standaloneEtcd(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs an etcd server process")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "etcd")
	build := exec.Command("go", "build", "-o", bin, "go.etcd.io/etcd/server/v3")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building etcd: %v\n%s", err, out)
	}
	client, peer := freePort(t), freePort(t)
	clientURL, peerURL := "http://127.0.0.1:"+client, "http://127.0.0.1:"+peer
	cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--log-level", "error",
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL)
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting etcd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	cli := testClient(t, []string{clientURL})
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "ready")
		cancel()
		if err == nil {
			return clientURL
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd at %s not ready within %v: %v", clientURL, waitTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestIdleStandaloneEtcdStaysAvailable: against an idle etcd server process
// the source's liveness probes are answered, probe after probe, and it
// never reports an outage. (It used to ask for watch progress, which etcd
// does not answer for a watch ahead of its current revision: on an idle
// etcd, every ten seconds, a false "etcd unavailable", a stale source and
// a re-list.)
func TestIdleStandaloneEtcdStaysAvailable(t *testing.T) {
	endpoint := standaloneEtcd(t)
	put(t, testClient(t, []string{endpoint}), "/services/api/10.0.0.1:80", "")
	rec := startSource(t, Config{Endpoints: []string{endpoint}}, func(s *Source) {
		s.probeEvery = 50 * time.Millisecond
		s.requestTimeout = 500 * time.Millisecond
	})
	i, _ := rec.nextState(t, 0)
	// Nothing is written from here on: etcd stays idle.
	const probes = 30
	deadline := time.Now().Add(waitTimeout)
	for rec.src.probes.Load() < probes {
		if time.Now().After(deadline) {
			t.Fatalf("%d liveness probes answered within %v, want %d", rec.src.probes.Load(), waitTimeout, probes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, ev := range rec.since(i + 1) {
		t.Errorf("event while etcd was idle and healthy: %+v", ev)
	}
	if n := rec.src.failures.Load(); n != 0 {
		t.Errorf("%d failed syncs against an idle, healthy etcd", n)
	}
}
