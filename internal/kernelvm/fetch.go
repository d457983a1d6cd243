package kernelvm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kernel is a Debian kernel unpacked in the cache, ready to boot.
type Kernel struct {
	Spec KernelSpec `json:"-"`
	// Release is the kernel's `uname -r`, e.g. "6.12.117+deb13-cloud-amd64".
	Release string `json:"release"`
	// Package and Version name the Debian package it came from.
	Package string `json:"package"`
	Version string `json:"version"`
	Mirror  string `json:"mirror"`
	// Fetched is when it was downloaded.
	Fetched time.Time `json:"fetched"`

	dir string // cache directory of this kernel
}

// Vmlinuz is the path of the kernel image (a bzImage qemu boots directly).
func (k *Kernel) Vmlinuz() string { return filepath.Join(k.dir, "vmlinuz") }

// Vmlinux is the path of the uncompressed kernel, extracted from Vmlinuz for
// a faster PVH boot; it may be missing.
func (k *Kernel) Vmlinux() string { return filepath.Join(k.dir, "vmlinux") }

// BootImage is the image qemu boots: Vmlinux when it was extracted, else
// Vmlinuz.
func (k *Kernel) BootImage() string {
	if fileExists(k.Vmlinux()) {
		return k.Vmlinux()
	}
	return k.Vmlinuz()
}

// ensureVmlinux extracts Vmlinux unless it is there; a failure only costs
// boot time, so it is logged, not returned.
func (f *Fetcher) ensureVmlinux(ctx context.Context, k *Kernel) {
	if fileExists(k.Vmlinux()) {
		return
	}
	if err := extractVmlinux(ctx, k.Vmlinuz(), k.Vmlinux()); err != nil {
		f.logf("kernel %s: booting the bzImage (slower): %v", k.Spec.Name, err)
	}
}

// ModuleDir is the kernel's module directory (modules.dep, kernel/...).
func (k *Kernel) ModuleDir() string {
	return filepath.Join(k.dir, "root", "lib", "modules", k.Release)
}

// Short is the upstream version of the kernel, e.g. "6.12.117", taken from
// the package version (the release of 5.10 and 6.1 kernels, "5.10.0-32",
// hides it).
func (k *Kernel) Short() string {
	if k.Version != "" {
		v, _, _ := strings.Cut(k.Version, "-")
		if _, after, ok := strings.Cut(v, ":"); ok {
			v = after
		}
		return v
	}
	v, _, _ := strings.Cut(k.Release, "-")
	v, _, _ = strings.Cut(v, "+")
	return v
}

// DebianKeyring verifies the Release files of every suite the tests use.
// debian-archive-keyring (2023.3+deb12u2 on Debian 12) holds the archive and
// release keys of bullseye, bookworm and trixie.
const DebianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// metaPackage is the Debian metapackage whose dependency names the current
// cloud kernel of a suite.
const metaPackage = "linux-image-cloud-amd64"

// Fetcher downloads Debian kernels with apt-get into a cache directory,
// using a private apt configuration: the host's sources, state and cache are
// never read or written.
type Fetcher struct {
	// Dir is the cache, e.g. ~/.cache/kfm/kernels.
	Dir string
	// Keyring verifies the suites' Release files; DebianKeyring by default.
	Keyring string
	// Refresh re-resolves and downloads even when a kernel is cached.
	Refresh bool
	// Log receives progress messages; nil discards them.
	Log io.Writer
}

func (f *Fetcher) logf(format string, args ...any) {
	if f.Log != nil {
		fmt.Fprintf(f.Log, format+"\n", args...)
	}
}

