# Every target CI runs is here; `.ci/run` calls the same commands.
.PHONY: screenshots run serve test fmt fmt-check clippy lint cfn-lint sam-validate openapi openapi-check sqlx-prepare sqlx-check ci release bench-ledger bench-predict bench-coldstart bench-import bench-allowances

## Run the local stack: stores, mail catcher, Flowise, every function under cargo lambda watch.
run:
	./local/run.sh

## Every function's router on one port (http://127.0.0.1:8080), with the stores of the tests.
serve:
	./local/with-stores.sh bash -c 'cargo run -p gateway-admin -- migrate && cargo run -p gateway-admin -- serve --port $${PORT:-8080}'

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

sam-validate:
	bash -c 'source local/lib.sh && ensure_sam && AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} "$$SAM" validate --lint -t template.yaml'

## Write openapi.yaml from the routes' declarations (and check it).
openapi:
	cargo run -q -p gateway-admin -- openapi
openapi-check:
	cargo run -q -p gateway-admin -- openapi --check

## Refresh the offline SQL data (.sqlx/) after changing a query (and check it).
sqlx-prepare:
	bash -c 'source local/lib.sh && ensure_sqlx_cli && DATABASE_URL="$$(sqlx_database fgw_sqlx_prepare)" cargo sqlx prepare --workspace -- --all-targets'
sqlx-check:
	bash -c 'source local/lib.sh && ensure_sqlx_cli && DATABASE_URL="$$(sqlx_database fgw_sqlx_check)" cargo sqlx prepare --workspace --check -- --all-targets'

lint: fmt-check clippy cfn-lint sam-validate openapi-check sqlx-check

## What CI runs: lint, then the tests.
ci:
	bash .ci/run

## Release bootstraps for arm64 Lambda (what `sam build` produces).
release:
	bash -c 'source local/lib.sh && ensure_tools && cargo lambda build --release --arm64'

## Deductions per second: HTTP, in-process ledger, pgbench (see BENCHMARKS.md).
bench-ledger:
	./local/with-stores.sh cargo run --release -p e2e --bin bench-ledger

## Gateway overhead on predictions and time to first token, against a baseline
## commit built in a worktree (BENCH_BASELINE_REV, see BENCHMARKS.md).
BENCH_BASELINE_REV ?= ecdd9c6
bench-predict:
	BENCH_BASELINE="$$(./local/baseline.sh $(BENCH_BASELINE_REV) predict predict-stream)" \
	BENCH_BASELINE_NAME="baseline $(BENCH_BASELINE_REV)" \
	./local/with-stores.sh cargo run --release -p e2e --bin bench-predict

## Cold start and memory of every release bootstrap (see BENCHMARKS.md).
bench-coldstart:
	./local/with-stores.sh cargo run --release -p e2e --bin bench-coldstart

## import-platform at 10,000 users, 50,000 allocations, 100,000 messages (dev profile:
## the stores bound it, and it spares a release build of every function).
bench-import:
	./local/with-stores.sh cargo run -p e2e --bin bench-import

## What allowances and warnings add to a prediction: the allowance check and
## the warning trigger (dev profile: PostgreSQL bounds both; see BENCHMARKS.md).
bench-allowances:
	./local/with-stores.sh cargo run -p e2e --bin bench-allowances

# Screenshots of the console's main pages (functions/console/screenshots/),
# taken by the browser test's journey; not part of the tests.
screenshots:
	SCREENSHOTS_DIR=$(CURDIR)/functions/console/screenshots ./local/test.sh -E 'binary(console_browser) | binary(console_newcomer) | binary(console_teams) | binary(console_allowances)'
