package tailcall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/clsact"
	"github.com/kfm-project/kfm/bpf/internal/load"
	"github.com/kfm-project/kfm/bpf/internal/pinmeta"
	"github.com/kfm-project/kfm/bpf/internal/rcu"
	"github.com/kfm-project/kfm/bpf/rewrite"
	"github.com/kfm-project/kfm/bpf/xdp"
)

// change is a prepared chain change.
type change struct {
	b  *Backend
	t  bpf.Target
	st *hookState // what ran before (objects kept open for Revert)

	// What Commit does.
	remove bool // detach the root and unpin everything
	attach bool // attach a new root (none of ours runs yet)

	mode    xdp.Mode      // XDP attach mode
	replace *ebpf.Program // XDP: the other backend's program the root replaces
	useTCX  bool          // TC: attach the root with a TCX link
	first   bool          // TC: attach the root before other programs (backend switch)

	// The new root (attach only).
	root     *ebpf.Program
	head     *ebpf.Map
	rootLink link.Link

	// The new generation.
	gen   *generation
	chain []bpf.ChainProgram

	committed, reverted, closed bool
}

// Prepare loads desired (in run order) as a new generation: a new chain
// PROG_ARRAY, pinned with its description under <dir>/gen-<N>, holding a new
// instance of every program, rewritten to tail-call its successor. Nothing
// the hook runs changes until Commit. An empty desired chain prepares the
// removal of the root and of every pin.
func (b *Backend) Prepare(ctx context.Context, t bpf.Target, desired []bpf.Component, opts bpf.PrepareOptions) (_ bpf.Change, err error) {
	rootFn, err := rootFunction(t.Hook)
	if err != nil {
		return nil, err
	}
	if len(desired) > MaxPrograms {
		return nil, fmt.Errorf("%s: %d programs: %w (at most %d: the kernel allows %d tail calls per packet)", t, len(desired), ErrTooLong, MaxPrograms, MaxPrograms)
	}
	st, err := b.read(t)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	if st.attached && st.head == nil {
		// The head's pin was removed (by hand) while the root runs: the
		// root still holds its head map. Pin it again and read afresh.
		rerr := repinHead(st)
		st.close()
		if rerr != nil {
			return nil, fmt.Errorf("%s: kfm's tail-call root runs but its head map is not pinned under %s and cannot be recovered (%w): remove the chain and install it again", t, Dir(t), rerr)
		}
		if st, err = b.read(t); err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
	}
	c := &change{b: b, t: t, st: st}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	if len(desired) == 0 {
		// Removal: detach the root if it runs, else only clean up
		// leftovers; whatever else runs on the hook is not ours to check.
		c.remove = st.attached
		return c, nil
	}
	if err := c.checkHook(opts); err != nil {
		return nil, err
	}
	if st.attached && st.head == nil {
		return nil, fmt.Errorf("%s: kfm's tail-call root runs but its head map is not pinned under %s (damaged state): remove the chain and install it again", t, st.dir)
	}

	if err := c.loadGeneration(ctx, desired); err != nil {
		return nil, err
	}
	if c.attach {
		if err := c.loadRoot(rootFn); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// checkHook finds out how the root gets onto the hook.
func (c *change) checkHook(opts bpf.PrepareOptions) error {
	t, st := c.t, c.st
	if t.Hook.IsTC() {
		c.attach = !st.attached
		c.useTCX = c.b.tcxSupported()
		c.first = opts.Replace != nil
		return nil
	}
	want, err := xdp.ParseMode(opts.XDPMode)
	if err != nil {
		return err
	}
	if want == xdp.ModeOffload {
		return xdp.ErrOffload
	}
	a, err := xdp.Query(t.Ifindex)
	if err != nil {
		return fmt.Errorf("%s: %w", t, err)
	}
	switch {
	case st.attached:
		if opts.XDPMode != "" && want != a.Mode {
			return fmt.Errorf("%s: the chain runs in %s mode; remove it before installing in %s mode", t, a.Mode, want)
		}
		c.mode = a.Mode
	case a.ProgramID == 0:
		c.attach, c.mode = true, want
	case opts.Replace != nil && (opts.Replace.RootID == a.ProgramID || opts.Replace.RootID == 0 && len(opts.Replace.Programs) == 1 && opts.Replace.Programs[0].ID == a.ProgramID):
		if opts.XDPMode != "" && want != a.Mode {
			return fmt.Errorf("%s: the %s chain runs in %s mode; switching backend and mode at once is not atomic: keep the mode or remove the chain first", t, opts.Replace.Backend, a.Mode)
		}
		p, err := ebpf.NewProgramFromID(a.ProgramID)
		if err != nil {
			return fmt.Errorf("%s: open the %s backend's program %d: %w", t, opts.Replace.Backend, a.ProgramID, err)
		}
		c.replace, c.attach, c.mode = p, true, a.Mode
	case opts.Replace != nil:
		return fmt.Errorf("%s runs XDP program %d, not the %s chain's program %d that this change replaces: %w", t.Interface, a.ProgramID, opts.Replace.Backend, opts.Replace.RootID, bpf.ErrConflict)
	default:
		name := fmt.Sprintf("id %d", a.ProgramID)
		if p, err := ebpf.NewProgramFromID(a.ProgramID); err == nil {
			if info, err := p.Info(); err == nil {
				name = fmt.Sprintf("%s (id %d)", info.Name, a.ProgramID)
			}
			p.Close()
		}
		return fmt.Errorf("%s runs XDP program %s, which kfm does not manage: remove it first (`ip link set dev %s xdp off`, or `xdp-loader unload`): %w", t.Interface, name, t.Interface, bpf.ErrForeignProgram)
	}
	return nil
}

func (c *change) loadGeneration(ctx context.Context, desired []bpf.Component) error {
	t, st := c.t, c.st
	n := 1
	if len(st.gens) > 0 {
		n = st.gens[len(st.gens)-1] + 1
	}
	g := &generation{n: n, dir: genDir(st.dir, n)}
	c.gen = g
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		return fmt.Errorf("%s: %w", t, err)
	}
	var err error
	g.chain, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: ChainMapName, Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: MaxPrograms,
	})
	if err != nil {
		return fmt.Errorf("%s: create chain map: %w", t, err)
	}
	if err := g.chain.Pin(filepath.Join(g.dir, pinChain)); err != nil {
		return fmt.Errorf("%s: pin chain map: %w", t, err)
	}
	g.desc = meta{Version: metaVersion, Backend: Name, Hook: t.Hook, Ifindex: t.Ifindex}
	cache := btf.NewCache()
	for i, comp := range desired {
		if err := ctx.Err(); err != nil {
			return err
		}
		ps, err := load.ProgramSpec(comp, t.Hook)
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		if rewrite.HasFunctionCalls(ps.Instructions) {
			if err := c.b.MixedCallsSupported(); err != nil {
				return fmt.Errorf("%s: %s: %s makes bpf-to-bpf calls: %w; use a kernel >= 5.10 (or the tc/tcx backends on TC hooks)", t, comp.Name, comp.Function, err)
			}
		}
		proceed := slices.Compact(slices.Sorted(slices.Values(comp.ProceedOn)))
		if len(proceed) == 0 {
			proceed = bpf.DefaultProceedOn(t.Hook)
		}
		index := uint32(i + 1)
		prog, err := load.Component(comp, t.Hook, load.Options{
			Rewrite: func(insns asm.Instructions) (asm.Instructions, error) {
				return rewrite.TailCall(insns, rewrite.TailCallOptions{ProceedOn: int32s(proceed), Map: ChainMapName, Index: index})
			},
			ExtraMaps: map[string]*ebpf.Map{ChainMapName: g.chain},
			Cache:     cache,
		})
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		g.progs = append(g.progs, prog)
		if err := g.chain.Put(uint32(i), prog); err != nil {
			return fmt.Errorf("%s: %s: put into the chain map: %w", t, comp.Name, err)
		}
		pm := progMeta{Name: comp.Name, Function: comp.Function, Priority: comp.Priority, ProceedOn: proceed, Key: comp.Key}
		cp, err := chainProgram(pm, prog)
		if err != nil {
			return err
		}
		pm.ID, pm.Tag = cp.ID, cp.Tag
		g.desc.Programs = append(g.desc.Programs, pm)
		c.chain = append(c.chain, cp)
	}
	if err := pinmeta.Write(filepath.Join(g.dir, pinMeta), g.desc); err != nil {
		return fmt.Errorf("%s: %w", t, err)
	}
	return nil
}

