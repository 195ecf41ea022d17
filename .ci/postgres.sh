#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1:$PGPORT (trust auth, data in a temporary folder), for tests.
#   bash .ci/postgres.sh start | url | stop
# Installs PostgreSQL from the Debian packages when it is missing (CI runs as root).
set -euo pipefail
PGPORT="${PGPORT:-54329}"
STATE=/tmp/fairrl-ci-postgres
bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "${1:-}" in
  start)
    if [ -z "$(bin_dir)" ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    BIN="$(bin_dir)"
    rm -rf "$STATE" && mkdir -p "$STATE"
    if [ "$(id -u)" = 0 ]; then chown postgres "$STATE"; fi
    as_pg "$BIN/initdb" -D "$STATE/data" -A trust -U fairrl >/dev/null
    as_pg "$BIN/pg_ctl" -D "$STATE/data" -l "$STATE/log" -w \
      -o "-p $PGPORT -k $STATE -c listen_addresses=127.0.0.1" start >/dev/null
    as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U fairrl fairrl_test
    echo "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT (data in $STATE)"
    ;;
  url)
    echo "postgresql+psycopg://fairrl@127.0.0.1:$PGPORT/fairrl_test"
    ;;
  stop)
    BIN="$(bin_dir)"
    if [ -n "$BIN" ] && [ -d "$STATE/data" ]; then as_pg "$BIN/pg_ctl" -D "$STATE/data" -m fast -w stop >/dev/null || true; fi
    rm -rf "$STATE"
    ;;
  *) echo "usage: $0 start|url|stop" >&2; exit 2 ;;
esac