// Fetch returns the kernel of spec, downloading it unless it is cached. A
// cached kernel is used without any network access.
func (f *Fetcher) Fetch(ctx context.Context, spec KernelSpec) (*Kernel, error) {
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	// Serialise concurrent runs on the same cache.
	lock, err := os.OpenFile(filepath.Join(f.Dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock kernel cache: %w", err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN) //nolint:errcheck // released on close anyway

	final := filepath.Join(f.Dir, spec.Suite)
	if !f.Refresh {
		if k, err := loadKernel(final, spec); err == nil {
			f.ensureVmlinux(ctx, k)
			return k, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			f.logf("kernel cache %s is unusable (%v); fetching again", final, err)
		}
	}

	start := time.Now()
	tmp, err := os.MkdirTemp(f.Dir, "."+spec.Suite+"-")
	if err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)

	var k *Kernel
	var errs []error
	mirrors := spec.Mirrors
	if m := os.Getenv("KFM_DEBIAN_MIRROR"); m != "" {
		mirrors = []string{m}
	}
	for _, mirror := range mirrors {
		k, err = f.download(ctx, spec, mirror, tmp)
		if err == nil {
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", mirror, err))
		if ctx.Err() != nil {
			break
		}
	}
	if k == nil {
		return nil, fmt.Errorf("fetch kernel %s (%s): %w", spec.Name, spec.Suite, errors.Join(errs...))
	}
	// Only the kernel tree stays; apt's state and the .deb go.
	for _, junk := range []string{"apt", "deb"} {
		if err := os.RemoveAll(filepath.Join(tmp, junk)); err != nil {
			return nil, err
		}
	}
	k.Fetched = time.Now().UTC()
	meta, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "kernel.json"), append(meta, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(final); err != nil {
		return nil, fmt.Errorf("replace cached kernel: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	k.dir = final
	f.ensureVmlinux(ctx, k)
	f.logf("kernel %s: fetched %s %s from %s in %.1fs", spec.Name, k.Package, k.Version, k.Mirror, time.Since(start).Seconds())
	return k, nil
}

// loadKernel reads a cached kernel and checks that its files are there.
func loadKernel(dir string, spec KernelSpec) (*Kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kernel.json"))
	if err != nil {
		return nil, err
	}
	k := &Kernel{Spec: spec, dir: dir}
	if err := json.Unmarshal(b, k); err != nil {
		return nil, fmt.Errorf("%s/kernel.json: %w", dir, err)
	}
	if k.Release == "" {
		return nil, fmt.Errorf("%s/kernel.json: no release", dir)
	}
	for _, p := range []string{k.Vmlinuz(), filepath.Join(k.ModuleDir(), "modules.dep")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("cached kernel incomplete: %w", err)
		}
	}
	return k, nil
}

// aptConfig is a complete apt configuration that points every directory
// into root, so apt-get reads no file of the host's apt setup. It is passed
// through APT_CONFIG, which apt reads before anything else; Dir::Etc::main
// and Dir::Etc::parts then keep /etc/apt/apt.conf{,.d} out.
func aptConfig(root string) string {
	var b strings.Builder
	for _, kv := range [][2]string{
		{"Dir::Etc", root + "/etc"},
		{"Dir::Etc::main", "/dev/null"},
		{"Dir::Etc::parts", root + "/etc/apt.conf.d"},
		{"Dir::Etc::sourcelist", root + "/etc/sources.list"},
		{"Dir::Etc::sourceparts", root + "/etc/sources.list.d"},
		{"Dir::Etc::preferences", root + "/etc/preferences"},
		{"Dir::Etc::preferencesparts", root + "/etc/preferences.d"},
		{"Dir::Etc::trusted", root + "/etc/trusted.gpg"},
		{"Dir::Etc::trustedparts", root + "/etc/trusted.gpg.d"},
		{"Dir::State", root + "/state"},
		{"Dir::State::status", root + "/status"},
		{"Dir::Cache", root + "/cache"},
		{"Dir::Log", root + "/log"},
		{"APT::Architecture", "amd64"},
		{"Acquire::Languages", "none"},
		{"Acquire::Retries", "3"},
		{"Debug::NoLocking", "true"},
		// The private directories belong to the invoking user; apt's
		// download sandbox (user _apt) could not write into them.
		{"APT::Sandbox::User", "root"},
	} {
		fmt.Fprintf(&b, "%s %q;\n", kv[0], kv[1])
	}
	b.WriteString("APT::Architectures { \"amd64\"; };\n")
	return b.String()
}

// download resolves the suite's current cloud kernel through the
// metapackage, downloads the -unsigned package and unpacks it into dir.
func (f *Fetcher) download(ctx context.Context, spec KernelSpec, mirror, dir string) (*Kernel, error) {
	keyring := f.Keyring
	if keyring == "" {
		keyring = DebianKeyring
	}
	if _, err := os.Stat(keyring); err != nil {
		return nil, fmt.Errorf("archive keyring: %w (install debian-archive-keyring: make deps)", err)
	}
	apt := filepath.Join(dir, "apt")
	for _, d := range []string{"etc/apt.conf.d", "etc/sources.list.d", "etc/preferences.d", "etc/trusted.gpg.d", "state/lists/partial", "cache/archives/partial", "log"} {
		if err := os.MkdirAll(filepath.Join(apt, d), 0o755); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		"apt.conf":         aptConfig(apt),
		"status":           "",
		"etc/sources.list": fmt.Sprintf("deb [signed-by=%s] %s %s main\n", keyring, mirror, spec.Suite),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(apt, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	env := append(os.Environ(), "APT_CONFIG="+filepath.Join(apt, "apt.conf"), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	run := func(dir string, name string, args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env, cmd.Dir = env, dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return out, nil
	}

	f.logf("kernel %s: apt-get update (%s %s)", spec.Name, mirror, spec.Suite)
	if _, err := run(apt, "apt-get", "update", "-q"); err != nil {
		if msg := err.Error(); strings.Contains(msg, "NO_PUBKEY") || strings.Contains(msg, "is not signed") || strings.Contains(msg, "EXPKEYSIG") {
			return nil, fmt.Errorf("%w\n%s does not verify %s: upgrade debian-archive-keyring (2023.3+deb12u2 or later holds the bullseye, bookworm and trixie keys): make deps", err, keyring, spec.Suite)
		}
		return nil, err
	}
	meta, err := run(apt, "apt-cache", "show", "--no-all-versions", metaPackage)
	if err != nil {
		return nil, err
	}
	image, err := kernelPackage(meta)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", metaPackage, spec.Suite, err)
	}
	pkg := image + "-unsigned"
	info, err := run(apt, "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return nil, fmt.Errorf("%s names %s, but %w", metaPackage, pkg, err)
	}
	version := controlField(info, "Version")

	debDir := filepath.Join(dir, "deb")
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return nil, err
	}
	f.logf("kernel %s: apt-get download %s (%s)", spec.Name, pkg, version)
	// apt verifies the .deb against the hash in the signed Packages index.
	if _, err := run(debDir, "apt-get", "download", "-q", pkg+"="+version); err != nil {
		return nil, err
	}
	debs, _ := filepath.Glob(filepath.Join(debDir, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	release, err := unpackKernel(ctx, debs[0], dir)
	if err != nil {
		return nil, err
	}
	return &Kernel{Spec: spec, Release: release, Package: pkg, Version: version, Mirror: mirror}, nil
}

// kernelPackage returns the versioned image package that the metapackage's
// control record (`apt-cache show` output) depends on, e.g.
// "linux-image-6.12.117+deb13-cloud-amd64".
func kernelPackage(control []byte) (string, error) {
	deps := controlField(control, "Depends")
	if deps == "" {
		return "", errors.New("no Depends field")
	}
	for _, alt := range strings.Split(deps, ",") {
		for _, d := range strings.Split(alt, "|") {
			name, _, _ := strings.Cut(strings.TrimSpace(d), " ")
			name, _, _ = strings.Cut(name, ":")
			if strings.HasPrefix(name, "linux-image-") && strings.HasSuffix(name, "-cloud-amd64") && len(name) > len("linux-image--cloud-amd64") && debianName(name) {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("no linux-image-*-cloud-amd64 dependency in %q", deps)
}

// debianName reports whether s is a Debian package name (Debian policy
// 5.6.1: lower-case letters, digits, '+', '-' and '.'). A name from the
// archive's control data that is not one is refused before it reaches a
// command line or a URL (found by FuzzKernelPackage: "linux-image-(-cloud-amd64").
func debianName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return s != ""
}

// controlField returns a field of the first record of Debian control data.
func controlField(control []byte, field string) string {
	sc := bufio.NewScanner(bytes.NewReader(control))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var val strings.Builder
	in := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if in || val.Len() > 0 {
				break
			}
			continue
		}
		if in {
			if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
				val.WriteString(" " + strings.TrimSpace(line))
				continue
			}
			break
		}
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			val.WriteString(strings.TrimSpace(v))
			in = true
		}
	}
	return val.String()
}

// unpackKernel extracts the kernel image and modules of a linux-image .deb
// into dir (vmlinuz and root/lib/modules/<release>), and runs depmod there:
// the package ships no modules.dep (its postinst makes it).
func unpackKernel(ctx context.Context, deb, dir string) (string, error) {
	x := filepath.Join(dir, "x")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, x).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, out)
	}
	defer os.RemoveAll(x)
	images, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return "", fmt.Errorf("%s: want one boot/vmlinuz-*, found %d", deb, len(images))
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	var modSrc string
	for _, d := range []string{"lib/modules", "usr/lib/modules"} {
		if st, err := os.Stat(filepath.Join(x, d, release)); err == nil && st.IsDir() {
			modSrc = filepath.Join(x, d, release)
		}
	}
	if modSrc == "" {
		return "", fmt.Errorf("%s: no modules directory for %s", deb, release)
	}
	if err := os.Rename(images[0], filepath.Join(dir, "vmlinuz")); err != nil {
		return "", err
	}
	if cfg := filepath.Join(x, "boot", "config-"+release); fileExists(cfg) {
		if err := os.Rename(cfg, filepath.Join(dir, "config")); err != nil {
			return "", err
		}
	}
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "lib", "modules"), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(modSrc, filepath.Join(root, "lib", "modules", release)); err != nil {
		return "", err
	}
	// depmod looks under <base>/lib/modules or, built for merged /usr
	// (kmod >= 31 on Debian 13), under <base>/usr/lib/modules.
	if err := os.MkdirAll(filepath.Join(root, "usr", "lib"), 0o755); err != nil {
		return "", err
	}
	if err := os.Symlink("../../lib/modules", filepath.Join(root, "usr", "lib", "modules")); err != nil {
		return "", err
	}
	depmod, err := lookTool("depmod")
	if err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, depmod, "-b", root, release).CombinedOutput(); err != nil {
		return "", fmt.Errorf("depmod -b %s %s: %w: %s", root, release, err, out)
	}
	if !fileExists(filepath.Join(root, "lib", "modules", release, "modules.dep")) {
		return "", fmt.Errorf("depmod -b %s %s wrote no modules.dep", root, release)
	}
	return release, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// lookTool finds a program on PATH or in the sbin directories, which are
// not on a normal user's PATH.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in /usr/sbin (make deps installs it)", name)
}
