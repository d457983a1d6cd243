package chain

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
)

// ErrMapChanged: an upgrade changes the definition of a map that holds
// state; kfm refuses unless the user resets the maps.
var ErrMapChanged = errors.New("map definition changed")

// mapStore keeps the state maps of installed programs pinned at
//
//	<bpffs>/kfm/maps/<ifindex>/<hook>/<element>/<map>           (host namespace)
//	<bpffs>/kfm/maps/ns-<cookie>/<ifindex>/<hook>/<element>/<map> (another one)
//
// and hands them to backends as map replacements, so that counters, rate
// limiter buckets and the like survive reorders, reloads and upgrades. A
// map is state unless it is a .rodata section (parameters: they belong to
// the program instance), .kconfig, or a program array. bpffs forbids dots
// in names, so ".bss" is pinned as "_bss".
type mapStore struct {
	root string // <bpffs>/kfm/maps
}

func newMapStore(bpffs string) mapStore {
	return mapStore{root: filepath.Join(bpffs, "kfm", "maps")}
}

func (ms mapStore) targetDir(t bpf.Target) string {
	return filepath.Join(ms.root, t.Netns, strconv.Itoa(t.Ifindex), string(t.Hook))
}

func (ms mapStore) elementDir(t bpf.Target, element string) string {
	return filepath.Join(ms.targetDir(t), element)
}

func pinName(mapName string) string { return strings.ReplaceAll(mapName, ".", "_") }

func isStateMap(name string, m *ebpf.MapSpec) bool {
	switch {
	case strings.HasPrefix(name, ".rodata"), name == ".kconfig", strings.HasPrefix(name, ".ksyms"):
		return false
	case m.Type == ebpf.ProgramArray:
		return false
	}
	return true
}

// elementMaps are the state maps of one element for one apply.
type elementMaps struct {
	dir     string
	root    string // the store's root, <bpffs>/kfm/maps
	maps    map[string]*ebpf.Map
	created []string // pinned by this apply: removed again if it fails
	reset   map[string]*ebpf.Map
}

// prepare opens the pinned maps of element and creates (and pins) the ones
// that do not exist yet. A pinned map whose definition no longer matches
// spec is an error wrapping ErrMapChanged unless reset is set; then a fresh
// map replaces it when the apply is committed.
func (ms mapStore) prepare(t bpf.Target, element string, spec *ebpf.CollectionSpec, reset bool) (*elementMaps, error) {
	em := &elementMaps{dir: ms.elementDir(t, element), root: ms.root, maps: map[string]*ebpf.Map{}, reset: map[string]*ebpf.Map{}}
	if err := os.MkdirAll(em.dir, 0o700); err != nil {
		return nil, err
	}
	for name, mspec := range spec.Maps {
		if !isStateMap(name, mspec) {
			continue
		}
		pin := filepath.Join(em.dir, pinName(name))
		m, err := ebpf.LoadPinnedMap(pin, nil)
		switch {
		case err == nil:
			if cerr := mspec.Compatible(m); cerr != nil {
				m.Close()
				if !reset {
					em.abort()
					return nil, fmt.Errorf("%s: map %s: %w (%v): its state would be lost; install with --reset-maps to start from empty maps", element, name, ErrMapChanged, cerr)
				}
				fresh, err := newStateMap(mspec)
				if err != nil {
					em.abort()
					return nil, fmt.Errorf("%s: create map %s: %w", element, name, err)
				}
				em.reset[name] = fresh
				em.maps[name] = fresh
				continue
			}
			em.maps[name] = m
		case errors.Is(err, fs.ErrNotExist):
			fresh, err := newStateMap(mspec)
			if err != nil {
				em.abort()
				return nil, fmt.Errorf("%s: create map %s: %w", element, name, err)
			}
			if err := fresh.Pin(pin); err != nil {
				fresh.Close()
				em.abort()
				return nil, fmt.Errorf("%s: pin map %s: %w", element, name, err)
			}
			em.maps[name] = fresh
			em.created = append(em.created, pin)
		default:
			em.abort()
			return nil, fmt.Errorf("%s: open pinned map %s: %w", element, pin, err)
		}
	}
	return em, nil
}

func newStateMap(spec *ebpf.MapSpec) (*ebpf.Map, error) {
	s := spec.Copy()
	s.Pinning = ebpf.PinNone
	return ebpf.NewMap(s)
}

// commit replaces reset maps' pins with the fresh maps, and removes the
// pins of maps the element's program no longer has (an upgrade, or a
// program of another object installed under the same name, dropped them):
// no program of the chain uses them, so they would stay pinned for
// nothing until the element is removed. The verdict counters' pin is
// elementCounters' business.
func (em *elementMaps) commit() error {
	for name, m := range em.reset {
		pin := filepath.Join(em.dir, pinName(name))
		if err := os.Remove(pin); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := m.Pin(pin); err != nil {
			return err
		}
	}
	em.created = nil
	keep := map[string]bool{counters.PinName: true}
	for name := range em.maps {
		keep[pinName(name)] = true
	}
	entries, err := os.ReadDir(em.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !keep[e.Name()] {
			if err := os.RemoveAll(filepath.Join(em.dir, e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("remove the pin of a map the program no longer has: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// abort removes the pins this apply created and closes every map.
func (em *elementMaps) abort() {
	for _, pin := range em.created {
		os.Remove(pin)
	}
	em.created = nil
	em.close()
	pruneEmpty(em.dir, em.root)
}

// pruneEmpty removes dir and its parents while they are empty, up to
// <bpffs>/kfm (the parent of root, the store's root), so that a failed or
// finished change leaves no empty directories behind.
func pruneEmpty(dir, root string) {
	for d := dir; d != filepath.Dir(filepath.Dir(root)); d = filepath.Dir(d) {
		if os.Remove(d) != nil { // fails on a directory that is not empty
			return
		}
	}
}

func (em *elementMaps) close() {
	for _, m := range em.maps {
		m.Close()
	}
	em.maps = nil
}

// gc removes the map pins of elements that are not in keep, for target t.
func (ms mapStore) gc(t bpf.Target, keep map[string]bool) error {
	dir := ms.targetDir(t)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	if len(keep) == 0 {
		pruneEmpty(dir, ms.root)
	}
	return errors.Join(errs...)
}
