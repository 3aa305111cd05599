#!/usr/bin/env bash
# The HTTPS compose stack, up and checked (docker-compose.https.yml with --profile replicas): nginx
# with a certificate from a throwaway CA made here, two app replicas, PostgreSQL and Redis, all
# built from Debian packages on the debootstrap base (see container_engine.sh). Checks, one
# function each, listed in CHECKS below: the journey through the proxy over HTTPS, HSTS, only the
# proxy's port published, a session, a rate limit and a queued job across replicas, one migration
# for all app containers, Redis reachable, and a PostgreSQL backup and restore round trip. Prints
# start-to-ready and memory.
#   CONTAINER_ENGINE=docker ./scripts/container_stack.sh     # docker compose instead of podman-compose
# Needs root. The stack, its volumes and its network are removed on exit, whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/container_engine.sh
install_debian_packages curl openssl

film="${CXR_FILM:-../shared/data/chest_xray/test/NORMAL/IM-0001-0001.jpeg}"
[ -s "$film" ] || die "no film at $film (set CXR_FILM)"
project="cxrstack$$"
work="$(mktemp -d "${TMPDIR:-/tmp}/cxr-stack.XXXXXX")"
if [ "$engine" = podman ]; then
  compose=("${PODMAN_COMPOSE:-.venv/bin/podman-compose}" --profile replicas -p "$project" -f docker-compose.https.yml)
else
  compose=(docker compose --profile replicas -p "$project" -f docker-compose.https.yml)
fi
tear_down() {
  # Containers first with their anonymous volumes (the images' VOLUMEs), then the network and
  # the named volumes.
  local ids
  mapfile -t ids < <("$engine" ps -aq --filter "label=com.docker.compose.project=$project")
  [ "${#ids[@]}" -eq 0 ] || "$engine" rm -f -v "${ids[@]}" >/dev/null 2>&1 || true
  "${compose[@]}" down -v -t 5 >"$work/down.log" 2>&1 || cat "$work/down.log" >&2
  rm -rf "$work"
}
trap tear_down EXIT

# --- images: the app (cached layers from container_smoke.sh) and the three Debian services ----
build_image "$cxr_image" Dockerfile "$python_base" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
for service in nginx postgres redis; do
  build_image "localhost/cxr-$service:ci" "docker/$service/Dockerfile" "$debian_base" "docker/$service" \
    >>"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; die "building the $service image failed"; }
done
say "images built"

# --- a throwaway CA and a server certificate for 127.0.0.1 / localhost ------------------------
tls="$work/tls"
mkdir -p "$tls"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=CXR Screen throwaway test CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
  -keyout "$tls/privkey.pem" -out "$tls/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
  > "$tls/server.ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 2 \
  -extfile "$tls/server.ext" -out "$tls/fullchain.pem" 2>/dev/null
chmod 0644 "$tls/privkey.pem"  # nginx reads it as www-data; the key dies with this run

# --- up ---------------------------------------------------------------------------------------
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="https://127.0.0.1:$port"
password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(16))')"
SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
POSTGRES_PASSWORD="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export SECRET_KEY POSTGRES_PASSWORD
export TLS_DIR="$tls" HTTPS_BIND=127.0.0.1 HTTPS_PORT="$port" APP_UPSTREAMS="app:8000 app2:8000"
export CXR_IMAGE="$cxr_image" NGINX_IMAGE=localhost/cxr-nginx:ci POSTGRES_IMAGE=localhost/cxr-postgres:ci \
  REDIS_IMAGE=localhost/cxr-redis:ci
# Two replicas on a 2-core machine: one worker and one inference thread each.
export WEB_WORKERS=1 INFERENCE_THREADS=1
# The films-per-hour measurement is the site's own bulk traffic: the per-user upload limit (10 a
# second by default) would cut it short, so the stack runs with limits well above what it sends,
# but keeps a per-minute API limit that the rate-limit check reaches across the two replicas.
api_per_minute=300
export API_RATE_LIMIT="200/second;${api_per_minute}/minute" UPLOAD_RATE_LIMIT='200/second'
up_started=$SECONDS
"${compose[@]}" up -d >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; die "compose up failed"; }

container() {  # the container of a compose service
  local id
  id="$("$engine" ps -aq --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1")"
  [ -n "$id" ] || die "no container for service $1"
  echo "$id"
}
replicas=(app app2)

