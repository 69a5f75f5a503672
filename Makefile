# The front door: `make dev` runs the gateway locally with its local upstream,
# `make test` runs every test. Both install what they need on a fresh machine.

SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(HOME)/.cargo/bin:$(PATH)
export WRANGLER_SEND_METRICS := false
# worker-build would download these from GitHub; use the ones `make setup` installs.
export WASM_BINDGEN_BIN := $(HOME)/.cargo/bin/wasm-bindgen
export WASM_OPT_BIN := $(CURDIR)/node_modules/.bin/wasm-opt
export ESBUILD_BIN := $(CURDIR)/node_modules/.bin/esbuild

WASM_BINDGEN_VERSION := 0.2.130
WORKER_BUILD_VERSION := 0.8.7

.PHONY: setup dev test build-worker lint sizes clean

setup:
	rustup target add wasm32-unknown-unknown wasm32-wasip2
	npm install --no-audit --no-fund --loglevel=error
	@# An installed version returns at once; --locked fails for wasm-bindgen-cli (TOOLCHAIN.md).
	cargo install wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION)
	cargo install worker-build --version $(WORKER_BUILD_VERSION) --locked
	cargo build --release -p local-upstream

build-worker:
	worker-build --release

dev: setup build-worker
	scripts/dev.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --lib --tests --target wasm32-unknown-unknown -- -D warnings

test: setup build-worker lint
	cargo test --workspace --locked
	cargo test --lib --locked --target wasm32-unknown-unknown
	$(MAKE) --no-print-directory sizes

# Compressed and uncompressed size of the Worker's wasm, as the README states them.
sizes:
	@wasm=build/index_bg.wasm; \
	printf 'worker wasm: %s bytes, gzip -9: %s bytes\n' "$$(wc -c < $$wasm)" "$$(gzip -9c $$wasm | wc -c)"

clean:
	cargo clean
	rm -rf build .wrangler .dev-state
