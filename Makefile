# llorch — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/llorch/llorch/version.Version=$(VERSION)
TOOLS := $(CURDIR)/.tools
GOLANGCI_LINT_VERSION := v2.15.0
FUZZTIME ?= 5s
# go-nvml's C header marks functions deprecated; the warnings are noise.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: help build test test-unit test-e2e test-rules lint fuzz bench bench-placement bench-fleet soak run observe clean tools promtool nginx gpu-check dashboards kubernetes kustomize

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build orchestratord, pool-managerd and llorch into bin/
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

dashboards: ## regenerate the Grafana dashboards (dashboards/*.json) from their Go code
	$(GO) run ./dashboards/generate -out dashboards

kubernetes: ## regenerate deploy/kubernetes' PrometheusRule and dashboard ConfigMaps from alerts/ and dashboards/
	$(GO) run ./deploy/kubernetes/generate -out deploy/kubernetes

test: lint test-rules test-unit test-e2e fuzz ## everything the project checks (what CI runs)

test-unit: kustomize ## unit tests with the race detector
	$(GO) test -race -count=1 ./...

test-e2e: promtool $(TOOLS)/jaeger ## end-to-end tests: real binaries (and Prometheus, Jaeger) as processes on 127.0.0.1
	LLORCH_JAEGER=$(TOOLS)/jaeger $(GO) test -tags e2e -count=1 -timeout 15m ./e2e/...

lint: $(TOOLS)/golangci-lint $(TOOLS)/pint ## gofmt, go vet, golangci-lint, pint (alerts/)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	$(TOOLS)/golangci-lint run ./...
	$(TOOLS)/golangci-lint run --build-tags e2e ./e2e/...
	$(TOOLS)/pint --offline --no-color --config tools/pint/pint.hcl lint --fail-on=warning alerts/

# The Prometheus rules in alerts/: promtool checks them and runs their unit
# tests; every alert needs a test where it fires, one where it stays silent,
# and a section in docs/runbooks.md.
test-rules: promtool ## check and unit-test the Prometheus rules in alerts/ (promtool)
	promtool check rules alerts/*.yml
	promtool test rules alerts/tests/*.test.yml
	./alerts/tests/coverage.sh

$(TOOLS)/golangci-lint:
	GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# Jaeger (v2, all-in-one) receives the daemons' traces in the e2e tests. It
# is pinned as a tool of its own module, tools/jaeger (go get -tool ...@v1.76.0),
# so its dependencies stay out of llorch's go.mod.
$(TOOLS)/jaeger: tools/jaeger/go.mod
	cd tools/jaeger && $(GO) build -o $(TOOLS)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

# pint (Cloudflare's rule linter) lints alerts/ in `make lint`. It is pinned
# the same way, as a tool of tools/pint (go get -tool ...@v0.87.0); its
# config is tools/pint/pint.hcl.
$(TOOLS)/pint: tools/pint/go.mod
	cd tools/pint && $(GO) build -ldflags "-X main.version=$$($(GO) list -m -f '{{.Version}}' github.com/cloudflare/pint)" \
	  -o $(TOOLS)/pint github.com/cloudflare/pint/cmd/pint

# promtool (Debian's prometheus package) checks the rules and both daemons'
# /metrics, and the e2e tests run that Prometheus; amtool and Alertmanager
# (Debian's prometheus-alertmanager, 11 MB) check and run
# deploy/alertmanager.
promtool:
	@command -v promtool >/dev/null && command -v amtool >/dev/null || { \
	  echo "installing promtool and amtool (apt-get install prometheus prometheus-alertmanager)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager) >/dev/null; }

# kustomize v5 renders deploy/kubernetes in its tests, as kubectl apply -k
# would. kubectl 1.27 or later has it built in; without such a kubectl this
# installs kustomize into .tools/ through the Go module proxy. (Debian's
# kubernetes-client is kubectl 1.20: its kustomize v2 predates components.
# v5.8.3 needs Go 1.27.)
KUSTOMIZE_VERSION := v5.8.2
kustomize:
	@kubectl version --client -o json 2>/dev/null | grep -Eq '"kustomizeVersion": "v([5-9]|[1-9][0-9])\.' || [ -x $(TOOLS)/kustomize ] || { \
	  echo "installing kustomize $(KUSTOMIZE_VERSION) into .tools/"; \
	  CGO_ENABLED=0 GOBIN=$(TOOLS) $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); }

tools: $(TOOLS)/golangci-lint $(TOOLS)/jaeger $(TOOLS)/pint promtool kustomize ## install the tools the checks need

fuzz: ## run every fuzz target for FUZZTIME (default 5s) each
	@set -e; grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+' . | sort -u | \
	while IFS=: read -r file fn; do \
	  f=$${fn#func }; echo "== $$(dirname $$file) $$f"; \
	  $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s "$$(dirname $$file)"; \
	done

bench: ## benchmarks, one package at a time (2 cores: concurrent packages would skew each other)
	$(GO) test -p 1 -run '^$$' -bench . -skip 'HandoffToReady/poll|PlacementQuality' -benchmem -count=1 ./...
	$(GO) test -run '^$$' -bench 'HandoffToReady/poll' -benchtime 20x -count=1 ./handoff

bench-placement: nginx ## placement quality: running llorch vs nginx least_conn and round robin over the same engines (<10 min)
	$(GO) test -tags e2e -run '^$$' -bench PlacementRunning -benchtime 1x -count=1 -timeout 15m ./e2e

bench-fleet: build nginx ## fleet-size figures (BENCHMARKS.md): 1k/10k/100k idle nodes, offline detection, sustained streaming vs nginx and direct (~25 min)
	./scripts/bench-fleet.sh

soak: build ## ten minutes of load on 1,000 virtual nodes with every fault, repeated; fails on any lost or hung task
	./scripts/soak.sh

# nginx (Debian's) fronts the engines in bench-placement.
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "installing nginx (apt-get install nginx-light)"; \
	  (apt-get update -qq && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light || \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; }) >/dev/null; }

gpu-check: ## on an NVIDIA GPU machine: the agent's NVML metrics against nvidia-smi
	./scripts/gpu-check.sh

run: build ## a local fleet: orchestratord and three node agents on 127.0.0.1
	./scripts/run-local.sh

observe: build promtool $(TOOLS)/jaeger ## make run plus Prometheus and Jaeger wired with deploy/, and a steady load
	./scripts/observe.sh

clean: ## remove build outputs and local runtime state
	rm -rf bin .run
