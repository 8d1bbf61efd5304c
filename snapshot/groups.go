package snapshot

import (
	"errors"
	"fmt"
	"slices"
)

// Limits on proxy groups. Every distinct proxy identity (node.cluster and
// metadata) is a group that is translated and kept, so without limits a
// client that makes up identities makes sluice's memory grow without
// bound.
const (
	// DefaultMaxGroups is room for a sidecar group per service of a large
	// mesh, plus gateways and headroom.
	DefaultMaxGroups = 5000
	// DefaultGroupRate is new groups per second in the long run; a burst
	// of DefaultGroupBurstSeconds of it is allowed at once, which covers a
	// whole mesh reconnecting after a restart.
	DefaultGroupRate         = 200.0
	DefaultGroupBurstSeconds = 10
)

// ErrTooManyGroups and ErrGroupRate refuse a new proxy group.
var (
	ErrTooManyGroups = errors.New("too many proxy groups")
	ErrGroupRate     = errors.New("new proxy groups are coming too fast")
)

// admitGroup decides whether a new group may be made, making room by
// forgetting the group that has been idle longest when the limit is
// reached. Called with l.mu held.
func (l *Loop) admitGroup(key string) error {
	now := l.cfg.Now()
	// The pace first: a refused group must not cost an idle one its place.
	if !l.groupRate.AllowN(now, 1) {
		l.cfg.Metrics.groupsRefused.WithLabelValues("rate").Inc()
		return fmt.Errorf("%w: more than %.0f a second (--proxy-group-rate); refusing %s", ErrGroupRate, l.cfg.GroupRate, key)
	}
	if len(l.groups) >= l.cfg.MaxGroups {
		oldest := ""
		for k, g := range l.groups {
			if !g.idleSince.IsZero() && (oldest == "" || g.idleSince.Before(l.groups[oldest].idleSince)) {
				oldest = k
			}
		}
		if oldest == "" {
			l.cfg.Metrics.groupsRefused.WithLabelValues("limit").Inc()
			return fmt.Errorf("%w: %d groups have connected proxies (--max-proxy-groups); refusing %s", ErrTooManyGroups, len(l.groups), key)
		}
		// Its pipeline and cache entry go at the loop's next turn.
		delete(l.groups, oldest)
		l.evicted = append(l.evicted, oldest)
		l.cfg.Log.Warn("proxy group limit reached; forgot the group idle longest", "group", oldest, "max_groups", l.cfg.MaxGroups)
	}
	// A group evicted earlier and now back is not dropped again.
	l.evicted = slices.DeleteFunc(l.evicted, func(k string) bool { return k == key })
	return nil
}

// dropEvicted forgets the pipelines and cache entries of groups evicted
// to make room. Only the loop's goroutine runs it.
func (l *Loop) dropEvicted() {
	l.mu.Lock()
	var evicted []string
	for _, key := range l.evicted {
		// A group made again since (a proxy of it came back) keeps its
		// pipeline and snapshot.
		if _, back := l.groups[key]; !back {
			evicted = append(evicted, key)
		}
	}
	l.evicted = nil
	l.mu.Unlock()
	for _, key := range evicted {
		delete(l.pipes, key)
		l.cfg.Publisher.ClearSnapshot(key)
	}
}
