// Package pinmeta stores small JSON documents in the BPF filesystem, where
// kfm's backends keep the description of the chains they run (names,
// priorities, proceed-on verdicts, keys) next to the pinned kernel objects, so
// that any later kfm process can read them back without other state; Prune
// removes the directories a backend leaves empty when it unpins a chain.
//
// bpffs holds only BPF objects, so a document is the value of a one-entry
// BPF_MAP_TYPE_ARRAY map named "kfm_meta": a little-endian uint32 length
// followed by the JSON text. Write replaces a document atomically: it pins a
// new map under a temporary name and renames it over the old pin.
package pinmeta

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/internal/bpfinfo"
)

// MaxSize bounds a document (1 MiB).
const MaxSize = 1 << 20

// MapName is the kernel name of the maps holding documents.
const MapName = "kfm_meta"

// Write stores v as JSON in a map pinned at path, replacing what was there.
func Write(path string, v any) error {
	doc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(doc) > MaxSize {
		return fmt.Errorf("%s: document of %d bytes exceeds %d", path, len(doc), MaxSize)
	}
	val := encode(doc)
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       MapName,
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  uint32(len(val)),
		MaxEntries: 1,
	})
	if err != nil {
		return fmt.Errorf("create metadata map for %s: %w", path, err)
	}
	defer m.Close()
	if err := m.Put(uint32(0), val); err != nil {
		return fmt.Errorf("write metadata map for %s: %w", path, err)
	}
	tmp := path + "_new" // bpffs refuses dots in names
	os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		return fmt.Errorf("pin metadata %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace metadata %s: %w", path, err)
	}
	return nil
}

// Read loads the JSON document pinned at path into v. A missing pin is an
// error wrapping fs.ErrNotExist.
func Read(path string, v any) error {
	// (bpfinfo: cilium/ebpf's LoadPinnedMap also reads /proc/self/fdinfo,
	// and kfm status reads a document per chain and element.)
	m, err := bpfinfo.OpenPinnedMap(path)
	if err != nil {
		return err
	}
	defer m.Close()
	if m.Type != ebpf.Array || m.KeySize != 4 || m.ValueSize < 4 {
		return fmt.Errorf("%s: not a kfm metadata map (%s, value size %d)", path, m.Type, m.ValueSize)
	}
	val := make([]byte, m.ValueSize)
	if err := m.Lookup(make([]byte, 4), val); err != nil {
		return fmt.Errorf("read metadata %s: %w", path, err)
	}
	return decode(path, val, v)
}

// encode makes the map value of a document: its length, little-endian, the
// JSON, and zeros up to a multiple of 64 bytes.
func encode(doc []byte) []byte {
	val := make([]byte, (4+len(doc)+63)&^63)
	binary.LittleEndian.PutUint32(val, uint32(len(doc)))
	copy(val[4:], doc)
	return val
}

// decode reads the document in the map value val (pinned at path) into v.
func decode(path string, val []byte, v any) error {
	if len(val) < 4 {
		return fmt.Errorf("%s: not a kfm metadata map (value size %d)", path, len(val))
	}
	n := binary.LittleEndian.Uint32(val)
	if uint64(n) > uint64(len(val)-4) {
		return fmt.Errorf("%s: corrupt metadata (length %d in a %d-byte value)", path, n, len(val))
	}
	if err := json.Unmarshal(val[4:4+n], v); err != nil {
		return fmt.Errorf("%s: corrupt metadata: %w", path, err)
	}
	return nil
}

// Remove unpins the document at path; a missing pin is not an error.
func Remove(path string) error {
	err := os.Remove(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Prune removes dir and then its parents, up to and including top, as long
// as they are empty (or already gone): what a backend calls after unpinning
// a chain, so that no empty directories stay in the bpffs.
func Prune(dir, top string) {
	for d := filepath.Clean(dir); d == top || strings.HasPrefix(d, top+string(filepath.Separator)); d = filepath.Dir(d) {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			return
		}
	}
}
