# agentd — run `make help` for the targets.
SHELL := /bin/bash
# The go in PATH, else the one a Go tarball installs (/usr/local/go).
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# Recipes reach that same Go: its bin directory leads their PATH, for lint's
# gofmt and for tests/kube and tests/flanneld, whose scripts run ${GO:-go}.
GOROOT_DIR := $(shell cd / && GOTOOLCHAIN=local $(GO) env GOROOT 2>/dev/null)
export PATH := $(if $(GOROOT_DIR),$(GOROOT_DIR)/bin:)$(PATH)
# The Go release go.mod asks for; make deps checks it first.
GO_MIN := $(shell sed -n 's/^go //p' go.mod)
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Debian packages the tests and the demo need (iproute2 for netns, iptables
# for the agent's rules, nftables for the nft tables tests build in place of
# Docker 29's, ping and iperf3 for traffic).
DEB_PACKAGES := iproute2 iptables nftables iputils-ping iperf3 ca-certificates
# What tests/integration adds: a real dockerd and client, a static busybox for
# a registry-free image, the standard CNI plugins, systemd-analyze, and the
# Kubernetes node's container runtime (containerd, runc, nsenter/unshare),
# and mkfs.btrfs for agentd-cni's lock holder on btrfs (internal/cniplugin).
DEB_PACKAGES_INTEGRATION := docker.io busybox-static containernetworking-plugins systemd containerd runc util-linux btrfs-progs
# The standard CNI plugins dist/Dockerfile builds into its image (packages of
# github.com/containernetworking/plugins) and their version, read from the
# Dockerfile, the one place that names them. TestK8sNode builds the same ones
# from the module cache only; make deps-integration downloads them.
CNI_PLUGINS_VERSION := $(shell sed -n 's/^ARG CNI_PLUGINS_VERSION=//p' dist/Dockerfile)
CNI_PLUGINS := $(shell grep -o 'github\.com/containernetworking/plugins/[^@ ]*@' dist/Dockerfile | tr -d @)
# The Kubernetes programs tests/integration runs (the manifest check, and a
# control plane with a kubelet node), built from k8s.io/kubernetes and cached
# outside the repository.
KUBE_VERSION ?= v1.36.3
KUBE_BIN ?= $(HOME)/.cache/agentd/kube/$(KUBE_VERSION)
KUBE_COMPONENTS := kube-apiserver kube-controller-manager kube-scheduler kubelet
# The flanneld that tests/interop runs beside agentd, built from its Go module
# and cached outside the repository.
FLANNELD_VERSION ?= v0.28.10
FLANNELD_BIN ?= $(HOME)/.cache/agentd/flanneld/$(FLANNELD_VERSION)
# A count, not a duration: with Go 1.26 a -fuzztime duration can end in a
# spurious "context deadline exceeded" failure when the deadline meets a busy
# worker (golang/go#75804, fixed in Go 1.27); a count has no deadline.
FUZZTIME ?= 10000x
FUZZTIME_LONG ?= 2m
# The staticcheck make lint runs, built by go run from the module proxy,
# outside go.mod. The first run builds it (≈ 20 s) and checks every package
# (≈ 50 s on 2 CPUs); later runs take seconds, from its cache.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# How long make soak runs (a Go duration).
SOAK ?= 30m
# The backend make soak runs: vxlan or udp (with SOAK_FAULTS=1 host-gw too).
SOAK_BACKEND ?= vxlan
# SOAK_FAULTS=1: make soak injects faults one at a time instead of churning hosts.
SOAK_FAULTS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the Debian packages and Go modules the tests need (root).
	@have=$$(cd / && GOTOOLCHAIN=local $(GO) env GOVERSION 2>/dev/null | sed 's/^go//'); \
	if [ -z "$$have" ] || [ "$$(printf '%s\n%s\n' "$(GO_MIN)" "$$have" | sort -V | head -1)" != "$(GO_MIN)" ]; then \
		echo "agentd needs Go $(GO_MIN) or later (go.mod); found: $${have:-no Go at $(GO)}." >&2; \
		echo "Install it from https://go.dev/dl/ into /usr/local/go, or put its go in PATH, or run make GO=/path/to/go." >&2; \
		exit 1; \
	fi
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(GO) mod download

.PHONY: deps-integration
deps-integration: ## Also install the Debian packages and Go modules tests/integration needs (dockerd, CNI plugins…).
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(DEB_PACKAGES_INTEGRATION)"
	@# go install -n loads the plugins' packages, so it downloads every module
	@# they need, and builds nothing (-n prints the commands, on stderr). go
	@# mod download of the plugins' module alone leaves out its dependencies.
	@echo "downloading the CNI plugins $(CNI_PLUGINS_VERSION)"; \
	out=$$(cd / && CGO_ENABLED=0 $(GO) install -n $(addsuffix @$(CNI_PLUGINS_VERSION),$(CNI_PLUGINS)) 2>&1) || { echo "$$out" >&2; exit 1; }

.PHONY: kube-bin
kube-bin: ## Build kube-apiserver, -controller-manager, -scheduler and kubelet (KUBE_VERSION) into KUBE_BIN, ~/.cache/agentd/kube/<version> (cached; the first time ≈18 min on 2 CPUs).
	@tests/kube/build-kube.sh $(KUBE_VERSION) $(KUBE_BIN) $(KUBE_COMPONENTS)

.PHONY: flanneld-bin
flanneld-bin: ## Build flanneld (FLANNELD_VERSION) into FLANNELD_BIN, ~/.cache/agentd/flanneld/<version> (cached; the first time about a minute).
	@# gcc and libc6-dev: flanneld's udp backend is C.
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="gcc libc6-dev"
	@tests/flanneld/build-flanneld.sh $(FLANNELD_VERSION) $(FLANNELD_BIN)

.PHONY: build
build: ## Build every program of run/ (agentd, agentctl, the CNI plugin, the test etcd…) into bin/ (static: CGO_ENABLED=0).
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./run/...

.PHONY: lint
lint: ## gofmt, go vet and staticcheck.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags soak ./tests/soak/
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags soak ./tests/soak/

# Every Fuzz target, as "package:Name" pairs. .ci/fuzz checks them against
# each package's test binary (-test.list): a Fuzz function missing from this
# list, or a name in it that is no fuzz test, fails make fuzz and fuzz-short.
# A name is all up to the "(" (FUZZ_OPEN: make counts the parentheses of
# $(shell)), so a letter outside A-Z, a-z and 0-9 does not cut it short.
FUZZ_OPEN := (
FUZZ_TARGETS = $(shell grep -rl --include='*_test.go' '^func Fuzz' . | while read f; do \
	d=$$(dirname $$f); grep -o '^func Fuzz[^$(FUZZ_OPEN)]*' $$f | sed "s|func |$$d:|"; done)
# How many fuzz targets make fuzz-short runs at once (.ci/fuzz). A go test
# -fuzz call per target spent 40-45% of its time building and linking the
# package's test binary again (2026-12-07, 2 CPUs); .ci/fuzz builds it once
# per package, and runs two targets at a time.
FUZZ_JOBS ?= 2

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME_LONG, one at a time.
	@GO=$(GO) FUZZ_DIR=$(BIN)/fuzz FUZZ_MINIMIZETIME=5s .ci/fuzz $(FUZZTIME_LONG) 1 $(FUZZ_TARGETS)

.PHONY: fuzz-short
fuzz-short: ## Run each fuzz target for FUZZTIME inputs, FUZZ_JOBS at once (part of make test).
	@GO=$(GO) FUZZ_DIR=$(BIN)/fuzz .ci/fuzz $(FUZZTIME) $(FUZZ_JOBS) $(FUZZ_TARGETS)

.PHONY: test
test: deps deps-integration kube-bin flanneld-bin lint build ## Everything CI runs: lint, unit, root, etcd, end-to-end, dist/ integration (dockerd, CNI, Kubernetes) and flanneld interoperability tests, then short fuzzing.
	@mkdir -p $(BIN)
	AGENTD_E2E_K8S=1 AGENTD_KUBE_BIN=$(KUBE_BIN) AGENTD_FLANNELD_BIN=$(FLANNELD_BIN)/flanneld AGENTD_E2E_RESULTS=$(CURDIR)/$(BIN)/e2e-results.txt $(GO) test -race -count=1 -timeout 30m -p 2 ./...
	@cat $(BIN)/e2e-results.txt
	$(MAKE) --no-print-directory fuzz-short

.PHONY: e2e
e2e: deps build ## Only the multi-host end-to-end and fault tests (tests/e2e, tests/cluster).
	$(GO) test -race -count=1 -timeout 30m -v ./tests/e2e/ ./tests/cluster/

.PHONY: interop
interop: deps flanneld-bin build ## Only the mixed clusters of agentd and the real flanneld (tests/interop), each backend.
	AGENTD_FLANNELD_BIN=$(FLANNELD_BIN)/flanneld $(GO) test -race -count=1 -timeout 20m -v ./tests/interop/

.PHONY: integration
integration: deps-integration kube-bin build ## Only the tests of dist/ with the real programs (systemd-analyze, dockerd, CNI plugins, kube-apiserver, a kubelet node).
	AGENTD_E2E_K8S=1 AGENTD_KUBE_BIN=$(KUBE_BIN) $(GO) test -race -count=1 -timeout 20m -v ./tests/integration/

.PHONY: e2e-k8s
e2e-k8s: deps-integration kube-bin build ## Only TestK8sNode (also in make test): a real control plane and kubelet+containerd node run the DaemonSet; its pods reach an agentd host.
	AGENTD_E2E_K8S=1 AGENTD_KUBE_BIN=$(KUBE_BIN) $(GO) test -race -count=1 -timeout 20m -v -run '^TestK8sNode$$' ./tests/integration/

.PHONY: demo
demo: deps build ## A 3-host cluster in namespaces: vxlan, host-gw, then udp; containers ping across.
	$(BIN)/demo -bin $(CURDIR)/$(BIN)

.PHONY: bench
# The first step, the micro-benchmarks, takes about a minute; the address
# benchmarks of ./backend/ and ./backend/udp/ are left to the last step:
# their set-up (20 000 and 50 000 addresses added one by one, twice each)
# takes about 10 minutes. BenchmarkLogVolume is not run: its 14 windows of
# 30 s take 7 minutes; run it alone (README, Tests and benchmarks).
bench: deps flanneld-bin build ## Benchmarks: micro-benchmarks, throughput, RTT (also flanneld's udp backend, for comparison) and join latency on the namespace cluster, scale and idle etcd requests (results/scale), then the address benchmarks (≈ 10 min).
	$(GO) test -run '^$$' -bench . -skip 'AcquireStorm|ServiceAddrs|SegmentReader' -benchmem -timeout 30m ./subnet/ ./backend/...
	AGENTD_FLANNELD_BIN=$(FLANNELD_BIN)/flanneld $(GO) test -run '^$$' -bench Throughput -benchtime 3x -timeout 20m ./tests/bench/
	$(GO) test -run '^$$' -bench Join -benchtime 20x -timeout 20m ./tests/bench/
	$(GO) test -run '^$$' -bench 'Scale|ServiceAddrs' -benchtime 1x -timeout 30m ./tests/scale/
	@echo "scale report: results/scale/results.md"
	$(GO) test -run '^$$' -bench 'ServiceAddrs|SegmentReader' -benchmem -timeout 30m ./backend/ ./backend/udp/

.PHONY: soak
soak: deps build ## Soak, not in CI: hosts join and leave at random for SOAK (default 30m) on SOAK_BACKEND (vxlan or udp) with pings running; reports loss, RSS, goroutines, etcd revisions/min. SOAK_FAULTS=1: etcd, agent and datapath faults one at a time instead (host-gw too); per fault: count, time to converge, pings lost.
	$(GO) test -tags soak -count=1 -timeout 0 -v -run '^TestSoak$$' ./tests/soak/ -args -soak.duration=$(SOAK) -soak.backend=$(SOAK_BACKEND)$(if $(SOAK_FAULTS), -soak.faults)

.PHONY: clean
clean: ## Remove build output.
	rm -rf $(BIN)
