package snapshot

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
)

// orderedPublisher records SetSnapshot and ClearSnapshot in order.
type orderedPublisher struct {
	mu  sync.Mutex
	ops []string // "set <key>" / "clear <key>"
}

func (p *orderedPublisher) SetSnapshot(_ context.Context, node string, _ cache.ResourceSnapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ops = append(p.ops, "set "+node)
	return nil
}

func (p *orderedPublisher) ClearSnapshot(node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ops = append(p.ops, "clear "+node)
}

func (p *orderedPublisher) lastFor(node string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.ops) - 1; i >= 0; i-- {
		if p.ops[i] == "set "+node || p.ops[i] == "clear "+node {
			return p.ops[i]
		}
	}
	return ""
}

// TestLoopReadmittedGroupKeepsItsSnapshot: group X is evicted to make
// room, then admitted again (its proxy reconnects) before the loop's
// goroutine dropped the evicted groups. Even when a full build runs first
// and publishes X, dropping the evicted groups must not clear X's new
// snapshot.
func TestLoopReadmittedGroupKeepsItsSnapshot(t *testing.T) {
	pub := &orderedPublisher{}
	l := NewLoop(Config{Sources: []string{"a"}, Translator: translator.New(), Publisher: pub,
		Log: slog.New(slog.DiscardHandler), MaxGroups: 1, GroupRate: 1000})
	st := sources.State{Services: []sources.Service{{Name: "api", Instances: []sources.Instance{{Address: "10.0.0.1", Port: 80, Health: sources.HealthHealthy}}}}}
	st.Normalize("a")
	l.apply(sources.Event{Source: "a", State: &st})
	ctx := context.Background()

	x, y := sidecarOf("x"), sidecarOf("y")
	if err := l.EnsureGroup(x); err != nil {
		t.Fatal(err)
	}
	l.dropEvicted()
	l.build(ctx, true)
	l.ReleaseGroup(x)                        // X's proxy leaves
	if err := l.EnsureGroup(y); err != nil { // evicts X
		t.Fatal(err)
	}
	l.ReleaseGroup(y)                        // Y's proxy leaves
	if err := l.EnsureGroup(x); err != nil { // X's proxy is back: evicts Y, X is fresh again
		t.Fatal(err)
	}
	// The timer's full build wins the select over the pending wake.
	l.build(ctx, false)
	// Then the wake: dropEvicted, and a build of fresh groups.
	l.dropEvicted()
	l.build(ctx, true)
	// Later full builds (nothing changed).
	l.build(ctx, false)
	l.build(ctx, false)

	if _, ok := l.groups[x.Key()]; !ok {
		t.Fatal("group x is not registered")
	}
	if got := pub.lastFor(x.Key()); got != "set "+x.Key() {
		t.Fatalf("group x has a connected proxy, but the last publisher call for it is %q (ops: %v)", got, pub.ops)
	}
}
