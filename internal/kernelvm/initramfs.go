package kernelvm

import (
	"bytes"
	"compress/gzip"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed init.sh
var initScript []byte

// hostTool is a program copied from the host into the initramfs, with the
// shared libraries it needs.
type hostTool struct {
	name     string
	optional bool
}

// hostTools are the programs the VMs offer the tests, next to busybox.
var hostTools = []hostTool{
	{name: "bash"},
	{name: "ip"},         // iproute2: busybox ip knows no netns
	{name: "xdp-loader"}, // xdp-tools, for libxdp interop tests
	{name: "bpftool"},
	{name: "xdpdump", optional: true},
	{name: "tc", optional: true},
	// A real Prometheus for chain/metrics' PromQL checks of dispatcher
	// chains (about 50 MB; the tests fail without it in the VMs).
	{name: "prometheus", optional: true},
}

// xdpObjectDir holds the BPF objects of xdp-tools; libxdp loads its
// xdp-dispatcher.o from here.
const xdpObjectDir = "/usr/lib/x86_64-linux-gnu/bpf"

// TestBinary is a compiled test binary and the package it came from.
type TestBinary struct {
	Package string   // e.g. "bpf/probe"
	Path    string   // host path of the binary
	Files   []string // extra files and directories its tests read (Suite.Files)
}

// CommonImage describes the kernel-independent part of the initramfs.
type CommonImage struct {
	ModuleRoot string       // module root (directory of go.mod)
	Tests      []TestBinary // one per package
	Busybox    string       // host path of a static busybox; found on PATH when empty
}

// WriteCommon writes the kernel-independent initramfs archive: the init
// script, busybox, bash, iproute2, xdp-tools, bpftool and their libraries,
// xdp-tools' BPF objects, the test binaries and their packages' files.
func WriteCommon(w io.Writer, img CommonImage) error {
	c := newCPIOWriter(w)
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/libexec/busybox", "proc", "sys", "dev", "run", "var", "root", "etc", "mnt", "kfm/tests", "src"} {
		c.Dir(d, 0o755)
	}
	c.Dir("tmp", 0o777|fs.ModeSticky)
	for link, target := range map[string]string{"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64", "var/run": "../run", "var/tmp": "../tmp"} {
		c.Symlink(link, target)
	}
	// The kernel opens /dev/console for init before devtmpfs exists.
	c.CharDev("dev/console", 0o600, 5, 1)
	c.CharDev("dev/null", 0o666, 1, 3)
	c.File("init", 0o755, initScript)
	c.File("etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost\n"))
	c.File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/usr/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"))
	c.File("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	c.File("etc/nsswitch.conf", 0o644, []byte("passwd: files\ngroup: files\nhosts: files\n"))
	if err := c.err; err != nil {
		return err
	}

	// busybox: the init shell, plus every applet as a fallback at the end
	// of PATH.
	bb := img.Busybox
	if bb == "" {
		var err error
		if bb, err = lookTool("busybox"); err != nil {
			return err
		}
	}
	if _, err := sharedObjects(bb, defaultLibDirs); !errors.Is(err, errNotDynamic) {
		return fmt.Errorf("%s must be statically linked (install busybox-static: make deps)", bb)
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", bb, err)
	}
	c.CopyFile("usr/bin/busybox", 0o755, bb)
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" && !strings.Contains(applet, "/") {
			c.Symlink("usr/libexec/busybox/"+applet, "/usr/bin/busybox")
		}
	}

	// Host tools with their shared libraries and dynamic loader.
	libs := map[string]string{}
	for _, t := range hostTools {
		p, err := lookTool(t.name)
		if err != nil {
			if t.optional {
				continue
			}
			return fmt.Errorf("initramfs needs %s: %w", t.name, err)
		}
		c.CopyFile("usr/bin/"+t.name, 0o755, p)
		so, err := sharedObjects(p, defaultLibDirs)
		if err != nil && !errors.Is(err, errNotDynamic) {
			return err
		}
		for dst, src := range so {
			libs[dst] = src
		}
	}
	c.Symlink("usr/bin/sh", "bash") // scripts the tests start get bash, not busybox sh
	for _, dst := range sortedKeys(libs) {
		// Keep the host's soname -> real file links: libxdp and xdp-tools
		// read library versions from the real file names in
		// /proc/self/maps (libbpf.so.1 -> libbpf.so.1.1.2).
		real, err := filepath.EvalSymlinks(libs[dst])
		if err != nil {
			return err
		}
		if realDst := usrMerged(real); realDst != dst && path.Dir(realDst) == path.Dir(dst) {
			if !c.Has(realDst) {
				c.CopyFile(realDst, 0o755, real)
			}
			c.Symlink(dst, path.Base(realDst))
			continue
		}
		c.CopyFile(dst, 0o755, real)
	}

	// libxdp's dispatcher and the other xdp-tools objects.
	objs, _ := filepath.Glob(filepath.Join(xdpObjectDir, "*.o"))
	if len(objs) == 0 {
		return fmt.Errorf("no BPF objects in %s (install xdp-tools: make deps)", xdpObjectDir)
	}
	for _, o := range objs {
		c.CopyFile(usrMerged(o), 0o644, o)
	}

	// Test binaries and the files of their packages (testdata and the
	// like), so that tests find them relative to their working directory
	// as under `go test`.
	for _, t := range img.Tests {
		c.CopyFile("kfm/tests/"+binaryName(t.Package), 0o755, t.Path)
		files, err := packageFiles(img.ModuleRoot, t.Package)
		if err != nil {
			return err
		}
		c.Dir("src/"+t.Package, 0o755)
		for _, rel := range files {
			c.CopyFile(path.Join("src", t.Package, rel), 0, filepath.Join(img.ModuleRoot, t.Package, filepath.FromSlash(rel)))
		}
		for _, extra := range t.Files {
			if err := copyTree(c, img.ModuleRoot, extra); err != nil {
				return fmt.Errorf("files of suite %s: %w", t.Package, err)
			}
		}
	}
	return c.Close()
}

