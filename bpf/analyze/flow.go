package analyze

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

var (
	errInvalid    = errors.New("invalid instruction stream")
	errTooComplex = errors.New("too many steps")
)

// kind is what the analysis knows about a register or stack slot.
type kind uint8

const (
	kNone   kind = iota // no value yet (unreached)
	kConst              // one of a few known constants
	kScalar             // some number
	kCtx                // the context pointer
	kPkt                // a pointer into packet data (data, data_meta, ...)
	kPktEnd             // data_end
	kStack              // a pointer into the current function's stack
	kMem                // a pointer that is never the packet (map, map value, global, caller's stack)
	kTop                // anything, including a packet pointer
)

// maxConsts bounds a constant set; more values become kScalar.
const maxConsts = 8

// value is an abstract register value. For kConst, c[:n] are the possible
// values (sorted); for kStack, n == 1 means the offset from the frame
// pointer is c[0].
type value struct {
	k kind
	n uint8
	c [maxConsts]int64
}

var (
	top    = value{k: kTop}
	scalar = value{k: kScalar}
	mem    = value{k: kMem}
)

func constant(v int64) value { return value{k: kConst, n: 1, c: [maxConsts]int64{v}} }

func stackAt(off int64) value { return value{k: kStack, n: 1, c: [maxConsts]int64{off}} }

func (v value) isNumber() bool { return v.k == kConst || v.k == kScalar }

func (v value) isPointer() bool {
	switch v.k {
	case kCtx, kPkt, kPktEnd, kStack, kMem:
		return true
	}
	return false
}

// mayBePacket: a store through v, or a helper writing through v, may change
// packet bytes.
func (v value) mayBePacket() bool { return v.k == kPkt || v.k == kPktEnd || v.k == kTop }

func (v value) consts() []int64 { return v.c[:v.n] }

func join(a, b value) value {
	switch {
	case a.k == kNone:
		return b
	case b.k == kNone || a == b:
		return a
	case a.k == kConst && b.k == kConst:
		set := append(slices.Clone(a.consts()), b.consts()...)
		slices.Sort(set)
		set = slices.Compact(set)
		if len(set) > maxConsts {
			return scalar
		}
		out := value{k: kConst, n: uint8(len(set))}
		copy(out.c[:], set)
		return out
	case a.isNumber() && b.isNumber():
		return scalar
	case a.k == kStack && b.k == kStack:
		return value{k: kStack}
	case a.k == b.k:
		return value{k: a.k}
	}
	return top
}

// state is what is known before an instruction: registers r0-r10 and the
// 8-byte stack slots of the current function by offset from r10 (a slot not
// in the map holds anything).
type state struct {
	regs  [11]value
	slots map[int64]value
}

func (s *state) clone() *state {
	return &state{regs: s.regs, slots: maps.Clone(s.slots)}
}

// join merges o into s and reports whether s changed.
func (s *state) join(o *state) bool {
	changed := false
	for i := range s.regs {
		if j := join(s.regs[i], o.regs[i]); j != s.regs[i] {
			s.regs[i], changed = j, true
		}
	}
	for off, v := range s.slots {
		ov, ok := o.slots[off]
		if !ok {
			delete(s.slots, off)
			changed = true
			continue
		}
		j := join(v, ov)
		if j.k == kTop {
			delete(s.slots, off)
			changed = true
		} else if j != v {
			s.slots[off], changed = j, true
		}
	}
	return changed
}

// function is one function of the program: main (start 0) or a subprogram.
type function struct {
	start, end int
	entry      *state
	ret        value
	callSites  []int
}

// flow is the data-flow analysis: a worklist over the instructions of all
// functions, context-insensitive across bpf-to-bpf calls (a callee's entry
// state joins those of all its call sites, and every call site sees the
// join of its return values).
type flow struct {
	typ   ebpf.ProgramType
	insns asm.Instructions
	caps  *Capabilities

	raw    []int       // raw offset of each instruction
	index  map[int]int // raw offset -> instruction
	funcOf []int       // instruction -> index into funcs
	funcs  []*function
	byPos  map[int]int // function start -> index into funcs
	// symbols maps symbols to instructions; callbacks are the functions
	// whose address is loaded (bpf_loop, timers...).
	symbols   map[string]int
	callbacks []int

	states []*state
	work   []int
	queued []bool

	returns    map[int32]bool
	exitsSeen  bool
	exitsConst bool
	retWhy     string
	failed     bool
}

