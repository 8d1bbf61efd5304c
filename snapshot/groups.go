package snapshot

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
	"github.com/sluice-mesh/sluice/translator"
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

// DefaultGroupIdleTTL is how long a proxy group outlives its last proxy:
// long enough to ride out restarts and rolling deploys without a rebuild,
// short enough that groups of services that are gone (canaries, versioned
// deploys) stop costing a translation on every change.
const DefaultGroupIdleTTL = 10 * time.Minute

// ErrTooManyGroups and ErrGroupRate refuse a new proxy group.
var (
	ErrTooManyGroups = errors.New("too many proxy groups")
	ErrGroupRate     = errors.New("new proxy groups are coming too fast")
)

// group is one proxy group: its identity, and what its snapshot was last
// built from.
type group struct {
	proxy    translator.Proxy
	versions map[resource.Type]string
	// builtPolicy and builtCatalog are what the group's snapshot was
	// built from; the admin API works out the group's dependencies from
	// them when asked, not on every build.
	builtPolicy  *policy.Set
	builtCatalog sources.Catalog
	// diags are the translator's diagnostics of the group's snapshot.
	diags []sources.Diagnostic
	err   string
	fresh bool // registered but never built
	// idleSince is when the group's last proxy left; zero while in use.
	idleSince time.Time
	// history are the group's last builds, for telling what a client
	// accepted and what it rejected (rollback.go).
	history []buildRecord
	// lastNack is the last rejection a client of the group reported,
	// explained (provenance.go); nackLogged the version of each type
	// whose rejection was logged last.
	lastNack   *NackReport
	nackLogged map[string]string
}

// built records that g's snapshot, of versions, is the one pol and
// catalog make. Called with l.mu held.
func (g *group) built(versions map[resource.Type]string, pol *policy.Set, catalog sources.Catalog, diags []sources.Diagnostic) {
	g.versions = versions
	g.builtPolicy, g.builtCatalog, g.diags = pol, catalog, diags
	g.err, g.fresh = "", false
	g.remember(versions, pol, catalog)
}

// EnsureGroup registers the config group of a newly seen proxy. The group's
// first snapshot is built at once (no debounce) when the catalog is ready, so
// a connecting proxy is not kept waiting. A new group is refused
// (ErrTooManyGroups, ErrGroupRate) beyond MaxGroups groups, unless one of
// them has no proxies (the one idle longest is then forgotten), and beyond
// GroupRate new groups a second.
func (l *Loop) EnsureGroup(p translator.Proxy) error {
	key := p.Key()
	l.mu.Lock()
	if g, ok := l.groups[key]; ok {
		g.idleSince = time.Time{}
		l.mu.Unlock()
		return nil
	}
	if err := l.admitGroup(key); err != nil {
		l.mu.Unlock()
		return err
	}
	l.groups[key] = &group{proxy: p, fresh: true}
	l.mu.Unlock()
	l.poke()
	return nil
}

// ReleaseGroup says the last proxy of a group disconnected. The group is
// dropped (and its snapshot cleared) once it stayed unused for GroupIdleTTL,
// or at once while memory is short (see Config.Memory); a proxy of the
// group connecting before then keeps it.
func (l *Loop) ReleaseGroup(p translator.Proxy) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if g, ok := l.groups[p.Key()]; ok && g.idleSince.IsZero() {
		g.idleSince = l.cfg.Now()
	}
}

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

// dropIdleGroups forgets the groups that stayed unused for GroupIdleTTL.
// Only the loop's goroutine runs it.
func (l *Loop) dropIdleGroups() {
	l.mu.Lock()
	now := l.cfg.Now()
	drop := l.removeIdle(func(since time.Time) bool { return now.Sub(since) >= l.cfg.GroupIdleTTL })
	l.mu.Unlock()
	l.forget(drop, "idle")
	for _, key := range drop {
		l.cfg.Log.Info("dropped an unused proxy group", "group", key, "idle_for", l.cfg.GroupIdleTTL)
	}
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
	l.forget(evicted, "limit")
}

// removeIdle unregisters the groups without proxies for which expired,
// given when their last proxy left, is true, and returns their keys.
// Called with l.mu held.
func (l *Loop) removeIdle(expired func(idleSince time.Time) bool) []string {
	var keys []string
	for key, g := range l.groups {
		if !g.idleSince.IsZero() && expired(g.idleSince) {
			keys = append(keys, key)
			delete(l.groups, key)
		}
	}
	return keys
}

// forget drops the pipelines and cache entries of groups no longer
// registered, and counts them as released for reason. Only the loop's
// goroutine runs it, so a group made again since is built (and
// published) after its old entry is cleared.
func (l *Loop) forget(keys []string, reason string) {
	for _, key := range keys {
		l.pipes.drop(key)
		l.cfg.Publisher.ClearSnapshot(key)
	}
	l.cfg.Metrics.groupsReleased.WithLabelValues(reason).Add(float64(len(keys)))
}

// groupsToBuild returns the groups a build translates, in key order: every
// group, or with onlyFresh those never built. Called with l.mu held.
func (l *Loop) groupsToBuild(onlyFresh bool) []*group {
	var keys []string
	for key, g := range l.groups {
		if !onlyFresh || g.fresh {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	todo := make([]*group, len(keys))
	for i, key := range keys {
		todo[i] = l.groups[key]
	}
	return todo
}
