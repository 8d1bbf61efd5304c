package main

import (
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{"POD_NAME": "p1"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Service != "demo" || c.Listen != ":8080" || c.Port != 8080 || c.Registry != registryNone ||
		c.EtcdPrefix != "/services" || c.LeaseTTL != 10*time.Second || c.Weight != 1 ||
		c.DrainDelay != 5*time.Second || c.ConsulAddr != "127.0.0.1:8500" ||
		len(c.EtcdEndpoints) != 1 || c.EtcdEndpoints[0] != "127.0.0.1:2379" {
		t.Fatalf("defaults = %+v", c)
	}
}

func TestLoadConfigKubernetes(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{
		"SERVICE_NAME": "demo", "POD_NAME": "demo-abc", "POD_IP": "10.244.1.7", "LISTEN_ADDR": "0.0.0.0:8080",
		"ADVERTISE_PORT": "15006", "REGISTRY": "etcd", "ETCD_ENDPOINTS": "etcd-0:2379, etcd-1:2379",
		"ZONE": "zone-a", "WEIGHT": "3", "LEASE_TTL": "5s", "DRAIN_DELAY": "0s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.hostPort() != "10.244.1.7:15006" || c.Weight != 3 || c.LeaseTTL != 5*time.Second || c.DrainDelay != 0 ||
		strings.Join(c.EtcdEndpoints, "|") != "etcd-0:2379|etcd-1:2379" {
		t.Fatalf("config = %+v", c)
	}
}

func TestLoadConfigReportsEveryError(t *testing.T) {
	_, err := loadConfig(envOf(map[string]string{
		"SERVICE_NAME": "Demo!", "POD_NAME": "p", "REGISTRY": "consul", "POD_IP": "pod-ip",
		"WEIGHT": "0", "LEASE_TTL": "500ms", "DRAIN_DELAY": "later", "ADVERTISE_PORT": "70000",
	}))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"SERVICE_NAME", "POD_IP", "WEIGHT", "LEASE_TTL: must be at least 1s", "DRAIN_DELAY", "ADVERTISE_PORT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if _, err := loadConfig(envOf(map[string]string{"POD_NAME": "p", "REGISTRY": "zookeeper"})); err == nil || !strings.Contains(err.Error(), "REGISTRY") {
		t.Errorf("REGISTRY=zookeeper: err = %v", err)
	}
	if _, err := loadConfig(envOf(map[string]string{"POD_NAME": "p", "LISTEN_ADDR": "8080"})); err == nil || !strings.Contains(err.Error(), "LISTEN_ADDR") {
		t.Errorf("LISTEN_ADDR=8080: err = %v", err)
	}
}