func newFlow(typ ebpf.ProgramType, insns asm.Instructions, caps *Capabilities) *flow {
	return &flow{typ: typ, insns: insns, caps: caps, returns: map[int32]bool{}, exitsConst: true}
}

// unknown makes every fact conservative after a failed analysis.
func (f *flow) unknown(why string) {
	f.failed = true
	c := f.caps
	c.set(&c.WritesPacket, FactWritesPacket, why)
	c.set(&c.AdjustsPacket, FactAdjustsPacket, why)
	c.set(&c.Redirects, FactRedirects, why)
	c.set(&c.WritesContext, FactWritesContext, why)
	f.retWhy = why
}

func (f *flow) returnWhy() string {
	if f.retWhy == "" {
		return ""
	}
	return " (" + f.retWhy + ")"
}

func (f *flow) mainWidth() int {
	if len(f.funcs) == 0 {
		n := 0
		for i := range f.insns {
			n += int(f.insns[i].Width())
		}
		return n
	}
	n := 0
	for i := f.funcs[0].start; i < f.funcs[0].end; i++ {
		n += int(f.insns[i].Width())
	}
	return n
}

// callTarget resolves the function a call or function-pointer load names.
func (f *flow) callTarget(i int, symbols map[string]int) (int, error) {
	ins := &f.insns[i]
	if ref := ins.Reference(); ref != "" {
		t, ok := symbols[ref]
		if !ok {
			return 0, fmt.Errorf("instruction %d calls %q, which is not in the program: %w", i, ref, errInvalid)
		}
		return t, nil
	}
	t, ok := f.index[f.raw[i]+1+int(ins.Constant)]
	if !ok {
		return 0, fmt.Errorf("instruction %d calls outside the program: %w", i, errInvalid)
	}
	return t, nil
}

// split finds the functions: main, and every call or callback target.
func (f *flow) split() error {
	n := len(f.insns)
	if n == 0 {
		return fmt.Errorf("no instructions: %w", errInvalid)
	}
	f.raw = make([]int, n)
	f.index = make(map[int]int, n)
	symbols := map[string]int{}
	off := 0
	for i := range f.insns {
		f.raw[i] = off
		f.index[off] = i
		off += int(f.insns[i].Width())
		if s := f.insns[i].Symbol(); s != "" {
			symbols[s] = i
		}
	}
	starts := map[int]bool{0: true}
	for i := range f.insns {
		if f.insns[i].IsFunctionReference() {
			t, err := f.callTarget(i, symbols)
			if err != nil {
				return err
			}
			starts[t] = true
		}
	}
	f.byPos = map[int]int{}
	for _, s := range slices.Sorted(maps.Keys(starts)) {
		f.byPos[s] = len(f.funcs)
		f.funcs = append(f.funcs, &function{start: s})
	}
	f.funcOf = make([]int, n)
	for k, fn := range f.funcs {
		fn.end = n
		if k+1 < len(f.funcs) {
			fn.end = f.funcs[k+1].start
		}
		for i := fn.start; i < fn.end; i++ {
			f.funcOf[i] = k
		}
	}
	for i := range f.insns {
		if f.insns[i].IsLoadOfFunctionPointer() {
			t, _ := f.callTarget(i, symbols)
			f.callbacks = append(f.callbacks, t)
		}
		if f.insns[i].IsFunctionCall() {
			t, _ := f.callTarget(i, symbols)
			callee := f.funcs[f.byPos[t]]
			callee.callSites = append(callee.callSites, i)
		}
	}
	f.symbols = symbols
	return nil
}

func (f *flow) enqueue(i int, s *state) {
	if f.states[i] == nil {
		f.states[i] = s.clone()
	} else if !f.states[i].join(s) {
		return
	}
	if !f.queued[i] {
		f.queued[i] = true
		f.work = append(f.work, i)
	}
}

func entryState(args [5]value) *state {
	s := &state{slots: map[int64]value{}}
	for i := range s.regs {
		s.regs[i] = top
	}
	copy(s.regs[1:6], args[:])
	s.regs[asm.R10] = stackAt(0)
	return s
}

