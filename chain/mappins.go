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
)

// A state map pin removed by hand (rm <bpffs>/kfm/maps/.../ELEMENT/MAP)
// leaves the running program with its map, but the next change of the
// chain would find no pin and start the map empty. kfm status reports such
// a map (unpinnedMaps), and apply pins the running program's map again
// before it changes anything (repinMaps), so that no state is lost.

// runningMaps returns the maps program id uses that kfm keeps pinned with
// its element (state maps and verdict counters; see isStateMap), by ID,
// with their kernel names.
func runningMaps(id ebpf.ProgramID) (map[ebpf.MapID]string, error) {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return nil, err
	}
	ids, ok := info.MapIDs()
	if !ok {
		return nil, errors.New("the kernel does not report a program's maps")
	}
	out := map[ebpf.MapID]string{}
	for _, mid := range ids {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			continue
		}
		mi, err := m.Info()
		typ := m.Type()
		m.Close()
		if err != nil || typ == ebpf.ProgramArray ||
			strings.Contains(mi.Name, ".rodata") || strings.Contains(mi.Name, ".kconfig") || strings.Contains(mi.Name, ".ksyms") {
			continue
		}
		out[mid] = mi.Name
	}
	return out, nil
}

// pinnedMapIDs returns the IDs of the maps pinned directly in dir.
func pinnedMapIDs(dir string) map[ebpf.MapID]bool {
	out := map[ebpf.MapID]bool{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			continue
		}
		if info, err := m.Info(); err == nil {
			if id, ok := info.ID(); ok {
				out[id] = true
			}
		}
		m.Close()
	}
	return out
}

// unpinnedMaps lists, by kernel name, the maps the element's running
// program id uses that are not pinned in the element's directory.
func (ms mapStore) unpinnedMaps(t bpf.Target, element string, id ebpf.ProgramID) ([]string, map[ebpf.MapID]string) {
	if id == 0 {
		return nil, nil
	}
	running, err := runningMaps(id)
	if err != nil {
		return nil, nil
	}
	pinned := pinnedMapIDs(ms.elementDir(t, element))
	var names []string
	missing := map[ebpf.MapID]string{}
	for mid, name := range running {
		if !pinned[mid] {
			names = append(names, name)
			missing[mid] = name
		}
	}
	slices.Sort(names)
	return names, missing
}

// unpinnedDrift is kfm status's line about an element whose maps lost
// their pins ("" when none did).
func (ms mapStore) unpinnedDrift(t bpf.Target, element string, id ebpf.ProgramID) string {
	names, _ := ms.unpinnedMaps(t, element, id)
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprintf("%s: map %s is no longer pinned under %s (removed by hand?): the program still uses it, but the next change of the chain would start it empty; run `kfm apply` (or `kfm apply --locked`) to pin it again",
		element, strings.Join(names, ", "), ms.elementDir(t, element))
}

// repinMaps pins again the maps of the running program id of element that
// lost their pins, under the names prepare looks for: the name of the map
// in spec (the kernel keeps only the first 15 characters), or the verdict
// counters' pin name.
func (ms mapStore) repinMaps(t bpf.Target, element string, id ebpf.ProgramID, spec *ebpf.CollectionSpec) ([]string, error) {
	_, missing := ms.unpinnedMaps(t, element, id)
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
