package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Registries the demo service can register itself in.
const (
	registryNone   = "none"
	registryEtcd   = "etcd"
	registryConsul = "consul"
)

// config is the demo service's configuration. It comes from environment
// variables, the way a Kubernetes Deployment sets it (see loadConfig).
type config struct {
	// Service is the name the instance registers under.
	Service string
	// Listen is the HTTP listen address.
	Listen string
	// Pod names this instance in every answer (the pod name in
	// Kubernetes).
	Pod string
	// Address and Port are what the registry is told: where callers (their
	// Envoy proxies) reach this instance.
	Address string
	Port    int
	// Registry is none, etcd or consul.
	Registry      string
	EtcdEndpoints []string
	EtcdPrefix    string
	LeaseTTL      time.Duration
	ConsulAddr    string
	Zone, Region  string
	Weight        int
	// DrainDelay is how long the instance keeps serving after it has
	// deregistered on SIGTERM, so that proxies learn about it first.
	DrainDelay time.Duration
}

// serviceName is the name syntax sluice accepts.
var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.\-_]{0,251}[a-z0-9])?$`)

// envHelp documents every variable loadConfig reads, for -h and errors.
const envHelp = `environment:
  SERVICE_NAME    service name to register (default demo)
  LISTEN_ADDR     HTTP listen address (default :8080)
  POD_NAME        instance name in answers (default: the host name)
  POD_IP          address to register (required unless REGISTRY=none)
  ADVERTISE_PORT  port to register (default: the LISTEN_ADDR port)
  REGISTRY        none, etcd or consul (default none)
  ETCD_ENDPOINTS  comma-separated etcd endpoints (default 127.0.0.1:2379)
  ETCD_PREFIX     key prefix (default /services)
  LEASE_TTL       etcd lease time-to-live (default 10s)
  CONSUL_ADDR     Consul agent HTTP address (default 127.0.0.1:8500)
  ZONE, REGION    the instance's locality
  WEIGHT          load-balancing weight, 1-65536 (default 1)
  DRAIN_DELAY     keep serving this long after deregistering (default 5s)`

// loadConfig reads the configuration through getenv (os.Getenv in main).
// Every problem is reported, not only the first.
func loadConfig(getenv func(string) string) (config, error) {
	get := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}
	var errs []error
	c := config{
		Service:    get("SERVICE_NAME", "demo"),
		Listen:     get("LISTEN_ADDR", ":8080"),
		Pod:        get("POD_NAME", ""),
		Address:    get("POD_IP", ""),
		Registry:   get("REGISTRY", registryNone),
		EtcdPrefix: get("ETCD_PREFIX", "/services"),
		ConsulAddr: get("CONSUL_ADDR", "127.0.0.1:8500"),
		Zone:       get("ZONE", ""),
		Region:     get("REGION", ""),
	}
	for _, ep := range strings.Split(get("ETCD_ENDPOINTS", "127.0.0.1:2379"), ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			c.EtcdEndpoints = append(c.EtcdEndpoints, ep)
		}
	}
	if c.Pod == "" {
		h, err := os.Hostname()
		if err != nil {
			errs = append(errs, fmt.Errorf("POD_NAME: not set and no host name: %w", err))
		}
		c.Pod = h
	}
	if !serviceName.MatchString(c.Service) {
		errs = append(errs, fmt.Errorf("SERVICE_NAME: %q is not a valid service name (lowercase letters, digits, '-', '.', '_')", c.Service))
	}
	_, listenPort, err := net.SplitHostPort(c.Listen)
	if err != nil {
		errs = append(errs, fmt.Errorf("LISTEN_ADDR: %q is not host:port: %w", c.Listen, err))
	}
	var perr error
	if c.Port, perr = port("ADVERTISE_PORT", get("ADVERTISE_PORT", listenPort)); err == nil && perr != nil {
		errs = append(errs, perr)
	}
	var derr error
	if c.LeaseTTL, derr = duration("LEASE_TTL", get("LEASE_TTL", "10s"), time.Second); derr != nil {
		errs = append(errs, derr)
	}
	if c.DrainDelay, derr = duration("DRAIN_DELAY", get("DRAIN_DELAY", "5s"), 0); derr != nil {
		errs = append(errs, derr)
	}
	if w := get("WEIGHT", "1"); w != "" {
		n, err := strconv.Atoi(w)
		if err != nil || n < 1 || n > 65536 {
			errs = append(errs, fmt.Errorf("WEIGHT: %q is not a whole number from 1 to 65536", w))
		}
		c.Weight = n
	}
	switch c.Registry {
	case registryNone:
	case registryEtcd, registryConsul:
		if _, err := netip.ParseAddr(c.Address); err != nil {
			errs = append(errs, fmt.Errorf("POD_IP: %q is not an IP address (REGISTRY=%s registers it)", c.Address, c.Registry))
		}
		if c.Registry == registryEtcd && len(c.EtcdEndpoints) == 0 {
			errs = append(errs, errors.New("ETCD_ENDPOINTS: no endpoint given"))
		}
	default:
		errs = append(errs, fmt.Errorf("REGISTRY: %q is not one of none, etcd, consul", c.Registry))
	}
	return c, errors.Join(errs...)
}

// hostPort is the registered host:port of the instance.
func (c config) hostPort() string {
	return net.JoinHostPort(c.Address, strconv.Itoa(c.Port))
}

func port(name, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%s: %q is not a port (1-65535)", name, s)
	}
	return n, nil
}

func duration(name, s string, lowest time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration (e.g. 10s): %w", name, s, err)
	}
	if d < lowest {
		return 0, fmt.Errorf("%s: must be at least %s, got %s", name, lowest, d)
	}
	return d, nil
}