func int32s(as bpf.Actions) []int32 {
	out := make([]int32, len(as))
	for i, a := range as {
		out[i] = int32(a)
	}
	return out
}

// repinHead pins again the head map that st's running root uses.
func repinHead(st *hookState) error {
	info, err := st.root.Info()
	if err != nil {
		return err
	}
	ids, ok := info.MapIDs()
	if !ok {
		return errors.New("the kernel does not report the root's maps")
	}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		mi, err := m.Info()
		if err == nil && m.Type() == ebpf.ProgramArray && mi.Name == "kfm_head" {
			err = m.Pin(filepath.Join(st.dir, pinHead))
			m.Close()
			return err
		}
		m.Close()
	}
	return errors.New("the root uses no head map")
}

// loadRoot loads a new root and its head map (not pinned until Commit).
func (c *change) loadRoot(fn string) error {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(rootObject))
	if err != nil {
		return fmt.Errorf("root object: %w", err)
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{fn: spec.Programs[fn]}
	c.head, err = ebpf.NewMap(spec.Maps["kfm_head"])
	if err != nil {
		return fmt.Errorf("%s: create head map: %w", c.t, err)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{"kfm_head": c.head}})
	if err != nil {
		return fmt.Errorf("%s: %w", c.t, load.Error(fn, err))
	}
	defer coll.Close()
	c.root = coll.DetachProgram(fn)
	return nil
}

