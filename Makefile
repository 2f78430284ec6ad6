# polyfn — build, run and test.
#
#   make run    build bin/polyfn and the runtimes (.venv with the Python runtime, the Node.js
#               runtime's packages), serve examples/polyfn.yaml; ARGS='...' adds flags to
#               polyfn serve (make run ARGS='--listen 127.0.0.1:9090 --watch')
#   make test   every test in every language (the fuzz targets' seed corpora included): each
#               suite runs whatever the others did, and the summary names the failed ones
#   make lint   go vet; ruff and mypy --strict on the Python runtime; tsc --checkJs on the
#               Node.js runtime
#   make fuzz   each Go fuzz target in turn, FUZZTIME each (docs/security.md, "Fuzzing")
#   make gen    regenerate the protocol code from api/ with pinned tool versions
#   make install          PREFIX/bin/polyfn and its runtimes in PREFIX/lib/polyfn
#                         (PREFIX=/usr/local; DESTDIR for staging); make uninstall
#   make dist   release archives for linux/amd64 and linux/arm64 in dist/, with SHA256SUMS

SHELL := /bin/bash
GO ?= go
# The interpreter .venv is made from. Workers run as users of their own when the host runs as
# root (isolation.user auto), so it must be one other users can run: the system's python3 first,
# not one under a private home directory (/root/.pyenv).
PYTHON ?= $(shell for p in /usr/bin/python3 /usr/local/bin/python3 python3; do \
	$$p -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
VPY := $(VENV)/bin/python
TOOLS := $(CURDIR)/.tools

# Pinned code-generation tools. `make gen` reproduces the committed code byte for byte.
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
GRPCIO_TOOLS_VERSION := 1.85.1

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/polyfn/polyfn/internal/buildinfo.Version=$(VERSION) -X github.com/polyfn/polyfn/internal/buildinfo.Commit=$(COMMIT)

.PHONY: dist install uninstall all build venv node-runtime runtimes run test test-go test-python test-node lint lint-python lint-node gen tools vet fmt clean bench fuzz

all: build

# TAGS=kubernetes builds in `polyfn kube` and the timers' leader election (client-go): they
# cost the host process several MiB at rest, so the default binary leaves them out.
TAGS ?=

build:
	$(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/polyfn ./cmd/polyfn

# The virtualenv holds polyfn's Python runtime (editable, so source edits apply) and pytest.
$(VENV)/.stamp: runtimes/python/pyproject.toml $(VENV)/.python
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e 'runtimes/python[test,build]'
	readlink -f "$$(command -v $(PYTHON))" > $(VENV)/.python
	touch $@

# Names the interpreter .venv was made from; a change of $(PYTHON) remakes .venv.
$(VENV)/.python: FORCE
	@mkdir -p $(VENV)
	@p="$$(readlink -f "$$(command -v $(PYTHON))")"; [ "$$(cat $@ 2>/dev/null)" = "$$p" ] || echo "$$p" > $@

FORCE:

venv: $(VENV)/.stamp

# The Node.js runtime's packages, and bin/polyfn-node on the PATH the host sees.
NODE_RT := runtimes/node
$(NODE_RT)/node_modules/.stamp: $(NODE_RT)/package.json $(NODE_RT)/package-lock.json
	cd $(NODE_RT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node-runtime: $(NODE_RT)/node_modules/.stamp
	mkdir -p bin
	ln -sf ../$(NODE_RT)/bin/polyfn-node.js bin/polyfn-node

runtimes: venv node-runtime

# The host finds the runtimes on PATH: bin/ (polyfn-node) and .venv/bin (python3).
RUNTIME_PATH := PATH="$(CURDIR)/bin:$(CURDIR)/$(VENV)/bin:$$PATH"

# ARGS: more flags for polyfn serve; a later -c replaces the example config.
ARGS ?=
run: build runtimes
	$(RUNTIME_PATH) bin/polyfn serve -c examples/polyfn.yaml $(ARGS)

# $(call each,WHAT,TARGETS): make every target in turn, going on past a failed one, then say
# how many passed and failed and name the failed ones; fails if any did.
define each
	@passed=(); failed=(); \
	for t in $(2); do \
		echo "== $$t"; \
		if $(MAKE) --no-print-directory $$t; then passed+=($$t); else failed+=($$t); fi; \
	done; \
	echo "== $(1): passed: $${passed[*]:-none}; failed: $${failed[*]:-none}"; \
	echo "$(1): $${#passed[@]} passed, $${#failed[@]} failed"; \
	[ $${#failed[@]} -eq 0 ]
endef

# The modules of their own: the Go SDK and the protocol code it requires.
SUBMODULES := sdk/go api

vet:
	$(GO) vet ./...
	$(GO) vet -tags kubernetes ./internal/cli/
	for m in $(SUBMODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

TEST_SUITES := test-go test-python test-node

test: build runtimes
	$(call each,suites,$(TEST_SUITES))

# The tests build in the Kubernetes support (TAGS=kubernetes) so that its commands are tested;
# the end-to-end tests run the default binary.
test-go: runtimes
	$(RUNTIME_PATH) $(GO) test -tags kubernetes -count=1 ./...
	cd sdk/go && $(GO) test -count=1 ./...

test-python: venv
	$(VPY) -m pytest -q runtimes/python/tests

test-node: node-runtime
	cd $(NODE_RT) && npm test

# The linters of the Python runtime, pinned in its pyproject.toml (the lint extra).
$(VENV)/.lint-stamp: $(VENV)/.stamp runtimes/python/pyproject.toml
	$(VPY) -m pip install -q -e 'runtimes/python[test,lint]'
	touch $@

LINT_CHECKS := vet lint-python lint-node

lint:
	$(call each,checks,$(LINT_CHECKS))

lint-python: $(VENV)/.lint-stamp
	cd runtimes/python && ../../$(VENV)/bin/ruff check . && \
		../../$(VENV)/bin/ruff format --check polyfn_runtime tests && \
		../../$(VENV)/bin/mypy --strict polyfn_runtime

# tsc --checkJs (runtimes/node/tsconfig.json), pinned in the runtime's devDependencies.
lint-node: node-runtime
	cd $(NODE_RT) && npm run --silent lint

# make install: the binary in PREFIX/bin and, in PREFIX/lib/polyfn, what it finds relative to
# itself (internal/runtimes): python/, a virtualenv made from $(PYTHON) holding the Python
# runtime; node/, the Node.js runtime with its packages; go/sdk and go/api, the Go SDK's source
# and the protocol module it requires, which the host supplies to Go functions. Everything is
# left readable by other users: workers run as users of their own when the host runs as root.
PREFIX ?= /usr/local
DESTDIR ?=
LIB := $(DESTDIR)$(PREFIX)/lib/polyfn

install: build node-runtime
	install -d $(DESTDIR)$(PREFIX)/bin $(LIB)
	rm -rf $(LIB)/python $(LIB)/node $(LIB)/go
	$(PYTHON) -m venv $(LIB)/python
	$(LIB)/python/bin/python -m pip install -q --disable-pip-version-check --no-warn-script-location './runtimes/python[build]'
	install -d $(LIB)/node
	cp -R $(NODE_RT)/bin $(NODE_RT)/lib $(NODE_RT)/protos $(NODE_RT)/node_modules \
		$(NODE_RT)/package.json $(NODE_RT)/package-lock.json $(LIB)/node/
	rm -f $(LIB)/node/node_modules/.stamp
	install -d $(LIB)/go/sdk $(LIB)/go/api/azure $(LIB)/go/api/baetyl
	cp sdk/go/go.mod sdk/go/go.sum sdk/go/README.md $(LIB)/go/sdk/
	for f in sdk/go/*.go; do case $$f in *_test.go) ;; *) cp $$f $(LIB)/go/sdk/;; esac; done
	$(GO) mod edit -replace=github.com/polyfn/polyfn/api=../api $(LIB)/go/sdk/go.mod
	cp api/go.mod api/go.sum $(LIB)/go/api/
	cp api/azure/*.go api/azure/*.proto $(LIB)/go/api/azure/
	cp api/baetyl/*.go api/baetyl/*.proto $(LIB)/go/api/baetyl/
	install -m 0755 bin/polyfn $(DESTDIR)$(PREFIX)/bin/polyfn
	chmod -R a+rX $(LIB)
	@echo "installed $(DESTDIR)$(PREFIX)/bin/polyfn; check it with: $(DESTDIR)$(PREFIX)/bin/polyfn version"

# make dist: dist/polyfn-$(VERSION)-linux-{amd64,arm64}.tar.gz and dist/SHA256SUMS, each
# archive the install layout with a Python runtime that needs no set-up (scripts/dist.sh).
# ARCHES and PY_VERSIONS narrow it (docs/functions.md, "From a release archive").
ARCHES ?= amd64 arm64
PY_VERSIONS ?= 3.10 3.11 3.12 3.13 3.14
dist:
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' GO='$(GO)' PYTHON='$(PYTHON)' ARCHES='$(ARCHES)' \
		PY_VERSIONS='$(PY_VERSIONS)' bash scripts/dist.sh

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/bin/polyfn $(LIB)

# Go fuzz targets (package:target), run one after the other: FUZZTIME is a duration for each
# (60s) or a count of executions (1000000x); FUZZPARALLEL workers each (the machine is shared).
# A crash stops the run and leaves its input in the package's testdata/fuzz/TARGET: fix the
# code and commit that file, so that `make test` runs it from then on.
FUZZTIME ?= 60s
FUZZPARALLEL ?= 2
FUZZ_TARGETS := \
	./internal/config:FuzzParse \
	./internal/trigger/http:FuzzHTTPInfo \
	./internal/stream:FuzzTriggerMetadata \
	./sdk/go:FuzzStreamCodec \
	./internal/call:FuzzInvocationContextJSON \
	./internal/call:FuzzParseBaetylError \
	./internal/azure:FuzzRouter \
	./internal/azure:FuzzBuildHTTP \
	./internal/trigger/mqtt:FuzzErrorDocument

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg), $(FUZZTIME)"; \
		(cd $$pkg && $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) -parallel=$(FUZZPARALLEL) .) || exit 1; \
	done

tools:
	GOBIN=$(TOOLS)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	test -x $(TOOLS)/venv/bin/python || $(PYTHON) -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install -q grpcio-tools==$(GRPCIO_TOOLS_VERSION)

PY_PROTOS := runtimes/python/polyfn_runtime/protos

gen: tools
	PATH="$(TOOLS)/bin:$$PATH" $(TOOLS)/venv/bin/python -m grpc_tools.protoc -I api \
		--go_out=. --go_opt=module=github.com/polyfn/polyfn \
		--go-grpc_out=. --go-grpc_opt=module=github.com/polyfn/polyfn \
		--python_out=$(PY_PROTOS) \
		api/baetyl/function.proto
	PATH="$(TOOLS)/bin:$$PATH" $(TOOLS)/venv/bin/python -m grpc_tools.protoc -I api/azure \
		--go_out=api/azure --go_opt=paths=source_relative \
		--go-grpc_out=api/azure --go-grpc_opt=paths=source_relative \
		--python_out=$(PY_PROTOS)/azure \
		api/azure/NullableTypes.proto api/azure/ClaimsIdentityRpc.proto api/azure/FunctionRpc.proto
	# The package-less files import each other by bare module name; inside the
	# Python package they are siblings.
	sed -i 's/^import \(NullableTypes_pb2\|ClaimsIdentityRpc_pb2\) as/from . import \1 as/' $(PY_PROTOS)/azure/*_pb2.py
	# The Node.js runtime loads the .proto files themselves.
	mkdir -p $(NODE_RT)/protos/baetyl $(NODE_RT)/protos/azure
	cp api/baetyl/function.proto $(NODE_RT)/protos/baetyl/
	cp api/azure/*.proto $(NODE_RT)/protos/azure/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin $(VENV) $(TOOLS)

# The benchmark harness (docs/performance.md): every row of bench/polyfn.yaml with its budget,
# as a table and as JSON in bench/results/latest.json. It reports budgets; it does not fail on them.
# `make bench BENCH_FLAGS=--quick` is a smoke run of under a minute.
bench: build runtimes
	PATH="$(CURDIR)/bench/bin:$(CURDIR)/bin:$(CURDIR)/$(VENV)/bin:$$PATH" bin/polyfn bench -c bench/polyfn.yaml --reference noop-baetyl,floor-grpc-aio-stream,floor-grpc-aio --json bench/results/latest.json $(BENCH_FLAGS)
