package main

import "testing"

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:18080": true, "[::1]:18080": true, "localhost:18080": true, "127.1.2.3:80": true,
		"0.0.0.0:18080": false, ":18080": false, "[::]:18080": false, "10.0.0.1:18080": false, "nonsense": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
