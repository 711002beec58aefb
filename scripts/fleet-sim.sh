#!/usr/bin/env bash
# A fleet on one machine: N hermetic Docker engines as hosts, each with its own `stowage run`,
# one config and one lock shipped to all, an origin registry with an access log and one
# pull-through mirror of it (distribution's proxy). Prints a markdown report and writes
# $SIM/summary.json. See docs/fleet.md.
#
#   scripts/fleet-sim.sh [N] [M]     N hosts (default 8), M required images (default 10)
#
# FLEET_SIM_DIR (default /tmp/stowage-fleet) holds everything and is removed at exit unless
# FLEET_KEEP is set; FLEET_KEEP_SUMMARY copies summary.json beside it; STOWAGE_BIN skips the
# release build.
#
# Phases: boot (every host converges); rollout 2 (a new lock while the pull window is closed:
# hosts wait, then start at the opening plus their splay); rollout 3 with the mirror killed in
# the middle (hosts fall back to the origin); rollout 4 with the mirror back; the origin down
# (hosts keep what they have and say so). FLEET_SPLAY (default 20s) is each host's splay.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-8}
M=${2:-10}
SPLAY=${FLEET_SPLAY:-20s}
# shellcheck source-path=SCRIPTDIR source=test-env.sh
source scripts/test-env.sh # ROOT, PLAIN, start_dockerd, dk_on, wait_for, log, die
SIM=${FLEET_SIM_DIR:-/tmp/stowage-fleet}
ORIGIN=127.0.0.1:5188
FMIRROR=127.0.0.1:5189

scripts/test-env.sh up >/dev/null
scripts/seed-bench.sh $((4 * M)) >/dev/null
# STOWAGE_BIN: a stowage already built (the integration test passes its own).
if [[ -n ${STOWAGE_BIN:-} ]]; then
  STOWAGE=$STOWAGE_BIN
else
  cargo build --release --locked --quiet
  STOWAGE=$PWD/target/release/stowage
fi

cleanup() {
  local i
  for ((i = 1; i <= N; i++)); do
    [[ -s $SIM/host-$i/stowage.pid ]] && kill "$(<"$SIM/host-$i/stowage.pid")" 2>/dev/null || true
  done
  for ((i = 1; i <= N; i++)); do sim_stop "$SIM/host-$i/engine.pid" & done
  sim_stop "$SIM/origin.pid" &
  sim_stop "$SIM/mirror.pid" &
  wait
  findmnt -rn -o TARGET | { grep -E "^$SIM/" || true; } | sort -r | while read -r m; do
    umount -R "$m" 2>/dev/null || umount -l "$m"
  done
  # FLEET_KEEP_SUMMARY: the summary is kept beside the simulation's directory.
  [[ -z ${FLEET_KEEP_SUMMARY:-} || ! -f $SIM/summary.json ]] || cp "$SIM/summary.json" "$SIM/../summary.json"
  [[ -n ${FLEET_KEEP:-} ]] || rm -rf "$SIM"
}
# sim_stop PIDFILE: stops that process (test-env's stop_pid only knows its own root).
sim_stop() {
  [[ -s $1 ]] || return 0
  local pid deadline=$((SECONDS + 30))
  pid=$(<"$1")
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
}
# sub A B: A - B, for timestamps.
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

[[ $SIM == /?* && $SIM != / ]] || die "refusing FLEET_SIM_DIR '$SIM'"
rm -rf "$SIM"
mkdir -p "$SIM/cm"
trap cleanup EXIT

# --- registries ----------------------------------------------------------------------------
# registry NAME ADDR [EXTRA]: a distribution registry logging every request to $SIM/NAME.log.
registry() {
  cat >"$SIM/$1.yml" <<EOF
version: 0.1
log: {level: info, formatter: text, accesslog: {disabled: false}}
storage:
  filesystem: {rootdirectory: $SIM/$1-data}
  delete: {enabled: true}
http: {addr: $2}
${3:-}
EOF
  setsid docker-registry serve "$SIM/$1.yml" </dev/null >>"$SIM/$1.log" 2>&1 &
  echo $! >"$SIM/$1.pid"
  wait_for 30 $! "$SIM/$1.log" http_ok "$2"
}
http_ok() { [[ $(http_status "$1" /v2/) == 200 ]]; }
# The origin starts as a copy of the plain test registry (same digests, nothing pushed).
cp -a "$ROOT/registry-plain" "$SIM/origin-data"
registry origin "$ORIGIN"
registry mirror "$FMIRROR" "proxy: {remoteurl: http://$ORIGIN}"

