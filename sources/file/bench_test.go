package file

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkParse parses a registry file of 1,000 services × 10 instances
// (590 KB, the scale benchmark's mesh): the cost, on top of the source's
// 50 ms settle delay, of every change to a file that size.
//
//	go test -run '^$' -bench Parse -benchmem ./sources/file/
func BenchmarkParse(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("services:\n")
	for s := range 1000 {
		fmt.Fprintf(&sb, "  - name: svc-%04d\n    instances:\n", s)
		for i := range 10 {
			fmt.Fprintf(&sb, "      - {address: 10.%d.%d.%d, port: 8080, zone: zone-%d}\n", s/250, s%250, i+1, i%3)
		}
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		st, diags := Parse("mesh.yaml", data)
		if st == nil || len(st.Services) != 1000 {
			b.Fatalf("mesh rejected: %v", diags)
		}
	}
}
