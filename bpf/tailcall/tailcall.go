package tailcall

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/load"
	"github.com/kfm-project/kfm/bpf/probe"
)

//go:embed root.o
var rootObject []byte

// Limits and names.
const (
	// MaxPrograms is the longest chain: the root's tail call plus 31 from
	// program to program stay within the kernel's limit of 32 (33 since
	// Linux 5.17) tail calls per packet.
	MaxPrograms = 32
	// ChainMapName is the name by which rewritten programs reference their
	// chain's PROG_ARRAY. An object that has a map of this name cannot be
	// chained by this backend.
	ChainMapName = "kfm_chain"
	// RootPriority is the cls_bpf priority (and handle) of the TC root on
	// kernels without TCX.
	RootPriority = 0x1000
)

// Name is the backend's name.
const Name = "tailcall"

// Errors callers branch on.
var (
	// ErrTooLong: the chain has more than MaxPrograms programs.
	ErrTooLong = errors.New("chain too long for tail calls")
	// ErrMixedCalls: a program with bpf-to-bpf calls, on a kernel whose
	// verifier refuses tail calls from such programs (before Linux 5.10).
	ErrMixedCalls = errors.New("tail calls from programs with bpf-to-bpf calls are refused by this kernel")
)

// Backend chains programs with tail calls. Its zero value is not usable; use
// New. A Backend caches its kernel probes and may be shared by goroutines.
type Backend struct {
	mixedOnce sync.Once
	mixedErr  error
	tcxOnce   sync.Once
	tcxErr    error
}

// New returns the tailcall backend.
func New() *Backend { return &Backend{} }

// Name returns "tailcall".
func (b *Backend) Name() string { return Name }

// Supports reports whether the kernel runs tail-call chains on hook h: it
// loads a root program for h (which needs BPF_PROG_TYPE_PROG_ARRAY and the
// tail-call helper).
func (b *Backend) Supports(h bpf.Hook) error {
	name, err := rootFunction(h)
	if err != nil {
		return err
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(rootObject))
	if err != nil {
		return fmt.Errorf("root object: %w", err)
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{name: spec.Programs[name]}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return fmt.Errorf("tail-call root for %s refused: %w: %w", h, load.Errno(err), bpf.ErrUnsupportedKernel)
	}
	coll.Close()
	return nil
}

// MixedCallsSupported reports whether the kernel accepts tail calls from
// programs that also make bpf-to-bpf calls (Linux 5.10 on x86-64). The probe
// loads a tiny program doing both; the result is cached.
func (b *Backend) MixedCallsSupported() error {
	b.mixedOnce.Do(func() { b.mixedErr = probeMixedCalls() })
	return b.mixedErr
}

func probeMixedCalls() error {
	pa, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create PROG_ARRAY: %w", err)
	}
	defer pa.Close()
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Call.Label("kfm_probe_sub"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, pa.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, int32(bpf.XDPPass)),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("kfm_probe_sub"),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
	if err != nil {
		return fmt.Errorf("%w (needs Linux 5.10): %w", ErrMixedCalls, load.Errno(err))
	}
	prog.Close()
	return nil
}

// tcxSupported caches probe.TCX: the TC root attaches with TCX where the
// kernel has it.
func (b *Backend) tcxSupported() bool {
	b.tcxOnce.Do(func() { b.tcxErr = probe.TCX() })
	return b.tcxErr == nil
}

func rootFunction(h bpf.Hook) (string, error) {
	switch {
	case h == bpf.HookXDP:
		return "kfm_xdp_root", nil
	case h.IsTC():
		return "kfm_tc_root", nil
	}
	return "", fmt.Errorf("unknown hook %q", h)
}
