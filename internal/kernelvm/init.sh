#!/usr/bin/busybox sh
# /init of the kfm kernel-VM initramfs (internal/kernelvm/init.sh, embedded
# by the runner). It runs under busybox sh, which prefers its own applets to
# anything on PATH; the test binaries run under bash with the real tools
# (iproute2, xdp-tools, bpftool) first on PATH.
#
# Everything the host needs to know is framed by "KFM-VM: " marker lines on
# the serial console; results.go parses them.

export PATH=/usr/sbin:/usr/bin:/usr/libexec/busybox
export HOME=/root TERM=linux

mark() { echo "KFM-VM: $*"; }
fail() { mark "error $*"; }

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts || fail "mount /dev/pts"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "mount /dev/shm"
# ip netns add bind-mounts namespaces under /run/netns (/var/run links here).
mount -t tmpfs -o mode=0755 tmpfs /run || fail "mount /run"
mkdir -p /run/netns /run/lock
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount /tmp"
mount -t bpf -o mode=0700 bpf /sys/fs/bpf || fail "mount bpffs on /sys/fs/bpf"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null

# Before Linux 5.11, BPF memory is charged to RLIMIT_MEMLOCK (64 KiB for init).
ulimit -l unlimited || fail "ulimit -l unlimited"
hostname kfm-vm
/usr/bin/ip link set lo up || fail "ip link set lo up"

KFM_RELEASE=$(uname -r)
KFM_SHELL=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	kfm.shell=1) KFM_SHELL=1 ;;
	esac
done

# run_suite NAME BINARY DIR [TEST FLAGS...]: run one test binary in DIR
# (the package's files: testdata/ and friends) under bash, with a clean
# environment plus the suite's KEY=VALUE settings in $KFM_SUITE_ENV (set
# by kernel.sh before each call; values have no white space), and frame
# its output.
run_suite() {
	name=$1 bin=$2 dir=$3
	shift 3
	mark begin "$name"
	cd "$dir" || fail "cd $dir"
	env -i PATH=/usr/sbin:/usr/bin:/usr/libexec/busybox HOME=/root TMPDIR=/tmp TERM=dumb \
		KFM_REQUIRE_EXT=1 KFM_REQUIRE_PRIVILEGED=1 KFM_IN_VM="$KFM_RELEASE" $KFM_SUITE_ENV \
		/usr/bin/bash -c 'exec "$@"' kfm-suite "$bin" -test.v -test.paniconexit0 "$@" </dev/null 2>&1
	rc=$?
	cd /
	# A final line without newline must not swallow the marker.
	echo
	mark end "$name" "exit=$rc"
}

# /kfm/kernel.sh is written per kernel: KFM_MODULES (in load order) and the
# suites() function calling run_suite.
. /kfm/kernel.sh || fail "/kfm/kernel.sh"
for m in $KFM_MODULES; do
	insmod "/lib/modules/$KFM_RELEASE/$m" || fail "insmod $m"
done

mark ready "$KFM_RELEASE"
if [ "$KFM_SHELL" = 1 ]; then
	echo "kfm: shell on $KFM_RELEASE; test binaries in /kfm/tests, packages in /src."
	echo "kfm: exit the shell to power off (or press Ctrl-A X to kill qemu)."
	cd /
	setsid cttyhack env PS1='kfm-vm:\w# ' KFM_REQUIRE_EXT=1 KFM_REQUIRE_PRIVILEGED=1 KFM_IN_VM="$KFM_RELEASE" /usr/bin/bash --norc -i
else
	# Keep the console for test output; the kernel log follows at the end.
	echo 1 >/proc/sys/kernel/printk
	echo "kfm: running suites" >/dev/kmsg
	suites
	mark dmesg-begin
	dmesg
	mark dmesg-end
fi
mark done
poweroff -f
echo o >/proc/sysrq-trigger
