package compat

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/analyze"
)

// ErrIncompatible: the running kernel lacks something the program needs.
var ErrIncompatible = errors.New("the kernel cannot run this program")

// Report says whether the running kernel can run one program.
type Report struct {
	// Program is the entry function.
	Program string `json:"program"`
	// Kernel is the running kernel's release (uname -r).
	Kernel string `json:"kernel"`
	// OK: nothing is missing.
	OK bool `json:"ok"`
	// Missing names what the kernel lacks, one item each ("helper
	// bpf_xdp_get_buff_len for xdp programs").
	Missing []string `json:"missing,omitempty"`
	// Unknown lists checks the kernel could not answer (probe errors);
	// they do not refuse.
	Unknown []string `json:"unknown,omitempty"`
}

// Err is nil when r.OK, else an error wrapping ErrIncompatible that names
// the program, the kernel and everything missing.
func (r *Report) Err() error {
	if r.OK {
		return nil
	}
	return fmt.Errorf("%s cannot run on this kernel (%s): it lacks %s: %w", r.Program, r.Kernel, strings.Join(r.Missing, "; "), ErrIncompatible)
}

// Check probes the running kernel for what program name of spec needs.
// minKernel is the publisher's declared minimum ("5.10", empty for none).
func Check(spec *ebpf.CollectionSpec, name, minKernel string) (*Report, error) {
	ps, ok := spec.Programs[name]
	if !ok {
		return nil, fmt.Errorf("program %q: %w", name, bpf.ErrNoProgram)
	}
	r := &Report{Program: name, Kernel: Release()}
	typeName := bpf.ProgramTypeName(ps.Type)
	if err := features.HaveProgramType(ps.Type); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			r.Missing = append(r.Missing, "program type "+typeName)
		} else {
			r.Unknown = append(r.Unknown, fmt.Sprintf("program type %s: %v", typeName, err))
		}
	} else {
		seen := map[asm.BuiltinFunc]bool{}
		for i := range ps.Instructions {
			ins := &ps.Instructions[i]
			if !ins.IsBuiltinCall() {
				continue
			}
			fn := asm.BuiltinFunc(ins.Constant)
			if seen[fn] {
				continue
			}
			seen[fn] = true
			if err := features.HaveProgramHelper(ps.Type, fn); err != nil {
				if errors.Is(err, ebpf.ErrNotSupported) {
					r.Missing = append(r.Missing, fmt.Sprintf("helper %s for %s programs", analyze.HelperName(fn), typeName))
				} else {
					r.Unknown = append(r.Unknown, fmt.Sprintf("helper %s: %v", analyze.HelperName(fn), err))
				}
			}
		}
	}
	if why := needsKernelBTF(ps); why != "" {
		if _, err := btf.LoadKernelSpec(); err != nil {
			r.Missing = append(r.Missing, fmt.Sprintf("kernel BTF (/sys/kernel/btf/vmlinux), needed for %s", why))
		}
	}
	if minKernel != "" {
		want, err := parseVersion(minKernel)
		if err != nil {
			return nil, fmt.Errorf("minimum kernel %q: %w", minKernel, err)
		}
		switch have, err := parseVersion(r.Kernel); {
		case err != nil:
			r.Unknown = append(r.Unknown, fmt.Sprintf("kernel release %q: %v", r.Kernel, err))
		case less(have, want):
			r.Missing = append(r.Missing, fmt.Sprintf("kernel %s or newer (the publisher's minimum)", minKernel))
		}
	}
	r.OK = len(r.Missing) == 0
	return r, nil
}

// needsKernelBTF says why ps needs the kernel's BTF, or "".
func needsKernelBTF(ps *ebpf.ProgramSpec) string {
	for i := range ps.Instructions {
		ins := &ps.Instructions[i]
		if ins.IsKfuncCall() {
			return "kfunc calls"
		}
		if btf.CORERelocationMetadata(ins) != nil {
			return "CO-RE relocations"
		}
	}
	return ""
}

// Release returns the running kernel's release (uname -r).
func Release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// parseVersion reads "5.10", "6.12.38", "6.1.0-37-cloud-amd64" or
// "6.12.117+deb13-cloud-amd64" as
// major, minor, patch.
func parseVersion(s string) ([3]int, error) {
	var v [3]int
	s, _, _ = strings.Cut(s, "-")
	parts := strings.SplitN(s, ".", 4)
	if len(parts) < 2 {
		return v, fmt.Errorf("want MAJOR.MINOR[.PATCH], like 5.10")
	}
	for i := 0; i < len(parts) && i < 3; i++ {
		digits := parts[i]
		if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 && i > 0 {
			digits = digits[:j] // "117+deb13"
		}
		n, err := strconv.Atoi(digits)
		if err != nil {
			return v, fmt.Errorf("want MAJOR.MINOR[.PATCH], like 5.10")
		}
		v[i] = n
	}
	return v, nil
}

func less(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}
