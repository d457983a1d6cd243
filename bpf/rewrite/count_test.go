package rewrite_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf/rewrite"
	"github.com/kfm-project/kfm/internal/testenv"
)

func TestCountSlot(t *testing.T) {
	for _, tc := range []struct {
		verdict int32
		slot    int
	}{
		{-1, 0}, {0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {7, 8},
		{8, rewrite.CountOther}, {9, rewrite.CountOther}, {-2, rewrite.CountOther}, {1 << 30, rewrite.CountOther},
	} {
		if got := rewrite.CountSlot(tc.verdict); got != tc.slot {
			t.Errorf("CountSlot(%d) = %d, want %d", tc.verdict, got, tc.slot)
		}
	}
}

func newCounterMap(tb testing.TB) *ebpf.Map {
	tb.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: rewrite.CountValueSize, MaxEntries: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// counted sums the counter map's slots over all CPUs and zeroes it.
func counted(tb testing.TB, m *ebpf.Map) [rewrite.CountSlots]uint64 {
	tb.Helper()
	var per [][rewrite.CountSlots]uint64
	if err := m.Lookup(uint32(0), &per); err != nil {
		tb.Fatal(err)
	}
	var sum [rewrite.CountSlots]uint64
	for _, v := range per {
		for i := range v {
			sum[i] += v[i]
		}
	}
	zero := make([][rewrite.CountSlots]uint64, len(per))
	if err := m.Put(uint32(0), zero); err != nil {
		tb.Fatal(err)
	}
	return sum
}

// TestCountSamples counts the verdicts of every sample program, alone and
// composed with the backends' rewrites: the program returns what it
// returned before (or its mapping), and exactly the slot of its own verdict
// counts each run, before TailCall or TCNext map it.
func TestCountSamples(t *testing.T) {
	testenv.RequirePrivileged(t)
	const runs = 3
	for _, s := range samples(t) {
		orig, err := load(s, nil, nil)
		if err != nil {
			continue // the samples meant to fail the verifier
		}
		for fi, frame := range frames {
			origRet := run(t, orig, frame)
			isTC := s.typ() != ebpf.XDP
			proceed := []int32{int32(origRet)} // proceed on what it returns: the mapping kicks in

			type mode struct {
				name string
				rw   func(asm.Instructions) (asm.Instructions, error)
				want uint32
			}
			modes := []mode{
				{"count", func(insns asm.Instructions) (asm.Instructions, error) { return insns, nil }, origRet},
				{"count+tailcall", func(insns asm.Instructions) (asm.Instructions, error) {
					return rewrite.TailCall(insns, rewrite.TailCallOptions{ProceedOn: proceed, Map: "kfm_chain", Index: 1})
				}, origRet}, // slot 1 is empty: the tail call falls through
			}
			if isTC {
				modes = append(modes,
					mode{"count+tcnext", func(insns asm.Instructions) (asm.Instructions, error) { return rewrite.TCNext(insns, proceed) }, 0xffffffff},
					mode{"count+gated", func(insns asm.Instructions) (asm.Instructions, error) {
						return rewrite.TCNextGated(insns, proceed, rewrite.Gate{Offset: skbCB4, Bit: 3})
					}, 0xffffffff},
				)
			}
			for _, md := range modes {
				counters := newCounterMap(t)
				chain, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 4})
				if err != nil {
					t.Fatal(err)
				}
				insns, err := rewrite.Count(s.spec.Programs[s.function].Instructions, "kfm_counters")
				if errors.Is(err, rewrite.ErrNoStackRoom) {
					chain.Close()
					continue
				}
				if err == nil {
					insns, err = md.rw(insns)
				}
				if err != nil {
					t.Fatalf("%s %s: %v", s, md.name, err)
				}
				extra := map[string]*ebpf.Map{"kfm_counters": counters}
				if md.name == "count+tailcall" {
					extra["kfm_chain"] = chain
				}
				p, err := load(s, insns, extra)
				if err != nil {
					t.Fatalf("%s %s: the verifier refuses the rewrite: %v", s, md.name, err)
				}
				for range runs {
					var got uint32
					if md.name == "count+gated" {
						got = runCB4(t, p, frame, 1<<3)
					} else {
						got = run(t, p, frame)
					}
					if got != md.want {
						t.Errorf("%s %s frame %d: returned %d, want %d", s, md.name, fi, got, md.want)
					}
				}
				if md.name == "count+gated" {
					runCB4(t, p, frame, 0) // gate closed: not counted
				}
				c := counted(t, counters)
				slot := rewrite.CountSlot(int32(origRet))
				for i, n := range c {
					want := uint64(0)
					if i == slot {
						want = runs
					}
					if n != want {
						t.Errorf("%s %s frame %d (verdict %d): slot %d counted %d, want %d (all: %v)", s, md.name, fi, int32(origRet), i, n, want, c)
					}
				}
				p.Close()
				chain.Close()
			}
		}
		orig.Close()
	}
}
