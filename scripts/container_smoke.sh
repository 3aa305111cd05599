#!/usr/bin/env bash
# The image, really built and run: builds it (on a Debian base made here with debootstrap, see
# container_engine.sh), starts one container on a loopback port and checks it from the outside:
# /healthz and /readyz, the non-root user, the image's HEALTHCHECK, the sign-in page, one
# prediction through the API with a token made inside the container, a clean stop within the
# grace period, the DICOM node's clean stop, and the back-off of a bad setting under a restart
# policy. Prints the build time, image size, start-to-ready time and memory.
#   CONTAINER_ENGINE=docker ./scripts/container_smoke.sh      # same checks with Docker
#   CXR_FILM=path/to/film.jpeg                                # default: one official test film
# Needs root. The container is removed on exit, whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/container_engine.sh
install_debian_packages curl

film="${CXR_FILM:-../shared/data/chest_xray/test/PNEUMONIA/person100_bacteria_475.jpeg}"
[ -s "$film" ] || die "no film at $film (set CXR_FILM)"
name="cxr-smoke-$$"
grace=40
# -v: the anonymous volume of the image's VOLUME goes too.
# One name per call: podman 4.3 removes none of several names when one of them does not exist.
trap 'for c in "$name" "$name-dicom" "$name-bad"; do "$engine" rm -f -v "$c" >/dev/null 2>&1 || true; done' EXIT

