package programs

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

// ErrUnknown is returned for a name that is not a sample program.
var ErrUnknown = errors.New("unknown sample program")

// Names returns the names of all sample programs (object file names without
// ".o"), sorted.
func Names() []string {
	entries, err := fs.ReadDir(objects, ".")
	if err != nil {
		panic(fmt.Sprintf("programs: reading embedded objects: %v", err)) // cannot happen: embed.FS
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".o"))
	}
	slices.Sort(names)
	return names
}

// Object returns a copy of the compiled ELF object of the sample program
// name (without ".o"), e.g. "xdp_ratelimit".
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
	return fmt.Errorf("sample program %q: %w (known: %s)", name, ErrUnknown, strings.Join(Names(), ", "))
}

// Spec parses the object of the sample program name into a collection spec,
// ready for setting parameters (spec.Variables) and loading.
func Spec(name string) (*ebpf.CollectionSpec, error) {
	b, err := Object(name)
	if err != nil {
		return nil, err
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("sample program %q: %w", name, err)
	}
	return spec, nil
}
