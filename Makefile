# meshrelay's build. `make help` lists the targets.
#
# The two commands a new machine needs are `make demo` and `make test`; every
# tool they use is built by the targets below from modules pinned in hack/.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
GOOS      := $(shell $(GO) env GOOS)
GOARCH    := $(shell $(GO) env GOARCH)
ROOT      := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BIN       := $(ROOT)/bin
TOOLS     := $(BIN)/tools

VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)

# The Kubernetes version of the local clusters follows k8s.io/api in go.mod:
# v0.37.2 means Kubernetes 1.37.2.
K8S_API_VERSION := $(shell $(GO) list -m -f '{{.Version}}' k8s.io/api)
K8S_VERSION     := $(patsubst v0.%,1.%,$(K8S_API_VERSION))
# KUBEBUILDER_ASSETS, when set, names a folder that already holds the
# control-plane binaries; otherwise they are built into bin/k8s.
ASSETS := $(if $(KUBEBUILDER_ASSETS),$(KUBEBUILDER_ASSETS),$(BIN)/k8s/$(K8S_VERSION)-$(GOOS)-$(GOARCH))
CONTROL_PLANE := etcd kube-apiserver kube-controller-manager kubectl
# cert-manager's controller and CRDs for the bring-your-own-PKI tests, of the
# release hack/certmanager/go.mod pins; CERT_MANAGER_ASSETS, when set, names a
# folder that holds them (cert-manager-controller, crds/) or is to.
CERT_MANAGER_VERSION := $(shell cd $(ROOT)/hack/certmanager && $(GO) list -m -f '{{.Version}}' github.com/cert-manager/cert-manager)
CERT_MANAGER_ASSETS  ?= $(BIN)/cert-manager/$(CERT_MANAGER_VERSION)-$(GOOS)-$(GOARCH)

FUZZTIME   ?= 30s
FUZZMINIMIZETIME ?= 100x
BENCHCOUNT ?= 5
AGENTS     ?= 10000
BOOTSTRAPS ?= 2000
LOADGEN_PHASES ?= bootstrap,steady,scale,reconnect,failover,renewal
TEST_FLAGS ?=
# make soak: how long the long rotation soak runs, and the go test timeout
# around it (the local clusters start and stop besides).
SOAK_DURATION ?= 30m
SOAK_TIMEOUT  ?= 2h
CONTROLLER_GEN := $(TOOLS)/controller-gen
STATICCHECK    := $(TOOLS)/staticcheck
BUF            := $(TOOLS)/buf
PROTOC_GEN_GO  := $(TOOLS)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(TOOLS)/protoc-gen-go-grpc
# promtool checks and unit-tests the monitoring component's alert rules
# (e2e/alerts_test.go finds it through $PROMTOOL).
PROMTOOL       := $(TOOLS)/promtool
# helm renders and installs charts/meshrelay (hack/chartdiff and
# e2e/helm_test.go find it through $HELM).
HELM           := $(TOOLS)/helm
# setup-envtest downloads the control-plane binaries where it can
# (hack/envtest-assets.sh; hack/envtestassets tests it through $SETUP_ENVTEST).
SETUP_ENVTEST  := $(TOOLS)/setup-envtest

##@ Main

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ {printf "  %-20s %s\n", $$1, $$2} /^##@/ {printf "\n%s\n", substr($$0, 5)}' $(MAKEFILE_LIST)

.PHONY: demo
demo: envtest-assets ## Run the demo: three local clusters, install, register, check, a denial, injection, a rotation.
	KUBEBUILDER_ASSETS=$(ASSETS) $(GO) run ./hack/demo $(DEMO_FLAGS)

.PHONY: test
test: envtest-assets cert-manager docker-build-check $(PROMTOOL) $(BUF) $(HELM) $(SETUP_ENVTEST) ## Run every test: unit, on local clusters, end to end.
	@# -count=1: the e2e tests build the binaries they run, which go test's cache does not see.
	KUBEBUILDER_ASSETS=$(ASSETS) CERT_MANAGER_ASSETS=$(CERT_MANAGER_ASSETS) PROMTOOL=$(PROMTOOL) BUF=$(BUF) HELM=$(HELM) SETUP_ENVTEST=$(SETUP_ENVTEST) $(GO) test -count=1 -timeout 40m $(TEST_FLAGS) ./...

