package tc

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/load"
	"github.com/kfm-project/kfm/bpf/probe"
)

// Backend names.
const (
	NameTCX = "tcx"
	NameTC  = "tc"
)

// TCX verdicts (include/uapi/linux/bpf.h since Linux 6.6; the distro
// headers here are older). TCXNext is TC_ACT_UNSPEC: the only verdict on
// which the next program of a tcx or cls_bpf chain runs.
const (
	TCXNext     = -1
	TCXPass     = 0
	TCXDrop     = 2
	TCXRedirect = 7
)

// Classic tc priorities kfm's filters use: the band [MinPriority,
// MaxPriority], new chains spaced PriorityStep apart so that programs can be
// inserted between neighbours without moving them.
const (
	MinPriority  = 0x2000
	MaxPriority  = 0xbfff
	PriorityStep = 0x100
	// FilterHandle is the cls_bpf handle of kfm's filters (one filter per
	// priority).
	FilterHandle = 1
	// FilterNamePrefix starts the name (TCA_BPF_NAME) of kfm's filters, as
	// `tc filter show` prints it.
	FilterNamePrefix = "kfm:"
)

// MaxPrograms bounds a chain: during a change the programs of the old and
// of the new chain are attached together, each with its own bit of the
// gate word (GateSlots).
const MaxPrograms = GateSlots / 2

type kind int

const (
	kindTCX kind = iota
	kindClassic
)

// Backend chains TC programs with TCX links (NewTCX) or classic cls_bpf
// filters (NewTC). A Backend caches its probe and may be shared by
// goroutines.
type Backend struct {
	kind      kind
	probeOnce sync.Once
	probeErr  error
}

// NewTCX returns the tcx backend: one TCX link per program (Linux 6.6).
func NewTCX() *Backend { return &Backend{kind: kindTCX} }

// NewTC returns the classic tc backend: a clsact qdisc and one
// direct-action cls_bpf filter per program (any kernel).
func NewTC() *Backend { return &Backend{kind: kindClassic} }

// Name returns "tcx" or "tc".
func (b *Backend) Name() string {
	if b.kind == kindTCX {
		return NameTCX
	}
	return NameTC
}

// ErrNotTC: the backend only chains programs on the TC hooks.
var ErrNotTC = errors.New("only chains programs on the TC hooks (tc-ingress, tc-egress)")

// Supports reports whether the backend chains programs on hook h here. tcx
// needs TCX links ("TCX links: not supported by this kernel" otherwise); tc
// needs the kernel to load a sched_cls program.
func (b *Backend) Supports(h bpf.Hook) error {
	if !h.IsTC() {
		return fmt.Errorf("the %s backend %w, not %s", b.Name(), ErrNotTC, h)
	}
	b.probeOnce.Do(func() {
		if b.kind == kindTCX {
			if err := probe.TCX(); err != nil {
				b.probeErr = unsupported{err}
			}
			return
		}
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, TCXNext), asm.Return()},
		})
		if err != nil {
			b.probeErr = fmt.Errorf("sched_cls programs refused: %w: %w", load.Errno(err), bpf.ErrUnsupportedKernel)
			return
		}
		prog.Close()
	})
	return b.probeErr
}

// Dir is where the backend keeps its pins for t:
// <bpffs>/kfm/tcx/[<netns>/]<ifindex>/<hook> or the same under
// <bpffs>/kfm/tc (see bpf.Target.PinDir).
func (b *Backend) Dir(t bpf.Target) string { return t.PinDir(b.Name()) }

// unsupported is a probe failure ("TCX links: not supported by this
// kernel") that also matches bpf.ErrUnsupportedKernel, without repeating
// the words.
type unsupported struct{ err error }

func (u unsupported) Error() string   { return u.err.Error() }
func (u unsupported) Unwrap() []error { return []error{u.err, bpf.ErrUnsupportedKernel} }
