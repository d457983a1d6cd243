package chain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Snapshot is what runs on the host, read fresh from the kernel and the
// host state, with what an exporter needs to read each program's state:
// where its maps are pinned and which of them are declared metrics.
type Snapshot struct {
	// LockDigest is "sha256:<hex>" of <config-dir>/kfm.lock, "" when there
	// is none: hosts that run the same lock report the same digest.
	LockDigest string
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
func (m *Manager) Snapshot(ctx context.Context) (*Snapshot, error) {
	defer m.beginView()()
	st, err := m.state.load()
	if err != nil {
		return nil, err
	}
	if err := m.ensureBPFFS(); err != nil {
		return nil, err
	}
	var hooks []HookStatus
	for _, h := range st.Hooks {
		hs, err := m.hookStatus(ctx, st, h.Netns, h.Interface, h.Hook)
		switch {
		case errors.Is(err, ErrNoInterface):
			continue // the interface went away, and its chain with it
		case err != nil:
			return nil, err
		case hs != nil:
			hooks = append(hooks, *hs)
		}
	}
	snap := &Snapshot{}
	if b, err := os.ReadFile(m.lockPath()); err == nil {
		sum := sha256.Sum256(b)
		snap.LockDigest = "sha256:" + hex.EncodeToString(sum[:])
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
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
