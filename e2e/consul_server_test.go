package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
)

// consulServer is a real single-node Consul server that keeps its catalog
// on disk, so that it can be SIGKILLed and started again on the same ports
// and data, as an outage of a production Consul is. (A `consul agent -dev`
// keeps its catalog in memory: restarting one is losing the registry, not
// an outage.)
type consulServer struct {
	*consulAgent
	bin  string
	args []string
	env  []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *syncBuffer
}

func startConsulServer(t *testing.T) *consulServer {
	t.Helper()
	bin := consulBinary(t)
	ports := map[string]int{}
	for _, p := range []string{"http", "dns", "grpc", "grpc-tls", "serf-lan", "serf-wan", "server"} {
		ports[p] = listenerPort(t)
	}
	args := []string{"agent", "-server", "-bootstrap", "-data-dir", t.TempDir(), "-node", "sluice-e2e",
		"-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "warn",
		// Dev-mode raft timing: a leader within a second or two of a start.
		"-hcl", "performance { raft_multiplier = 1 }", "-hcl", "disable_update_check = true"}
	for name, port := range ports {
		args = append(args, "-"+name+"-port", strconv.Itoa(port))
	}
	c := &consulServer{
		consulAgent: &consulAgent{HTTPAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports["http"]))},
		bin:         bin, args: args, env: append(os.Environ(), "TMPDIR="+t.TempDir()), logs: &syncBuffer{},
	}
	cfg := consulapi.DefaultConfig()
	cfg.Address = c.HTTPAddr
	cli, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Client = cli
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			t.Logf("consul logs:\n%s", c.logs.String())
		}
	})
	c.restart(t)
	return c
}

// restart starts the server (again, on the same ports and data) and waits
// until it has a leader.
func (c *consulServer) restart(t *testing.T) {
	t.Helper()
	cmd := exec.Command(c.bin, c.args...)
	cmd.Stdout, cmd.Stderr, cmd.Env = c.logs, c.logs, c.env
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting consul: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.mu.Lock()
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()
	eventually(t, 60*time.Second, "a consul leader", func() error {
		select {
		case <-exited:
			return fmt.Errorf("consul exited: %s", c.logs.String())
		default:
		}
		leader, err := c.Client.Status().Leader()
		if err != nil || leader == "" {
			return fmt.Errorf("no leader yet (%w)", err)
		}
		return nil
	})
}

// kill SIGKILLs the server and waits until it is gone.
func (c *consulServer) kill() {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// registerPassing registers an instance with a TTL check and reports it
// passing, as a service with its own health reporting does; the reported
// state is what the agent keeps on disk across a restart.
func (c *consulServer) registerPassing(t *testing.T, service, addr string) string {
	t.Helper()
	id := c.registerTTL(t, service, addr)
	c.setTTL(t, id, consulapi.HealthPassing)
	return id
}
