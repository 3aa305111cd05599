#!/bin/sh
# Container start: wait until the database accepts connections, apply the migrations, then
# replace this shell with the command (gunicorn by default) so it gets signals directly.
#   DB_WAIT_SECONDS  how long to wait for the database before giving up (default 60)
set -eu
cd "$(dirname "$0")/.."
# As PID 1 the shell ignores SIGTERM unless it says otherwise: `docker stop` while waiting must work.
trap 'exit 143' TERM INT

wait_seconds="${DB_WAIT_SECONDS:-60}"
case "$wait_seconds" in
  '' | *[!0-9]*)
    echo "entrypoint: configuration error: DB_WAIT_SECONDS must be a whole number of seconds, not '${wait_seconds}'" >&2
    exit 4
    ;;
esac
deadline=$(( $(date +%s) + wait_seconds ))
attempt=1
# Reads the same DATABASE_URL the app will use (webapp.config), never prints it: it may hold a password.
# A bad setting (webapp/env.py) is no reason to wait: it stops the start with its one line, status 4.
until problem=$(python - <<'PY' 2>&1
import sys
from sqlalchemy import create_engine
from webapp.env import exit_on_config_error

with exit_on_config_error("entrypoint"):
    from webapp.config import config_from_env

    url = config_from_env().SQLALCHEMY_DATABASE_URI
try:
    create_engine(url).connect().close()
except Exception as exc:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    sys.exit(f"{type(exc).__name__}: {reason[0] if reason else ''}")
PY
); do
  status=$?
  if [ "$status" -eq 4 ]; then
    echo "$problem" >&2
    exit 4
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "entrypoint: the database is still unreachable after ${wait_seconds} s; giving up. Last error: ${problem}" >&2
    exit 1
  fi
  echo "entrypoint: waiting for the database (attempt ${attempt}): ${problem}" >&2
  attempt=$((attempt + 1))
  sleep 2
done

echo "entrypoint: database reachable; applying migrations" >&2
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" python docker/migrate.py

if [ "$#" -eq 0 ]; then
  set -- gunicorn --config gunicorn.conf.py wsgi:app
fi
exec "$@"
