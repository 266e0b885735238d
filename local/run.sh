#!/usr/bin/env bash
# Runs the local stack (`make run`): the stores, a mail catcher and Flowise
# (Docker), migrations and indexes, then every function under
# `cargo lambda watch`, reloading on code changes. Ctrl-C stops everything
# this script started.
#
# Without Docker: the PostgreSQL on 127.0.0.1:5432, a MongoDB wire-protocol
# server (data kept in $FGW_CACHE/mongo-data), a mail catcher that writes
# every mail to $FGW_CACHE/mail.log, and whatever Flowise FLOWISE_API_URL
# names; when none answers there, the project's Flowise double as a
# labelled stand-in (`gateway-admin stand-in`, STAND_IN_PORT, 3999).
# Then `gateway-admin seed-demo`: the first admin, a demo user with
# credits, the chatflows synced. Values come from local/.env (else
# local/.env.example); variables already set in the environment win.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FGW_ROOT"

ensure_tools

env_file="local/.env"
[ -f "$env_file" ] || env_file="local/.env.example"
# Keep what the caller exported; fill the rest from the file.
while IFS='=' read -r key value; do
  [[ "$key" =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
  if [ -z "${!key:-}" ]; then export "$key=$value"; fi
done < <(grep -E '^[A-Z_][A-Z0-9_]*=' "$env_file")

PIDS=()
WATCH_PGID=""
STARTED_COMPOSE=0
cleanup() {
  trap - EXIT INT TERM
  log "stopping"
  [ -n "$WATCH_PGID" ] && kill -KILL -- "-$WATCH_PGID" 2>/dev/null
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$STARTED_COMPOSE" = 1 ]; then docker compose -f "$COMPOSE_FILE" stop; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

mkdir -p "$FGW_CACHE"
if have_docker; then
  log "starting MongoDB, PostgreSQL, mailpit and Flowise (docker compose)"
  docker compose -f "$COMPOSE_FILE" up -d --wait
  STARTED_COMPOSE=1
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/flowise_gateway}"
  export MONGODB_URI="${MONGODB_URI:-mongodb://127.0.0.1:27017/?directConnection=true}"
  mail_where="http://localhost:8025 (mailpit)"
else
  log "no Docker engine: using local services"
  export DATABASE_URL="${DATABASE_URL:-$(local_postgres_url flowise_gateway)}"
  require_postgres "$DATABASE_URL"
  if [ -z "${MONGODB_URI:-}" ]; then
    start_mongo_server "$FGW_CACHE/mongo-data" "$FGW_CACHE/mongo.log"
    PIDS+=("$MONGO_PID")
  fi
  python3 -c 'import aiosmtpd' 2>/dev/null || true
  python -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Debugging stdout \
    >>"$FGW_CACHE/mail.log" 2>&1 &
  PIDS+=($!)
  wait_port 127.0.0.1 "$SMTP_PORT" 20 || { echo "the mail catcher did not start" >&2; exit 1; }
  mail_where="$FGW_CACHE/mail.log"
fi

log "building the functions"
cargo build --workspace --bins
ADMIN_BIN="${CARGO_TARGET_DIR:-target}/debug/gateway-admin"
log "applying migrations and indexes"
"$ADMIN_BIN" migrate

# No Flowise answering and no Docker to start one: the project's Flowise
# double stands in, with one demo chatflow, and everything says so.
STAND_IN=0
if ! have_docker && ! curl -fsS -m 3 "$FLOWISE_API_URL/api/v1/ping" >/dev/null 2>&1; then
  STAND_IN_PORT="${STAND_IN_PORT:-3999}"
  log "no Flowise answers at $FLOWISE_API_URL: starting the local stand-in on 127.0.0.1:$STAND_IN_PORT"
  "$ADMIN_BIN" stand-in --port "$STAND_IN_PORT" &
  PIDS+=($!)
  wait_port 127.0.0.1 "$STAND_IN_PORT" 20 || { echo "the stand-in did not start" >&2; exit 1; }
  export FLOWISE_API_URL="http://127.0.0.1:$STAND_IN_PORT"
  export CONSOLE_STAND_IN=true
  STAND_IN=1
fi
log "seeding the first admin, a demo user and the chatflows (local runs only)"
SEEDED="$("$ADMIN_BIN" seed-demo)"

PORT="${PORT:-9000}"
# The console finds each function at its /lambda-url/<name> prefix.
export CONSOLE_LAYOUT="${CONSOLE_LAYOUT:-lambda-url}"
log "starting cargo lambda watch on 127.0.0.1:$PORT"
# In a session of its own, stopped as one process group on exit, and in a
# PID namespace of its own where the system allows one: when cargo-lambda
# reloads or stops a function it has been seen to signal processes far
# beyond its own ("waiting on process group: ... pid=0").
SANDBOX=()
if unshare --user --map-root-user --pid --fork true 2>/dev/null; then
  SANDBOX=(unshare --user --map-root-user --pid --fork --kill-child=SIGKILL)
fi
setsid "${SANDBOX[@]}" cargo lambda watch -A 127.0.0.1 -P "$PORT" </dev/null &
WATCH_PGID=$!
wait_port 127.0.0.1 "$PORT" 120 || { echo "cargo lambda watch did not start" >&2; exit 1; }

loud=""
if [ "$STAND_IN" = 1 ]; then
  flowise_state="a local stand-in"
  loud="
  !! FLOWISE IS A LOCAL STAND-IN: its one demo chatflow gives canned answers,
  !! not a model's. Point FLOWISE_API_URL at a Flowise server (README,
  !! \"A real Flowise\") to chat with real chatflows.
"
elif curl -fsS -m 3 "$FLOWISE_API_URL/api/v1/ping" >/dev/null 2>&1; then
  flowise_state="answering"
else
  flowise_state="NOT answering"
fi
cat <<INFO
$loud
  Console:  http://127.0.0.1:$PORT/lambda-url/console/

  Functions (cargo lambda watch, reloading on change):
    auth            http://127.0.0.1:$PORT/lambda-url/auth/
    predict         http://127.0.0.1:$PORT/lambda-url/predict/
    predict-stream  http://127.0.0.1:$PORT/lambda-url/predict-stream/
    credits         http://127.0.0.1:$PORT/lambda-url/credits/
    usage           http://127.0.0.1:$PORT/lambda-url/usage/
    credit-expiry   cargo lambda invoke -A 127.0.0.1 -P $PORT credit-expiry --data-ascii '{}'
  Try:    curl http://127.0.0.1:$PORT/lambda-url/credits/health
  Flowise: $FLOWISE_API_URL ($flowise_state)
$SEEDED
  Mail:    $mail_where
  PostgreSQL: $(redact_url "$DATABASE_URL")
  MongoDB:    $(redact_url "$MONGODB_URI")
  Ctrl-C stops everything started here.

INFO
wait "$WATCH_PGID"
