package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// TestFaultSluiceKilled: sluice is SIGKILLed while requests flow through a
// real Envoy; the registry changes while no sluice runs; 10 s later sluice
// starts again on the same address. Envoy serves its last configuration
// meanwhile (no request fails), reconnects by itself, and gets the new
// state.
func TestFaultSluiceKilled(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	envoyBinary(t)
	bs := startHTTPBackends(t, 2)
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, registry("user-service", instance(bs[0].addr, "")))
	xdsAddr := fmt.Sprintf("127.0.0.1:%d", listenerPort(t))
	args := []string{"--registry-file", reg, "--xds-addr", xdsAddr}
	s := startSluice(t, args...)
	e := startEnvoy(t, s, "frontend", "frontend-sluice-killed")
	envoyWaitOnly(t, e, "user-service", "http-0")
	tr := startTraffic(t, e, "user-service")
	tr.waitSent(t, 50)

	const hold = 10 * time.Second
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	waitPortFree(t, xdsAddr)
	eventually(t, hold, "Envoy to see its xDS stream gone", func() error {
		if v := e.stat(t, "control_plane.connected_state"); v != 0 {
			return fmt.Errorf("control_plane.connected_state = %d", v)
		}
		return nil
	})
	writeFile(t, reg, registry("user-service", instance(bs[1].addr, "")))
	holdFault(down, hold)

	start := time.Now()
	startSluice(t, args...)
	serving := time.Since(start)
	// Envoy retries its xDS stream with its own back-off: from 500 ms,
	// jittered, up to 30 s (sluice's bootstrap leaves Envoy's default).
	eventually(t, 45*time.Second, "Envoy's xDS stream back", func() error {
		if v := e.stat(t, "control_plane.connected_state"); v != 1 {
			return fmt.Errorf("control_plane.connected_state = %d", v)
		}
		return nil
	})
	reconnected := time.Since(start)
	envoyWaitOnly(t, e, "user-service", "http-1")
	resynced := time.Since(start)
	tr.waitSent(t, 50)
	tr.check(t, "sluice SIGKILL")
	tr.figures(t, "sluice SIGKILLed for "+hold.String(), "new sluice serving after", serving,
		"Envoy reconnected after", reconnected, "Envoy had the change made meanwhile after", resynced)
}

// proxyState is one stream of sluice's /debug/proxies.
type proxyState struct {
	NodeID string `json:"node_id"`
	Group  string `json:"group"`
	Types  map[string]struct {
		Sent, Acked string
		Pushes      int
	} `json:"types"`
}

// restartStreams is how many raw ADS clients reconnect at once.
const restartStreams = 1000

