#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL cluster, then removes it:
#   ./scripts/with_postgres.sh ./scripts/test.sh tests/test_api.py
# The command sees TEST_DATABASE_URL=postgresql+psycopg://... (tests/conftest.py uses it).
# The cluster lives in a temporary folder, listens on 127.0.0.1 only, on a free port. PostgreSQL
# refuses to run as root, so as root the server runs as an unprivileged user (created if needed).
set -euo pipefail

# The server binaries: PG_BINDIR, else initdb on PATH, else the newest Debian install.
initdb_path="$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)"
bindir="${PG_BINDIR:-$(dirname "$(readlink -f "${initdb_path:-initdb}")")}"
for tool in initdb pg_ctl postgres; do
  [ -x "$bindir/$tool" ] || { echo "with_postgres: $bindir/$tool not found; set PG_BINDIR" >&2; exit 1; }
done

# The project's environment (./scripts/test.sh builds it) has psycopg, which creates the database.
python="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"
workdir="$(mktemp -d "${TMPDIR:-/tmp}/cxr-pg.XXXXXX")"
as_server_user=()
if [ "$(id -u)" = 0 ]; then
  server_user="${PG_RUN_AS:-cxr-pg}"
  id "$server_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$server_user"
  chown "$server_user" "$workdir"
  as_server_user=(runuser -u "$server_user" --)
fi

stop_cluster() {
  "${as_server_user[@]}" "$bindir/pg_ctl" -D "$workdir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap stop_cluster EXIT

port="${PG_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
password="$("$python" -c 'import secrets; print(secrets.token_hex(16))')"
(umask 077; echo "$password" > "$workdir/pw")
[ -z "${as_server_user[*]}" ] || chown "$server_user" "$workdir/pw"

"${as_server_user[@]}" "$bindir/initdb" -D "$workdir/data" -U cxr --pwfile="$workdir/pw" \
  --auth=scram-sha-256 -E UTF8 --no-locale >"$workdir/initdb.log" 2>&1 \
  || { cat "$workdir/initdb.log" >&2; exit 1; }
# fsync off: a throwaway test cluster need not survive a power cut, and tests run faster.
"${as_server_user[@]}" "$bindir/pg_ctl" -D "$workdir/data" -l "$workdir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $workdir -c fsync=off -c full_page_writes=off" start >/dev/null \
  || { cat "$workdir/server.log" >&2; exit 1; }

server_url="postgresql+psycopg://cxr:${password}@127.0.0.1:${port}"
"$python" - "$server_url" <<'PY'
import sys

import psycopg

with psycopg.connect(sys.argv[1].replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
    conn.execute("CREATE DATABASE cxr_test")
PY
echo "with_postgres: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, database cxr_test" >&2
TEST_DATABASE_URL="$server_url/cxr_test" "$@"
