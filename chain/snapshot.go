package chain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cilium/ebpf/link"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/xdp"
)

// Snapshot is what runs on the host, read fresh from the kernel and the
// host state, with what an exporter needs to read each program's state:
// where its maps are pinned and which of them are declared metrics.
type Snapshot struct {
	// LockDigest is "sha256:<hex>" of <config-dir>/kfm.lock, "" when there
	// is none: hosts that run the same lock report the same digest.
	LockDigest string
	// Generation identifies the host state the snapshot was read with:
	// snapshots of the same generation were taken while kfm changed
	// nothing on the host (every change, such as a program's maps reset
	// and pinned anew, rewrites the host state first). "" when unknown.
	Generation string
	Hooks      []HookSnapshot
}

// HookSnapshot is one chain.
type HookSnapshot struct {
	HookStatus
	// Programs are HookStatus.Programs with their state, in run order.
	Programs []ProgramSnapshot
}

// ProgramSnapshot is one program of a chain.
type ProgramSnapshot struct {
	ProgramStatus
	// MapDir holds the pins of the program's state maps (see mapStore);
	// "" for programs kfm did not install.
	MapDir string
	// Metrics are the program's declared metrics.
	Metrics []Metric
}

// MapPin is the pin of map mapName of a program in dir (a MapDir).
func MapPin(dir, mapName string) string { return filepath.Join(dir, pinName(mapName)) }

// Snapshot reads the chains kfm manages: every hook the host state lists,
// as the kernel runs it now (see Status; programs other tools added to such
// a chain are included, with their origin). Hooks kfm never touched are not
// looked at, so a snapshot costs one look at each of kfm's hooks, not one at
// every hook of every interface. It takes no lock: the host state is
// replaced atomically, so a snapshot sees it before or after a change.
//
// A Manager that takes snapshots again and again (an exporter scraped
// every few seconds) reads a chain's structure only when it may have
// changed: it keeps the last snapshot's chains and reuses a chain while
// the host state file is the same file (every change kfm makes rewrites
// it) and a cheap look at the kernel finds the hook as it was. That look
// is one netlink dump of the links per network namespace: each link's
// ifindex, hardware address and XDP program; for TCX hooks, one query of
// the attached programs. Other changes made by hand (an entry of kfm's
// tail-call array rewritten with bpftool, a classic tc filter, which is
// not cached) show on the next snapshot after one of those changes, and
// at once in kfm status, which always reads everything.
func (m *Manager) Snapshot(ctx context.Context) (*Snapshot, error) {
	defer m.beginView()()
	if err := m.ensureBPFFS(); err != nil {
		return nil, err
	}
	c := m.snaps
	if c == nil {
		c = &snapCache{}
		m.snaps = c
	}
	stamp, err := fileStamp(m.state.path())
	if err != nil {
		return nil, err
	}
	if stamp == "" || stamp != c.stateStamp {
		st, err := m.state.load()
		if err != nil {
			return nil, err
		}
		*c = snapCache{state: st, stateStamp: stamp, lockStamp: c.lockStamp, lockDigest: c.lockDigest}
	}
	st := c.state
	kept := map[hookKey]snapHook{}
	var hooks []HookStatus
	for _, h := range st.Hooks {
		k := hookKey{h.Netns, h.Interface, h.Hook}
		fp, cacheable := m.fingerprint(ctx, h)
		if prev, ok := c.hooks[k]; ok && cacheable && prev.fingerprint == fp {
			kept[k] = prev
			if prev.status != nil {
				hooks = append(hooks, *prev.status)
			}
			continue
		}
		hs, err := m.hookStatus(ctx, st, h.Netns, h.Interface, h.Hook)
		switch {
		case errors.Is(err, ErrNoInterface):
			continue // the interface went away, and its chain with it
		case err != nil:
			return nil, err
		}
		if cacheable {
			kept[k] = snapHook{fingerprint: fp, status: hs}
		}
		if hs != nil {
			hooks = append(hooks, *hs)
		}
	}
	c.hooks = kept
	snap := &Snapshot{Generation: stamp}
	if stamp, err := fileStamp(m.lockPath()); err != nil {
		return nil, err
	} else if stamp != "" && stamp == c.lockStamp {
		snap.LockDigest = c.lockDigest
	} else if b, err := os.ReadFile(m.lockPath()); err == nil {
		sum := sha256.Sum256(b)
		snap.LockDigest = "sha256:" + hex.EncodeToString(sum[:])
		c.lockStamp, c.lockDigest = stamp, snap.LockDigest
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	} else {
		c.lockStamp, c.lockDigest = "", ""
	}
	for _, hs := range hooks {
		if hs.Backend == "" {
			continue // locked, but nothing runs
		}
		h := HookSnapshot{HookStatus: hs}
		var elems map[string]*ElementState
		if s := st.find(hs.Netns, hs.Interface, hs.Hook); s != nil {
			elems = map[string]*ElementState{}
			for _, e := range s.Elements {
				elems[e.Name] = e
			}
		}
		t := m.pinTarget(&hs)
		for _, p := range hs.Programs {
			ps := ProgramSnapshot{ProgramStatus: p}
			if e := elems[p.Name]; p.Origin == OriginKFM && e != nil && e.ProgramID == p.ProgramID {
				ps.MapDir = m.maps.elementDir(t, p.Name)
				ps.Metrics = e.Metrics
			}
			h.Programs = append(h.Programs, ps)
		}
		snap.Hooks = append(snap.Hooks, h)
	}
	return snap, nil
}

