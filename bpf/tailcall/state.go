package tailcall

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/internal/clsact"
	"github.com/kfm-project/kfm/bpf/internal/pinmeta"
	"github.com/kfm-project/kfm/bpf/xdp"
	"github.com/kfm-project/kfm/internal/bpfinfo"
)

// Pin names inside a hook's directory.
const (
	pinRoot     = "root"
	pinRootLink = "root_link"
	pinHead     = "head"
	pinChain    = "chain"
	pinMeta     = "meta"
	genPrefix   = "gen-"
	metaVersion = 1
)

// Dir is where the backend pins its objects for target t:
// <bpffs>/kfm/tailcall/[<netns>/]<ifindex>/<hook> (see bpf.Target.PinDir).
func Dir(t bpf.Target) string { return t.PinDir(Name) }

func genDir(dir string, n int) string { return filepath.Join(dir, genPrefix+strconv.Itoa(n)) }

// meta describes one generation (one chain); it is pinned with it.
type meta struct {
	Version  int        `json:"version"`
	Backend  string     `json:"backend"`
	Hook     bpf.Hook   `json:"hook"`
	Ifindex  int        `json:"ifindex"`
	Programs []progMeta `json:"programs"`
}

type progMeta struct {
	Name      string         `json:"name"`
	Function  string         `json:"function"`
	Priority  int            `json:"priority"`
	ProceedOn bpf.Actions    `json:"proceedOn"`
	Key       string         `json:"key,omitempty"`
	ID        ebpf.ProgramID `json:"id"`
	Tag       string         `json:"tag,omitempty"`
}

// hookState is what the backend finds for a target: its pins and whether
// its root is what the hook runs.
type hookState struct {
	dir string

	root     *ebpf.Program // pinned root program, nil if none
	rootID   ebpf.ProgramID
	rootLink link.Link // TC root attached through TCX
	attached bool      // the root runs on the hook
	mode     xdp.Mode  // XDP attach mode of the root

	head   *ebpf.Map // pinned head PROG_ARRAY, nil if none
	headID ebpf.ProgramID

	current *generation // the generation head points at
	gens    []int       // every generation directory found
}

type generation struct {
	n     int
	dir   string
	chain *ebpf.Map
	meta  *ebpf.Map // the pinned metadata map, kept open for Revert
	desc  meta
	progs []*ebpf.Program // opened from the chain's slots
}

func (g *generation) close() {
	if g == nil {
		return
	}
	for _, p := range g.progs {
		p.Close()
	}
	if g.chain != nil {
		g.chain.Close()
	}
	if g.meta != nil {
		g.meta.Close()
	}
}

func (s *hookState) close() {
	if s.root != nil {
		s.root.Close()
	}
	if s.rootLink != nil {
		s.rootLink.Close()
	}
	if s.head != nil {
		s.head.Close()
	}
	s.current.close()
}

func loadPinnedProgram(path string) (*ebpf.Program, error) {
	p, err := ebpf.LoadPinnedProgram(path, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return p, err
}

func loadPinnedMap(path string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return m, err
}

func programID(p *ebpf.Program) (ebpf.ProgramID, error) {
	info, err := p.Info()
	if err != nil {
		return 0, err
	}
	id, ok := info.ID()
	if !ok {
		return 0, errors.New("kernel does not report program IDs")
	}
	return id, nil
}

// slotID reads the program ID in slot i of a PROG_ARRAY (0 when empty).
func slotID(m *ebpf.Map, i uint32) (ebpf.ProgramID, error) {
	var id uint32
	err := m.Lookup(i, &id)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, nil
	}
	return ebpf.ProgramID(id), err
}

