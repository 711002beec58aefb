#!/usr/bin/env bash
# The .deb under a real systemd as PID 1: a Debian 12 root (systemd 252) and a Debian 13 root
# (systemd 257), each booted with systemd-nspawn, the package installed the README's way, and
# its unit started, reloaded (good and bad configs), restarted, starved of its watchdog, run
# through a pull/prune/reload/stop cycle, upgraded and purged.
#
#   scripts/systemd-test.sh [--suite bookworm|trixie|all] [DEB]
#
# DEB: the package to test (default target/packages/stowage_0.1.0-1_amd64.deb; this script
# never builds: scripts/package.sh does). The test environment must be up for the engine named
# by STOWAGE_TEST_ENGINE (docker26 by default here, or docker20; Podman's socket has no group
# the daemon's user could be given): `STOWAGE_TEST_ENGINE=docker26 scripts/test-env.sh up`.
#
# Prints one `ok - ...` / `not ok - ... <why>` line per check, `#` lines with what was
# observed, a count and the elapsed seconds per root; exits 1 if any check failed.
# Made once and cached under /var/cache/stowage-test/ (nothing is installed on the host):
#   nspawn-bookworm/        Debian 12's systemd-nspawn and libsystemd-shared, unpacked
#   systemd-roots/SUITE/    debootstrap minbase + systemd, dbus, procps (about 40 s each); no
#                           ca-certificates (its .debs wait in the root's apt cache)
# Each run boots a throw-away overlay over the cached root, so runs leave the cache as it was.
# Written to target/systemd-test/: SUITE.log (every check's output), console-SUITE.log,
# journal-SUITE.txt (the unit's journal), security-SUITE.txt (`systemd-analyze security`).
#
# The container shares the host's network (the loopback registries) and user IDs. The engine's
# socket directory is bound read-only at /run/stowage-engine, and a tmpfiles.d symlink puts the
# socket at /run/docker.sock, where the shipped unit looks: the unit runs without a drop-in.
# Its `docker` group gets the socket's gid. The engine is shared with the cargo tests: the
# checks only remove the seeded images they require, and the prune config keeps everything.
#
# SYSTEMD_TEST_CGROUP=unified (default: the container gets cgroup v2, as a stock Debian 12 or
# 13 host has) or hybrid (as this machine's host).
set -euo pipefail

export STOWAGE_TEST_ENGINE=${STOWAGE_TEST_ENGINE:-docker26}
# shellcheck source-path=SCRIPTDIR source=test-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/test-env.sh" # ROOT, ENGINE, CACHE, PLAIN, dk_on, mirror_uri, ...