// copyTree copies the file or directory rel (relative to moduleRoot) to
// src/<rel>, skipping what is already there.
func copyTree(c *cpioWriter, moduleRoot, rel string) error {
	return filepath.WalkDir(filepath.Join(moduleRoot, filepath.FromSlash(rel)), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(moduleRoot, p)
		dst := path.Join("src", filepath.ToSlash(r))
		switch {
		case c.Has(dst):
			return nil
		case d.IsDir():
			return c.Dir(dst, 0o755)
		case d.Type().IsRegular():
			return c.CopyFile(dst, 0, p)
		}
		return nil
	})
}

// packageFiles lists the files of a package directory that are not Go
// sources and not in other packages: the directory's own files and the
// whole testdata tree, as slash-separated paths relative to the package.
func packageFiles(moduleRoot, pkg string) ([]string, error) {
	dir := filepath.Join(moduleRoot, filepath.FromSlash(pkg))
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && rel != "testdata" && !strings.HasPrefix(rel, "testdata/") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || (strings.HasSuffix(rel, ".go") && !strings.HasPrefix(rel, "testdata/")) {
			return nil
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("files of package %s: %w", pkg, err)
	}
	return files, nil
}

// kernelSuite is one suite as the VM of one kernel runs it.
type kernelSuite struct {
	Suite
	Name string // unique name in results, e.g. "bpf/probe"
}

// testArgs returns the test flags of the suite (after -test.v).
func (s kernelSuite) testArgs() []string {
	t := s.Timeout
	if t == 0 {
		t = DefaultSuiteTimeout
	}
	args := []string{"-test.timeout=" + t.String()}
	if s.Run != "" {
		args = append(args, "-test.run="+s.Run)
	}
	if s.Skip != "" {
		args = append(args, "-test.skip="+s.Skip)
	}
	return args
}

// WriteKernelPart writes the kernel-specific initramfs archive: the modules
// to load (decompressed, with their dependencies) and /kfm/kernel.sh, which
// tells init the load order and the suites to run. The archive goes after
// the common one; the kernel unpacks both.
func WriteKernelPart(ctx context.Context, w io.Writer, k *Kernel, modules []string, suites []kernelSuite) error {
	dir := k.ModuleDir()
	dep, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return err
	}
	defer dep.Close()
	builtin, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return err
	}
	defer builtin.Close()
	ix, err := parseModuleIndex(dep, builtin)
	if err != nil {
		return fmt.Errorf("kernel %s: %w", k.Release, err)
	}
	order, _, err := ix.LoadOrder(modules)
	if err != nil {
		return fmt.Errorf("kernel %s: %w", k.Release, err)
	}

	c := newCPIOWriter(w)
	var names []string
	for _, m := range order {
		data, err := decompressModule(ctx, filepath.Join(dir, filepath.FromSlash(m)))
		if err != nil {
			return err
		}
		name := stripCompression(m)
		names = append(names, name)
		c.File(path.Join("usr/lib/modules", k.Release, name), 0o644, data)
	}

	var sh bytes.Buffer
	fmt.Fprintf(&sh, "# kernel %s (%s %s), written by internal/kernelvm\n", k.Release, k.Package, k.Version)
	fmt.Fprintf(&sh, "KFM_MODULES=%s\n", shellQuote(strings.Join(names, " ")))
	sh.WriteString("suites() {\n")
	for _, s := range suites {
		args := []string{s.Name, "/kfm/tests/" + binaryName(s.Package), "/src/" + s.Package}
		args = append(args, s.testArgs()...)
		fmt.Fprintf(&sh, "\tKFM_SUITE_ENV=%s\n", shellQuote(strings.Join(s.Env, " ")))
		sh.WriteString("\trun_suite")
		for _, a := range args {
			sh.WriteString(" " + shellQuote(a))
		}
		sh.WriteString("\n")
	}
	sh.WriteString("\t:\n}\n")
	c.File("kfm/kernel.sh", 0o644, sh.Bytes())
	return c.Close()
}

// stripCompression removes .xz, .zst or .gz from a module file name.
func stripCompression(p string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if s, ok := strings.CutSuffix(p, ext); ok {
			return s
		}
	}
	return p
}

// decompressModule returns the contents of a kernel module file, decompressed
// (busybox insmod and older kernels take only plain ELF modules).
func decompressModule(ctx context.Context, file string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(file, ".gz"):
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		z, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return io.ReadAll(z)
	case strings.HasSuffix(file, ".xz"):
		tool = "xz"
	case strings.HasSuffix(file, ".zst"):
		tool = "zstd"
	default:
		return os.ReadFile(file)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-dc", file)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w: %s (make deps installs %s)", tool, file, err, strings.TrimSpace(stderr.String()), tool)
	}
	return out, nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-=+:,@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// writeFileAtomic writes data produced by fn to file via a temporary file.
func writeFileAtomic(file string, fn func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-"+filepath.Base(file))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := fn(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}
