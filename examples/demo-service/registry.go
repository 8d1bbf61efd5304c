package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// requestTimeout bounds each registry call.
const requestTimeout = 5 * time.Second

// etcdValue is the JSON value sluice reads under an etcd registration key.
type etcdValue struct {
	Status    string            `json:"status"`
	Weight    int               `json:"weight"`
	Zone      string            `json:"zone,omitempty"`
	Region    string            `json:"region,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Timestamp int64             `json:"timestamp"`
}

// etcdKey is <prefix>/<service>/<host:port>, sluice's default layout.
func etcdKey(c config) string {
	return strings.TrimRight(c.EtcdPrefix, "/") + "/" + c.Service + "/" + c.hostPort()
}

// etcdRegistration is the value registered for c at time now.
func etcdRegistration(c config, now time.Time) string {
	b, err := json.Marshal(etcdValue{
		Status: "healthy", Weight: c.Weight, Zone: c.Zone, Region: c.Region,
		Metadata: map[string]string{"pod": c.Pod}, Timestamp: now.Unix(),
	})
	if err != nil {
		panic(err) // strings and numbers always marshal
	}
	return string(b)
}

// etcdClient is the part of *clientv3.Client the registrar uses.
type etcdClient interface {
	Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error)
	Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error)
	KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error)
	Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error)
}

// etcdRegistrar keeps key registered under a lease, the way our users' Go
// services do: grant a lease, put the key with it, keep the lease alive;
// when the lease is lost (etcd restarted, or unreachable for longer than the
// TTL) register again; on shutdown revoke the lease, which deletes the key
// at once.
type etcdRegistrar struct {
	cli   etcdClient
	key   string
	value func() string
	ttl   time.Duration
	log   *slog.Logger
	// retry is the wait before attempt n (from 0) to register again.
	retry func(n int) time.Duration
}

func newEtcdRegistrar(cli etcdClient, c config, log *slog.Logger) *etcdRegistrar {
	return &etcdRegistrar{
		cli: cli, key: etcdKey(c), ttl: c.LeaseTTL, log: log, retry: backoff,
		value: func() string { return etcdRegistration(c, time.Now()) },
	}
}

// Run registers and keeps the registration until ctx ends, then
// deregisters. It returns an error only when deregistering failed.
func (r *etcdRegistrar) Run(ctx context.Context) error {
	var lease clientv3.LeaseID
	for attempt := 0; ; attempt++ {
		id, err := r.register(ctx)
		switch {
		case err == nil:
			attempt = 0
			r.log.Info("registered in etcd", "key", r.key, "lease", strconv.FormatInt(int64(id), 16))
			r.keepAlive(ctx, id)
			if ctx.Err() != nil {
				lease = id // still alive: revoked below
			} else {
				r.log.Warn("etcd lease lost; registering again", "key", r.key)
			}
		case ctx.Err() == nil:
			r.log.Warn("registering in etcd failed; retrying", "key", r.key, "err", err)
		}
		if ctx.Err() != nil || !wait(ctx, r.retry(attempt)) {
			break
		}
	}
	if lease == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	if _, err := r.cli.Revoke(rctx, lease); err != nil {
		return fmt.Errorf("deregistering %s: revoking its lease: %w (the key expires with the lease)", r.key, err)
	}
	r.log.Info("deregistered from etcd", "key", r.key)
	return nil
}

func (r *etcdRegistrar) register(ctx context.Context) (clientv3.LeaseID, error) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	grant, err := r.cli.Grant(rctx, int64(math.Ceil(r.ttl.Seconds())))
	if err != nil {
		return 0, fmt.Errorf("granting a lease: %w", err)
	}
	if _, err := r.cli.Put(rctx, r.key, r.value(), clientv3.WithLease(grant.ID)); err != nil {
		return 0, fmt.Errorf("putting %s: %w", r.key, err)
	}
	return grant.ID, nil
}

// keepAlive renews the lease until ctx ends or the lease is lost.
func (r *etcdRegistrar) keepAlive(ctx context.Context, id clientv3.LeaseID) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.cli.KeepAlive(kctx, id)
	if err != nil {
		return
	}
	for range ch {
		// Each response is a renewal; the channel closes when the lease
		// is lost or ctx ends.
	}
}

// consulAgent is the part of Consul's agent API the registrar uses.
type consulAgent interface {
	ServiceRegister(reg *api.AgentServiceRegistration) error
	ServiceDeregister(id string) error
	Service(id string, q *api.QueryOptions) (*api.AgentService, *api.QueryMeta, error)
}

// consulRegistration is the agent service registration for c: the
// instance's address and port, its weight, its locality in Meta and an HTTP
// health check of /healthz that Consul runs. A check left critical for a
// minute (the pod was killed without deregistering) removes the service.
func consulRegistration(c config) *api.AgentServiceRegistration {
	meta := map[string]string{"pod": c.Pod}
	if c.Zone != "" {
		meta["zone"] = c.Zone
	}
	if c.Region != "" {
		meta["region"] = c.Region
	}
	id := c.Service + "-" + c.Pod
	return &api.AgentServiceRegistration{
		ID: id, Name: c.Service, Address: c.Address, Port: c.Port,
		Tags:    []string{"demo"},
		Meta:    meta,
		Weights: &api.AgentWeights{Passing: c.Weight, Warning: 1},
		Check: &api.AgentServiceCheck{
			CheckID:                        id + "-http",
			Name:                           "HTTP GET /healthz",
			HTTP:                           "http://" + c.hostPort() + "/healthz",
			Interval:                       "2s",
			Timeout:                        "1s",
			DeregisterCriticalServiceAfter: "1m",
		},
	}
}

// consulRegistrar keeps the service registered with a Consul agent: it
// registers, checks every interval that the agent still has it (a dev-mode
// agent forgets everything when it restarts) and registers again if not,
// and deregisters when ctx ends.
type consulRegistrar struct {
	agent    consulAgent
	reg      *api.AgentServiceRegistration
	interval time.Duration
	log      *slog.Logger
	retry    func(n int) time.Duration
}

func newConsulRegistrar(agent consulAgent, c config, log *slog.Logger) *consulRegistrar {
	return &consulRegistrar{agent: agent, reg: consulRegistration(c), interval: 10 * time.Second, log: log, retry: backoff}
}

// Run registers and keeps the registration until ctx ends, then
// deregisters. It returns an error only when deregistering failed.
func (r *consulRegistrar) Run(ctx context.Context) error {
	registered := false
	for attempt := 0; ; {
		next := r.interval
		if _, _, err := r.agent.Service(r.reg.ID, nil); err != nil {
			if err := r.agent.ServiceRegister(r.reg); err != nil {
				r.log.Warn("registering with Consul failed; retrying", "id", r.reg.ID, "err", err)
				next = r.retry(attempt)
				attempt++
			} else {
				registered, attempt = true, 0
				r.log.Info("registered with Consul", "id", r.reg.ID, "address", r.reg.Address, "port", r.reg.Port)
			}
		}
		if !wait(ctx, next) {
			break
		}
	}
	if !registered {
		return nil
	}
	if err := r.agent.ServiceDeregister(r.reg.ID); err != nil {
		var se api.StatusError
		if errors.As(err, &se) && se.Code == 404 {
			return nil
		}
		return fmt.Errorf("deregistering %s from Consul: %w", r.reg.ID, err)
	}
	r.log.Info("deregistered from Consul", "id", r.reg.ID)
	return nil
}

// backoff is the wait before retry n: exponential from 100ms up to 5s, with
// jitter so that restarted pods do not retry in step.
func backoff(n int) time.Duration {
	d := min(100*time.Millisecond<<min(n, 6), 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

// wait waits d; false means ctx ended first.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
