package policy_test

import (
	"strings"
	"testing"

	"github.com/sluice-mesh/sluice/policy"
	"github.com/sluice-mesh/sluice/sources/file"
)

// TestSyntaxErrorLinesAgree checks that policy files and the registry file,
// which read YAML with the same reader, report a syntax error at the same
// line: the line of the problem, counted from 1.
func TestSyntaxErrorLinesAgree(t *testing.T) {
	tests := []struct {
		name string
		in   string
		line string
	}{
		// The "[" of line 2 is never closed; the YAML library says line 1.
		{"unclosed flow sequence", "a: 1\nb: [1, 2\nc: 3", "2"},
		{"tab in the indentation", join("services:", "  - name: a", "\tinstances: []"), "3"},
		{"key at a list's indentation", join("services:", "  - name: a", "  instances: []"), "2"},
		{"unknown alias", join("services:", "  - name: *a"), "2"},
		{"invalid UTF-8", join("services:", "  - name: \xff"), "2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, reg := file.Parse("x.yaml", []byte(tt.in))
			_, pol := policy.Parse("x.yaml", []byte(tt.in))
			if len(reg) != 1 || len(pol) != 1 {
				t.Fatalf("registry: %v; policy: %v; want one diagnostic each", reg, pol)
			}
			if want := "x.yaml:" + tt.line; reg[0].Location != want || pol[0].Location != want {
				t.Errorf("registry: %v; policy: %v; want both at %s", reg[0], pol[0], want)
			}
		})
	}
}

func join(ls ...string) string { return strings.Join(ls, "\n") + "\n" }
