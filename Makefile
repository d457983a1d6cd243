# kfm — see README.md. Every target that needs a package or tool depends on
# `deps`, which installs only what is missing.

SHELL        := /bin/bash
GO           ?= go
CLANG        ?= clang-19
TOOLS_BIN    ?= $(HOME)/.cache/kfm/bin
export PATH  := $(TOOLS_BIN):$(PATH)

# Every C source of a BPF object: kfm's own programs under bpf/ and the
# sample marketplace programs. Each X.c compiles to the committed X.o beside it.
BPF_SRCS     := $(sort $(shell find bpf examples internal -name '*.c'))
BPF_OBJS     := $(BPF_SRCS:.c=.o)
BPF_CFLAGS   := -O2 -g -target bpf -Wall -Werror \
                -I/usr/include/x86_64-linux-gnu -Iinclude \
                -fdebug-prefix-map=$(CURDIR)=. -fno-ident

GO_TEST_FLAGS ?= -count=1 -timeout 25m

.PHONY: all build image bpf bpf-check deps generate lint test test-host test-kernels bench bench-scale fuzz soak demo clean

all: build

# -buildvcs=auto: kfm version reports the commit it was built from (a
# user-level GOFLAGS=-buildvcs=false would hide it; outside git it is a no-op).
# bin/kfm is the launcher (cmd/kfm/launcher: version and --help in a few
# milliseconds), which execs bin/kfm-core (cmd/kfm without the agent and
# catalog commands: half the size) or bin/kfm-full (the complete CLI) for
# every other command: install the three side by side (README, "Start-up").
build:
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -trimpath -ldflags '-s -w -extldflags=-static' -o bin/kfm-full ./cmd/kfm
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -trimpath -tags kfm_core -ldflags '-s -w -extldflags=-static' -o bin/kfm-core ./cmd/kfm
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -trimpath -ldflags '-s -w -extldflags=-static' -o bin/kfm ./cmd/kfm/launcher

# The container image, without a Docker engine: bin/image is an OCI layout
# (same sources, same digest); IMAGE=host/repo:tag pushes it and writes its
# digest into manifests/kubernetes/kustomization.yaml. Its /usr/bin/kfm is
# the complete CLI: the agent it runs starts once, the launcher saves nothing.
image: build
	$(GO) run ./internal/ociimage/mkimage -binary bin/kfm-full -layout bin/image \
	  -version "$$(git describe --tags --always --dirty 2>/dev/null || echo dev)" \
	  $(if $(wildcard /etc/ssl/certs/ca-certificates.crt),-ca-bundle /etc/ssl/certs/ca-certificates.crt) \
	  $(if $(IMAGE),-push $(IMAGE) -kustomization manifests/kubernetes/kustomization.yaml)

bpf: $(BPF_OBJS)

