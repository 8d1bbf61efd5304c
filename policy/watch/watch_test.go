package watch

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mesh/sluice/policy"
)

const eventTimeout = 10 * time.Second

func servicePolicy(name, timeout string) string {
	return "apiVersion: sluice.dev/v1\nkind: ServicePolicy\nmetadata: {name: " + name + "}\nspec:\n  timeout: " + timeout + "\n"
}

// write replaces a file atomically (a hidden temporary file renamed over
// it), so the watcher never sees it half-written.
func write(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeInPlace(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writeInPlace truncates and rewrites a file, as some editors do.
func writeInPlace(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// start runs a watcher on dir and returns its updates. The watcher is
// stopped, and its Run result checked, when the test ends.
func start(t *testing.T, dir string) <-chan Update {
	t.Helper()
	return startWatcher(t, &Watcher{Dir: dir})
}

func startWatcher(t *testing.T, w *Watcher) <-chan Update {
	t.Helper()
	w.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	w.Settle, w.MaxDelay = 20*time.Millisecond, 200*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Update)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run() = %v, want context.Canceled", err)
			}
		case <-time.After(eventTimeout):
			t.Errorf("Run() did not return after its context was cancelled")
		}
	})
	return out
}

func next(t *testing.T, updates <-chan Update, what string) Update {
	t.Helper()
	select {
	case u := <-updates:
		if (u.Set == nil) == (u.Err == nil) {
			t.Fatalf("%s: update with set=%v err=%v; want exactly one", what, u.Set != nil, u.Err)
		}
		return u
	case <-time.After(eventTimeout):
		t.Fatalf("%s: no update within %v", what, eventTimeout)
		return Update{}
	}
}

// nextSet waits for an update that must carry a set with exactly the named
// services (and, when timeout is not 0, the given timeout for the first).
func nextSet(t *testing.T, updates <-chan Update, what string, timeout time.Duration, services ...string) *policy.Set {
	t.Helper()
	u := next(t, updates, what)
	if u.Set == nil {
		t.Fatalf("%s: got error %v with diagnostics %v, want a set", what, u.Err, u.Diagnostics)
	}
	if got := strings.Join(u.Set.Services(), ","); got != strings.Join(services, ",") {
		t.Fatalf("%s: set has services %q, want %q", what, got, services)
	}
	if timeout != 0 {
		if got := u.Set.Resolve(services[0]).Timeout; got != timeout {
			t.Fatalf("%s: %s timeout = %v, want %v", what, services[0], got, timeout)
		}
	}
	return u.Set
}

func nextErr(t *testing.T, updates <-chan Update, what string) Update {
	t.Helper()
	u := next(t, updates, what)
	if u.Err == nil {
		t.Fatalf("%s: got a set with services %v, want an error", what, u.Set.Services())
	}
	return u
}

// consumer applies updates the way the control plane does: a set replaces
// the current one, an error leaves it in place.
type consumer struct {
	current *policy.Set
	lastErr error
}

func (c *consumer) apply(u Update) {
	if u.Set != nil {
		c.current, c.lastErr = u.Set, nil
		return
	}
	c.lastErr = u.Err
}

func TestWatchChanges(t *testing.T) {
	dir := t.TempDir()
	web := filepath.Join(dir, "web.yaml")
	write(t, web, servicePolicy("web", "1s"))
	updates := start(t, dir)
	nextSet(t, updates, "initial", time.Second, "web")

	writeInPlace(t, web, servicePolicy("web", "2s"))
	eventually(t, updates, "file changed in place", func(u Update) bool {
		// The watcher may catch the file truncated (an empty, valid set)
		// before it catches the new contents.
		return u.Set != nil && u.Set.Resolve("web").Timeout == 2*time.Second
	})

	api := filepath.Join(dir, "api.yaml")
	write(t, api, servicePolicy("api", "3s"))
	nextSet(t, updates, "file added", 3*time.Second, "api", "web")

	if err := os.Remove(api); err != nil {
		t.Fatal(err)
	}
	nextSet(t, updates, "file deleted: its policies are gone", 2*time.Second, "web")

	if err := os.Remove(web); err != nil {
		t.Fatal(err)
	}
	nextSet(t, updates, "last file deleted: an empty set", 0)
}

func TestWatchInvalidChangeKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	web := filepath.Join(dir, "web.yaml")
	write(t, web, servicePolicy("web", "1s"))
	write(t, filepath.Join(dir, "api.yaml"), servicePolicy("api", "1s"))
	updates := start(t, dir)
	var c consumer
	c.apply(next(t, updates, "initial"))
	good := c.current

	write(t, web, servicePolicy("web", "fast"))
	u := nextErr(t, updates, "invalid change")
	c.apply(u)
	if len(u.Diagnostics) != 1 {
		t.Fatalf("diagnostics = %v, want one", u.Diagnostics)
	}
	if d := u.Diagnostics[0]; d.Location != web+":5" || d.Field != "spec.timeout" {
		t.Errorf("diagnostic = %v, want it at %s:5 on spec.timeout", d, web)
	}
	if !strings.Contains(u.Err.Error(), "rejected") {
		t.Errorf("Err = %v", u.Err)
	}
	if c.current != good || c.current.Resolve("web").Timeout != time.Second || c.lastErr == nil {
		t.Errorf("consumer did not keep the last good set")
	}

	write(t, web, servicePolicy("web", "4s"))
	c.apply(next(t, updates, "fixed"))
	if c.current == good || c.current.Resolve("web").Timeout != 4*time.Second || c.lastErr != nil {
		t.Errorf("consumer did not take the fixed set")
	}
}

