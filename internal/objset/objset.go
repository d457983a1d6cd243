package objset

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
)

// Set is the *.o files at the top of an embed.FS.
type Set struct {
	fs      embed.FS
	kind    string // "sample program": how messages name a member
	unknown error  // wrapped for names that are not in the set
}

// New returns the set of objects in fsys; kind names a member in messages
// and unknown is the sentinel wrapped for names not in the set.
func New(fsys embed.FS, kind string, unknown error) *Set {
	return &Set{fs: fsys, kind: kind, unknown: unknown}
}

// Names returns the names of all objects (file names without ".o"),
// sorted.
func (s *Set) Names() []string {
	entries, err := fs.ReadDir(s.fs, ".")
	if err != nil {
		panic(fmt.Sprintf("objset: reading embedded objects: %v", err)) // cannot happen: embed.FS
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".o") {
			names = append(names, strings.TrimSuffix(e.Name(), ".o"))
		}
	}
	slices.Sort(names)
	return names
}

// Object returns a copy of the object called name (without ".o").
func (s *Set) Object(name string) ([]byte, error) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return nil, s.unknownName(name)
	}
	b, err := s.fs.ReadFile(name + ".o") // a fresh copy
	if err != nil {
		return nil, s.unknownName(name)
	}
	return b, nil
}

func (s *Set) unknownName(name string) error {
	return fmt.Errorf("%s %q: %w (known: %s)", s.kind, name, s.unknown, strings.Join(s.Names(), ", "))
}

// Spec parses the object called name into a collection spec.
func (s *Set) Spec(name string) (*ebpf.CollectionSpec, error) {
	b, err := s.Object(name)
	if err != nil {
		return nil, err
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", s.kind, name, err)
	}
	return spec, nil
}
