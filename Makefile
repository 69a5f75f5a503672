# The front door: `make dev` runs the gateway locally with its local upstream,
# `make test` runs every test. Both install what they need on a fresh machine.

SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(HOME)/.cargo/bin:$(HOME)/.local/bin:$(PATH)
export WRANGLER_SEND_METRICS := false
# worker-build would download these from GitHub; use the ones `make setup` installs.
export WASM_BINDGEN_BIN := $(HOME)/.cargo/bin/wasm-bindgen
export WASM_OPT_BIN := $(CURDIR)/node_modules/.bin/wasm-opt
export ESBUILD_BIN := $(CURDIR)/node_modules/.bin/esbuild

WASM_BINDGEN_VERSION := 0.2.130
WORKER_BUILD_VERSION := 0.8.7
WAC_VERSION := 0.12.0
WASIP2 := target/wasm32-wasip2/release

# Real Spin for the Spin tests. On a normal machine, Spin's official installer
# (https://spinframework.dev/install) puts `spin` on PATH; this machine kind cannot
# reach it, so a build of Spin 4.1 is kept in ../shared/tools/spin (TOOLCHAIN.md).
SPIN_INSTALLER := $(CURDIR)/../shared/tools/spin/install.sh

.PHONY: setup dev dev-spin test bench build-worker components lint sizes clean

setup:
	rustup target add wasm32-unknown-unknown wasm32-wasip2
	npm install --no-audit --no-fund --loglevel=error
	@# An installed version returns at once; --locked fails for wasm-bindgen-cli (TOOLCHAIN.md).
	cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)
	cargo install worker-build --version $(WORKER_BUILD_VERSION) --locked
	cargo install wac-cli --version $(WAC_VERSION) --locked
	cargo build --release -p local-upstream
	@# The real clients the tests drive (Baseten's SDK, the Standard Webhooks verifier).
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
	@# Debian's Chromium for the browser tests (a test tool's own browser download fails here),
	@# and Redis for the Spin hosts that share one store.
	@command -v chromium >/dev/null && command -v redis-server >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium redis-server >/dev/null; }
	@command -v spin >/dev/null || $(SPIN_INSTALLER) $(HOME)/.local/bin
	spin --version

# worker-build's own wasm-opt step always keeps the name section (`--debuginfo`): a fifth
# of the Worker. It is off in Cargo.toml; this pass optimizes and drops names and debug info
# (to keep names for a readable trace: `make build-worker WASM_OPT_KEEP=--debuginfo`).
WASM_OPT_FEATURES := $(addprefix --enable-,mutable-globals sign-ext nontrapping-float-to-int \
  bulk-memory multivalue reference-types exception-handling)
# opt-level z for the Worker alone (the components keep the profile's s): -8% gzip, and
# Cloudflare bounds a Worker by its compressed size.
build-worker:
	CARGO_PROFILE_RELEASE_OPT_LEVEL=z worker-build --release
	wasm-opt -O $(WASM_OPT_FEATURES) $(WASM_OPT_KEEP) build/index_bg.wasm -o build/index_bg.wasm

# The wasm32-wasip2 components, in build/wasip2/: the `inference` library component, the
# example consumer, the two composed with `wac plug`, and the Spin component (built last, so
# spin.toml's source path holds it). Then their imports and exports are checked.
components:
	cargo build --locked --target wasm32-wasip2 --release --features component
	mkdir -p build/wasip2 && cp $(WASIP2)/edge_predict.wasm build/wasip2/inference.wasm
	CARGO_TARGET_DIR=$(CURDIR)/target cargo build --locked --manifest-path examples/consumer/Cargo.toml \
	  --target wasm32-wasip2 --release
	cp $(WASIP2)/inference_consumer.wasm build/wasip2/consumer.wasm
	wac plug build/wasip2/consumer.wasm --plug build/wasip2/inference.wasm -o build/wasip2/composed.wasm
	cargo build --locked --target wasm32-wasip2 --release --features spin
	cp $(WASIP2)/edge_predict.wasm build/wasip2/spin.wasm
	scripts/check-components.sh

dev: setup build-worker
	scripts/dev.sh

# The README's Spin quick start, word for word (`spin build && spin up`), with the local upstream.
dev-spin: setup
	scripts/dev-spin.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --lib --tests --target wasm32-unknown-unknown -- -D warnings
	cargo clippy --lib --target wasm32-wasip2 --features spin -- -D warnings
	cargo clippy --lib --target wasm32-wasip2 --features component -- -D warnings

test: setup build-worker components lint
	cargo test --workspace --locked
	cargo test --lib --locked --target wasm32-unknown-unknown
	$(MAKE) --no-print-directory sizes

# The gateway's cost on the runtimes as deployed (README, "Performance"): release builds on
# workerd itself and real Spin, each beside its runtime's own pass-through floor and the
# direct call, loaded by wrk. Not part of `make test`: it measures, it asserts nothing.
bench: setup build-worker components
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	CARGO_TARGET_DIR=$(CURDIR)/target cargo build --locked --manifest-path tools/bench/floor/spin/Cargo.toml \
	  --target wasm32-wasip2 --release
	cd tools/bench/floor/worker-rs && CARGO_TARGET_DIR=$(CURDIR)/target worker-build --release
	wasm-opt -O $(WASM_OPT_FEATURES) tools/bench/floor/worker-rs/build/index_bg.wasm \
	  -o tools/bench/floor/worker-rs/build/index_bg.wasm
	cargo build --locked --release -p local-upstream -p bench
	npm ci --prefix tools/bench/portkey --no-audit --no-fund --loglevel=error
	target/release/bench

# Uncompressed and gzip -9 sizes of every artifact, as the README states them.
sizes:
	@for wasm in build/index_bg.wasm build/wasip2/*.wasm; do \
	  printf '%-32s %9s bytes, gzip -9: %9s bytes\n' "$$wasm" "$$(wc -c < $$wasm)" "$$(gzip -9c $$wasm | wc -c)"; \
	done

clean:
	cargo clean
	rm -rf build .wrangler .dev-state .spin