.PHONY: soak
soak: envtest-assets ## Run the long rotation soak (SOAK_DURATION=30m): local clusters, every relay certificate rotating within minutes, a prober's handshakes; print its counts.
	@# -v prints the counts the soak logs as it ends; -count=1: it builds the binaries it runs.
	SOAK=1 SOAK_DURATION=$(SOAK_DURATION) KUBEBUILDER_ASSETS=$(ASSETS) $(GO) test -count=1 -v -timeout $(SOAK_TIMEOUT) -run '^TestRotationSoakLong$$' ./e2e/

##@ Development

.PHONY: build
build: ## Build the four binaries into bin/, and bin/kubectl-relay (relayctl as a kubectl plugin).
	hack/build-binaries.sh $(BIN) $(VERSION) $(COMMIT)

.PHONY: test-unit
test-unit: ## Run the tests that need no local cluster (go test -short).
	$(GO) test -short $(TEST_FLAGS) ./...

.PHONY: bench
bench: envtest-assets build ## Run the benchmarks beside their stdlib baselines (BENCHCOUNT=5), then the relay load generator (relay-server's CPU per bootstrap beside a bare TLS-and-sign floor, memory at AGENTS=10000, reconnect, failover and renewal storms), then what relay-webhook adds to a relay secret's create at the API server, beside a floor webhook and none (hack/admissionbench).
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) ./...
	KUBEBUILDER_ASSETS=$(ASSETS) $(GO) run ./hack/loadgen --server-binary $(BIN)/relay-server --agents $(AGENTS) --bootstraps $(BOOTSTRAPS) --phases $(LOADGEN_PHASES)
	KUBEBUILDER_ASSETS=$(ASSETS) $(GO) run ./hack/admissionbench --bin-dir $(BIN)

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s; 5000x counts executions), minimizing new inputs for FUZZMINIMIZETIME (default 100x).
	FUZZTIME=$(FUZZTIME) FUZZMINIMIZETIME=$(FUZZMINIMIZETIME) hack/fuzz.sh

.PHONY: lint
lint: $(STATICCHECK) ## Run gofmt, go vet and the pinned staticcheck.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [[ -n "$$out" ]]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

.PHONY: generate
generate: $(CONTROLLER_GEN) $(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC) ## Regenerate deepcopy code, CRDs and the relay API's gRPC code.
	$(CONTROLLER_GEN) object paths=./pkg/apis/...
	$(CONTROLLER_GEN) crd paths=./pkg/apis/... output:crd:dir=manifests/crds
	@# The chart carries copies of the CRDs and the monitoring component (helm reads
	@# only files inside a chart); hack/chartdiff fails when they drift.
	cp manifests/crds/meshrelay.dev_*.yaml charts/meshrelay/crds/
	cp manifests/components/monitoring/{services,servicemonitors,prometheusrule}.yaml charts/meshrelay/files/
	$(BUF) generate --template buf.gen.yaml
	@# cert-manager's Certificate and Issuer CRDs, of the version whose API types go.mod
	@# pins, for the tests that apply Certificates to local clusters.
	mkdir -p hack/crds/cert-manager
	for crd in certificates issuers; do \
		cp "$$($(GO) list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)/deploy/crds/cert-manager.io_$$crd.yaml" hack/crds/cert-manager/; \
		chmod 0644 hack/crds/cert-manager/cert-manager.io_$$crd.yaml; done

.PHONY: verify
verify: $(BUF) $(HELM) envtest-assets ## Check that tidy and generation change nothing, versions agree and the relay API stays compatible with the last release.
	$(GO) mod tidy
	cd hack/tools && $(GO) mod tidy
	cd hack/controlplane && $(GO) mod tidy
	cd hack/certmanager && $(GO) mod tidy
	$(MAKE) --no-print-directory generate
	@pinned=$$(cd hack/controlplane && $(GO) list -m -f '{{.Version}}' k8s.io/kubernetes); \
	if [[ "$$pinned" != "v$(K8S_VERSION)" ]]; then \
		echo "hack/controlplane pins k8s.io/kubernetes $$pinned but go.mod has k8s.io/api $(K8S_API_VERSION): set it to v$(K8S_VERSION)"; exit 1; fi
	@changed=$$(git status --porcelain -- go.mod go.sum hack manifests charts pkg/apis relay/api); \
	if [[ -n "$$changed" ]]; then echo "make verify changed files; commit the result of tidy and generate:"; echo "$$changed"; git diff --stat; exit 1; fi
	@echo "verify: tidy, generated code and CRDs are up to date; control-plane pin matches Kubernetes $(K8S_VERSION)"
	BUF=$(BUF) hack/api-breaking.sh
	@# The chart and the kustomize overlays render the same objects.
	KUBEBUILDER_ASSETS=$(ASSETS) HELM=$(HELM) $(GO) run ./hack/chartdiff

