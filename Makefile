# Every target CI runs is here; `.ci/run` calls the same commands.
.PHONY: run test fmt fmt-check clippy lint cfn-lint ci release bench-ledger bench-predict bench-coldstart

## Run the local stack: stores, mail catcher, Flowise, every function under cargo lambda watch.
run:
	./local/run.sh

## Run every test (unit, store, end-to-end); starts the stores it needs.
test:
	./local/test.sh

fmt:
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

cfn-lint:
	bash -c 'source local/lib.sh && ensure_tools && cfn-lint template.yaml && openapi-spec-validator openapi.yaml'

lint: fmt-check clippy cfn-lint

## What CI runs: lint, then the tests.
ci:
	bash .ci/run

## Release bootstraps for arm64 Lambda (what `sam build` produces).
release:
	bash -c 'source local/lib.sh && ensure_tools && cargo lambda build --release --arm64'

## Deductions per second: HTTP, in-process ledger, pgbench (see BENCHMARKS.md).
bench-ledger:
	./local/with-stores.sh cargo run --release -p e2e --bin bench-ledger

## Gateway overhead on predictions and time to first token (see BENCHMARKS.md).
bench-predict:
	./local/with-stores.sh cargo run --release -p e2e --bin bench-predict

## Cold start and memory of every release bootstrap (see BENCHMARKS.md).
bench-coldstart:
	./local/with-stores.sh cargo run --release -p e2e --bin bench-coldstart
