#!/usr/bin/env bash
# Quick start on a fresh machine: builds .venv, migrates the SQLite database in instance/,
# creates the first admin (password printed once and kept in instance/initial_admin_password until
# that admin first signs in and chooses a new one), then serves the app with gunicorn on
# http://127.0.0.1:8000 (override with BIND) and runs the background-job worker beside it
# (validation runs, films from the PACS; queue in instance/jobs.sqlite, or on REDIS_URL) and the
# DICOM node (C-ECHO/C-STORE on 127.0.0.1:11112; docs/dicom.md).
set -euo pipefail
# A relative INSTANCE_DIR means the directory this script is started from (docs/deployment.md), not the
# checkout it moves to next: `cd /srv && INSTANCE_DIR=cxr /opt/cxr/scripts/run.sh` used /opt/cxr/cxr.
case "${INSTANCE_DIR:-/}" in
  /*) ;;
  *) export INSTANCE_DIR="$PWD/$INSTANCE_DIR" ;;
esac
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
# The folder the app reads (INSTANCE_DIR, else instance/): a key written anywhere else would leave the
# app without one, and the development profile would then sign sessions with its public fallback key.
instance="${INSTANCE_DIR:-instance}"
mkdir -p "$instance"
if [ -z "${SECRET_KEY:-}" ] && [ ! -s "$instance/secret_key" ]; then
  (umask 077; python -c 'import secrets; print(secrets.token_hex(32))' > "$instance/secret_key")
fi

flask --app wsgi db upgrade
if [ -z "$(flask --app wsgi users list)" ]; then
  password="${ADMIN_PASSWORD:-$(python -c 'import secrets; print(secrets.token_urlsafe(12))')}"
  flask --app wsgi users create admin --role admin --password "$password"  # changed at first sign-in
  (umask 077; echo "$password" > "$instance/initial_admin_password")
  echo "First admin account: user 'admin', password '$password' (also in $instance/initial_admin_password," \
    "deleted at the first sign-in, where a new password is chosen)."
fi
echo "Serving on http://$BIND; DICOM node ${DICOM_AE_TITLE:-CXRSCREEN} on ${DICOM_BIND:-127.0.0.1}:${DICOM_PORT:-11112}"
# Web server, job worker and DICOM node run side by side; when any ends (or on Ctrl-C / SIGTERM), all stop.
flask --app wsgi jobs worker &
worker=$!
flask --app wsgi dicom listen &
dicom=$!
gunicorn -c gunicorn.conf.py wsgi:app &
web=$!
trap 'kill -TERM "$worker" "$dicom" "$web" 2>/dev/null || true' INT TERM
status=0
wait -n "$worker" "$dicom" "$web" || status=$?
kill -TERM "$worker" "$dicom" "$web" 2>/dev/null || true
wait || true
exit "$status"
