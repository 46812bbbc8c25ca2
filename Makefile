# Sluice: the two commands are `make run` (a demo, needing only the Rust wasm32-wasip2 target
# and the build) and `make test` (everything, from a fresh machine: it installs the test
# services first). One cargo profile (release) serves tests, the demo and benchmarks, so heavy crates
# are built once.

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
GUESTS := passthrough word-count enrich latest-state dedup hostile tagged-v1 tagged-v2 large counter tally contract-v01
GUEST_FLAGS := $(foreach g,$(GUESTS),-p $(g))
WASM_DIR := target/$(WASM_TARGET)/release
# The examples in other languages: built by `sluice build` into $(WASM_DIR), with the build tool
# pinned in each folder (requirements.txt, package-lock.json) and installed there.
PY_EXAMPLE := guest-examples/word-count-py
JS_EXAMPLE := guest-examples/word-count-js
SLUICE := target/release/sluice
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian's Chromium and its ChromeDriver: the web console's tests drive the page in a real browser.
APT_PACKAGES := memcached redis-server redis-tools chromium chromium-driver
# The Kafka-protocol broker the end-to-end tests run (its own process on loopback). Built once
# per machine (about 13 minutes on 2 cores); `cargo install` keeps it in ~/.cargo/bin.
TANSU_VERSION := 0.6.0
TANSU := $(HOME)/.cargo/bin/tansu

.PHONY: setup wasm-target test-services lang-tools build examples lang-examples demo-guest test test-only run try bench chaos fuzz lint \
	fmt clean-artifacts

## setup: install everything the tests need (idempotent): the wasm32-wasip2 target, the test
## services and the Python and JavaScript build tools.
setup: wasm-target test-services lang-tools

## wasm-target: the Rust target functions are built for; all `make run` installs.
wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

## test-services: memcached + redis-server for the cache tests, Chromium and ChromeDriver for
## the console's browser tests, and the tansu broker for the Kafka tests (built once per
## machine; the demo never needs them: it runs an embedded Kafka).
test-services:
	@missing=""; for bin in memcached redis-server redis-benchmark chromium chromedriver; do \
		command -v $$bin >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then \
		echo "installing $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi
	@if ! command -v tansu >/dev/null 2>&1 && [ ! -x $(TANSU) ]; then \
		echo "building the tansu $(TANSU_VERSION) broker for the Kafka tests (once per machine)"; \
		$(CARGO) install tansu --version $(TANSU_VERSION) --locked --features dynostore,libsql; \
	fi

## lang-tools: the build tools of the Python and JavaScript examples, at the versions their
## folders pin: componentize-py into $(PY_EXAMPLE)/.venv (pip), componentize-qjs into
## $(JS_EXAMPLE)/node_modules (npm ci). Needs python3 (3.10+) and npm.
lang-tools:
	@[ -x $(PY_EXAMPLE)/.venv/bin/componentize-py ] || { echo "installing componentize-py (pip)"; \
		python3 -m venv $(PY_EXAMPLE)/.venv && \
		$(PY_EXAMPLE)/.venv/bin/pip install --disable-pip-version-check -q -r $(PY_EXAMPLE)/requirements.txt; }
	@[ -e $(JS_EXAMPLE)/node_modules/.bin/componentize-qjs ] || { echo "installing componentize-qjs (npm)"; \
		cd $(JS_EXAMPLE) && npm ci --no-audit --no-fund; }

## build: the runtime and the `sluice` binary.
build:
	$(CARGO) build --release -p sluice

## examples: every guest component (examples and test guests) for wasm32-wasip2, the Python
## and JavaScript ones included.
examples: wasm-target lang-examples
	$(CARGO) build --release --target $(WASM_TARGET) $(GUEST_FLAGS)

## lang-examples: the Python and JavaScript word counts, built by `sluice build`.
lang-examples: build lang-tools
	$(SLUICE) build $(PY_EXAMPLE) --target-dir target
	$(SLUICE) build $(JS_EXAMPLE) --target-dir target

## demo-guest: the one function the demo and `make try` run, word-count.
demo-guest: wasm-target
	$(CARGO) build --release --target $(WASM_TARGET) -p word-count

## lint: formatting and clippy, warnings denied.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(WASM_TARGET) $(GUEST_FLAGS) -- -D warnings

## test: lint, build the guests and the `sluice` binary (the end-to-end tests run it as a
## process), then run every test (unit, SDK, examples, integration).
test: setup lint examples build test-only

test-only:
	$(CARGO) test --release --workspace

## run: the demo: `sluice dev`, an in-process Kafka, the word-count example as a pipeline, a
## synthetic stream and live results (Ctrl-C stops it). `make try` runs one function over a
## sample file instead, without Kafka.
## It builds only the word-count function and the `sluice` binary, and installs nothing but
## the wasm32-wasip2 target.
run: demo-guest build
	$(CARGO) run --release -q -p sluice -- dev

try: demo-guest build
	$(CARGO) run --release -q -p sluice -- run --module $(WASM_DIR)/word_count.wasm \
		--input guest-examples/word-count/sample.jsonl

## bench: engine, cache, Kafka, hot-reload and cluster (deploy and reload reaching 3 nodes) benchmarks,
## each beside a baseline measured in the same run (the cluster one runs the `sluice` binary, hence `build`).
bench: setup examples build
	$(CARGO) bench -p sluice-tests --bench engine
	$(CARGO) bench -p sluice-tests --bench cache_incr
	$(CARGO) bench -p sluice-tests --bench kafka
	$(CARGO) bench -p sluice-tests --bench reload
	$(CARGO) bench -p sluice-tests --bench cluster
	$(CARGO) bench -p sluice-tests --bench exactly_once

## fuzz: every fuzz target (property tests of the code that takes untrusted bytes: cache URLs,
## memcached replies, Kafka headers, pipeline specs, module uploads, runner input, records
## through a guest), each for FUZZ_SECONDS instead of its few quick cases in `make test`, one
## at a time. Prints the executions of each target; the full log is target/fuzz.log.
FUZZ_SECONDS ?= 15
# The runtime crates with fuzz targets of their own.
FUZZ_CRATES := -p sluice-cache -p sluice-engine -p sluice-kafka
fuzz: setup examples
	@rm -f target/fuzz.log
	@SLUICE_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test --release $(FUZZ_CRATES) --lib fuzz -- --nocapture --test-threads=1 \
		>>target/fuzz.log 2>&1; lib=$$?; \
	SLUICE_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test --release -p sluice-tests --test sluice fuzz:: -- --nocapture \
		--test-threads=1 >>target/fuzz.log 2>&1; suite=$$?; \
	grep -oE 'fuzz [a-z_]+: [0-9]+ executions in [0-9.]+ s|test result: .*|panicked at .*|minimal failing input.*|replay with .*' \
		target/fuzz.log; \
	[ $$lib = 0 ] && [ $$suite = 0 ]

## chaos: the chaos suite (about 10 minutes; not part of `make test`): 100,000 records through
## pipelines on tansu while the runtime is killed and restarted, the broker is killed and Redis is
## frozen; prints a table per scenario and fails on a lost, misordered or unexplained duplicate
## record (docs/chaos.md).
chaos: setup examples build
	$(CARGO) test --release -p sluice-tests --test chaos

fmt:
	$(CARGO) fmt --all

clean-artifacts:
	rm -rf target/sluice-artifacts
