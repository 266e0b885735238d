#!/usr/bin/env bash
# Runs every test: unit, store and end-to-end (`make test`), with the
# stores of local/with-stores.sh. Extra arguments go to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
source local/lib.sh
ensure_browser
exec ./local/with-stores.sh bash -c '
  # The end-to-end tests start the real function binaries: build them first.
  cargo build --workspace --bins
  export E2E_SKIP_BUILD=1
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
  else
    cargo test --workspace --no-fail-fast "$@"
  fi
' test "$@"
