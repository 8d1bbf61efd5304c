package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// deleteKey deletes one etcd key.
func deleteKey(t *testing.T, cli *clientv3.Client, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}

// TestFaultEtcdOutage: a standalone etcd server process is SIGKILLed for
// 10 s (and 60 s) while a request goes through a real Envoy every 10 ms,
// then started again on the same ports and data. No request fails (an
// outage never takes endpoints away from proxies); sluice reports the
// source stale during the outage and fresh once etcd is back; a registry
// change made after the recovery reaches Envoy.
func TestFaultEtcdOutage(t *testing.T) {
	requireE2E(t)
	for _, hold := range faultHolds() {
		t.Run(hold.String(), func(t *testing.T) {
			t.Parallel()
			envoyBinary(t)
			m := startEtcdCluster(t, 1)[0]
			bs := startHTTPBackends(t, 2)
			putInstance(t, etcdClient(t, []string{m.ClientURL}), clientv3.NoLease, "user-service", bs[0].addr, "healthy", 1)
			s := startSluice(t, "--etcd-endpoints", m.ClientURL)
			e := startEnvoy(t, s, "frontend", "frontend-etcd-outage-"+hold.String())
			envoyWaitOnly(t, e, "user-service", "http-0")
			tr := startTraffic(t, e, "user-service")
			tr.waitSent(t, 50)

			m.kill()
			down := time.Now()
			noticed := s.waitStale(t, "etcd", true, hold).Sub(down)
			holdFault(down, hold)
			back := time.Now()
			m.restart(t)
			fresh := s.waitStale(t, "etcd", false, time.Minute).Sub(back)

			// A change after the outage reaches Envoy (through a new
			// client: the test's first one may be in its reconnect
			// back-off still).
			cli := etcdClient(t, []string{m.ClientURL})
			changed := time.Now()
			putInstance(t, cli, clientv3.NoLease, "user-service", bs[1].addr, "healthy", 1)
			deleteKey(t, cli, "/services/user-service/"+bs[0].addr)
			envoyWaitOnly(t, e, "user-service", "http-1")
			propagated := time.Since(changed)
			tr.waitSent(t, 50)
			tr.check(t, "etcd outage")
			tr.figures(t, "etcd killed for "+hold.String(), "stale after", noticed,
				"fresh after the restart began", fresh, "change after recovery reached Envoy in", propagated)
		})
	}
}

// TestFaultConsulOutage: a Consul server (with its catalog on disk) is
// SIGKILLed for 10 s (and 60 s) while requests flow through a real Envoy,
// then started again on the same ports and data. No request fails; sluice
// reports the source stale during the outage and fresh after; a
// registration made after the recovery reaches Envoy.
func TestFaultConsulOutage(t *testing.T) {
	requireE2E(t)
	for _, hold := range faultHolds() {
		t.Run(hold.String(), func(t *testing.T) {
			t.Parallel()
			envoyBinary(t)
			c := startConsulServer(t)
			bs := startHTTPBackends(t, 2)
			first := c.registerPassing(t, "user-service", bs[0].addr)
			s := startSluice(t, "--consul-addr", c.HTTPAddr)
			e := startEnvoy(t, s, "frontend", "frontend-consul-outage-"+hold.String())
			envoyWaitOnly(t, e, "user-service", "http-0")
			tr := startTraffic(t, e, "user-service")
			tr.waitSent(t, 50)

			c.kill()
			down := time.Now()
			noticed := s.waitStale(t, "consul", true, hold).Sub(down)
			holdFault(down, hold)
			back := time.Now()
			c.restart(t)
			fresh := s.waitStale(t, "consul", false, 2*time.Minute).Sub(back)

			changed := time.Now()
			c.registerPassing(t, "user-service", bs[1].addr)
			if err := c.Client.Agent().ServiceDeregister(first); err != nil {
				t.Fatal(err)
			}
			envoyWaitOnly(t, e, "user-service", "http-1")
			propagated := time.Since(changed)
			tr.waitSent(t, 50)
			tr.check(t, "consul outage")
			tr.figures(t, "consul killed for "+hold.String(), "stale after", noticed,
				"fresh after the restart began", fresh, "change after recovery reached Envoy in", propagated)
		})
	}
}

