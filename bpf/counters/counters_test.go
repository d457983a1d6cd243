package counters_test

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/bpf/rewrite"
	"github.com/kfm-project/kfm/internal/testenv"
)

func TestVerdicts(t *testing.T) {
	var c counters.Counts
	c[rewrite.CountSlot(-1)] = 3 // next
	c[rewrite.CountSlot(0)] = 10 // XDP aborted / TC ok
	c[rewrite.CountSlot(1)] = 20 // XDP drop / TC reclassify
	c[rewrite.CountSlot(2)] = 30 // XDP pass / TC shot
	c[rewrite.CountSlot(7)] = 4  // TC redirect
	c[rewrite.CountSlot(99)] = 5 // other
	for _, tc := range []struct {
		hook    bpf.Hook
		want    []counters.VerdictCount
		dropped uint64
	}{
		{bpf.HookXDP, []counters.VerdictCount{{"aborted", 10}, {"drop", 20}, {"pass", 30}, {"tx", 0}, {"redirect", 0}, {"other", 12}}, 30},
		{bpf.HookTCIngress, []counters.VerdictCount{{"ok", 10}, {"shot", 30}, {"redirect", 4}, {"next", 3}, {"other", 25}}, 30},
	} {
		got := c.Verdicts(tc.hook)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: Verdicts = %v, want %v", tc.hook, got, tc.want)
		}
		var sum uint64
		for _, v := range got {
			sum += v.Packets
		}
		if sum != c.Total() || c.Total() != 72 {
			t.Errorf("%s: verdicts sum to %d, total %d, want 72", tc.hook, sum, c.Total())
		}
		if d := c.Dropped(tc.hook); d != tc.dropped {
			t.Errorf("%s: Dropped = %d, want %d", tc.hook, d, tc.dropped)
		}
	}
	var prev counters.Counts
	prev[rewrite.CountSlot(2)] = 25
	prev[rewrite.CountSlot(0)] = 11 // went backwards (reset): 0
	if d := c.Sub(prev); d.Verdict(bpf.XDPPass) != 5 || d.Verdict(bpf.XDPAborted) != 0 || d.Verdict(bpf.XDPDrop) != 20 {
		t.Errorf("Sub: %v", d)
	}
}

// TestCountingProgram: a program rewritten by rewrite.Count and run by
// BPF_PROG_TEST_RUN counts into a counter map that Read and ReadPinned
// read; the kernel's run statistics grow while EnableStats is held.
func TestCountingProgram(t *testing.T) {
	testenv.RequirePrivileged(t)
	m, err := counters.New()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := counters.Compatible(m); err != nil {
		t.Fatal(err)
	}
	other, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := counters.Compatible(other); !errors.Is(err, counters.ErrIncompatible) {
		t.Errorf("Compatible(array) = %v, want ErrIncompatible", err)
	}

	// Drops packets shorter than 60 bytes, passes the others.
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 60),
		asm.JGT.Reg(asm.R4, asm.R3, "short"),
		asm.Mov.Imm(asm.R0, int32(bpf.XDPPass)),
		asm.Return(),
		asm.Mov.Imm(asm.R0, int32(bpf.XDPDrop)).WithSymbol("short"),
		asm.Return(),
	}
	insns, err = rewrite.Count(insns, counters.MapName)
	if err != nil {
		t.Fatal(err)
	}
	spec := &ebpf.CollectionSpec{
		Maps:     map[string]*ebpf.MapSpec{counters.MapName: counters.MapSpec()},
		Programs: map[string]*ebpf.ProgramSpec{"p": {Name: "p", Type: ebpf.XDP, License: "GPL", Instructions: insns}},
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{counters.MapName: m}})
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	p := coll.Programs["p"]

	stats, err := counters.EnableStats()
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	info, _ := p.Info()
	id, _ := info.ID()
	before, err := counters.ProgramRunStats(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{64, 14, 100, 20, 30} {
		if _, err := p.Run(&ebpf.RunOptions{Data: make([]byte, size), Repeat: 3}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := counters.Read(m)
	if err != nil {
		t.Fatal(err)
	}
	if c.Verdict(bpf.XDPPass) != 6 || c.Verdict(bpf.XDPDrop) != 9 || c.Total() != 15 {
		t.Errorf("counted %v, want pass 6 and drop 9", c)
	}
	pin := filepath.Join(testenv.BPFFS(t), counters.PinName)
	if err := m.Pin(pin); err != nil {
		t.Fatal(err)
	}
	defer m.Unpin()
	if pc, err := counters.ReadPinned(pin); err != nil || pc != c {
		t.Errorf("ReadPinned = %v, %v; want %v", pc, err, c)
	}
	after, err := counters.ProgramRunStats(id)
	if err != nil {
		t.Fatal(err)
	}
	// BPF_PROG_TEST_RUN counts into the statistics like a hook does.
	if after.RunCount-before.RunCount != 15 || after.RunTime <= before.RunTime || after.RunTime-before.RunTime > time.Second {
		t.Errorf("run stats %+v -> %+v, want 15 more runs and some time", before, after)
	}
}
