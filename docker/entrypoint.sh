#!/bin/sh
# Container start: wait until the database accepts connections, apply the migrations, then
# replace this shell with the command (gunicorn by default) so it gets signals directly.
#   DB_WAIT_SECONDS  how long to wait for the database before giving up (default 60)
set -eu
cd "$(dirname "$0")/.."
# As PID 1 the shell ignores SIGTERM unless it says otherwise: `docker stop` while waiting must work.
trap 'exit 143' TERM INT

# A restart policy (compose: unless-stopped) starts the container again whatever its exit status, and
# podman does so at once: a bad setting restarted it about 3 times a second, each time with its line.
# The container's own /tmp outlives a restart (not a re-creation), so a start within 10 s of the
# previous one (which failed at once; Docker's own rule) first waits, twice as long each time, 1 s up
# to 60 s.
last_start="${TMPDIR:-/tmp}/cxr-entrypoint-last-start"
delay=0
if [ -r "$last_start" ]; then
  read -r previous previous_delay < "$last_start" || true
  ran=$(( $(date +%s) - ${previous:-0} ))
  if [ "$ran" -lt 10 ]; then
    delay=$(( ${previous_delay:-0} * 2 ))
    [ "$delay" -ge 1 ] || delay=1
    [ "$delay" -le 60 ] || delay=60
    echo "entrypoint: the previous start ended after ${ran} s; waiting ${delay} s before this one" >&2
    sleep "$delay" &
    wait $!
  fi
fi
echo "$(date +%s) ${delay}" > "$last_start" 2>/dev/null || true

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
