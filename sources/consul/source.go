package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/sluice-mesh/sluice/sources"
)

// Source watches a Consul datacenter's services and their health.
type Source struct {
	cfg    Config
	client *api.Client
	log    *slog.Logger
}

// New validates cfg and returns a source; it does not contact Consul. A bad
// cfg is a *setting.Error naming the field.
func New(cfg Config) (*Source, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	cl, err := cfg.client()
	if err != nil {
		return nil, err
	}
	return &Source{cfg: cfg, client: cl, log: cfg.Log.With("source", SourceName)}, nil
}

// Name implements sources.Source.
func (s *Source) Name() string { return SourceName }

// Run implements sources.Source. It returns only when ctx ends: Consul being
// unreachable is reported with Err events and retried.
func (s *Source) Run(ctx context.Context, events chan<- sources.Event) error {
	pub := &publisher{events: events}
	for attempt := 1; ; attempt++ {
		synced, err := s.session(ctx, pub)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if synced {
			attempt = 1
		}
		if !pub.stale {
			s.log.Error("consul unreachable; keeping the last known instances", "err", err)
			if !pub.fail(ctx, fmt.Errorf("consul: %w", err)) {
				return ctx.Err()
			}
		} else {
			s.log.Debug("consul still unreachable", "err", err, "attempt", attempt)
		}
		t := time.NewTimer(backoff(attempt, s.cfg.RetryMin, s.cfg.RetryMax))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// publisher sends States when they change and one Err per outage.
type publisher struct {
	events chan<- sources.Event
	last   []byte // JSON of the last State sent
	sent   bool
	// stale is set once an Err was sent, until the next State.
	stale bool
}

func (p *publisher) state(ctx context.Context, st *sources.State) (bool, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return false, fmt.Errorf("encoding state: %w", err)
	}
	if p.sent && !p.stale && bytes.Equal(data, p.last) {
		return true, nil
	}
	if !sources.Send(ctx, p.events, sources.Event{Source: SourceName, State: st}) {
		return false, nil
	}
	p.last, p.sent, p.stale = data, true, false
	return true, nil
}

func (p *publisher) fail(ctx context.Context, err error) bool {
	if !sources.Send(ctx, p.events, sources.Event{Source: SourceName, Err: err}) {
		return false
	}
	p.stale = true
	return true
}

// checkKey identifies a health check in the datacenter.
type checkKey struct{ node, id string }

type checkState struct{ status, service string }

type nodeState struct {
	address string
	meta    map[string]string
	zone    string
	region  string
}

// session is one connected period: its watches, what they said last, and
// the services read since. Any failed query ends it.
type session struct {
	s   *Source
	pub *publisher

	catalog *latest[serviceList]
	checks  *latest[[]*api.HealthCheck]
	nodes   *latest[[]*api.Node]

	// services is the catalog's last answer (name → union of tags); nil
	// until the first.
	services map[string][]string
	// aclFiltered says Consul left services the token may not read out
	// of that answer.
	aclFiltered bool
	nonPassing  map[checkKey]checkState // nil until the first answer
	nodeInfo    map[string]nodeState    // nil until the first answer
	views       map[string]mapped       // services read so far

	dirty      map[string]bool // services to re-read
	full       bool            // every service to re-read
	fullAt     time.Time       // start of the last full re-read
	fullTook   time.Duration
	synced     bool // the first full read is done and published
	unsent     bool // views changed since the last publish
	inFlight   bool
	resyncWait *time.Timer
}

type batchResult struct {
	names []string
	views []mapped
	full  bool
	took  time.Duration
	err   error
}

// session runs until a query fails or ctx ends. synced reports whether it got
// as far as publishing a complete State.
func (s *Source) session(ctx context.Context, pub *publisher) (synced bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	ss := &session{
		s: s, pub: pub,
		catalog: newLatest[serviceList](),
		checks:  newLatest[[]*api.HealthCheck](),
		nodes:   newLatest[[]*api.Node](),
		views:   map[string]mapped{},
		dirty:   map[string]bool{},
		full:    true,
	}
	errc := make(chan error, numWatches)
	start := func(name string, run func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	iv := s.cfg.MinQueryInterval
	start("watching the service catalog", func() error { return watch(ctx, s.queryServices, iv, ss.catalog) })
	start("watching health checks", func() error { return watch(ctx, s.queryNonPassing, iv, ss.checks) })
	start("watching nodes", func() error { return watch(ctx, s.queryNodes, iv, ss.nodes) })

	results := make(chan batchResult, 1)
	var resync <-chan time.Time
	defer func() {
		if ss.resyncWait != nil {
			ss.resyncWait.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ss.synced, ctx.Err()
		case err := <-errc:
			return ss.synced, err
		case <-ss.catalog.notify:
			if u, ok := ss.catalog.take(); ok {
				ss.applyCatalog(u)
			}
		case <-ss.checks.notify:
			if u, ok := ss.checks.take(); ok {
				ss.applyChecks(u)
			}
		case <-ss.nodes.notify:
			if u, ok := ss.nodes.take(); ok {
				ss.applyNodes(u)
			}
		case r := <-results:
			ss.inFlight = false
			if r.err != nil {
				return ss.synced, r.err
			}
			ss.applyBatch(r)
		case <-resync:
			resync = nil
		}

		if ss.synced && ss.unsent && !ss.inFlight {
			if err := ss.publish(ctx); err != nil {
				return true, err
			}
		}
		if !ss.inFlight && ss.services != nil && ss.nonPassing != nil && ss.nodeInfo != nil {
			names, full, wait := ss.nextBatch(time.Now())
			if wait > 0 && resync == nil {
				ss.resyncWait = time.NewTimer(wait)
				resync = ss.resyncWait.C
			}
			if names != nil {
				ss.inFlight = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					results <- s.readServices(ctx, names, full)
				}()
			}
		}
	}
}

func (ss *session) applyCatalog(u update[serviceList]) {
	ss.services = u.value.tags
	if ss.services == nil {
		ss.services = map[string][]string{}
	}
	if ss.aclFiltered != u.value.filtered {
		ss.aclFiltered, ss.unsent = u.value.filtered, true
	}
	for name := range ss.views {
		if !ss.wanted(name) {
			delete(ss.views, name)
			ss.unsent = true
		}
	}
	ss.full = true
}

func (ss *session) applyChecks(u update[[]*api.HealthCheck]) {
	next := make(map[checkKey]checkState, len(u.value))
	for _, c := range u.value {
		next[checkKey{c.Node, c.CheckID}] = checkState{status: c.Status, service: c.ServiceName}
	}
	prev := ss.nonPassing
	ss.nonPassing = next
	if prev == nil {
		return // the baseline, read before the first full read
	}
	if u.reset {
		ss.full = true
		return
	}
	changed := func(k checkKey, c checkState) {
		if c.service != "" {
			ss.dirty[c.service] = true
		} else {
			ss.dirtyNode(k.node)
		}
	}
	for k, c := range next {
		if old, ok := prev[k]; !ok || old != c {
			changed(k, c)
		}
	}
	for k, c := range prev {
		if _, ok := next[k]; !ok {
			changed(k, c)
		}
	}
}

func (ss *session) applyNodes(u update[[]*api.Node]) {
	next := make(map[string]nodeState, len(u.value))
	for _, n := range u.value {
		next[n.Node] = nodeState{address: n.Address, meta: n.Meta, zone: localityZone(n.Locality), region: localityRegion(n.Locality)}
	}
	prev := ss.nodeInfo
	ss.nodeInfo = next
	if prev == nil {
		return
	}
	if u.reset {
		ss.full = true
		return
	}
	for name, n := range next {
		if old, ok := prev[name]; !ok || old.address != n.address || old.zone != n.zone || old.region != n.region || !maps.Equal(old.meta, n.meta) {
			ss.dirtyNode(name)
		}
	}
	for name := range prev {
		if _, ok := next[name]; !ok {
			ss.dirtyNode(name)
		}
	}
}

// dirtyNode marks every service with an instance on node for re-reading.
func (ss *session) dirtyNode(node string) {
	for name, v := range ss.views {
		if v.nodes[node] {
			ss.dirty[name] = true
		}
	}
}

// wanted reports whether a catalog service is to be read: it has a valid
// name and, with a tag filter, some instance may carry all the tags.
func (ss *session) wanted(name string) bool {
	return ss.selected(name) && sources.ValidServiceName(name)
}

// selected reports whether a service is in the catalog and, with a tag
// filter, the union of its instances' tags holds every wanted tag.
func (ss *session) selected(name string) bool {
	tags, ok := ss.services[name]
	if !ok || slices.Contains(ss.s.cfg.Exclude, name) {
		return false
	}
	for _, want := range ss.s.cfg.Tags {
		found := false
		for _, t := range tags {
			if t == want {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// nextBatch picks the services to read next: all of them when a full re-read
// is due, else the dirty ones. wait > 0 says when a pending full re-read will
// be due.
func (ss *session) nextBatch(now time.Time) (names []string, full bool, wait time.Duration) {
	if ss.full {
		gap := max(ss.s.cfg.MinResyncInterval, 4*ss.fullTook)
		if ss.fullAt.IsZero() || now.Sub(ss.fullAt) >= gap {
			ss.full, ss.fullAt = false, now
			clear(ss.dirty)
			names = []string{}
			for name := range ss.services {
				if ss.wanted(name) {
					names = append(names, name)
				}
			}
			sort.Strings(names)
			return names, true, 0
		}
		wait = gap - now.Sub(ss.fullAt)
	}
	for name := range ss.dirty {
		if ss.wanted(name) {
			names = append(names, name)
		} else if _, ok := ss.views[name]; ok {
			delete(ss.views, name)
			ss.unsent = true
		}
	}
	clear(ss.dirty)
	sort.Strings(names)
	return names, false, wait
}

func (ss *session) applyBatch(r batchResult) {
	if r.full {
		ss.fullTook = r.took
		// A full read replaces everything: drop what it did not see.
		seen := make(map[string]bool, len(r.names))
		for _, n := range r.names {
			seen[n] = true
		}
		for name := range ss.views {
			if !seen[name] {
				delete(ss.views, name)
			}
		}
		ss.s.log.Debug("read every service", "services", len(r.names), "took", r.took)
	}
	for i, name := range r.names {
		if !ss.wanted(name) {
			delete(ss.views, name) // deregistered while being read
			continue
		}
		ss.views[name] = r.views[i]
	}
	ss.unsent = true
	if r.full && !ss.synced {
		ss.synced = true
		ss.s.log.Info("consul catalog read", "services", len(ss.views))
	}
}

// publish sends the current State if it changed.
func (ss *session) publish(ctx context.Context) error {
	st := &sources.State{Services: []sources.Service{}}
	if ss.aclFiltered {
		st.Diagnostics = append(st.Diagnostics, sources.Diagnostic{
			Severity: sources.SeverityWarning,
			Source:   SourceName,
			Location: "consul:catalog/services",
			Message:  "Consul filtered services the ACL token may not read out of the catalog; they are not served (grant service:read on them)",
		})
	}
	for name := range ss.services {
		if ss.selected(name) && !sources.ValidServiceName(name) {
			st.Diagnostics = append(st.Diagnostics, invalidName(name))
		}
	}
	for name, v := range ss.views {
		st.Diagnostics = append(st.Diagnostics, v.diags...)
		if len(v.instances) == 0 {
			continue
		}
		svc := sources.Service{Name: name, Instances: make([]sources.Instance, len(v.instances))}
		for i, in := range v.instances {
			svc.Instances[i] = in
			svc.Instances[i].Metadata = maps.Clone(in.Metadata)
		}
		st.Services = append(st.Services, svc)
	}
	st.Normalize(SourceName)
	ok, err := ss.pub.state(ctx, st)
	if err != nil {
		return err
	}
	if !ok {
		return ctx.Err()
	}
	ss.unsent = false
	return nil
}
