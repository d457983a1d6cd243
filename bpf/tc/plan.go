package tc

import (
	"errors"
	"sort"
)

// A change moves the hook from the old list of kfm programs to the final one
// with three kinds of steps, in this order:
//
//  1. insert: attach a new program right after the place of its predecessor
//     in the final chain (the first one before the first old program);
//  2. replace: swap the program of an old link or filter in place (one
//     atomic kernel operation), where a new program takes the place of an
//     old one of the same name (an upgrade) or of one that leaves the chain;
//  3. delete: detach the old programs that are left.
//
// Programs that are kept (same code, parameters and proceed-on, and still
// in the same relative order: a longest increasing subsequence of the old
// positions) are not touched. The gate switches from the old chain to the
// final one between the inserts and the deletes (change.move); a replace
// happens only in a plan that is that one replace and nothing else.

type opKind int

const (
	opInsert opKind = iota
	opReplace
	opDelete
)

type op struct {
	kind opKind
	e    *entry // the new entry (insert, replace)
	old  *entry // the entry replaced or deleted
	// insert: place e right after `after` (nil: before `before`, or at
	// the end when before is nil too).
	after, before *entry
}

type plan struct {
	ops []op
}

// errNoRoom: classic tc has no free priority where a program must go.
var errNoRoom = errors.New("no free tc priority between neighbours")

// lis returns, for a sequence of old indices (-1: no match), the positions
// that form a longest strictly increasing subsequence.
func lis(seq []int) map[int]bool {
	n := len(seq)
	length := make([]int, n)
	prev := make([]int, n)
	best, bestAt := 0, -1
	for i := 0; i < n; i++ {
		prev[i] = -1
		if seq[i] < 0 {
			continue
		}
		length[i] = 1
		for j := 0; j < i; j++ {
			if seq[j] >= 0 && seq[j] < seq[i] && length[j]+1 > length[i] {
				length[i], prev[i] = length[j]+1, j
			}
		}
		if length[i] > best {
			best, bestAt = length[i], i
		}
	}
	keep := map[int]bool{}
	for i := bestAt; i >= 0; i = prev[i] {
		keep[i] = true
	}
	return keep
}

// makePlan plans the move from old to final. Entries present in both (the
// same pointer) are kept and must appear in the same relative order. With
// inPlace, a new entry takes the place (link or filter, and gate bit) of an
// old one of the same name or of one that leaves the chain; otherwise every
// new entry is inserted. For classic tc, alloc assigns priorities to
// inserted entries (tc) and may fail with errNoRoom; for tcx it is nil.
func makePlan(old, final []*entry, alloc *prioAllocator, inPlace bool) (plan, error) {
	oldIdx := map[*entry]int{}
	for i, o := range old {
		oldIdx[o] = i
	}
	inFinal := map[string]bool{}
	for _, e := range final {
		inFinal[e.m.Name] = true
	}
	var inserts, replaces, deletes []op
	var pending []*entry // new entries since the last kept one
	nextOld := 0
	flush := func(upto int) {
		olds := old[nextOld:upto]
		paired := map[*entry]*entry{} // new -> old
		j := 0
		for _, n := range pending {
			if !inPlace {
				break
			}
			for k := j; k < len(olds); k++ {
				if olds[k].m.Name == n.m.Name || !inFinal[olds[k].m.Name] {
					paired[n] = olds[k]
					j = k + 1
					break
				}
			}
		}
		used := map[*entry]bool{}
		for _, n := range pending {
			if o, ok := paired[n]; ok {
				replaces = append(replaces, op{kind: opReplace, e: n, old: o})
				used[o] = true
				// n takes o's place: its link or priority (and its
				// gate bit: see assignSlots).
				n.link, n.m.Link, n.m.TCPriority = o.link, o.m.Link, o.m.TCPriority
			}
		}
		for _, o := range olds {
			if !used[o] {
				deletes = append(deletes, op{kind: opDelete, old: o})
			}
		}
		pending = nil
		nextOld = upto + 1
	}
	for _, e := range final {
		if i, kept := oldIdx[e]; kept {
			flush(i)
			continue
		}
		pending = append(pending, e)
	}
	flush(len(old))

	// Inserts in final order, after their predecessor's place.
	replaced := map[*entry]bool{}
	for _, r := range replaces {
		replaced[r.e] = true
	}
	for i, e := range final {
		if _, kept := oldIdx[e]; kept || replaced[e] {
			continue
		}
		in := op{kind: opInsert, e: e}
		if i > 0 {
			in.after = final[i-1]
		} else if len(old) > 0 {
			in.before = old[0]
		}
		inserts = append(inserts, in)
	}
	if alloc != nil {
		for _, in := range inserts {
			p, err := alloc.place(in)
			if err != nil {
				return plan{}, err
			}
			in.e.m.TCPriority = p
		}
	}
	ops := append(append(inserts, replaces...), deletes...)
	return plan{ops: ops}, nil
}