func (f *flow) run() error {
	if err := f.split(); err != nil {
		return err
	}
	n := len(f.insns)
	f.states = make([]*state, n)
	f.queued = make([]bool, n)
	f.enqueue(0, entryState([5]value{{k: kCtx}, top, top, top, top}))
	// Callbacks get pointers to map values and to the caller's stack (the
	// helper's context argument), never to the packet.
	for _, t := range f.callbacks {
		if t != 0 {
			f.enqueue(t, entryState([5]value{mem, mem, mem, mem, mem}))
		}
	}
	budget := 2000*n + 10000
	for len(f.work) > 0 {
		if budget--; budget < 0 {
			return errTooComplex
		}
		i := f.work[len(f.work)-1]
		f.work = f.work[:len(f.work)-1]
		f.queued[i] = false
		if err := f.step(i); err != nil {
			return fmt.Errorf("instruction %d (%v): %w", i, f.insns[i], err)
		}
	}
	f.mainExits()
	return nil
}

// next enqueues the successor j of instruction i, which must stay in i's
// function.
func (f *flow) next(i, j int, s *state) error {
	fn := f.funcs[f.funcOf[i]]
	if j < fn.start || j >= fn.end {
		return fmt.Errorf("control leaves its function: %w", errInvalid)
	}
	f.enqueue(j, s)
	return nil
}

func (f *flow) step(i int) error {
	ins := &f.insns[i]
	s := f.states[i].clone()
	op := ins.OpCode
	if ins.Dst > asm.R10 || ins.Src > asm.R10 {
		return fmt.Errorf("register %v/%v: %w", ins.Dst, ins.Src, errInvalid)
	}
	switch cls := op.Class(); {
	case cls.IsALU():
		if err := f.alu(ins, s); err != nil {
			return err
		}
	case cls == asm.LdXClass:
		if ins.Src > asm.R10 {
			return fmt.Errorf("register %v: %w", ins.Src, errInvalid)
		}
		if m := op.Mode(); m != asm.MemMode && m != asm.MemSXMode {
			s.regs[ins.Dst] = top
			break
		}
		s.regs[ins.Dst] = f.load(s, s.regs[ins.Src], int64(ins.Offset), op.Size().Sizeof())
	case cls == asm.LdClass:
		f.ld(i, ins, s)
	case cls.IsStore():
		if err := f.store(i, ins, s); err != nil {
			return err
		}
	case cls.IsJump():
		return f.jump(i, ins, s)
	default:
		return fmt.Errorf("unknown instruction class: %w", errInvalid)
	}
	return f.next(i, i+1, s)
}

// ld handles the Ld class: 64-bit immediates (constants, maps, functions)
// and the legacy packet loads.
func (f *flow) ld(i int, ins *asm.Instruction, s *state) {
	if ins.OpCode != asm.LoadImmOp(asm.DWord) {
		// LD_ABS / LD_IND: r0 is a packet byte, r1-r5 are clobbered.
		s.regs[asm.R0] = scalar
		for r := asm.R1; r <= asm.R5; r++ {
			s.regs[r] = top
		}
		return
	}
	switch ins.Src {
	case asm.R0:
		s.regs[ins.Dst] = constant(ins.Constant)
	case asm.PseudoMapFD, asm.PseudoMapValue, asm.PseudoFunc,
		asm.R5, asm.R6: // BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE
		s.regs[ins.Dst] = mem
	default:
		s.regs[ins.Dst] = top
	}
}

// Context fields that hold packet pointers, by program type: offset ->
// kind.
var ctxPointers = map[ebpf.ProgramType]map[int64]kind{
	// struct xdp_md: data, data_end, data_meta.
	ebpf.XDP: {0: kPkt, 4: kPktEnd, 8: kPkt},
	// struct __sk_buff: data, data_end, data_meta.
	ebpf.SchedCLS: {76: kPkt, 80: kPktEnd, 140: kPkt},
	ebpf.SchedACT: {76: kPkt, 80: kPktEnd, 140: kPkt},
}

