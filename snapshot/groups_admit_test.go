package snapshot

import (
	"errors"
	"testing"
	"time"
)

// TestLoopRateRefusalKeepsIdleGroup: at the group limit, a new group that
// the creation rate refuses must not cost an idle group its place.
func TestLoopRateRefusalKeepsIdleGroup(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLoop(Config{Sources: []string{"a"}, Translator: nil, Publisher: &orderedPublisher{},
		MaxGroups: 1, GroupRate: 0.1, Now: func() time.Time { return now }}) // burst 1
	if err := l.EnsureGroup(sidecarOf("a")); err != nil {
		t.Fatal(err)
	}
	l.ReleaseGroup(sidecarOf("a"))
	if err := l.EnsureGroup(sidecarOf("b")); !errors.Is(err, ErrGroupRate) {
		t.Fatalf("b: %v, want ErrGroupRate", err)
	}
	if _, ok := l.groups[sidecarOf("a").Key()]; !ok {
		t.Fatalf("the new group was refused, yet the idle group a was evicted (groups: %d, evicted: %v)", len(l.groups), l.evicted)
	}
}
