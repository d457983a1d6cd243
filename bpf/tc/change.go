package tc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/clsact"
	"github.com/kfm-project/kfm/bpf/internal/load"
	"github.com/kfm-project/kfm/bpf/internal/pinmeta"
	"github.com/kfm-project/kfm/bpf/internal/rcu"
)

type change struct {
	b  *Backend
	t  bpf.Target
	st *hookState // the chain before the change; its objects stay open

	final []*entry // the chain after the change, in run order
	// kept entries take these descriptions (new name, priority...)
	update map[*entry]entryMeta
	loaded []*entry // entries whose program this change loaded
	plan   plan

	// gates are the gate programs this change loaded, by the word each
	// writes.
	gates map[uint32]*ebpf.Program
	// cur is the gate on the hook as the change goes (nil: none); it
	// starts as st.gate.
	cur *gateState
	// links are the gate links this change attached (closed by Close).
	links []link.Link
	// left: old entries Commit could not detach (inert, still attached).
	left []*entry

	committed, reverted, closed bool
}

func normalizeActions(as bpf.Actions, h bpf.Hook) bpf.Actions {
	out := slices.Compact(slices.Sorted(slices.Values(as)))
	if len(out) == 0 {
		return bpf.DefaultProceedOn(h)
	}
	return out
}

func keepable(o *entry, d bpf.Component, proceed bpf.Actions) bool {
	if o.ungated || !slices.Equal(o.m.ProceedOn, proceed) {
		return false
	}
	if d.Running != 0 && d.Running == o.m.ID {
		return true
	}
	return d.Key != "" && d.Key == o.m.Key && d.Name == o.m.Name
}