%.o: %.c $(wildcard include/*.h)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The committed objects must be exactly what `make bpf` produces.
bpf-check:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; bad=0; \
	for src in $(BPF_SRCS); do \
		obj=$${src%.c}.o; \
		$(CLANG) $(BPF_CFLAGS) -c $$src -o "$$tmp/out.o" || exit 1; \
		if ! cmp -s "$$tmp/out.o" "$$obj"; then echo "bpf-check: $$obj differs from what make bpf builds from $$src: run make bpf and commit"; bad=1; fi; \
	done; \
	[ $$bad = 0 ] && echo "bpf-check: $(words $(BPF_OBJS)) objects reproduce byte for byte"

deps:
	@scripts/deps.sh

# The Kubernetes API's deepcopy code and CRDs, from the Go types; a test in
# chain/agent/kubernetes/api/v1alpha1 fails when the committed ones differ.
KUBE_API     := ./chain/agent/kubernetes/api/...
generate: deps
	controller-gen object paths=$(KUBE_API)
	controller-gen crd paths=$(KUBE_API) output:crd:artifacts:config=manifests/kubernetes/crds

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags kfm_core ./cmd/kfm
	staticcheck ./...
	staticcheck -tags kfm_core ./cmd/kfm

# The quick loop: unit and privileged host tests, no kernel VMs.
test-host: deps
	$(GO) test $(GO_TEST_FLAGS) ./...

# Kernel VMs (5.10, 6.1, 6.12 by default; KERNELS="6.12" to pick, KFM_VM_SHELL=1
# for a shell in the VM). Suites: internal/kernelvm/suites.go. Flags, e.g.
# KERNEL_TESTS_FLAGS="-v -suites bpf/probe": go run ./internal/kernelvm/cmd/kernel-tests -h
KERNEL_TESTS_FLAGS ?=
test-kernels: deps
	$(GO) run ./internal/kernelvm/cmd/kernel-tests $(KERNEL_TESTS_FLAGS)

# Everything CI runs. Privileged tests may not skip here, nor tests that
# drive external tools (the oras and cosign CLIs, installed by deps).
test: export KFM_REQUIRE_PRIVILEGED = 1
test: export KFM_REQUIRE_TOOLS = 1
test: deps lint bpf-check test-host test-kernels

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Fuzzing campaign: every Fuzz target (found in the *_test.go files), one at
# a time for FUZZTIME each, at nice 19 with FUZZ_PARALLEL workers; prints a
# table of target -> executions. New crashers land in PKG/testdata/fuzz/FuzzX/
# (commit them with the fix: plain go test, so make test, replays every seed).
# FUZZ_MATCH='registry|verify' picks targets by "dir/FuzzName". scripts/fuzz.sh.
FUZZTIME      ?= 30s
FUZZ_PARALLEL ?= 1
fuzz:
	FUZZTIME=$(FUZZTIME) FUZZ_PARALLEL=$(FUZZ_PARALLEL) GO=$(GO) scripts/fuzz.sh

# kfm at the scale of a big host (issue 11), as root: a namespace with
# BENCH_SCALE_N veth pairs (default 300), five signed programs in a local
# registry, one chain each; prints wall time, CPU and peak RSS of cold apply,
# no-op apply --locked, status, changing every chain and teardown; then
# install+remove of a signed program from a cold cache, kfm vs oras pull +
# cosign verify + xdp-loader load/unload by hand, median of 10.
BENCH_SCALE_N ?= 300
bench-scale: build deps
	@[ "$$(id -u)" = 0 ] || { echo "make bench-scale: run it as root" >&2; exit 1; }
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./internal/scalebench
	BENCH_SCALE_N=$(BENCH_SCALE_N) bin/scalebench -kfm bin/kfm
	bin/scalebench -kfm bin/kfm -byhand -rounds 10

# The model-based random test (cmd/kfm TestModel, as root) for
# SOAK_STEPS steps (default 10000) with the kfm binary make build makes;
# SOAK_SEED=N replays a seed (printed at the start and on failure).
SOAK_STEPS ?= 10000
SOAK_SEED  ?= 0
soak: build
	@[ "$$(id -u)" = 0 ] || { echo "make soak: run it as root" >&2; exit 1; }
	cd cmd/kfm && KFM_BIN=$(CURDIR)/bin/kfm KFM_MODEL_STEPS=$(SOAK_STEPS) KFM_MODEL_SEED=$(SOAK_SEED) \
	  KFM_REQUIRE_PRIVILEGED=1 $(GO) test -count=1 -timeout 0 -v -run 'TestModel$$' .

# A short, real tour (as root): registry, signed programs, a chain on a veth
# pair in network namespaces, reordered under traffic, restored from kfm.lock.
# Needs nothing but Go: the BPF objects are committed.
demo:
	@[ "$$(id -u)" = 0 ] || { echo "make demo: run it as root (kfm attaches programs to network interfaces)" >&2; exit 1; }
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/kfm ./internal/demo
	bin/demo -kfm bin/kfm

clean:
	rm -rf bin