# move_tags ROUND: points origin's img-K:1 at the content of img-(ROUND-1)*M+K (a release).
move_tags() {
  local k src manifest d
  for ((k = 1; k <= M; k++)); do
    src=stowage-bench/img-$((($1 - 1) * M + k))
    manifest=$(curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      "http://$ORIGIN/v2/$src/manifests/1")
    for d in $(grep -o 'sha256:[0-9a-f]\{64\}' <<<"$manifest" | sort -u); do
      curl -fsS -o /dev/null -X POST "http://$ORIGIN/v2/stowage-bench/img-$k/blobs/uploads/?mount=$d&from=$src"
    done
    curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/vnd.docker.distribution.manifest.v2+json' \
      --data-binary "$manifest" "http://$ORIGIN/v2/stowage-bench/img-$k/manifests/1"
  done
}

# --- config management: one config and one lock for every host ------------------------------
# write_config [WINDOW TABLE]: the fleet's config, as config management would ship it.
write_config() {
  {
    printf '[pull]\nsplay = "%s"\nschedule = "*/5 * * * * *"\nconcurrency = 4\n' "$SPLAY"
    printf 'retries = 1\nbackoff = "200ms"\nbackoff_max = "1s"\n'
    printf '%s\n' "${1:-}"
    printf '[state]\nfile = "state.json"\n'
    printf '[[registry]]\nhost = "%s"\nmirrors = ["%s"]\n' "$ORIGIN" "$FMIRROR"
    for ((k = 1; k <= M; k++)); do printf '[[image]]\nname = "%s/stowage-bench/img-%d:1"\n' "$ORIGIN" "$k"; done
  } >"$SIM/cm/config.toml"
  "$STOWAGE" --config "$SIM/cm/config.toml" --log-level warn pin >/dev/null
}
ship() {
  local i
  for ((i = 1; i <= N; i++)); do
    # State paths are relative to each host's config: every host has its own, as on real ones.
    cp "$SIM/cm/config.toml" "$SIM/cm/stowage.lock" "$SIM/host-$i/"
  done
}
reload_all() {
  local i
  for ((i = 1; i <= N; i++)); do kill -HUP "$(<"$SIM/host-$i/stowage.pid")"; done
}

# --- hosts -----------------------------------------------------------------------------------
now() { date +%s.%N; }
t0=$(now)
for ((i = 1; i <= N; i++)); do
  mkdir -p "$SIM/host-$i"
  # test-env's helpers find an engine under $ROOT: here, under $SIM.
  (ROOT=$SIM start_dockerd "$SIM/host-$i" "fleet-$i") >/dev/null 2>&1 || die "host $i: dockerd did not start"
done
log "$N engines up in $(sub "$(now)" "$t0") s"
move_tags 1
write_config
ship
t_boot=$(now)
for ((i = 1; i <= N; i++)); do
  (cd "$SIM/host-$i" && {
    DOCKER_HOST=unix://$SIM/host-$i/engine.sock setsid "$STOWAGE" --config config.toml \
      --log-format json --log-level info run </dev/null >>stowage.log 2>&1 &
    echo $! >stowage.pid
  })
done

