#!/usr/bin/env bash
# Hermetic test environment for stowage: a private dockerd plus three loopback registries
# (plain, basic-auth, pull-through mirror) seeded with small "remote only" images.
#
#   scripts/test-env.sh up             start whatever is not running, seed once, write $ROOT/env
#   scripts/test-env.sh tools          install what the tests check with (promtool, lintian, rpm,
#                                      systemd-analyze) and make the Debian root for the .deb
#   scripts/test-env.sh down [--purge] stop everything (keep data, or remove $ROOT entirely)
#   scripts/test-env.sh env            print $ROOT/env (KEY=VALUE lines)
#   scripts/test-env.sh status         one line per component; exit 1 if any is down
#
# Never touches the default engine (/var/run/docker.sock) nor ~/.docker.
# Sourced by seed-bench.sh for its helpers (main only runs when executed).
set -euo pipefail

ROOT=${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker} # not /usr/local/bin/docker: a newer client may shadow it
SOCK=$ROOT/docker.sock
# The Debian mirror debootstrap fetches the package-test root from (the one apt uses here).
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PLAIN=127.0.0.1:5101 AUTH=127.0.0.1:5102 MIRROR=127.0.0.1:5103
USER_NAME=stowage PASSWORD=stowage-secret
REGISTRIES=(plain auth mirror)
export DOCKER_BUILDKIT=0 # classic builder: no buildx plugin needed, no BuildKit cache to clean

log() { echo "test-env: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The hermetic engine's CLI; -H beats DOCKER_HOST/DOCKER_CONTEXT, DOCKER_CONFIG keeps ~/.docker untouched.
dk() { DOCKER_CONFIG=$ROOT/cli-config "$DOCKER_CLI" -H "unix://$SOCK" "$@"; }

# http_status HOST:PORT PATH [HEADER]: print the HTTP status code (curl may be missing; bash is not).
http_status() {
  local code=
  # A failed redirection on a group just fails the group (on exec it would exit the script).
  { printf 'GET %s HTTP/1.0\r\nHost: %s\r\n%s\r\n' "$2" "$1" "${3:+$3$'\r\n'}" >&3
    read -r -t 10 _ code _ <&3; } 2>/dev/null 3<>"/dev/tcp/${1%:*}/${1#*:}" || true
  [[ -n $code ]] && echo "$code"
}

# pid_alive PIDFILE: the pid is running and is ours (its command line names $ROOT), not a reused pid.
pid_alive() { [[ -s $1 ]] && grep -qaF -- "$ROOT" "/proc/$(<"$1")/cmdline" 2>/dev/null; }
dockerd_up() { pid_alive "$ROOT/docker.pid" && dk version >/dev/null 2>&1; }
registry_addr() { case $1 in plain) echo "$PLAIN" ;; auth) echo "$AUTH" ;; mirror) echo "$MIRROR" ;; esac; }
registry_up() { pid_alive "$ROOT/registry-$1.pid" && http_status "$(registry_addr "$1")" /v2/ >/dev/null; }

