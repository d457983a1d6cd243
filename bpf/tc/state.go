package tc

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
)

const (
	pinMeta     = "meta"
	linkPrefix  = "link-"
	metaVersion = 1
)

// meta describes the chain kfm runs on a hook; it is pinned in the hook's
// directory. During a change it lists the old and the new programs (written
// ahead), so that a run that dies half-way leaves programs the next one
// recognises.
type meta struct {
	Version  int         `json:"version"`
	Backend  string      `json:"backend"`
	Hook     bpf.Hook    `json:"hook"`
	Ifindex  int         `json:"ifindex"`
	Programs []entryMeta `json:"programs"`
}

type entryMeta struct {
	Name      string         `json:"name"`
	Function  string         `json:"function"`
	Priority  int            `json:"priority"`
	ProceedOn bpf.Actions    `json:"proceedOn"`
	Key       string         `json:"key,omitempty"`
	ID        ebpf.ProgramID `json:"id"`
	Tag       string         `json:"tag,omitempty"`
	// Link is the TCX link (tcx).
	Link link.ID `json:"link,omitempty"`
	// TCPriority is the cls_bpf filter priority (tc).
	TCPriority uint16 `json:"tcPriority,omitempty"`
}

// entry is one kfm program on the hook (or about to be).
type entry struct {
	m    entryMeta
	prog *ebpf.Program
	// tcx: the link holding the program (shared by an old entry and the
	// new entry that replaces its program in place).
	link link.Link
}

// hookState is what kfm runs on a hook, in run order.
type hookState struct {
	dir     string
	doc     meta
	entries []*entry
	// tc: every priority in use on the hook (kfm's and others').
	used map[uint16]bool
	// tcx: pinned links that no longer run (garbage).
	stale []string
	// tc: filters named like kfm's that no description covers (garbage).
	orphans []clsact.Filter
}

func (s *hookState) close() {
	links := map[link.Link]bool{}
	for _, e := range s.entries {
		if e.prog != nil {
			e.prog.Close()
		}
		if e.link != nil && !links[e.link] {
			links[e.link] = true
			e.link.Close()
		}
	}
}

// read finds kfm's programs on t. With open set, every entry's program (and
// link) is opened, for a change; otherwise only IDs are read.
func (b *Backend) read(t bpf.Target, open bool) (st *hookState, err error) {
	st = &hookState{dir: b.Dir(t), used: map[uint16]bool{}}
	defer func() {
		if err != nil {
			st.close()
			st = nil
		}
	}()
	err = pinmeta.Read(filepath.Join(st.dir, pinMeta), &st.doc)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	}
	byID := map[ebpf.ProgramID]entryMeta{}
	for _, em := range st.doc.Programs {
		byID[em.ID] = em
	}
	if b.kind == kindTCX {
		err = b.readTCX(t, st, byID, open)
	} else {
		err = b.readClassic(t, st, byID, open)
	}
	return st, err
}

func (b *Backend) readTCX(t bpf.Target, st *hookState, byID map[ebpf.ProgramID]entryMeta, open bool) error {
	pins, err := os.ReadDir(st.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	ours := map[link.ID]string{}
	for _, p := range pins {
		n, ok := strings.CutPrefix(p.Name(), linkPrefix)
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			continue
		}
		ours[link.ID(id)] = filepath.Join(st.dir, p.Name())
	}
	if len(ours) == 0 {
		return nil
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: t.Ifindex, Attach: tcxAttachType(t.Hook)})
	if err != nil {
		return fmt.Errorf("query TCX programs of interface %d: %w", t.Ifindex, err)
	}
	running := map[link.ID]bool{}
	for _, ap := range res.Programs {
		lid, ok := ap.LinkID()
		path, mine := ours[lid]
		if !ok || !mine {
			continue
		}
		running[lid] = true
		em, known := byID[ap.ID]
		if !known {
			em = entryMeta{ID: ap.ID}
			if p, err := ebpf.NewProgramFromID(ap.ID); err == nil {
				if info, err := p.Info(); err == nil {
					em.Name, em.Function = info.Name, info.Name
				}
				p.Close()
			}
		}
		em.ID, em.Link = ap.ID, lid
		e := &entry{m: em}
		st.entries = append(st.entries, e)
		if open {
			if e.prog, err = ebpf.NewProgramFromID(ap.ID); err != nil {
				return fmt.Errorf("open program %d: %w", ap.ID, err)
			}
			if e.link, err = link.LoadPinnedLink(path, nil); err != nil {
				return fmt.Errorf("open pinned link %s: %w", path, err)
			}
		}
	}
	for lid, path := range ours {
		if !running[lid] {
			st.stale = append(st.stale, path)
		}
	}
	slices.Sort(st.stale)
	return nil
}

func (b *Backend) readClassic(t bpf.Target, st *hookState, byID map[ebpf.ProgramID]entryMeta, open bool) error {
	fs, err := clsact.List(t.Ifindex, t.Hook)
	if err != nil {
		return err
	}
	for _, f := range fs {
		st.used[f.Priority] = true
		em, known := byID[f.ProgramID]
		if !known || em.TCPriority != f.Priority || f.Handle != FilterHandle {
			if strings.HasPrefix(f.Name, FilterNamePrefix) && f.Priority >= MinPriority && f.Priority <= MaxPriority {
				st.orphans = append(st.orphans, f)
			}
			continue
		}
		e := &entry{m: em}
		st.entries = append(st.entries, e)
		if open {
			if e.prog, err = ebpf.NewProgramFromID(f.ProgramID); err != nil {
				return fmt.Errorf("open program %d: %w", f.ProgramID, err)
			}
		}
	}
	return nil
}

// Current reads the chain the backend runs on t: kfm's programs only (other
// TC programs on the hook are not part of it), nil when there are none.
func (b *Backend) Current(ctx context.Context, t bpf.Target) (*bpf.Chain, error) {
	if !t.Hook.IsTC() {
		return nil, nil
	}
	st, err := b.read(t, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	defer st.close()
	if len(st.entries) == 0 {
		return nil, nil
	}
	c := &bpf.Chain{Target: t, Backend: b.Name(), Programs: []bpf.ChainProgram{}}
	for _, e := range st.entries {
		c.Programs = append(c.Programs, e.chainProgram())
	}
	return c, nil
}

func (e *entry) chainProgram() bpf.ChainProgram {
	return bpf.ChainProgram{Name: e.m.Function, Priority: e.m.Priority, ProceedOn: e.m.ProceedOn, ID: e.m.ID, Tag: e.m.Tag}
}
