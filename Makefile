# Weir: `make run` starts the server, `make test` runs the whole test suite.
# Both install the system libraries the build needs when they are missing.

# A build directory outside the checkout, so fresh clones reuse earlier builds.
CARGO_TARGET_DIR ?= $(HOME)/.cache/weir-target
export CARGO_TARGET_DIR

.PHONY: deps run build test lint bench

deps:
	@./scripts/install-deps.sh

build: deps
	cargo build --release

run: deps
	cargo run --release --bin weir

test: deps
	cargo test --all-targets

lint: deps
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