// Prepare loads the programs of desired (in run order) that do not already
// run unchanged, each rewritten so that it runs only when the gate lets it
// (rewrite.TCNextGated) and its proceed-on verdicts become -1
// (TC_ACT_UNSPEC / TCX_NEXT), loads the gate programs Commit needs, and
// plans the steps Commit takes. A program is kept (not reloaded, not
// touched) when the same code, parameters and proceed-on already run and it
// keeps its relative order. Nothing on the hook changes until Commit; an
// empty desired chain prepares the removal of every kfm program from the
// hook.
func (b *Backend) Prepare(ctx context.Context, t bpf.Target, desired []bpf.Component, opts bpf.PrepareOptions) (_ bpf.Change, err error) {
	if err := b.Supports(t.Hook); err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	if len(desired) > MaxPrograms {
		return nil, fmt.Errorf("%s: %d programs: the %s backend chains at most %d", t, len(desired), b.Name(), MaxPrograms)
	}
	names := map[string]bool{}
	for _, d := range desired {
		if names[d.Name] {
			return nil, fmt.Errorf("%s: two programs named %q", t, d.Name)
		}
		names[d.Name] = true
	}
	st, err := b.read(t, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	c := &change{b: b, t: t, st: st, update: map[*entry]entryMeta{}, gates: map[uint32]*ebpf.Program{}, cur: st.gate}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if b.kind == kindClassic && st.gate == nil && st.used[GatePriority] && len(desired) > 0 &&
		!slices.ContainsFunc(st.orphans, func(f clsact.Filter) bool { return f.Priority == GatePriority }) {
		// (An orphan there is removed first.)
		return nil, fmt.Errorf("%s: %w", t, c.gatePriorityTaken())
	}

	proceed := make([]bpf.Actions, len(desired))
	match := make([]int, len(desired))
	taken := map[int]bool{}
	for i, d := range desired {
		proceed[i] = normalizeActions(d.ProceedOn, t.Hook)
		match[i] = -1
		for j, o := range st.entries {
			if !taken[j] && keepable(o, d, proceed[i]) {
				match[i], taken[j] = j, true
				break
			}
		}
	}
	keep := lis(match)

	build := func(keepAny bool) {
		c.final, c.update = nil, map[*entry]entryMeta{}
		for i, d := range desired {
			if keepAny && keep[i] {
				o := st.entries[match[i]]
				m := o.m
				m.Name, m.Function, m.Priority, m.ProceedOn, m.Key = d.Name, d.Function, d.Priority, proceed[i], d.Key
				c.update[o] = m
				c.final = append(c.final, o)
				continue
			}
			c.final = append(c.final, &entry{src: &desired[i], m: entryMeta{Name: d.Name, Function: d.Function, Priority: d.Priority, ProceedOn: proceed[i], Key: d.Key}})
		}
	}
	// An in-place replacement is atomic by itself; together with other
	// steps it would not be (the gate cannot tell the two programs of one
	// link or filter apart), so then every new program is inserted.
	inPlace := !slices.ContainsFunc(st.entries, func(e *entry) bool { return e.ungated })
	for {
		build(true)
		c.plan, err = makePlan(st.entries, c.final, c.allocator(st.used, st.entries), inPlace)
		if err == nil && inPlace && c.plan.has(opReplace) && !c.plan.inPlaceOnly() {
			inPlace = false
			continue
		}
		break
	}
	if errors.Is(err, errNoRoom) {
		// Rebuild: every program fresh, at new priorities.
		build(false)
		c.plan, err = rebuildPlan(st.entries, c.final, st.used)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	if err := c.assignSlots(); err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	cache := btf.NewCache()
	for _, e := range c.final {
		if e.src != nil {
			if err := c.load(e, cache); err != nil {
				return nil, err
			}
		}
	}
	// The gate programs Commit switches to: one that lets nothing run
	// (placed first when the hook has no gate, and for a removal), and
	// one for the new chain.
	mask := maskOf(c.final)
	if st.gate == nil || !st.gate.known || mask == 0 {
		if _, err := c.gateProg(0); err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
	}
	if _, err := c.gateProg(mask); err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	return c, nil
}

func (c *change) allocator(used map[uint16]bool, old []*entry) *prioAllocator {
	if c.b.kind != kindClassic {
		return nil
	}
	return newPrioAllocator(used, old)
}

func (c *change) gatePriorityTaken() error {
	fs, _ := clsact.List(c.t.Ifindex, c.t.Hook)
	name := "another filter"
	for _, f := range fs {
		if f.Priority == GatePriority {
			name = fmt.Sprintf("filter %q (program %d)", f.Name, f.ProgramID)
		}
	}
	return fmt.Errorf("tc priority %#x, where kfm's gate filter %s goes, is taken by %s: remove it (tc filter del ... prio %d), or remove kfm's chain from the hook and install it again if an older kfm put it there", GatePriority, GateFilterName, name, GatePriority)
}

// assignSlots gives every new entry its gate bit: the bit of the program
// it replaces in place, else the lowest bit no program of the old chain
// (which stays attached until the switch) has. Kept entries keep theirs.
func (c *change) assignSlots() error {
	var used uint32
	for _, o := range c.st.entries {
		used |= maskOf([]*entry{o})
	}
	replaced := map[*entry]*entry{}
	for _, o := range c.plan.ops {
		if o.kind == opReplace {
			replaced[o.e] = o.old
		}
	}
	for _, e := range c.final {
		if e.src == nil {
			continue
		}
		if o, ok := replaced[e]; ok {
			e.m.Slot = o.m.Slot
			continue
		}
		s, err := freeSlot(used)
		if err != nil {
			return err
		}
		e.m.Slot, used = s, used|slotBit(s)
	}
	return nil
}

func (c *change) load(e *entry, cache *btf.Cache) error {
	verdicts := make([]int32, len(e.m.ProceedOn))
	for i, a := range e.m.ProceedOn {
		verdicts[i] = int32(a)
	}
	prog, err := load.Component(*e.src, c.t.Hook, load.Options{
		Rewrite: gateRewrite(e.m.Slot, verdicts),
		Cache:   cache,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", c.t, err)
	}
	e.prog, e.src = prog, nil
	c.loaded = append(c.loaded, e)
	info, err := prog.Info()
	if err != nil {
		return err
	}
	e.m.ID, _ = info.ID()
	e.m.Tag = info.Tag
	return nil
}

// gateProg returns a gate program that writes mask: the hook's own when it
// writes that, else one this change loads (once).
func (c *change) gateProg(mask uint32) (*ebpf.Program, error) {
	if g := c.st.gate; g != nil && g.known && g.mask == mask && g.prog != nil {
		return g.prog, nil
	}
	if p := c.gates[mask]; p != nil {
		return p, nil
	}
	p, err := newGate(mask)
	if err != nil {
		return nil, err
	}
	c.gates[mask] = p
	return p, nil
}

func (c *change) metaOf(e *entry) entryMeta {
	if m, ok := c.update[e]; ok {
		m.Link, m.TCPriority = e.m.Link, e.m.TCPriority
		return m
	}
	return e.m
}

// Programs describes the chain as it runs after Commit.
func (c *change) Programs() []bpf.ChainProgram {
	out := make([]bpf.ChainProgram, 0, len(c.final))
	for _, e := range c.final {
		m := c.metaOf(e)
		out = append(out, (&entry{m: m}).chainProgram())
	}
	return out
}

// writeMeta describes entries (old and new ones alike, while a change runs)
// and, with ahead, every gate program the change may attach; without it,
// only the gate attached now.
func (c *change) writeMeta(ahead bool, entries ...[]*entry) error {
	doc := meta{Version: metaVersion, Backend: c.b.Name(), Hook: c.t.Hook, Ifindex: c.t.Ifindex}
	seen := map[*entry]bool{}
	for _, es := range entries {
		for _, e := range es {
			if !seen[e] {
				seen[e] = true
				doc.Programs = append(doc.Programs, c.metaOf(e))
			}
		}
	}
	addGate := func(p *ebpf.Program, mask uint32) {
		if p == nil {
			return
		}
		info, err := p.Info()
		if err != nil {
			return
		}
		id, _ := info.ID()
		for _, g := range doc.Gates {
			if g.ID == id {
				return
			}
		}
		doc.Gates = append(doc.Gates, gateMeta{ID: id, Mask: mask})
	}
	if c.cur != nil && c.cur.known {
		doc.Gates = append(doc.Gates, gateMeta{ID: c.cur.id, Mask: c.cur.mask})
	}
	if ahead {
		if g := c.st.gate; g != nil && g.known {
			addGate(g.prog, g.mask)
		}
		for mask, p := range c.gates {
			addGate(p, mask)
		}
		slices.SortFunc(doc.Gates, func(a, b gateMeta) int { return int(a.ID) - int(b.ID) })
	}
	if len(doc.Programs) == 0 && c.cur == nil {
		err := pinmeta.Remove(filepath.Join(c.st.dir, pinMeta))
		pinmeta.Prune(c.st.dir, filepath.Join(c.t.BPFFS, "kfm"))
		return err
	}
	if err := os.MkdirAll(c.st.dir, 0o700); err != nil {
		return err
	}
	return pinmeta.Write(filepath.Join(c.st.dir, pinMeta), doc)
}

// Commit moves the hook to the new chain (see the package documentation):
// it removes what interrupted runs left, places the gate if the hook has
// none, attaches the new programs (the gate keeps them from running),
// switches the gate to the new chain in one atomic step, and detaches the
// old programs. It first writes ahead a description listing old and new
// programs and gates, so that a run that dies half-way leaves nothing the
// next one does not recognise.
func (c *change) Commit(ctx context.Context) error {
	if c.committed || c.closed {
		return errors.New("tc: change already committed or closed")
	}
	if err := c.writeMeta(true, c.st.entries, c.st.inert, c.loaded); err != nil {
		return fmt.Errorf("%s: write ahead: %w", c.t, err)
	}
	if err := c.removeGarbage(); err != nil {
		return fmt.Errorf("%s: remove what an interrupted run left: %w", c.t, err)
	}
	if c.b.kind == kindClassic && len(c.final) > 0 {
		if err := clsact.Ensure(c.t.Ifindex); err != nil {
			return fmt.Errorf("%s: %w", c.t, err)
		}
	}
	left, err := c.move(c.plan, c.st.entries, c.final)
	if err != nil && left == nil {
		c.writeMeta(false, c.st.entries)
		return err
	}
	// The new chain runs; old programs that could not be detached (left)
	// stay described, inert, until a later change removes them.
	c.committed, c.left = true, left
	if err := errors.Join(err, c.writeMeta(false, c.final, left)); err != nil {
		return fmt.Errorf("%s: the new chain runs, but: %w", c.t, err)
	}
	return nil
}

// removeGarbage removes leftovers of interrupted runs: programs the gate
// keeps from running, kfm-named filters nothing describes, pinned links
// that no longer run. The gate bits of removed programs are free again
// (classic tc: after a grace period, so that no packet that passed an
// older gate meets a new program with such a bit).
func (c *change) removeGarbage() error {
	var errs []error
	for _, e := range c.st.inert {
		errs = append(errs, c.do(op{kind: opDelete, old: e}))
	}
	for _, f := range c.st.orphans {
		errs = append(errs, clsact.Delete(c.t.Ifindex, c.t.Hook, f.Priority, f.Handle))
	}
	for _, p := range c.st.stale {
		errs = append(errs, unpin(p))
	}
	if c.b.kind == kindClassic && len(c.st.inert)+len(c.st.orphans) > 0 {
		rcu.Wait()
	}
	c.st.inert, c.st.orphans, c.st.stale = nil, nil, nil
	return errors.Join(errs...)
}

func unpin(path string) error {
	err := os.Remove(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (c *change) linkPin(id link.ID) string {
	return filepath.Join(c.st.dir, linkPrefix+strconv.FormatUint(uint64(id), 10))
}

// move takes the hook from the chain from to the chain to by p's steps:
//
//  1. a gate that lets none of kfm's programs run, unless the hook has
//     one (classic tc: then a grace period, so that no packet that started
//     on its way through the filters before the gate was there meets an
//     inserted one);
//  2. the inserts: the gate keeps them from running;
//  3. classic tc: a grace period, so that every packet that passes the
//     switched gate meets every inserted filter;
//  4. the switch: the gate program is replaced (TCX link update, cls_bpf
//     filter replace: one atomic pointer swap) by one that writes to's
//     bits: every packet from then on runs to, every packet that passed
//     the old gate runs from;
//  5. classic tc: a grace period, so that no packet that passed the old
//     gate is still on its way through the filters;
//  6. the deletes (TCX: every detach waits for a grace period itself);
//  7. when to has no gated program, the gate itself.
//
// A plan that is one in-place replacement (opReplace) is that single
// atomic swap, without the gate. If a step up to the switch fails, the steps
// done are undone and left is nil. Failed deletes do not stop it: the new
// chain runs then, and left lists the old entries still attached.
func (c *change) move(p plan, from, to []*entry) (left []*entry, err error) {
	if p.inPlaceOnly() {
		if err := c.do(p.ops[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", c.t, err)
		}
		return nil, nil
	}
	mask := maskOf(to)
	var undo []func()
	rollback := func(err error) ([]*entry, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, fmt.Errorf("%s: %w", c.t, err)
	}
	classic := c.b.kind == kindClassic
	wait := false // inserted filters: wait before the switch
	switch {
	case c.cur == nil && mask != 0:
		zero, err := c.gateProg(0)
		if err != nil {
			return rollback(err)
		}
		if err := c.attachGate(zero, from); err != nil {
			return rollback(err)
		}
		undo = append(undo, func() { c.detachGate() })
		if classic {
			// No packet that started its way through the filters
			// before the gate was there may meet an inserted one: it
			// would read whatever cb[4] held.
			rcu.Wait()
		}
	case c.cur != nil && !c.cur.known:
		// A gate nothing describes: no program of kfm's runs by it.
		zero, err := c.gateProg(0)
		if err != nil {
			return rollback(err)
		}
		if err := c.setGate(zero, 0); err != nil {
			return rollback(err)
		}
		if classic {
			rcu.Wait() // packets may carry any bits it wrote
		}
	}
	for _, o := range p.ops {
		switch o.kind {
		case opInsert:
			if err := c.do(o); err != nil {
				return rollback(err)
			}
			undo = append(undo, func() { c.do(op{kind: opDelete, old: o.e}) })
			wait = true
		case opReplace:
			return rollback(fmt.Errorf("replacing %s in place together with other steps would not be atomic", o.old.m.Name))
		}
	}
	if c.cur != nil && c.cur.mask != mask {
		if classic && wait {
			rcu.Wait()
		}
		prog, err := c.gateProg(mask)
		if err == nil {
			err = c.setGate(prog, mask)
		}
		if err != nil {
			return rollback(err)
		}
		if classic && p.has(opDelete) {
			rcu.Wait()
		}
	}
	var errs []error
	for _, o := range p.ops {
		if o.kind != opDelete {
			continue
		}
		if err := c.do(o); err != nil {
			left = append(left, o.old)
			errs = append(errs, err)
		}
	}
	if mask == 0 && c.cur != nil && len(left) == 0 {
		errs = append(errs, c.detachGate())
	}
	if err := errors.Join(errs...); err != nil {
		if left == nil {
			left = []*entry{}
		}
		return left, fmt.Errorf("%s: the new chain runs, but old programs stay attached: %w", c.t, err)
	}
	return nil, nil
}

// attachGate puts prog on the hook as its gate, before every program of
// kfm's that is attached (from: only programs older kfm versions loaded
// ungated can be attached without a gate).
func (c *change) attachGate(prog *ebpf.Program, from []*entry) error {
	g := &gateState{prog: prog, known: true}
	info, err := prog.Info()
	if err != nil {
		return err
	}
	g.id, _ = info.ID()
	for m, p := range c.gates {
		if p == prog {
			g.mask = m
		}
	}
	t := c.t
	if c.b.kind == kindClassic {
		if err := clsact.Add(t.Ifindex, t.Hook, GatePriority, FilterHandle, prog, GateFilterName); err != nil {
			return fmt.Errorf("attach the gate: %w", err)
		}
		c.cur = g
		return nil
	}
	anchor := link.Tail()
	if len(from) > 0 {
		anchor = link.BeforeLinkByID(from[0].m.Link)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: t.Ifindex, Program: prog, Attach: t.Hook.TCXAttachType(), Anchor: anchor})
	if err != nil {
		return fmt.Errorf("attach the gate with TCX: %w", err)
	}
	linfo, err := l.Info()
	if err == nil {
		err = os.MkdirAll(c.st.dir, 0o700)
	}
	if err == nil {
		err = l.Pin(filepath.Join(c.st.dir, pinGate))
	}
	if err != nil {
		l.Close() // not pinned: closing detaches it
		return fmt.Errorf("pin the gate's TCX link: %w", err)
	}
	c.links = append(c.links, l)
	g.link, g.linkID = l, linfo.ID
	c.cur = g
	return nil
}

// setGate replaces the gate's program by prog, which writes mask: one
// atomic pointer swap.
func (c *change) setGate(prog *ebpf.Program, mask uint32) error {
	t := c.t
	var err error
	if c.b.kind == kindClassic {
		err = clsact.Replace(t.Ifindex, t.Hook, GatePriority, FilterHandle, prog, GateFilterName)
	} else {
		err = c.cur.link.Update(prog)
	}
	if err != nil {
		return fmt.Errorf("switch the gate: %w", err)
	}
	info, err := prog.Info()
	if err != nil {
		return err
	}
	id, _ := info.ID()
	g := *c.cur
	g.prog, g.id, g.mask, g.known = prog, id, mask, true
	c.cur = &g
	return nil
}

// detachGate takes the gate off the hook.
func (c *change) detachGate() error {
	t := c.t
	if c.b.kind == kindClassic {
		if err := clsact.Delete(t.Ifindex, t.Hook, GatePriority, FilterHandle); err != nil {
			return fmt.Errorf("detach the gate: %w", err)
		}
	} else {
		if err := c.cur.link.Detach(); err != nil {
			return fmt.Errorf("detach the gate: %w", err)
		}
		if err := unpin(filepath.Join(c.st.dir, pinGate)); err != nil {
			return err
		}
	}
	c.cur = nil
	return nil
}

func (c *change) filterName(e *entry) string {
	return FilterNamePrefix + c.metaOf(e).Name
}

func (c *change) do(o op) error {
	t := c.t
	switch {
	case o.kind == opInsert && c.b.kind == kindTCX:
		anchor := link.Tail()
		switch {
		case o.after != nil:
			anchor = link.AfterLinkByID(o.after.m.Link)
		case o.before != nil:
			anchor = link.BeforeLinkByID(o.before.m.Link)
		case c.cur != nil:
			anchor = link.AfterLinkByID(c.cur.linkID)
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: t.Ifindex, Program: o.e.prog, Attach: t.Hook.TCXAttachType(), Anchor: anchor})
		if err != nil {
			return fmt.Errorf("attach %s with TCX: %w", c.metaOf(o.e).Name, err)
		}
		info, err := l.Info()
		if err == nil {
			err = os.MkdirAll(c.st.dir, 0o700)
		}
		if err == nil {
			err = l.Pin(c.linkPin(info.ID))
		}
		if err != nil {
			l.Close() // not pinned: closing detaches it
			return fmt.Errorf("pin the TCX link of %s: %w", c.metaOf(o.e).Name, err)
		}
		o.e.link, o.e.m.Link = l, info.ID
	case o.kind == opInsert:
		return clsact.Add(t.Ifindex, t.Hook, o.e.m.TCPriority, FilterHandle, o.e.prog, c.filterName(o.e))
	case o.kind == opReplace && c.b.kind == kindTCX:
		if err := o.e.link.Update(o.e.prog); err != nil {
			return fmt.Errorf("replace %s by %s in place: %w", o.old.m.Name, c.metaOf(o.e).Name, err)
		}
	case o.kind == opReplace:
		return clsact.Replace(t.Ifindex, t.Hook, o.e.m.TCPriority, FilterHandle, o.e.prog, c.filterName(o.e))
	case o.kind == opDelete && c.b.kind == kindTCX:
		if err := o.old.link.Detach(); err != nil {
			return fmt.Errorf("detach %s: %w", o.old.m.Name, err)
		}
		return unpin(c.linkPin(o.old.m.Link))
	case o.kind == opDelete:
		return clsact.Delete(t.Ifindex, t.Hook, o.old.m.TCPriority, FilterHandle)
	}
	return nil
}

// Revert restores the chain that ran before Commit, by the same kind of
// steps in the other direction (the programs of the old chain, and its
// gate program, are still open).
func (c *change) Revert(ctx context.Context) error {
	if !c.committed || c.reverted || c.closed {
		return errors.New("tc: nothing to revert")
	}
	var used map[uint16]bool
	if c.b.kind == kindClassic {
		fs, err := clsact.List(c.t.Ifindex, c.t.Hook)
		if err != nil {
			return fmt.Errorf("%s: revert: %w", c.t, err)
		}
		used = map[uint16]bool{}
		for _, f := range fs {
			used[f.Priority] = true
		}
	}
	// Old programs Commit could not detach are still in place.
	attached := map[*entry]bool{}
	for _, e := range c.left {
		attached[e] = true
	}
	var p plan
	var err error
	for _, inPlace := range []bool{true, false} {
		p, err = makePlan(c.final, c.st.entries, c.allocator(used, c.final), inPlace)
		if err != nil || !p.has(opReplace) || p.inPlaceOnly() && p.ops[0].e.m.Slot == p.ops[0].old.m.Slot {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s: revert: %w", c.t, err)
	}
	p.ops = slices.DeleteFunc(p.ops, func(o op) bool { return o.kind == opInsert && attached[o.e] })
	// The old chain takes its old descriptions back.
	saved := c.update
	c.update = map[*entry]entryMeta{}
	if err := c.writeMeta(true, c.final, c.st.entries); err != nil {
		c.update = saved
		return fmt.Errorf("%s: revert: write ahead: %w", c.t, err)
	}
	if c.b.kind == kindClassic && len(c.st.entries) > 0 {
		if err := clsact.Ensure(c.t.Ifindex); err != nil {
			return fmt.Errorf("%s: revert: %w", c.t, err)
		}
	}
	left, err := c.move(p, c.final, c.st.entries)
	if err != nil && left == nil {
		return fmt.Errorf("revert: %w", err)
	}
	c.reverted = true
	return errors.Join(err, c.writeMeta(false, c.st.entries, left))
}

// Close releases the programs and links the change holds; pinned links and
// attached filters stay.
func (c *change) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	closedLinks := map[link.Link]bool{}
	for _, e := range c.loaded {
		e.prog.Close()
		if e.link != nil && !closedLinks[e.link] {
			closedLinks[e.link] = true
			e.link.Close()
		}
	}
	for _, p := range c.gates {
		p.Close()
	}
	for _, l := range c.links {
		l.Close()
	}
	if c.st != nil {
		for _, e := range slices.Concat(c.st.entries, c.st.inert) {
			if e.link != nil && closedLinks[e.link] {
				e.link = nil
			}
		}
		c.st.close()
	}
	return nil
}

// Release removes everything the backend runs or pins on t: kfm's TCX links
// or cls_bpf filters, its gate, and its pins. It is used after another
// backend has taken the hook over (TC programs coexist, so kfm's old ones
// must go). The gate first stops all of kfm's programs at once.
func (b *Backend) Release(ctx context.Context, t bpf.Target) error {
	if !t.Hook.IsTC() {
		return nil
	}
	st, err := b.read(t, true)
	if err != nil {
		return fmt.Errorf("%s: %w", t, err)
	}
	c := &change{b: b, t: t, st: st, update: map[*entry]entryMeta{}, gates: map[uint32]*ebpf.Program{}, cur: st.gate}
	defer c.Close()
	var errs []error
	if c.cur != nil && (c.cur.mask != 0 || !c.cur.known) {
		zero, err := c.gateProg(0)
		if err == nil {
			err = c.setGate(zero, 0)
		}
		if err == nil && b.kind == kindClassic {
			rcu.Wait()
		}
		errs = append(errs, err)
	}
	for _, e := range slices.Concat(st.entries, st.inert) {
		errs = append(errs, c.do(op{kind: opDelete, old: e}))
	}
	for _, p := range st.stale {
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			l.Detach()
			l.Close()
		}
	}
	st.inert = nil
	errs = append(errs, c.removeGarbage())
	if c.cur != nil {
		errs = append(errs, c.detachGate())
	}
	errs = append(errs, os.RemoveAll(st.dir))
	pinmeta.Prune(st.dir, filepath.Join(t.BPFFS, "kfm"))
	return errors.Join(errs...)
}
