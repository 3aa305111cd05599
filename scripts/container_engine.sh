# shellcheck shell=bash
# Sourced by the container checks (container_smoke.sh, container_stack.sh): picks the container
# engine, installs and configures it on a machine that lacks it, and builds the images.
#   CONTAINER_ENGINE  podman (default) or docker: every engine call below goes through "$engine"
#   CXR_BASE          debootstrap (default): the Debian base every image starts from is made here
#                     from the machine's own Debian mirror, no image registry needed;
#                     registry: the official python:3.11-slim and debian:bookworm-slim instead
#   CXR_IMAGE         tag of the app image (default localhost/cxr-screen:ci)
# Needs root (apt-get, debootstrap, rootful podman), as CI runs.

engine="${CONTAINER_ENGINE:-podman}"
# shellcheck disable=SC2034  # cxr_image, python_base, debian_base: for the scripts that source this
cxr_image="${CXR_IMAGE:-localhost/cxr-screen:ci}"
debian_suite=bookworm
# Not python:3.11-slim: the debootstrap image is ours, and a name of its own says so.
debootstrap_base=localhost/cxr-debian:$debian_suite
state_dir="${XDG_CACHE_HOME:-$HOME/.cache}/cxr-container"
mkdir -p "$state_dir"

say() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

install_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# The hard limit, capped: runc was refused an nproc limit equal to this sandbox's hard limit (96364),
# while 32768 passes.
capped_hard_limit() {
  local v; v="$(ulimit -H "$1")"
  if [ "$v" = unlimited ] || [ "$v" -gt "$2" ]; then v="$2"; fi
  echo "$v"
}

# What podman needs in these sandboxes: runc (crun fails on hybrid cgroups), cgroupfs and a file
# event log (there is no systemd), and default ulimits no higher than this machine's hard limits
# (podman's defaults are above them, and every container would fail to start).
configure_podman() {
  # Named, not left to Recommends: netavark and aardvark-dns give compose services their names
  # (without recommends, apt may pick the CNI plugins, which resolve none); catatonit is podman's init;
  # netavark runs iptables to set up every network (a build's RUN steps too), and no package of
  # these depends on it: without it, "netavark: No such file or directory".
  install_debian_packages podman runc netavark aardvark-dns catatonit iptables
  local nofile nproc
  nofile="$(capped_hard_limit -n 65536)"
  nproc="$(capped_hard_limit -u 32768)"
  cat > "$state_dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
EOF
  export CONTAINERS_CONF="$state_dir/containers.conf"
  # HEALTHCHECK is a Docker-format field; in OCI format podman drops it.
  export BUILDAH_FORMAT=docker
}

case "$engine" in
  podman) configure_podman ;;
  docker) docker info >/dev/null 2>&1 || die "CONTAINER_ENGINE=docker but no Docker daemon answers" ;;
  *) die "CONTAINER_ENGINE must be podman or docker, not '$engine'" ;;
esac

image_exists() { "$engine" image inspect "$1" >/dev/null 2>&1; }

# The Debian mirror apt on this machine uses (for a release), else Debian's own.
debian_mirror() {
  local uri
  # shellcheck disable=SC2016  # $(...) here is apt's own field syntax
  uri="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | awk -v r="$1" '$2 == r {print $1; exit}')"
  echo "${uri:-$2}"
}

# A minimal Debian with Python 3.11, imported as an image: the same system python:3.11-slim and
# debian:bookworm-slim are built from. Made once; later runs reuse it (remove the image to rebuild).
build_debootstrap_base() {
  if image_exists "$debootstrap_base"; then
    say "base image $debootstrap_base exists; reusing it"
    return 0
  fi
  install_debian_packages debootstrap
  local mirror security rootfs started
  mirror="$(debian_mirror "$debian_suite" http://deb.debian.org/debian/)"
  security="$(debian_mirror "$debian_suite-security" http://deb.debian.org/debian-security/)"
  rootfs="$(mktemp -d "${TMPDIR:-/tmp}/cxr-rootfs.XXXXXX")"
  started=$SECONDS
  say "debootstrap $debian_suite from $mirror"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3 \
    "$debian_suite" "$rootfs" "$mirror" >"$state_dir/debootstrap.log" 2>&1 \
    || { tail -20 "$state_dir/debootstrap.log" >&2; rm -rf "$rootfs"; die "debootstrap failed"; }
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$mirror" "$debian_suite" "$mirror" "$debian_suite" "$security" "$debian_suite" > "$rootfs/etc/apt/sources.list"
  # As in Debian's slim images: no documentation or translations, now or from later installs.
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$rootfs/etc/apt/apt.conf.d/90slim"
  find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  rm -rf "$rootfs"/usr/share/{man,info,locale}/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log "${rootfs:?}"/dev/*
  tar -C "$rootfs" --numeric-owner -c . \
    | "$engine" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$debootstrap_base" >/dev/null
  rm -rf "$rootfs"
  say "base image $debootstrap_base built in $((SECONDS - started)) s"
}

# The bases every Dockerfile here takes as build arguments.
# shellcheck disable=SC2034
if [ "${CXR_BASE:-debootstrap}" = registry ]; then
  python_base=python:3.11-slim
  debian_base=debian:bookworm-slim
else
  build_debootstrap_base
  python_base=$debootstrap_base
  debian_base=$debootstrap_base
fi

# The build stage gets the host's pip configuration and CA bundle as build secrets: pip then
# reaches the same package index, through the same TLS inspection, as on this machine, and the
# secrets never land in an image layer. Each is optional.
pip_secret_args() {
  local conf
  for conf in "${PIP_CONFIG_FILE:-}" /etc/pip.conf; do
    [ -n "$conf" ] && [ -s "$conf" ] && { echo "--secret=id=pip_conf,src=$conf"; break; }
  done
  local ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
  [ -s "$ca" ] && echo "--secret=id=ca_bundle,src=$ca"
  return 0
}

# build_image TAG DOCKERFILE BASE [CONTEXT]: one image; the context is the repository by default.
build_image() {
  local tag="$1" dockerfile="$2" base="$3" context="${4:-.}" secrets
  mapfile -t secrets < <(pip_secret_args)
  "$engine" build --tag "$tag" --file "$dockerfile" --build-arg "BASE_IMAGE=$base" "${secrets[@]}" "$context"
}

image_size_mb() { echo $(( $("$engine" image inspect --format '{{.Size}}' "$1") / 1000000 )); }

# Memory of a container's processes as the sum of their PSS (shared pages split between the
# processes that map them), in MB: unlike the cgroup's figure (`stats`), it leaves out the page
# cache of files read once (the model, the libraries), which the kernel drops when memory is short.
container_pss_mb() {
  "$engine" exec "$1" python -c '
import glob
total = 0
for path in glob.glob("/proc/[0-9]*/smaps_rollup"):
    try:
        total += sum(int(line.split()[1]) for line in open(path) if line.startswith("Pss:"))
    except OSError:
        pass  # a process that ended meanwhile, or one of another user
print(total // 1024)'
}