// TestFaultRestartWith1000Streams: 1,000 ADS clients (each on its own
// connection, sidecars of 20 services) and a real Envoy carrying requests
// are connected when sluice is restarted on the same address. The clients
// retry every 100 ms to 1 s, so they all come back within about a second
// of the new process listening. Measured: the time until every client has
// all four types answered and acknowledged again, and sluice's peak
// resident memory. No thundering herd: the new process builds each
// group's snapshot a bounded number of times and sends each stream a
// bounded number of responses, refuses no group, and every client ends up
// with the very versions it held before (they are content hashes). No
// request through the Envoy fails. Not parallel: its times and memory are
// measured with no other test running.
func TestFaultRestartWith1000Streams(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	bs := startHTTPBackends(t, 1)
	const services = 20
	var b strings.Builder
	b.WriteString(registry("user-service", instance(bs[0].addr, "")))
	for i := range services {
		var ins []string
		for j := range 3 {
			ins = append(ins, fmt.Sprintf("{address: 10.0.%d.%d, port: 8080}", i, j+1))
		}
		b.WriteString(serviceEntry(fmt.Sprintf("svc-%02d", i), ins...))
	}
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, b.String())
	xdsAddr := fmt.Sprintf("127.0.0.1:%d", listenerPort(t))
	args := []string{"--registry-file", reg, "--xds-addr", xdsAddr}
	s := startSluice(t, args...)
	e := startEnvoy(t, s, "frontend", "frontend-restart")
	envoyWaitOnly(t, e, "user-service", "http-0")

	clients := make([]*adsClient, restartStreams)
	start := time.Now()
	for i := range clients {
		svc := fmt.Sprintf("svc-%02d", i%services)
		clients[i] = startADSClient(t, xdsAddr, sidecarNode(fmt.Sprintf("%s-%d", svc, i), svc), 0)
	}
	waitAllSynced(t, clients, 1, 2*time.Minute)
	firstSync := time.Since(start)
	firstPeak := procStatusKiB(t, s.pid(), "VmHWM")
	waitAllAcked(t, s, restartStreams+1)
	before := ackedVersions(t, s)
	tr := startTraffic(t, e, "user-service")
	tr.waitSent(t, 50)

	stopAt := time.Now()
	stopProcess(s.cmd)
	stopped := time.Since(stopAt)
	waitPortFree(t, xdsAddr)
	restartAt := time.Now()
	s2 := startSluice(t, args...)
	serving := time.Now()
	last := waitAllSynced(t, clients, 2, 2*time.Minute)
	resync := last.Sub(serving)
	peak := procStatusKiB(t, s2.pid(), "VmHWM")

	// Every client and the Envoy acknowledged, and hold what they held.
	proxies := waitAllAcked(t, s2, restartStreams+1)
	after := ackedVersions(t, s2)
	for g, v := range before {
		if after[g] != v {
			t.Errorf("group %s: versions %v before the restart, %v after", g, v, after[g])
		}
	}
	maxPushes := 0
	for _, p := range proxies {
		for _, st := range p.Types {
			maxPushes = max(maxPushes, st.Pushes)
		}
	}
	pushes := s2.metric(t, "sluice_xds_pushes_total")
	builds := s2.metric(t, "sluice_snapshot_builds_total")
	refused := s2.metric(t, "sluice_proxy_groups_refused_total")
	groups := len(before)

	// A herd the server handles: each stream answered about once per type,
	// each group built about once.
	streams := float64(restartStreams + 1)
	if pushes > 2*4*streams {
		t.Errorf("%v responses to %v streams after the restart: more than twice one per type", pushes, streams)
	}
	if maxPushes > 3 {
		t.Errorf("a stream was sent one type %d times after the restart", maxPushes)
	}
	if builds > 5*float64(groups) {
		t.Errorf("%v snapshot builds for %d groups after the restart", builds, groups)
	}
	if refused != 0 {
		t.Errorf("%v proxy groups refused after the restart", refused)
	}
	if peak > 2*firstPeak {
		t.Errorf("peak resident memory %d KiB after the restart, %d KiB at the first sync: the herd costs more than twice as much", peak, firstPeak)
	}
	tr.waitSent(t, 50)
	tr.check(t, "restart with 1,000 streams")
	tr.figures(t, fmt.Sprintf("restart with %d streams", restartStreams+1),
		"first sync of all clients in", firstSync, "graceful stop took", stopped,
		"new process serving after", serving.Sub(restartAt), "all resynced after serving in", resync,
		"peak RSS (VmHWM) KiB", fmt.Sprintf("%d (first process: %d)", peak, firstPeak), "race detector", sluiceRace,
		"responses", pushes, "max responses of one type to one stream", maxPushes,
		"snapshot builds", builds, "groups", groups, "groups refused", refused)
}

// waitAllSynced waits until every client has all four types answered on
// its stream number n (or a later one), and returns when the last did.
func waitAllSynced(t *testing.T, clients []*adsClient, n int64, timeout time.Duration) time.Time {
	t.Helper()
	var last time.Time
	eventually(t, timeout, fmt.Sprintf("%d clients to sync on stream %d", len(clients), n), func() error {
		behind := 0
		var example error
		for _, c := range clients {
			at, ok := c.synced()
			if c.streams.Load() < n || !ok {
				behind++
				if example == nil {
					example = fmt.Errorf("%s: %d streams, %w", c.node.GetId(), c.streams.Load(), c.syncErr())
				}
				continue
			}
			if at.After(last) {
				last = at
			}
		}
		if behind > 0 {
			return fmt.Errorf("%d not synced, e.g. %w", behind, example)
		}
		return nil
	})
	return last
}