// Programs describes the chain as it runs after Commit.
func (c *change) Programs() []bpf.ChainProgram { return c.chain }

// pinner is a pinnable kernel object: program, map or link.
type pinner interface {
	Pin(string) error
	Unpin() error
}

// repin pins obj at path. cilium/ebpf remembers where an object was pinned
// (or loaded from) and treats pinning there again as done, even when the
// file has been removed meanwhile: forget the old pin first.
func repin(obj pinner, path string) error {
	if err := obj.Unpin(); err != nil {
		return err
	}
	os.Remove(path)
	return obj.Pin(path)
}

func (c *change) pin(obj pinner, name string) error {
	if err := repin(obj, filepath.Join(c.st.dir, name)); err != nil {
		return fmt.Errorf("%s: pin %s: %w", c.t, name, err)
	}
	return nil
}

// Commit switches the hook to the new chain.
//
//   - A running root: slot 0 of the head map now points at the new first
//     program: one map update, so every packet runs either the old chain or
//     the new one, each complete. Commit then waits for an RCU grace period
//     (no packet still in the old chain) and unpins the old generation.
//   - No root yet: the head is filled first, then head and root are pinned,
//     then the root is attached (XDP: netlink, atomically replacing the
//     program of opts.Replace if any; TC: a TCX link, or a cls_bpf filter at
//     RootPriority).
//   - Removal: the root is detached, then everything is unpinned.
func (c *change) Commit(ctx context.Context) error {
	if c.committed || c.closed {
		return errors.New("tailcall: change already committed or closed")
	}
	var err error
	switch {
	case c.remove:
		err = c.commitRemove()
	case c.gen == nil:
		// Nothing runs and nothing should: only leftovers to clean.
		err = c.removeStale(nil)
	case c.attach:
		err = c.commitAttach()
	default:
		err = c.commitSwitch()
	}
	if err != nil {
		return err
	}
	c.committed = true
	return nil
}

// cleanupError reports a failure to remove leftovers after the switch: the
// change is committed (the new chain runs) but garbage stays pinned for the
// next change to remove.
func (c *change) cleanupError(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: the new chain runs, but removing the old pins failed: %w", c.t, err)
}

