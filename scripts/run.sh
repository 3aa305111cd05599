#!/usr/bin/env bash
# Quick start on a fresh machine: builds .venv, migrates the SQLite database in instance/,
# creates the first admin (password printed once and kept in instance/initial_admin_password until
# that admin first signs in and chooses a new one), then serves the app with gunicorn on
# http://127.0.0.1:8000 (override with BIND) and runs the background-job worker beside it
# (validation runs; queue in instance/jobs.sqlite, or on REDIS_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt -c requirements.lock
export PATH="$PWD/.venv/bin:$PATH"

# Plain http on localhost: the development profile keeps cookies usable without TLS.
export APP_ENV="${APP_ENV:-development}"
export BIND="${BIND:-127.0.0.1:8000}"
mkdir -p instance
if [ -z "${SECRET_KEY:-}" ] && [ ! -s instance/secret_key ]; then
  (umask 077; python -c 'import secrets; print(secrets.token_hex(32))' > instance/secret_key)
fi

flask --app wsgi db upgrade
if [ -z "$(flask --app wsgi users list)" ]; then
  password="${ADMIN_PASSWORD:-$(python -c 'import secrets; print(secrets.token_urlsafe(12))')}"
  flask --app wsgi users create admin --role admin --password "$password"  # changed at first sign-in
  (umask 077; echo "$password" > instance/initial_admin_password)
  echo "First admin account: user 'admin', password '$password' (also in instance/initial_admin_password," \
    "deleted at the first sign-in, where a new password is chosen)."
fi
echo "Serving on http://$BIND"
# Web server and job worker run side by side; when either ends (or on Ctrl-C / SIGTERM), both stop.
flask --app wsgi jobs worker &
worker=$!
gunicorn -c gunicorn.conf.py wsgi:app &
web=$!
trap 'kill -TERM "$worker" "$web" 2>/dev/null || true' INT TERM
status=0
wait -n "$worker" "$web" || status=$?
kill -TERM "$worker" "$web" 2>/dev/null || true
wait || true
exit "$status"
