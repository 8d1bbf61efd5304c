// Package consul is the Consul registry source: it serves the healthy and
// unhealthy instances of every service in a Consul datacenter, read from the
// agent's HTTP API (github.com/hashicorp/consul/api) with blocking queries,
// and follows their changes.
//
// # Query strategy
//
// A running source keeps three blocking queries open and reads services only
// when something says they changed:
//
//   - the service catalog (/v1/catalog/services): its index moves on every
//     registration, deregistration or re-registration of any instance, but
//     the answer (names and tags) cannot say which service changed, so a
//     change re-reads every service;
//   - the checks that are not passing (/v1/health/state/any with the filter
//     `Status != "passing"`): a diff against the previous answer names the
//     services whose health changed (a node-level check, such as serfHealth,
//     names every service on its node), and only those are re-read; the
//     answer is a few bytes while everything is healthy;
//   - the nodes (/v1/catalog/nodes): a changed address or meta re-reads the
//     services on that node.
//
// Services are read with /v1/health/service/<name> (checks included), at most
// Config.Concurrency at a time; changes that arrive while a batch of reads is
// in flight are coalesced into the next batch. A full re-read waits at least
// Config.MinResyncInterval, and four times the last one's duration, after the
// previous one, so a cluster that registers instances continuously costs the
// agent a bounded share of its time. Each watch starts its queries at least
// Config.MinQueryInterval apart.
//
// Measured on 2 cores against a Consul 1.16.3 dev agent on loopback, 1,000
// services with one TTL check each:
//
//   - One blocking query per service (the textbook approach) fails: the agent
//     allows 200 concurrent HTTP connections per client IP by default
//     (limits.http_max_conns_per_client). 2,348 of the 1,000 watchers' first
//     requests and retries within 2 s were answered 429 "Your IP is issuing
//     too many concurrent connections", ~750 more per second followed while
//     they retried, and the limit also rejected unrelated requests (a TTL
//     update) from the same IP. With 150 services it works (change → answer
//     ~1 ms), but only for clusters that stay well under the limit, or
//     agents reconfigured for sluice.
//   - The strategy above holds 3 connections plus Concurrency (8) for reads.
//     The non-passing checks list is 3 bytes ("[]") when all is healthy,
//     against 458 KB for all checks. A TTL status change reaches sluice as a
//     re-read of the one service in ~2.7 ms (median of 50). From the TTL
//     update to the new State event (BenchmarkHealthChange): p50 5.0 ms, p99
//     16.5 ms; back to back, changes are spaced by MinQueryInterval (p50 106
//     ms at the default 100 ms), and changes within one interval share one
//     read.
//   - A full re-read of the 1,000 services takes 444 ms one at a time, 206 ms
//     with 4 in flight, 183 ms with 8, 169 ms with 16 (0.17-0.19 s of agent
//     CPU): 8 is the default, with little left to gain beyond it.
//
// # Mapping
//
// Each instance of a typical service (Kind ""; Consul's own proxies and
// gateways are skipped) becomes a sources.Instance:
//
//   - health: the aggregated status of the instance's checks, node checks
//     (serfHealth) included: passing → healthy; warning → healthy if
//     Config.WarningIsHealthy (the default), else unhealthy; critical →
//     unhealthy; maintenance (a _service_maintenance: or _node_maintenance
//     check) → unhealthy, like critical (as the issue asks, and as Consul's
//     own xDS does), so Envoy and gRPC stop routing to it at once; an
//     unknown status → unhealthy. Unhealthy instances stay in the State, marked.
//   - weight: Weights.Passing when passing, Weights.Warning when warning, 1
//     when the registration has none, capped at sources.MaxWeight. A warning
//     weight of 0 means "no traffic while warning": unhealthy, as in
//     Consul's own xDS.
//   - address: Service.Address, else Node.Address; port: Service.Port.
//   - metadata: the service's Meta as is, plus "tag.<tag>" = "true" for each
//     tag (TagKeyPrefix). Consul meta keys cannot contain '.', so the two
//     never collide, and tags containing commas stay intact.
//   - locality: zone and region from the service's Meta ("zone", "region",
//     "topology.kubernetes.io/zone", "topology.kubernetes.io/region"), else
//     the service's Locality (Consul 1.17+), else the node's Meta, else the
//     node's Locality; per field.
//   - origin: "consul:service/<name>/<id>".
//
// Skipped, with a diagnostic in the State (other instances unaffected): a
// service whose name sources.ValidServiceName rejects (one diagnostic at
// "consul:service/<name>", its instances are not read), an address that is
// not an IP (Consul allows host names; sluice does not resolve them), a port
// outside 1-65535, and a second instance with the same address:port in one
// service (the first by node and ID is kept, with the worse health of the
// two), each at "consul:service/<name>/<id>".
//
// # Failure
//
// When a query fails (agent down, no leader, ACL denied) the source sends
// one Event with Err for the outage and closes its queries: the consumer
// keeps serving the last State (fail static) and reports the source stale.
// It retries with jittered exponential backoff (Config.RetryMin to RetryMax),
// and once Consul answers again it reads everything afresh and sends a new
// State (even if equal to the last one, so the consumer knows it is fresh).
// Otherwise a State is sent only when it differs from the last one.
package consul
