# vnode's build, test and run entry points. Every target works on a fresh
# clone: the control plane the tests need is built into a cache outside the
# repository (VNODE_CACHE_DIR, default ~/.cache/vnode) on first use.

GO        ?= go
BIN       := $(CURDIR)/bin
# Integration tests start real control planes and, on a fresh machine, the
# first one waits for the control-plane build.
TEST_TIMEOUT ?= 40m
BENCH     ?= .
BENCHTIME ?= 1x
# vnode's version, stamped into every binary (--version, the Node's kubelet
# version); the Dockerfile takes it as a build argument.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS   := -X github.com/vnode-project/vnode/internal/version.release=$(VERSION)
# The binaries the image ships; vnode-local is the developer's runner.
SHIPPED   := $(filter-out vnode-local internal,$(notdir $(wildcard cmd/*)))

.PHONY: all build test unit-test lint bench run cluster controlplane clean clean-cache

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# controlplane builds etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager and kubectl into the cache (a no-op when cached).
controlplane: build
	$(BIN)/vnode-local build

# test runs every test, unit and integration, with the race detector. One
# package at a time: integration packages each start a control plane, and
# two cores do not run several well at once.
test: controlplane lint
	$(GO) test -race -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./...

lint:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@# A shipped binary links no test harness: neither the testing package
	@# nor anything under integration/.
	@for c in $(SHIPPED); do \
	  bad="$$($(GO) list -deps ./cmd/$$c | grep -E '^testing$$|/vnode/integration(/|$$)')"; \
	  if [ -n "$$bad" ]; then echo "cmd/$$c links test code: $$bad"; exit 1; fi; \
	done

bench: controlplane
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem -timeout 60m ./...

# run brings the whole local system up on the embedded default: the control
# plane, the ECI emulator and a virtual node running a sample Deployment.
run: controlplane
	$(BIN)/vnode-local up

cluster: controlplane
	$(BIN)/vnode-local cluster

clean:
	rm -rf $(BIN)

clean-cache:
	rm -rf "$${VNODE_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/vnode}"
