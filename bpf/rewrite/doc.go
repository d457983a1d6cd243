// Package rewrite changes the instructions of a BPF program at load time so
// that programs without any chaining code can run in a chain.
//
// It works on the main function of a cilium/ebpf ProgramSpec only: the
// instructions from the start of the program up to the first subprogram (the
// first later instruction that carries a symbol). Subprograms (bpf-to-bpf
// callees, callbacks) are copied unchanged.
//
// Four rewrites exist:
//
//   - [TailCall] (the tailcall backend): at entry the context pointer (r1) is
//     spilled to an 8-byte stack slot below everything the main function
//     uses; every exit of the main function becomes a jump to a single
//     epilogue which, when the low 32 bits of r0 are one of the proceed-on
//     verdicts, reloads the context and tail-calls slot Index of the chain's
//     PROG_ARRAY; when the tail call falls through (end of the chain, empty
//     slot) the epilogue restores the verdict and exits.
//
//   - [TCNext] (the tcx and tc backends): every exit of the main function
//     becomes a jump to an epilogue that turns the proceed-on verdicts into
//     -1 (TC_ACT_UNSPEC, TCX_NEXT: "go on to the next program") and leaves the
//     other verdicts unchanged.
//
//   - [TCNextGated] (also the tcx and tc backends): TCNext plus a prologue
//     of four instructions that loads a 32-bit word of the context (kfm uses
//     skb->cb[4]) and returns -1 at once unless the program's own bit is set
//     in it. Something that runs earlier for the same packet (kfm's gate
//     program) writes the word, so that the decision which programs run is
//     taken once per packet. The prologue takes the main function's symbol,
//     func info and first line info, like TailCall's spill, and jumps to the
//     original first instruction.
//
//   - [Count] (every backend, the dispatcher included, unless the user
//     switches counters off): every exit of the main function becomes a
//     jump to an epilogue that adds one to the per-CPU counter of the
//     verdict in the program's counter map (key 0, one 64-bit slot per
//     verdict, see [CountSlot]) and returns the verdict unchanged. Backends
//     apply it first and their own rewrite after it, so it counts the
//     program's own verdict, before a tail call or the mapping to -1.
//
// # How jumps stay correct
//
// Before anything is inserted, every jump of the main function is turned
// from a raw offset into a symbolic reference: its target instruction gets a
// symbol (a generated "kfm.rw.N" label, or the symbol it already has) and the
// jump gets asm's reference metadata with the sentinel offset -1, which
// asm.Instructions.Marshal resolves to the final offset when the program is
// loaded. Bpf-to-bpf calls already are references (cilium/ebpf's ELF reader
// makes them so) and need nothing. A jump back to the first instruction keeps
// targeting that instruction, not the inserted prologue. After the rewrite the
// offsets are computed once to check that every jump still fits the
// instruction's 16-bit offset field.
//
// # BTF func and line info
//
// cilium/ebpf keeps func and line info as instruction metadata and computes
// their offsets when it marshals the program, so both follow the instructions
// they describe. The main function's func info and symbol move to the
// prologue (the kernel requires a func info record and a line info record at
// the first instruction of every function); the first line info record is
// copied to it. Subprograms keep theirs and simply move down.
//
// # Finding a free stack slot
//
// [StackDepth] follows the frame pointer (r10) through the main function with
// a small forward data-flow analysis: registers and spilled stack slots that
// hold r10 plus a known offset, joined by taking the lowest offset, widened at
// 512 bytes. Every memory access through such a register, every such pointer
// passed to a helper or function, and every such pointer stored to memory
// counts as a use. A program whose stack accesses cannot be bounded (a
// variable amount subtracted from a stack pointer) is refused with
// [ErrStackUnknown]. The analysis does not have to be perfect for safety: if
// a program ever wrote to the slot kfm picked, the verifier would see a
// non-context value reloaded into r1 for bpf_tail_call and refuse to load it,
// so a mistake can fail a load but never make a program misbehave.
package rewrite
