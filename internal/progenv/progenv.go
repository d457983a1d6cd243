package progenv

import (
	"fmt"
	"io"
	"os"
)

// Failure is what Fatal panics with.
type Failure struct{ Msg string }

// Env collects what a program creates, to remove it in reverse order.
type Env struct {
	dir      string
	warn     io.Writer
	name     string
	cleanups []func()
}

// New returns an Env whose temporary directories are made under dir and
// whose warnings (Errorf) go to stderr prefixed with name.
func New(name, dir string) *Env { return &Env{dir: dir, name: name, warn: os.Stderr} }

// Helper does nothing (it is there for testing.TB).
func (e *Env) Helper() {}

// Fatal panics with a Failure.
func (e *Env) Fatal(args ...any) { panic(Failure{fmt.Sprint(args...)}) }

// Fatalf panics with a Failure.
func (e *Env) Fatalf(format string, args ...any) { panic(Failure{fmt.Sprintf(format, args...)}) }

// Errorf prints a warning and goes on.
func (e *Env) Errorf(format string, args ...any) {
	fmt.Fprintf(e.warn, e.name+": warning: "+format+"\n", args...)
}

// Cleanup registers f to run at Close.
func (e *Env) Cleanup(f func()) { e.cleanups = append(e.cleanups, f) }

// TempDir makes a new directory under the Env's directory.
func (e *Env) TempDir() string {
	d, err := os.MkdirTemp(e.dir, "tmp")
	if err != nil {
		e.Fatal(err)
	}
	return d
}

// Close runs the cleanups, last registered first.
func (e *Env) Close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
}

// Dir is the directory the Env makes temporary directories in.
func (e *Env) Dir() string { return e.dir }
