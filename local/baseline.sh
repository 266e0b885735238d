#!/usr/bin/env bash
# Builds release binaries of another commit (the benchmarks' baseline) in a
# git worktree under the cache, with a target directory of its own, and
# prints the folder that holds them. Built once per commit.
#
#   local/baseline.sh REV BIN...     e.g. local/baseline.sh ecdd9c6 predict predict-stream
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rev="$(git -C "$FGW_ROOT" rev-parse --short "${1:?usage: local/baseline.sh REV BIN...}")"
shift
tree="$FGW_CACHE/baseline/$rev"
target="$FGW_CACHE/baseline-target"
if [ ! -d "$tree" ]; then
  log "checking out $rev into $tree"
  git -C "$FGW_ROOT" worktree add --detach --force "$tree" "$rev" >&2
fi
args=()
for bin in "$@"; do args+=(--bin "$bin"); done
log "building the baseline ($rev): $*"
(cd "$tree" && CARGO_TARGET_DIR="$target" SQLX_OFFLINE=true cargo build --release --quiet "${args[@]}" >&2)
mkdir -p "$target/bins-$rev"
for bin in "$@"; do cp "$target/release/$bin" "$target/bins-$rev/$bin"; done
echo "$target/bins-$rev"
