package policy

import (
	"slices"
	"time"
)

// VariantKind says which requests of a route a RouteVariant carries.
type VariantKind string

// Route variant kinds, in the order RouteVariants lists them for a route.
const (
	// VariantGRPC: gRPC calls (content-type application/grpc*), retried
	// under the gRPC rules (Retry.ForGRPC) whatever the idempotency header.
	VariantGRPC VariantKind = "grpc"
	// VariantIdempotent: GET, HEAD, OPTIONS, PUT and DELETE, retried.
	VariantIdempotent VariantKind = "idempotent"
	// VariantIdempotencyHeader: the other methods when the request carries
	// the idempotency header, retried.
	VariantIdempotencyHeader VariantKind = "idempotency-header"
	// VariantNoRetry: everything else, never retried. A route without
	// retries has only this variant.
	VariantNoRetry VariantKind = "no-retry"
)

// RouteVariant is one route a translator emits: a route's match narrowed to
// one class of requests, with the settings for that class. See
// RouteVariants for the order and the matching rule.
type RouteVariant struct {
	// Name is unique within the service and stable: "<route>/<kind>", e.g.
	// "routes[0]/idempotent" or "default/no-retry".
	Name string      `json:"name"`
	Kind VariantKind `json:"kind"`
	// Route is the ResolvedRoute's name ("default" for the catch-all).
	Route string `json:"route"`
	// Match is the route's match with Methods narrowed to this variant;
	// empty Methods means any method not taken by an earlier variant of
	// the same route.
	Match RouteMatch `json:"match"`
	// GRPC additionally requires a content-type starting with
	// "application/grpc".
	GRPC bool `json:"grpc,omitempty"`
	// RequireHeader, when set, additionally requires this request header
	// to be present (with any value).
	RequireHeader string        `json:"requireHeader,omitempty"`
	Timeout       time.Duration `json:"timeout"`
	// TimeoutSet says a policy set Timeout (see Resolved.TimeoutSet).
	TimeoutSet bool `json:"timeoutSet,omitempty"`
	// Retry is the effective retry policy; the zero Retry means none.
	Retry        Retry     `json:"retry"`
	RateLimit    RateLimit `json:"rateLimit"`
	OwnRateLimit bool      `json:"ownRateLimit,omitempty"`
	// Split, Mirror and Fault are the route's (ResolvedRoute).
	Split  []WeightedSubset `json:"split,omitempty"`
	Mirror *Mirror          `json:"mirror,omitempty"`
	Fault  *Fault           `json:"fault,omitempty"`
}

// DefaultRouteName names the catch-all route of a service.
const DefaultRouteName = "default"

// RouteVariants lists the routes to emit for the service, in order; a
// translator maps each to one route, keeps the order, and first match wins.
//
// Routes come most specific first: the resolved Routes (exact path before
// prefix, longer path first, method-restricted first, more headers first,
// more query parameters first, then ServicePolicy before MeshPolicy routes,
// then file order), then the catch-all route (pathPrefix "/") with the
// service-level settings, unless a route already matches everything.
//
// Each route is split by the idempotency rule when it retries:
//  1. grpc: gRPC calls (only if the route admits POST), with Retry.ForGRPC;
//  2. idempotent: the route's idempotent methods (GET, HEAD, OPTIONS, PUT,
//     DELETE), with the retry policy;
//  3. idempotency-header: the remaining methods when the request carries
//     Retry.IdempotencyHeader (only if one is set), with the retry policy;
//  4. no-retry: the remaining methods, without retries.
//
// Variants whose method set is empty are left out. A route that does not
// retry has a single no-retry variant with the route's own match.
func (r Resolved) RouteVariants() []RouteVariant {
	routes := slices.Clone(r.Routes)
	if !slices.ContainsFunc(routes, func(rr ResolvedRoute) bool { return matchesEverything(rr.Match) }) {
		routes = append(routes, ResolvedRoute{
			Name:       DefaultRouteName,
			Match:      RouteMatch{PathPrefix: "/"},
			Timeout:    r.Timeout,
			TimeoutSet: r.TimeoutSet,
			Retry:      r.Retry,
			RateLimit:  r.RateLimit,
			Split:      r.Split,
			Mirror:     r.Mirror,
			Fault:      r.Fault,
		})
	}
	var out []RouteVariant
	for _, rr := range routes {
		out = append(out, routeVariants(rr)...)
	}
	return out
}

func matchesEverything(m RouteMatch) bool {
	return m.PathPrefix == "/" && len(m.Methods) == 0 && len(m.Headers) == 0 && len(m.QueryParams) == 0
}

func routeVariants(rr ResolvedRoute) []RouteVariant {
	variant := func(kind VariantKind, methods []string, retry Retry) RouteVariant {
		m := cloneMatch(rr.Match)
		m.Methods = methods
		return RouteVariant{
			Name: rr.Name + "/" + string(kind), Kind: kind, Route: rr.Name,
			Match: m, Timeout: rr.Timeout, TimeoutSet: rr.TimeoutSet, Retry: cloneRetry(retry),
			RateLimit: rr.RateLimit, OwnRateLimit: rr.OwnRateLimit,
			Split: slices.Clone(rr.Split), Mirror: cloneMirror(rr.Mirror), Fault: cloneFault(rr.Fault),
		}
	}
	restricted := len(rr.Match.Methods) > 0
	if !rr.Retry.Enabled() {
		return []RouteVariant{variant(VariantNoRetry, slices.Clone(rr.Match.Methods), Retry{})}
	}
	// The methods of the route that are idempotent, and the others. For a
	// route without methods, "others" is nil: any method left over.
	idempotent, others := IdempotentMethods(), []string(nil)
	if restricted {
		idempotent = nil
		for _, m := range rr.Match.Methods {
			if isIdempotent(m) {
				idempotent = append(idempotent, m)
			} else {
				others = append(others, m)
			}
		}
	}
	var out []RouteVariant
	if !restricted || slices.Contains(rr.Match.Methods, "POST") {
		var methods []string
		if restricted {
			methods = []string{"POST"}
		}
		v := variant(VariantGRPC, methods, rr.Retry.ForGRPC())
		v.GRPC = true
		out = append(out, v)
	}
	if len(idempotent) > 0 {
		out = append(out, variant(VariantIdempotent, idempotent, rr.Retry))
	}
	if restricted && len(others) == 0 {
		return out
	}
	if rr.Retry.IdempotencyHeader != "" {
		v := variant(VariantIdempotencyHeader, slices.Clone(others), rr.Retry)
		v.RequireHeader = rr.Retry.IdempotencyHeader
		out = append(out, v)
	}
	return append(out, variant(VariantNoRetry, others, Retry{}))
}
