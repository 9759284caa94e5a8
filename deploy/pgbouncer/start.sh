#!/usr/bin/env bash
# Start a PgBouncer (transaction pooling) in front of the local PostgreSQL, or reuse the one this
# script started before; print its URL (postgresql://postgres@127.0.0.1:<port>) on stdout.
#
#   deploy/pgbouncer/start.sh          # start or reuse; the URL is the only line on stdout
#   deploy/pgbouncer/start.sh stop     # stop the one this script started (and only that one)
#
# It listens on PGBOUNCER_PORT (6432), or the next free port of the ten after it when another program
# holds that one (a system PgBouncer, say). Config, pid file and log live in $PGBOUNCER_RUN_DIR/<port>
# (default ${TMPDIR:-/tmp}/loyalty-pgbouncer/<port>). PgBouncer refuses to run as root: as root it
# runs as the `postgres` user. Other knobs: PGBOUNCER_POOL_SIZE (server connections per database,
# 20), PGBOUNCER_MAX_CLIENT_CONN (500), PG_HOST / PG_PORT of the server behind it (127.0.0.1:5432).
set -euo pipefail
PATH="$PATH:/usr/sbin"  # Debian installs pgbouncer there, outside a normal user's PATH

HERE="$(cd "$(dirname "$0")" && pwd)"
FIRST_PORT="${PGBOUNCER_PORT:-6432}"
# How many ports after the first are tried when the first is taken.
PORT_TRIES=10
BASE="${PGBOUNCER_RUN_DIR:-${TMPDIR:-/tmp}/loyalty-pgbouncer}"
POOL_SIZE="${PGBOUNCER_POOL_SIZE:-20}"
MAX_CLIENT_CONN="${PGBOUNCER_MAX_CLIENT_CONN:-500}"
PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
# Seconds to wait for a new PgBouncer to answer a query.
READY_TIMEOUT=15

say() { echo "pgbouncer: $*" >&2; }

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ours() {  # the PgBouncer this script started on port $1 is alive
  local pidfile="$BASE/$1/pgbouncer.pid"
  [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && port_taken "$1"
}

answers() {  # a query through port $1 reaches PostgreSQL
  PGCONNECT_TIMEOUT=2 psql -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d postgres -c 'SELECT 1' \
    >/dev/null 2>&1
}

if [ "${1:-}" = stop ]; then
  for ((port = FIRST_PORT; port < FIRST_PORT + PORT_TRIES; port++)); do
    if ours "$port"; then
      kill "$(cat "$BASE/$port/pgbouncer.pid")" && say "stopped the one on port $port"
    fi
  done
  exit 0
fi

command -v pgbouncer >/dev/null 2>&1 || { say "not installed (make pgbouncer installs it)"; exit 1; }
command -v psql >/dev/null 2>&1 || { say "psql is needed to check that it answers"; exit 1; }

for ((port = FIRST_PORT; port < FIRST_PORT + PORT_TRIES; port++)); do
  if ours "$port"; then
    answers "$port" || { say "the one on port $port does not reach PostgreSQL (see $BASE/$port/pgbouncer.log)"; exit 1; }
    echo "postgresql://postgres@127.0.0.1:$port"
    exit 0
  fi
  port_taken "$port" || break
  say "port $port is taken by another program"
done
if port_taken "$port"; then
  say "no free port in $FIRST_PORT..$((FIRST_PORT + PORT_TRIES - 1))"
  exit 1
fi

run_dir="$BASE/$port"
mkdir -p "$run_dir"
chmod 755 "$BASE" 2>/dev/null || true
sed -e "s|@PORT@|$port|g" -e "s|@RUN_DIR@|$run_dir|g" -e "s|@PG_HOST@|$PG_HOST|g" \
  -e "s|@PG_PORT@|$PG_PORT|g" -e "s|@POOL_SIZE@|$POOL_SIZE|g" -e "s|@MAX_CLIENT_CONN@|$MAX_CLIENT_CONN|g" \
  "$HERE/pgbouncer.ini.in" >"$run_dir/pgbouncer.ini"
echo '"postgres" ""' >"$run_dir/userlist.txt"
rm -f "$run_dir/pgbouncer.pid"
if [ "$(id -u)" = 0 ]; then
  chown -R postgres: "$run_dir"
  runuser -u postgres -- pgbouncer -d -q "$run_dir/pgbouncer.ini"
else
  pgbouncer -d -q "$run_dir/pgbouncer.ini"
fi

for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
  if answers "$port"; then
    say "started on port $port (transaction pooling; config and log in $run_dir)"
    echo "postgresql://postgres@127.0.0.1:$port"
    exit 0
  fi
  sleep 0.2
done
say "did not answer within $READY_TIMEOUT s; its log:"
tail -n 20 "$run_dir/pgbouncer.log" >&2 || true
exit 1
