package chain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
)

// ChainStats is a snapshot of what one hook's chain did: per program the
// packets by verdict (kfm's verdict counters) and the kernel's run
// statistics where the kernel keeps them.
type ChainStats struct {
	Interface string         `json:"interface"`
	Ifindex   int            `json:"ifindex"`
	Hook      bpf.Hook       `json:"hook"`
	Backend   string         `json:"backend"`
	RootID    ebpf.ProgramID `json:"rootId,omitempty"`
	// Root is the kernel's statistics of the program attached to the
	// hook ahead of the chain. For the dispatcher and tailcall backends
	// its time is the time of the whole chain (the kernel times neither
	// extensions nor tail-called programs on their own); for tcx and tc
	// it is the gate's alone.
	Root *counters.RunStats `json:"root,omitempty"`
	// RootRate is Root over the interval (WithRates).
	RootRate *RunRate `json:"rootRate,omitempty"`
	// Taken is when the snapshot was taken; Interval the time since the
	// earlier snapshot that WithRates computed rates against.
	Taken    time.Time      `json:"taken"`
	Interval time.Duration  `json:"intervalNs,omitempty"`
	Programs []ProgramStats `json:"programs"`
}

// ProgramStats is one program of a chain, in run order.
type ProgramStats struct {
	Position  int            `json:"position"`
	Name      string         `json:"name"`
	ProgramID ebpf.ProgramID `json:"programId"`
	Digest    string         `json:"digest,omitempty"`
	Origin    string         `json:"origin"`
	// Counting says whether Counts holds anything: the program was
	// loaded by kfm with its verdict counters on.
	Counting bool `json:"counting"`
	// Counts are the packets per verdict slot since the counters were
	// created (they survive reorders and upgrades); Verdicts the same by
	// name, in a fixed order (counters.Counts.Verdicts), and Packets
	// their sum.
	Counts   counters.Counts         `json:"-"`
	Verdicts []counters.VerdictCount `json:"verdicts,omitempty"`
	Packets  uint64                  `json:"packets"`
	// Run is the kernel's statistics of the program, nil when the
	// kernel does not time it on its own; NotTimed then says why.
	Run      *counters.RunStats `json:"run,omitempty"`
	NotTimed string             `json:"notTimed,omitempty"`

	// Rates over the interval (WithRates).
	PacketsPerSecond *float64      `json:"packetsPerSecond,omitempty"`
	VerdictRates     []VerdictRate `json:"verdictRates,omitempty"`
	RunRate          *RunRate      `json:"runRate,omitempty"`
}

// VerdictRate is packets per second of one verdict.
type VerdictRate struct {
	Verdict          string  `json:"verdict"`
	PacketsPerSecond float64 `json:"packetsPerSecond"`
}

// RunRate is what the kernel's statistics say about an interval.
type RunRate struct {
	// RunsPerSecond is how often the kernel ran the program.
	RunsPerSecond float64 `json:"runsPerSecond"`
	// NsPerRun is the average time of one run (per packet), unknown
	// (nil) when it did not run or statistics were off.
	NsPerRun *float64 `json:"nsPerRun,omitempty"`
	// CPUPercent is the time spent in the program as a share of one CPU.
	CPUPercent float64 `json:"cpuPercent"`
}

// Why the kernel has no statistics of a program of its own.
const (
	notTimedExtension = "not timed by the kernel: runs as an extension of the dispatcher (its time is in the dispatcher's)"
	notTimedTailCall  = "not timed by the kernel: reached by a tail call (its time is in the root's)"
)