func (f *flow) load(s *state, from value, off int64, size int) value {
	switch from.k {
	case kCtx:
		fields, known := ctxPointers[f.typ]
		if !known {
			return top
		}
		if k, ok := fields[off]; ok {
			return value{k: k}
		}
		if size == 8 {
			return top // __sk_buff's sk and flow_keys are pointers
		}
		return scalar
	case kStack:
		if from.n != 1 {
			return top
		}
		at := from.c[0] + off
		if size == 8 && at%8 == 0 {
			if v, ok := s.slots[at]; ok {
				return v
			}
			return top
		}
		return scalar
	case kPkt, kPktEnd:
		return scalar
	case kMem:
		if size == 8 {
			return top
		}
		return scalar
	}
	return top
}

// store handles St, StX and atomic operations.
func (f *flow) store(i int, ins *asm.Instruction, s *state) error {
	op := ins.OpCode
	mode := op.Mode()
	if mode != asm.MemMode && mode != asm.AtomicMode {
		return fmt.Errorf("unknown store mode: %w", errInvalid)
	}
	var val value
	if op.Class() == asm.StXClass {
		if ins.Src > asm.R10 {
			return fmt.Errorf("register %v: %w", ins.Src, errInvalid)
		}
		val = s.regs[ins.Src]
	} else {
		val = constant(ins.Constant)
	}
	size := op.Size().Sizeof()
	if mode == asm.AtomicMode {
		const (
			fetch       = asm.AtomicOp(0x100)
			loadAcquire = asm.AtomicOp(0x10000)
		)
		switch ao := op.AtomicOp(); {
		case ao == loadAcquire:
			s.regs[ins.Dst] = f.load(s, s.regs[ins.Src], int64(ins.Offset), size)
			return nil
		case ao == asm.CmpXchg:
			s.regs[asm.R0] = top
		case ao&fetch != 0:
			s.regs[ins.Src] = top
		}
		val = top
	}
	to := s.regs[ins.Dst]
	switch to.k {
	case kPkt, kPktEnd:
		f.caps.set(&f.caps.WritesPacket, FactWritesPacket, fmt.Sprintf("instruction %d stores through a packet pointer", i))
	case kTop:
		f.caps.set(&f.caps.WritesPacket, FactWritesPacket, fmt.Sprintf("instruction %d stores through a pointer kfm cannot trace", i))
	case kCtx:
		f.caps.set(&f.caps.WritesContext, FactWritesContext, fmt.Sprintf("instruction %d stores into the context", i))
	case kStack:
		if to.n != 1 {
			clear(s.slots)
			break
		}
		at := to.c[0] + int64(ins.Offset)
		if size == 8 && at%8 == 0 {
			if val.k == kTop || val.k == kNone {
				delete(s.slots, at)
			} else {
				s.slots[at] = val
			}
			break
		}
		for slot := at &^ 7; slot < at+int64(size); slot += 8 {
			s.slots[slot] = scalar
		}
	}
	return nil
}

func (f *flow) alu(ins *asm.Instruction, s *state) error {
	op := ins.OpCode
	var src value
	if op.Source() == asm.ImmSource {
		src = constant(ins.Constant)
	} else {
		if ins.Src > asm.R10 {
			return fmt.Errorf("register %v: %w", ins.Src, errInvalid)
		}
		src = s.regs[ins.Src]
	}
	dst := s.regs[ins.Dst]
	aop := op.ALUOp()
	wide := op.Class() == asm.ALU64Class
	var out value
	switch {
	case aop == asm.Swap || aop == asm.Neg:
		if dst.k == kConst && aop == asm.Neg {
			out = mapConsts(dst, dst, func(a, _ int64) int64 { return -a }, wide)
		} else if dst.isNumber() {
			out = scalar
		} else {
			out = top
		}
	case aop == asm.Mov:
		switch {
		case ins.Offset != 0: // movsx
			out = numberOr(src)
		case wide:
			out = src
		case src.k == kConst:
			out = mapConsts(src, src, func(a, _ int64) int64 { return a }, false)
		default:
			out = numberOr(src)
		}
	case !wide:
		if dst.k == kConst && src.k == kConst && ins.Offset == 0 {
			out = constOp(aop, dst, src, false)
		} else if dst.isNumber() && src.isNumber() {
			out = scalar
		} else {
			out = top
		}
	case aop == asm.Add || aop == asm.Sub:
		out = pointerArith(aop, dst, src)
	case dst.k == kConst && src.k == kConst && ins.Offset == 0:
		out = constOp(aop, dst, src, true)
	case dst.isNumber() && src.isNumber():
		out = scalar
	default:
		out = top
	}
	s.regs[ins.Dst] = out
	return nil
}