# count LOG PATTERN: lines of LOG matching PATTERN (extended regex).
count() { { grep -cE "$2" "$1" || true; } }
# wait_logs PATTERN HOW_MANY SECONDS: until that many host logs have a line matching PATTERN.
wait_logs() {
  local deadline=$((SECONDS + $3)) have
  while :; do
    have=0
    for ((i = 1; i <= N; i++)); do (($(count "$SIM/host-$i/stowage.log" "$1") >= $2)) && have=$((have + 1)); done
    ((have == N)) && return 0
    ((SECONDS < deadline)) || die "only $have of $N hosts logged /$1/ $2 times (logs in $SIM)"
    sleep 0.2
  done
}
# digests: each host's local digests (sorted), one line per host.
digests() {
  for ((i = 1; i <= N; i++)); do
    (cd "$SIM/host-$i" && DOCKER_HOST=unix://$SIM/host-$i/engine.sock "$STOWAGE" --config config.toml \
      --log-level error status --json --offline) |
      python3 -c 'import json,sys; print(" ".join(sorted(str(i["local_digest"]) for i in json.load(sys.stdin)["images"])))'
  done
}
# served NAME MARK: GETs by digest that registry NAME answered after line MARK of its log:
# distinct objects, the most GETs of one object, and all GETs.
served() {
  tail -n +"$(($2 + 1))" "$SIM/$1.log" | grep -oE '"GET /v2/[^ ]+/(blobs|manifests)/sha256:[0-9a-f]{64} HTTP/1.1" 200' |
    grep -oE 'sha256:[0-9a-f]{64}' | sort | uniq -c | awk '{ n++; if ($1 > max) max = $1; sum += $1 } END { printf "%d %d %d\n", n, max, sum }'
}
lines() { wc -l <"$SIM/$1.log"; }
# starts EVENT_TRIGGER: epoch seconds of each host's first "run started" with that trigger
# after the last reload.
spread() {
  for ((i = 1; i <= N; i++)); do
    python3 - "$SIM/host-$i/stowage.log" "$1" <<'PY'
import json, sys, datetime
seen = None
for line in open(sys.argv[1]):
    try: v = json.loads(line)
    except ValueError: continue
    if v.get("message") == "config reloaded": seen = None
    if v.get("message") == "run started" and v.get("trigger") == sys.argv[2] and seen is None:
        seen = datetime.datetime.fromisoformat(v["timestamp"].replace("Z", "+00:00")).timestamp()
print(seen if seen is not None else "")
PY
  done | awk 'NF { if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1; n++ } END { printf "%d %.1f\n", n, max - min }'
}

origin_mark=$(lines origin)
wait_logs '"message":"ready"' 1 300
t_ready=$(now)
boot_s=$(sub "$t_ready" "$t_boot")
read -r boot_objects boot_max boot_gets < <(served origin "$origin_mark")
boot_same=$(digests | sort -u | wc -l)
mirror_boot=$(served mirror 0)

# --- rollout 2: a new lock while the window is closed ----------------------------------------
origin_mark=$(lines origin)
move_tags 2
open_at=$(date -u -d '+25 seconds' '+%S %M %H')
write_config "$(printf '[pull.window]\nstart = "%s * * *"\nduration = "10m"\ntime_zone = "UTC"\n' "$open_at")"
ship
reload_all
wait_logs '"deferred":'"$M" 1 60
held=$(for ((i = 1; i <= N; i++)); do count "$SIM/host-$i/stowage.log" '"deferred":'"$M"; done | awk '{ s += ($1 > 0) } END { print s }')
t_r2=$(now)
want2=$(digests | sed -n 1p)
# Converged when every host's local digests are the new lock's.
wait_converged() {
  local deadline=$((SECONDS + $1)) d
  while :; do
    d=$(digests | sort -u)
    [[ $(wc -l <<<"$d") == 1 && $d != "$2" ]] && return 0
    ((SECONDS < deadline)) || die "hosts did not converge: $d"
    sleep 1
  done
}
wait_converged 120 "$want2"
r2_s=$(sub "$(now)" "$t_r2")
read -r r2_objects r2_max r2_gets < <(served origin "$origin_mark")
read -r r2_hosts r2_spread < <(spread schedule)