// snapCache is what a Manager keeps between snapshots (see Snapshot).
type snapCache struct {
	stateStamp string // fileStamp of the host state it read
	state      *State
	hooks      map[hookKey]snapHook
	lockStamp  string // fileStamp of kfm.lock, and its digest
	lockDigest string
}

type hookKey struct {
	netns, iface string
	hook         bpf.Hook
}

// snapHook is one hook of the last snapshot: what the kernel showed of it
// cheaply, and what it ran (nil: no chain).
type snapHook struct {
	fingerprint string
	status      *HookStatus
}

// fileStamp identifies the file at path as it is now ("" when there is
// none): kfm replaces its files by rename, so a new version is a new inode.
func fileStamp(path string) (string, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf("%d/%d/%d", ino, fi.Size(), fi.ModTime().UnixNano()), nil
}

// fingerprint is what the kernel shows cheaply of hook h, from the view
// (see Snapshot); cacheable is false when that would not reveal a change
// (classic tc filters, whose listing costs as much as reading the chain).
func (m *Manager) fingerprint(ctx context.Context, h *HookState) (fp string, cacheable bool) {
	ns, err := m.namespace(h.Netns)
	if err != nil {
		return "", false
	}
	vl, err := m.viewLinks(ns)
	if err != nil || vl == nil {
		return "", false
	}
	l, ok, err := vl.lookup(m, h.Interface, 0)
	if err != nil || !ok {
		return "", false
	}
	a := l.Attrs()
	fp = fmt.Sprintf("%s/%d/%s", ns.id, a.Index, a.HardwareAddr)
	switch {
	case h.Hook == bpf.HookXDP:
		att := xdp.AttachmentOf(l)
		return fmt.Sprintf("%s/%d/%s", fp, att.ProgramID, att.Mode), true
	case h.Backend == "tcx":
		var ids []string
		err := inNetns(ns.path, func() error {
			res, err := link.QueryPrograms(link.QueryOptions{Target: a.Index, Attach: h.Hook.TCXAttachType()})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				lid, _ := p.LinkID()
				ids = append(ids, fmt.Sprintf("%d:%d", p.ID, lid))
			}
			return nil
		})
		if err != nil {
			return "", false
		}
		return fp + "/" + strings.Join(ids, ","), true
	}
	return "", false
}