// read finds the backend's state for t. The caller closes it.
func (b *Backend) read(t bpf.Target) (st *hookState, err error) {
	st = &hookState{dir: Dir(t)}
	defer func() {
		if err != nil {
			st.close()
			st = nil
		}
	}()
	entries, err := os.ReadDir(st.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	st.gens = generations(entries)

	if st.root, err = loadPinnedProgram(filepath.Join(st.dir, pinRoot)); err != nil {
		return nil, fmt.Errorf("open pinned root: %w", err)
	}
	if st.root != nil {
		if st.rootID, err = programID(st.root); err != nil {
			return nil, err
		}
		if err := b.readAttachment(t, st); err != nil {
			return nil, err
		}
	}
	if st.head, err = loadPinnedMap(filepath.Join(st.dir, pinHead)); err != nil {
		return nil, fmt.Errorf("open pinned head: %w", err)
	}
	if st.head == nil {
		return st, nil
	}
	if st.headID, err = slotID(st.head, 0); err != nil {
		return nil, fmt.Errorf("read head: %w", err)
	}
	if st.headID == 0 {
		return st, nil
	}
	// The current generation is the one whose first slot the head holds.
	for _, n := range slices.Backward(st.gens) {
		g, err := openGeneration(genDir(st.dir, n), n)
		if err != nil {
			continue // garbage from an interrupted run
		}
		if len(g.progs) > 0 {
			if id, err := programID(g.progs[0]); err == nil && id == st.headID {
				st.current = g
				break
			}
		}
		g.close()
	}
	return st, nil
}

// readAttachment finds out whether the pinned root runs on the hook.
func (b *Backend) readAttachment(t bpf.Target, st *hookState) error {
	return b.readAttachmentContext(context.Background(), t, st)
}

// readAttachmentContext is readAttachment, with the XDP attachment taken
// from ctx when the caller knows it (see xdp.WithKnown).
func (b *Backend) readAttachmentContext(ctx context.Context, t bpf.Target, st *hookState) error {
	switch {
	case t.Hook == bpf.HookXDP:
		a, err := xdp.QueryContext(ctx, t.Ifindex)
		if err != nil {
			return err
		}
		st.attached = a.ProgramID == st.rootID
		st.mode = a.Mode
	case t.Hook.IsTC():
		l, err := link.LoadPinnedLink(filepath.Join(st.dir, pinRootLink), nil)
		switch {
		case err == nil:
			st.rootLink = l
			ids, err := tcxProgramIDs(t)
			if err != nil {
				return err
			}
			st.attached = slices.Contains(ids, st.rootID)
		case errors.Is(err, fs.ErrNotExist):
			fs, err := clsact.List(t.Ifindex, t.Hook)
			if err != nil {
				return err
			}
			st.attached = slices.ContainsFunc(fs, func(f clsact.Filter) bool {
				return f.Priority == RootPriority && f.ProgramID == st.rootID
			})
		default:
			return fmt.Errorf("open pinned root link: %w", err)
		}
	default:
		return fmt.Errorf("unknown hook %q", t.Hook)
	}
	return nil
}

func tcxProgramIDs(t bpf.Target) ([]ebpf.ProgramID, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: t.Ifindex, Attach: t.Hook.TCXAttachType()})
	if err != nil {
		return nil, fmt.Errorf("query TCX programs of interface %d: %w", t.Ifindex, err)
	}
	var ids []ebpf.ProgramID
	for _, p := range res.Programs {
		ids = append(ids, p.ID)
	}
	return ids, nil
}

func openGeneration(dir string, n int) (*generation, error) {
	g := &generation{n: n, dir: dir}
	var err error
	if g.chain, err = ebpf.LoadPinnedMap(filepath.Join(dir, pinChain), nil); err != nil {
		return nil, err
	}
	if g.meta, err = ebpf.LoadPinnedMap(filepath.Join(dir, pinMeta), nil); err != nil {
		g.close()
		return nil, err
	}
	if err := pinmeta.Read(filepath.Join(dir, pinMeta), &g.desc); err != nil {
		g.close()
		return nil, err
	}
	for i := range g.desc.Programs {
		id, err := slotID(g.chain, uint32(i))
		if err == nil && id == 0 {
			err = fmt.Errorf("slot %d of %s is empty", i, dir)
		}
		var p *ebpf.Program
		if err == nil {
			p, err = ebpf.NewProgramFromID(id)
		}
		if err != nil {
			g.close()
			return nil, err
		}
		g.progs = append(g.progs, p)
	}
	return g, nil
}

