#!/usr/bin/env bash
# Benchmarks (never tests): stowage against the engine's own CLI or API doing the same work,
# interleaved round by round in one run (the order flips every round), on the hermetic engine
# of scripts/test-env.sh (STOWAGE_TEST_ENGINE, default docker20). Prints markdown: medians,
# min-max, per-round ratios, registry requests from the registry's access log, and engine
# requests and connections counted with strace where they matter.
#
#   scripts/bench.sh prune [N] [T] [R]   N images (half kept by containers), T extra tags on the
#                                        other half: `stowage prune` vs `docker image prune -a`
#   scripts/bench.sh pull [N] [R]        N images from an empty store, each pin mode, vs
#                                        `xargs -P4` and `xargs -P8 docker pull`
#   scripts/bench.sh warm [N] [R]        N present images following their tags: one check pass
#                                        vs a `docker pull` loop (requests per image)
#   scripts/bench.sh idle [N] [R]        the daemon with N required images, metrics and pruning
#                                        on: start to ready and idle memory, --threads 1 vs 2
#   scripts/bench.sh scale [N] [M] [R]   N images in the store, M of them required and
#                                        lock-pinned: `stowage plan` vs the engine's listings
# BEFORE=REV adds an earlier revision of stowage ("before", built in a worktree) to every round.
# KEEP_STORE=1 keeps the images at exit (scale reuses them); otherwise the store is emptied.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: scripts/bench.sh prune|pull|warm|idle|scale [ARGS]}
shift

scripts/test-env.sh up >/dev/null
# shellcheck disable=SC1090  # written by test-env.sh
set -a; source "${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}/env.${STOWAGE_TEST_ENGINE:-docker20}"; set +a
cargo build --release --locked --quiet
STOWAGE=$PWD/target/release/stowage
BEFORE=${BEFORE:-}
STOWAGE_BEFORE=
if [[ -n $BEFORE ]]; then
  old_src=target/bench-old/src
  [[ -d $old_src ]] || git worktree add --detach "$old_src" "$BEFORE" >/dev/null
  git -C "$old_src" checkout --quiet --detach "$BEFORE"
  CARGO_TARGET_DIR=$PWD/target/bench-old/target cargo build --release --locked --quiet --manifest-path "$old_src/Cargo.toml"
  STOWAGE_BEFORE=$PWD/target/bench-old/target/release/stowage
