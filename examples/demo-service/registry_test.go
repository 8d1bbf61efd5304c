package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func demoConfig() config {
	return config{
		Service: "demo", Pod: "demo-abc", Address: "10.244.1.7", Port: 8080, EtcdPrefix: "/services/",
		Zone: "zone-a", Region: "east", Weight: 2, LeaseTTL: 10 * time.Second,
	}
}

func TestEtcdKeyAndValue(t *testing.T) {
	c := demoConfig()
	if got, want := etcdKey(c), "/services/demo/10.244.1.7:8080"; got != want {
		t.Errorf("key = %q, want %q", got, want)
	}
	c.Address = "fd00::7"
	if got, want := etcdKey(c), "/services/demo/[fd00::7]:8080"; got != want {
		t.Errorf("IPv6 key = %q, want %q", got, want)
	}
	got := etcdRegistration(demoConfig(), time.Unix(1764115200, 0))
	want := `{"status":"healthy","weight":2,"zone":"zone-a","region":"east","metadata":{"pod":"demo-abc"},"timestamp":1764115200}`
	if got != want {
		t.Errorf("value = %s\nwant    %s", got, want)
	}
	c = demoConfig()
	c.Zone, c.Region = "", ""
	var v map[string]any
	if err := json.Unmarshal([]byte(etcdRegistration(c, time.Unix(1, 0))), &v); err != nil {
		t.Fatal(err)
	}
	if _, ok := v["zone"]; ok {
		t.Errorf("empty zone is written: %v", v)
	}
}

func TestConsulRegistration(t *testing.T) {
	r := consulRegistration(demoConfig())
	if r.ID != "demo-demo-abc" || r.Name != "demo" || r.Address != "10.244.1.7" || r.Port != 8080 {
		t.Errorf("registration = %+v", r)
	}
	if r.Weights == nil || r.Weights.Passing != 2 {
		t.Errorf("weights = %+v", r.Weights)
	}
	if r.Meta["pod"] != "demo-abc" || r.Meta["zone"] != "zone-a" || r.Meta["region"] != "east" {
		t.Errorf("meta = %v", r.Meta)
	}
	c := r.Check
	if c == nil || c.HTTP != "http://10.244.1.7:8080/healthz" || c.Interval == "" || c.DeregisterCriticalServiceAfter == "" {
		t.Errorf("check = %+v", c)
	}
}

// fakeEtcd is an etcd client whose leases the test can lose.
type fakeEtcd struct {
	mu         sync.Mutex
	next       clientv3.LeaseID
	failGrants int
	puts       []string
	revoked    []clientv3.LeaseID
	lost       map[clientv3.LeaseID]chan struct{}
	alive      chan clientv3.LeaseID // a keep-alive started for the lease
}

func newFakeEtcd() *fakeEtcd {
	return &fakeEtcd{lost: map[clientv3.LeaseID]chan struct{}{}, alive: make(chan clientv3.LeaseID, 10)}
}

func (f *fakeEtcd) Grant(context.Context, int64) (*clientv3.LeaseGrantResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failGrants > 0 {
		f.failGrants--
		return nil, errors.New("etcdserver: no leader")
	}
	f.next++
	f.lost[f.next] = make(chan struct{})
	return &clientv3.LeaseGrantResponse{ID: f.next}, nil
}

func (f *fakeEtcd) Put(_ context.Context, key, val string, _ ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts = append(f.puts, key+"="+val)
	return &clientv3.PutResponse{}, nil
}

func (f *fakeEtcd) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	f.mu.Lock()
	lost := f.lost[id]
	f.mu.Unlock()
	ch := make(chan *clientv3.LeaseKeepAliveResponse)
	go func() {
		defer close(ch)
		select {
		case <-ctx.Done():
		case <-lost:
		}
	}()
	f.alive <- id
	return ch, nil
}

func (f *fakeEtcd) Revoke(_ context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, id)
	return &clientv3.LeaseRevokeResponse{}, nil
}

func (f *fakeEtcd) lose(id clientv3.LeaseID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.lost[id])
}

func waitAlive(t *testing.T, f *fakeEtcd) clientv3.LeaseID {
	t.Helper()
	select {
	case id := <-f.alive:
		return id
	case <-time.After(5 * time.Second):
		t.Fatal("no keep-alive started")
		return 0
	}
}

func TestEtcdRegistrarRegistersAgainAndRevokesOnStop(t *testing.T) {
	f := newFakeEtcd()
	f.failGrants = 2 // etcd not ready yet when the pod starts
	r := newEtcdRegistrar(f, demoConfig(), discard)
	r.retry = func(int) time.Duration { return time.Millisecond }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	first := waitAlive(t, f)
	f.lose(first) // e.g. etcd restarted with an empty data directory
	second := waitAlive(t, f)
	if second == first {
		t.Fatalf("registered again with the lost lease %d", first)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.puts) != 2 {
		t.Fatalf("puts = %v, want two registrations", f.puts)
	}
	for _, p := range f.puts {
		var v etcdValue
		key, val, _ := strings.Cut(p, "=")
		if key != "/services/demo/10.244.1.7:8080" || json.Unmarshal([]byte(val), &v) != nil || v.Status != "healthy" {
			t.Errorf("put %q", p)
		}
	}
	if len(f.revoked) != 1 || f.revoked[0] != second {
		t.Fatalf("revoked %v, want [%d]: only the live lease", f.revoked, second)
	}
}

// fakeAgent is a Consul agent that can forget its services.
type fakeAgent struct {
	mu           sync.Mutex
	services     map[string]*api.AgentServiceRegistration
	registers    int
	deregistered []string
	registered   chan struct{}
}

func (a *fakeAgent) ServiceRegister(reg *api.AgentServiceRegistration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.services[reg.ID] = reg
	a.registers++
	a.registered <- struct{}{}
	return nil
}

func (a *fakeAgent) ServiceDeregister(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.services[id]; !ok {
		return api.StatusError{Code: 404, Body: "Unknown service ID"}
	}
	delete(a.services, id)
	a.deregistered = append(a.deregistered, id)
	return nil
}

func (a *fakeAgent) Service(id string, _ *api.QueryOptions) (*api.AgentService, *api.QueryMeta, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.services[id]; !ok {
		return nil, nil, api.StatusError{Code: 404, Body: "unknown service ID: " + id}
	}
	return &api.AgentService{ID: id}, &api.QueryMeta{}, nil
}

func TestConsulRegistrarRegistersAgainAndDeregistersOnStop(t *testing.T) {
	a := &fakeAgent{services: map[string]*api.AgentServiceRegistration{}, registered: make(chan struct{}, 10)}
	r := newConsulRegistrar(a, demoConfig(), discard)
	r.interval = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor := func() {
		t.Helper()
		select {
		case <-a.registered:
		case <-time.After(5 * time.Second):
			t.Fatal("not registered")
		}
	}
	waitFor()
	a.mu.Lock()
	delete(a.services, "demo-demo-abc") // the dev agent restarted
	a.mu.Unlock()
	waitFor()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.registers != 2 || len(a.deregistered) != 1 || a.deregistered[0] != "demo-demo-abc" {
		t.Fatalf("registers %d, deregistered %v", a.registers, a.deregistered)
	}
}
