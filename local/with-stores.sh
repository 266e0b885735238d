#!/usr/bin/env bash
# Runs a command with the stores the tests and benchmarks need:
# DATABASE_URL / MONGODB_URI from the environment win. Otherwise, with a
# Docker engine, the compose services; without one, the PostgreSQL on
# 127.0.0.1:5432 and a MongoDB wire-protocol server started for this run
# and stopped at the end.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FGW_ROOT"

ensure_tools

MONGO_PID=""
cleanup() { [ -n "$MONGO_PID" ] && kill "$MONGO_PID" 2>/dev/null; true; }
trap cleanup EXIT INT TERM

if have_docker && { [ -z "${DATABASE_URL:-}" ] || [ -z "${MONGODB_URI:-}" ]; }; then
  log "starting the compose stores"
  docker compose -f "$COMPOSE_FILE" up -d --wait postgres mongodb
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
  export MONGODB_URI="${MONGODB_URI:-mongodb://127.0.0.1:27017/?directConnection=true}"
fi
export DATABASE_URL="${DATABASE_URL:-$(local_postgres_url)}"
require_postgres "$DATABASE_URL"
if [ -z "${MONGODB_URI:-}" ]; then
  log "starting a MongoDB wire-protocol server for this run"
  start_mongo_server :memory: "${TMPDIR:-/tmp}/fgw-mongo-$$.log"
fi
log "PostgreSQL: $(redact_url "$DATABASE_URL")  MongoDB: $(redact_url "$MONGODB_URI")"
"$@"
