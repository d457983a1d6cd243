package chain

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/bpf"
	"github.com/kfm-project/kfm/bpf/counters"
)

// elementCounters is the verdict counter map of one element for one apply.
// It is pinned with the element's state maps,
//
//	<bpffs>/kfm/maps/<ifindex>/<hook>/<element>/kfm-counters
//
// so that the counts survive reorders, reloads and upgrades as state does
// (the hyphen keeps the name apart from every map a program declares).
// A pinned map of another layout (a kfm with other counter slots) is
// replaced by a fresh one when the apply commits; so is nothing else.
type elementCounters struct {
	dir, root string
	pin       string
	m         *ebpf.Map
	created   bool // pinned by this apply: removed again if it fails
	replace   bool // m replaces an incompatible pinned map at commit
	drop      bool // counters off: the pin goes at commit
}

// prepareCounters opens or creates element's counter map; with on false
// it prepares the removal of the pin instead.
func (ms mapStore) prepareCounters(t bpf.Target, element string, on bool) (*elementCounters, error) {
	dir := ms.elementDir(t, element)
	ec := &elementCounters{dir: dir, root: ms.root, pin: filepath.Join(dir, counters.PinName)}
	if !on {
		ec.drop = true
		return ec, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	m, err := ebpf.LoadPinnedMap(ec.pin, nil)
	switch {
	case err == nil:
		if counters.Compatible(m) == nil {
			ec.m = m
			return ec, nil
		}
		m.Close()
		if ec.m, err = counters.New(); err != nil {
			return nil, fmt.Errorf("%s: %w", element, err)
		}
		ec.replace = true
	case errors.Is(err, fs.ErrNotExist):
		if ec.m, err = counters.New(); err != nil {
			return nil, fmt.Errorf("%s: %w", element, err)
		}
		if err := ec.m.Pin(ec.pin); err != nil {
			ec.m.Close()
			return nil, fmt.Errorf("%s: pin the verdict counters: %w", element, err)
		}
		ec.created = true
	default:
		return nil, fmt.Errorf("%s: open the verdict counters %s: %w", element, ec.pin, err)
	}
	return ec, nil
}

// commit pins a replacing map or removes the pin of switched-off counters.
func (ec *elementCounters) commit() error {
	ec.created = false
	switch {
	case ec.drop:
		if err := os.Remove(ec.pin); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	case ec.replace:
		if err := os.Remove(ec.pin); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return ec.m.Pin(ec.pin)
	}
	return nil
}

// abort removes the pin this apply created and closes the map.
func (ec *elementCounters) abort() {
	if ec.created {
		os.Remove(ec.pin)
		ec.created = false
		pruneEmpty(ec.dir, ec.root)
	}
	ec.close()
}

func (ec *elementCounters) close() {
	if ec.m != nil {
		ec.m.Close()
		ec.m = nil
	}
}
