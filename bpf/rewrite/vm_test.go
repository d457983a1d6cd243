package rewrite

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// vm interprets the subset of eBPF the synthetic test programs use, on the
// marshalled (offset-resolved) form of the instructions, so that the tests
// check what the kernel would execute rather than the rewriter's own
// bookkeeping. It is a test double for the kernel's interpreter; the
// privileged tests load the same kind of programs into the real kernel.
type vm struct {
	code  []asm.Instruction // by raw slot; the second slot of an ld_imm64 is empty
	regs  [11]uint64
	mem   map[uint64]byte
	steps int

	// touched records every address loaded or stored.
	touched map[uint64]bool

	// tailCall decides whether bpf_tail_call succeeds (ends the program).
	tailCall func(ctx uint64, m string, index uint32) bool
	calls    []tailCallRecord

	// r0 is r0 at the start (the verifier refuses programs that read it
	// before writing it; the fuzz test's arbitrary code may).
	r0 uint64
}

type tailCallRecord struct {
	ctx   uint64
	m     string
	index uint32
}

const (
	vmCtx      = 0xc0c0_0000
	vmFPBase   = 0x7000_0000
	vmMaxSteps = 100000
	vmMapBase  = 0x4d41_5000
	// result when a tail call succeeded
	vmTailCalled = ^uint64(0) - 1
)

func newVM(t *testing.T, insns asm.Instructions) *vm {
	t.Helper()
	cp := make(asm.Instructions, len(insns))
	copy(cp, insns)
	var buf bytes.Buffer
	if err := cp.Marshal(&buf, binary.LittleEndian); err != nil {
		t.Fatalf("marshal: %v", err)
	}
	// Decode again: the VM runs exactly the bytes the kernel would get,
	// but keeps references (map names) from the marshalled copy.
	decoded, err := asm.AppendInstructions(nil, &buf, binary.LittleEndian, "linux")
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(decoded) != len(cp) {
		t.Fatalf("decoded %d instructions, marshalled %d", len(decoded), len(cp))
	}
	v := &vm{mem: map[uint64]byte{}}
	for i := range decoded {
		ins := decoded[i]
		if ref := cp[i].Reference(); ref != "" {
			ins = ins.WithReference(ref)
		}
		v.code = append(v.code, ins)
		if ins.OpCode.IsDWordLoad() {
			v.code = append(v.code, asm.Instruction{})
		}
	}
	return v
}

func (v *vm) load(addr uint64, size int) uint64 {
	v.touch(addr, size)
	var b [8]byte
	for i := 0; i < size; i++ {
		b[i] = v.mem[addr+uint64(i)]
	}
	return binary.LittleEndian.Uint64(b[:])
}

func (v *vm) touch(addr uint64, size int) {
	if v.touched == nil {
		v.touched = map[uint64]bool{}
	}
	for i := 0; i < size; i++ {
		v.touched[addr+uint64(i)] = true
	}
}

func (v *vm) store(addr uint64, size int, val uint64) {
	v.touch(addr, size)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], val)
	for i := 0; i < size; i++ {
		v.mem[addr+uint64(i)] = b[i]
	}
}

type frame struct {
	ret   int
	saved [4]uint64
}