# apt_install PKG...: installs Debian packages (fresh CI machine), if any are named.
apt_install() {
  (($#)) || return 0
  log "installing $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The engine and registries, for the demo and the tests.
ensure_packages() {
  local pkgs=()
  command -v dockerd >/dev/null && [[ -x $DOCKER_CLI ]] || pkgs+=(docker.io)
  command -v docker-registry >/dev/null || pkgs+=(docker-registry)
  command -v htpasswd >/dev/null || pkgs+=(apache2-utils)
  # The image needs a static busybox; Debian's plain "busybox" package is dynamically linked.
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || pkgs+=(busybox-static)
  apt_install "${pkgs[@]}"
}

# What the tests check with, beyond the engine.
ensure_test_tools() {
  local pkgs=()
  # The unit file is checked with systemd-analyze (no systemd needs to run).
  command -v systemd-analyze >/dev/null || pkgs+=(systemd)
  # Metrics are checked with promtool and scraped by a real Prometheus.
  command -v promtool >/dev/null && command -v prometheus >/dev/null || pkgs+=(prometheus)
  # The packages are checked with lintian and rpm.
  command -v lintian >/dev/null || pkgs+=(lintian)
  command -v rpm >/dev/null || pkgs+=(rpm)
  command -v debootstrap >/dev/null || pkgs+=(debootstrap)
  apt_install "${pkgs[@]}"
}

# wait_for SECONDS PID LOG CMD...: poll CMD until it succeeds; fail early if the daemon died.
wait_for() {
  local deadline=$((SECONDS + $1)) pid=$2 logfile=$3
  shift 3
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      tail -n 20 "$logfile" >&2 || true
      die "$(basename "$logfile" .log) did not come up (log: $logfile)"
    fi
    sleep 0.2
  done
}

start_dockerd() {
  dockerd_up && return 0
  log "starting dockerd"
  rm -f "$ROOT/docker.pid" "$SOCK"
  # Own containerd namespaces: should a system containerd exist, dockerd would share it otherwise.
  setsid dockerd --data-root "$ROOT/data" --exec-root "$ROOT/exec" --pidfile "$ROOT/docker.pid" \
    -H "unix://$SOCK" --bridge=none --iptables=false --ip-masq=false \
    --containerd-namespace stowage-test --containerd-plugins-namespace stowage-test-plugins \
    </dev/null >>"$ROOT/dockerd.log" 2>&1 &
  wait_for 60 $! "$ROOT/dockerd.log" dockerd_up # dockerd writes its pidfile itself
}

start_registry() {
  local name=$1 conf=$ROOT/registry-$1.yml extra=
  registry_up "$name" && return 0
  log "starting registry $name on $(registry_addr "$name")"
  case $name in
    auth)
      htpasswd -Bbn "$USER_NAME" "$PASSWORD" >"$ROOT/htpasswd"
      extra="auth: {htpasswd: {realm: stowage-test, path: $ROOT/htpasswd}}" ;;
    mirror) extra="proxy: {remoteurl: http://$PLAIN}" ;;
  esac
  # Access log lines (combined format, on stdout) let tests count requests per registry.
  cat >"$conf" <<EOF
version: 0.1
log: {level: info, formatter: text, accesslog: {disabled: false}}
storage:
  filesystem: {rootdirectory: $ROOT/registry-$name}
  delete: {enabled: true}
http: {addr: $(registry_addr "$name")}
$extra
EOF
  setsid docker-registry serve "$conf" </dev/null >>"$ROOT/registry-$name.log" 2>&1 &
  echo $! >"$ROOT/registry-$name.pid"
  wait_for 30 $! "$ROOT/registry-$name.log" registry_up "$name"
}

# Seeded into the plain registry as stowage-test/REPO:TAG (private:1 goes to the auth registry).
SEED_IMAGES=(busybox:1 alpha:1 alpha:2 beta:1 gamma:1 big:1)
# Added in seed v2: multi:1 is a manifest list (image index) over multi-amd64:1 (linux/amd64) and
# multi-arm64:1 (linux/arm64, FROM scratch without a binary: it only has to exist and be pullable).
MULTI_IMAGES=(multi-amd64:1 multi-arm64:1 multi:1)
SEED_MARKER=seeded-v2 # bump when the seeded set changes, so an existing environment reseeds

# tag_pushed NAME REPO:TAG: registry NAME holds stowage-test/REPO:TAG (read from its storage).
tag_pushed() {
  [[ -s $ROOT/registry-$1/docker/registry/v2/repositories/stowage-test/${2%:*}/_manifests/tags/${2#*:}/current/link ]]
}
# Set v1: SEED_IMAGES plus private:1. Either marker: v2 left these images unchanged.
base_seeded() {
  local ref
  [[ -e $ROOT/seeded-v1 || -e $ROOT/$SEED_MARKER ]] || return 1
  for ref in "${SEED_IMAGES[@]}"; do tag_pushed plain "$ref" || return 1; done
  tag_pushed auth private:1
}
multi_seeded() {
  local ref
  for ref in "${MULTI_IMAGES[@]}"; do tag_pushed plain "$ref" || return 1; done
}
seeded() { [[ -e $ROOT/$SEED_MARKER ]] && base_seeded && multi_seeded; }

seed() {
  seeded && return 0
  # Only what is missing: re-pushing set v1 would change its digests under running tests.
  base_seeded || seed_base
  multi_seeded || seed_multi
  touch "$ROOT/$SEED_MARKER"
  rm -f "$ROOT/seeded-v1"
}

seed_base() {
  log "seeding images"
  local b out ref refs=() t0=$SECONDS
  b=$(mktemp -d "$ROOT/build.XXXXXX")
  # One build context per image, named REPO+TAG (alpha:1 -> alpha1).
  mkdir -p "$b"/{busybox1,alpha1,alpha2,beta1,gamma1,big1,private1}
  cp /bin/busybox "$b/busybox1/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox","sleep","3600"]\n' >"$b/busybox1/Dockerfile"
  head -c 524288 /dev/urandom >"$b/base.bin"
  for d in alpha1 beta1 gamma1; do
    # Same bytes + same mtime => same first layer (shared); the data file makes each image distinct.
    cp -p "$b/base.bin" "$b/$d/base.bin"
    printf 'FROM scratch\nCOPY base.bin /base.bin\nCOPY data.txt /data.txt\n' >"$b/$d/Dockerfile"
  done
  for d in alpha2 private1; do printf 'FROM scratch\nCOPY data.txt /data.txt\n' >"$b/$d/Dockerfile"; done
  for d in alpha1 alpha2 beta1 gamma1 private1; do echo "stowage test image $d $RANDOM$RANDOM" >"$b/$d/data.txt"; done
  head -c 8388608 /dev/urandom >"$b/big1/big.bin" # incompressible, so throttled pulls are slow
  printf 'FROM scratch\nCOPY big.bin /big.bin\n' >"$b/big1/Dockerfile"

  for ref in "${SEED_IMAGES[@]}" private:1; do
    local reg=$PLAIN
    [[ $ref == private:1 ]] && reg=$AUTH
    refs+=("$reg/stowage-test/$ref")
    dk build -q --label org.stowage.test=1 -t "$reg/stowage-test/$ref" "$b/${ref/:/}" >/dev/null
  done
  out=$(echo "$PASSWORD" | dk login -u "$USER_NAME" --password-stdin "$AUTH" 2>&1) || die "$out"
  for ref in "${refs[@]}"; do dk push -q "$ref" >/dev/null; done
  dk rmi "${refs[@]}" >/dev/null # untagging also removes the builder's parent layers: store is empty
  rm -rf "$b"
  log "seeded ${#refs[@]} images in $((SECONDS - t0))s"
}

# The manifest list is assembled by `docker manifest` from the two pushed images; it takes each
# entry's platform from the image config, which `build --platform` sets (no emulation: no RUN).
seed_multi() {
  log "seeding the multi-platform image"
  local b arch ref refs=() list=$PLAIN/stowage-test/multi:1 t0=$SECONDS
  b=$(mktemp -d "$ROOT/build.XXXXXX")
  for arch in amd64 arm64; do
    ref=$PLAIN/stowage-test/multi-$arch:1
    refs+=("$ref")
    echo "stowage test image multi-$arch $RANDOM$RANDOM" >"$b/data-$arch.txt"
    printf 'FROM scratch\nCOPY data-%s.txt /data.txt\n' "$arch" >"$b/Dockerfile.$arch"
    dk build -q --platform "linux/$arch" --label org.stowage.test=1 -f "$b/Dockerfile.$arch" -t "$ref" "$b" >/dev/null
    dk push -q "$ref" >/dev/null
  done
  # `docker manifest` is experimental before CLI 20.10; it keeps a local draft under cli-config.
  local -x DOCKER_CLI_EXPERIMENTAL=enabled
  dk manifest rm "$list" >/dev/null 2>&1 || true # a draft left by an interrupted run
  dk manifest create --insecure "$list" "${refs[@]}" >/dev/null
  for arch in amd64 arm64; do # explicit, whatever the configs say
    dk manifest annotate --os linux --arch "$arch" "$list" "$PLAIN/stowage-test/multi-$arch:1"
  done
  dk manifest push --insecure --purge "$list" >/dev/null # copies both manifests into repo multi
  dk rmi "${refs[@]}" >/dev/null
  rm -rf "$b"
  log "seeded ${#refs[@]} images and their manifest list in $((SECONDS - t0))s"
}

write_env() {
  cat >"$ROOT/env" <<EOF
DOCKER_HOST=unix://$SOCK
STOWAGE_TEST_ENV=$ROOT
STOWAGE_TEST_PLAIN=$PLAIN
STOWAGE_TEST_AUTH=$AUTH
STOWAGE_TEST_MIRROR=$MIRROR
STOWAGE_TEST_USER=$USER_NAME
STOWAGE_TEST_PASSWORD=$PASSWORD
STOWAGE_TEST_PLAIN_STORAGE=$ROOT/registry-plain
STOWAGE_TEST_PLAIN_LOG=$ROOT/registry-plain.log
STOWAGE_TEST_MIRROR_LOG=$ROOT/registry-mirror.log
DOCKER_CLI=$DOCKER_CLI
STOWAGE_TEST_DEBIAN_ROOT=$ROOT/debian
EOF
}

# A minimal Debian root (debootstrap, about 30 s once) that the .deb is installed into, with its
# maintainer scripts run for real, without touching this machine's own package database.
ensure_debian_root() {
  [[ -x $ROOT/debian/usr/bin/dpkg ]] && return 0
  log "creating a Debian root for package tests"
  rm -rf "$ROOT/debian.tmp"
  debootstrap --variant=minbase bookworm "$ROOT/debian.tmp" "$DEBIAN_MIRROR" >"$ROOT/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $ROOT/debootstrap.log"
  rm -rf "$ROOT/debian" # a half-made one would make mv move the new root into it
  mv "$ROOT/debian.tmp" "$ROOT/debian"
}

cmd_up() {
  ensure_packages
  mkdir -p "$ROOT" "$ROOT/cli-config"
  start_dockerd
  local r
  for r in "${REGISTRIES[@]}"; do start_registry "$r"; done
  seed
  write_env
  log "up ($ROOT/env)"
}

# stop_pid PIDFILE SECONDS: SIGTERM, wait, then SIGKILL.
stop_pid() {
  pid_alive "$1" || { rm -f "$1"; return 0; }
  local pid deadline=$((SECONDS + $2))
  pid=$(<"$1")
  kill "$pid"
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && { log "killing $1 ($pid)"; kill -9 "$pid"; }
  rm -f "$1"
}

cmd_down() {
  local r m
  # In parallel: each daemon takes ~2 s to exit. dockerd stops its containers (up to its 15 s
  # shutdown timeout) and its managed containerd.
  stop_pid "$ROOT/docker.pid" 60 &
  for r in "${REGISTRIES[@]}"; do stop_pid "$ROOT/registry-$r.pid" 10 & done
  wait
  stop_pid "$ROOT/exec/containerd/containerd.pid" 10 # only left behind if dockerd had to be killed
  if [[ ${1:-} == --purge ]]; then
    [[ $ROOT == /?* && $ROOT != / ]] || die "refusing to purge '$ROOT'"
    # rm -rf would descend into overlay/netns mounts dockerd left behind: unmount deepest first.
    findmnt -rn -o TARGET | { grep -E "^$ROOT(/|$)" || true; } | sort -r | while read -r m; do
      umount -R "$m" 2>/dev/null || umount -l "$m"
    done
    rm -rf "$ROOT"
    log "purged $ROOT"
  fi
}

cmd_status() {
  local r ok=0
  if dockerd_up; then echo "dockerd: running (pid $(<"$ROOT/docker.pid"), unix://$SOCK)"
  else echo "dockerd: not running"; ok=1; fi
  for r in "${REGISTRIES[@]}"; do
    if registry_up "$r"; then echo "registry-$r: running (pid $(<"$ROOT/registry-$r.pid"), $(registry_addr "$r"))"
    else echo "registry-$r: not running"; ok=1; fi
  done
  if seeded; then echo "seed: done"; else echo "seed: missing"; ok=1; fi
  return $ok
}

main() {
  case ${1:-} in
    up) cmd_up ;;
    tools) ensure_test_tools; mkdir -p "$ROOT"; ensure_debian_root ;;
    down) cmd_down "${2:-}" ;;
    env) [[ -f $ROOT/env ]] || die "no $ROOT/env: run '$0 up'"; cat "$ROOT/env" ;;
    status) cmd_status ;;
    *) echo "usage: $0 up | tools | down [--purge] | env | status" >&2; exit 2 ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
