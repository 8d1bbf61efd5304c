package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdBuild is the real etcd server, built once per test run from the etcd
// module sluice itself depends on (so no download and no version skew).
var etcdBuild struct {
	once sync.Once
	path string
	err  error
}

func etcdBinary(t *testing.T) string {
	t.Helper()
	etcdBuild.once.Do(func() {
		path := filepath.Join(workDir, "etcd")
		out, err := exec.Command("go", "build", "-o", path, "go.etcd.io/etcd/server/v3").CombinedOutput()
		if err != nil {
			etcdBuild.err = fmt.Errorf("building etcd: %w\n%s", err, out)
			return
		}
		etcdBuild.path = path
	})
	if etcdBuild.err != nil {
		t.Fatal(etcdBuild.err)
	}
	return etcdBuild.path
}

// etcdMember is one real etcd server process on 127.0.0.1. Unlike the
// embedded etcd of startEtcd it shares nothing with the test process, and
// it can be SIGKILLed and started again on the same ports and data.
type etcdMember struct {
	Name, ClientURL, PeerURL string
	bin, dataDir, cluster    string
	token                    string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *syncBuffer
}

// startEtcdCluster starts n members forming one new cluster, each with its
// own ports (below the ephemeral range, so they are still free for a
// restart) and data directory, and waits until every member answers.
func startEtcdCluster(t *testing.T, n int) []*etcdMember {
	t.Helper()
	bin := etcdBinary(t)
	ms := make([]*etcdMember, n)
	var peers []string
	for i := range ms {
		m := &etcdMember{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", listenerPort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", listenerPort(t)),
			bin:       bin, dataDir: t.TempDir(), token: fmt.Sprintf("sluice-e2e-%d", time.Now().UnixNano()),
			logs: &syncBuffer{},
		}
		ms[i] = m
		peers = append(peers, m.Name+"="+m.PeerURL)
	}
	for _, m := range ms {
		m.cluster = strings.Join(peers, ",")
		m.token = ms[0].token
		m.launch(t)
	}
	for _, m := range ms {
		m.waitReady(t)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.kill()
			if t.Failed() {
				t.Logf("etcd %s logs:\n%s", m.Name, m.logs.String())
			}
		}
	})
	return ms
}

// launch starts the member's process. On an existing data directory etcd
// ignores the initial-cluster flags and carries on with its own state.
func (m *etcdMember) launch(t *testing.T) {
	t.Helper()
	cmd := exec.Command(m.bin, "--name", m.Name, "--data-dir", m.dataDir, "--log-level", "warn",
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", m.cluster, "--initial-cluster-state", "new", "--initial-cluster-token", m.token)
	cmd.Stdout, cmd.Stderr = m.logs, m.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting etcd %s: %v", m.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()
}

// restart starts a killed member again on its ports and data, and waits
// until it answers.
func (m *etcdMember) restart(t *testing.T) {
	t.Helper()
	m.launch(t)
	m.waitReady(t)
}

// kill SIGKILLs the member and waits until it is gone.
func (m *etcdMember) kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// waitReady waits until the member answers a linearizable read (which needs
// a leader and quorum).
func (m *etcdMember) waitReady(t *testing.T) {
	t.Helper()
	cli := etcdClient(t, []string{m.ClientURL})
	eventually(t, 60*time.Second, "etcd "+m.Name+" to answer", func() error {
		select {
		case <-m.exited:
			return fmt.Errorf("etcd %s exited: %s", m.Name, m.logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Get(ctx, "ready")
		return err
	})
}

// status is the member's view of the cluster: its id and its leader's.
func (m *etcdMember) status(cli *clientv3.Client) (id, leader uint64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := cli.Status(ctx, m.ClientURL)
	if err != nil {
		return 0, 0, err
	}
	return st.Header.GetMemberId(), st.Leader, nil
}

func clientURLs(ms []*etcdMember) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ClientURL)
	}
	return out
}