func numberOr(v value) value {
	if v.isNumber() {
		return scalar
	}
	return top
}

func pointerArith(aop asm.ALUOp, dst, src value) value {
	sign := int64(1)
	if aop == asm.Sub {
		sign = -1
	}
	switch {
	case dst.k == kConst && src.k == kConst:
		return constOp(aop, dst, src, true)
	case dst.isNumber() && src.isNumber():
		return scalar
	case dst.isPointer() && src.isNumber():
		if dst.k == kStack {
			if dst.n == 1 && src.k == kConst && src.n == 1 {
				return stackAt(dst.c[0] + sign*src.c[0])
			}
			return value{k: kStack}
		}
		return value{k: dst.k}
	case aop == asm.Add && dst.isNumber() && src.isPointer():
		if src.k == kStack {
			return value{k: kStack}
		}
		return value{k: src.k}
	case aop == asm.Sub && dst.isPointer() && src.isPointer():
		return scalar
	}
	return top
}

// constOp applies aop to every pair of constants.
func constOp(aop asm.ALUOp, a, b value, wide bool) value {
	fn := func(x, y int64) int64 {
		ux, uy := uint64(x), uint64(y)
		shift := uy & 63
		if !wide {
			ux, uy = uint64(uint32(x)), uint64(uint32(y))
			shift = uy & 31
		}
		switch aop {
		case asm.Add:
			return int64(ux + uy)
		case asm.Sub:
			return int64(ux - uy)
		case asm.Mul:
			return int64(ux * uy)
		case asm.Div:
			if uy == 0 {
				return 0
			}
			return int64(ux / uy)
		case asm.Mod:
			if uy == 0 {
				return int64(ux)
			}
			return int64(ux % uy)
		case asm.Or:
			return int64(ux | uy)
		case asm.And:
			return int64(ux & uy)
		case asm.Xor:
			return int64(ux ^ uy)
		case asm.LSh:
			return int64(ux << shift)
		case asm.RSh:
			return int64(ux >> shift)
		case asm.ArSh:
			if !wide {
				return int64(uint32(int32(uint32(ux)) >> shift))
			}
			return x >> shift
		}
		return 0
	}
	switch aop {
	case asm.Add, asm.Sub, asm.Mul, asm.Div, asm.Mod, asm.Or, asm.And, asm.Xor, asm.LSh, asm.RSh, asm.ArSh:
		return mapConsts(a, b, fn, wide)
	}
	return scalar
}

// mapConsts applies fn to every pair of a's and b's constants; 32-bit
// results are zero-extended as the ALU32 class does.
func mapConsts(a, b value, fn func(x, y int64) int64, wide bool) value {
	var out value
	for _, x := range a.consts() {
		for _, y := range b.consts() {
			r := fn(x, y)
			if !wide {
				r = int64(uint32(r))
			}
			out = join(out, constant(r))
		}
	}
	return out
}

func (f *flow) jump(i int, ins *asm.Instruction, s *state) error {
	op := ins.OpCode
	switch jop := op.JumpOp(); jop {
	case asm.Exit:
		f.exit(i, s.regs[asm.R0])
		return nil
	case asm.Call:
		if err := f.call(i, ins, s); err != nil {
			return err
		}
		return f.next(i, i+1, s)
	default:
		if op.Source() == asm.RegSource && ins.Src > asm.R10 {
			return fmt.Errorf("register %v: %w", ins.Src, errInvalid)
		}
		delta := int(ins.Offset)
		if op.Class() == asm.Jump32Class && jop == asm.Ja {
			delta = int(ins.Constant)
		}
		t, ok := f.index[f.raw[i]+1+delta]
		if ref := ins.Reference(); ref != "" {
			t, ok = f.symbols[ref]
		}
		if !ok {
			return fmt.Errorf("jump target outside the program: %w", errInvalid)
		}
		if err := f.next(i, t, s); err != nil {
			return err
		}
		if jop == asm.Ja {
			return nil
		}
		return f.next(i, i+1, s)
	}
}

func (f *flow) exit(i int, r0 value) {
	fn := f.funcs[f.funcOf[i]]
	if fn.start != 0 {
		if j := join(fn.ret, r0); j != fn.ret {
			fn.ret = j
			for _, site := range fn.callSites {
				if f.states[site] != nil && !f.queued[site] {
					f.queued[site] = true
					f.work = append(f.work, site)
				}
			}
		}
		return
	}
}