.PHONY: docker-build-check
docker-build-check: ## Run the Dockerfile's build command (static, CGO_ENABLED=0) without a container engine.
	@grep -q 'RUN hack/build-binaries.sh' Dockerfile || { echo "Dockerfile no longer runs hack/build-binaries.sh: update this check"; exit 1; }
	@out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	hack/build-binaries.sh "$$out" $(VERSION) $(COMMIT); \
	for b in relay-server relay-agent relay-webhook relayctl; do \
		$(GO) version -m "$$out/$$b" | grep -q 'CGO_ENABLED=0' || { echo "$$b is not a static CGO_ENABLED=0 build"; exit 1; }; \
		"$$out/$$b" --help >/dev/null || { echo "$$b --help failed"; exit 1; }; \
	done; \
	echo "docker-build-check: the Dockerfile's build command makes four static binaries that run"

##@ Releases

# DIST is where make release writes; RELEASE_DIGEST (sha256:...), when set,
# pins every image by digest beside the tag; RELEASE_PLATFORMS (os/arch ...)
# narrows the platforms kubectl-relay is built for (default: those of
# plugins/relay.yaml). docs/releases.md tells the rest.
DIST ?= $(ROOT)/dist

.PHONY: release
release: envtest-assets $(BUF) $(HELM) ## Write release VERSION=vX.Y.Z into dist/: manifests with images pinned (RELEASE_DIGEST=sha256:... adds the digest), the chart, kubectl-relay archives and krew manifest, SHA256SUMS.
	DIST=$(DIST) KUBECTL=$(ASSETS)/kubectl BUF=$(BUF) HELM=$(HELM) RELEASE_DIGEST=$(RELEASE_DIGEST) hack/release.sh $(VERSION)

##@ Local clusters

.PHONY: envtest-assets
envtest-assets: ## Provide etcd, kube-apiserver, kube-controller-manager and kubectl for the local clusters: downloaded by setup-envtest where it can, else built from source.
ifdef KUBEBUILDER_ASSETS
	@for b in $(CONTROL_PLANE); do [[ -x "$(ASSETS)/$$b" ]] || { echo "KUBEBUILDER_ASSETS=$(ASSETS) has no executable $$b: unset it to build the binaries, or add $$b"; exit 1; }; done
	@echo "using control-plane binaries from KUBEBUILDER_ASSETS=$(ASSETS)"
else
	@# Not a prerequisite: hack/envtest-assets.sh builds setup-envtest only when a binary is missing.
	SETUP_ENVTEST=$(SETUP_ENVTEST) hack/envtest-assets.sh $(ASSETS) $(K8S_VERSION)
endif

.PHONY: print-assets
print-assets: ## Print the folder of control-plane binaries (for KUBEBUILDER_ASSETS).
	@echo $(ASSETS)

.PHONY: cert-manager
cert-manager: ## Provide cert-manager's controller and CRDs (hack/certmanager's pin) for the bring-your-own-PKI tests.
	hack/build-certmanager.sh $(CERT_MANAGER_ASSETS) $(CERT_MANAGER_VERSION)

$(CONTROLLER_GEN): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen

$(STATICCHECK): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $@ honnef.co/go/tools/cmd/staticcheck

$(BUF): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $@ github.com/bufbuild/buf/cmd/buf

$(PROTOC_GEN_GO): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $@ google.golang.org/protobuf/cmd/protoc-gen-go

$(PROTOC_GEN_GO_GRPC): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $@ google.golang.org/grpc/cmd/protoc-gen-go-grpc

$(PROMTOOL): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $@ github.com/prometheus/prometheus/cmd/promtool

$(HELM): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $@ helm.sh/helm/v4/cmd/helm

$(SETUP_ENVTEST): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $@ sigs.k8s.io/controller-runtime/tools/setup-envtest

.PHONY: clean
clean: ## Remove bin/ except the cached control-plane and cert-manager binaries.
	find $(BIN) -mindepth 1 -maxdepth 1 ! -name k8s ! -name cert-manager -exec rm -rf {} +