// run executes from slot 0 with r1 = ctx and r2 = arg and returns r0 (or
// vmTailCalled).
func (v *vm) run(arg uint64) (uint64, error) {
	v.regs = [11]uint64{}
	v.regs[asm.R0] = v.r0
	v.regs[asm.R1] = vmCtx
	v.regs[asm.R2] = arg
	v.regs[asm.R10] = vmFPBase
	var frames []frame
	pc := 0
	for {
		if v.steps++; v.steps > vmMaxSteps {
			return 0, fmt.Errorf("more than %d steps", vmMaxSteps)
		}
		if pc < 0 || pc >= len(v.code) {
			return 0, fmt.Errorf("pc %d out of range", pc)
		}
		ins := v.code[pc]
		op := ins.OpCode
		next := pc + 1
		if ins.Dst > asm.R10 || ins.Src > asm.R10 && !op.IsDWordLoad() && op.JumpOp() != asm.Call {
			return 0, fmt.Errorf("pc %d: invalid register in %v", pc, ins)
		}
		switch cls := op.Class(); cls {
		case asm.ALU64Class, asm.ALUClass:
			src := uint64(ins.Constant)
			if op.Source() == asm.RegSource {
				src = v.regs[ins.Src]
			}
			dst := v.regs[ins.Dst]
			var r uint64
			switch op.ALUOp() {
			case asm.Mov:
				r = src
			case asm.Add:
				r = dst + src
			case asm.Sub:
				r = dst - src
			case asm.And:
				r = dst & src
			default:
				return 0, fmt.Errorf("pc %d: unsupported ALU op %v", pc, ins)
			}
			if cls == asm.ALUClass {
				r = uint64(uint32(r))
			}
			v.regs[ins.Dst] = r
		case asm.LdClass:
			if !op.IsDWordLoad() {
				return 0, fmt.Errorf("pc %d: unsupported load %v", pc, ins)
			}
			v.regs[ins.Dst] = uint64(ins.Constant)
			if ins.IsLoadFromMap() {
				v.regs[ins.Dst] = vmMapBase + uint64(pc)
			}
			next = pc + 2
		case asm.LdXClass:
			v.regs[ins.Dst] = v.load(v.regs[ins.Src]+uint64(int64(ins.Offset)), op.Size().Sizeof())
		case asm.StXClass:
			v.store(v.regs[ins.Dst]+uint64(int64(ins.Offset)), op.Size().Sizeof(), v.regs[ins.Src])
		case asm.StClass:
			v.store(v.regs[ins.Dst]+uint64(int64(ins.Offset)), op.Size().Sizeof(), uint64(ins.Constant))
		case asm.JumpClass, asm.Jump32Class:
			switch jop := op.JumpOp(); jop {
			case asm.Exit:
				if len(frames) == 0 {
					return v.regs[asm.R0], nil
				}
				f := frames[len(frames)-1]
				frames = frames[:len(frames)-1]
				copy(v.regs[asm.R6:asm.R10], f.saved[:])
				v.regs[asm.R10] += 512
				next = f.ret
			case asm.Call:
				if ins.IsFunctionCall() {
					var f frame
					f.ret = pc + 1
					copy(f.saved[:], v.regs[asm.R6:asm.R10])
					frames = append(frames, f)
					v.regs[asm.R10] -= 512
					next = pc + 1 + int(ins.Constant)
					break
				}
				switch asm.BuiltinFunc(ins.Constant) {
				case asm.FnTailCall:
					rec := tailCallRecord{ctx: v.regs[asm.R1], index: uint32(v.regs[asm.R3])}
					rec.m = v.mapAt(v.regs[asm.R2])
					v.calls = append(v.calls, rec)
					if v.tailCall != nil && v.tailCall(rec.ctx, rec.m, rec.index) {
						return vmTailCalled, nil
					}
					v.regs[asm.R0] = ^uint64(0) - 21 // -EINVAL-ish garbage
				default:
					v.regs[asm.R0] = 0
				}
				for r := asm.R1; r <= asm.R5; r++ {
					v.regs[r] = 0xdead
				}
			case asm.Ja:
				if cls == asm.Jump32Class {
					next = pc + 1 + int(ins.Constant)
				} else {
					next = pc + 1 + int(ins.Offset)
				}
			default:
				a := v.regs[ins.Dst]
				b := uint64(ins.Constant)
				if op.Source() == asm.RegSource {
					b = v.regs[ins.Src]
				}
				if cls == asm.Jump32Class {
					a, b = uint64(uint32(a)), uint64(uint32(b))
				}
				var taken bool
				switch jop {
				case asm.JEq:
					taken = a == b
				case asm.JNE:
					taken = a != b
				case asm.JGT:
					taken = a > b
				case asm.JLT:
					taken = a < b
				case asm.JGE:
					taken = a >= b
				case asm.JSet:
					taken = a&b != 0
				default:
					return 0, fmt.Errorf("pc %d: unsupported jump %v", pc, ins)
				}
				if taken {
					next = pc + 1 + int(ins.Offset)
				}
			}
		default:
			return 0, fmt.Errorf("pc %d: unsupported instruction %v", pc, ins)
		}
		pc = next
	}
}

// mapAt names the map whose "pointer" ptr holds: the VM loads a map
// reference as vmMapBase plus the slot of its ld_imm64.
func (v *vm) mapAt(ptr uint64) string {
	slot := ptr - vmMapBase
	if slot < uint64(len(v.code)) && v.code[slot].IsLoadFromMap() {
		return v.code[slot].Reference()
	}
	return fmt.Sprintf("?%#x", ptr)
}
