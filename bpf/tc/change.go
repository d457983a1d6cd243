package tc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/clsact"
	"github.com/kfm-project/kfm/bpf/internal/load"
	"github.com/kfm-project/kfm/bpf/internal/pinmeta"
	"github.com/kfm-project/kfm/bpf/rewrite"
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
	if !slices.Equal(o.m.ProceedOn, proceed) {
		return false
	}
	if d.Running != 0 && d.Running == o.m.ID {
		return true
	}
	return d.Key != "" && d.Key == o.m.Key && d.Name == o.m.Name
}

// Prepare loads the programs of desired (in run order) that do not already
// run unchanged, each rewritten so that its proceed-on verdicts become -1
// (TC_ACT_UNSPEC / TCX_NEXT), and plans the steps Commit takes. A program is
// kept (not reloaded, not touched) when the same code, parameters and
// proceed-on already run and it keeps its relative order. Nothing on the
// hook changes until Commit; an empty desired chain prepares the removal of
// every kfm program from the hook.
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
	c := &change{b: b, t: t, st: st, update: map[*entry]entryMeta{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

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

	cache := btf.NewCache()
	build := func(keepAny bool) error {
		c.final = nil
		for i, d := range desired {
			if keepAny && keep[i] {
				o := st.entries[match[i]]
				m := o.m
				m.Name, m.Function, m.Priority, m.ProceedOn, m.Key = d.Name, d.Function, d.Priority, proceed[i], d.Key
				c.update[o] = m
				c.final = append(c.final, o)
				continue
			}
			e, err := c.load(d, proceed[i], cache)
			if err != nil {
				return err
			}
			c.final = append(c.final, e)
		}
		return nil
	}
	if err := build(true); err != nil {
		return nil, err
	}
	var alloc *prioAllocator
	if b.kind == kindClassic {
		alloc = newPrioAllocator(st.used, st.entries)
	}
	c.plan, err = makePlan(st.entries, c.final, alloc)
	if errors.Is(err, errNoRoom) {
		// Rebuild: every program fresh, at new priorities.
		for _, e := range c.loaded {
			e.prog.Close()
		}
		c.loaded, c.update = nil, map[*entry]entryMeta{}
		if err := build(false); err != nil {
			return nil, err
		}
		c.plan, err = rebuildPlan(st.entries, c.final, st.used)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	return c, nil
}

func (c *change) load(d bpf.Component, proceed bpf.Actions, cache *btf.Cache) (*entry, error) {
	verdicts := make([]int32, len(proceed))
	for i, a := range proceed {
		verdicts[i] = int32(a)
	}
	prog, err := load.Component(d, c.t.Hook, load.Options{
		Rewrite: func(insns asm.Instructions) (asm.Instructions, error) { return rewrite.TCNext(insns, verdicts) },
		Cache:   cache,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.t, err)
	}
	e := &entry{prog: prog, m: entryMeta{Name: d.Name, Function: d.Function, Priority: d.Priority, ProceedOn: proceed, Key: d.Key}}
	c.loaded = append(c.loaded, e)
	info, err := prog.Info()
	if err != nil {
		return nil, err
	}
	e.m.ID, _ = info.ID()
	e.m.Tag = info.Tag
	return e, nil
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

func (c *change) writeMeta(entries ...[]*entry) error {
	doc := meta{Version: metaVersion, Backend: c.b.Name(), Hook: c.t.Hook, Ifindex: c.t.Ifindex}
	for _, es := range entries {
		for _, e := range es {
			doc.Programs = append(doc.Programs, c.metaOf(e))
		}
	}
	if len(doc.Programs) == 0 {
		err := pinmeta.Remove(filepath.Join(c.st.dir, pinMeta))
		pruneDirs(c.t, c.st.dir)
		return err
	}
	if err := os.MkdirAll(c.st.dir, 0o700); err != nil {
		return err
	}
	return pinmeta.Write(filepath.Join(c.st.dir, pinMeta), doc)
}

// Commit attaches the new programs, swaps programs in place, and detaches
// the old ones, in that order (see the package documentation). It first
// writes ahead a description listing old and new programs, so that a run
// that dies half-way leaves nothing the next one does not recognise.
func (c *change) Commit(ctx context.Context) error {
	if c.committed || c.closed {
		return errors.New("tc: change already committed or closed")
	}
	if err := c.writeMeta(c.st.entries, c.loaded); err != nil {
		return fmt.Errorf("%s: write ahead: %w", c.t, err)
	}
	if c.b.kind == kindClassic && len(c.plan.ops) > 0 {
		if err := clsact.Ensure(c.t.Ifindex); err != nil {
			return fmt.Errorf("%s: %w", c.t, err)
		}
	}
	left, err := c.execute(c.plan)
	if err != nil && left == nil {
		c.writeMeta(c.st.entries)
		return err
	}
	// The new chain runs; old programs that could not be detached (left)
	// stay described until a later change removes them.
	c.committed = true
	errs := []error{err}
	errs = append(errs, c.writeMeta(c.final, left))
	errs = append(errs, c.cleanGarbage())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: the new chain runs, but: %w", c.t, err)
	}
	return nil
}

// cleanGarbage removes leftovers of interrupted runs: pinned links that no
// longer run, kfm-named filters nothing describes.
func (c *change) cleanGarbage() error {
	var errs []error
	for _, p := range c.st.stale {
		errs = append(errs, unpin(p))
	}
	for _, f := range c.st.orphans {
		errs = append(errs, clsact.Delete(c.t.Ifindex, c.t.Hook, f.Priority, f.Handle))
	}
	c.st.stale, c.st.orphans = nil, nil
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

// execute runs p's steps. If an insert or replace fails, the steps done are
// undone (inserts removed, replaced programs put back) and the error
// returned with left nil. Failed deletes do not stop it: the new chain runs
// then, and left lists the old entries still attached (non-nil).
func (c *change) execute(p plan) (left []*entry, err error) {
	var done []op
	var errs []error
	for _, o := range p.ops {
		if err := c.do(o); err != nil {
			if o.kind == opDelete {
				left = append(left, o.old)
				errs = append(errs, err)
				continue
			}
			for i := len(done) - 1; i >= 0; i-- {
				c.undo(done[i])
			}
			return nil, fmt.Errorf("%s: %w", c.t, err)
		}
		done = append(done, o)
	}
	if len(errs) > 0 {
		return left, fmt.Errorf("%s: the new chain runs, but old programs stay attached: %w", c.t, errors.Join(errs...))
	}
	return nil, nil
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
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: t.Ifindex, Program: o.e.prog, Attach: tcxAttachType(t.Hook), Anchor: anchor})
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

func (c *change) undo(o op) {
	switch o.kind {
	case opInsert:
		c.do(op{kind: opDelete, old: o.e})
	case opReplace:
		c.do(op{kind: opReplace, e: o.old, old: o.e})
	}
}

// Revert restores the chain that ran before Commit, by the same kind of
// steps in the other direction (the programs of the old chain are still
// open).
func (c *change) Revert(ctx context.Context) error {
	if !c.committed || c.reverted || c.closed {
		return errors.New("tc: nothing to revert")
	}
	var alloc *prioAllocator
	if c.b.kind == kindClassic {
		fs, err := clsact.List(c.t.Ifindex, c.t.Hook)
		if err != nil {
			return fmt.Errorf("%s: revert: %w", c.t, err)
		}
		used := map[uint16]bool{}
		for _, f := range fs {
			used[f.Priority] = true
		}
		alloc = newPrioAllocator(used, c.final)
	}
	p, err := makePlan(c.final, c.st.entries, alloc)
	if err != nil {
		return fmt.Errorf("%s: revert: %w", c.t, err)
	}
	// The old chain takes its old descriptions back.
	saved := c.update
	c.update = map[*entry]entryMeta{}
	if err := c.writeMeta(c.final, c.st.entries); err != nil {
		c.update = saved
		return fmt.Errorf("%s: revert: write ahead: %w", c.t, err)
	}
	if c.b.kind == kindClassic && len(p.ops) > 0 {
		if err := clsact.Ensure(c.t.Ifindex); err != nil {
			return fmt.Errorf("%s: revert: %w", c.t, err)
		}
	}
	left, err := c.execute(p)
	if err != nil && left == nil {
		return fmt.Errorf("revert: %w", err)
	}
	c.reverted = true
	return errors.Join(err, c.writeMeta(c.st.entries, left))
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
	if c.st != nil {
		for _, e := range c.st.entries {
			if e.link != nil && closedLinks[e.link] {
				e.link = nil
			}
		}
		c.st.close()
	}
	return nil
}

// Release removes everything the backend runs or pins on t: kfm's TCX links
// or cls_bpf filters, and its pins. It is used after another backend has
// taken the hook over (TC programs coexist, so kfm's old ones must go).
func (b *Backend) Release(ctx context.Context, t bpf.Target) error {
	if !t.Hook.IsTC() {
		return nil
	}
	st, err := b.read(t, true)
	if err != nil {
		return fmt.Errorf("%s: %w", t, err)
	}
	c := &change{b: b, t: t, st: st, update: map[*entry]entryMeta{}}
	defer c.Close()
	var errs []error
	for _, e := range st.entries {
		errs = append(errs, c.do(op{kind: opDelete, old: e}))
	}
	for _, p := range st.stale {
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			l.Detach()
			l.Close()
		}
	}
	errs = append(errs, c.cleanGarbage())
	errs = append(errs, os.RemoveAll(st.dir))
	pruneDirs(t, st.dir)
	return errors.Join(errs...)
}

// pruneDirs removes dir and its parents up to <bpffs>/kfm for as long as
// they are empty.
func pruneDirs(t bpf.Target, dir string) {
	top := filepath.Join(t.BPFFS, "kfm")
	for d := filepath.Clean(dir); d == top || strings.HasPrefix(d, top+string(filepath.Separator)); d = filepath.Dir(d) {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			return
		}
	}
}
