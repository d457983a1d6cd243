package probe

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/kfm-project/kfm/bpf/internal/load"
	"golang.org/x/sys/unix"
)

//go:embed probe.o
var probeObject []byte

// ErrUnsupported is wrapped by every probe error that means the kernel lacks
// (or refuses) the feature, as opposed to a failure of the probe itself.
var ErrUnsupported = errors.New("unavailable here")

// refused is a probe failure that means the feature is unavailable: its
// message is the reason alone (the sentinel's text would only repeat it).
type refused struct {
	msg string
	err error
}

func (r *refused) Error() string        { return r.msg }
func (r *refused) Unwrap() error        { return r.err }
func (r *refused) Is(target error) bool { return target == ErrUnsupported }

// unavailable returns a refused error: "what: cause".
func unavailable(what string, cause error) error {
	if cause == nil {
		return &refused{msg: what}
	}
	return &refused{msg: what + ": " + cause.Error(), err: cause}
}

// EXT reports whether the kernel loads a BPF_PROG_TYPE_EXT program against a
// global function of an XDP program, attaches it with an freplace link, and
// attaches the same loaded program to a second target (re-attach, Linux 5.10).
func EXT() error {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(probeObject))
	if err != nil {
		return fmt.Errorf("probe object: %w", err)
	}
	loadTarget := func() (*ebpf.Program, error) {
		return ebpf.NewProgram(spec.Programs["kfm_probe"])
	}
	t1, err := loadTarget()
	if err != nil {
		return fmt.Errorf("load XDP probe program: %w", err)
	}
	defer t1.Close()
	t2, err := loadTarget()
	if err != nil {
		return fmt.Errorf("load XDP probe program: %w", err)
	}
	defer t2.Close()

	extSpec := spec.Programs["kfm_probe_ext"].Copy()
	extSpec.AttachTarget = t1
	ext, err := ebpf.NewProgram(extSpec)
	if err != nil {
		return unavailable("freplace (EXT) programs refused", load.Errno(err))
	}
	defer ext.Close()

	l1, err := link.AttachFreplace(t1, "kfm_probe_target", ext)
	if err != nil {
		return unavailable("freplace attach refused", load.Errno(err))
	}
	defer l1.Close()
	l2, err := link.AttachFreplace(t2, "kfm_probe_target", ext)
	if err != nil {
		return unavailable("freplace re-attach to a second target refused (needs Linux 5.10)", load.Errno(err))
	}
	defer l2.Close()

	// The replacement must take effect: kfm_probe now returns XDP_DROP.
	ret, _, err := t1.Test(make([]byte, 14))
	if err != nil {
		return fmt.Errorf("run XDP probe program: %w", err)
	}
	if ret != 1 {
		return unavailable(fmt.Sprintf("freplace attached but not effective (verdict %d, want 1)", ret), nil)
	}
	return nil
}

// TCX reports whether the kernel supports TCX links (Linux 6.6). It attaches
// nothing: a TCX attach to a nonexistent interface fails with ENODEV on
// kernels that know TCX and with EINVAL on older ones.
func TCX() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, -1),
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("load TC program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{
		Program:   prog,
		Attach:    ebpf.AttachTCXIngress,
		Interface: math.MaxUint32,
	})
	switch {
	case err == nil:
		l.Close()
		return errors.New("TCX attach to a nonexistent interface succeeded")
	case errors.Is(err, unix.ENODEV):
		return nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return unavailable("TCX links: not supported by this kernel", nil)
	default:
		return unavailable("TCX links refused", load.Errno(err))
	}
}

// Prober caches probe results for the lifetime of one command.
type Prober struct {
	extOnce, tcxOnce sync.Once
	extErr, tcxErr   error
}

// EXT is the cached form of the package-level EXT.
func (p *Prober) EXT() error {
	p.extOnce.Do(func() { p.extErr = EXT() })
	return p.extErr
}

// TCX is the cached form of the package-level TCX.
func (p *Prober) TCX() error {
	p.tcxOnce.Do(func() { p.tcxErr = TCX() })
	return p.tcxErr
}