wait_for_replicas() {  # every replica's /readyz 200 (its own health check)
  local service deadline=$((SECONDS + 300))
  for service in "${replicas[@]}"; do
    until "$engine" exec "$(container "$service")" python /app/docker/healthcheck.py >/dev/null 2>&1; do
      [ "$SECONDS" -lt "$deadline" ] || { "$engine" logs "$(container "$service")" 2>&1 | tail -30 >&2
        die "$service not ready after 300 s"; }
      sleep 1
    done
  done
}
wait_for_proxy() {  # /readyz 200 through the proxy over HTTPS
  local deadline=$((SECONDS + 120))
  until [ "$(curl -s --cacert "$tls/ca.pem" -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || { "$engine" logs "$(container proxy)" 2>&1 | tail -30 >&2
      die "the proxy does not answer on $base"; }
    sleep 1
  done
}
wait_for_replicas
wait_for_proxy
ready_seconds=$((SECONDS - up_started))
say "stack ready in $ready_seconds s (compose up to both replicas ready behind the proxy)"

"$engine" exec "$(container app)" flask --app wsgi users create dr.stack --role clinician --no-change-at-sign-in --password "$password" >&2

# Secrets go to stack_checks.py as --name=VALUE: a random one begins with "-" one time in 64, and
# argparse takes "--token -x..." for two options (a run of this script failed so).
stack_check() {  # CHECK [ARGS...]: scripts/stack_checks.py run on the host
  python3 scripts/stack_checks.py "$@" --user dr.stack --password="$password" || die "stack check $1 failed"
}
replica_check() {  # CHECK [ARGS...]: scripts/stack_checks.py run inside the first replica
  "$engine" exec -i "$(container app)" python - "$@" --user dr.stack --password="$password" \
    < scripts/stack_checks.py || die "replica check $1 failed"
}
psql_value() { "$engine" exec "$(container db)" psql -U cxr -d cxr -Atc "$1"; }

# --- checks -----------------------------------------------------------------------------------
check_tls_with_the_throwaway_ca() {
  curl -sf --cacert "$tls/ca.pem" -o /dev/null "$base/healthz" || die "HTTPS with the throwaway CA failed"
  # And the certificate really is checked: without the CA, curl must refuse the connection.
  if curl -s -o /dev/null "$base/healthz"; then die "curl accepted the server without the throwaway CA"; fi
  say "TLS: the proxy's certificate verifies against the throwaway CA only"
}

check_https_journey() {  # sign in (CSRF form), upload a film, see the result; HSTS and Secure cookies
  stack_check journey --base "$base" --cafile "$tls/ca.pem" --film "$film"
}

check_refusals_before_the_app() {  # proxy's and gunicorn's own 413/414/431 in the API's error body
  stack_check refusals --base "$base" --cafile "$tls/ca.pem"
}

check_only_the_proxy_is_published() {
  local service published
  for service in "${replicas[@]}" db redis; do
    published="$("$engine" port "$(container "$service")")"
    [ -z "$published" ] || die "$service publishes $published; only the proxy may"
  done
  published="$("$engine" port "$(container proxy)")"
  [ "$published" = "8443/tcp -> 127.0.0.1:$port" ] || die "the proxy publishes '$published'"
  say "published ports: the proxy's only ($published)"
}

check_session_across_replicas() {
  replica_check session-across-replicas --first http://app:8000 --second http://app2:8000
}

check_rate_limit_across_replicas() {  # a user of its own: the check uses up that user's API allowance
  "$engine" exec "$(container app)" flask --app wsgi users create dr.limits --role clinician \
    --no-change-at-sign-in --password "$password" >&2
  local token
  token="$("$engine" exec "$(container app)" flask --app wsgi users token dr.limits | tail -1)"
  replica_check rate-limit-across-replicas --first http://app:8000 --second http://app2:8000 \
    --token="$token" --limit "$api_per_minute"
}

check_queued_job_across_replicas() {  # a validation run posted to app, taken by the worker, seen done on app2
  "$engine" exec "$(container app)" flask --app wsgi users create stack.admin --role admin \
    --no-change-at-sign-in --password "$password" >&2
  local token
  token="$("$engine" exec "$(container app)" flask --app wsgi users token stack.admin | tail -1)"
  "$engine" cp "$film" "$(container app):/tmp/film.jpeg"
  replica_check queued-job-across-replicas --first http://app:8000 --second http://app2:8000 \
    --token="$token" --film /tmp/film.jpeg
}

