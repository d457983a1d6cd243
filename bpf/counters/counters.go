package counters

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/rewrite"
	"github.com/kfm-project/kfm/internal/bpfinfo"
)

const (
	// MapName is the name by which a rewritten program references its
	// counter map, and the map's name in the kernel.
	MapName = "kfm_counters"
	// PinName is the file name of a counter map pinned beside a program's
	// state maps. The hyphen keeps it apart from every map a C program can
	// declare (their names are C identifiers).
	PinName = "kfm-counters"
	// Slots is the number of counters per program (see rewrite.CountSlot).
	Slots = rewrite.CountSlots
)

// ErrIncompatible: a map is not a counter map of this layout.
var ErrIncompatible = errors.New("not a verdict counter map of this layout")

// MapSpec is the definition of a counter map: a one-entry per-CPU array
// whose value holds Slots 64-bit counters.
func MapSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name: MapName, Type: ebpf.PerCPUArray,
		KeySize: 4, ValueSize: rewrite.CountValueSize, MaxEntries: 1,
	}
}

// New creates an empty counter map.
func New() (*ebpf.Map, error) {
	m, err := ebpf.NewMap(MapSpec())
	if err != nil {
		return nil, fmt.Errorf("create the verdict counter map: %w", err)
	}
	return m, nil
}

// Compatible reports whether m is a counter map of this layout (an error
// wrapping ErrIncompatible when not).
func Compatible(m *ebpf.Map) error {
	if err := MapSpec().Compatible(m); err != nil {
		return fmt.Errorf("%w: %w", ErrIncompatible, err)
	}
	return nil
}

// Counts are one program's packets per verdict slot (see
// rewrite.CountSlot), summed over all CPUs.
type Counts [Slots]uint64

// Read sums the per-CPU counters of m.
func Read(m *ebpf.Map) (Counts, error) {
	var per [][Slots]uint64
	if err := m.Lookup(uint32(0), &per); err != nil {
		return Counts{}, fmt.Errorf("read the verdict counters: %w", err)
	}
	var c Counts
	for _, v := range per {
		for i := range v {
			c[i] += v[i]
		}
	}
	return c, nil
}

// ReadPinned opens the counter map pinned at path and reads it.
func ReadPinned(path string) (Counts, error) {
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return Counts{}, fmt.Errorf("open the verdict counters %s: %w", path, err)
	}
	defer m.Close()
	if err := Compatible(m); err != nil {
		return Counts{}, fmt.Errorf("%s: %w", path, err)
	}
	return Read(m)
}

