#!/usr/bin/env bash
# Hermetic test environment for stowage: a private container engine plus three loopback
# registries (plain, basic-auth, pull-through mirror) seeded with small "remote only" images,
# two of them signed with cosign (Debian 13's, fetched like Docker 26) and a test key pair.
#
#   scripts/test-env.sh up             start whatever is not running, seed once, write $ROOT/env.ENGINE
#   scripts/test-env.sh tools          install what the tests check with (promtool, lintian, rpm,
#                                      systemd-analyze) and make the Debian root for the .deb
#   scripts/test-env.sh down [--purge] stop every engine and registry (keep data, or remove $ROOT)
#   scripts/test-env.sh env            print $ROOT/env.ENGINE (KEY=VALUE lines)
#   scripts/test-env.sh status         one line per component; exit 1 if any is down
#   scripts/test-env.sh stop-engine    stop the engine under test (reliability tests: the engine
#   scripts/test-env.sh start-engine   going away and coming back under a running stowage)
#
# The engine under test is chosen by STOWAGE_TEST_ENGINE (default docker20):
#   docker20  Debian 12's Docker 20.10 (API 1.41, classic image store)
#   docker26  Debian 13's Docker 26.1 (API 1.45) on its containerd 1.7, containerd image store on;
#             its packages are fetched once with apt-get download into $STOWAGE_TEST_CACHE and
#             unpacked there, never installed (they run on Debian 12 as they are)
#   podman    Debian 12's Podman 4.3 serving the Docker-compatible API on its own socket
#   docker28  Debian sid's Docker 28.5 (API 1.51) on its containerd 2.1 and runc 1.3, containerd
#             image store on
#   podman5   Debian 13's Podman 5.4 (API 1.41) on runc
#   podman58  Debian sid's Podman 5.8 (API 1.44) on runc
# The last three need a newer glibc than Debian 12's: each runs chrooted in a Debian root of its
# own suite, made once with debootstrap under $STOWAGE_TEST_CACHE (about 45 s), in a mount
# namespace of its own, so its mounts are never seen outside and go away with its processes.
# Each engine has its own socket and data root under $ROOT/ENGINE; all share the registries.
# Several engines may run at once. The registries are seeded through the docker20 engine.
#
# Never touches the default engine (/var/run/docker.sock) nor ~/.docker.
# Sourced by seed-bench.sh for its helpers (main only runs when executed).
set -euo pipefail

ROOT=${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}
ENGINE=${STOWAGE_TEST_ENGINE:-docker20}
ENGINES=(docker20 docker26 podman docker28 podman5 podman58)
# Downloaded engine packages: outside $ROOT, so `down --purge` does not fetch them again.
CACHE=${STOWAGE_TEST_CACHE:-/var/cache/stowage-test}
DOCKER_CLI=${DOCKER_CLI:-/usr/bin/docker} # not /usr/local/bin/docker: a newer client may shadow it
# The engine that builds and pushes the seeded images (any engine's tests read them).
SEED_ENGINE=docker20
# The Debian mirror debootstrap fetches the package-test root from (the one apt uses here).
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PLAIN=127.0.0.1:5101 AUTH=127.0.0.1:5102 MIRROR=127.0.0.1:5103
# Registries and throttling proxies that tests start take these ports (tests/util.rs).
TEST_REGISTRY_PORTS=(5110 5199)
USER_NAME=stowage PASSWORD=stowage-secret
REGISTRIES=(plain auth mirror)
export DOCKER_BUILDKIT=0 # classic builder: no buildx plugin needed, no BuildKit cache to clean

log() { echo "test-env: $*" >&2; }
die() { log "error: $*"; exit 1; }

