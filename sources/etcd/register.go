package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-mesh/sluice/sources"
)

// Registration is the JSON value of a key in the sluice layout. Every field
// is optional: an empty object (or an empty value) is a healthy instance of
// default weight.
type Registration struct {
	// Status is "healthy", "unhealthy" or "draining" (or another word
	// sources.ParseHealth knows); empty means healthy.
	Status string `json:"status,omitempty"`
	// Weight is the relative load-balancing weight, up to
	// sources.MaxWeight; 0 means sources.DefaultWeight.
	Weight   uint32            `json:"weight,omitempty"`
	Zone     string            `json:"zone,omitempty"`
	Region   string            `json:"region,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Timestamp is the registrant's own (e.g. registration time in Unix
	// seconds); sluice does not interpret it.
	Timestamp int64 `json:"timestamp,omitempty"`
}

// RegistrationKey is the sluice-layout key of an instance: prefix (empty
// means DefaultPrefix), service and host:port joined by slashes.
func RegistrationKey(prefix, service, hostport string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return strings.TrimRight(prefix, "/") + "/" + service + "/" + hostport
}

// Register registers service at hostport in the sluice layout and keeps the
// registration alive until ctx ends: it grants a lease of ttl, puts the key
// with it and keeps the lease alive. Should the lease be lost (etcd
// unreachable for longer than ttl), it registers again, retrying with
// backoff. When ctx ends it revokes the lease, which deletes the key at
// once, and returns nil; a failed revoke is returned as an error (the key
// then expires with its lease). It returns an error at once when the first
// registration fails or the arguments are invalid.
func Register(ctx context.Context, cli *clientv3.Client, prefix, service, hostport string, ttl time.Duration, value Registration) error {
	if !sources.ValidServiceName(service) {
		return fmt.Errorf("register: invalid service name %q", service)
	}
	ap, err := parseHostPort(hostport)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if _, err := sources.ParseHealth(value.Status); err != nil {
		return fmt.Errorf("register: status: %w", err)
	}
	if value.Weight > sources.MaxWeight {
		return fmt.Errorf("register: weight: must be at most %d, got %d", sources.MaxWeight, value.Weight)
	}
	if ttl < time.Second {
		return fmt.Errorf("register: ttl: must be at least 1s, got %s", ttl)
	}
	data, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	r := &registrar{
		cli:  cli,
		key:  RegistrationKey(prefix, service, ap.String()),
		data: string(data),
		ttl:  int64(math.Ceil(ttl.Seconds())),
	}
	lease, err := r.put(ctx)
	if err != nil {
		return err
	}
	for {
		r.keepAlive(ctx, lease)
		if ctx.Err() != nil {
			break
		}
		// The lease is gone: register again until that works.
		lease = 0
		for attempt := 0; lease == 0; attempt++ {
			d := min(100*time.Millisecond<<min(attempt, 7), 10*time.Second)
			t := time.NewTimer(d/2 + rand.N(d/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			if lease, err = r.put(ctx); err != nil {
				lease = 0
			}
		}
	}
	// ctx is done: revoke on a context of our own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultRequestTimeout)
	defer cancel()
	if _, err := cli.Revoke(rctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("deregistering %s: revoking lease: %w (the key expires with its lease)", r.key, err)
	}
	return nil
}

type registrar struct {
	cli       *clientv3.Client
	key, data string
	ttl       int64
}

// put grants a lease and puts the key with it.
func (r *registrar) put(ctx context.Context) (clientv3.LeaseID, error) {
	rctx, cancel := context.WithTimeout(ctx, defaultRequestTimeout)
	defer cancel()
	grant, err := r.cli.Grant(rctx, r.ttl)
	if err != nil {
		return 0, fmt.Errorf("registering %s: granting a lease: %w", r.key, err)
	}
	if _, err := r.cli.Put(rctx, r.key, r.data, clientv3.WithLease(grant.ID)); err != nil {
		return 0, fmt.Errorf("registering %s: %w", r.key, err)
	}
	return grant.ID, nil
}

// keepAlive renews the lease until ctx ends or the lease is lost.
func (r *registrar) keepAlive(ctx context.Context, lease clientv3.LeaseID) {
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.cli.KeepAlive(kctx, lease)
	if err != nil {
		return
	}
	for range ch {
		// Each response is a renewal; the channel closes when the lease
		// is lost or ctx ends.
	}
}
