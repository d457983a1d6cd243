package chain

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
)

// Checking that an element's state maps are still pinned (unpinnedMaps:
// status reports a pin removed by hand, apply pins the map again) costs a
// dozen system calls per element, most of a status or a no-op apply at
// hundreds of chains. An element directory in bpffs changes its
// modification time whenever a pin in it is made or removed, so a check
// that found nothing missing is remembered, across commands, with the
// directory's modification time and inode and the running program's ID:
//
//	<state>/pins-checked.json
//
// and not made again while all three are the same. As with git's index, a
// directory modified less than pinMarkMargin before the check is not
// remembered: bpffs takes its timestamps from the kernel's coarse clock,
// which is up to a scheduler tick (1 to 10 ms) behind, so a pin removed
// within the same tick as the modification the check saw would not change
// the time; a removal after a check made pinMarkMargin later always does.
// An apply checks the elements it changed at its end (so that the status
// or no-op apply that usually follows finds them remembered), a status or
// apply the running ones. The file is best effort: without it (or with a
// state directory kfm cannot write) every check is made.

// pinMark is what a check that found every pin in place saw.
type pinMark struct {
	ProgramID ebpf.ProgramID `json:"programId"`
	Mtime     int64          `json:"mtime"` // ns
	Ino       uint64         `json:"ino"`
}

type pinMarks struct {
	mu      sync.Mutex
	loaded  bool
	old     map[string]pinMark // from the file
	seen    map[string]pinMark // remembered by this command
	dropped bool               // an old mark no longer holds
}

const pinMarksFile = "pins-checked.json"

// pinMarkMargin is how long before a check an element directory must have
// changed last for the check to be remembered: ten times the longest
// scheduler tick (HZ=100), by which bpffs's coarse timestamps can lag.
const pinMarkMargin = 100 * time.Millisecond

func (m *Manager) pinMarksPath() string { return filepath.Join(m.state.dir, pinMarksFile) }

// load reads the file once.
func (pm *pinMarks) load(path string) {
	if pm.loaded {
		return
	}
	pm.loaded = true
	pm.old, pm.seen = map[string]pinMark{}, map[string]pinMark{}
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var f struct {
		Marks map[string]pinMark `json:"marks"`
	}
	if json.Unmarshal(b, &f) == nil && f.Marks != nil {
		pm.old = f.Marks
	}
}

// dirMark is the mark of dir for program id now; ok is false when dir
// cannot be read or changed too recently to be remembered.
func dirMark(dir string, id ebpf.ProgramID) (pinMark, bool) {
	st, err := os.Stat(dir)
	if err != nil {
		return pinMark{}, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || time.Since(st.ModTime()) < pinMarkMargin {
		return pinMark{}, false
	}
	return pinMark{ProgramID: id, Mtime: st.ModTime().UnixNano(), Ino: sys.Ino}, true
}

// unpinned is mapStore.unpinnedMaps, skipped while the element's directory
// and program are as they were when a check last found nothing missing.
// Safe for concurrent use.
func (m *Manager) unpinned(t bpf.Target, element string, id ebpf.ProgramID) ([]string, map[ebpf.MapID]string) {
	if id == 0 {
		return nil, nil
	}
	dir := m.maps.elementDir(t, element)
	mark, markable := dirMark(dir, id)
	pm := &m.pinMarks
	pm.mu.Lock()
	pm.load(m.pinMarksPath())
	old, had := pm.old[dir]
	if markable && had && old == mark {
		pm.seen[dir] = mark
		pm.mu.Unlock()
		return nil, nil
	}
	pm.mu.Unlock()
	names, missing := m.maps.unpinnedMaps(t, element, id)
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if markable && len(names) == 0 {
		pm.seen[dir] = mark
	} else if had {
		pm.dropped = true
	}
	return names, missing
}

// rememberPins checks, at the end of an apply, the map pins of the elements
// of the hooks it changed whose directories changed long enough ago to be
// remembered (the pins of the others were made just now; checking them
// would teach nothing), so that the status or no-op apply that usually
// follows a large apply finds them remembered instead of checking every
// element itself.
func (m *Manager) rememberPins(ctx context.Context, checks []pinCheck) {
	forEach(ctx, len(checks), func(i int) {
		c := checks[i]
		if _, ok := dirMark(m.maps.elementDir(c.target, c.element), c.id); ok {
			m.unpinned(c.target, c.element, c.id)
		}
	})
	m.savePinMarks()
}

// savePinMarks writes what this command learnt, when that changed the
// file: its own marks, and the old ones of directories it did not look at
// that still exist.
func (m *Manager) savePinMarks() {
	pm := &m.pinMarks
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if !pm.loaded {
		return
	}
	out := maps.Clone(pm.seen)
	changed := pm.dropped
	for dir, mk := range pm.old {
		if s, ok := pm.seen[dir]; ok {
			changed = changed || s != mk
			continue
		}
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			changed = true
			continue
		}
		out[dir] = mk
	}
	for dir := range pm.seen {
		if _, ok := pm.old[dir]; !ok {
			changed = true
		}
	}
	pm.old, pm.seen, pm.dropped = out, map[string]pinMark{}, false
	if !changed {
		return
	}
	if st, err := os.Stat(m.state.dir); err != nil || !st.IsDir() {
		return
	}
	b, err := json.Marshal(struct {
		Marks map[string]pinMark `json:"marks"`
	}{out})
	if err == nil {
		_ = writeFileAtomic(m.pinMarksPath(), b, 0o600)
	}
}
