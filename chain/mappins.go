package chain

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
	"github.com/kfm-project/kfm/internal/bpfinfo"
)

// A state map pin removed by hand (rm <bpffs>/kfm/maps/.../ELEMENT/MAP)
// leaves the running program with its map, but the next change of the
// chain would find no pin and start the map empty. kfm status reports such
// a map (unpinnedMaps), and apply pins the running program's map again
// before it changes anything (repinMaps), so that no state is lost.

// kept reports whether kfm keeps m pinned with its element: state maps and
// verdict counters (see isStateMap), not the program arrays of tail calls
// nor the read-only and kernel-symbol sections.
func kept(m bpfinfo.Map) bool {
	return m.Type != ebpf.ProgramArray &&
		!strings.Contains(m.Name, ".rodata") && !strings.Contains(m.Name, ".kconfig") && !strings.Contains(m.Name, ".ksyms")
}

// pinnedMapIDs returns the IDs of the maps pinned directly in dir.
func pinnedMapIDs(dir string) map[ebpf.MapID]bool {
	out := map[ebpf.MapID]bool{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if m, err := bpfinfo.PinnedMap(filepath.Join(dir, e.Name())); err == nil {
			out[m.ID] = true
		}
	}
	return out
}

// unpinnedMaps lists, by kernel name, the maps the element's running
// program id uses and kfm keeps pinned (see kept) that are not pinned in
// the element's directory. It runs for every element of every chain in a
// status and in the planning of an apply, so it reads the maps with
// bpfinfo (a few system calls each) and looks closer only at the maps
// that have no pin.
func (ms mapStore) unpinnedMaps(t bpf.Target, element string, id ebpf.ProgramID) ([]string, map[ebpf.MapID]string) {
	if id == 0 {
		return nil, nil
	}
	ids, err := bpfinfo.ProgramMapIDs(id)
	if err != nil {
		return nil, nil
	}
	pinned := pinnedMapIDs(ms.elementDir(t, element))
	var names []string
	missing := map[ebpf.MapID]string{}
	for _, mid := range ids {
		if pinned[mid] {
			continue
		}
		m, err := bpfinfo.MapByID(mid)
		if err != nil || !kept(m) {
			continue
		}
		names = append(names, m.Name)
		missing[mid] = m.Name
	}
	slices.Sort(names)
	return names, missing
}

// unpinnedDrift is kfm status's line about an element whose maps names
// (as unpinnedMaps found them) lost their pins ("" when none did).
func (ms mapStore) unpinnedDrift(t bpf.Target, element string, names []string) string {
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprintf("%s: map %s is no longer pinned under %s (removed by hand?): the program still uses it, but the next change of the chain would start it empty; run `kfm apply` (or `kfm apply --locked`) to pin it again",
		element, strings.Join(names, ", "), ms.elementDir(t, element))
}

// repinMaps pins again the maps of element's running program that lost
// their pins (missing, as unpinnedMaps found them: kernel names by ID),
// under the names prepare looks for: the name of the map in spec (the
// kernel keeps only the first 15 characters), or the verdict counters'
// pin name.
func (ms mapStore) repinMaps(t bpf.Target, element string, missing map[ebpf.MapID]string, spec *ebpf.CollectionSpec) ([]string, error) {
	if len(missing) == 0 {
		return nil, nil
	}
	dir := ms.elementDir(t, element)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var done []string
	var errs []error
	for mid, kname := range missing {
		pin := ""
		if kname == counters.MapName {
			pin = counters.PinName
		} else if spec != nil {
			for name, mspec := range spec.Maps {
				if isStateMap(name, mspec) && truncateName(name) == kname {
					pin = pinName(name)
				}
			}
		}
		if pin == "" {
			continue // not a map kfm pins: leave it
		}
		path := filepath.Join(dir, pin)
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			continue // another map is pinned there: prepare decides
		}
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := m.Pin(path); err != nil {
			errs = append(errs, fmt.Errorf("pin %s again: %w", path, err))
		} else {
			done = append(done, pin)
		}
		m.Close()
	}
	slices.Sort(done)
	return done, errors.Join(errs...)
}

// truncateName is the name the kernel keeps of a map name (15 characters).
func truncateName(name string) string {
	if len(name) > 15 {
		return name[:15]
	}
	return name
}
