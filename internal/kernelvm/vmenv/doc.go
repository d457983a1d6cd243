// Package vmenv holds no code: its tests check the environment of kfm's
// kernel VMs (internal/kernelvm) from the inside, so that a broken VM image
// fails loudly instead of making other suites fail in confusing ways.
//
// The tests run only inside a kernel VM (KFM_IN_VM set, `make
// test-kernels`) and skip elsewhere. They check the mounts (bpffs on
// /sys/fs/bpf, tmpfs on /run and /tmp, /var/run), the kernel modules, that
// `sh` is bash and `ip` is iproute2, that `ip netns` works, that bpftool
// runs, and that xdp-loader attaches programs through libxdp's freplace
// dispatcher (xdp-dispatcher.o from /usr/lib/x86_64-linux-gnu/bpf).
package vmenv