// waitAllAcked waits until s has streams streams and sluice has received
// each one's acknowledgement of everything it sent, and returns them. A
// client counts itself synced once it sent its last ACK, which sluice may
// not have read yet.
func waitAllAcked(t *testing.T, s *sluice, streams int) []proxyState {
	t.Helper()
	var proxies []proxyState
	eventually(t, time.Minute, "every stream to acknowledge what it was sent", func() error {
		proxies = nil
		s.adminJSON(t, "/debug/proxies", &proxies)
		if len(proxies) != streams {
			return fmt.Errorf("%d streams, want %d", len(proxies), streams)
		}
		for _, p := range proxies {
			for typ, st := range p.Types {
				if st.Sent == "" || st.Sent != st.Acked {
					return fmt.Errorf("%s %s: sent %q, acked %q", p.NodeID, typ, st.Sent, st.Acked)
				}
			}
		}
		return nil
	})
	return proxies
}

// ackedVersions maps each proxy group to the versions its streams acked,
// by type, checking that every stream of a group acked the same.
func ackedVersions(t *testing.T, s *sluice) map[string]string {
	t.Helper()
	var proxies []proxyState
	s.adminJSON(t, "/debug/proxies", &proxies)
	out := map[string]string{}
	for _, p := range proxies {
		var vs []string
		for typ, st := range p.Types {
			vs = append(vs, typ+"="+st.Acked)
		}
		slices.Sort(vs)
		v := strings.Join(vs, " ")
		if old, ok := out[p.Group]; ok && old != v {
			t.Fatalf("group %s: streams acked %s and %s", p.Group, old, v)
		}
		out[p.Group] = v
	}
	return out
}

