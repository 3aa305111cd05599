#!/bin/sh
# Writes the upstream list from APP_UPSTREAMS (space-separated host:port), waits until every
# replica's name resolves (nginx resolves them once, at start, and refuses to start otherwise;
# replicas may be created after the proxy), then runs nginx.
set -eu
upstreams="${APP_UPSTREAMS:-app:8000}"
conf=/tmp/nginx/upstreams.conf
mkdir -p /tmp/nginx
: > "$conf"
for server in $upstreams; do
  host="${server%:*}"
  tries=0
  until getent hosts "$host" >/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -le 60 ] || { echo "nginx-entrypoint: upstream $host does not resolve" >&2; exit 1; }
    sleep 1
  done
  # A replica that fails is left out for 10 s; requests go to the others meanwhile.
  echo "server $server max_fails=1 fail_timeout=10s;" >> "$conf"
done
exec "$@"
