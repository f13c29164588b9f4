# BotStream — the two commands of operator.md, plus benchmarks.
#   make run    install nats-server if missing, start it (JetStream) unless one answers on
#               127.0.0.1:4222, build and start the switch with the defaults. Ctrl-C stops both.
#   make test   install nats-server and SIPp (sip-tester) if missing, build, run every test.
#   make examples  install and build the example bots (Python venv under target/examples,
#               TypeScript under examples/typescript); make test does it first.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test build deps-build deps-run deps-test deps-examples examples bench bench-bridge bench-cpa fmt lint fuzz

# Debian package names; apt-get update runs once, only when something is missing.
define ensure
	@missing=""; \
	for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

# libopus for the Opus codec (the opus crate finds it with pkg-config at build time).
define ensure_opus
	@pkg-config --exists opus 2>/dev/null || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  echo "installing: pkg-config libopus-dev"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq pkg-config libopus-dev; }
endef

deps-build:
	$(call ensure_opus)

deps-run: deps-build
	$(call ensure,nats-server:nats-server)

deps-test: deps-build examples
	$(call ensure,nats-server:nats-server sipp:sip-tester baresip:baresip-core)

# The Pipecat bot of examples/pipecat (tests/tests/pipecat.rs runs it), in a venv under target/.
PIPECAT_VENV := target/pipecat-venv
$(PIPECAT_VENV)/.installed: examples/pipecat/requirements.txt | deps-examples
	python3 -m venv $(PIPECAT_VENV)
	$(PIPECAT_VENV)/bin/pip install -q -r examples/pipecat/requirements.txt
	touch $@

# The example bots (examples/): Python 3 with venv, Node.js with npm, openssl for their
# self-signed WSS certificates. The Python venv lives in target/examples (EXAMPLES_ENV), the
# TypeScript packages in examples/typescript/node_modules (git-ignored), both from the pinned
# examples/python/requirements.txt and examples/typescript/package-lock.json.
EXAMPLES_ENV ?= $(CURDIR)/target/examples
deps-examples:
	$(call ensure,node:nodejs npm:npm openssl:openssl python3:python3)
	@python3 -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "installing: python3-venv"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-venv; }

examples: deps-examples $(EXAMPLES_ENV)/venv/.installed examples/typescript/dist/bot.js

$(EXAMPLES_ENV)/venv/.installed: examples/python/requirements.txt
	python3 -m venv $(EXAMPLES_ENV)/venv
	$(EXAMPLES_ENV)/venv/bin/pip install -q --disable-pip-version-check -r $<
	touch $@

examples/typescript/node_modules/.installed: examples/typescript/package-lock.json
	cd examples/typescript && npm ci --no-audit --no-fund --loglevel=error
	touch $@

examples/typescript/dist/bot.js: examples/typescript/src/bot.ts examples/typescript/tsconfig.json \
		examples/typescript/node_modules/.installed
	cd examples/typescript && npx tsc -p .

build: deps-build
	$(CARGO) build --release -p botstream

run: deps-run build
	./scripts/run.sh

test: deps-test $(PIPECAT_VENV)/.installed
	$(CARGO) build -p botstream
	BOTSTREAM_EXAMPLES_ENV=$(EXAMPLES_ENV) $(CARGO) test --workspace --no-fail-fast

# N concurrent streamed calls (SIPp carriers echoing RTP, a local WSS echo app), N rising until
# calls can no longer be set up; report in bench/results/media.md. BENCH_CALLS and BENCH_HOLD
# override.
BENCH_CALLS ?= 250,500,750,1000,1500,2000
BENCH_HOLD ?= 15
# How long one call's 20 ms clock is watched for drift (bench/results/pacing.md).
BENCH_PACING_SECS ?= 300
bench: deps-test
	$(CARGO) build --release -p botstream
	$(CARGO) build --release -p e2e --examples
	@mkdir -p bench/results
	ulimit -n 65536 2>/dev/null || ulimit -n 8192; \
	BOTSTREAM_BIN=$(CURDIR)/target/release/botstream \
	  $(CARGO) run --release -p e2e --example bench -- bench/results/media.md $(BENCH_CALLS) $(BENCH_HOLD)
	BOTSTREAM_BIN=$(CURDIR)/target/release/botstream \
	  $(CARGO) run --release -p e2e --example pacing -- bench/results/pacing.md $(BENCH_PACING_SECS)
	$(MAKE) bench-bridge

# Bridged calls (SIPp customer -> switch -> SIPp agent): the delay the bridge adds and CPU per
# bridged call, in bench/results/bridge.md. BENCH_BRIDGE_CALLS overrides the steps.
BENCH_BRIDGE_CALLS ?= 50,100,250,500
bench-bridge: deps-test
	$(CARGO) build --release -p botstream
	$(CARGO) build --release -p e2e --examples
	@mkdir -p bench/results
	ulimit -n 65536 2>/dev/null || ulimit -n 8192; \
	BOTSTREAM_BIN=$(CURDIR)/target/release/botstream \
	  $(CARGO) run --release -p e2e --example bridge -- bench/results/bridge.md $(BENCH_BRIDGE_CALLS) $(BENCH_HOLD)

bench-cpa:
	@mkdir -p bench/results
	$(CARGO) run --release -p cpa --example score -- bench/results/cpa.md

# Fuzzing at every boundary the network or an app reaches (outside `make test`): each target
# runs FUZZ_SECS seconds (FUZZ_TARGETS picks some), one at a time, at low priority. cargo-fuzz
# passes nightly-only -Z flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them. New
# inputs go to crates/<crate>/fuzz/corpus/<target> (not committed), crashers to .../artifacts.
FUZZ_SECS ?= 60
FUZZ_TARGETS ?= sip-core:parse sip-core:stream sip-core:sdp media:rtp media:rtcp media:dtmf media:ws_text api:request
FUZZ_NICE ?= nice -n 19
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
	  crate=$${t%%:*}; target=$${t##*:}; dir=crates/$$crate/fuzz; \
	  mkdir -p $$dir/corpus/$$target; \
	  seeds=""; [ -d $$dir/seeds/$$target ] && seeds=fuzz/seeds/$$target; \
	  extra=""; [ $$target = parse ] && [ -d ../shared/test-vectors/sip-torture ] && \
	    extra="$$(ls -d $(CURDIR)/../shared/test-vectors/sip-torture/*/)"; \
	  dict=""; [ -f $$dir/$$target.dict ] && dict=-dict=fuzz/$$target.dict; \
	  echo "== fuzz $$crate/$$target for $(FUZZ_SECS) s"; \
	  (cd crates/$$crate && RUSTC_BOOTSTRAP=1 $(FUZZ_NICE) $(CARGO) fuzz run -O $$target \
	    fuzz/corpus/$$target $$seeds $$extra -- -max_total_time=$(FUZZ_SECS) -timeout=5 $$dict); \
	done

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets
