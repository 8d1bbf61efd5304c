package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/sluice-mesh/sluice/sources"
)

// BenchmarkHealthChange measures the time from a TTL check's status change
// (the agent's /v1/agent/check/update call) to the State event that shows it,
// with 1,000 services registered on a real agent (one instance and one TTL
// check each). Every iteration flips another service, critical and back.
//
//	make deps   # or tools/install-consul.sh
//	go test -run '^$' -bench BenchmarkHealthChange -benchtime 200x ./sources/consul/
//
// Sub-benchmarks: min-query-interval=1ms shows the latency of the path itself;
// 100ms (the default) shows back-to-back changes, which the rate limit of the
// checks watch spaces out (an isolated change sees the 1ms numbers). Besides
// ns/op (the mean) it reports p50-ms and p99-ms.
func BenchmarkHealthChange(b *testing.B) {
	const n = 1000
	a := startAgent(b)
	cl := a.Client()
	status := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("svc-%04d", i)
		err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: name, Name: name, Address: "10.0.0.1", Port: 1000 + i,
			Check: &api.AgentServiceCheck{CheckID: "ttl-" + name, TTL: "1h", Status: api.HealthPassing},
		})
		if err != nil {
			b.Fatal(err)
		}
		status[i] = api.HealthPassing
	}
	next := 0

	for _, iv := range []time.Duration{time.Millisecond, DefaultMinQueryInterval} {
		b.Run(fmt.Sprintf("min-query-interval=%s", iv), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.Address = a.Addr
			cfg.MinQueryInterval = iv
			cfg.Log = slog.New(slog.DiscardHandler)
			src, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			events := make(chan sources.Event, 16)
			done := make(chan error, 1)
			go func() { done <- src.Run(ctx, events) }()
			defer func() {
				cancel()
				if err := <-done; !errors.Is(err, context.Canceled) {
					b.Errorf("Run: %v", err)
				}
			}()
			// until reads events until ok holds for a State.
			until := func(what string, ok func(*sources.State) bool) {
				deadline := time.After(30 * time.Second)
				for {
					select {
					case ev := <-events:
						if ev.Err != nil {
							b.Fatalf("source error: %v", ev.Err)
						}
						if ok(ev.State) {
							return
						}
					case <-deadline:
						b.Fatalf("timed out waiting for %s", what)
					}
				}
			}
			until("all services", func(st *sources.State) bool { return len(st.Services) == n+1 })

			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				i := next % n
				next++
				name := fmt.Sprintf("svc-%04d", i)
				want, wantHealth := api.HealthCritical, sources.HealthUnhealthy
				if status[i] == api.HealthCritical {
					want, wantHealth = api.HealthPassing, sources.HealthHealthy
				}
				key := sources.JoinHostPort("10.0.0.1", uint32(1000+i))
				start := time.Now()
				if err := cl.Agent().UpdateTTL("ttl-"+name, "", want); err != nil {
					b.Fatal(err)
				}
				status[i] = want
				until(name+" "+want, func(st *sources.State) bool {
					in := instance(st, name, key)
					return in != nil && in.Health == wantHealth
				})
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