// Total is the number of packets the program returned a verdict for.
func (c Counts) Total() uint64 {
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

// Verdict is the number of packets for which the program returned a.
// Verdicts without a slot of their own return 0 (see Other).
func (c Counts) Verdict(a bpf.Action) uint64 {
	s := rewrite.CountSlot(int32(a))
	if s == rewrite.CountOther {
		return 0
	}
	return c[s]
}

// Sub returns c minus an earlier reading prev, slot by slot (0 where a
// counter went backwards, e.g. after --reset-maps).
func (c Counts) Sub(prev Counts) Counts {
	var d Counts
	for i := range c {
		if c[i] >= prev[i] {
			d[i] = c[i] - prev[i]
		}
	}
	return d
}

// VerdictCount is the number of packets of one verdict.
type VerdictCount struct {
	// Verdict is the verdict's name ("drop", "pass", "ok", "shot",
	// "next") or "other".
	Verdict string `json:"verdict"`
	Packets uint64 `json:"packets"`
}

// Verdicts lists the counts by verdict in a fixed order for hook h:
//
//	XDP: aborted, drop, pass, tx, redirect, other
//	TC:  ok, shot, redirect, next (-1: TC_ACT_UNSPEC, TCX_NEXT), other
//
// "other" sums every verdict not listed (on TC: reclassify, pipe, stolen,
// queued, repeat and undefined values; on XDP: undefined values, which the
// kernel treats as aborted).
func (c Counts) Verdicts(h bpf.Hook) []VerdictCount {
	var named []bpf.Action
	if h.IsTC() {
		named = []bpf.Action{bpf.TCOK, bpf.TCShot, bpf.TCRedirect, bpf.TCUnspec}
	} else {
		named = []bpf.Action{bpf.XDPAborted, bpf.XDPDrop, bpf.XDPPass, bpf.XDPTx, bpf.XDPRedirect}
	}
	out := make([]VerdictCount, 0, len(named)+1)
	var sum uint64
	for _, a := range named {
		name := bpf.ActionName(h, a)
		if a == bpf.TCUnspec {
			name = "next"
		}
		n := c.Verdict(a)
		sum += n
		out = append(out, VerdictCount{Verdict: name, Packets: n})
	}
	return append(out, VerdictCount{Verdict: "other", Packets: c.Total() - sum})
}

// Dropped is the number of packets the program dropped: XDP_DROP and
// XDP_ABORTED on XDP, TC_ACT_SHOT on TC.
func (c Counts) Dropped(h bpf.Hook) uint64 {
	if h.IsTC() {
		return c.Verdict(bpf.TCShot)
	}
	return c.Verdict(bpf.XDPDrop) + c.Verdict(bpf.XDPAborted)
}

// RunStats are the kernel's statistics of one program (struct
// bpf_prog_info's run_cnt and run_time_ns). The kernel counts only while
// statistics are enabled (EnableStats, or the sysctl
// kernel.bpf_stats_enabled), and only for programs it runs itself from a
// hook: a program that runs as an extension (freplace) of kfm's XDP
// dispatcher or is reached by a tail call is never counted; its time is
// part of the time of the program that runs it (the dispatcher, the
// tail-call root).
type RunStats struct {
	RunCount uint64        `json:"runCount"`
	RunTime  time.Duration `json:"runTimeNs"`
}

// ProgramRunStats reads the kernel's statistics of program id (with
// bpfinfo: a scrape reads them for every program of every chain).
func ProgramRunStats(id ebpf.ProgramID) (RunStats, error) {
	runs, ns, err := bpfinfo.RunStats(id)
	if err != nil {
		return RunStats{}, err
	}
	return RunStats{RunCount: runs, RunTime: time.Duration(ns)}, nil
}

// EnableStats turns on the kernel's run statistics of every program
// (BPF_ENABLE_STATS, BPF_STATS_RUN_TIME) until the returned Closer is
// closed or the process exits; the sysctl is left alone. The kernel counts
// the holders, so this is safe to use while other tools do the same.
func EnableStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run statistics (BPF_ENABLE_STATS needs Linux 5.8 and CAP_SYS_ADMIN): %w", err)
	}
	return c, nil
}

// SysctlPath is the sysctl that keeps the kernel's run statistics on
// without a holder.
const SysctlPath = "/proc/sys/kernel/bpf_stats_enabled"

// SetSysctl sets kernel.bpf_stats_enabled under procRoot ("" means /proc's
// usual place). Statistics cost a few nanoseconds per program run for as
// long as it is on, for every BPF program of the host: kfm only sets it
// when asked to.
func SetSysctl(procRoot string, on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	if err := os.WriteFile(sysctlFile(procRoot), []byte(v), 0o644); err != nil {
		return fmt.Errorf("set kernel.bpf_stats_enabled: %w", err)
	}
	return nil
}

// SysctlEnabled reads kernel.bpf_stats_enabled under procRoot.
func SysctlEnabled(procRoot string) (bool, error) {
	b, err := os.ReadFile(sysctlFile(procRoot))
	if err != nil {
		return false, fmt.Errorf("read kernel.bpf_stats_enabled: %w", err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

func sysctlFile(procRoot string) string {
	if procRoot == "" {
		return SysctlPath
	}
	return filepath.Join(procRoot, "sys", "kernel", "bpf_stats_enabled")
}