// inPlaceOnly reports whether p is one in-place replacement and nothing
// else: one atomic pointer swap that needs no gate change.
func (p plan) inPlaceOnly() bool {
	return len(p.ops) == 1 && p.ops[0].kind == opReplace
}

// has reports whether p has steps of kind k.
func (p plan) has(k opKind) bool {
	for _, o := range p.ops {
		if o.kind == k {
			return true
		}
	}
	return false
}

// prioAllocator hands out classic tc priorities for inserted filters.
type prioAllocator struct {
	used map[uint16]bool // every priority in use on the hook
	kfm  []uint16        // kfm's priorities (old and inserted), sorted
}

func newPrioAllocator(used map[uint16]bool, old []*entry) *prioAllocator {
	a := &prioAllocator{used: map[uint16]bool{GatePriority: true}}
	for p := range used {
		a.used[p] = true
	}
	for _, o := range old {
		a.kfm = append(a.kfm, o.m.TCPriority)
		a.used[o.m.TCPriority] = true
	}
	sort.Slice(a.kfm, func(i, j int) bool { return a.kfm[i] < a.kfm[j] })
	return a
}

func (a *prioAllocator) place(in op) (uint16, error) {
	lo := GatePriority // programs go above the gate
	if in.after != nil {
		lo = int(in.after.m.TCPriority)
	}
	hi := MaxPriority + 1
	for _, p := range a.kfm {
		if int(p) > lo {
			hi = int(p)
			break
		}
	}
	var want int
	switch {
	case in.after == nil && hi == MaxPriority+1: // empty chain
		want = MinPriority + (MaxPriority-MinPriority)/4
	case in.after == nil:
		want = hi - PriorityStep
		if want <= lo {
			want = lo + (hi-lo)/2
		}
	case hi == MaxPriority+1:
		want = lo + PriorityStep
		if want >= hi {
			want = lo + (hi-lo)/2
		}
	default:
		want = lo + (hi-lo)/2
	}
	p, ok := a.free(lo, hi, want)
	if !ok {
		return 0, errNoRoom
	}
	a.used[p] = true
	a.kfm = append(a.kfm, p)
	sort.Slice(a.kfm, func(i, j int) bool { return a.kfm[i] < a.kfm[j] })
	return p, nil
}

// free finds the unused priority in (lo, hi) nearest to want.
func (a *prioAllocator) free(lo, hi, want int) (uint16, bool) {
	for d := 0; d < hi-lo; d++ {
		for _, p := range []int{want - d, want + d} {
			if p > lo && p < hi && !a.used[uint16(p)] {
				return uint16(p), true
			}
		}
	}
	return 0, false
}

// rebuildPlan inserts every final entry at fresh priorities spread over the
// band, then deletes every old one: for classic tc when the neighbours of an
// insert leave no room.
func rebuildPlan(old, final []*entry, used map[uint16]bool) (plan, error) {
	a := &prioAllocator{used: map[uint16]bool{GatePriority: true}}
	for p := range used {
		a.used[p] = true
	}
	for _, o := range old {
		a.used[o.m.TCPriority] = true
	}
	var ops []op
	step := (MaxPriority - MinPriority) / (len(final) + 1)
	lo := GatePriority
	for i, e := range final {
		want := MinPriority + (i+1)*step
		p, ok := a.free(lo, MaxPriority+1, want)
		if !ok {
			return plan{}, errNoRoom
		}
		a.used[p] = true
		lo = int(p)
		e.m.TCPriority = p
		ops = append(ops, op{kind: opInsert, e: e})
	}
	for _, o := range old {
		ops = append(ops, op{kind: opDelete, old: o})
	}
	return plan{ops: ops}, nil
}
