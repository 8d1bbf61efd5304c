package snapshot

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-mesh/sluice/translator"
)

func sidecarOf(service string) translator.Proxy {
	return translator.Proxy{Kind: translator.KindEnvoy, Role: translator.RoleSidecar, Service: service}
}

func refused(t *testing.T, l *Loop, reason string) float64 {
	t.Helper()
	return counter(t, l.cfg.Metrics.groupsRefused, reason)
}

// counter reads the counter of c with the given label values.
func counter(t *testing.T, c *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// gaugeValue reads the gauge of g with the given label values.
func gaugeValue(t *testing.T, g *prometheus.GaugeVec, labels ...string) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// TestLoopLimitsGroups: beyond MaxGroups a new group is refused while every
// group has proxies; once one has none, the one idle longest makes room
// (its pipeline and cache entry are dropped).
func TestLoopLimitsGroups(t *testing.T) {
	l := startLoop(t, Config{Sources: []string{"a"}, MaxGroups: 2, GroupRate: 1000})
	for _, s := range []string{"a", "b"} {
		if err := l.EnsureGroup(sidecarOf(s)); err != nil {
			t.Fatalf("group %s: %v", s, err)
		}
	}
	if err := l.EnsureGroup(sidecarOf("a")); err != nil {
		t.Fatalf("a known group was refused: %v", err)
	}
	if err := l.EnsureGroup(sidecarOf("c")); !errors.Is(err, ErrTooManyGroups) {
		t.Fatalf("a third group with two in use: %v, want ErrTooManyGroups", err)
	}
	if n := refused(t, l.Loop, "limit"); n != 1 {
		t.Fatalf("sluice_proxy_groups_refused_total{reason=limit} = %v, want 1", n)
	}
	l.ReleaseGroup(sidecarOf("a"))
	if err := l.EnsureGroup(sidecarOf("c")); err != nil {
		t.Fatalf("a third group with one idle: %v", err)
	}
	waitFor(t, "the evicted group's snapshot to be cleared", func() bool {
		l.pub.mu.Lock()
		defer l.pub.mu.Unlock()
		return slices.Contains(l.pub.cleared, sidecarOf("a").Key())
	})
	var keys []string
	for _, g := range l.Status().Groups {
		keys = append(keys, g.Key)
	}
	if want := []string{sidecarOf("b").Key(), sidecarOf("c").Key()}; !slices.Equal(keys, want) {
		t.Fatalf("groups %v, want %v", keys, want)
	}
}

// TestLoopPacesNewGroups: new groups beyond the burst are refused until
// time has refilled the bucket.
func TestLoopPacesNewGroups(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := startLoop(t, Config{Sources: []string{"a"}, GroupRate: 1, Now: clock}) // burst: 10
	for i := range DefaultGroupBurstSeconds {
		if err := l.EnsureGroup(sidecarOf(fmt.Sprintf("s%d", i))); err != nil {
			t.Fatalf("group %d of the burst: %v", i, err)
		}
	}
	if err := l.EnsureGroup(sidecarOf("late")); !errors.Is(err, ErrGroupRate) {
		t.Fatalf("a group beyond the burst: %v, want ErrGroupRate", err)
	}
	if n := refused(t, l.Loop, "rate"); n != 1 {
		t.Fatalf("sluice_proxy_groups_refused_total{reason=rate} = %v, want 1", n)
	}
	mu.Lock()
	now = now.Add(1500 * time.Millisecond)
	mu.Unlock()
	if err := l.EnsureGroup(sidecarOf("late")); err != nil {
		t.Fatalf("after a second and a half: %v", err)
	}
}
