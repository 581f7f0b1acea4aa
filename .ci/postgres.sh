# Start a private PostgreSQL server for the tests and export HWNAS_TEST_PG_URL; stop it on exit.
# Source it (`. .ci/postgres.sh`) from .ci/run or a developer shell. It installs Debian's
# `postgresql` where initdb is missing (as root), runs the server as the `postgres` user (never
# root) on 127.0.0.1 with a private port and socket directory, and creates a test database.
# Without root or PostgreSQL it prints why and leaves HWNAS_TEST_PG_URL unset (the tests skip).

hwnas_pg_start() {
  local bin port dir run_as
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)  # (sourced under set -e)
  if [ -z "$bin" ] && ! command -v initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; } \
      || echo "postgres.sh: apt-get install postgresql failed" >&2
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  fi
  [ -n "$bin" ] || bin=$(dirname "$(command -v initdb || true)")
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "postgres.sh: no PostgreSQL (initdb) here; the PostgreSQL tests will skip" >&2
    return 0
  fi
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    run_as="runuser -u postgres --"
  else
    run_as=""  # a developer's own user: the server runs as that user
  fi
  dir=$(mktemp -d /tmp/hwnas-pg.XXXXXX)
  chmod 755 "$dir"
  [ -z "$run_as" ] || chown postgres "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # Local socket: trust (this script sets things up); TCP: a password, so wrong credentials fail.
  $run_as "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { echo "postgres.sh: initdb failed: $(tail -n 1 "$dir/initdb.log")" >&2; return 0; }
  $run_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" start >/dev/null \
    || { echo "postgres.sh: the server did not start: $(tail -n 1 "$dir/server.log")" >&2; return 0; }
  { $run_as "$bin/psql" -q -h "$dir" -p "$port" -U postgres -c "ALTER USER postgres PASSWORD 'hwnas'" postgres \
      && $run_as "$bin/createdb" -h "$dir" -p "$port" -U postgres hwnas_test; } \
    || { echo "postgres.sh: could not create the test database" >&2; return 0; }
  export HWNAS_TEST_PG_URL="postgresql://postgres:hwnas@127.0.0.1:$port/hwnas_test"
  export HWNAS_TEST_PG_BIN="$bin"
  HWNAS_PG_STOP="$run_as $bin/pg_ctl -D $dir/data -m immediate stop"
  HWNAS_PG_DIR="$dir"
  echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at ${HWNAS_TEST_PG_URL/:hwnas@/:***@}" >&2
}

hwnas_pg_stop() {
  if [ -n "${HWNAS_PG_STOP:-}" ]; then
    $HWNAS_PG_STOP >/dev/null 2>&1 || true
    rm -rf "$HWNAS_PG_DIR"
    HWNAS_PG_STOP=""
  fi
}

hwnas_pg_start
trap hwnas_pg_stop EXIT
