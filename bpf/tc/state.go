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
	pinMeta    = "meta"
	linkPrefix = "link-"
	// metaVersion 2: programs run behind the gate (Slot, Gates). Version 1
	// (before the gate) is read: its programs run ungated, and the next
	// change replaces them all.
	metaVersion = 2
)

// meta describes the chain kfm runs on a hook; it is pinned in the hook's
// directory. During a change it lists the old and the new programs and
// gate programs (written ahead), so that a run that dies half-way leaves
// programs the next one recognises.
type meta struct {
	Version  int         `json:"version"`
	Backend  string      `json:"backend"`
	Hook     bpf.Hook    `json:"hook"`
	Ifindex  int         `json:"ifindex"`
	Programs []entryMeta `json:"programs"`
	// Gates are the gate programs that may be attached, with the word
	// each writes.
	Gates []gateMeta `json:"gates,omitempty"`
}

type gateMeta struct {
	ID   ebpf.ProgramID `json:"id"`
	Mask uint32         `json:"mask"`
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
	// Slot is the program's bit in the gate word.
	Slot int `json:"slot"`
}

// entry is one kfm program on the hook (or about to be).
type entry struct {
	m    entryMeta
	prog *ebpf.Program
	// tcx: the link holding the program (shared by an old entry and the
	// new entry that replaces its program in place).
	link link.Link
	// ungated: loaded by a kfm from before the gate (meta version 1): it
	// runs for every packet whatever the gate says.
	ungated bool
	// src is the component a new entry loads (nil once loaded, and for
	// entries read from the hook).
	src *bpf.Component
}

// gateState is the gate program attached to a hook.
type gateState struct {
	id ebpf.ProgramID
	// mask is the word the gate writes; known is false when no
	// description names the gate program (then no gated program of kfm's
	// counts as running).
	mask  uint32
	known bool
	prog  *ebpf.Program // open for a change
	// tcx: the gate's link (open for a change) and its id.
	link   link.Link
	linkID link.ID
}

// hookState is what kfm runs on a hook.
type hookState struct {
	dir string
	doc meta
	// entries is the chain: kfm's programs the gate lets run, in run order.
	entries []*entry
	// inert are kfm's programs that are attached but that the gate keeps
	// from running: left by an interrupted change (garbage).
	inert []*entry
	gate  *gateState // nil: no gate attached
	// tc: every priority in use on the hook (kfm's and others').
	used map[uint16]bool
	// tcx: pinned links that no longer run (garbage).
	stale []string
	// tc: filters named like kfm's that no description covers (garbage).
	orphans []clsact.Filter
	// ungated: the description predates the gate (version 1).
	ungated bool
}

func (s *hookState) close() {
	links := map[link.Link]bool{}
	for _, e := range slices.Concat(s.entries, s.inert) {
		if e.prog != nil {
			e.prog.Close()
		}
		if e.link != nil && !links[e.link] {
			links[e.link] = true
			e.link.Close()
		}
	}
	if g := s.gate; g != nil {
		if g.prog != nil {
			g.prog.Close()
		}
		if g.link != nil {
			g.link.Close()
		}
	}
}

// add puts e in the chain when the gate lets it run (or it runs ungated),
// among the inert programs otherwise.
func (s *hookState) add(e *entry) {
	switch {
	case e.ungated:
		s.entries = append(s.entries, e)
	case s.gate != nil && s.gate.known && e.m.Slot >= 0 && e.m.Slot < GateSlots && s.gate.mask&slotBit(e.m.Slot) != 0:
		s.entries = append(s.entries, e)
	default:
		s.inert = append(s.inert, e)
	}
}

