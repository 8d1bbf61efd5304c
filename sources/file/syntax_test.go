package file

import (
	"testing"

	"github.com/sluice-mesh/sluice/policy"
)

// TestSyntaxErrorLinesAgree checks that the registry file and policy files,
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
		{"tab in the indentation", lines("services:", "  - name: a", "\tinstances: []"), "3"},
		{"key at a list's indentation", lines("services:", "  - name: a", "  instances: []"), "2"},
		{"unknown alias", lines("services:", "  - name: *a"), "2"},
		{"invalid UTF-8", lines("services:", "  - name: \xff"), "2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, reg := Parse("x.yaml", []byte(tt.in))
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
