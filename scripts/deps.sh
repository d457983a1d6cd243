#!/usr/bin/env bash
# Installs what kfm's build and tests need, and only what is missing.
# Idempotent: a second run installs nothing and takes a second.
set -euo pipefail

APT_PACKAGES=(
	clang-19 llvm-19 libbpf-dev libxdp-dev  # make bpf (libxdp-dev: XDP_RUN_CONFIG header)
	xdp-tools bpftool                  # interop tests, libxdp's dispatcher object
	iproute2                           # netns/veth tests
	qemu-system-x86 busybox-static cpio zstd xz-utils lz4 kmod  # kernel VMs
	debian-archive-keyring             # kernel VMs: verifies the bullseye/bookworm/trixie kernels apt fetches
	tmux                               # kfm top's test drives it in a terminal
	chromium                           # kfm catalog build: the static site is tested in headless Chromium
	prometheus                         # chain/metrics tests: a real Prometheus scrapes kfm's exporter
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel VMs fetch trixie's kernel; its archive keys are in
# debian-archive-keyring 2023.3+deb12u2 and later (Debian 12.11), so an older
# installed keyring is upgraded.
keyring_min=2023.3+deb12u2
keyring_have=$(dpkg-query -W -f='${Version}' debian-archive-keyring 2>/dev/null || true)
if [ -n "$keyring_have" ] && dpkg --compare-versions "$keyring_have" lt "$keyring_min"; then
	echo "deps: upgrading debian-archive-keyring $keyring_have (< $keyring_min lacks the trixie keys)"
	if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --only-upgrade debian-archive-keyring >/dev/null
fi

TOOLS_BIN=${TOOLS_BIN:-$HOME/.cache/kfm/bin}
mkdir -p "$TOOLS_BIN"
# go_tool NAME MODULE@VERSION: install a Go tool into TOOLS_BIN as NAME unless
# the exact version is already there. NAME may differ from the package's own
# binary name (cosign 2 and cosign 3 are both "cosign").
go_tool() {
	local name=$1 pkg=$2 stamp="$TOOLS_BIN/.$1.version" tmp
	if [ -x "$TOOLS_BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then return; fi
	echo "deps: go install $pkg"
	tmp=$(mktemp -d)
	GOBIN="$tmp" CGO_ENABLED=0 go install "$pkg"
	mv "$tmp"/* "$TOOLS_BIN/$name"
	rmdir "$tmp"
	echo "$pkg" >"$stamp"
}
# The tools and the control plane build at once: a cold machine spends much
# of each build downloading modules and linking on one core, which the others'
# compiles fill (each still fails the script when it fails).
pids=()
bg() { "$@" & pids+=($!); }
bg go_tool staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2
bg go_tool oras oras.land/oras/cmd/oras@v1.3.6  # registry interop tests and benchmark
# Signature interop tests (verify, cmd/kfm): both cosign generations, about
# five minutes each to build the first time.
bg go_tool cosign github.com/sigstore/cosign/v3/cmd/cosign@v3.1.3
bg go_tool cosign2 github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5
# Generates the Kubernetes API's deepcopy code and CRDs (make generate) and
# checks that the committed ones are current (chain/agent/kubernetes/api).
bg go_tool controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
# kube-apiserver and etcd for the control-plane tests, built from source and
# cached by version (15-20 minutes of CPU the first time).
bg "$(dirname "$0")/controlplane.sh" etcd
bg "$(dirname "$0")/controlplane.sh" kube-apiserver
failed=0
for pid in "${pids[@]}"; do
	wait "$pid" || failed=1
done
if [ "$failed" = 1 ]; then
	echo "deps: a tool failed to build (see above)" >&2
	exit 1
fi
