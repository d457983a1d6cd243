package programs

import (
	"embed"
	"errors"

	"github.com/cilium/ebpf"

	"github.com/kfm-project/kfm/internal/objset"
)

//go:embed *.o
var objects embed.FS

// ErrUnknown is returned for a name that is not a sample program.
var ErrUnknown = errors.New("unknown sample program")

func set() *objset.Set { return objset.New(objects, "sample program", ErrUnknown) }

// Names returns the names of all sample programs (object file names without
// ".o"), sorted.
func Names() []string { return set().Names() }

// Object returns a copy of the compiled ELF object of the sample program
// name (without ".o"), e.g. "xdp_ratelimit".
func Object(name string) ([]byte, error) { return set().Object(name) }

// Spec parses the object of the sample program name into a collection spec,
// ready for setting parameters (spec.Variables) and loading.
func Spec(name string) (*ebpf.CollectionSpec, error) { return set().Spec(name) }
