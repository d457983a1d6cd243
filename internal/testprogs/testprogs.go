package testprogs

import (
	"embed"
	"errors"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/internal/objset"
)

//go:embed *.o
var objects embed.FS

// ErrUnknown is returned for a name that is not a test program.
var ErrUnknown = errors.New("unknown test program")

func set() *objset.Set { return objset.New(objects, "test program", ErrUnknown) }

// Names returns the names of all test programs (object file names without
// ".o"), sorted.
func Names() []string { return set().Names() }

// Object returns a copy of the compiled ELF object of the test program
// name (without ".o"), e.g. "xdp_pass".
func Object(name string) ([]byte, error) { return set().Object(name) }

// Spec parses the object of the test program name into a collection spec,
// ready for loading.
func Spec(name string) (*ebpf.CollectionSpec, error) { return set().Spec(name) }
