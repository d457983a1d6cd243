package chain

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkChainElements builds the elements of 300 chains of the same five
// programs, as apply does for kfm.yaml: one op is all 300 chains. With the
// per-run memo each object is parsed once, so memory per op follows the
// five programs, not the 300 chains (compare B/op with -benchmem).
func BenchmarkChainElements(b *testing.B) {
	ctx := context.Background()
	objs := []struct{ path, fn string }{
		{"xdp_ratelimit.o", "xdp_ratelimit"},
		{"xdp_icmpdrop.o", "xdp_icmpdrop"},
		{"xdp_portfilter.o", "xdp_portfilter"},
		{"xdp_count.o", "xdp_count"},
		{"../../internal/testprogs/xdp_pass.o", "xdp_pass"},
	}
	for b.Loop() {
		s := &Sources{BaseDir: "../examples/programs"}
		for i := range 300 {
			cs := &ChainSpec{Interface: fmt.Sprintf("sa%d", i), Hook: "xdp"}
			for _, o := range objs {
				if _, _, err := s.LockProgram(ctx, cs, ProgramSpec{Path: o.path, Function: o.fn}); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

// TestMemoParsesOnce: the same object content gives the same parsed
// object, other content another.
func TestMemoParsesOnce(t *testing.T) {
	s := &Sources{BaseDir: "../examples/programs"}
	cs := &ChainSpec{Interface: "a", Hook: "xdp"}
	_, e1, err := s.LockProgram(context.Background(), cs, ProgramSpec{Path: "xdp_count.o"})
	if err != nil {
		t.Fatal(err)
	}
	_, e2, err := s.LockProgram(context.Background(), &ChainSpec{Interface: "b", Hook: "xdp"}, ProgramSpec{Path: "xdp_count.o", Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	_, e3, err := s.LockProgram(context.Background(), cs, ProgramSpec{Path: "xdp_icmpdrop.o"})
	if err != nil {
		t.Fatal(err)
	}
	if e1.Object != e2.Object {
		t.Error("the same object file was parsed twice in one run")
	}
	if e1.Object == e3.Object || e3.Function != "xdp_icmpdrop" {
		t.Errorf("another object got %s's parse", e1.Function)
	}
}