func TestWatchInitiallyInvalid(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "web.yaml"), servicePolicy("web", "1"))
	updates := start(t, dir)
	nextErr(t, updates, "initial")
	write(t, filepath.Join(dir, "web.yaml"), servicePolicy("web", "1s"))
	nextSet(t, updates, "fixed", time.Second, "web")
}

func TestWatchAtomicRename(t *testing.T) {
	dir := t.TempDir()
	web := filepath.Join(dir, "web.yaml")
	write(t, web, servicePolicy("web", "1s"))
	updates := start(t, dir)
	nextSet(t, updates, "initial", time.Second, "web")

	tmp := filepath.Join(dir, ".web.yaml.tmp")
	write(t, tmp, servicePolicy("web", "2s"))
	if err := os.Rename(tmp, web); err != nil {
		t.Fatal(err)
	}
	nextSet(t, updates, "renamed over", 2*time.Second, "web")
}

// TestWatchConfigMapSwap replays how the kubelet updates a ConfigMap
// volume: files are symlinks through "..data", itself a symlink to a
// timestamped directory that is swapped atomically.
func TestWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	gen := func(name string, files map[string]string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		for f, data := range files {
			write(t, filepath.Join(dir, name, f), data)
		}
	}
	gen("..2026_01_01_00_00_00.1", map[string]string{"web.yaml": servicePolicy("web", "1s")})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..2026_01_01_00_00_00.1", filepath.Join(dir, "..data")))
	must(os.Symlink("..data/web.yaml", filepath.Join(dir, "web.yaml")))
	updates := start(t, dir)
	nextSet(t, updates, "initial", time.Second, "web")

	gen("..2026_01_01_00_01_00.2", map[string]string{"web.yaml": servicePolicy("web", "2s")})
	must(os.Symlink("..2026_01_01_00_01_00.2", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	must(os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")))
	nextSet(t, updates, "..data swapped", 2*time.Second, "web")
}

// TestWatchSkipsNoOps checks that events which leave the policy files as
// they were send nothing: the next update is the next real change.
func TestWatchSkipsNoOps(t *testing.T) {
	dir := t.TempDir()
	web := filepath.Join(dir, "web.yaml")
	write(t, web, servicePolicy("web", "1s"))
	reads := make(chan bool, 100)
	updates := startWatcher(t, &Watcher{Dir: dir, loaded: func(sent bool) { reads <- sent }})
	nextSet(t, updates, "initial", time.Second, "web")
	if !<-reads {
		t.Fatalf("initial read sent nothing")
	}

	write(t, web, servicePolicy("web", "1s")) // same content
	now := time.Now()
	if err := os.Chtimes(web, now, now); err != nil {
		t.Fatal(err)
	}
	select {
	case sent := <-reads:
		if sent {
			t.Fatalf("rewriting a file with the same contents sent an update")
		}
	case <-time.After(eventTimeout):
		t.Fatalf("the watcher did not re-read the rewritten file")
	}
	select {
	case u := <-updates:
		t.Fatalf("unexpected update %+v", u)
	default:
	}

	// Nor do events on files that are not policy files: the next update is
	// the next real change.
	writeInPlace(t, filepath.Join(dir, "notes.txt"), "not a policy")
	writeInPlace(t, filepath.Join(dir, ".web.yaml.swp"), "junk")
	write(t, web, servicePolicy("web", "5s"))
	nextSet(t, updates, "first real change", 5*time.Second, "web")
}

func TestWatchBurstOfWrites(t *testing.T) {
	dir := t.TempDir()
	web := filepath.Join(dir, "web.yaml")
	write(t, web, servicePolicy("web", "1s"))
	updates := start(t, dir)
	nextSet(t, updates, "initial", time.Second, "web")
	for i := 2; i <= 30; i++ {
		write(t, web, servicePolicy("web", time.Duration(i*int(time.Millisecond)).String()))
	}
	eventually(t, updates, "the last of a burst of writes", func(u Update) bool {
		return u.Set != nil && u.Set.Resolve("web").Timeout == 30*time.Millisecond
	})
}

// eventually waits for an update that satisfies ok, skipping others.
func eventually(t *testing.T, updates <-chan Update, what string, ok func(Update) bool) {
	t.Helper()
	deadline := time.After(eventTimeout)
	for {
		select {
		case u := <-updates:
			if ok(u) {
				return
			}
		case <-deadline:
			t.Fatalf("%s: no such update within %v", what, eventTimeout)
		}
	}
}

func TestWatchDirectoryRemovedAndRecreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "web.yaml"), servicePolicy("web", "1s"))
	updates := start(t, dir)
	nextSet(t, updates, "initial", time.Second, "web")

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	u := nextErr(t, updates, "directory removed")
	if len(u.Diagnostics) != 1 || u.Diagnostics[0].Location != dir {
		t.Errorf("diagnostics = %v, want one located at the directory", u.Diagnostics)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "web.yaml"), servicePolicy("web", "2s"))
	nextSet(t, updates, "directory back", 2*time.Second, "web")
}

func TestWatchMissingDirectory(t *testing.T) {
	err := Watch(context.Background(), filepath.Join(t.TempDir(), "nope"), nil, make(chan Update))
	if err == nil || !strings.Contains(err.Error(), "watching policy directory") {
		t.Errorf("Watch(missing dir) = %v, want an error", err)
	}
}

func TestWatchStopsWhileSending(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, dir, nil, make(chan Update)) }() // nobody reads
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Watch() = %v, want context.Canceled", err)
		}
	case <-time.After(eventTimeout):
		t.Fatalf("Watch() blocked sending after its context ended")
	}
}
