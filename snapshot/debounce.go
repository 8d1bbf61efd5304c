package snapshot

import "time"

// debouncer coalesces a burst of changes into one build: it fires holdOff
// after the last change, and at the latest maxDelay after the burst's
// first, so changes that keep coming still get built.
type debouncer struct {
	holdOff, maxDelay time.Duration
	timer             *time.Timer
	// first is when the pending burst began; zero when nothing is
	// pending.
	first time.Time
}

func newDebouncer(holdOff, maxDelay time.Duration) *debouncer {
	t := time.NewTimer(holdOff)
	t.Stop()
	return &debouncer{holdOff: holdOff, maxDelay: maxDelay, timer: t}
}

// changed records a change made at now and sets the timer.
func (d *debouncer) changed(now time.Time) {
	if d.first.IsZero() {
		d.first = now
	}
	wait := min(d.holdOff, max(d.first.Add(d.maxDelay).Sub(now), 0))
	// Reset drops a tick the timer sent that nobody received (Go 1.23
	// timers), so no stale tick fires a build early.
	d.timer.Reset(wait)
}

// C delivers a tick when the pending burst is to be built; call fired
// when it did.
func (d *debouncer) C() <-chan time.Time { return d.timer.C }

// fired ends the pending burst.
func (d *debouncer) fired() { d.first = time.Time{} }

func (d *debouncer) stop() { d.timer.Stop() }