# --- rollout 3: the mirror dies in the middle --------------------------------------------------
origin_mark=$(lines origin)
before3=$(digests | sed -n 1p)
move_tags 3
write_config
ship
reload_all
# Kill the mirror while the hosts pull.
sleep 0.3
sim_stop "$SIM/mirror.pid"
wait_converged 180 "$before3"
fell_back=$(for ((i = 1; i <= N; i++)); do count "$SIM/host-$i/stowage.log" 'mirror failed, trying the next source'; done | awk '{ s += ($1 > 0) } END { print s }')
read -r r3_objects r3_max r3_gets < <(served origin "$origin_mark")

# --- rollout 4: the mirror is back -------------------------------------------------------------
registry mirror "$FMIRROR" "proxy: {remoteurl: http://$ORIGIN}"
origin_mark=$(lines origin)
mirror_mark=$(lines mirror)
before4=$(digests | sed -n 1p)
move_tags 4
write_config
ship
reload_all
wait_converged 180 "$before4"
read -r r4_objects r4_max r4_gets < <(served origin "$origin_mark")
read -r r4_mobjects r4_mmax r4_mgets < <(served mirror "$mirror_mark")

# --- the origin goes down: hosts keep what they have, and say so -------------------------------
sim_stop "$SIM/origin.pid"
sim_stop "$SIM/mirror.pid"
kept=0 said=0
for ((i = 1; i <= N; i++)); do
  out=$(cd "$SIM/host-$i" && DOCKER_HOST=unix://$SIM/host-$i/engine.sock "$STOWAGE" --config config.toml --log-level error status --json || true)
  python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if all(i["state"]=="present" for i in d["images"]) else 1)' <<<"$out" && kept=$((kept + 1))
  python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if all((i.get("registry") or {}).get("failure", {}).get("class")=="network" for i in d["images"]) else 1)' <<<"$out" && said=$((said + 1))
done

# Per host and image, what the mirror served at boot (for the arithmetic in docs/fleet.md).
read -r _ _ mirror_boot_gets <<<"$mirror_boot"
per_host_image=$(awk -v g="$mirror_boot_gets" -v n="$N" -v m="$M" 'BEGIN { printf "%.2f", g / (n * m) }')
cat >"$SIM/summary.json" <<EOF
{"hosts": $N, "images": $M, "splay": "$SPLAY",
 "boot": {"seconds": $boot_s, "distinct_digest_sets": $boot_same, "origin_objects": $boot_objects, "origin_max_per_object": $boot_max, "mirror_gets_per_host_image": $per_host_image},
 "rollout_window": {"hosts_deferred": $held, "seconds": $r2_s, "origin_objects": $r2_objects, "origin_max_per_object": $r2_max, "hosts_started": $r2_hosts, "start_spread_seconds": $r2_spread},
 "rollout_mirror_killed": {"hosts_fell_back": $fell_back, "origin_objects": $r3_objects, "origin_gets": $r3_gets},
 "rollout_mirror_back": {"origin_objects": $r4_objects, "origin_max_per_object": $r4_max, "mirror_objects": $r4_mobjects, "mirror_gets": $r4_mgets},
 "origin_down": {"hosts_kept_all": $kept, "hosts_reported_network": $said}}
EOF
cat <<EOF
**Fleet simulation: $N hosts, $M images, splay $SPLAY** ($(date -u +%F), Docker 20.10 engines)

| phase | result |
|---|---|
| boot | converged in $boot_s s; $boot_same distinct digest set(s) across hosts; origin served $boot_objects objects, at most $boot_max time(s) each; the mirror served $per_host_image GETs per host and image |
| rollout in a window | $held of $N hosts deferred the refresh while the window was closed; all converged $r2_s s after the reload; runs started over ${r2_spread} s ($r2_hosts hosts); origin served $r2_objects objects, at most $r2_max time(s) each |
| rollout, mirror killed | $fell_back of $N hosts logged the mirror failing and fell back; the origin served $r3_gets GETs of $r3_objects objects |
| rollout, mirror back | origin served $r4_objects objects, at most $r4_max time(s) each; the mirror served $r4_mgets GETs of $r4_mobjects objects |
| origin down | $kept of $N hosts kept every image; $said of $N reported class "network" for each |
EOF
