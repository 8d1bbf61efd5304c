package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sluice-mesh/sluice/sources"
)

// Source serves the contents of one registry file and follows its changes.
type Source struct {
	path string
	log  *slog.Logger
	// settle is how long to wait after a file event before reading, so an
	// editor's write-rename-chmod sequence is read once, complete.
	settle time.Duration
	// rewatch is how often a source whose directory vanished tries to
	// watch it again.
	rewatch time.Duration
	// afterRead, when set (by tests), runs between reading the file and
	// parsing it.
	afterRead func()
}

// New returns a source for the registry file at path.
func New(path string, log *slog.Logger) *Source {
	return &Source{path: path, log: log.With("source", SourceName, "file", path), settle: 50 * time.Millisecond, rewatch: time.Second}
}

// Name implements sources.Source.
func (s *Source) Name() string { return SourceName }

// Run implements sources.Source. It watches the file's directory rather than
// the file, so atomic replacements (rename over the file, Kubernetes ConfigMap
// symlink swaps) are seen too.
func (s *Source) Run(ctx context.Context, events chan<- sources.Event) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching registry file %s: %w", s.path, err)
	}
	defer func() { _ = w.Close() }()
	if err := w.Add(filepath.Dir(s.path)); err != nil {
		return fmt.Errorf("watching directory of registry file %s: %w", s.path, err)
	}

	var last []byte
	loaded := false
	load := func() bool {
		data, err := os.ReadFile(s.path)
		if err != nil {
			// Forget the last content, so restoring the very same file is
			// seen as a change and clears the error.
			loaded = false
			s.log.Error("cannot read registry file; keeping the last good catalog", "err", err)
			return sources.Send(ctx, events, sources.Event{Source: SourceName, Err: err})
		}
		if s.afterRead != nil {
			s.afterRead()
		}
		if loaded && bytes.Equal(data, last) {
			return true
		}
		last, loaded = data, true
		st, diags := Parse(s.path, data)
		if st == nil {
			for _, d := range diags {
				s.log.Error("registry file rejected; keeping the last good catalog", "location", d.Location, "field", d.Field, "error", d.Message)
			}
			return sources.Send(ctx, events, sources.Event{
				Source:      SourceName,
				Err:         fmt.Errorf("registry file %s is invalid: %s", s.path, diags[0]),
				Diagnostics: diags,
			})
		}
		s.log.Info("registry file loaded", "services", len(st.Services))
		return sources.Send(ctx, events, sources.Event{Source: SourceName, State: st})
	}
	if !load() {
		return ctx.Err()
	}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// rewatch ticks while the file's directory is gone (rm -rf; mkdir):
	// the watch went with it, and is made again when it is back.
	var rewatch <-chan time.Time
	var rewatchTicker *time.Ticker
	defer func() {
		if rewatchTicker != nil {
			rewatchTicker.Stop()
		}
	}()
	dir := filepath.Clean(filepath.Dir(s.path))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("file watcher closed")
			}
			if filepath.Clean(ev.Name) == dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				s.log.Warn("registry file's directory removed; keeping the last good catalog and waiting for it to return")
				if rewatchTicker == nil {
					rewatchTicker = time.NewTicker(s.rewatch)
					rewatch = rewatchTicker.C
				}
				timer.Reset(s.settle)
				continue
			}
			if relevant(ev, s.path) {
				timer.Reset(s.settle)
			}
		case <-rewatch:
			if err := w.Add(dir); err == nil {
				s.log.Info("registry file's directory is back")
				rewatchTicker.Stop()
				rewatchTicker, rewatch = nil, nil
				timer.Reset(s.settle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("file watcher closed")
			}
			s.log.Warn("file watcher error; re-reading", "err", err)
			timer.Reset(s.settle)
		case <-timer.C:
			if !load() {
				return ctx.Err()
			}
		}
	}
}

// relevant reports whether a directory event may have changed the file,
// including Kubernetes' "..data" symlink swap.
func relevant(ev fsnotify.Event, path string) bool {
	if filepath.Clean(ev.Name) == filepath.Clean(path) {
		return true
	}
	return filepath.Base(ev.Name) == "..data"
}
