package etcd

import "testing"

// TestLayouts: every layout has its own Config.Format, the empty Format is
// the sluice layout, and the Format error lists them all.
func TestLayouts(t *testing.T) {
	seen := map[string]bool{}
	for _, l := range layouts() {
		if seen[l.format()] {
			t.Errorf("two layouts named %q", l.format())
		}
		seen[l.format()] = true
		if got, ok := layoutOf(l.format()); !ok || got != l {
			t.Errorf("layoutOf(%q) = %v, %v", l.format(), got, ok)
		}
	}
	if l, ok := layoutOf(""); !ok || l.format() != FormatSluice {
		t.Errorf(`layoutOf("") = %v, %v; want the sluice layout`, l, ok)
	}
	if l, ok := layoutOf("consul"); ok {
		t.Errorf(`layoutOf("consul") = %v`, l)
	}
	if got, want := formatNames(), "sluice, kratos or gozero"; got != want {
		t.Errorf("formatNames() = %q, want %q", got, want)
	}
}
