// Package kernelvm runs kfm's privileged tests inside Debian kernels booted
// under qemu: `make test-kernels`.
//
// The development and CI machines refuse BPF_PROG_TYPE_EXT and tracing
// programs (EPERM) in their sandbox, so everything built on freplace (the
// libxdp-compatible dispatcher, xdp-loader interop) is tested in kernel VMs.
// KVM is not usable there, so the VMs run under TCG
// (`qemu-system-x86_64 -accel tcg -cpu max`); one boots in about 3 to 6
// seconds.
//
// # Adding a suite
//
// Append an entry to DefaultSuites in suites.go; nothing else changes:
//
//	{Package: "bpf/dispatcher"},
//	{Package: "bpf/tc", Run: "^TestTCX", Kernels: []string{"6.12"}},
//
// Package is the directory relative to the module root. Run and Skip become
// -test.run and -test.skip, Kernels restricts the suite to kernels by version
// prefix ("5.10", "6.1", "6.12"), Timeout becomes -test.timeout (5m by
// default). Inside the VM the test binary runs as root with -test.v,
// KFM_REQUIRE_EXT=1, KFM_REQUIRE_PRIVILEGED=1 and KFM_IN_VM=<uname -r>, with
// the package's non-Go files (testdata/ and the like) as working directory,
// so testenv.RequireEXT and testenv.RequirePrivileged fail instead of
// skipping. Files outside the package that tests open by relative path go
// into Files ({Package: "chain", Files: []string{"bpf/testdata"}}); objects
// embedded with go:embed need nothing. Kernel modules beyond veth, sch_ingress and cls_bpf go into
// DefaultModules. To iterate on one suite:
//
//	KERNELS=6.12 go run ./internal/kernelvm/cmd/kernel-tests -suites bpf/dispatcher -run TestX -v
//
// and to look around inside a VM (the same initramfs, a bash on the serial
// console; Ctrl-A X quits):
//
//	KERNELS=5.10 KFM_VM_SHELL=1 make test-kernels
//
// # What a run does
//
//  1. Kernels (fetch.go). For each Debian suite (bullseye 5.10, bookworm 6.1,
//     trixie 6.12) apt-get runs with a private configuration passed through
//     APT_CONFIG: its own sources.list, state, cache and status under a
//     temporary directory, nothing read from /etc/apt. The current kernel
//     is found through the linux-image-cloud-amd64 metapackage's dependency
//     (linux-image-<abi>-cloud-amd64), whose -unsigned twin is downloaded, so
//     an ABI bump in Debian needs no change here. Release files are verified
//     with /usr/share/keyrings/debian-archive-keyring.gpg
//     (debian-archive-keyring >= 2023.3+deb12u2 holds the keys of all three
//     suites; scripts/deps.sh upgrades an older one), the package against the
//     signed index. dpkg-deb unpacks it and depmod writes the modules.dep the
//     package lacks. The uncompressed vmlinux is extracted from the bzImage
//     (vmlinux.go: gzip, xz, zstd or lz4 payload): qemu boots it through its
//     PVH entry point, skipping firmware and self-decompression, about a
//     second faster under TCG (-no-pvh boots the bzImage). The result is
//     cached in ~/.cache/kfm/kernels/<suite> (vmlinuz, vmlinux, lib/modules,
//     kernel.json, about 150 MB each); a cached kernel is used without any
//     network access, -refresh fetches the current one again.
//  2. Test binaries: `CGO_ENABLED=0 go test -c` once per package (static,
//     kernel-independent), overlapping with the kernel downloads.
//  3. Initramfs (initramfs.go, cpio.go), written in Go as newc cpio. A
//     common archive holds init.sh, busybox-static (applets at the end of
//     PATH), bash (also as sh), iproute2's ip and tc, xdp-loader, xdpdump and
//     bpftool with their shared libraries and dynamic loader (found through
//     DT_NEEDED/PT_INTERP, soname links kept as on the host, merged-/usr
//     layout), xdp-tools' BPF objects in /usr/lib/x86_64-linux-gnu/bpf (libxdp
//     loads xdp-dispatcher.o from there), the test binaries in /kfm/tests and
//     their package files in /src/<package>. A small per-kernel archive is
//     appended: the modules (decompressed, dependencies first, built-in ones
//     skipped) and /kfm/kernel.sh with the load order and the suites.
//  4. Boot (qemu.go): -smp 2, 2 GiB, no devices but the serial console,
//     which the runner reads line by line; a hard timeout per VM (3 minutes
//     plus the suites' timeouts). init.sh mounts proc, sysfs, devtmpfs,
//     devpts, tmpfs on /run (with /run/netns; /var/run links there) and
//     /tmp, bpffs on /sys/fs/bpf, cgroup2, debugfs and tracefs; lifts
//     RLIMIT_MEMLOCK (BPF memory is charged to it before 5.11); brings up lo;
//     loads the modules; then runs each test binary under bash with a clean
//     environment, PATH=/usr/sbin:/usr/bin:/usr/libexec/busybox, and powers
//     off. Kernel messages are kept off the console while tests run and
//     dumped afterwards.
//  5. Results (results.go, report.go): init frames everything with
//     "KFM-VM: " marker lines (ready, begin/end with exit status, dmesg,
//     done); the -test.v output between them is parsed into tests. Each
//     kernel gets one line such as
//     "kernel 6.12.117: 8 passed, 0 failed, 0 skipped in 9.1s (boot 5.1s)"
//     (counts include subtests); skipped tests are listed with their reason;
//     a failed kernel is followed by the full output of each failing test (or
//     of the whole suite when it died without a failing test, or the boot
//     log) and the kernel log written while the suites ran. A non-zero
//     exit, a missing end marker, a suite that printed no result, an init
//     error, a VM that did not finish: each fails the run.
//
// Two VMs run at a time by default (-parallel 2). A VM keeps about one host
// core busy while it boots (one vCPU does the work), so a second VM uses the
// other core. Measured on the 2-core development machine, shared with other
// work (load 6-13), in alternating runs of the three kernels: two at a time
// took 22-29 s in seven of nine runs (median 26 s; two load spikes gave 63
// and 85 s), one after the other 22-51 s (median 43 s over six runs).
//
// # xdp-loader inside the VMs
//
// xdp-loader and libxdp need nothing beyond what init sets up: bpffs mounted
// at /sys/fs/bpf (libxdp pins its dispatcher under /sys/fs/bpf/xdp), and
// xdp-dispatcher.o in /usr/lib/x86_64-linux-gnu/bpf (libxdp's compiled-in
// path; LIBXDP_OBJECT_PATH is not needed). The vmenv suite proves it on
// every kernel by loading two programs through the dispatcher in skb mode.
// `xdp-loader status --version` exits 1 by design.
package kernelvm