// mainExits collects r0 at every reached exit of the main function, after
// the fixpoint.
func (f *flow) mainExits() {
	for i := f.funcs[0].start; i < f.funcs[0].end; i++ {
		ins := &f.insns[i]
		if f.states[i] == nil || ins.OpCode.JumpOp() != asm.Exit {
			continue
		}
		f.exitsSeen = true
		r0 := f.states[i].regs[asm.R0]
		if r0.k != kConst {
			f.exitsConst = false
			if f.retWhy == "" {
				f.retWhy = fmt.Sprintf("instruction %d returns a value computed at run time", i)
			}
			continue
		}
		for _, c := range r0.consts() {
			f.returns[int32(c)] = true
		}
	}
}

// args reports whether any of r1-r5 may point into the packet, and whether
// any points into this function's stack.
func args(s *state, regs []asm.Register) (packet, stack bool) {
	for _, r := range regs {
		switch v := s.regs[r]; {
		case v.mayBePacket():
			packet = true
		case v.k == kStack:
			stack = true
		}
	}
	return packet, stack
}

var argRegs = []asm.Register{asm.R1, asm.R2, asm.R3, asm.R4, asm.R5}

func (f *flow) call(i int, ins *asm.Instruction, s *state) error {
	c := f.caps
	r0 := top
	clobber := false
	switch {
	case ins.IsBuiltinCall():
		fn := asm.BuiltinFunc(ins.Constant)
		name := HelperName(fn)
		because := fmt.Sprintf("instruction %d calls %s", i, name)
		if packetWriters[fn] {
			c.set(&c.WritesPacket, FactWritesPacket, because)
		}
		if packetAdjusters[fn] {
			c.set(&c.AdjustsPacket, FactAdjustsPacket, because)
		}
		if redirectors[fn] {
			c.set(&c.Redirects, FactRedirects, because)
		}
		if metadataWriters[fn] {
			c.set(&c.WritesContext, FactWritesContext, because)
		}
		if fn == asm.FnTailCall {
			c.set(&c.TailCalls, FactTailCalls, because)
			why := because + " (a tail call runs code kfm cannot see)"
			c.set(&c.WritesPacket, FactWritesPacket, why)
			c.set(&c.AdjustsPacket, FactAdjustsPacket, why)
			c.set(&c.Redirects, FactRedirects, why)
			c.set(&c.WritesContext, FactWritesContext, why)
		}
		writes, known := memoryWriters[fn]
		if fn > lastKnownHelper {
			writes, known = argRegs, true
		}
		if known {
			packet, stack := args(s, writes)
			if packet {
				c.set(&c.WritesPacket, FactWritesPacket, because+" with a pointer that may be into the packet")
			}
			clobber = stack
		}
		switch {
		case memoryReturners[fn]:
			r0 = mem
		case pointerReturners[fn] || fn > lastKnownHelper:
			r0 = top
		default:
			r0 = scalar
		}
	case ins.IsKfuncCall():
		name := kfuncName(ins)
		packet, stack := args(s, argRegs)
		if packet {
			c.set(&c.WritesPacket, FactWritesPacket, fmt.Sprintf("instruction %d passes a pointer that may be into the packet to kfunc %s", i, name))
		}
		clobber = stack
	case ins.IsFunctionCall():
		t, err := f.callTarget(i, f.symbols)
		if err != nil {
			return err
		}
		callee := f.funcs[f.byPos[t]]
		var a [5]value
		for k, r := range argRegs {
			a[k] = s.regs[r]
			if a[k].k == kStack {
				a[k] = mem // the caller's stack is not the callee's
				clobber = true
			}
		}
		entry := entryState(a)
		if callee.entry == nil {
			callee.entry = entry
			f.enqueue(t, entry)
		} else if callee.entry.join(entry) {
			f.enqueue(t, callee.entry)
		}
		r0 = callee.ret
	default:
		return fmt.Errorf("unknown call: %w", errInvalid)
	}
	if clobber {
		clear(s.slots)
	}
	s.regs[asm.R0] = r0
	for _, r := range argRegs {
		s.regs[r] = top
	}
	return nil
}
