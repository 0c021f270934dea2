# The two commands of the README: `make run` and `make test`. Both set everything up first.
CARGO_TARGET_DIR ?= target
BIN := $(CARGO_TARGET_DIR)/release/dartmouth

.PHONY: setup run test lint models fuzz

setup:
	scripts/setup.sh

## Set everything up, then run the gateway with the browser demo on http://127.0.0.1:8080/
run: setup
	$(BIN) serve

## Set everything up, then check formatting and lints and run every test.
test: setup lint
	cargo test --release --locked --workspace -- --show-output
	cargo build --release --locked -p dartmouth
	cd web-demo && DARTMOUTH_BIN=$(abspath $(BIN)) npm test
	DARTMOUTH_BIN=$(abspath $(BIN)) tests/interop/run.sh
	DARTMOUTH_BIN=$(abspath $(BIN)) tests/platform/run.sh
	DARTMOUTH_BIN=$(abspath $(BIN)) SCHEMATHESIS_SECONDS=90 tests/api-fuzz/run.sh
	scripts/fuzz.sh 20

## Every fuzz target for 10 minutes (FUZZ_SECONDS to change), from the committed seed corpus.
fuzz:
	scripts/fuzz.sh $${FUZZ_SECONDS:-600}

lint:
	cargo fmt --all -- --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings

models:
	$(BIN) models fetch