func (s *hookState) setGate(g *gateState) {
	for _, gm := range s.doc.Gates {
		if gm.ID == g.id {
			g.mask, g.known = gm.Mask, true
		}
	}
	s.gate = g
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
	if !open && len(st.doc.Programs) == 0 {
		// No description, no chain of kfm's (Current): the kernel
		// need not be asked what else runs on the hook.
		return st, nil
	}
	// Entries of a version 1 description run ungated.
	st.ungated = st.doc.Version < 2 && len(st.doc.Programs) > 0
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
	var gate *gateState
	gatePath := filepath.Join(st.dir, pinGate)
	for _, p := range pins {
		if p.Name() == pinGate {
			l, err := link.LoadPinnedLink(gatePath, nil)
			if err != nil {
				return fmt.Errorf("open pinned link %s: %w", gatePath, err)
			}
			info, err := l.Info()
			if err != nil {
				l.Close()
				return fmt.Errorf("pinned link %s: %w", gatePath, err)
			}
			gate = &gateState{id: info.Program, linkID: info.ID}
			if open {
				gate.link = l
			} else {
				l.Close()
			}
			continue
		}
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
	if len(ours) == 0 && gate == nil {
		return nil
	}
	res, err := link.QueryPrograms(link.QueryOptions{Target: t.Ifindex, Attach: t.Hook.TCXAttachType()})
	if err != nil {
		if gate != nil && gate.link != nil {
			gate.link.Close()
		}
		return fmt.Errorf("query TCX programs of interface %d: %w", t.Ifindex, err)
	}
	running := map[link.ID]bool{}
	for _, ap := range res.Programs {
		if lid, ok := ap.LinkID(); ok && gate != nil && lid == gate.linkID {
			running[lid] = true
			gate.id = ap.ID
			st.setGate(gate)
		}
	}
	if gate != nil && st.gate == nil {
		// The pinned gate link no longer runs.
		st.stale = append(st.stale, gatePath)
		if gate.link != nil {
			gate.link.Close()
		}
	}
	if st.gate != nil && open {
		if st.gate.prog, err = ebpf.NewProgramFromID(st.gate.id); err != nil {
			return fmt.Errorf("open the gate program %d: %w", st.gate.id, err)
		}
	}
	for _, ap := range res.Programs {
		lid, ok := ap.LinkID()
		path, mine := ours[lid]
		if !ok || !mine {
			continue
		}
		running[lid] = true
		em, known := byID[ap.ID]
		if !known {
			// A program no description covers: garbage.
			em = entryMeta{Slot: -1}
		}
		em.ID, em.Link = ap.ID, lid
		e := &entry{m: em, ungated: known && st.ungated}
		st.add(e)
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
		if f.Priority == GatePriority && f.Handle == FilterHandle && f.Name == GateFilterName {
			st.setGate(&gateState{id: f.ProgramID})
			if open {
				if st.gate.prog, err = ebpf.NewProgramFromID(f.ProgramID); err != nil {
					return fmt.Errorf("open the gate program %d: %w", f.ProgramID, err)
				}
			}
		}
	}
	for _, f := range fs {
		st.used[f.Priority] = true
		if f.Priority == GatePriority && f.Name == GateFilterName {
			continue
		}
		em, known := byID[f.ProgramID]
		if !known || em.TCPriority != f.Priority || f.Handle != FilterHandle {
			if strings.HasPrefix(f.Name, FilterNamePrefix) && f.Priority >= MinPriority && f.Priority <= MaxPriority {
				st.orphans = append(st.orphans, f)
			}
			continue
		}
		e := &entry{m: em, ungated: st.ungated}
		st.add(e)
		if open {
			if e.prog, err = ebpf.NewProgramFromID(f.ProgramID); err != nil {
				return fmt.Errorf("open program %d: %w", f.ProgramID, err)
			}
		}
	}
	return nil
}

// Current reads the chain the backend runs on t: kfm's programs that the
// gate lets run (other TC programs on the hook are not part of it), nil
// when there are none. RootID is the gate program.
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
	if st.gate != nil {
		c.RootID = st.gate.id
	}
	for _, e := range st.entries {
		c.Programs = append(c.Programs, e.chainProgram())
	}
	return c, nil
}

func (e *entry) chainProgram() bpf.ChainProgram {
	return bpf.ChainProgram{Name: e.m.Function, Priority: e.m.Priority, ProceedOn: e.m.ProceedOn, ID: e.m.ID, Tag: e.m.Tag}
}
