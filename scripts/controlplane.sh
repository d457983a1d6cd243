#!/usr/bin/env bash
# Usage: scripts/controlplane.sh [etcd|kube-apiserver]
#
# Builds the Kubernetes control plane that kfm's control-plane tests run
# (controller-runtime's envtest: kube-apiserver + etcd) from the Go module
# proxy, through the wrapper modules in internal/controlplane/build, and caches
# the binaries by version:
#
#   $KFM_CONTROLPLANE_DIR (default ~/.cache/kfm/controlplane/v1.37.2)/{kube-apiserver,etcd}
#
# Tests find them there (internal/testenv.ControlPlane) or through
# KUBEBUILDER_ASSETS (set it to $KFM_CONTROLPLANE_DIR when that is set). A
# binary that is already there is not rebuilt. A cold
# kube-apiserver build is 15-20 minutes of CPU on 2 cores and about 2.4 GB of
# RAM; it runs at the lowest CPU priority.
set -euo pipefail

K8S_VERSION=v1.37.2
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${KFM_CONTROLPLANE_DIR:-$HOME/.cache/kfm/controlplane/$K8S_VERSION}
only=${1:-} # etcd or kube-apiserver: build only that one
mkdir -p "$dir"

# build NAME WRAPPER PACKAGE [LDFLAGS]: go build PACKAGE inside the wrapper
# module into $dir/NAME, atomically (a killed build leaves no half binary),
# once (a second run waits for the first and then finds the binary).
build() {
	local name=$1 wrapper=$2 pkg=$3 ldflags=${4:-} start tmp
	if [ -n "$only" ] && [ "$only" != "$name" ]; then return; fi
	if [ -x "$dir/$name" ]; then return; fi
	exec {lock}>"$dir/.$name.lock"
	flock "$lock"
	if [ -x "$dir/$name" ]; then exec {lock}>&-; return; fi
	echo "controlplane: building $name ($pkg) into $dir; this takes a while the first time"
	start=$(date +%s)
	tmp=$(mktemp "$dir/.$name.XXXXXX")
	(cd "$root/internal/controlplane/build/$wrapper" &&
		GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 19 \
			go build -p 2 -trimpath -ldflags "-s -w $ldflags" -o "$tmp" "$pkg") || { rm -f "$tmp"; exit 1; }
	mv "$tmp" "$dir/$name"
	exec {lock}>&-
	echo "controlplane: $name built in $(($(date +%s) - start)) s, $(du -h "$dir/$name" | cut -f1)"
}

# etcd's version is a constant in its api module; kube-apiserver's comes from
# the linker or it reports v0.0.0-master.
build etcd etcd go.etcd.io/etcd/server/v3
build kube-apiserver kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver \
	"-X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
