# Helpers shared by local/run.sh, local/test.sh and .ci/run. Sourced, not run.
# shellcheck shell=bash

FGW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FGW_CACHE="${FGW_CACHE:-$HOME/.cache/flowise-gateway}"
COMPOSE_FILE="$FGW_ROOT/local/docker-compose.yml"

log() {
  if [ -t 2 ]; then printf '\033[1m==> %s\033[0m\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi
}

# A venv with the pinned tools (cargo-lambda, the MongoDB test server, the
# mail catcher, cfn-lint), created once per pin set and put first on PATH.
ensure_tools() {
  local hash venv
  hash="$(sha256sum "$FGW_ROOT/local/requirements-dev.txt" | cut -c1-12)"
  venv="$FGW_CACHE/venv-$hash"
  if [ ! -x "$venv/bin/secantusd-py" ] || [ ! -x "$venv/bin/cargo-lambda" ]; then
    log "installing the pinned dev tools into $venv (once)"
    rm -rf "$venv"
    mkdir -p "$FGW_CACHE"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$FGW_ROOT/local/requirements-dev.txt"
  fi
  export PATH="$venv/bin:$PATH"
}

# Headless Chromium, its WebDriver and the CJK fonts for the console's
# browser tests, from Debian's packages when missing (as root; otherwise
# it says what to install, and the browser tests fail saying so too).
ensure_browser() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
    && fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium, chromium-driver and fonts-noto-cjk (once)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk >/dev/null
  else
    log "the browser tests need: apt-get install chromium chromium-driver fonts-noto-cjk"
  fi
}

# The SAM CLI, in a venv of its own (kept off PATH, so the tools venv's
# python stays first); sets SAM to its `sam`.
ensure_sam() {
  local hash venv
  hash="$(sha256sum "$FGW_ROOT/local/requirements-sam.txt" | cut -c1-12)"
  venv="$FGW_CACHE/sam-$hash"
  if [ ! -x "$venv/bin/sam" ]; then
    log "installing the SAM CLI into $venv (once)"
    rm -rf "$venv"
    mkdir -p "$FGW_CACHE"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$FGW_ROOT/local/requirements-sam.txt"
  fi
  SAM="$venv/bin/sam"
  export SAM_CLI_TELEMETRY=0
}

# sqlx-cli (the offline SQL data's `prepare`), built once with lean
# features into $FGW_CACHE/cargo-tools and put on PATH.
SQLX_CLI_VERSION=0.8.6
ensure_sqlx_cli() {
  local root="$FGW_CACHE/cargo-tools"
  if ! "$root/bin/cargo-sqlx" sqlx --version 2>/dev/null | grep -q "$SQLX_CLI_VERSION"; then
    log "building sqlx-cli $SQLX_CLI_VERSION into $root (once)"
    cargo install sqlx-cli --version "$SQLX_CLI_VERSION" --locked --quiet \
      --no-default-features --features rustls,postgres --root "$root"
  fi
  export PATH="$root/bin:$PATH"
}

# sqlx_database NAME: a fresh database NAME on the local PostgreSQL with
# the migrations applied; prints its URL.
sqlx_database() {
  local base url
  base="${DATABASE_URL:-$(local_postgres_url)}"
  url="${base%/*}/$1"
  sqlx database drop -y --database-url "$url" >/dev/null 2>&1 || true
  sqlx database create --database-url "$url"
  sqlx migrate run --source "$FGW_ROOT/migrations" --database-url "$url" >/dev/null
  echo "$url"
}

# True when a Docker engine answers (not just the client).
have_docker() {
  [ "${FGW_NO_DOCKER:-}" != "1" ] && command -v docker >/dev/null 2>&1 \
    && docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1
}

# A URL with its credentials masked, for printing.
redact_url() {
  echo "$1" | sed -E 's#//[^@/]*@#//***@#'
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port HOST PORT SECONDS
wait_port() {
  python3 - "$1" "$2" "$3" <<'PY'
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
while time.time() < deadline:
    try:
        socket.create_connection((host, port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
PY
}

# start_mongo_server STORAGE LOGFILE: starts the wire-protocol server on a
# free port, sets MONGODB_URI and MONGO_PID.
start_mongo_server() {
  local port
  port="$(free_port)"
  secantusd-py --host 127.0.0.1 --port "$port" --storage-path "$1" >"$2" 2>&1 &
  MONGO_PID=$!
  if ! wait_port 127.0.0.1 "$port" 60; then
    echo "the MongoDB test server did not open its port; its log:" >&2
    cat "$2" >&2
    return 1
  fi
  export MONGODB_URI="mongodb://127.0.0.1:$port"
}

# The PostgreSQL the tests and the stack use when DATABASE_URL is unset and
# there is no Docker: the one on 127.0.0.1:5432 (trust auth, user postgres).
local_postgres_url() {
  echo "postgres://postgres@127.0.0.1:5432/${1:-postgres}"
}

require_postgres() {
  local hostport host port
  hostport="$(echo "$1" | sed -E 's#^[a-z]+://([^@/]*@)?([^/?]*).*#\2#')"
  host="${hostport%%:*}"; port="${hostport##*:}"
  [ "$port" = "$hostport" ] && port=5432
  if ! wait_port "$host" "$port" 10; then
    echo "PostgreSQL is not reachable at $host:$port (set DATABASE_URL, or start it:" >&2
    echo "  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start)" >&2
    return 1
  fi
}
