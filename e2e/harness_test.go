// Package e2e runs the sluice binary against real clients: gRPC's own xDS
// client and real Envoy proxies, carrying real traffic on 127.0.0.1.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// sluiceBin is the binary under test, built once by TestMain in workDir,
// which also holds other binaries the tests build (a real etcd server) and
// is removed when the tests end.
var sluiceBin, workDir string

// sluiceRace says sluiceBin has the race detector: always, unless
// SLUICE_E2E_RACE=0 asks for a plain build, for memory and timing figures
// (docs/reliability.md) that the race detector would inflate.
var sluiceRace = os.Getenv("SLUICE_E2E_RACE") != "0"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	workDir = dir
	sluiceBin = filepath.Join(dir, "sluice")
	args := []string{"build", "-o", sluiceBin}
	if sluiceRace {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../cmd/sluice")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sluice:", err)
		return 1
	}
	return m.Run()
}

// requireE2E skips in -short mode.
func requireE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
}

// sluice is a running sluice process.
type sluice struct {
	XDSAddr, AdminAddr string
	cmd                *exec.Cmd
	logs               *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startSluice runs `sluice serve` with args on ephemeral loopback ports and
// waits until it reports its addresses. It is stopped when the test ends.
func startSluice(t *testing.T, args ...string) *sluice {
	t.Helper()
	full := append([]string{"serve", "--xds-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--log-format", "json", "--debounce", "20ms", "--max-delay", "200ms"}, args...)
	cmd := exec.Command(sluiceBin, full...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &sluice{cmd: cmd, logs: &syncBuffer{}}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sluice: %v", err)
	}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = s.logs.Write(append(append([]byte(nil), line...), '\n'))
			var rec struct {
				Msg   string `json:"msg"`
				XDS   string `json:"xds"`
				Admin string `json:"admin"`
			}
			if !sent && json.Unmarshal(line, &rec) == nil && rec.Msg == "sluice serving" {
				addrs <- [2]string{rec.XDS, rec.Admin}
				sent = true
			}
		}
	}()
	t.Cleanup(func() {
		stopProcess(cmd)
		if t.Failed() {
			t.Logf("sluice logs:\n%s", s.logs.String())
		}
	})
	select {
	case a := <-addrs:
		s.XDSAddr, s.AdminAddr = a[0], a[1]
	case <-time.After(30 * time.Second):
		t.Fatalf("sluice did not start; logs:\n%s", s.logs.String())
	}
	return s
}

// adminJSON GETs path from sluice's admin server and decodes it into v.
func (s *sluice) adminJSON(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := http.Get("http://" + s.AdminAddr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: decoding %q: %v", path, body, err)
		}
	}
	return resp.StatusCode
}

// adminText GETs path from sluice's admin server.
func (s *sluice) adminText(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + s.AdminAddr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return string(body)
}

// writeFile replaces path atomically, as editors and config management do.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a loopback port that was free a moment ago; for the few
// cases (Envoy listeners) where the port must be named before binding.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// registry renders a registry file for one service.
func registry(service string, instances ...string) string {
	return "services:\n" + serviceEntry(service, instances...)
}

// serviceEntry renders one service of a registry file's services list.
func serviceEntry(service string, instances ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n    instances:\n", service)
	for _, in := range instances {
		fmt.Fprintf(&b, "      - %s\n", in)
	}
	return b.String()
}

// instance renders one instance entry of a registry file.
func instance(addr string, extra string) string {
	host, port, _ := net.SplitHostPort(addr)
	s := fmt.Sprintf("{address: %s, port: %s", host, port)
	if extra != "" {
		s += ", " + extra
	}
	return s + "}"
}

// interruptSignal stops a sluice command the way Ctrl-C does.
var interruptSignal = os.Interrupt

// stopProcess interrupts cmd and waits for it, killing it after 10 s.
func stopProcess(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// realBinary finds a real component's binary: the path in env, else the
// one `make deps` installs at rel (from this package), else name on PATH.
// Outside CI a missing binary skips the test saying how to get it; with
// SLUICE_REQUIRE_E2E=1 (set by .ci/run) it fails.
func realBinary(t *testing.T, name, env, rel, hint string) string {
	t.Helper()
	candidates := []string{os.Getenv(env), rel}
	if p, err := exec.LookPath(name); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			abs, _ := filepath.Abs(c)
			return abs
		}
	}
	msg := fmt.Sprintf("no %s binary: run `make deps` (%s) or set %s", name, hint, env)
	if os.Getenv("SLUICE_REQUIRE_E2E") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
