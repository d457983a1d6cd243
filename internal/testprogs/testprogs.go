package testprogs

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
)

//go:embed *.o
var objects embed.FS

// ErrUnknown is returned for a name that is not a test program.
var ErrUnknown = errors.New("unknown test program")

// Names returns the names of all test programs (object file names without
// ".o"), sorted.
func Names() []string {
	entries, err := fs.ReadDir(objects, ".")
	if err != nil {
		panic(fmt.Sprintf("testprogs: reading embedded objects: %v", err)) // cannot happen: embed.FS
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".o"))
	}
	slices.Sort(names)
	return names
}

// Object returns a copy of the compiled ELF object of the test program
// name (without ".o"), e.g. "xdp_pass".
func Object(name string) ([]byte, error) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return nil, unknown(name)
	}
	b, err := objects.ReadFile(name + ".o") // a fresh copy
	if err != nil {
		return nil, unknown(name)
	}
	return b, nil
}

func unknown(name string) error {
	return fmt.Errorf("test program %q: %w (known: %s)", name, ErrUnknown, strings.Join(Names(), ", "))
}

// Spec parses the object of the test program name into a collection spec,
// ready for loading.
func Spec(name string) (*ebpf.CollectionSpec, error) {
	b, err := Object(name)
	if err != nil {
		return nil, err
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("test program %q: %w", name, err)
	}
	return spec, nil
}