started=$SECONDS
build_image "$cxr_image" Dockerfile "$python_base"
build_seconds=$((SECONDS - started))
size_mb="$(image_size_mb "$cxr_image")"
say "built $cxr_image in $build_seconds s: $size_mb MB"
[ "$size_mb" -le 1500 ] || die "the image is $size_mb MB, over the 1500 MB budget"
say "largest parts (MB):"
"$engine" run --rm --entrypoint sh "$cxr_image" -c 'cd /opt/venv/lib/python3*/site-packages &&
  { du -xsm /usr /opt/venv; du -sm ./* | sort -rn | head -10; du -sm tensorflow/* | sort -rn | head -4; }' >&2

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
health_args=()
# Docker runs the HEALTHCHECK itself (every 30 s by default: sooner here); podman without systemd
# has no timer for it, so the check below runs it explicitly.
[ "$engine" = docker ] && health_args=(--health-interval 3s)
# Plain http on loopback: cookies need not be Secure here (the HTTPS stack is container_stack.sh).
# Wall-clock microseconds (bash's EPOCHREALTIME without the decimal point).
now_us() { echo "${EPOCHREALTIME/./}"; }
run_started="$(now_us)"
"$engine" run -d --name "$name" -p "127.0.0.1:$port:8000" "${health_args[@]}" \
  -e SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')" \
  -e SESSION_COOKIE_SECURE=false "$cxr_image" >/dev/null

# Ready: /readyz answers 200 (model loaded in every worker, database migrated and reachable).
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ]; do
  if [ "$("$engine" inspect --format '{{.State.Running}}' "$name")" != true ]; then
    "$engine" logs "$name" 2>&1 | tail -30 >&2
    die "the container stopped before it was ready"
  fi
  [ $(( $(now_us) - run_started )) -lt 300000000 ] || die "not ready after 300 s"
  sleep 0.25
done
ready_ms=$(( ($(now_us) - run_started) / 1000 ))
ready_seconds="$((ready_ms / 1000)).$(( (ready_ms % 1000) / 100 ))"
say "ready after $ready_seconds s"

expect_json() {  # URL EXPECTED_STATUS KEY EXPECTED_VALUE
  local body status
  body="$(curl -s -w '\n%{http_code}' "$1")"
  status="${body##*$'\n'}"
  body="${body%$'\n'*}"
  [ "$status" = "$2" ] || die "$1 answered $status: $body"
  [ "$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$body" "$3")" = "$4" ] \
    || die "$1: $3 is not $4 in $body"
}
expect_json "$base/healthz" 200 status ok
expect_json "$base/readyz" 200 status ready
say "/healthz and /readyz: 200"

exec_uid="$("$engine" exec "$name" id -u)"
# shellcheck disable=SC2016  # awk's own $2
server_uid="$("$engine" exec "$name" awk '/^Uid:/ {print $2}' /proc/1/status)"
if [ "$exec_uid" != 10001 ] || [ "$server_uid" != 10001 ]; then
  die "runs as uid $server_uid (exec: $exec_uid), not 10001"
fi
say "gunicorn runs as uid $server_uid"

if [ "$engine" = podman ]; then
  podman healthcheck run "$name" || die "the image's HEALTHCHECK failed"
else
  for _ in $(seq 60); do
    [ "$(docker inspect --format '{{.State.Health.Status}}' "$name")" = healthy ] && break
    sleep 1
  done
  [ "$(docker inspect --format '{{.State.Health.Status}}' "$name")" = healthy ] || die "not healthy"
fi
say "HEALTHCHECK: healthy"

# The sign-in page, found as a browser finds it: the upload page redirects there without a session.
login_url="$(curl -s -o /dev/null -w '%{redirect_url}' "$base/screen")"
[ -n "$login_url" ] || die "/screen did not redirect to the sign-in page"
login_page="$(curl -s -w '\n%{http_code}' "$login_url")"
if [ "${login_page##*$'\n'}" != 200 ] || ! grep -q 'name="csrf_token"' <<<"$login_page" \
  || ! grep -q 'name="password"' <<<"$login_page"; then
  die "the sign-in page $login_url is not served"
fi
say "sign-in page: 200 with its form"

password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(16))')"
"$engine" exec "$name" flask --app wsgi users create dr.smoke --role clinician --no-change-at-sign-in --password "$password" >&2
token="$("$engine" exec "$name" flask --app wsgi users token dr.smoke | tail -1)"
answer="$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $token" -F "file=@$film" "$base/api/v1/predictions")"
status="${answer##*$'\n'}"
label="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["predictions"][0]["label"])' "${answer%$'\n'*}" \
  2>/dev/null || true)"
case "$status:$label" in
  201:NORMAL|201:PNEUMONIA|201:UNKNOWN) say "API prediction of $(basename "$film"): $label" ;;
  *) die "the API answered $status: ${answer%$'\n'*}" ;;
esac

memory="$(container_pss_mb "$name") MB PSS"
memory_cgroup="$("$engine" stats --no-stream --format '{{.MemUsage}}' "$name" | cut -d/ -f1 | xargs)"
say "memory after one prediction: $memory ($memory_cgroup with page cache, as the engine counts it)"

# A clean stop: SIGTERM, gunicorn finishes and exits 0 well within the grace period.
stop_started=$SECONDS
"$engine" stop -t "$grace" "$name" >/dev/null
stop_seconds=$((SECONDS - stop_started))
exit_code="$("$engine" inspect --format '{{.State.ExitCode}}' "$name")"
if [ "$exit_code" != 0 ] || [ "$stop_seconds" -ge "$grace" ]; then
  die "stop took $stop_seconds s, exit code $exit_code"
fi
! "$engine" logs "$name" 2>&1 | grep -q Traceback || die "a traceback in the container's log"
say "stopped cleanly in $stop_seconds s (exit 0)"

# The DICOM node is PID 1 in its container too (the compose files' `dicom` service): it used to
# ignore SIGTERM there and be killed at the end of the grace period, exit 137.
"$engine" run -d --name "$name-dicom" -e SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')" \
  "$cxr_image" flask --app wsgi dicom listen >/dev/null
for _ in $(seq 120); do
  "$engine" logs "$name-dicom" 2>&1 | grep -q "dicom node listening" && break
  sleep 0.5
done
"$engine" logs "$name-dicom" 2>&1 | grep -q "dicom node listening" || die "the DICOM node did not start"
dicom_stop_started=$SECONDS
"$engine" stop -t 10 "$name-dicom" >/dev/null
dicom_stop_seconds=$((SECONDS - dicom_stop_started))
exit_code="$("$engine" inspect --format '{{.State.ExitCode}}' "$name-dicom")"
if [ "$exit_code" != 0 ] || [ "$dicom_stop_seconds" -ge 10 ]; then
  die "the DICOM node's stop took $dicom_stop_seconds s, exit code $exit_code"
fi
say "DICOM node stopped cleanly in $dicom_stop_seconds s (exit 0)"

# A bad setting under a restart policy (compose: unless-stopped): podman restarts at once, so the
# entrypoint backs off (1 s, 2 s, 4 s...); it used to restart about 3 times a second.
"$engine" run -d --name "$name-bad" --restart always -e MAX_UPLOAD_MB=50MB \
  -e SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')" "$cxr_image" >/dev/null
sleep 8
starts="$("$engine" logs "$name-bad" 2>&1 | grep -c "configuration error: MAX_UPLOAD_MB" || true)"
"$engine" rm -f -v "$name-bad" >/dev/null 2>&1
if [ "$starts" -lt 1 ] || [ "$starts" -gt 5 ]; then
  die "a bad setting under a restart policy: $starts starts in 8 s (expected 1-5, backing off)"
fi
say "bad setting under a restart policy: $starts starts in 8 s, each with its one line"

printf 'container_smoke: engine %s, build %s s, image %s MB, start-to-ready %s s, memory %s, stop %s s\n' \
  "$engine" "$build_seconds" "$size_mb" "$ready_seconds" "$memory" "$stop_seconds"
