package consul

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// numWatches is the number of blocking queries a running source keeps open.
const numWatches = 3

// queryFunc runs one query: blocking for changes after index when index > 0,
// answering at once when index is 0. It returns the result and its index.
type queryFunc[T any] func(ctx context.Context, index uint64) (T, uint64, error)

// update is one new result of a watch.
type update[T any] struct {
	value T
	index uint64
	// reset says the index went backwards (a snapshot restore, a new
	// cluster behind the same address, a stale server): the value is a
	// fresh start rather than a successor of the last one.
	reset bool
}

// sink receives the updates of a watch.
type sink[T any] interface{ put(u update[T]) }

// latest holds the newest update of a watch until the session loop takes
// it; a newer update replaces an untaken one (the loop diffs against what it
// took last, so nothing is lost), and the watch never blocks on a busy loop.
type latest[T any] struct {
	mu     sync.Mutex
	v      update[T]
	has    bool
	notify chan struct{}
}

func newLatest[T any]() *latest[T] { return &latest[T]{notify: make(chan struct{}, 1)} }

func (l *latest[T]) put(u update[T]) {
	l.mu.Lock()
	if l.has && l.v.reset {
		u.reset = true // a replaced reset still counts
	}
	l.v, l.has = u, true
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *latest[T]) take() (update[T], bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, ok := l.v, l.has
	l.v, l.has = update[T]{}, false
	return u, ok
}

// watch runs a blocking-query loop following Consul's guidance, putting each
// changed result into out, until ctx ends (nil) or a query fails (the error).
//
//   - The first query (and the one after a reset) has index 0 and answers at
//     once; after that each query blocks until the index passes the last one.
//   - A result with the same index is a timeout: nothing changed.
//   - An index that goes backwards resets the loop: the result, a complete
//     read like any other, is delivered as a fresh start, and the next query
//     blocks on its (lower) index. (Restarting at index 0 would only read the
//     same data once more.)
//   - An index of 0 after a query is a Consul bug that would make every
//     query return at once; it is treated as 1.
//   - Two queries start at least minInterval (plus up to 10% jitter) apart,
//     so a flapping resource costs at most one read per interval.
func watch[T any](ctx context.Context, q queryFunc[T], minInterval time.Duration, out sink[T]) error {
	var index uint64
	var last time.Time
	for {
		if wait := time.Until(last.Add(minInterval + jitter(minInterval/10))); wait > 0 && !last.IsZero() {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		last = time.Now()
		v, next, err := q(ctx, index)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		reset := next < index
		if next == 0 {
			next = 1
		}
		switch {
		case reset:
			out.put(update[T]{value: v, index: next, reset: true})
			index = next
		case index != 0 && next == index:
			// The wait timed out without a change.
		default:
			out.put(update[T]{value: v, index: next})
			index = next
		}
	}
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// backoff is the delay before attempt n (1-based) to reach Consul again:
// exponential from lo, capped at hi, with "equal jitter" (half fixed, half
// random) so that many sluice replicas do not retry in lockstep.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + jitter(d/2+1)
}