# engine_dir NAME: everything of one engine (socket, data root, pid file, log).
engine_dir() { echo "$ROOT/$1"; }
# The seed engine's CLI; -H beats DOCKER_HOST/DOCKER_CONTEXT, DOCKER_CONFIG keeps ~/.docker untouched.
dk() { dk_on "$SEED_ENGINE" "$@"; }
# dk_on NAME ARGS...: the docker CLI against engine NAME (Podman's compatible API included).
dk_on() { local n=$1; shift; DOCKER_CONFIG=$ROOT/cli-config "$DOCKER_CLI" -H "unix://$ROOT/$n/engine.sock" "$@"; }

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
engine_up() { pid_alive "$ROOT/$1/engine.pid" && dk_on "$1" version >/dev/null 2>&1; }
dockerd_up() { engine_up "$SEED_ENGINE"; }
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
  # Without recommends: buildah, slirp4netns and fuse-overlayfs are not needed for the API.
  if [[ $ENGINE == podman ]] && ! command -v podman >/dev/null; then
    apt_install "${pkgs[@]}"
    log "installing podman"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman >/dev/null
    return
  fi
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
  # The Ansible example (examples/ansible) is run with Debian's ansible-core.
  command -v ansible-playbook >/dev/null || pkgs+=(ansible-core)
  # The compose example (examples/container) is run with Debian's docker-compose 1.29.
  command -v docker-compose >/dev/null || pkgs+=(docker-compose)
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

# start_engine NAME: starts engine NAME unless it is up.
start_engine() {
  engine_up "$1" && return 0
  local d
  d=$(engine_dir "$1")
  mkdir -p "$d"
  rm -f "$d/engine.pid" "$d/engine.sock"
  # What a chrooted engine killed without `down` left running: gone, as after a reboot.
  chrooted "$1" && stop_leftovers "$1"
  log "starting engine $1"
  case $1 in
    docker20) start_dockerd "$d" "$1" ;;
    docker26) ensure_docker26; start_docker26 "$d" ;;
    podman) start_podman "$d" podman ;;
    docker28) ensure_root docker28; start_docker28 "$d" ;;
    podman5 | podman58) ensure_root "$1"; start_podman "$d" "$1" ;;
  esac
}

# start_dockerd DIR NAMESPACE [DOCKERD ARGS...]: a hermetic dockerd under DIR, run by
# "${dockerd_cmd[@]}" when the caller sets it (a chrooted one).
start_dockerd() {
  local d=$1 ns=$2
  shift 2
  # Own containerd namespaces: should a system containerd exist, dockerd would share it otherwise.
  setsid "${dockerd_cmd[@]:-dockerd}" --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/engine.pid" \
    -H "unix://$d/engine.sock" --bridge=none --iptables=false --ip-masq=false \
    --containerd-namespace "stowage-$ns" --containerd-plugins-namespace "stowage-$ns-plugins" "$@" \
    </dev/null >>"$d/engine.log" 2>&1 &
  wait_for 60 $! "$d/engine.log" engine_up "$(basename "$d")" # dockerd writes its pidfile itself
}

# Docker 26.1 and containerd 1.7 from Debian 13, unpacked (not installed) under $CACHE/trixie.
DOCKER26_PKGS=(docker.io containerd)
ensure_docker26() {
  [[ -x $CACHE/trixie/root/usr/sbin/dockerd && -x $CACHE/trixie/root/usr/bin/containerd ]] && return 0
  fetch_trixie "$CACHE/trixie" "${DOCKER26_PKGS[@]}"
}

# cosign 2.5 from Debian 13 (one static binary), which signs images in the test registries.
COSIGN=$CACHE/trixie-cosign/root/usr/bin/cosign
ensure_cosign() {
  [[ -x $COSIGN ]] && return 0
  fetch_trixie "$CACHE/trixie-cosign" cosign
}

# Podman 5's quadlet generator from Debian 13 (a Go binary that runs on Debian 12), which turns
# examples/container/stowage.container into the unit systemd would run.
QUADLET=$CACHE/trixie-podman/root/usr/libexec/podman/quadlet
ensure_quadlet() {
  [[ -x $QUADLET ]] && return 0
  fetch_trixie "$CACHE/trixie-podman" podman
}

# The Debian mirror this machine's own sources name: the script names no host.
mirror_uri() {
  local uri
  uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n $uri ]] || uri=$(awk '$1 == "deb" && $2 !~ /^\[/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n $uri ]] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
  echo "$uri"
}

