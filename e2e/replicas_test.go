package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEnvoyFailsOverBetweenReplicas: two sluice replicas serve the same
// registry; an Envoy bootstrapped with both (`sluice bootstrap --xds-addr A
// --xds-addr B`) streams from one. That replica is killed (SIGKILL) while
// requests flow through the Envoy: none fails, the Envoy reconnects to the
// other replica by itself, and nothing in its configuration changes (the
// replicas serve identical versions for identical inputs). Over SotW and
// delta.
func TestEnvoyFailsOverBetweenReplicas(t *testing.T) {
	requireE2E(t)
	for _, mode := range []string{"sotw", "delta"} {
		t.Run(mode, func(t *testing.T) {
			envoyBinary(t)
			testFailover(t, mode)
		})
	}
}

func testFailover(t *testing.T, mode string) {
	bs := startHTTPBackends(t, 1)
	reg := t.TempDir() + "/registry.yaml"
	writeFile(t, reg, registry("user-service", instance(bs[0].addr, "")))
	replicas := []*sluice{startSluice(t, "--registry-file", reg), startSluice(t, "--registry-file", reg)}
	extra := []string{"--xds-addr", replicas[1].XDSAddr}
	if mode == "delta" {
		extra = append(extra, "--delta")
	}
	node := "frontend-ha-" + mode
	e := startEnvoy(t, replicas[0], "frontend", node, extra...)
	envoyWaitOnly(t, e, "user-service", "http-0")

	// Which replica the Envoy streams from.
	serving := func(s *sluice) bool {
		var ps []struct {
			NodeID string `json:"node_id"`
		}
		if code := s.adminJSON(t, "/debug/proxies", &ps); code != http.StatusOK {
			return false
		}
		for _, p := range ps {
			if p.NodeID == node {
				return true
			}
		}
		return false
	}
	var from, to *sluice
	eventually(t, 10*time.Second, "the Envoy's stream on one replica", func() error {
		switch a, b := serving(replicas[0]), serving(replicas[1]); {
		case a && !b:
			from, to = replicas[0], replicas[1]
		case b && !a:
			from, to = replicas[1], replicas[0]
		default:
			return fmt.Errorf("on replica 0: %v, on replica 1: %v", a, b)
		}
		return nil
	})
	churn := []string{"cluster_manager.cluster_added", "cluster_manager.cluster_modified", "cluster_manager.cluster_removed",
		"listener_manager.listener_added", "listener_manager.listener_modified", "listener_manager.listener_removed"}
	before := map[string]int64{}
	for _, s := range churn {
		before[s] = e.stat(t, s)
	}

	// Requests flow throughout, paced, until the switch is done and a
	// little after.
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			sent.Add(1)
			if code, body, err := e.get("user-service"); err != nil || code != http.StatusOK {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q %v", code, body, err))
			}
		}
	}()
	if err := from.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the Envoy's stream on the other replica", func() error {
		if !serving(to) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	// Some more traffic on the new stream.
	target := sent.Load() + 50
	eventually(t, 10*time.Second, "50 more requests", func() error {
		if n := sent.Load(); n < target {
			return fmt.Errorf("%d of %d sent", n, target)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed across the failover; first: %v", n, sent.Load(), firstErr.Load())
	}
	for _, s := range churn {
		if after := e.stat(t, s); after != before[s] {
			t.Errorf("%s went from %d to %d across the failover: the other replica's configuration differed", s, before[s], after)
		}
	}
	t.Logf("%d requests, %d failed", sent.Load(), failed.Load())
}
