// Package watch follows a policy directory and reports every change as a new
// policy set or as the diagnostics that rejected it.
package watch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources"
)

// Update is one report about the policy directory. Exactly one of Set and
// Err is non-nil.
type Update struct {
	// Set is the directory's new, valid policy set. It replaces the
	// previous one entirely: a deleted file's policies are gone.
	Set *policy.Set
	// Err says the directory's current contents were rejected (or could
	// not be read). The consumer keeps serving the last good Set it
	// received; the watcher does not resend it. Before any valid Set has
	// arrived there is none, and consumers serve the built-in defaults (a
	// nil *policy.Set) or refuse to start.
	Err error
	// Diagnostics, with Err, say which files, lines and fields are wrong.
	Diagnostics []sources.Diagnostic
}

// Defaults of Watcher.
const (
	DefaultSettle   = 100 * time.Millisecond
	DefaultMaxDelay = time.Second
	// rewatchInterval is how often a watcher whose directory vanished
	// tries to watch it again.
	rewatchInterval = time.Second
)

// Watcher follows one policy directory.
type Watcher struct {
	Dir string
	Log *slog.Logger
	// Settle is how long the directory must be quiet after an event before
	// it is read, so an editor's or Kubernetes' multi-step update is read
	// once, complete. Default DefaultSettle.
	Settle time.Duration
	// MaxDelay bounds how long a stream of events can postpone a read.
	// Default DefaultMaxDelay.
	MaxDelay time.Duration

	// loaded, when set (by tests), is called after every read of the
	// directory with whether it sent an update.
	loaded func(sent bool)
}

// Watch is (&Watcher{Dir: dir, Log: log}).Run(ctx, out).
func Watch(ctx context.Context, dir string, log *slog.Logger, out chan<- Update) error {
	return (&Watcher{Dir: dir, Log: log}).Run(ctx, out)
}

// Run sends an Update for the directory's initial contents, then one for
// every change, until ctx is done (it then returns ctx.Err()). It watches
// the directory rather than its files, so files written in place, replaced
// by rename, added, deleted, or swapped in by a Kubernetes ConfigMap
// ("..data" symlink) are all seen. Changes are debounced (Settle, MaxDelay)
// and a change that leaves the files as they were sends nothing. It fails
// at once if the directory cannot be watched.
func (w *Watcher) Run(ctx context.Context, out chan<- Update) error {
	log := w.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("policy_dir", w.Dir)
	settle, maxDelay := w.Settle, w.MaxDelay
	if settle <= 0 {
		settle = DefaultSettle
	}
	if maxDelay < settle {
		maxDelay = max(DefaultMaxDelay, settle)
	}

	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching policy directory %s: %w", w.Dir, err)
	}
	defer func() { _ = fsw.Close() }()
	if err := fsw.Add(w.Dir); err != nil {
		return fmt.Errorf("watching policy directory %s: %w", w.Dir, err)
	}

	r := reader{dir: w.Dir, log: log, loaded: w.loaded}
	if !r.load(ctx, out) {
		return ctx.Err()
	}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var deadline time.Time // when the pending read must happen; zero if none
	schedule := func() {
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(maxDelay)
		}
		timer.Reset(min(settle, deadline.Sub(now)))
	}
	var rewatch <-chan time.Time
	var rewatchTicker *time.Ticker
	defer func() {
		if rewatchTicker != nil {
			rewatchTicker.Stop()
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-fsw.Events:
			if !ok {
				return errors.New("policy directory watcher closed")
			}
			if filepath.Clean(ev.Name) == filepath.Clean(w.Dir) && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				log.Warn("policy directory removed; keeping the last good policy set and waiting for it to return")
				if rewatchTicker == nil {
					rewatchTicker = time.NewTicker(rewatchInterval)
					rewatch = rewatchTicker.C
				}
				schedule()
				continue
			}
			if relevant(ev.Name) {
				log.Debug("policy directory event", "event", ev.String())
				schedule()
			}
		case err, ok := <-fsw.Errors:
			if !ok {
				return errors.New("policy directory watcher closed")
			}
			log.Warn("policy directory watcher error; re-reading", "err", err)
			schedule()
		case <-rewatch:
			if err := fsw.Add(w.Dir); err == nil {
				log.Info("policy directory is back")
				rewatchTicker.Stop()
				rewatchTicker, rewatch = nil, nil
				schedule()
			}
		case <-timer.C:
			deadline = time.Time{}
			if !r.load(ctx, out) {
				return ctx.Err()
			}
		}
	}
}

// relevant reports whether an event on a name in the directory may change
// the policy set: a policy file, or Kubernetes' "..data" symlink swap.
// Editors' hidden swap and backup files are ignored.
func relevant(name string) bool {
	base := filepath.Base(name)
	if base == "..data" {
		return true
	}
	return !strings.HasPrefix(base, ".") && policy.IsPolicyFile(base)
}

// reader loads the directory and sends what changed.
type reader struct {
	dir    string
	log    *slog.Logger
	loaded func(sent bool)
	last   [sha256.Size]byte
	sent   bool
}

// load reads the directory and sends an Update unless its contents are the
// same as last time. It reports false when ctx ended first.
func (r *reader) load(ctx context.Context, out chan<- Update) bool {
	files, diags := policy.ReadDir(r.dir)
	sum := fingerprint(files, diags)
	if r.sent && sum == r.last {
		r.log.Debug("policy files unchanged")
		if r.loaded != nil {
			r.loaded(false)
		}
		return true
	}
	var set *policy.Set
	if len(diags) == 0 {
		set, diags = policy.Load(files)
	}
	var u Update
	if set != nil {
		r.log.Info("policy set loaded", "files", len(files), "services", len(set.Services()))
		u.Set = set
	} else {
		for _, d := range diags {
			r.log.Error("policy change rejected; keeping the last good policy set", "location", d.Location, "field", d.Field, "error", d.Message)
		}
		u.Err = fmt.Errorf("policy directory %s rejected with %d error(s), first: %s", r.dir, len(diags), diags[0])
		u.Diagnostics = diags
	}
	select {
	case out <- u:
		r.last, r.sent = sum, true
		if r.loaded != nil {
			r.loaded(true)
		}
		return true
	case <-ctx.Done():
		return false
	}
}

// fingerprint digests what a load saw, so an unchanged directory is not
// reported again.
func fingerprint(files []policy.File, diags []sources.Diagnostic) [sha256.Size]byte {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "file %q %d\n", f.Name, len(f.Data))
		h.Write(f.Data)
	}
	for _, d := range diags {
		fmt.Fprintf(h, "diag %q\n", d.String())
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}