// removeStale unpins generations other than keep and, when no root runs,
// the leftover root pins.
func (c *change) removeStale(keep *generation) error {
	var errs []error
	for _, n := range c.st.gens {
		if keep != nil && n == keep.n || c.gen != nil && n == c.gen.n {
			continue
		}
		errs = append(errs, os.RemoveAll(genDir(c.st.dir, n)))
	}
	if !c.st.attached && !c.attach {
		errs = append(errs, c.unpinRoot())
		pinmeta.Prune(c.st.dir, filepath.Join(c.t.BPFFS, "kfm"))
	}
	return errors.Join(errs...)
}

func (c *change) unpinRoot() error {
	var errs []error
	for _, name := range []string{pinRootLink, pinRoot, pinHead} {
		if err := os.Remove(filepath.Join(c.st.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *change) commitSwitch() error {
	st := c.st
	if err := c.stillAttached(); err != nil {
		return err
	}
	if err := st.head.Put(uint32(0), c.gen.progs[0]); err != nil {
		return fmt.Errorf("%s: switch the head to the new chain: %w", c.t, err)
	}
	c.committed = true // the new generation runs: Close must keep it
	rcu.Wait()
	return c.cleanupError(c.removeStale(nil))
}

// stillAttached checks that the root read by Prepare still runs.
func (c *change) stillAttached() error {
	probe := &hookState{dir: c.st.dir, rootID: c.st.rootID}
	if err := c.b.readAttachment(c.t, probe); err != nil {
		return err
	}
	if probe.rootLink != nil {
		probe.rootLink.Close()
	}
	if !probe.attached {
		return fmt.Errorf("%s: the tail-call root is no longer attached: %w", c.t, bpf.ErrConflict)
	}
	return nil
}

func (c *change) commitAttach() error {
	if err := c.head.Put(uint32(0), c.gen.progs[0]); err != nil {
		return fmt.Errorf("%s: fill the head: %w", c.t, err)
	}
	// Leftover root pins of an earlier run are garbage: nothing of ours
	// runs on the hook.
	if err := c.unpinRoot(); err != nil {
		return err
	}
	if err := c.pin(c.head, pinHead); err != nil {
		return err
	}
	if err := c.pin(c.root, pinRoot); err != nil {
		c.unpinRoot()
		return err
	}
	if err := c.attachRoot(); err != nil {
		c.unpinRoot()
		return err
	}
	c.committed = true
	return c.cleanupError(c.removeStale(nil))
}

func (c *change) attachRoot() error {
	t := c.t
	switch {
	case t.Hook == bpf.HookXDP:
		err := xdp.Replace(t.Ifindex, c.root, c.replace, c.mode)
		if errors.Is(err, xdp.ErrChanged) || errors.Is(err, xdp.ErrOccupied) {
			return fmt.Errorf("%s: %w: %w", t, bpf.ErrConflict, err)
		}
		if err != nil {
			return fmt.Errorf("%s: attach the tail-call root: %w", t, err)
		}
	case c.useTCX:
		anchor := link.Tail()
		if c.first {
			anchor = link.Head()
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: t.Ifindex, Program: c.root, Attach: t.Hook.TCXAttachType(), Anchor: anchor})
		if err != nil {
			return fmt.Errorf("%s: attach the tail-call root with TCX: %w", t, err)
		}
		if err := c.pin(l, pinRootLink); err != nil {
			l.Close()
			return err
		}
		c.rootLink = l
	default:
		if err := clsact.Ensure(t.Ifindex); err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		if err := clsact.Add(t.Ifindex, t.Hook, RootPriority, RootPriority, c.root, "kfm-tailcall-root"); err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
	}
	return nil
}

// detachRoot takes root off the hook; for XDP, restore (may be nil) takes
// its place atomically.
func (c *change) detachRoot(root *ebpf.Program, rootLink link.Link, restore *ebpf.Program) error {
	t := c.t
	switch {
	case t.Hook == bpf.HookXDP:
		err := xdp.Replace(t.Ifindex, restore, root, c.mode)
		if errors.Is(err, xdp.ErrChanged) {
			return fmt.Errorf("%s: %w: %w", t, bpf.ErrConflict, err)
		}
		return err
	case rootLink != nil:
		if err := rootLink.Detach(); err != nil {
			return fmt.Errorf("%s: detach the tail-call root link: %w", t, err)
		}
		return nil
	default:
		return clsact.Delete(t.Ifindex, t.Hook, RootPriority, RootPriority)
	}
}

func (c *change) commitRemove() error {
	st := c.st
	if c.t.Hook == bpf.HookXDP {
		c.mode = st.mode
	}
	if err := c.detachRoot(st.root, st.rootLink, nil); err != nil {
		return err
	}
	c.committed = true
	rcu.Wait()
	if err := os.RemoveAll(st.dir); err != nil {
		return c.cleanupError(fmt.Errorf("unpin: %w", err))
	}
	pinmeta.Prune(st.dir, filepath.Join(c.t.BPFFS, "kfm"))
	return nil
}

// Revert restores the chain that ran before Commit.
func (c *change) Revert(ctx context.Context) error {
	if !c.committed || c.reverted || c.closed {
		return errors.New("tailcall: nothing to revert")
	}
	st := c.st
	var err error
	switch {
	case c.remove:
		err = c.revertRemove()
	case c.gen == nil:
	case c.attach:
		if err = c.detachRoot(c.root, c.rootLink, c.replace); err == nil {
			rcu.Wait()
			err = errors.Join(c.unpinRoot(), os.RemoveAll(c.gen.dir))
			pinmeta.Prune(st.dir, filepath.Join(c.t.BPFFS, "kfm"))
		}
	default:
		if st.current != nil {
			if err = repinGeneration(st.current); err != nil {
				break
			}
			err = st.head.Put(uint32(0), st.current.progs[0])
		} else {
			err = st.head.Delete(uint32(0))
		}
		if err == nil {
			rcu.Wait()
			err = os.RemoveAll(c.gen.dir)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: revert: %w", c.t, err)
	}
	c.reverted = true
	return nil
}

func repinGeneration(g *generation) error {
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		return err
	}
	for name, obj := range map[string]pinner{pinChain: g.chain, pinMeta: g.meta} {
		if err := repin(obj, filepath.Join(g.dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func (c *change) revertRemove() error {
	st := c.st
	if st.current != nil {
		if err := repinGeneration(st.current); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(st.dir, 0o700); err != nil {
		return err
	}
	if err := c.pin(st.head, pinHead); err != nil {
		return err
	}
	if err := c.pin(st.root, pinRoot); err != nil {
		return err
	}
	c.root, c.replace = st.root, nil
	if c.t.Hook.IsTC() {
		c.useTCX = st.rootLink != nil
	}
	err := c.attachRoot()
	c.root = nil
	return err
}

// Close releases what the change holds. Before Commit (or after Revert) it
// unpins the generation Prepare created.
func (c *change) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.gen != nil && (!c.committed || c.reverted) {
		errs = append(errs, os.RemoveAll(c.gen.dir))
		if c.st != nil && c.st.root == nil && !c.committed {
			pinmeta.Prune(c.st.dir, filepath.Join(c.t.BPFFS, "kfm"))
		}
	}
	c.gen.close()
	if c.root != nil {
		c.root.Close()
	}
	if c.head != nil {
		c.head.Close()
	}
	if c.rootLink != nil {
		c.rootLink.Close()
	}
	if c.replace != nil {
		c.replace.Close()
	}
	if c.st != nil {
		c.st.close()
	}
	return errors.Join(errs...)
}

// Release removes every pin of the backend for t. On TC hooks it also takes
// kfm's tail-call root off the hook (TC programs coexist, so after a switch
// to another backend the old root would still run); on XDP the root has
// already been replaced by the new backend's program and nothing is
// detached.
func (b *Backend) Release(ctx context.Context, t bpf.Target) error {
	st, err := b.read(t)
	if err != nil {
		return fmt.Errorf("%s: %w", t, err)
	}
	defer st.close()
	var errs []error
	if t.Hook.IsTC() && st.attached {
		c := &change{b: b, t: t, st: st}
		errs = append(errs, c.detachRoot(st.root, st.rootLink, nil))
	}
	errs = append(errs, os.RemoveAll(st.dir))
	pinmeta.Prune(st.dir, filepath.Join(t.BPFFS, "kfm"))
	return errors.Join(errs...)
}