// liveHeapBytes is sluice's heap after two garbage collections (the second
// one frees what the first moved to sync.Pool's victim cache).
func (s *sluice) liveHeapBytes(t *testing.T) float64 {
	t.Helper()
	for range 2 {
		resp, err := http.Get("http://" + s.AdminAddr + "/debug/pprof/heap?gc=1")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	return s.metric(t, "go_memstats_alloc_bytes")
}

// TestFaultSlowConsumer: 20 clients that subscribe to a large catalog
// (300 services of 10 instances, so one response overflows their fixed
// 64 KiB flow-control windows) and never read, and 5 that read one
// response every 2 s, are connected while the registry changes five times.
// Each change reaches a real Envoy and a normal ADS client promptly, no
// request through the Envoy fails, and the slow clients catch up with the
// last change. A control sluice serves the same
// registry to one normal client only: sluice's live heap exceeds the
// control's by no more than the stuck clients' streams cost, and grows with
// the changes no more than the control's does (the stuck clients queue
// nothing). Not parallel, as TestFaultRestartWith1000Streams.
func TestFaultSlowConsumer(t *testing.T) {
	requireE2E(t)
	envoyBinary(t)
	bs := startHTTPBackends(t, 2)
	catalog := func(round int, user string) string {
		var b strings.Builder
		b.WriteString(registry("user-service", user))
		for i := range 300 {
			var ins []string
			for j := range 10 {
				health := ""
				if j == round%10 {
					health = "health: unhealthy" // every service changes every round
				}
				ins = append(ins, instance(fmt.Sprintf("10.%d.%d.%d:8080", i/250, i%250, j+1), health))
			}
			b.WriteString(serviceEntry(fmt.Sprintf("svc-%03d", i), ins...))
		}
		return b.String()
	}
	backendOf := func(round int) *backend { return bs[round%2] }
	reg := filepath.Join(t.TempDir(), "registry.yaml")
	writeFile(t, reg, catalog(0, instance(backendOf(0).addr, "")))
	s := startSluice(t, "--registry-file", reg)
	control := startSluice(t, "--registry-file", reg)
	e := startEnvoy(t, s, "frontend", "frontend-slow-consumer")
	envoyWaitOnly(t, e, "user-service", backendOf(0).name)
	normal := startADSClient(t, s.XDSAddr, sidecarNode("frontend-normal", "frontend"), 0)
	controlClient := startADSClient(t, control.XDSAddr, sidecarNode("frontend-control", "frontend"), 0)
	waitAllSynced(t, []*adsClient{normal, controlClient}, 1, time.Minute)
	names := normal.held(resource.EndpointType)
	if len(names) < 300 {
		t.Fatalf("the normal client holds %d load assignments, want the 301 of the catalog", len(names))
	}
	if n := normal.edsBytes(); n <= 64<<10 {
		t.Fatalf("the load assignments are %d bytes: they would fit a stuck client's 64 KiB window", n)
	}

	const stuck, slow = 20, 5
	for i := range stuck {
		stuckADS(t, s.XDSAddr, sidecarNode(fmt.Sprintf("frontend-stuck-%d", i), "frontend"), names)
	}
	var slowClients []*adsClient
	for i := range slow {
		slowClients = append(slowClients, startADSClient(t, s.XDSAddr, sidecarNode(fmt.Sprintf("frontend-slow-%d", i), "frontend"), 2*time.Second))
	}
	eventually(t, time.Minute, "every client connected", func() error {
		if n := s.metric(t, "sluice_xds_connected_proxies"); n != float64(2+stuck+slow) {
			return fmt.Errorf("%v streams connected", n)
		}
		return nil
	})
	heapBefore, controlBefore := s.liveHeapBytes(t), control.liveHeapBytes(t)
	tr := startTraffic(t, e, "user-service")
	tr.waitSent(t, 50)

	const rounds = 5
	var worst time.Duration
	for round := 1; round <= rounds; round++ {
		b := backendOf(round)
		changed := time.Now()
		writeFile(t, reg, catalog(round, instance(b.addr, "")))
		envoyWaitOnly(t, e, "user-service", b.name)
		for _, c := range []*adsClient{normal, controlClient} {
			eventually(t, 20*time.Second, fmt.Sprintf("round %d at %s", round, c.node.GetId()), func() error {
				if got := c.endpoints("user-service"); !slices.Equal(got, []string{b.addr}) {
					return fmt.Errorf("user-service endpoints %v, want %s", got, b.addr)
				}
				return nil
			})
		}
		worst = max(worst, time.Since(changed))
	}
	heapAfter, controlAfter := s.liveHeapBytes(t), control.liveHeapBytes(t)
	peak := procStatusKiB(t, s.pid(), "VmHWM")
	if worst > 10*time.Second {
		t.Errorf("a change took %s to reach the Envoy and the normal client with stuck clients connected", worst)
	}
	const mib = 1 << 20
	if more := heapAfter - controlAfter; more > 32*mib {
		t.Errorf("sluice's live heap is %.1f MiB, the control's %.1f MiB: the stuck and slow clients cost %.1f MiB",
			heapAfter/mib, controlAfter/mib, more/mib)
	}
	if grew := (heapAfter - heapBefore) - (controlAfter - controlBefore); grew > 16*mib {
		t.Errorf("over %d changes sluice's live heap grew by %.1f MiB, the control's by %.1f MiB: the stuck clients hold on to what they were not sent",
			rounds, (heapAfter-heapBefore)/mib, (controlAfter-controlBefore)/mib)
	}
	// The slow clients catch up with the last change, not with a backlog
	// of every change.
	latest := []string{backendOf(rounds).addr}
	for _, c := range slowClients {
		eventually(t, time.Minute, c.node.GetId()+" to catch up", func() error {
			if got := c.endpoints("user-service"); !slices.Equal(got, latest) {
				return fmt.Errorf("user-service endpoints %v, want %v", got, latest)
			}
			return nil
		})
	}
	slowResponses := int64(0)
	for _, c := range slowClients {
		slowResponses += c.responses.Load()
	}
	tr.waitSent(t, 50)
	tr.check(t, "slow consumers")
	tr.figures(t, fmt.Sprintf("%d stuck and %d slow consumers, %d changes", stuck, slow, rounds),
		"slowest change to Envoy and the normal client", worst,
		"live heap MiB before/after", fmt.Sprintf("%.1f/%.1f (control %.1f/%.1f)", heapBefore/mib, heapAfter/mib, controlBefore/mib, controlAfter/mib),
		"peak RSS (VmHWM) KiB", peak, "race detector", sluiceRace, "responses the slow clients read to catch up", slowResponses)
}