log() { echo "systemd-test: $*" >&2; }
die() { log "error: $*"; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/target/systemd-test
NSPAWN_DIR=$CACHE/nspawn-bookworm
ROOTS=$CACHE/systemd-roots
RUNS=$CACHE/systemd-runs
CGROUP_MODE=${SYSTEMD_TEST_CGROUP:-unified}
ENGINE_DIR=$ROOT/$ENGINE
# Seeded images the configs require: IMG for the pull checks, WD_IMG for the wedged loop.
IMG=$PLAIN/stowage-test/gamma:1
WD_IMG=$PLAIN/stowage-test/beta:1
IMG_REPO=${IMG#*/} IMG_REPO=${IMG_REPO%:*} # stowage-test/gamma, as the state file names it
# Never reachable here (no internet): only what the daemon says about an HTTPS registry.
HTTPS_IMG=registry.example.com/stowage-test/none:1
CONFIG=/etc/stowage/config.toml
LOCK_FILE=/var/lib/stowage/state.json.lock

usage() {
  echo "usage: $0 [--suite bookworm|trixie|all] [DEB]" >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------
# Preparation (cached)

# fetch_unpacked SUITE DIR PKG...: Debian SUITE's PKGs, fetched with apt-get download and
# unpacked (never installed) into DIR/root; apt's own lists and cache, so the host's apt state
# stays as it was. Installing Debian 12's systemd-container would upgrade the host's systemd.
fetch_unpacked() {
  local suite=$1 t=$2 uri deb
  shift 2
  uri=$(mirror_uri)
  rm -rf "$t.tmp"
  mkdir -p "$t.tmp/lists/partial" "$t.tmp/cache/archives/partial" "$t.tmp/debs" "$t.tmp/root"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
    "$uri" "$suite" "$uri" "$suite-updates" >"$t.tmp/sources.list"
  local apt_opts=(-o "Dir::Etc::sourcelist=$t.tmp/sources.list" -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$t.tmp/lists" -o "Dir::Cache=$t.tmp/cache")
  { apt-get -qq "${apt_opts[@]}" update && (cd "$t.tmp/debs" && apt-get -qq "${apt_opts[@]}" download "$@"); } \
    >"$t.tmp/apt.log" 2>&1 || { cat "$t.tmp/apt.log" >&2; die "fetching $* ($suite) failed"; }
  for deb in "$t.tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$t.tmp/root"; done
  rm -rf "$t.tmp/lists" "$t.tmp/cache" "$t"
  mv "$t.tmp" "$t"
}

NSPAWN=$NSPAWN_DIR/root/usr/bin/systemd-nspawn
nspawn_runs() { LD_LIBRARY_PATH=$NSPAWN_DIR/root/usr/lib/x86_64-linux-gnu/systemd "$NSPAWN" --version >/dev/null 2>&1; }
ensure_nspawn() {
  nspawn_runs && return 0
  log "fetching Debian 12's systemd-nspawn into $NSPAWN_DIR"
  fetch_unpacked bookworm "$NSPAWN_DIR" systemd-container libsystemd-shared
  nspawn_runs || die "$NSPAWN does not run"
}

# ensure_root SUITE: the cached root of SUITE (debootstrap minbase with systemd). No
# ca-certificates, as on some minimal hosts; its .debs are only downloaded into the root's apt
# cache, so that installing a package that depends on it (or check_ca's fallback) needs no
# download at test time.
ensure_root() {
  local suite=$1 dir=$ROOTS/$1 t0=$EPOCHREALTIME how=cached
  if [[ ! -e $dir.ready ]]; then
    how=made
    command -v debootstrap >/dev/null || apt_install debootstrap
    log "making the $suite root in $dir (about a minute)"
    rm -rf "$dir.tmp" "$dir"
    mkdir -p "$ROOTS"
    debootstrap --variant=minbase --include=systemd,dbus,procps "$suite" "$dir.tmp" "$(mirror_uri)" \
      >"$dir.log" 2>&1 || die "debootstrap $suite failed; see $dir.log"
    { chroot "$dir.tmp" apt-get clean &&
      chroot "$dir.tmp" apt-get install -y -qq --download-only --no-install-recommends ca-certificates; } \
      >>"$dir.log" 2>&1 || die "downloading ca-certificates into the $suite root failed; see $dir.log"
    mv "$dir.tmp" "$dir"
    touch "$dir.ready"
  fi
  note "prepare $suite: root $how in $(since "$t0") s ($(du -sm "$dir" | cut -f1) MB)"
}

# make_upgrade_deb VERSION [CHANGED]: DEB repacked as VERSION (in $DEBS); with CHANGED, its
# shipped config also differs, as in a release that changes packaging/config.toml.
make_upgrade_deb() {
  local v=$1 d=$DEBS/pkg-$1
  rm -rf "$d"
  dpkg-deb -R "$DEB" "$d"
  sed -i "s/^Version: .*/Version: $v/" "$d/DEBIAN/control"
  [[ -z ${2:-} ]] || echo "# A line added by scripts/systemd-test.sh (a changed shipped config)." >>"$d/etc/stowage/config.toml"
  # The conffile's md5sum is read from the file; gzip: quicker than xz, same package.
  dpkg-deb -Zgzip -b "$d" "$DEBS/stowage_${v}_amd64.deb" >/dev/null
  rm -rf "$d"
}

# ---------------------------------------------------------------------------------------------
# Output

# note TEXT: a `#` line (inside a check: printed after its ok/not ok line).
note() {
  if [[ -n ${IN_CHECK:-} ]]; then echo "$*" >>"$NOTES"; else echo "# $*"; fi
}
# why TEXT: a check's reason for failing (its last output line), and the failure itself.
why() {
  echo "$*"
  return 1
}
# since START: seconds since $EPOCHREALTIME was START, one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# check NAME FN: runs FN in a subshell with errexit on, its output into the suite's log; ok
# when it succeeds, else `not ok` with the last line it printed.
check() {
  local name=$1 fn=$2 rc t0=$EPOCHREALTIME
  : >"$NOTES"
  set +e
  (
    set -e
    IN_CHECK=1
    "$fn"
  ) >"$RUN_DIR/check.out" 2>&1
  rc=$?
  set -e
  { echo "=== $name: rc $rc, $(since "$t0") s"; cat "$RUN_DIR/check.out" "$NOTES"; } >>"$LOG"
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
    echo "ok - $SUITE: $name ($(since "$t0") s)"
  else
    FAILED=$((FAILED + 1))
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
    echo "not ok - $SUITE: $name: $(tail -n1 "$RUN_DIR/check.out")"
  fi
  sed 's/^/#   /' "$NOTES"
  return 0
}

# ---------------------------------------------------------------------------------------------
# The container

# ct CMD...: CMD inside the container (all its namespaces), with a clean environment and a
# time limit; stdin is /dev/null (files are written from the host, through $MERGED).
ct() {
  timeout --kill-after=5 "${CT_TIMEOUT:-120}" nsenter -t "$CT_PID" -a \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat DEBIAN_FRONTEND=noninteractive "$@" </dev/null
}

# wait_until SECONDS CMD...: polls CMD every half second; fails after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# The cgroup directories a container's nspawn is moved into: the unified and the named
# systemd hierarchy on a hybrid host, the root on a cgroup v2 host.
cgroup_dirs() {
  if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
    echo "/sys/fs/cgroup/$CG"
  else
    echo "/sys/fs/cgroup/unified/$CG" "/sys/fs/cgroup/systemd/$CG"
  fi
}

# make_work_root: a fresh overlay over the cached root, and what the container needs on top:
# the engine's group, /run/docker.sock, and the packages to install.
make_work_root() {
  mkdir -p "$RUNS"
  RUN_DIR=$(mktemp -d "$RUNS/$SUITE.XXXXXX")
  MERGED=$RUN_DIR/merged
  NOTES=$RUN_DIR/notes
  mkdir "$RUN_DIR/upper" "$RUN_DIR/work" "$MERGED"
  mount -t overlay overlay -o "lowerdir=$ROOTS/$SUITE,upperdir=$RUN_DIR/upper,workdir=$RUN_DIR/work" "$MERGED"
  # The container shares the host's IDs: its docker group must carry the socket's gid.
  local gid taken
  gid=$(stat -c %g "$ENGINE_DIR/engine.sock")
  taken=$(awk -F: -v g="$gid" '$3 == g { print $1 }' "$MERGED/etc/group")
  [[ -z $taken || $taken == docker ]] || die "gid $gid (the engine socket's) is $taken's in the $SUITE root"
  [[ -n $taken ]] || chroot "$MERGED" groupadd -g "$gid" docker
  # A directory bind, not the socket's: a file bind goes stale when the engine re-creates it.
  echo 'L+ /run/docker.sock - - - - /run/stowage-engine/engine.sock' >"$MERGED/etc/tmpfiles.d/stowage-test-engine.conf"
  cp "$DEBS"/*.deb "$MERGED/root/"
}

# start_container: systemd-nspawn in cgroups of its own, in the background; sets NSPAWN_PID
# and, once it is there, CT_PID (the container's systemd, as the host sees it). check_boot
# then says whether it booted.
start_container() {
  local d dirs
  read -ra dirs <<<"$(cgroup_dirs)"
  for d in "${dirs[@]}"; do mkdir -p "$d"; done
  local env=(LD_LIBRARY_PATH="$NSPAWN_DIR/root/usr/lib/x86_64-linux-gnu/systemd")
  [[ $CGROUP_MODE == unified ]] && env+=(SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1)
  (
    for d in "${dirs[@]}"; do echo "$BASHPID" >"$d/cgroup.procs"; done
    exec env "${env[@]}" "$NSPAWN" -D "$MERGED" --boot --register=no --keep-unit \
      --console=read-only --link-journal=no --machine="$MACHINE" \
      --bind-ro="$ENGINE_DIR:/run/stowage-engine"
  ) </dev/null >"$OUT/console-$SUITE.log" 2>&1 &
  NSPAWN_PID=$!
  wait_until 30 find_container_init || true
}

# find_container_init: sets CT_PID to nspawn's child that is PID 1 in its own namespace.
find_container_init() {
  local p
  for p in $(pgrep -P "$NSPAWN_PID" 2>/dev/null); do
    if awk '$1 == "NSpid:" && $NF == 1 { found = 1 } END { exit !found }' "/proc/$p/status" 2>/dev/null; then
      CT_PID=$p
      return 0
    fi
  done
  return 1
}

# teardown: power off (or kill) the container, then remove its cgroups, overlay and run dir.
# Idempotent; also the EXIT trap.
teardown() {
  [[ -n ${RUN_DIR:-} ]] || return 0
  if [[ -n ${NSPAWN_PID:-} ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    if [[ -n ${CT_PID:-} ]]; then CT_TIMEOUT=10 ct systemctl poweroff >/dev/null 2>&1 || true; fi
    wait_until 30 nspawn_gone || {
      log "$SUITE: no poweroff within 30 s; terminating systemd-nspawn"
      kill -TERM "$NSPAWN_PID" 2>/dev/null || true
      wait_until 10 nspawn_gone || kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    }
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  local d p
  for d in $(cgroup_dirs); do
    [[ -d $d ]] || continue
    # Anything left in our cgroups is ours (the container's processes).
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r p; do kill -KILL "$p" 2>/dev/null || true; done
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || log "could not remove cgroup $d"
  done
  if mountpoint -q "$MERGED"; then umount "$MERGED" 2>/dev/null || umount -l "$MERGED"; fi
  mountpoint -q "$MERGED" || rm -rf "$RUN_DIR"
  # systemd-nspawn leaves this behind where /run is not a tmpfs; it is empty by now.
  rmdir "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null || true
  RUN_DIR='' NSPAWN_PID='' CT_PID=''
}

nspawn_gone() { ! kill -0 "$NSPAWN_PID" 2>/dev/null; }

# The engine as it was found: the required images it did not hold at start are removed again.
restore_engine() {
  local ref
  for ref in "${ABSENT_AT_START[@]}"; do dk_on "$ENGINE" image rm "$ref" >/dev/null 2>&1 || true; done
}

on_exit() {
  local rc=$?
  teardown
  restore_engine
  [[ -z ${DEBS:-} ]] || rm -rf "$DEBS"
  exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# Helpers for the checks

main_pid() { ct systemctl show -p MainPID --value stowage; }
unit_active() { [[ $(ct systemctl is-active stowage) == active ]]; }
has_image() { dk_on "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
# drop_image REF: REF is absent from the engine afterwards.
drop_image() {
  dk_on "$ENGINE" image rm "$1" >/dev/null 2>&1 || true
  ! has_image "$1" || why "cannot remove $1 from the engine"
}
# The journal's position now; journal_after CURSOR: the unit's lines since then.
journal_cursor() { ct journalctl -n1 -q --show-cursor | sed -n 's/^-- cursor: //p'; }
journal_after() { ct journalctl -u stowage -q --no-pager -o short-precise --after-cursor="$1"; }
# journal_has CURSOR ERE: the unit logged a line matching ERE since CURSOR. (No grep -q nor
# head in these pipes: an early exit would fail journalctl's writes, and pipefail the pipe.)
journal_has() { journal_after "$1" | grep -E -- "$2" >/dev/null; }
# first_match ERE: the first input line matching ERE (case-insensitive), reading all input.
first_match() { awk -v re="$1" 'tolower($0) ~ tolower(re) && !n++'; }
# Only the message of a journal line (what follows `stowage[PID]: ` or `systemd[1]: `).
message() { sed -E 's/^.*(stowage|systemd)\[[0-9]+\]: //'; }
# Image tables appended to the config the README's way.
require_image() { printf '[[image]]\nname = "%s"\n' "$1" >>"$MERGED$CONFIG"; }
shipped_config() { cp "$RUN_DIR/config.shipped" "$MERGED$CONFIG"; }
show_journal_tail() { ct journalctl -u stowage -q --no-pager -n 15 -o short-precise || true; }
n_restarts() { ct systemctl show -p NRestarts --value stowage; }
restarted() { (($(n_restarts) > 0)); }
lock_held() { ! ct flock -n "$LOCK_FILE" true; }
no_stowage_process() { ! ct pgrep -x stowage >/dev/null; }
# The checks start the unit more often than systemd's default start limit allows (5 starts in
# 10 s, manual ones included; then 'start-limit-hit'): a check that starts it begins afresh.
reset_start_limit() { ct systemctl reset-failed stowage >/dev/null 2>&1 || true; }
# The package's version and dpkg status in the container.
pkg_state() { ct dpkg-query -W -f="\${Version} \${Status}" stowage; }
# ls_dir DIR: its entries on one line.
ls_dir() { find "$1" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# The checks, in the order they run (numbers as in the brief)

check_boot() {
  local state
  [[ -n $CT_PID ]] || why "no container init after 30 s (see $OUT/console-$SUITE.log)"
  state=$(CT_TIMEOUT=90 ct systemctl is-system-running --wait) || true
  [[ $state == running || $state == degraded ]] ||
    why "the system is '$state' after 90 s (see $OUT/console-$SUITE.log)"
  [[ $state == running ]] || note "failed units: $(ct systemctl --failed --no-legend --plain | awk '{ print $1 }' | xargs)"
  note "systemd $(ct systemctl --version | awk 'NR == 1 { print $2 }') as PID 1, cgroup $CGROUP_MODE; $state $(since "$BOOT_T0") s after systemd-nspawn started"
}

# 1. Installed the README's way (no recommends: the engine is the host's), enabled, started
# on the shipped config, running as `stowage` inside its sandbox.
check_install() {
  local out pid uid status groups gid
  out=$(ct apt-get install -y --no-install-recommends "/root/$(basename "$DEB")" 2>&1) ||
    { echo "$out"; why "apt-get install failed: $(tail -n1 <<<"$out")"; }
  echo "$out"
  note "apt-get installed: $(awk '/NEW packages will be installed/ { on = 1; next } on && /^  / { printf "%s", $0; next } { on = 0 }' <<<"$out" | xargs)"
  cp "$MERGED$CONFIG" "$RUN_DIR/config.shipped"
  [[ $(ct systemctl is-enabled stowage) == enabled ]] || why "not enabled: $(ct systemctl is-enabled stowage)"
  unit_active || { show_journal_tail; why "not active after install: $(ct systemctl is-active stowage)"; }
  pid=$(main_pid)
  uid=$(ct id -u stowage)
  status=$(ct cat "/proc/$pid/status")
  echo "$status"
  awk -v u="$uid" '$1 == "Uid:" { exit !($2 == u && $3 == u && $4 == u && $5 == u) }' <<<"$status" ||
    why "MainPID $pid runs as '$(grep ^Uid: <<<"$status")', not uid $uid (stowage)"
  gid=$(stat -c %g "$ENGINE_DIR/engine.sock")
  groups=$(awk '$1 == "Groups:" { $1 = ""; print }' <<<"$status")
  [[ " $groups " == *" $gid "* ]] || why "MainPID's groups ($groups) lack docker ($gid)"
  grep -qE '^NoNewPrivs:\s+1$' <<<"$status" || why "NoNewPrivs is not set"
  grep -qE '^Seccomp:\s+2$' <<<"$status" || why "no seccomp filter"
  grep -qE '^CapEff:\s+0+$' <<<"$status" || why "capabilities left: $(grep ^CapEff: <<<"$status")"
  note "MainPID $pid: uid $uid (stowage), groups$groups, NoNewPrivs 1, Seccomp 2, CapEff 0"
}

# 9. systemd-analyze security, from inside the root, on the unit as shipped.
check_security() {
  local file=$OUT/security-$SUITE.txt
  ct systemd-analyze security --no-pager stowage.service >"$file" 2>&1 || why "systemd-analyze security failed (see $file)"
  grep -q 'Overall exposure level' "$file" || why "no score in $file"
  note "$(grep 'Overall exposure level' "$file" | sed 's/^→ //') (table: $file)"
}

# A pull from the loopback plain registry on a host without CA certificates. A package that
# depends on ca-certificates brings them (apt-get resolves it): the daemon's /etc/ssl is then
# emptied by a drop-in, as on a host where they were removed. An image on an HTTPS registry
# shows what the daemon makes of a registry it cannot verify (a note, not the check).
check_ca() {
  local cur plain https
  if ct test -e /etc/ssl/certs/ca-certificates.crt; then
    mkdir -p "$MERGED/etc/systemd/system/stowage.service.d"
    printf '[Service]\nTemporaryFileSystem=/etc/ssl:ro\n' >"$MERGED/etc/systemd/system/stowage.service.d/50-no-ca-test.conf"
    ct systemctl daemon-reload
    ct systemctl restart stowage || why "restart with an empty /etc/ssl failed"
    note "ca-certificates came with the package; hidden from the daemon (TemporaryFileSystem=/etc/ssl)"
  fi
  drop_image "$IMG"
  cur=$(journal_cursor)
  require_image "$IMG"
  require_image "$HTTPS_IMG"
  ct systemctl reload stowage
  wait_until 20 has_image "$IMG" || true
  wait_until 10 journal_has "$cur" "$HTTPS_IMG" || true
  journal_after "$cur" >"$RUN_DIR/ca.journal"
  plain=$(grep -F "$IMG" "$RUN_DIR/ca.journal" | first_match 'pulled|cannot|certificat|fail' | message)
  https=$(grep -F "$HTTPS_IMG" "$RUN_DIR/ca.journal" | first_match 'cannot|certificat|fail|error' | message)
  note "journal, plain HTTP: ${plain:-nothing about $IMG}"
  note "journal, HTTPS: ${https:-nothing about $HTTPS_IMG}"
  has_image "$IMG" || why "$IMG not pulled within 20 s without CA certificates"
}

# After check_ca: the daemon sees the CA store again (or, if the root has none and the pull
# failed, ca-certificates is installed from the root's apt cache, so the next checks test the
# unit rather than this), with the shipped config.
after_ca() {
  if [[ -e $MERGED/etc/systemd/system/stowage.service.d/50-no-ca-test.conf ]]; then
    rm -f "$MERGED/etc/systemd/system/stowage.service.d/50-no-ca-test.conf"
    rmdir "$MERGED/etc/systemd/system/stowage.service.d" 2>/dev/null || true
    ct systemctl daemon-reload || true
  elif ! has_image "$IMG" && ! ct test -e /etc/ssl/certs/ca-certificates.crt; then
    if ct apt-get install -y --no-install-recommends ca-certificates >>"$LOG" 2>&1; then
      note "installed ca-certificates in this container, so the next checks can pull"
    else
      note "installing ca-certificates failed (see $LOG)"
    fi
  fi
  shipped_config
  reset_start_limit
  ct systemctl restart stowage >>"$LOG" 2>&1 || note "the restart on the shipped config failed"
}

# 2. A new required image and a reload: pulled by the same process.
check_reload_pulls() {
  local pid0 pid1
  drop_image "$IMG"
  pid0=$(main_pid)
  require_image "$IMG"
  ct systemctl reload stowage || why "systemctl reload failed"
  wait_until 60 has_image "$IMG" || { show_journal_tail; why "$IMG not in the engine 60 s after the reload"; }
  pid1=$(main_pid)
  [[ $pid1 == "$pid0" ]] || why "MainPID changed on reload: $pid0 -> $pid1"
  note "pulled after the reload, MainPID $pid0 unchanged"
}

# 3. A broken config: the reload fails and says where, the running daemon stays.
check_bad_config() {
  local line pid0 cur found
  cp "$MERGED$CONFIG" "$RUN_DIR/config.good"
  line=$(grep -n '^splay = ' "$MERGED$CONFIG" | cut -d: -f1)
  [[ -n $line ]] || why "no splay line in the config"
  sed -i "${line}s/.*/splay = \"five minutes\"/" "$MERGED$CONFIG"
  pid0=$(main_pid)
  cur=$(journal_cursor)
  if ct systemctl reload stowage; then why "systemctl reload succeeded on a broken config"; fi
  wait_until 10 journal_has "$cur" "$CONFIG:$line:" || { journal_after "$cur"; why "the journal does not name $CONFIG:$line"; }
  found=$(journal_after "$cur" | first_match "$CONFIG:$line:" | message)
  unit_active || why "the unit is $(ct systemctl is-active stowage) after the failed reload"
  [[ $(main_pid) == "$pid0" ]] || why "MainPID changed: $pid0 -> $(main_pid)"
  note "journal: $found"
  note "reload exit non-zero; still active, MainPID $pid0"
  cp "$RUN_DIR/config.good" "$MERGED$CONFIG"
  ct systemctl reload stowage || why "the reload of the repaired config failed"
}

# 4. Type=notify: a restart returns once the required image is there.
check_restart_ready() {
  local pid0 pid1 t0=$EPOCHREALTIME
  drop_image "$IMG"
  pid0=$(main_pid)
  ct systemctl restart stowage || { show_journal_tail; why "systemctl restart failed"; }
  has_image "$IMG" || why "$IMG absent when systemctl restart returned"
  pid1=$(main_pid)
  unit_active || why "not active after the restart"
  [[ $pid1 != "$pid0" ]] || why "same MainPID after a restart"
  note "restart returned in $(since "$t0") s with $IMG present (MainPID $pid0 -> $pid1)"
}

# 5. A wedged pull loop starves the watchdog: systemd kills and restarts the daemon. The
# daemon runs (ready) with a 15 s watchdog; another process holds the state file's lock; a
# reload then requires WD_IMG with a first-pull pin: the loop pulls it, then blocks saving the
# pin. The daemon calls itself stuck after the pull timeout (2 s) plus its grace (10 s).
check_watchdog() {
  local cur
  cp "$MERGED$CONFIG" "$RUN_DIR/config.good"
  mkdir -p "$MERGED/etc/systemd/system/stowage.service.d"
  printf '[Service]\nWatchdogSec=15s\n' >"$MERGED/etc/systemd/system/stowage.service.d/50-watchdog-test.conf"
  ct systemctl daemon-reload
  ct systemctl restart stowage || { show_journal_tail; why "systemctl restart with WatchdogSec=15s failed"; }
  drop_image "$WD_IMG"
  ct test -e "$LOCK_FILE" || ct runuser -u stowage -- touch "$LOCK_FILE"
  # A transient unit of the container's systemd: powering off stops it, whatever happens here.
  ct systemd-run --quiet --collect --unit=stowage-test-lock flock "$LOCK_FILE" sleep 300
  wait_until 10 lock_held || why "the state lock is not held"
  cat >"$MERGED$CONFIG" <<EOF
[pull]
schedule = "0 0 1 1 *"
timeout = "2s"

[[image]]
name = "$IMG"

[[image]]
name = "$WD_IMG"
pin = "first-pull"
EOF
  cur=$(journal_cursor)
  echo "$cur" >"$RUN_DIR/watchdog.cursor"
  ct systemctl reload stowage || why "systemctl reload failed (with the state lock held)"
  wait_until 90 journal_has "$cur" "Failed with result 'watchdog'" ||
    { journal_after "$cur"; why "no \"Failed with result 'watchdog'\" within 90 s of the reload"; }
  wait_until 30 restarted || why "NRestarts is $(n_restarts)"
  journal_after "$cur" >"$RUN_DIR/watchdog.journal"
  grep -iE 'stuck|watchdog' "$RUN_DIR/watchdog.journal" | grep -v 'feeding the service manager' | message |
    awk '!seen[$0]++' >"$RUN_DIR/watchdog.lines" || true
  while read -r l; do note "journal: $l"; done < <(sed -n 1,5p "$RUN_DIR/watchdog.lines")
  note "NRestarts=$(n_restarts)"
}

# 5b. Restarted, the daemon waits at start for the state lock the other process still holds
# (it saves the same pin before reporting ready). It waits on a blocking thread, not on the
# runtime's (issue 23): the watchdog stays fed, systemd does not restart it again, and it does
# not report ready while the lock is held. Once the lock is released, it comes up ready.
check_watchdog_at_start() {
  local cur n
  cur=$(<"$RUN_DIR/watchdog.cursor")
  n=$(n_restarts)
  sleep 20 # longer than WatchdogSec=15s
  [[ $(n_restarts) == "$n" ]] ||
    { journal_after "$cur" | tail -n 20; why "restarted again while waiting for the lock (NRestarts $n -> $(n_restarts))"; }
  ! unit_active || why "ready while the state lock was still held"
  journal_after "$cur" >"$RUN_DIR/watchdog.journal"
  note "NRestarts=$n 20 s into the wait, state $(ct systemctl is-active stowage); READY sent while waiting: $(grep -c ' ready status=' "$RUN_DIR/watchdog.journal")"
  ct systemctl stop stowage-test-lock
  wait_until 60 unit_active || why "not active 60 s after the lock was released"
  note "active once the lock was released"
}

# Always after check_watchdog: the lock released, the drop-in gone, the previous config back.
restore_after_watchdog() {
  ct systemctl stop stowage-test-lock >/dev/null 2>&1 || true
  reset_start_limit
  rm -f "$MERGED/etc/systemd/system/stowage.service.d/50-watchdog-test.conf"
  rmdir "$MERGED/etc/systemd/system/stowage.service.d" 2>/dev/null || true
  [[ -e $RUN_DIR/config.good ]] && cp "$RUN_DIR/config.good" "$MERGED$CONFIG"
  ct systemctl daemon-reload || true
  ct systemctl restart stowage >>"$LOG" 2>&1 || note "the restart after the watchdog check failed"
}

# 6. A full cycle (boot pull, prune cycles, reload with a pull, stop) logs nothing the sandbox
# refused. The prune config keeps everything: the engine is shared with other tests.
check_journal_clean() {
  local cur bad n
  reset_start_limit
  cat >"$MERGED$CONFIG" <<EOF
[pull]
schedule = "0 * * * *"
splay = "5m"

[prune]
schedule = "*/5 * * * * *"
keep = ["regex:.*"]

[[image]]
name = "$IMG"
EOF
  drop_image "$IMG"
  cur=$(journal_cursor)
  ct systemctl restart stowage || why "systemctl restart failed"
  has_image "$IMG" || why "$IMG not pulled at start"
  wait_until 30 journal_has "$cur" 'prune cycle finished' || { show_journal_tail; why "no prune cycle finished within 30 s"; }
  drop_image "$IMG"
  ct systemctl reload stowage || why "systemctl reload failed"
  wait_until 60 has_image "$IMG" || why "$IMG not pulled after the reload"
  ct systemctl stop stowage || why "systemctl stop failed"
  [[ $(ct systemctl is-active stowage) == inactive ]] || why "not inactive after stop"
  journal_after "$cur" >"$RUN_DIR/cycle.journal"
  n=$(wc -l <"$RUN_DIR/cycle.journal")
  bad=$(grep -iE 'permission denied|EPERM|operation not permitted|seccomp|SIGSYS' "$RUN_DIR/cycle.journal" || true)
  [[ -z $bad ]] || { echo "$bad"; why "$(wc -l <<<"$bad") refused-operation lines, first: $(head -n1 <<<"$bad" | message)"; }
  note "$n journal lines over pull, prune ($(grep -c 'prune cycle finished' "$RUN_DIR/cycle.journal") cycles), reload, stop: none refused"
  ct systemctl start stowage || why "systemctl start failed"
}

# 7. An upgrade keeps the edited conffile and the state file, and restarts the daemon.
check_upgrade() {
  local v=$UPGRADE_V cfg0 pid0 out
  reset_start_limit
  echo "# edited on this host (scripts/systemd-test.sh)" >>"$MERGED$CONFIG"
  ct test -s /var/lib/stowage/state.json || why "no state file before the upgrade"
  grep -qF "$IMG_REPO" "$MERGED/var/lib/stowage/state.json" || why "the state file does not name $IMG_REPO"
  cfg0=$(sha256sum <"$MERGED$CONFIG")
  pid0=$(main_pid)
  # No --force-conf*: what a user types. dpkg prompts only if the shipped conffile changed too.
  out=$(ct apt-get install -y --no-install-recommends "/root/stowage_${v}_amd64.deb" 2>&1) ||
    { echo "$out"; why "apt-get install of $v failed: $(tail -n1 <<<"$out")"; }
  echo "$out"
  [[ $(pkg_state) == "$v install ok installed" ]] || why "stowage is '$(pkg_state)', not $v installed"
  [[ $(sha256sum <"$MERGED$CONFIG") == "$cfg0" ]] || why "the edited $CONFIG was changed by the upgrade"
  grep -qF "$IMG_REPO" "$MERGED/var/lib/stowage/state.json" || why "the state file lost $IMG's pin"
  wait_until 30 unit_active || why "not active after the upgrade"
  [[ $(main_pid) != "$pid0" ]] || why "not restarted: MainPID still $pid0"
  note "$v: no prompt, edited config kept, state kept, MainPID $pid0 -> $(main_pid)"
}

# 7b. A release whose shipped config changed too: what apt-get says to a user with an edited
# config, with no terminal (as in automation), then with --force-confold.
check_upgrade_changed_conffile() {
  local v=$UPGRADE_V2 cfg0 pid0 out rc=0
  reset_start_limit
  cfg0=$(sha256sum <"$MERGED$CONFIG")
  pid0=$(main_pid)
  out=$(ct apt-get install -y --no-install-recommends "/root/stowage_${v}_amd64.deb" 2>&1) || rc=$?
  echo "$out"
  if ((rc == 0)); then
    note "without --force-confold: apt-get succeeded; $(grep -m1 -iE 'conffile|configuration file' <<<"$out" || echo 'no prompt')"
  else
    note "without --force-confold: apt-get exit $rc: $({ grep -m1 -E 'conffile prompt' <<<"$out" || tail -n1 <<<"$out"; } | sed 's/^ *//')"
    note "meanwhile: stowage $(pkg_state | awk '{ print $1, $NF }'), unit $(ct systemctl is-active stowage), MainPID $pid0 -> $(main_pid)"
    out=$(ct apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold "/root/stowage_${v}_amd64.deb" 2>&1) ||
      { echo "$out"; why "even with --force-confold: $(tail -n1 <<<"$out")"; }
    echo "$out"
    note "with --force-confold: installed; /etc/stowage holds: $(ls_dir "$MERGED/etc/stowage")"
  fi
  [[ $(sha256sum <"$MERGED$CONFIG") == "$cfg0" ]] || why "the edited $CONFIG was replaced"
  [[ $(pkg_state) == "$v install ok installed" ]] || why "stowage is '$(pkg_state)'"
  wait_until 30 unit_active || why "not active after the upgrade"
}

# 8. Purge: the unit stops and is gone, and no stowage process is left.
check_purge() {
  local out
  out=$(ct apt-get purge -y stowage 2>&1) || { echo "$out"; why "apt-get purge failed: $(tail -n1 <<<"$out")"; }
  echo "$out"
  wait_until 10 no_stowage_process || why "stowage processes left: $(ct pgrep -ax stowage | xargs)"
  [[ $(ct systemctl show -p LoadState --value stowage) == not-found ]] ||
    why "the unit is still $(ct systemctl show -p LoadState --value stowage)"
  [[ $(ct systemctl is-active stowage) != active ]] || why "the unit is still active"
  # The state and the daemon user's registry logins go with a purge.
  [[ ! -e $MERGED/var/lib/stowage ]] || why "/var/lib/stowage is left: $(ls_dir "$MERGED/var/lib/stowage")"
  local left=()
  [[ -e $MERGED/etc/stowage ]] && left+=("/etc/stowage ($(ls_dir "$MERGED/etc/stowage"))")
  ct id stowage >/dev/null 2>&1 && left+=("user stowage")
  note "left after purge: ${left[*]:-nothing}"
}

# ---------------------------------------------------------------------------------------------

run_suite() {
  SUITE=$1 MACHINE=stowage-test-$1 LOG=$OUT/$1.log PASSED=0 FAILED=0 CG=stowage-systemd-test-$1-$$
  NSPAWN_PID='' CT_PID=''
  local t0=$EPOCHREALTIME
  : >"$LOG"
  make_work_root
  BOOT_T0=$EPOCHREALTIME
  start_container
  check "boot: systemd as PID 1 reaches running" check_boot
  if ((FAILED == 0)); then
    check "1 install, enable, start on the shipped config; MainPID runs as stowage" check_install
    check "9 systemd-analyze security recorded" check_security
    check "ca: pull from the loopback plain registry without CA certificates" check_ca
    after_ca
    check "2 reload with a new required image pulls it; same MainPID" check_reload_pulls
    check "3 broken config: reload fails, journal names file:line, same MainPID active" check_bad_config
    check "4 restart returns with the required image present (Type=notify)" check_restart_ready
    check "5 wedged pull loop: watchdog kills and restarts it" check_watchdog
    check "5b waits at start for the held lock: fed watchdog, no restart, ready once released" check_watchdog_at_start
    restore_after_watchdog
    check "6 journal over pull, prune, reload, stop: nothing refused" check_journal_clean
    check "7 upgrade to $UPGRADE_V keeps the edited config and state, restarts" check_upgrade
    check "7b upgrade to $UPGRADE_V2 (shipped config changed too) keeps the edited config" check_upgrade_changed_conffile
    ct journalctl -u stowage -q --no-pager -o short-precise >"$OUT/journal-$SUITE.txt" 2>&1 || true
    note "whole unit journal: $(wc -l <"$OUT/journal-$SUITE.txt") lines, $(grep -ciE 'permission denied|EPERM|operation not permitted|seccomp|SIGSYS' "$OUT/journal-$SUITE.txt" || true) refused-operation lines ($OUT/journal-$SUITE.txt)"
    check "8 purge stops and removes the unit; no stowage process left" check_purge
  fi
  teardown
  note "$SUITE: $PASSED ok, $FAILED not ok, $(since "$t0") s (log: $LOG)"
}

main() {
  local suites=(bookworm trixie)
  DEB=$REPO/target/packages/stowage_0.1.0-1_amd64.deb
  while (($#)); do
    case $1 in
      --suite) shift; [[ ${1:-} ]] || usage; set -- "--suite=$1" "${@:2}"; continue ;;
      --suite=all) suites=(bookworm trixie) ;;
      --suite=bookworm | --suite=trixie) suites=("${1#--suite=}") ;;
      -h | --help) usage ;;
      -*) usage ;;
      *) DEB=$1 ;;
    esac
    shift
  done
  ((EUID == 0)) || die "run as root (debootstrap, mounts, cgroups, nsenter)"
  [[ -f $DEB && $(dpkg-deb -f "$DEB" Package 2>/dev/null) == stowage ]] || die "$DEB is not a stowage .deb"
  DEB=$(readlink -f "$DEB")
  case $ENGINE in docker20 | docker26) ;; *) die "STOWAGE_TEST_ENGINE=$ENGINE: docker20 or docker26 (the daemon's user reaches the socket through its group)" ;; esac
  { engine_up "$ENGINE" && registry_up plain && seeded; } ||
    die "the test environment is not up: STOWAGE_TEST_ENGINE=$ENGINE scripts/test-env.sh up"
  [[ $CGROUP_MODE == unified || $CGROUP_MODE == hybrid ]] || die "SYSTEMD_TEST_CGROUP is unified or hybrid"

  mkdir -p "$CACHE" "$OUT"
  # One run at a time: the roots' overlays, the machine names and the engine's images.
  exec 9>"$CACHE/systemd-test.lock"
  flock -n 9 || die "another systemd-test.sh is running"
  ABSENT_AT_START=()
  local ref
  for ref in "$IMG" "$WD_IMG"; do has_image "$ref" || ABSENT_AT_START+=("$ref"); done
  trap on_exit EXIT
  trap 'exit 130' INT TERM

  local t0=$EPOCHREALTIME s
  ensure_nspawn
  for s in "${suites[@]}"; do ensure_root "$s"; done
  local v
  v=$(dpkg-deb -f "$DEB" Version)
  # 0.1.0-1 -> 0.1.0-2 and -3; a non-numeric revision gets a suffix that sorts higher.
  if [[ $v =~ ^(.*)-([0-9]+)$ ]]; then
    UPGRADE_V=${BASH_REMATCH[1]}-$((BASH_REMATCH[2] + 1)) UPGRADE_V2=${BASH_REMATCH[1]}-$((BASH_REMATCH[2] + 2))
  else
    UPGRADE_V=$v+systemdtest1 UPGRADE_V2=$v+systemdtest2
  fi
  DEBS=$(mktemp -d "$CACHE/systemd-test-debs.XXXXXX")
  # One copy for the whole run: a rebuild of DEB meanwhile does not mix two builds.
  cp "$DEB" "$DEBS/"
  DEB=$DEBS/$(basename "$DEB")
  make_upgrade_deb "$UPGRADE_V"
  make_upgrade_deb "$UPGRADE_V2" changed
  note "prepared in $(since "$t0") s; package $(basename "$DEB"), engine $ENGINE, cgroup $CGROUP_MODE"

  TOTAL_FAILED=0
  for s in "${suites[@]}"; do run_suite "$s"; done
  ((TOTAL_FAILED == 0))
}

main "$@"
