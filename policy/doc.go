// Package policy is the policy-file schema of sluice: strict parsing,
// validation with file:line and field paths, and precedence resolution. It
// is pure: apart from ReadDir reading files, it does no I/O, reads no clock
// and starts no goroutines. Translating a resolved policy to Envoy or gRPC
// configuration is the translator's job; watching the policy directory is
// package policy/watch's.
//
// # Format
//
// A policy directory holds *.yaml / *.yml files (hidden files and
// sub-directories are skipped), each with one or more YAML documents
// separated by "---":
//
//	apiVersion: sluice.dev/v1
//	kind: MeshPolicy                  # at most one in the directory
//	metadata: {name: mesh}            # optional for a MeshPolicy
//	spec:
//	  defaults: {...}                 # any ServicePolicy spec field but tracing
//	  tracing:                        # mesh-wide; see Tracing
//	    collector: otel-collector:4317
//	    samplingPercent: 10
//	    tags: {env: prod}
//	---
//	apiVersion: sluice.dev/v1
//	kind: ServicePolicy               # at most one per service
//	metadata: {name: user-service}    # the service it applies to
//	spec:
//	  loadBalancer: least_request     # or {policy: ..., leastRequest: {...}, ringHash: {...}}
//	  timeout: 2s
//	  circuitBreaker: {maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024, maxRetries: 3}
//	  outlierDetection: {consecutiveErrors: 5, errorPercent: 50, minRequests: 20, minHosts: 3,
//	                     interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
//	  retry:
//	    attempts: 3                   # retries after the first try; 0 turns retries off
//	    perTryTimeout: 500ms
//	    retryOn: [5xx, reset, connect-failure, unavailable]
//	    backoff: {base: 25ms, max: 250ms}
//	    idempotencyHeader: x-idempotency-key
//	    retryBudget: {budgetPercent: 20, minRetryConcurrency: 3}   # service level only
//	  rateLimit: {requestsPerSecond: 100, burst: 200}              # or {disabled: true}
//	  tracing: {samplingPercent: 50}  # a ServicePolicy may override only this
//	  routes:
//	    - match: {pathPrefix: /orders, methods: [POST], headers: {x-tenant: acme}}
//	      retry: {attempts: 0}        # routes may set retry, timeout and rateLimit
//	      timeout: 5s
//	      rateLimit: {requestsPerSecond: 10}
//	  dependencies: [auth, billing]   # the services its sidecars call; see Dependencies
//	  healthyPanicThreshold: 30       # percent
//	  slowStart: {window: 30s, aggression: 1, minWeightPercent: 10}
//	  healthCheck: {interval: 5s, http: {path: /healthz}}   # or grpc: {service: ...}, tcp: {}
//	  locality: {mode: failover, failover: [{from: us-east, to: us-west}]}
//	  subsets: {v1: {version: v1}, v2: {version: v2}}       # ServicePolicy only, as the next three
//	  split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
//	  mirror: {subset: v2, percent: 5}
//	  fault: {delay: {percent: 10, duration: 2s}, abort: {percent: 5, httpStatus: 503}}
//
// Routes may also set split, subset (a split of one), mirror and fault,
// which replace the service's as a whole; a route's match may hold
// queryParams, and header and query values may be {present: true},
// {regex: RE2} or {exact: VALUE} besides a plain value. See
// docs/policies.md for every field.
//
// metadata may also hold labels and annotations (string maps) for people
// and tools; sluice ignores them.
//
// Load-balancing extensions: loadBalancer may be a mapping
// {policy: least_request, leastRequest: {choiceCount: 3}} (choiceCount ≥ 2)
// or {policy: ring_hash, ringHash: {hashOn: {header: x-user-id} | {sourceIP:
// true}, minRingSize: 1024, maxRingSize: 8388608}} (1 ≤ min ≤ max ≤ 8388608).
// A ring_hash without hashOn gives no affinity.
//
// # Validation
//
// Decoding is strict: unknown fields, fields given twice, YAML merge keys and
// values of the wrong type are errors (anchors and aliases for whole values
// are fine; a file is at most MaxFileSize bytes). Durations use Go syntax (500ms, 2s,
// 1m) with a unit, from 1ms to 1h (timeouts up to 24h, for long streams).
// Percentages are 0–100 (errorPercent and maxEjectionPercent whole numbers).
// Counts are whole numbers, at least 1 unless noted: retry attempts 0–10,
// consecutiveErrors ≥ 0 (0 turns that form off; so does errorPercent 0),
// requestsPerSecond 1–1000000, burst ≥ 1. retryOn values are Envoy's 5xx,
// gateway-error, reset, connect-failure, retriable-4xx, refused-stream,
// retriable-status-codes (which needs retriableStatusCodes: [503, ...] in the
// same block), envoy-ratelimited, and the gRPC statuses cancelled,
// deadline-exceeded, internal, resource-exhausted, unavailable. Within one
// level, backoff.base ≤ backoff.max and retry.perTryTimeout ≤ timeout.
// Methods are upper-case HTTP methods; header names are HTTP tokens (stored
// lower-case). A route's match has exactly one of pathPrefix and path
// (starting with "/"); two routes of one policy may not have the same match.
// The tracing collector is "host:port", "service:port" or a catalog
// "service" (then its instances' ports are used). Each dependencies entry is
// a service name or "*" (every service, quoted in YAML), listed once; "*"
// stands alone, and an explicit [] means none.
//
// Every problem is a sources.Diagnostic with Source "policy", Location
// "file:line" of the offending node and Field the path to it, e.g.
// spec.routes[0].retry.attempts. An error anywhere rejects the whole
// directory (Load returns a nil Set), so the last good set stays in
// effect. Two MeshPolicies, or two ServicePolicies for one service, are
// errors naming both locations. Policies for services the catalog does not
// have, and dependencies on such services, are only warnings (Set.Warnings).
//
// # Precedence
//
// Each field resolves separately, most specific first: route > service
// (ServicePolicy spec) > mesh (MeshPolicy spec.defaults) > built-in. Blocks
// whose fields only make sense together resolve as a whole: loadBalancer,
// retry.backoff, retry.retryBudget, rateLimit, and retryOn together with
// retriableStatusCodes. Routes of spec.defaults apply to every service; a
// ServicePolicy route with the same match replaces such a route. Unset
// fields of a route come from the service level. healthCheck, slowStart
// and locality resolve as a whole; subsets, split, mirror and fault come
// from the ServicePolicy alone. A route that sets rateLimit
// gets its own token bucket; the others share the service's.
//
// dependencies resolves as a whole too (ServicePolicy over MeshPolicy over
// the built-in "*"; lists are never merged), but apart from Resolved: it
// describes what a service's sidecars receive about other services, not the
// service itself. Set.Dependencies returns it.
//
// # Built-in defaults
//
// They follow Envoy's own defaults, so a service without policy behaves as
// a plain Envoy cluster would:
//
//   - loadBalancer: round_robin (least_request: choiceCount 2; ring_hash:
//     minRingSize 1024, maxRingSize 8388608, no hashOn).
//   - timeout: 15s (Envoy's route timeout; raise it for long streams).
//   - circuitBreaker: maxConnections, maxPendingRequests and maxRequests
//     1024, maxRetries 3.
//   - outlierDetection: off. Once any level has the block: consecutiveErrors
//     5, errorPercent 0 (off), minRequests 50, minHosts 5, interval 10s,
//     baseEjectionTime 30s, maxEjectionPercent 10.
//   - retry: none. Once any level has a retry block: attempts 1, no
//     perTryTimeout (the timeout bounds all tries), retryOn [connect-failure,
//     refused-stream, cancelled, unavailable] (failures where the request
//     most likely never reached the application), backoff base 25ms and max 10 × base (250ms), no
//     idempotencyHeader (POST and PATCH are never retried).
//   - retryBudget: off (circuitBreaker.maxRetries applies). When set:
//     budgetPercent 20, minRetryConcurrency 3.
//   - rateLimit: off. burst defaults to requestsPerSecond (one second's
//     worth of requests).
//   - tracing: off. With spec.tracing, samplingPercent defaults to 100.
//   - dependencies: "*" (a sidecar receives every service).
//
// # Idempotency
//
// Only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) are retried;
// other methods (POST, PATCH, ...) only when the request carries
// idempotencyHeader. gRPC calls follow gRPC's rules instead: they are
// retried on the configured gRPC statuses and on connect-failure and
// refused-stream (Retry.ForGRPC). Resolved.RouteVariants spells this out as
// an ordered list of routes a translator maps one to one.
//
// # Clients
//
// What each kind of client can honour is the translator's concern; this
// package keeps every setting. Proxyless gRPC clients ignore
// consecutiveErrors, perTryTimeout and the route timeout, use only gRPC
// status names from retryOn, and cannot enforce rate limits.
package policy