// Stats returns a snapshot of the chains on iface (every interface when
// iface is empty), in the order of Status, each program in run order. The
// kernel's run statistics grow only while they are enabled (see
// counters.EnableStats, which a caller holds for as long as it samples).
func (m *Manager) Stats(ctx context.Context, iface string) ([]ChainStats, error) {
	hss, err := m.Status(ctx, iface)
	if err != nil {
		return nil, err
	}
	out := []ChainStats{}
	for _, hs := range hss {
		if hs.Backend == "" {
			continue // locked but not running
		}
		cs := ChainStats{
			Interface: hs.Interface, Ifindex: hs.Ifindex, Hook: hs.Hook, Backend: hs.Backend,
			RootID: hs.RootID, Taken: time.Now(), Programs: []ProgramStats{},
		}
		if hs.RootID != 0 {
			if rs, err := counters.ProgramRunStats(hs.RootID); err == nil {
				cs.Root = &rs
			}
		}
		t := m.pinTarget(&hs)
		for _, p := range hs.Programs {
			ps := ProgramStats{Position: p.Position, Name: p.Name, ProgramID: p.ProgramID, Digest: p.Digest, Origin: p.Origin}
			if p.Origin == OriginKFM {
				c, err := counters.ReadPinned(filepath.Join(m.maps.elementDir(t, p.Name), counters.PinName))
				switch {
				case err == nil:
					ps.Counting, ps.Counts = true, c
					ps.Verdicts, ps.Packets = c.Verdicts(hs.Hook), c.Total()
				case errors.Is(err, fs.ErrNotExist):
				default:
					return nil, fmt.Errorf("%s/%s: %s: %w", hs.Interface, hs.Hook, p.Name, err)
				}
			}
			switch hs.Backend {
			case "dispatcher":
				ps.NotTimed = notTimedExtension
			case "tailcall":
				ps.NotTimed = notTimedTailCall
			default:
				if rs, err := counters.ProgramRunStats(p.ProgramID); err == nil {
					ps.Run = &rs
				}
			}
			cs.Programs = append(cs.Programs, ps)
		}
		out = append(out, cs)
	}
	return out, nil
}

// WithRates returns cur with the rates since prev (an earlier snapshot of
// the same chains) filled in. Programs are matched by hook, name and
// program ID; a program that was reloaded in between (new ID) keeps its
// counters, so its packet rates are known, but not its run rates.
func WithRates(prev, cur []ChainStats) []ChainStats {
	type key struct {
		iface string
		hook  bpf.Hook
		name  string
	}
	before := map[key]ProgramStats{}
	roots := map[key]ChainStats{}
	for _, c := range prev {
		roots[key{c.Interface, c.Hook, ""}] = c
		for _, p := range c.Programs {
			before[key{c.Interface, c.Hook, p.Name}] = p
		}
	}
	out := make([]ChainStats, len(cur))
	for i, c := range cur {
		c.Programs = append([]ProgramStats(nil), c.Programs...)
		pc, ok := roots[key{c.Interface, c.Hook, ""}]
		if !ok {
			out[i] = c
			continue
		}
		secs := c.Taken.Sub(pc.Taken).Seconds()
		if secs <= 0 {
			out[i] = c
			continue
		}
		c.Interval = c.Taken.Sub(pc.Taken)
		if c.Root != nil && pc.Root != nil && c.RootID == pc.RootID {
			c.RootRate = runRate(*pc.Root, *c.Root, secs)
		}
		for j := range c.Programs {
			p := &c.Programs[j]
			pp, ok := before[key{c.Interface, c.Hook, p.Name}]
			if !ok {
				continue
			}
			if p.Counting && pp.Counting {
				d := p.Counts.Sub(pp.Counts)
				r := float64(d.Total()) / secs
				p.PacketsPerSecond = &r
				for _, v := range d.Verdicts(c.Hook) {
					p.VerdictRates = append(p.VerdictRates, VerdictRate{Verdict: v.Verdict, PacketsPerSecond: float64(v.Packets) / secs})
				}
			}
			if p.Run != nil && pp.Run != nil && p.ProgramID == pp.ProgramID {
				p.RunRate = runRate(*pp.Run, *p.Run, secs)
			}
		}
		out[i] = c
	}
	return out
}

func runRate(prev, cur counters.RunStats, secs float64) *RunRate {
	if cur.RunCount < prev.RunCount || cur.RunTime < prev.RunTime {
		return nil
	}
	runs := cur.RunCount - prev.RunCount
	ns := float64(cur.RunTime - prev.RunTime)
	r := &RunRate{RunsPerSecond: float64(runs) / secs, CPUPercent: ns / (secs * 1e9) * 100}
	if runs > 0 && ns > 0 {
		per := ns / float64(runs)
		r.NsPerRun = &per
	}
	return r
}