# The engines that run chrooted in a Debian root of their own (see the header), and that root:
# engine_root NAME prints it (nothing for an engine of this host), root_suite and root_pkgs
# what it is made of. Each engine has its own root, never shared with cosign 3's.
engine_root() { case $1 in docker28 | podman5 | podman58) echo "$CACHE/chroot-$1" ;; esac; }
root_suite() { case $1 in podman5) echo trixie ;; *) echo sid ;; esac; }
# runc: crun, Podman's first choice, refuses this cgroup v1 hybrid host ("cgroups in hybrid mode
# not supported").
root_pkgs() { case $1 in docker28) echo docker.io containerd runc ;; *) echo podman runc ;; esac; }
chrooted() { [[ -n $(engine_root "$1") ]]; }

# root_has DIR PKG...: DIR is a complete root with every PKG installed.
root_has() {
  local r=$1
  shift
  # shellcheck disable=SC2016 # a dpkg-query format, not an expansion
  [[ -x $r/usr/bin/dpkg-query ]] &&
    (($(chroot "$r" dpkg-query -W -f='${db:Status-Abbrev}\n' "$@" 2>/dev/null | grep -c '^ii') == $#))
}

# root_pids DIR: the processes whose root is DIR (engines, their containerd, shims, conmons):
# the namespace IN_ROOT made has DIR mounted at "/".
root_pids() {
  grep -lsF " $1 / " /proc/[0-9]*/mountinfo | cut -d/ -f3
  return 0 # none
}

# engine_pids NAME: the processes of chrooted engine NAME of this $ROOT: those whose mount
# table names its directory (bound in the engine's namespace, or under a container's overlay),
# the engine and its containerd, shims, conmons and containers.
engine_pids() {
  local d=$ROOT/$1
  grep -lsF -e " $d " -e "$d/" /proc/[0-9]*/mountinfo | cut -d/ -f3
  return 0 # none
}

# ensure_root NAME: engine NAME's Debian root (debootstrap, about 35 s once), its packages
# installed by its own apt. Made in DIR.tmp and moved in place when complete, so a half-made
# root is never used; one that lacks a package is made again.
ensure_root() {
  local r t uri suite pkgs
  r=$(engine_root "$1") suite=$(root_suite "$1")
  read -r -a pkgs <<<"$(root_pkgs "$1")"
  root_has "$r" "${pkgs[@]}" && return 0
  [[ -z $(root_pids "$r") ]] || die "$r is in use (pids $(root_pids "$r" | xargs)); run '$0 down' first"
  command -v debootstrap >/dev/null || apt_install debootstrap
  t=$r.tmp uri=$(mirror_uri)
  log "making a Debian $suite root with ${pkgs[*]} in $r"
  rm -rf "$t"
  mkdir -p "$CACHE"
  debootstrap --variant=minbase "$suite" "$t" "$uri" >"$r.log" 2>&1 || die "debootstrap $suite failed; see $r.log"
  # A mirror's sid snapshot may carry an expired Release file.
  echo 'Acquire::Check-Valid-Until "false";' >"$t/etc/apt/apt.conf.d/99stowage-test"
  # No init runs in the root: the packages must not try to start their services.
  printf '#!/bin/sh\nexit 101\n' >"$t/usr/sbin/policy-rc.d"
  chmod 755 "$t/usr/sbin/policy-rc.d"
  { chroot "$t" apt-get -qq update &&
    DEBIAN_FRONTEND=noninteractive chroot "$t" apt-get -qq install -y --no-install-recommends "${pkgs[@]}"; } \
    >>"$r.log" 2>&1 || die "installing ${pkgs[*]} in the $suite root failed; see $r.log"
  chroot "$t" apt-get clean # the downloaded .debs, about 200 MB
  root_has "$t" "${pkgs[@]}" || die "${pkgs[*]} missing from the $suite root; see $r.log"
  rm -rf "$r"
  mv "$t" "$r"
}

# IN_ROOT ROOT DIR CMD...: runs CMD chrooted in ROOT, in a mount namespace of its own (its
# mounts go with its last process and never reach the host's table): /proc, /sys and /dev from
# the host, a fresh /run, a fresh /dev/shm (Podman keeps its locks there: fresh like /run, and
# apart from the host's Podman's), and the engine's directory DIR at the same path inside and
# out, so its socket, pid file and configuration paths mean the same on both sides. The host's
# /tmp too: the tests bind-mount files from their scratch directories there into containers
# (a config, a data root), and the engine resolves those paths in its own root. The execs
# keep the pid: $! is CMD's.
# ROOT is bound on itself first, and made the namespace's root with pivot_root, not chroot:
# runc makes / a recursive slave, which fails ("mount dst=/, flags=MS_REC|MS_SLAVE: invalid
# argument") where / is no mount point; and `docker exec` (runc joining a container's mount
# namespace) lands in the namespace's root, which under a chroot is the host's.
# shellcheck disable=SC2016 # expanded by the inner bash
IN_ROOT=(unshare --mount --propagation slave -- bash -euc '
r=$1 d=$2
shift 2
mount --rbind "$r" "$r"
for m in /proc /sys /dev; do mount --rbind "$m" "$r$m"; mount --make-rslave "$r$m"; done
mount -t tmpfs -o mode=755 tmpfs "$r/run"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
mount --rbind /tmp "$r/tmp"; mount --make-rslave "$r/tmp"
mkdir -p "$r$d" "$r/.host"
mount --bind "$d" "$r$d"
cd "$r"
pivot_root . .host
umount -l /.host
PATH=/usr/sbin:/usr/bin:/sbin:/bin exec "$@"' in-root)

# cosign 3 from Debian sid, which signs as most images are signed today (Sigstore bundles as
# OCI referrers). It needs sid's glibc: it lives in a debootstrapped sid root (about 30 s
# once) and runs on the host through that root's own dynamic loader and libraries, so no
# chroot or mounts are needed. $COSIGN3 is a wrapper script that does so.
COSIGN3_ROOT=$CACHE/sid-cosign
COSIGN3=$COSIGN3_ROOT/cosign3
ensure_cosign3() {
  [[ -x $COSIGN3 ]] && "$COSIGN3" version >/dev/null 2>&1 && return 0
  command -v debootstrap >/dev/null || apt_install debootstrap
  local t=$COSIGN3_ROOT.tmp uri
  uri=$(mirror_uri)
  log "making a Debian sid root with cosign 3 in $COSIGN3_ROOT"
  rm -rf "$t"
  mkdir -p "$CACHE"
  debootstrap --variant=minbase sid "$t" "$uri" >"$CACHE/sid-debootstrap.log" 2>&1 ||
    die "debootstrap sid failed; see $CACHE/sid-debootstrap.log"
  # A mirror's sid snapshot may carry an expired Release file.
  echo 'Acquire::Check-Valid-Until "false";' >"$t/etc/apt/apt.conf.d/99stowage-test"
  { chroot "$t" apt-get -qq update && chroot "$t" apt-get -qq install -y --no-install-recommends cosign; } \
    >>"$CACHE/sid-debootstrap.log" 2>&1 || die "installing cosign in the sid root failed; see $CACHE/sid-debootstrap.log"
  printf '%s\n' '#!/bin/sh' \
    '# cosign 3 from this Debian sid root, run with the root'"'"'s own loader and libraries.' \
    'R=$(dirname "$(readlink -f "$0")")' \
    'exec "$R/lib64/ld-linux-x86-64.so.2" --library-path "$R/lib/x86_64-linux-gnu:$R/usr/lib/x86_64-linux-gnu" "$R/usr/bin/cosign" "$@"' \
    >"$t/cosign3"
  chmod 755 "$t/cosign3"
  rm -rf "$COSIGN3_ROOT"
  mv "$t" "$COSIGN3_ROOT"
  "$COSIGN3" version >/dev/null 2>&1 || die "cosign 3 does not run from $COSIGN3_ROOT"
}

# fetch_trixie DIR PKG...: Debian 13's PKGs, fetched with apt-get download and unpacked (never
# installed) under DIR/root. They run on Debian 12 as they are.
fetch_trixie() {
  local t=$1
  shift
  log "fetching $* from Debian 13 into $t"
  command -v dpkg-deb >/dev/null || die "dpkg-deb is missing"
  local uri
  uri=$(mirror_uri)
  rm -rf "$t.tmp"
  mkdir -p "$t.tmp/lists/partial" "$t.tmp/cache/archives/partial" "$t.tmp/debs" "$t.tmp/root"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" >"$t.tmp/sources.list"
  # Its own sources list, lists and cache: the system's apt state stays as it was.
  local apt_opts=(-o "Dir::Etc::sourcelist=$t.tmp/sources.list" -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$t.tmp/lists" -o "Dir::Cache=$t.tmp/cache")
  apt-get -qq "${apt_opts[@]}" update >"$t.tmp/apt.log" 2>&1 || { cat "$t.tmp/apt.log" >&2; die "apt-get update (trixie) failed"; }
  (cd "$t.tmp/debs" && apt-get -qq "${apt_opts[@]}" download "$@") >>"$t.tmp/apt.log" 2>&1 ||
    { cat "$t.tmp/apt.log" >&2; die "apt-get download (trixie) failed"; }
  local deb
  for deb in "$t.tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$t.tmp/root"; done
  rm -rf "$t.tmp/lists" "$t.tmp/cache" "$t"
  mv "$t.tmp" "$t"
}

# cosign_cmd ARGS...: cosign with no password on its keys, no transparency log, and its own
# config and cache (nothing under ~ is read or written).
cosign_cmd() {
  mkdir -p "$ROOT/cosign/home"
  HOME=$ROOT/cosign/home DOCKER_CONFIG=$ROOT/cosign/home COSIGN_PASSWORD= "$COSIGN" "$@"
}

# The test key pair ($ROOT/cosign/cosign.key and .pub), and signatures by it of gamma:1 and of
# the multi-platform index multi:1 (the index only, as `cosign sign` does by default). The
# other seeded images stay unsigned.
SIGNED_IMAGES=(gamma:1 multi:1)
sign_seeded() {
  [[ -e $ROOT/signed-v1 && -s $ROOT/cosign/cosign.pub ]] && return 0
  ensure_cosign
  if [[ ! -s $ROOT/cosign/cosign.pub ]]; then
    rm -f "$ROOT/cosign/cosign.key" "$ROOT/cosign/cosign.pub"
    mkdir -p "$ROOT/cosign"
    cosign_cmd generate-key-pair --output-key-prefix "$ROOT/cosign/cosign" >/dev/null 2>&1 ||
      die "cosign generate-key-pair failed"
  fi
  local ref out
  for ref in "${SIGNED_IMAGES[@]}"; do
    out=$(cosign_cmd sign --key "$ROOT/cosign/cosign.key" --tlog-upload=false --yes \
      "$PLAIN/stowage-test/$ref" 2>&1) || die "cosign sign $ref: $out"
  done
  touch "$ROOT/signed-v1"
  log "signed ${SIGNED_IMAGES[*]} with $ROOT/cosign/cosign.pub"
}

# Docker 28 chrooted in its sid root, with the containerd image store as for Docker 26; its own
# containerd and runc, from the root.
start_docker28() {
  local d=$1 dockerd_cmd
  dockerd_cmd=("${IN_ROOT[@]}" "$(engine_root docker28)" "$d" dockerd)
  echo '{"features": {"containerd-snapshotter": true}}' >"$d/daemon.json"
  start_dockerd "$d" docker28 --config-file "$d/daemon.json"
}

start_docker26() {
  local d=$1 t=$CACHE/trixie/root
  # The containerd image store: the default for fresh installs from Docker 29.
  echo '{"features": {"containerd-snapshotter": true}}' >"$d/daemon.json"
  # Its own containerd first on PATH; Debian 12's runc, since trixie's needs glibc 2.38.
  PATH=$t/usr/bin:$t/usr/sbin:$PATH start_dockerd "$d" docker26 --config-file "$d/daemon.json" \
    --add-runtime r=/usr/sbin/runc --default-runtime r
}

# start_podman DIR NAME: Podman's Docker-compatible API on its own socket, storage and
# configuration; chrooted in its root for podman5 and podman58.
start_podman() {
  local d=$1 name=$2 run=(setsid) containers_extra='' engine_extra=''
  if chrooted "$name"; then
    run+=("${IN_ROOT[@]}" "$(engine_root "$name")" "$d")
    # `docker run` asks for the default network, which Podman 5 makes a netavark bridge (needs
    # nftables, and is not hermetic): none instead, as dockerd --bridge=none does.
    containers_extra='netns = "none"'
    engine_extra='runtime = "runc"' # the root has no crun (see root_pkgs)
  fi
  # The loopback registries speak plain HTTP (Podman, unlike Docker, does not assume so for
  # 127.0.0.0/8); unqualified names must not go anywhere.
  local port
  {
    echo 'unqualified-search-registries = []'
    for port in "${PLAIN#*:}" "${AUTH#*:}" "${MIRROR#*:}" $(seq "${TEST_REGISTRY_PORTS[@]}"); do
      printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port"
    done
  } >"$d/registries.conf"
  # No systemd here: events go to a file (the default, journald, has none to write to), and
  # cgroups are managed directly.
  # Podman, as root, raises a container's open-files and processes limits to its own defaults
  # (1048576), above this sandbox's hard limits, and the container cannot start ("error setting
  # rlimit type 7"): start them at the limits the sandbox has.
  local limits=() n
  n=$(ulimit -Hn); [[ $n == unlimited ]] || limits+=("\"nofile=$n:$n\"")
  # Podman lowers its own processes limit (32768 seen); any container here needs a handful.
  limits+=('"nproc=4096:4096"')
  cat >"$d/containers.conf" <<EOF
[containers]
default_ulimits = [$(IFS=,; echo "${limits[*]}")]
$containers_extra
[engine]
events_logger = "file"
events_logfile_path = "$d/events.log"
cgroup_manager = "cgroupfs"
$engine_extra
[network]
default_network = "none"
EOF
  CONTAINERS_REGISTRIES_CONF=$d/registries.conf CONTAINERS_CONF=$d/containers.conf \
    "${run[@]}" podman --root "$d/root" --runroot "$d/run" system service --time=0 "unix://$d/engine.sock" \
    </dev/null >>"$d/engine.log" 2>&1 &
  echo $! >"$d/engine.pid"
  wait_for 60 $! "$d/engine.log" engine_up "$name"
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
  rm -f "$ROOT/signed-v1" # new digests: sign them again
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
  cat >"$ROOT/env.$ENGINE" <<EOF
DOCKER_HOST=unix://$ROOT/$ENGINE/engine.sock
STOWAGE_TEST_ENGINE=$ENGINE
STOWAGE_TEST_SEED_DOCKER_HOST=unix://$ROOT/$SEED_ENGINE/engine.sock
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
STOWAGE_TEST_COSIGN=$COSIGN
STOWAGE_TEST_COSIGN3=$COSIGN3
STOWAGE_TEST_QUADLET=$QUADLET
STOWAGE_TEST_COSIGN_HOME=$ROOT/cosign/home
STOWAGE_TEST_COSIGN_KEY=$ROOT/cosign/cosign
EOF
}

# A minimal Debian root (debootstrap, about 30 s once) that the .deb is installed into, with its
# maintainer scripts run for real, without touching this machine's own package database.
# systemd-sysusers is there because the package creates its user with it, as on a real host
# (an older root without it is made again).
ensure_debian_root() {
  # ca-certificates: the package depends on it (a root made before that is made again).
  [[ -x $ROOT/debian/usr/bin/dpkg && -x $ROOT/debian/usr/bin/systemd-sysusers &&
    -s $ROOT/debian/etc/ssl/certs/ca-certificates.crt ]] && return 0
  log "creating a Debian root for package tests"
  rm -rf "$ROOT/debian.tmp"
  debootstrap --variant=minbase --include=systemd-standalone-sysusers,ca-certificates bookworm \
    "$ROOT/debian.tmp" "$DEBIAN_MIRROR" >"$ROOT/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $ROOT/debootstrap.log"
  rm -rf "$ROOT/debian" # a half-made one would make mv move the new root into it
  mv "$ROOT/debian.tmp" "$ROOT/debian"
}

cmd_up() {
  ensure_packages
  mkdir -p "$ROOT" "$ROOT/cli-config"
  local r
  for r in "${REGISTRIES[@]}"; do start_registry "$r"; done
  # The seed engine pushes the seeded images, and the tests' own (moving tags): it is always up.
  start_engine "$SEED_ENGINE"
  seed
  sign_seeded
  ensure_cosign3
  ensure_quadlet
  start_engine "$ENGINE"
  write_env
  log "up: $ENGINE ($ROOT/env.$ENGINE)"
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

# stop_engine NAME: SIGTERM, as a service manager stops it (dockerd stops its containerd and
# its containers).
stop_engine() {
  # A chrooted Podman starts with a fresh /run, which it takes for a reboot: a container left
  # running in the old mount namespace would be marked exited, out of its reach. Its containers
  # stop with it, as dockerd's do.
  if chrooted "$1" && [[ $1 == podman* ]] && engine_up "$1"; then
    local ids
    mapfile -t ids < <(dk_on "$1" ps -q 2>/dev/null)
    ((${#ids[@]} == 0)) || dk_on "$1" stop "${ids[@]}" >/dev/null || true
  fi
  stop_pid "$ROOT/$1/engine.pid" 60
  [[ $1 == podman* ]] || stop_pid "$ROOT/$1/exec/containerd/containerd.pid" 10
  chrooted "$1" && stop_leftovers "$1"
  return 0
}

# stop_leftovers NAME: what chrooted engine NAME left running if it had to be killed (its
# containerd, shims, conmons, containers): with them go its mount namespaces, the last places
# its root and directory are mounted.
stop_leftovers() {
  local pids deadline=$((SECONDS + 10))
  pids=$(engine_pids "$1")
  [[ -n $pids ]] || return 0
  log "stopping what $1 left running: ${pids//$'\n'/ }"
  # shellcheck disable=SC2086 # one pid a word
  kill $pids 2>/dev/null || true
  while [[ -n $(engine_pids "$1") ]] && ((SECONDS < deadline)); do sleep 0.2; done
  pids=$(engine_pids "$1")
  # shellcheck disable=SC2086
  [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true
}

cmd_down() {
  local r m
  # In parallel: each daemon takes ~2 s to exit. dockerd stops its containers (up to its 15 s
  # shutdown timeout) and its managed containerd (stop_engine stops it if dockerd had to be killed).
  local e
  for e in "${ENGINES[@]}"; do stop_engine "$e" & done
  for r in "${REGISTRIES[@]}"; do stop_pid "$ROOT/registry-$r.pid" 10 & done
  wait
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
  if engine_up "$ENGINE"; then echo "$ENGINE: running (pid $(<"$ROOT/$ENGINE/engine.pid"), unix://$ROOT/$ENGINE/engine.sock)"
  else echo "$ENGINE: not running"; ok=1; fi
  for r in "${REGISTRIES[@]}"; do
    if registry_up "$r"; then echo "registry-$r: running (pid $(<"$ROOT/registry-$r.pid"), $(registry_addr "$r"))"
    else echo "registry-$r: not running"; ok=1; fi
  done
  if seeded; then echo "seed: done"; else echo "seed: missing"; ok=1; fi
  return $ok
}

main() {
  case $ENGINE in
    docker20 | docker26 | podman | docker28 | podman5 | podman58) ;;
    *) die "unknown STOWAGE_TEST_ENGINE '$ENGINE' (docker20, docker26, podman, docker28, podman5 or podman58)" ;;
  esac
  case ${1:-} in
    up) cmd_up ;;
    tools) ensure_test_tools; mkdir -p "$ROOT"; ensure_debian_root ;;
    down) cmd_down "${2:-}" ;;
    env) [[ -f $ROOT/env.$ENGINE ]] || die "no $ROOT/env.$ENGINE: run '$0 up'"; cat "$ROOT/env.$ENGINE" ;;
    status) cmd_status ;;
    stop-engine) stop_engine "$ENGINE" ;;
    start-engine) start_engine "$ENGINE" ;;
    *) echo "usage: $0 up | tools | down [--purge] | env | status | stop-engine | start-engine" >&2; exit 2 ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