check_one_migration_for_all_app_containers() {
  # The two replicas and the queue worker start on an empty database at once, each through
  # docker/entrypoint.sh: docker/migrate.py's lock lets exactly one of them migrate.
  local service migrated=0 restarts
  for service in "${replicas[@]}" worker; do
    restarts="$("$engine" inspect --format '{{.RestartCount}}' "$(container "$service")")"
    [ "$restarts" = 0 ] || die "$service restarted $restarts times"
    migrated=$((migrated + $("$engine" logs "$(container "$service")" 2>&1 | grep -c 'Running upgrade  ->' || true)))
  done
  [ "$migrated" = 1 ] || die "the first migration ran $migrated times across the two replicas and the worker"
  say "migrations: applied once for the two replicas and the worker, no restarts"
}

check_redis_reachable_from_replicas() {
  local service
  for service in "${replicas[@]}"; do
    "$engine" exec "$(container "$service")" python -c '
import socket, sys
with socket.create_connection(("redis", 6379), timeout=5) as s:
    s.sendall(b"PING\r\n")
    sys.exit(s.recv(16) != b"+PONG\r\n")' || die "$service cannot reach Redis"
  done
  say "Redis: answers PING from both replicas"
}

check_backup_and_restore() {
  # The procedure of docs/deployment.md: pg_dump -Fc while running; lose data; stop the app;
  # pg_restore --clean --if-exists; start the app; the data are back and the app serves.
  local query="SELECT (SELECT count(*) FROM users) || '/' || (SELECT count(*) FROM predictions) || '/' ||
    (SELECT count(*) FROM prediction_images) || '/' || (SELECT count(*) FROM audit_events) || '/' ||
    (SELECT version_num FROM alembic_version)"
  local before after service
  before="$(psql_value "$query")"
  "$engine" exec "$(container db)" pg_dump -U cxr -Fc cxr > "$work/cxr.dump"
  psql_value "TRUNCATE predictions CASCADE" >/dev/null
  [ "$(psql_value 'SELECT count(*) FROM predictions')" = 0 ] || die "the simulated loss did not happen"
  for service in "${replicas[@]}"; do "$engine" stop -t 40 "$(container "$service")" >/dev/null; done
  "$engine" exec -i "$(container db)" pg_restore -U cxr -d cxr --clean --if-exists < "$work/cxr.dump"
  after="$(psql_value "$query")"
  [ "$before" = "$after" ] || die "restored users/predictions/images/audit/schema $after, not $before"
  for service in "${replicas[@]}"; do "$engine" start "$(container "$service")" >/dev/null; done
  wait_for_replicas
  # nginx looked the replicas' addresses up when it started: restarted, it looks again (its
  # entrypoint waits until the names resolve; a reload right after the replicas' start could not).
  "$engine" restart "$(container proxy)" >/dev/null
  wait_for_proxy
  say "backup and restore: $(stat -c %s "$work/cxr.dump") byte dump; users/predictions/images/audit/schema $after restored"
  check_https_journey  # the restored database serves sign-in and a new upload
}

CHECKS=(
  check_tls_with_the_throwaway_ca
  check_https_journey
  check_refusals_before_the_app
  check_only_the_proxy_is_published
  check_session_across_replicas
  check_rate_limit_across_replicas
  check_queued_job_across_replicas
  check_one_migration_for_all_app_containers
  check_redis_reachable_from_replicas
  check_backup_and_restore
)
for check in "${CHECKS[@]}"; do "$check"; done

# Sizing: API uploads through the proxy, two at a time (one per replica), after the checks' warm-up.
token="$("$engine" exec "$(container app)" flask --app wsgi users token dr.stack | tail -1)"
python3 scripts/stack_checks.py films-per-hour --base "$base" --cafile "$tls/ca.pem" --token="$token" \
  --film "$film" --requests 16 --concurrency 2 | tee "$work/films-per-hour.json" || die "the throughput measurement failed"
# Where the slowest upload's time went: its lines in the proxy's log (total, connect, replica's
# answer) and in the replica's (the app's own latency).
slowest="$(grep -o 'request [0-9a-f]*)' "$work/films-per-hour.json" | tr -d ')' | cut -d' ' -f2)"
for service in proxy "${replicas[@]}"; do
  "$engine" logs "$(container "$service")" 2>&1 | grep -F "${slowest:-none}" | sed "s/^/$service: /" >&2 || true
done

say "memory per container (cgroup, with page cache):"
mapfile -t running < <("$engine" ps -q --filter "label=com.docker.compose.project=$project")
"$engine" stats --no-stream --format '{{.Name}} {{.MemUsage}}' "${running[@]}" >&2
for service in "${replicas[@]}"; do say "$service: $(container_pss_mb "$(container "$service")") MB PSS"; done
printf 'container_stack: engine %s, stack ready in %s s, %s checks passed\n' "$engine" "$ready_seconds" "${#CHECKS[@]}"
