package consul

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// nonPassingFilter selects the checks whose status is not "passing".
const nonPassingFilter = `Status != "passing"`

// readServices reads the health entries of names, Concurrency at a time.
func (s *Source) readServices(ctx context.Context, names []string, full bool) batchResult {
	start := time.Now()
	r := batchResult{names: names, views: make([]mapped, len(names)), full: full}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		next  int
		first error
	)
	for range min(s.cfg.Concurrency, len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(names) || ctx.Err() != nil {
					return
				}
				v, err := s.readService(ctx, names[i])
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
					return
				}
				r.views[i] = v
			}
		}()
	}
	wg.Wait()
	r.err, r.took = first, time.Since(start)
	return r
}

func (s *Source) readService(ctx context.Context, name string) (mapped, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	q := &api.QueryOptions{Datacenter: s.cfg.Datacenter}
	entries, _, err := s.client.Health().ServiceMultipleTags(name, s.cfg.Tags, false, q.WithContext(ctx))
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return mapped{}, err
		}
		return mapped{}, fmt.Errorf("reading service %q: %w", name, err)
	}
	return mapEntries(name, entries, s.cfg.WarningIsHealthy), nil
}

// blocking returns the options and context of one blocking query.
func (s *Source) blocking(ctx context.Context, index uint64) (*api.QueryOptions, context.CancelFunc) {
	// The agent adds up to WaitTime/16 of jitter to the wait.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WaitTime+s.cfg.WaitTime/16+s.cfg.RequestTimeout)
	q := &api.QueryOptions{Datacenter: s.cfg.Datacenter, WaitIndex: index, WaitTime: s.cfg.WaitTime}
	return q.WithContext(ctx), cancel
}

// serviceList is the service catalog: each service's tags, and whether
// Consul left out services the token may not read.
type serviceList struct {
	tags     map[string][]string
	filtered bool
}

// errACLHidesAll says the token can read none of the services sluice would
// serve. An ACL change (a policy detached, a token expired) answers every
// query with an empty, successful list; taken at face value it would remove
// every Consul endpoint from every proxy, so it counts as losing the
// registry: the last catalog stays in effect and the source is stale.
var errACLHidesAll = errors.New("consul filtered every service out of the catalog by ACLs: the token lacks service:read; keeping the last catalog")

func (s *Source) queryServices(ctx context.Context, index uint64) (serviceList, uint64, error) {
	q, cancel := s.blocking(ctx, index)
	defer cancel()
	v, meta, err := s.client.Catalog().Services(q)
	if err != nil {
		return serviceList{}, 0, err
	}
	if meta.ResultsFilteredByACLs {
		visible := false
		for n := range v {
			if !slices.Contains(s.cfg.Exclude, n) {
				visible = true
				break
			}
		}
		if !visible {
			return serviceList{}, 0, errACLHidesAll
		}
	}
	return serviceList{tags: v, filtered: meta.ResultsFilteredByACLs}, meta.LastIndex, nil
}

func (s *Source) queryNonPassing(ctx context.Context, index uint64) ([]*api.HealthCheck, uint64, error) {
	q, cancel := s.blocking(ctx, index)
	defer cancel()
	q.Filter = nonPassingFilter
	v, meta, err := s.client.Health().State(api.HealthAny, q)
	if err != nil {
		return nil, 0, err
	}
	return v, meta.LastIndex, nil
}

func (s *Source) queryNodes(ctx context.Context, index uint64) ([]*api.Node, uint64, error) {
	q, cancel := s.blocking(ctx, index)
	defer cancel()
	v, meta, err := s.client.Catalog().Nodes(q)
	if err != nil {
		return nil, 0, err
	}
	return v, meta.LastIndex, nil
}
