package kernelvm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// ErrModuleNotFound is returned when a requested kernel module is neither a
// loadable module nor built into the kernel.
var ErrModuleNotFound = errors.New("kernel module not found")

// moduleIndex is what depmod knows about a kernel's modules: modules.dep
// (each module with its dependencies) and modules.builtin.
type moduleIndex struct {
	deps    map[string][]string // module path (relative to the module dir) -> dependency paths
	byName  map[string]string   // module name -> path
	builtin map[string]bool     // names of built-in modules
}

// moduleName turns a module path such as "kernel/net/sched/cls_bpf.ko.xz"
// into the module name "cls_bpf" (dashes become underscores, as the kernel
// does).
func moduleName(p string) string {
	base := path.Base(p)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// parseModuleIndex reads modules.dep and modules.builtin.
func parseModuleIndex(dep, builtin io.Reader) (*moduleIndex, error) {
	ix := &moduleIndex{deps: map[string][]string{}, byName: map[string]string{}, builtin: map[string]bool{}}
	sc := bufio.NewScanner(dep)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(text, ":")
		if !ok || strings.TrimSpace(mod) == "" {
			return nil, fmt.Errorf("modules.dep line %d: want \"module: dependencies\", got %q", line, text)
		}
		mod = strings.TrimSpace(mod)
		ix.deps[mod] = strings.Fields(rest)
		ix.byName[moduleName(mod)] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	if builtin != nil {
		sc = bufio.NewScanner(builtin)
		for sc.Scan() {
			if t := strings.TrimSpace(sc.Text()); t != "" {
				ix.builtin[moduleName(t)] = true
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("modules.builtin: %w", err)
		}
	}
	return ix, nil
}

// LoadOrder returns the module files to insmod, dependencies first, so that
// every module in names gets loaded; and the names that are built into the
// kernel and need no loading. Each file appears once.
func (ix *moduleIndex) LoadOrder(names []string) (order, builtin []string, err error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(mod string, chain []string) error
	visit = func(mod string, chain []string) error {
		switch state[mod] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("modules.dep has a dependency cycle: %s -> %s", strings.Join(chain, " -> "), mod)
		}
		deps, ok := ix.deps[mod]
		if !ok {
			return fmt.Errorf("%w: %s is a dependency of %s but has no modules.dep entry", ErrModuleNotFound, mod, chain[len(chain)-1])
		}
		chain = append(chain, mod)
		state[mod] = visiting
		// modules.dep lists the deepest dependencies last; visiting in
		// reverse keeps the order close to what modprobe does, and the
		// depth-first walk guarantees dependencies come first anyway.
		for i := len(deps) - 1; i >= 0; i-- {
			if err := visit(deps[i], chain); err != nil {
				return err
			}
		}
		state[mod] = done
		order = append(order, mod)
		return nil
	}
	for _, n := range names {
		name := moduleName(n)
		mod, ok := ix.byName[name]
		switch {
		case ok:
			if err := visit(mod, nil); err != nil {
				return nil, nil, err
			}
		case ix.builtin[name]:
			builtin = append(builtin, name)
		default:
			return nil, nil, fmt.Errorf("%w: %s is neither in modules.dep nor in modules.builtin", ErrModuleNotFound, name)
		}
	}
	sort.Strings(builtin)
	return order, builtin, nil
}
