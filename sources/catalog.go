// Package sources holds the neutral service-catalog model that every registry
// watcher produces and the translator consumes, and the rule that merges the
// views of several registries into one catalog. It depends on the standard
// library only, so registry clients never leak past their own sub-packages.
package sources

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Health is the health of one instance as its registry reports it.
type Health int

// Health values, ordered so that a larger value is "worse"; merging picks the
// worst view (see Merge).
const (
	HealthUnknown Health = iota
	HealthHealthy
	HealthDraining
	HealthUnhealthy
)

var healthNames = [...]string{"unknown", "healthy", "draining", "unhealthy"}

func (h Health) String() string {
	if h < 0 || int(h) >= len(healthNames) {
		return "Health(" + strconv.Itoa(int(h)) + ")"
	}
	return healthNames[h]
}

// MarshalText makes Health readable in the admin API's JSON.
func (h Health) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText reads the words MarshalText writes.
func (h *Health) UnmarshalText(b []byte) error {
	for i, n := range healthNames {
		if string(b) == n {
			*h = Health(i)
			return nil
		}
	}
	return fmt.Errorf("unknown health %q", b)
}

// ParseHealth maps the health words registries use onto Health. The empty
// string means healthy: an instance that registered without a status is
// assumed to serve.
func ParseHealth(s string) (Health, error) {
	switch s {
	case "", "healthy", "passing", "up", "serving":
		return HealthHealthy, nil
	case "unhealthy", "critical", "down", "not_serving":
		return HealthUnhealthy, nil
	case "draining", "maintenance":
		return HealthDraining, nil
	case "unknown":
		return HealthUnknown, nil
	}
	return HealthUnknown, fmt.Errorf("unknown health %q (want healthy, unhealthy, draining or unknown)", s)
}

// serviceName is what sluice accepts as a service name: it becomes a cluster
// name, an Envoy virtual-host domain and a gRPC target, so it is limited to
// DNS-like characters.
var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.\-_]{0,251}[a-z0-9])?$`)

// ValidServiceName reports whether s can be used as a service name.
func ValidServiceName(s string) bool { return serviceName.MatchString(s) }

// DefaultWeight is the weight of an instance whose registry gave none.
const DefaultWeight = 1

// MaxWeight bounds instance weights; Envoy rejects a locality whose summed
// weights overflow uint32, so each weight is kept far below that.
const MaxWeight = 1 << 16

// Instance is one network endpoint of a service, as one source reports it.
type Instance struct {
	Address  string            `json:"address"`
	Port     uint32            `json:"port"`
	Health   Health            `json:"health"`
	Weight   uint32            `json:"weight"`
	Region   string            `json:"region,omitempty"`
	Zone     string            `json:"zone,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Source names the source that reported this view ("file", "etcd", ...).
	Source string `json:"source"`
	// Origin locates the entry inside its source: file:line or a registry key.
	Origin string `json:"origin,omitempty"`
}

// Key identifies an instance across sources.
func (i Instance) Key() string { return JoinHostPort(i.Address, i.Port) }

// JoinHostPort formats an address and port the way registries key instances:
// IPs in canonical form (so "::1" and "0:0::1" are one instance), anything
// else verbatim.
func JoinHostPort(addr string, port uint32) string {
	if a, err := netip.ParseAddr(addr); err == nil && port <= 65535 {
		return netip.AddrPortFrom(a, uint16(port)).String()
	}
	return net.JoinHostPort(addr, strconv.FormatUint(uint64(port), 10))
}

// Service is a named set of instances.
type Service struct {
	Name      string     `json:"name"`
	Instances []Instance `json:"instances"`
}

// State is the complete view of one source: every service it knows, sorted.
// Sources always send whole states, never deltas, so a consumer can replace
// its previous view without bookkeeping.
type State struct {
	Services    []Service    `json:"services"`
	Diagnostics []Diagnostic `json:"diagnostics,omitempty"`
}

// Normalize sorts services by name and instances by key, and fills in
// defaults, so equal registry contents always produce equal states.
func (s *State) Normalize(source string) {
	for si := range s.Services {
		NormalizeService(&s.Services[si], source)
	}
	sort.Slice(s.Services, func(a, b int) bool { return s.Services[a].Name < s.Services[b].Name })
	s.SortDiagnostics()
}

// NormalizeService does Normalize's work for one service, for sources that
// keep unchanged services between states and normalize only what changed.
func NormalizeService(svc *Service, source string) {
	for ii := range svc.Instances {
		in := &svc.Instances[ii]
		if in.Weight == 0 {
			in.Weight = DefaultWeight
		}
		in.Source = source
		// Registries hand over raw bytes; protobuf strings must be
		// UTF-8, and one bad label must not block every build.
		in.Zone, in.Region = validUTF8(in.Zone), validUTF8(in.Region)
		if needsUTF8Fix(in.Metadata) {
			md := make(map[string]string, len(in.Metadata))
			for k, v := range in.Metadata {
				md[validUTF8(k)] = validUTF8(v)
			}
			in.Metadata = md
		}
	}
	sort.Slice(svc.Instances, func(a, b int) bool {
		return lessInstance(svc.Instances[a], svc.Instances[b])
	})
}

// SortDiagnostics puts the diagnostics in location order.
func (s *State) SortDiagnostics() { sortDiagnostics(s.Diagnostics) }

func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

func needsUTF8Fix(m map[string]string) bool {
	for k, v := range m {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return true
		}
	}
	return false
}

// lessInstance orders instances by address (numerically for IPs, IPs before
// names) and then port.
func lessInstance(a, b Instance) bool {
	aa, errA := netip.ParseAddr(a.Address)
	ab, errB := netip.ParseAddr(b.Address)
	switch {
	case errA == nil && errB == nil:
		if c := aa.Compare(ab); c != 0 {
			return c < 0
		}
	case errA == nil:
		return true
	case errB == nil:
		return false
	case a.Address != b.Address:
		return a.Address < b.Address
	}
	return a.Port < b.Port
}
