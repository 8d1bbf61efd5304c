package main

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestServeDrainsOnShutdown: once ctx ends the instance fails /healthz but
// keeps answering for DrainDelay, then stops cleanly.
func TestServeDrainsOnShutdown(t *testing.T) {
	c := config{Service: "demo", Pod: "p1", Listen: "127.0.0.1:0", Registry: registryNone, DrainDelay: 2 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, discard, c, ready) }()
	addr := <-ready
	get := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/healthz"); code != 200 {
		t.Fatalf("healthz = %d", code)
	}
	cancel()
	deadline := time.Now().Add(time.Second)
	for get("/healthz") != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("healthz still passing after shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code := get("/"); code != 200 {
		t.Fatalf("request while draining = %d", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return")
	}
}
