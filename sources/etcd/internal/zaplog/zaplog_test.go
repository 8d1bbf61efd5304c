package zaplog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestZapToSlog: etcd's zap logs reach slog at the right level, with their
// fields, below-minimum entries are dropped, and quiet messages are demoted.
func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	lg := New(log, zapcore.WarnLevel, "noise").Named("etcd").With(zap.String("member", "m1"))
	lg.Info("dropped below the minimum")
	lg.Warn("slow apply", zap.Duration("took", 1500000000), zap.Int("n", 3))
	lg.Error("disk full", zap.Error(errors.New("boom")))
	lg.Warn("noise") // demoted to debug, below the handler's level
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="slow apply" member=m1 logger=etcd n=3 took=1.5s`,
		`level=ERROR msg="disk full" member=m1 logger=etcd error=boom`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "dropped") || strings.Contains(out, "noise") {
		t.Errorf("log has entries it should not:\n%s", out)
	}
}
