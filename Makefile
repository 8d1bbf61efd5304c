# sluice developer tasks. `make test` is all a fresh machine needs: it installs
# the pinned real dependencies (Envoy) first, then runs every test.

GO        ?= go
LINT      := $(GO) tool -modfile=tools/lint/go.mod golangci-lint
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.Version=$(VERSION)
# Tests look here for the real Envoy and Consul binaries `make deps` installs.
export SLUICE_ENVOY ?= $(CURDIR)/.deps/bin/envoy
export SLUICE_CONSUL ?= $(CURDIR)/bin/consul

.PHONY: all build sluice-load test unit e2e lint fmt vet deps run golden bench bench-scale clean fuzz-smoke

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/sluice ./cmd/sluice

## sluice-load: the load generator (tools/sluice-load), a development tool
## that is not part of the sluice binary; make bench-scale builds it itself
sluice-load:
	$(GO) build -trimpath -o $(BIN)/sluice-load ./tools/sluice-load

## deps: install pinned real components for the tests (idempotent, fast when done)
deps:
	tools/install-envoy.sh
	tools/install-consul.sh

## test: vet, then every test (unit, feature and end-to-end) with the race detector
test: deps vet
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) deploy-check

## unit: the fast tests only (no real Envoy or registries)
unit:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...

lint:
	$(LINT) run ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

## golden: regenerate translator golden files after an intended change
golden:
	$(GO) test ./translator/ -run Golden -update

## run: serve with the embedded etcd (zero setup)
run:
	$(GO) run ./cmd/sluice serve

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./translator/ ./snapshot/

## fuzz-smoke: run each fuzz target briefly (see the budgets below); CI runs it. The
## seeds are in the tests; a failing input is saved under testdata/fuzz.
## Go minimizes every new interesting input for up to 60 s by default, in
## the worker that found it: the policy target (whose inputs take
## milliseconds) then spent whole smoke runs minimizing, at 0 execs/s.
## Budgets are execution counts, not durations: a -fuzztime duration races
## Go's fuzz coordinator (go.dev/issue/75804, fixed in Go 1.27), which then
## fails a target with "context deadline exceeded" and no failing input.
## Each count is about 5-10 s on a 2-core machine; FUZZTIME=30s (or 1000000x)
## overrides them all.
FUZZMINIMIZE ?= 1s
FUZZ := $(GO) test -run '^$$' -fuzzminimizetime $(FUZZMINIMIZE)
fuzz-smoke:
	$(FUZZ) -fuzztime $(or $(FUZZTIME),25000x) -fuzz '^FuzzParse$$' ./policy/
	$(FUZZ) -fuzztime $(or $(FUZZTIME),40000x) -fuzz '^FuzzParse$$' ./sources/file/
	$(FUZZ) -fuzztime $(or $(FUZZTIME),10000x) -fuzz '^FuzzParseEntry$$' ./sources/etcd/
	$(FUZZ) -fuzztime $(or $(FUZZTIME),50000x) -fuzz '^FuzzMapEntries$$' ./sources/consul/
	$(FUZZ) -fuzztime $(or $(FUZZTIME),5000x) -fuzz '^FuzzProxyFromNode$$' ./translator/

## bench-scale: 1,000 proxies, and sidecars in 1,000 groups, simulated by bin/sluice-load against sluice and a bare go-control-plane (BENCH_ROWS=classic|groups); writes docs/BENCHMARKS.md
bench-scale:
	tools/bench-scale.sh

clean:
	rm -rf $(BIN)

## --- deployment (deploy/, docs/deploy.md) ---
DOCKER ?= docker
IMAGE  ?= ghcr.io/sluice-mesh/sluice:dev

.PHONY: image

## image: build sluice's container image (deploy/Dockerfile) as $(IMAGE)
image:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make image: '$(DOCKER)' is not on PATH: install Docker (or set DOCKER=podman)" >&2; exit 1; }
	@$(DOCKER) version --format '{{.Server.Version}}' >/dev/null 2>&1 || { echo "make image: '$(DOCKER)' cannot reach a container engine ('$(DOCKER) version' failed): start the Docker daemon or set DOCKER_HOST" >&2; exit 1; }
	$(DOCKER) build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE) .

.PHONY: deploy-check e2e-kind

## deploy-check: offline checks of deploy/ (kustomize renders, strict decoding,
## consistency, config keys, policies, Envoy bootstraps) and compile the kind suite
deploy-check:
	cd deploy && $(GO) test -count=1 ./...
	$(GO) vet -tags kind ./e2e/...

## e2e-kind: the Kubernetes suite on a throwaway kind cluster (needs kind, docker, kubectl)
e2e-kind:
	tools/e2e-kind.sh
