package snapshot

import (
	"math"
	"runtime/metrics"
	"time"
)

// MemoryPressureFraction is the share of the Go runtime's memory limit
// above which the process is short of memory. It leaves the garbage
// collector room before the limit, where it would run ever more often.
const MemoryPressureFraction = 0.8

// memoryCheckInterval is how often an otherwise quiet loop looks at its
// memory; it also looks after everything it does.
const memoryCheckInterval = 5 * time.Second

// MemoryUse is the memory the Go runtime holds and its limit, in bytes.
type MemoryUse struct {
	InUse uint64
	// Limit is the runtime's soft memory limit (GOMEMLIMIT); 0 when none
	// is set.
	Limit uint64
}

// short reports whether m is above MemoryPressureFraction of its limit.
// Without a limit the process is never short.
func (m MemoryUse) short() bool {
	return m.Limit > 0 && float64(m.InUse) > MemoryPressureFraction*float64(m.Limit)
}

// RuntimeMemory reads the Go runtime's memory in use and its soft limit
// (GOMEMLIMIT, or debug.SetMemoryLimit). In use is measured as the runtime
// measures it against the limit (see debug.SetMemoryLimit): all it mapped
// minus what it returned to the system. That counts stacks, runtime
// metadata and free memory not yet returned, which a container's memory
// cgroup charges too, and it moves slowly (freed memory is returned in the
// background), so pressure does not come and go with each collection. It
// costs one runtime/metrics read, no stop of the world.
func RuntimeMemory() MemoryUse {
	s := [...]metrics.Sample{
		{Name: "/gc/gomemlimit:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	metrics.Read(s[:])
	for _, v := range s {
		if v.Value.Kind() != metrics.KindUint64 {
			return MemoryUse{} // a runtime without these metrics
		}
	}
	m := MemoryUse{InUse: s[1].Value.Uint64() - s[2].Value.Uint64(), Limit: s[0].Value.Uint64()}
	if m.Limit >= math.MaxInt64 { // the runtime's "no limit"
		m.Limit = 0
	}
	return m
}

// pressureEpisode is a stretch of time the process is short of memory.
type pressureEpisode struct {
	on       bool
	released int
}

// relieveMemory forgets every group without proxies while the process is
// short of memory, rather than after GroupIdleTTL: such a group costs a
// translation on every change and its snapshot's memory, and a proxy of it
// that connects again gets it rebuilt at once. The start of an episode is
// logged as a warning, its end with what it released. Only the loop's
// goroutine runs it.
func (l *Loop) relieveMemory() {
	use := l.cfg.Memory()
	if !use.short() {
		if l.pressure.on {
			l.cfg.Log.Info("memory pressure is over", "released_groups", l.pressure.released,
				"in_use_bytes", use.InUse, "limit_bytes", use.Limit)
			l.pressure = pressureEpisode{}
		}
		return
	}
	l.mu.Lock()
	released := l.removeIdle(func(time.Time) bool { return true })
	inUse := len(l.groups)
	l.mu.Unlock()
	l.forget(released, "memory")
	if !l.pressure.on {
		l.cfg.Log.Warn("memory is short: released the proxy groups without proxies, and releases each group as its last proxy leaves",
			"released_groups", len(released), "groups_in_use", inUse,
			"in_use_bytes", use.InUse, "limit_bytes", use.Limit, "pressure_above", MemoryPressureFraction)
	}
	l.pressure.on = true
	l.pressure.released += len(released)
}
