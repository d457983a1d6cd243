package kernelvm

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// defaultLibDirs are searched for shared libraries after DT_RUNPATH, in the
// order of Debian's dynamic loader.
var defaultLibDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// usrMerged maps a host path into the merged-/usr layout of the initramfs
// (/lib64/x -> usr/lib64/x, /bin/x -> usr/bin/x), so that the archive is the
// same on hosts with and without merged /usr. The result has no leading
// slash.
func usrMerged(p string) string {
	p = filepath.Clean("/" + p)
	for _, d := range []string{"/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/"} {
		if strings.HasPrefix(p, d) {
			return "usr" + p
		}
	}
	return strings.TrimPrefix(p, "/")
}

// errNotDynamic is returned for a program that needs no shared objects.
var errNotDynamic = errors.New("not a dynamically linked ELF program")

// sharedObjects returns the dynamic loader and every shared library that the
// ELF program prog needs, transitively: a map from the path each must have in
// the initramfs (usr-merged, no leading slash) to the host file that holds
// it. A statically linked program yields errNotDynamic.
func sharedObjects(prog string, libDirs []string) (map[string]string, error) {
	out := map[string]string{}
	f, err := elf.Open(prog)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prog, err)
	}
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: read PT_INTERP: %w", prog, err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	f.Close()
	if interp == "" {
		return nil, fmt.Errorf("%s: %w", prog, errNotDynamic)
	}
	out[usrMerged(interp)] = interp

	seen := map[string]bool{}
	queue := []string{prog}
	for len(queue) > 0 {
		obj := queue[0]
		queue = queue[1:]
		needed, runpath, err := dynamicInfo(obj)
		if err != nil {
			return nil, err
		}
		dirs := append(append([]string{}, runpath...), libDirs...)
		for _, lib := range needed {
			if seen[lib] {
				continue
			}
			seen[lib] = true
			host := ""
			for _, d := range dirs {
				d = strings.ReplaceAll(d, "$ORIGIN", filepath.Dir(obj))
				cand := filepath.Join(d, lib)
				if st, err := os.Stat(cand); err == nil && st.Mode().IsRegular() && isELF64(cand) {
					host = cand
					break
				}
			}
			if host == "" {
				return nil, fmt.Errorf("%s needs %s, which is in none of %s", obj, lib, strings.Join(dirs, ", "))
			}
			out[usrMerged(host)] = host
			queue = append(queue, host)
		}
	}
	return out, nil
}

// dynamicInfo returns the DT_NEEDED and DT_RUNPATH/DT_RPATH entries of an
// ELF object.
func dynamicInfo(obj string) (needed, runpath []string, err error) {
	f, err := elf.Open(obj)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", obj, err)
	}
	defer f.Close()
	needed, err = f.ImportedLibraries()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", obj, err)
	}
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, err := f.DynString(tag)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", obj, err)
		}
		for _, v := range vals {
			runpath = append(runpath, filepath.SplitList(v)...)
		}
	}
	return needed, runpath, nil
}

// isELF64 reports whether file is a 64-bit x86 ELF object (the loader skips
// libraries of other architectures found on the search path).
func isELF64(file string) bool {
	f, err := elf.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Class == elf.ELFCLASS64 && f.Machine == elf.EM_X86_64
}