fi
SOCK=${DOCKER_HOST#unix://}
ENGINE_PID_FILE=$(dirname "$SOCK")/engine.pid

work=$(mktemp -d)
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  "$DOCKER_CLI" rm -f $("$DOCKER_CLI" ps -aq --filter label=org.stowage.bench=1) >/dev/null 2>&1 || true
  # KEEP_STORE=1 leaves the images for the next run (scale's 9,000 take half an hour to
  # import); the tests expect an engine without them, so purge before testing.
  [[ ${KEEP_STORE:-} == 1 ]] || prune_all 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
RESULTS=$work/results

dk() { "$DOCKER_CLI" "$@"; }
# prune_all: the engine's own `image prune -a`. Podman 4.3 refuses the docker CLI's (it sends
# `dangling=false` beside its own `dangling=true`: "specifying dangling filter more than once
# with different values is not supported") and removes nothing; `podman image prune -a` is
# this libpod request.
prune_all() {
  if [[ ${STOWAGE_TEST_ENGINE:-docker20} == podman ]]; then
    curl -sf -X POST --unix-socket "$SOCK" 'http://engine/v4.0.0/libpod/images/prune?all=true' >/dev/null
  else
    dk image prune -a -f >/dev/null
  fi
}
export SOCK
export -f dk prune_all
now() { date +%s.%N; }
refs_of() { for i in $(seq "$1" "$2"); do echo "$STOWAGE_TEST_PLAIN/stowage-bench/img-$i:1"; done; }
# record MEASURE WHO ROUND VALUE
record() { echo "$1|$2|$3|$4" >>"$RESULTS"; }
# engine_cpu: CPU seconds the engine (and its children, e.g. containerd) has used so far.
engine_cpu() {
  local pids p total=0
  pids=$(cat "$ENGINE_PID_FILE")
  for p in $pids; do pids+=" $(pgrep -P "$p" | tr '\n' ' ')"; done
  for p in $pids; do
    [[ -r /proc/$p/stat ]] || continue
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
  done
  python3 -c "print($total / $(getconf CLK_TCK))"
}
# timed MEASURE WHO ROUND CMD...: wall seconds of CMD, and the engine's CPU seconds meanwhile.
timed() {
  local m=$1 who=$2 round=$3 t0 t1 c0 c1; shift 3
  c0=$(engine_cpu); t0=$(now)
  "$@" >/dev/null 2>&1 || true
  t1=$(now); c1=$(engine_cpu)
  record "$m" "$who" "$round" "$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
  record "$m, engine CPU s" "$who" "$round" "$(python3 -c "print(f'{$c1 - $c0:.2f}')")"
}
# engine_calls LABEL CMD...: the engine requests and socket connections CMD makes (strace),
# and the requests by endpoint (method and path, names and IDs as {}, API version and query
# dropped), so that a count far from the engine's own says where it comes from.
engine_calls() {
  local label=$1; shift
  strace -f -qq -s 160 -e trace=connect,write,writev,sendto,sendmsg -o "$work/strace" "$@" >/dev/null 2>&1 || true
  local connects requests
  connects=$(grep -c "connect(.*${SOCK}" "$work/strace" || true)
  requests=$(grep -cE '"(GET|HEAD|POST|PUT|DELETE) /' "$work/strace" || true)
  echo "$label|$requests|$connects" >>"$work/calls"
  grep -oE '"(GET|HEAD|POST|PUT|DELETE) /[^ "?]*' "$work/strace" | sed -E 's/^"//; s#/v[0-9]+\.[0-9]+/#/#' |
    python3 -c '
import collections, re, sys
known = {"images", "containers", "libpod", "json", "events", "info", "version", "_ping", "prune",
         "create", "pull", "tag", "remove", "build", "exists", "system", "df", "distribution"}
count = collections.Counter()
for line in sys.stdin:
    method, path = line.split(" ", 1)
    segs = [s if s in known else "{}" for s in path.strip().strip("/").split("/")]
    # A name with slashes in it is one {}.
    segs = [s for i, s in enumerate(segs) if not (s == "{}" and i and segs[i - 1] == "{}")]
    count[method + " /" + "/".join(segs)] += 1
for endpoint, n in count.most_common():
    print(f"{sys.argv[1]}|{endpoint}|{n}")' "$label" >>"$work/endpoints"
}
# registry_requests FROM: manifest and blob requests in the plain registry's log after line FROM.
# bench_requests FROM: those of the bench's own repositories only: the count that holds while
# something else (a fault run) uses the registry too. It leaves out the `GET /v2/` pings (one
# a pull session on either side), which name no repository.
mark() { wc -l <"$STOWAGE_TEST_PLAIN_LOG"; }
registry_requests() { sleep 0.5; tail -n +"$(($1 + 1))" "$STOWAGE_TEST_PLAIN_LOG" | grep -cE '"(HEAD|GET) /v2/' || true; }
bench_requests() { sleep 0.5; tail -n +"$(($1 + 1))" "$STOWAGE_TEST_PLAIN_LOG" | grep -cE '"(HEAD|GET) /v2/stowage-bench/' || true; }
# record_requests WHO ROUND FROM N: both counts, per image.
record_requests() {
  record "registry requests per image" "$1" "$2" "$(python3 -c "print($(registry_requests "$3") / $4)")"
  record "registry requests per image, bench repositories only (no pings)" "$1" "$2" "$(python3 -c "print($(bench_requests "$3") / $4)")"
}
stowage_cfg() { "${BIN:-$STOWAGE}" --config "$1" --log-format text --log-level warn "${@:2}"; }
# config FILE PIN REFS [EXTRA]: a config requiring REFS with `pin = PIN` ("lock": none written).
config() {
  { printf '[pull]\nconcurrency = %s\nsplay = "0s"\nschedule = "0 0 1 1 *"\n[state]\nfile = "state.json"\n' "${CONCURRENCY:-8}"
    printf '%b' "${4:-}"
    while read -r r; do
      printf '[[image]]\nname = "%s"\n' "$r"
      [[ $2 == lock ]] || printf 'pin = "%s"\n' "$2"
    done <"$3"; } >"$1"
}
# interleave R FN WHO...: FN WHO ROUND for each WHO, each round; the order reverses every other
# round. With BEFORE set, "before" (the earlier revision, run like "stowage") joins every round.
interleave() {
  local r=$1 fn=$2 who; shift 2
  local order=("$@")
  [[ -z $STOWAGE_BEFORE ]] || order+=(before)
  for r in $(seq 1 "$r"); do
    local this=("${order[@]}")
    ((r % 2)) || { local rev=(); for who in "${order[@]}"; do rev=("$who" "${rev[@]}"); done; this=("${rev[@]}"); }
    for who in "${this[@]}"; do "$fn" "$who" "$r"; done
  done
}
# bin_of WHO: the stowage binary for WHO ("before": the earlier revision).
bin_of() { if [[ $1 == before* ]]; then echo "$STOWAGE_BEFORE"; else echo "$STOWAGE"; fi; }

summary() {
  python3 - "$RESULTS" "$1" "$work/calls" <<'PY'
import collections, statistics, sys, pathlib
rows = [l.split("|") for l in pathlib.Path(sys.argv[1]).read_text().splitlines()]
baseline = sys.argv[2]
data = collections.OrderedDict()
for measure, who, rnd, value in rows:
    data.setdefault(measure, collections.OrderedDict()).setdefault(who, {})[int(rnd)] = float(value)
for measure, whos in data.items():
    print(f"\n**{measure}**\n")
    base = whos.get(baseline)
    print("| method | median | min-max | vs " + baseline + " (median) | per round |")
    print("|---|---:|---:|---:|---|")
    for who, by_round in whos.items():
        vals = list(by_round.values())
        med = statistics.median(vals)
        ratio = per = "-"
        if base and who != baseline and statistics.median(base.values()):
            ratio = f"{med / statistics.median(base.values()):.2f}x"
            per = ", ".join(f"{by_round[r] / base[r]:.2f}" for r in sorted(by_round) if r in base and base[r])
        print(f"| {who} | {med:g} | {min(vals):g}-{max(vals):g} | {ratio} | {per} |")
calls = pathlib.Path(sys.argv[3])
if calls.exists():
    print("\n| engine calls of one run | requests | connections |\n|---|---:|---:|")
    for line in calls.read_text().splitlines():
        label, req, con = line.split("|")
        print(f"| {label} | {req} | {con} |")
endpoints = calls.with_name("endpoints")
if endpoints.exists():
    print("\n| engine calls of one run | endpoint | requests |\n|---|---|---:|")
    for line in endpoints.read_text().splitlines():
        label, endpoint, n = line.split("|")
        print(f"| {label} | `{endpoint}` | {n} |")
PY
}

# --- prune -------------------------------------------------------------------------------------
bench_prune() {
  local N=${1:-1000} T=${2:-1000} R=${3:-5} half
  half=$((N / 2))
  scripts/seed-bench.sh "$N" >/dev/null
  refs_of 1 "$half" >"$work/kept"
  refs_of $((half + 1)) "$N" >"$work/extra"
  # stowage: the kept half required and lock-pinned, every prune rule on, no pause.
  config "$work/config.toml" lock "$work/kept" \
    '[prune]\nschedule = "0 0 1 1 *"\nmin_age = "0s"\ndangling_min_age = "0s"\nunused_max_age = "0s"\nmax_removals = 100000\npause = "0s"\n'
  (cd "$work" && stowage_cfg config.toml pin && xargs -P8 -n1 "$DOCKER_CLI" pull -q <kept) >/dev/null
  # The kept half is also what containers use, so `docker image prune -a` keeps it too.
  local i=0
  while read -r r; do
    i=$((i + 1))
    dk create --label org.stowage.bench=1 --name "bench-keep-$i" "$r" /data.bin >/dev/null
  done <"$work/kept"
  prunable() {
    xargs -P8 -n1 "$DOCKER_CLI" pull -q <"$work/extra" >/dev/null
    python3 - "$SOCK" "$T" "$work/extra" <<'PY'
import http.client, json, socket, sys, urllib.parse
sock, t, refs = sys.argv[1], int(sys.argv[2]), open(sys.argv[3]).read().split()
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sock)
c = Conn("engine")
def call(method, path):
    c.request(method, path); r = c.getresponse(); body = r.read()
    if r.status >= 300: raise SystemExit(f"{method} {path}: {r.status} {body[:200]}")
    return body
ids = [json.loads(call("GET", "/images/" + urllib.parse.quote(r, safe="") + "/json"))["Id"] for r in refs]
for k in range(t):
    repo = refs[0].rsplit("/", 1)[0] + f"/extra-{k % 97}"
    call("POST", f"/images/{ids[k % len(ids)]}/tag?" + urllib.parse.urlencode({"repo": repo, "tag": f"t{k}"}))
PY
  }
  one() {
    prunable
    case $1 in
      stowage | before) (cd "$work" && BIN=$(bin_of "$1") timed "prune ($half images, $T extra tags)" "$1" "$2" stowage_cfg config.toml prune) ;;
      docker) timed "prune ($half images, $T extra tags)" docker "$2" prune_all ;;
    esac
    record "images left" "$1" "$2" "$(dk images -q | sort -u | wc -l)"
  }
  interleave "$R" one docker stowage
  prunable
  (cd "$work" && engine_calls "stowage prune ($half images)" "$STOWAGE" --config config.toml --log-level warn prune)
  prunable
  engine_calls "the engine's image prune -a" bash -c prune_all
  summary docker
}

