package chain

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
)

// kfm.yaml and kfm.lock are YAML, and YAML is slow to parse: at 300 chains
// of 5 programs (a 760 KiB kfm.lock) the parse alone took 40 ms of every
// kfm status and 80 ms of every apply. Most commands read files that an
// earlier command wrote or read, so a Manager keeps the last parse of each
// in its state directory, as JSON, and uses it when the file's content is
// the same:
//
//	<state>/parsed-kfm.lock.json   first line: SHA-256 of the file, shape of the Go types
//	                               then: the parsed value, as JSON
//
// The entry is keyed by the SHA-256 of the file's content (not by its
// modification time: an edit is always seen) and by the shape of the Go
// types it decodes into (field names, types and tags), so that another
// build of kfm never reads an entry it would misread. It holds only
// successful parses; a file that fails to parse fails the same way every
// time. A change that writes kfm.yaml or kfm.lock writes their entries
// too (saveProject). Entries are written atomically and are best effort: a
// state directory that cannot be written just means parsing every time.

// parsedEntryPath is where the parse of the file at path is kept.
func (m *Manager) parsedEntryPath(path string) string {
	return filepath.Join(m.state.dir, "parsed-"+filepath.Base(path)+".json")
}

// loadParsed reads the file at path and returns parse's result for it: from
// the state directory's entry when the file has not changed since the
// entry was written, else by parsing it (and writing the entry).
func loadParsed[T any](m *Manager, path string, parse func(name string, data []byte) (T, error)) (v T, data []byte, err error) {
	data, err = readFileLimited(path, maxFileSize)
	if err != nil {
		return v, nil, err
	}
	sum := sha256.Sum256(data)
	key := hex.EncodeToString(sum[:]) + " " + shapeOf(reflect.TypeFor[T]())
	if m.state.dir == "" {
		v, err = parse(path, data)
		return v, data, err
	}
	entry := m.parsedEntryPath(path)
	if b, err := os.ReadFile(entry); err == nil {
		if head, body, ok := bytes.Cut(b, []byte("\n")); ok && string(head) == key {
			var cached T
			if json.Unmarshal(body, &cached) == nil {
				return cached, data, nil
			}
		}
	}
	if v, err = parse(path, data); err != nil {
		return v, nil, err
	}
	// (Only into a state directory that exists: kfm creates it, with its
	// mode, when it first saves state.)
	if st, err := os.Stat(m.state.dir); err == nil && st.IsDir() {
		if body, err := json.Marshal(v); err == nil {
			_ = writeFileAtomic(entry, append([]byte(key+"\n"), body...), 0o600)
		}
	}
	return v, data, nil
}

// readFileLimited reads the file at path, or its first limit+1 bytes when
// it is longer (the parsers refuse files over limit, naming them).
func readFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}

// loadLock is LoadLock of kfm.lock, through the state directory's entry.
func (m *Manager) loadLock() (*Lock, error) {
	lk, _, err := m.loadLockText()
	return lk, err
}

// loadLockText is loadLock, and the file's bytes.
func (m *Manager) loadLockText() (*Lock, []byte, error) {
	return loadParsed(m, m.lockPath(), func(name string, data []byte) (*Lock, error) {
		return ParseLock(name, bytes.NewReader(data))
	})
}

// parsedManifest is a parsed kfm.yaml as its entry keeps it: with the
// lines of its chains and programs, which are not in its JSON.
type parsedManifest struct {
	Manifest *Manifest `json:"manifest"`
	// Lines holds, per chain, the chain's line and then its programs'.
	Lines [][]int `json:"lines"`
}

// loadManifest is LoadManifest of kfm.yaml, through the state directory's
// entry.
func (m *Manager) loadManifest() (*Manifest, error) {
	pm, data, err := loadParsed(m, m.manifestPath(), func(name string, data []byte) (parsedManifest, error) {
		man, err := parseManifest(name, data)
		if err != nil {
			return parsedManifest{}, err
		}
		pm := parsedManifest{Manifest: man}
		for _, c := range man.Chains {
			lines := []int{c.line}
			for _, p := range c.Programs {
				lines = append(lines, p.line)
			}
			pm.Lines = append(pm.Lines, lines)
		}
		return pm, nil
	})
	if err != nil {
		return nil, err
	}
	man := pm.Manifest
	if man == nil {
		return nil, fmt.Errorf("%s: %w: empty parse", m.manifestPath(), ErrManifest)
	}
	for i := range man.Chains {
		if i < len(pm.Lines) && len(pm.Lines[i]) == len(man.Chains[i].Programs)+1 {
			man.Chains[i].line = pm.Lines[i][0]
			for j := range man.Chains[i].Programs {
				man.Chains[i].Programs[j].line = pm.Lines[i][j+1]
			}
		}
	}
	man.raw = data
	return man, nil
}

// shapeOf describes t's structure: its kind, and for structs every
// field's name, tags and shape; two types of one shape decode the same
// JSON the same way.
func shapeOf(t reflect.Type) string {
	var b strings.Builder
	writeShape(&b, t, map[reflect.Type]bool{})
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}

func writeShape(b *strings.Builder, t reflect.Type, seen map[reflect.Type]bool) {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		fmt.Fprintf(b, "%s(", t.Kind())
		writeShape(b, t.Elem(), seen)
		b.WriteString(")")
	case reflect.Map:
		b.WriteString("map(")
		writeShape(b, t.Key(), seen)
		b.WriteString(",")
		writeShape(b, t.Elem(), seen)
		b.WriteString(")")
	case reflect.Struct:
		if seen[t] {
			fmt.Fprintf(b, "%s{...}", t)
			return
		}
		seen[t] = true
		fmt.Fprintf(b, "%s{", t)
		for i := range t.NumField() {
			f := t.Field(i)
			fmt.Fprintf(b, "%s %q ", f.Name, f.Tag)
			writeShape(b, f.Type, seen)
			b.WriteString(";")
		}
		b.WriteString("}")
	default:
		b.WriteString(t.Kind().String())
	}
}
