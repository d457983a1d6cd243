package chain

import (
	"testing"
	"time"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/bpf/rewrite"
)

func TestWithRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	counts := func(pass, drop uint64) counters.Counts {
		var c counters.Counts
		c[rewrite.CountSlot(int32(bpf.XDPPass))] = pass
		c[rewrite.CountSlot(int32(bpf.XDPDrop))] = drop
		return c
	}
	prev := []ChainStats{{
		Interface: "eth0", Hook: bpf.HookXDP, RootID: 7, Taken: t0,
		Root: &counters.RunStats{RunCount: 100, RunTime: 1000},
		Programs: []ProgramStats{
			{Name: "filter", ProgramID: 8, Counting: true, Counts: counts(10, 5), Run: &counters.RunStats{RunCount: 1, RunTime: 1}},
			{Name: "gone", Counting: true},
		},
	}}
	cur := []ChainStats{{
		Interface: "eth0", Hook: bpf.HookXDP, RootID: 7, Taken: t0.Add(2 * time.Second),
		Root: &counters.RunStats{RunCount: 300, RunTime: 1000 + 2*time.Millisecond},
		Programs: []ProgramStats{
			{Name: "filter", ProgramID: 9, Counting: true, Counts: counts(50, 25), Run: &counters.RunStats{RunCount: 10, RunTime: 10}},
			{Name: "new", Counting: true, Counts: counts(4, 0)},
		},
	}}
	out := WithRates(prev, cur)
	c := out[0]
	if c.Interval != 2*time.Second {
		t.Errorf("interval %s", c.Interval)
	}
	if c.RootRate == nil || c.RootRate.RunsPerSecond != 100 || c.RootRate.NsPerRun == nil || *c.RootRate.NsPerRun != 10000 || c.RootRate.CPUPercent != 0.1 {
		t.Errorf("root rate %+v", c.RootRate)
	}
	f := c.Programs[0]
	if f.PacketsPerSecond == nil || *f.PacketsPerSecond != 30 {
		t.Errorf("filter packets/s %v, want 30 (60 packets in 2 s)", f.PacketsPerSecond)
	}
	rates := map[string]float64{}
	for _, v := range f.VerdictRates {
		rates[v.Verdict] = v.PacketsPerSecond
	}
	if rates["pass"] != 20 || rates["drop"] != 10 {
		t.Errorf("verdict rates %v", rates)
	}
	if f.RunRate != nil {
		t.Errorf("a reloaded program (new ID) got run rates %+v", f.RunRate)
	}
	if n := c.Programs[1]; n.PacketsPerSecond != nil {
		t.Errorf("a program absent from the first snapshot got a rate: %+v", n)
	}
	if cur[0].Interval != 0 || cur[0].Programs[0].PacketsPerSecond != nil {
		t.Error("WithRates modified its input")
	}
}