// TestFaultEtcdCompactionDuringOutage: sluice's connection to etcd is cut
// (every connection reset, new ones refused); meanwhile the registry
// changes and etcd compacts its history past the last revision sluice saw.
// Once the network is back sluice cannot resume its watch from there: it
// must list afresh, and Envoy converges on the new state, with no request
// failing. Cut for 500 ms (less than the 2 s the source allows a broken
// connection before it calls it an outage: the watch itself resumes, into
// compacted history) and for 10 s (an outage, then a re-list).
func TestFaultEtcdCompactionDuringOutage(t *testing.T) {
	requireE2E(t)
	for _, cut := range []time.Duration{500 * time.Millisecond, 10 * time.Second} {
		t.Run(cut.String(), func(t *testing.T) {
			t.Parallel()
			envoyBinary(t)
			m := startEtcdCluster(t, 1)[0]
			cli := etcdClient(t, []string{m.ClientURL})
			bs := startHTTPBackends(t, 3)
			putInstance(t, cli, clientv3.NoLease, "user-service", bs[0].addr, "healthy", 1)
			putInstance(t, cli, clientv3.NoLease, "user-service", bs[1].addr, "healthy", 1)
			link := startTCPCutter(t, strings.TrimPrefix(m.ClientURL, "http://"))
			s := startSluice(t, "--etcd-endpoints", "http://"+link.addr())
			e := startEnvoy(t, s, "frontend", "frontend-compaction-"+cut.String())
			envoyWaitOnly(t, e, "user-service", "http-0", "http-1")
			tr := startTraffic(t, e, "user-service")
			tr.waitSent(t, 50)

			link.cut()
			down := time.Now()
			// http-2 joins, http-1 leaves, http-0 changes back and forth:
			// none of it is in etcd's history once compacted.
			putInstance(t, cli, clientv3.NoLease, "user-service", bs[2].addr, "healthy", 1)
			deleteKey(t, cli, "/services/user-service/"+bs[1].addr)
			putInstance(t, cli, clientv3.NoLease, "user-service", bs[0].addr, "healthy", 5)
			putInstance(t, cli, clientv3.NoLease, "user-service", bs[0].addr, "healthy", 1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := cli.Get(ctx, "/services/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err == nil {
				_, err = cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
			}
			cancel()
			if err != nil {
				t.Fatalf("compacting: %v", err)
			}
			// (Should the changes take longer than the planned cut, the
			// cut lasts until they are done.)
			holdFault(down, cut)
			link.restore()
			back := time.Now()
			lasted := back.Sub(down)
			envoyWaitOnly(t, e, "user-service", "http-0", "http-2")
			converged := time.Since(back)
			logs := s.logs.String()
			path := "watch resumed into compacted history, re-listed"
			if strings.Contains(logs, "etcd unavailable") {
				path = "reported an outage, re-listed"
			}
			if !strings.Contains(logs, "compacted past the watch") && !strings.Contains(logs, "etcd unavailable") {
				t.Errorf("sluice converged without saying it was cut off or re-listed; logs:\n%s", logs)
			}
			tr.waitSent(t, 50)
			tr.check(t, "compaction during an outage")
			tr.figures(t, "etcd compacted while sluice was cut off for "+cut.String(), "cut lasted", lasted, "sluice", path,
				"Envoy converged after the network was back in", converged)
		})
	}
}

// TestFaultEtcdLeaderLoss: sluice watches a 3-member etcd cluster; the
// leader is SIGKILLed while requests flow through a real Envoy. No request
// fails, the other two elect a leader, and a registry change made after the
// election reaches Envoy.
func TestFaultEtcdLeaderLoss(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	envoyBinary(t)
	ms := startEtcdCluster(t, 3)
	cli := etcdClient(t, clientURLs(ms))
	bs := startHTTPBackends(t, 2)
	putInstance(t, cli, clientv3.NoLease, "user-service", bs[0].addr, "healthy", 1)
	s := startSluice(t, "--etcd-endpoints", strings.Join(clientURLs(ms), ","))
	e := startEnvoy(t, s, "frontend", "frontend-leader-loss")
	envoyWaitOnly(t, e, "user-service", "http-0")

	var leader *etcdMember
	var leaderID uint64
	var others []*etcdMember
	eventually(t, 30*time.Second, "the etcd leader", func() error {
		leader, others = nil, nil
		for _, m := range ms {
			id, l, err := m.status(cli)
			if err != nil {
				return err
			}
			if id == l {
				leader, leaderID = m, id
			} else {
				others = append(others, m)
			}
		}
		if leader == nil {
			return errors.New("no member is the leader")
		}
		return nil
	})
	errorsBefore := s.metric(t, "sluice_source_errors_total", `source="etcd"`)
	tr := startTraffic(t, e, "user-service")
	tr.waitSent(t, 50)

	leader.kill()
	down := time.Now()
	cli2 := etcdClient(t, clientURLs(others))
	eventually(t, 30*time.Second, "a new etcd leader", func() error {
		for _, m := range others {
			_, l, err := m.status(cli2)
			if err != nil {
				return err
			}
			if l == 0 || l == leaderID {
				return fmt.Errorf("%s follows leader %x", m.Name, l)
			}
		}
		return nil
	})
	elected := time.Since(down)
	changed := time.Now()
	putInstance(t, cli2, clientv3.NoLease, "user-service", bs[1].addr, "healthy", 1)
	deleteKey(t, cli2, "/services/user-service/"+bs[0].addr)
	envoyWaitOnly(t, e, "user-service", "http-1")
	propagated := time.Since(changed)
	tr.waitSent(t, 50)
	tr.check(t, "etcd leader loss")
	tr.figures(t, "etcd leader ("+leader.Name+" of 3) killed", "new leader after", elected,
		"change reached Envoy in", propagated,
		"source errors counted", s.metric(t, "sluice_source_errors_total", `source="etcd"`)-errorsBefore)
}