// Current reads the chain the backend runs on t: nil when its root does not
// run there (nothing installed, or only leftovers after another backend took
// the hook over).
//
// It reads what a change needs to know to be shown, and no more: the
// pinned root's ID, the hook's attachment (from ctx when the caller
// passed it, see xdp.WithKnown), the head and the generations' program
// arrays and descriptions. The programs' IDs come from the arrays' slots
// and their tags from the description written when they were loaded; a
// program is opened only when its slot holds another ID than the
// description says (someone changed the array by hand). Program info
// costs a read of /proc/self/fdinfo each: this keeps `kfm status` and
// metrics scrapes at a few system calls per chain.
func (b *Backend) Current(ctx context.Context, t bpf.Target) (*bpf.Chain, error) {
	c, err := b.current(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	return c, nil
}

func (b *Backend) current(ctx context.Context, t bpf.Target) (*bpf.Chain, error) {
	dir := Dir(t)
	root, err := bpfinfo.PinnedProgram(filepath.Join(dir, pinRoot))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned root: %w", err)
	}
	st := &hookState{dir: dir, rootID: root.ID}
	defer st.close()
	if err := b.readAttachmentContext(ctx, t, st); err != nil {
		return nil, err
	}
	if !st.attached {
		return nil, nil
	}
	c := &bpf.Chain{Target: t, Backend: Name, RootID: st.rootID, Programs: []bpf.ChainProgram{}}
	if t.Hook == bpf.HookXDP {
		c.Mode = string(st.mode)
	}
	head, err := bpfinfo.OpenPinnedMap(filepath.Join(dir, pinHead))
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned head: %w", err)
	}
	headID, err := head.LookupUint32(0)
	head.Close()
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read head: %w", err)
	}
	if headID == 0 {
		return c, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	// The current generation is the one whose first slot the head holds.
	for _, n := range slices.Backward(generations(entries)) {
		progs, err := generationPrograms(genDir(dir, n))
		if err != nil || len(progs) == 0 || progs[0].ID != ebpf.ProgramID(headID) {
			continue // garbage from an interrupted run, or an older chain
		}
		c.Programs = progs
		return c, nil
	}
	return c, nil
}

// generations lists the generation numbers of the directories among
// entries (a hook directory's), in ascending order.
func generations(entries []os.DirEntry) []int {
	var gens []int
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), genPrefix); ok && e.IsDir() {
			if g, err := strconv.Atoi(n); err == nil {
				gens = append(gens, g)
			}
		}
	}
	slices.Sort(gens)
	return gens
}

// generationPrograms reads a generation's chain from its pinned array and
// description, without opening its programs (see Current).
func generationPrograms(dir string) ([]bpf.ChainProgram, error) {
	chain, err := bpfinfo.OpenPinnedMap(filepath.Join(dir, pinChain))
	if err != nil {
		return nil, err
	}
	defer chain.Close()
	var desc meta
	if err := pinmeta.Read(filepath.Join(dir, pinMeta), &desc); err != nil {
		return nil, err
	}
	out := make([]bpf.ChainProgram, 0, len(desc.Programs))
	for i, pm := range desc.Programs {
		slot, err := chain.LookupUint32(uint32(i))
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			slot, err = 0, nil
		}
		id := ebpf.ProgramID(slot)
		if err == nil && id == 0 {
			err = fmt.Errorf("slot %d of %s is empty", i, dir)
		}
		if err != nil {
			return nil, err
		}
		cp := bpf.ChainProgram{Name: pm.Function, Priority: pm.Priority, ProceedOn: pm.ProceedOn, ID: id, Tag: pm.Tag}
		if id != pm.ID || pm.Tag == "" {
			p, err := bpfinfo.ProgramByID(id)
			if err != nil {
				return nil, err
			}
			cp.Tag = p.Tag
		}
		out = append(out, cp)
	}
	return out, nil
}

func chainProgram(pm progMeta, p *ebpf.Program) (bpf.ChainProgram, error) {
	info, err := p.Info()
	if err != nil {
		return bpf.ChainProgram{}, err
	}
	id, _ := info.ID()
	return bpf.ChainProgram{Name: pm.Function, Priority: pm.Priority, ProceedOn: pm.ProceedOn, ID: id, Tag: info.Tag}, nil
}
