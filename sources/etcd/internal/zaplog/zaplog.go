// Package zaplog routes zap logs, what etcd's client and server write,
// into a slog.Logger, so etcd's messages land in sluice's own structured
// log instead of a second JSON stream on stderr.
package zaplog

import (
	"context"
	"log/slog"
	"sort"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a zap logger that forwards entries at or above min to log.
// Messages in quiet are logged at debug level whatever their own level.
func New(log *slog.Logger, min zapcore.Level, quiet ...string) *zap.Logger {
	c := &slogCore{h: log.Handler(), min: min, quiet: map[string]bool{}}
	for _, q := range quiet {
		c.quiet[q] = true
	}
	return zap.New(c)
}

type slogCore struct {
	h     slog.Handler
	min   zapcore.Level
	quiet map[string]bool
	attrs []slog.Attr
}

func (c *slogCore) level(e zapcore.Entry) slog.Level {
	if c.quiet[e.Message] {
		return slog.LevelDebug
	}
	return slogLevel(e.Level)
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return slog.LevelError
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	clone := *c
	clone.attrs = append(append([]slog.Attr(nil), c.attrs...), fieldAttrs(fields)...)
	return &clone
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) && c.h.Enabled(context.Background(), c.level(e)) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(e.Time, c.level(e), e.Message, 0)
	r.AddAttrs(c.attrs...)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(fieldAttrs(fields)...)
	return c.h.Handle(context.Background(), r)
}

func (c *slogCore) Sync() error { return nil }

// fieldAttrs turns zap fields into slog attributes, sorted by key.
func fieldAttrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, enc.Fields[k]))
	}
	return attrs
}