# --- pull --------------------------------------------------------------------------------------
bench_pull() {
  local N=${1:-50} R=${2:-5}
  scripts/seed-bench.sh "$N" >/dev/null
  refs_of 1 "$N" >"$work/refs"
  for mode in lock first-pull follow; do
    mkdir -p "$work/$mode"
    CONCURRENCY=8 config "$work/$mode/config.toml" "$mode" "$work/refs"
  done
  (cd "$work/lock" && stowage_cfg config.toml pin >/dev/null)
  # By ID: on Podman, removing the tag of an image pulled by digest leaves the image, named by
  # its `name@digest`, and the next round's pull by digest finds it there.
  clear() {
    { xargs -r "$DOCKER_CLI" image inspect --format '{{.Id}}' <"$work/refs" 2>/dev/null || true; } |
      sort -u | xargs -r "$DOCKER_CLI" image rm -f >/dev/null 2>&1 || true
    rm -f "$work"/*/state.json
  }
  one() {
    clear
    local m; m=$(mark)
    case $1 in
      xargs-P4) timed "cold pull of $N" "$1" "$2" xargs -P4 -n1 "$DOCKER_CLI" pull -q <"$work/refs" ;;
      xargs-P8) timed "cold pull of $N" "$1" "$2" xargs -P8 -n1 "$DOCKER_CLI" pull -q <"$work/refs" ;;
      stowage-*) (cd "$work/${1#stowage-}" && timed "cold pull of $N" "$1" "$2" stowage_cfg config.toml pull) ;;
      before) (cd "$work/first-pull" && BIN=$STOWAGE_BEFORE timed "cold pull of $N" "before-first-pull" "$2" stowage_cfg config.toml pull) ;;
    esac
    local label=$1
    [[ $1 != before ]] || label=before-first-pull
    record_requests "$label" "$2" "$m" "$N"
  }
  interleave "$R" one xargs-P4 stowage-lock xargs-P8 stowage-first-pull stowage-follow
  clear
  summary xargs-P8
}

# --- warm --------------------------------------------------------------------------------------
bench_warm() {
  local N=${1:-200} R=${2:-5}
  scripts/seed-bench.sh "$N" >/dev/null
  refs_of 1 "$N" >"$work/refs"
  config "$work/config.toml" follow "$work/refs"
  (cd "$work" && stowage_cfg config.toml pull >/dev/null)
  one() {
    local m; m=$(mark)
    case $1 in
      stowage | before) (cd "$work" && BIN=$(bin_of "$1") timed "follow check of $N present images" "$1" "$2" stowage_cfg config.toml pull) ;;
      docker) timed "follow check of $N present images" docker "$2" bash -c "while read -r r; do '$DOCKER_CLI' pull -q \"\$r\"; done <'$work/refs'" ;;
    esac
    record_requests "$1" "$2" "$m" "$N"
  }
  interleave "$R" one docker stowage
  summary docker
}

# --- idle --------------------------------------------------------------------------------------
bench_idle() {
  local N=${1:-100} R=${2:-5} port
  scripts/seed-bench.sh "$N" >/dev/null
  refs_of 1 "$N" >"$work/refs"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  config "$work/config.toml" lock "$work/refs" \
    "[metrics]\nlisten = \"127.0.0.1:$port\"\n[prune]\nschedule = \"0 0 1 1 *\"\n"
  (cd "$work" && stowage_cfg config.toml pin && stowage_cfg config.toml pull) >/dev/null
  one() {
    local t0 t1 flags=()
    [[ $1 == before ]] || flags=(--threads "${1#threads-}")
    t0=$(now)
    (cd "$work" && exec "$(bin_of "$1")" --config config.toml --log-format text --log-level warn "${flags[@]}" run) &
    pid=$!
    until [[ $(curl -sf "127.0.0.1:$port/metrics" 2>/dev/null) == *$'\nstowage_ready 1\n'* ]]; do
      kill -0 "$pid" 2>/dev/null || { echo "stowage run exited before it was ready" >&2; exit 1; }
      sleep 0.01
    done
    t1=$(now)
    curl -sf "127.0.0.1:$port/metrics" >/dev/null
    sleep 5
    record "start to ready (s)" "$1" "$2" "$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
    for k in VmRSS RssAnon RssFile; do
      record "idle $k (MiB)" "$1" "$2" "$(awk -v k="$k:" '$1 == k { printf "%.2f", $2 / 1024 }' "/proc/$pid/status")"
    done
    kill -TERM "$pid"; wait "$pid" || true; pid=
  }
  interleave "$R" one threads-2 threads-1
  summary threads-2
}

# --- scale -------------------------------------------------------------------------------------
bench_scale() {
  local N=${1:-10000} M=${2:-1000} R=${3:-5}
  scripts/seed-bench.sh "$M" >/dev/null
  refs_of 1 "$M" >"$work/refs"
  config "$work/config.toml" lock "$work/refs" '[prune]\nschedule = "0 0 1 1 *"\n'
  (cd "$work" && stowage_cfg config.toml pin && stowage_cfg config.toml pull) >/dev/null
  # The rest of the store: local one-layer images, imported straight into the engine. Those
  # an earlier run left are reused: Docker 20.10 rewrites its whole tag store on every import,
  # so filling 9,000 takes half an hour.
  python3 - "$SOCK" $((N - M)) <<'PY'
import http.client, io, json, os, socket, sys, tarfile, urllib.parse
sock, n = sys.argv[1], int(sys.argv[2])
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sock)
c = Conn("engine")
c.request("GET", "/images/json?" + urllib.parse.urlencode({"filters": json.dumps({"reference": ["stowage-bench/local-*"]})}))
have = {t for i in json.loads(c.getresponse().read()) for t in i.get("RepoTags") or []}
for k in range(n):
    if f"stowage-bench/local-{k}:1" in have:
        continue
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(64)
        info = tarfile.TarInfo("data.bin"); info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    q = urllib.parse.urlencode({"fromSrc": "-", "repo": f"stowage-bench/local-{k}", "tag": "1"})
    c.request("POST", f"/images/create?{q}", body=buf.getvalue(), headers={"Content-Type": "application/x-tar"})
    r = c.getresponse(); r.read()
    if r.status >= 300: raise SystemExit(f"import: {r.status}")
PY
  local floor=$work/floor.py
  cat >"$floor" <<'PY'
import http.client, socket, sys
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])
c = Conn("engine")
for path in ("/images/json", "/containers/json?all=1"):
    c.request("GET", path); r = c.getresponse(); r.read()
PY
  one() {
    case $1 in
      engine-listings) timed "plan over $N images ($M required)" "$1" "$2" python3 "$floor" "$SOCK" ;;
      docker-image-ls) timed "plan over $N images ($M required)" "$1" "$2" dk image ls ;;
      stowage-plan | before) (cd "$work" && BIN=$(bin_of "$1") timed "plan over $N images ($M required)" "$1" "$2" stowage_cfg config.toml plan) ;;
    esac
  }
  interleave "$R" one engine-listings stowage-plan docker-image-ls
  (cd "$work" && /usr/bin/time -f "%M" -o "$work/rss" "$STOWAGE" --config config.toml --log-level warn plan >/dev/null)
  echo "stowage plan peak RSS: $(awk '{ printf "%.1f MiB", $1 / 1024 }' "$work/rss")"
  (cd "$work" && engine_calls "stowage plan" "$STOWAGE" --config config.toml --log-level warn plan)
  summary engine-listings
}

case $what in
  prune | pull | warm | idle | scale) "bench_$what" "$@" ;;
  *) echo "unknown benchmark: $what (prune, pull, warm, idle or scale)" >&2; exit 2 ;;
esac
