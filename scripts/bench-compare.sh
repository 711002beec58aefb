#!/usr/bin/env bash
# Benchmark (not a test): this checkout's stowage against an earlier revision's, interleaved
# round by round in one run (the order alternates each round), on the same store. Of N seeded
# images, the first half is required and lock-pinned; the second half is not, and carries T
# extra tags. Measures:
#   - a warm `stowage pull` (everything present: asks no registry);
#   - `stowage plan` with the prune side (reads the store, plans both sides), and its peak RSS;
#   - `stowage prune`, removing the second half and its tags (pulled and tagged again first);
#   - `stowage run`: start to ready, and resident memory once idle.
# Usage: scripts/bench-compare.sh [OLD_REV] [N] [T] [R]; ONLY=prune measures the prune alone.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:-ab9435f} N=${2:-300} T=${3:-1000} R=${4:-5} ONLY=${ONLY:-}

scripts/test-env.sh up >/dev/null
# shellcheck disable=SC1090  # written by test-env.sh
set -a; source "${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}/env.${STOWAGE_TEST_ENGINE:-docker20}"; set +a
scripts/seed-bench.sh "$N" >/dev/null
cargo build --release --locked --quiet
# The earlier revision, built in a worktree with a target directory of its own.
old_src=target/bench-old/src
if [[ ! -d $old_src ]]; then git worktree add --detach "$old_src" "$OLD" >/dev/null; fi
git -C "$old_src" checkout --quiet --detach "$OLD"
CARGO_TARGET_DIR=$PWD/target/bench-old/target cargo build --release --locked --quiet --manifest-path "$old_src/Cargo.toml"
declare -A bin=([new]=target/release/stowage [old]=target/bench-old/target/release/stowage)

work=$(mktemp -d)
pid=
refs=$work/refs
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  "$DOCKER_CLI" image prune -a -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
half=$((N / 2))
for i in $(seq 1 "$half"); do echo "$STOWAGE_TEST_PLAIN/stowage-bench/img-$i:1"; done >"$refs"
for i in $(seq $((half + 1)) "$N"); do echo "$STOWAGE_TEST_PLAIN/stowage-bench/img-$i:1"; done >"$work/extra"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The pull side: every image, lock-pinned; a schedule that never fires during the run.
{ printf '[pull]\nconcurrency = 8\nsplay = "0s"\nschedule = "0 0 1 1 *"\n[state]\nfile = "state.json"\n'
  printf '[metrics]\nlisten = "127.0.0.1:%s"\n' "$port"
  printf '[prune]\nschedule = "0 0 1 1 *"\nmin_age = "0s"\ndangling_min_age = "0s"\nunused_max_age = "0s"\nmax_removals = 100000\npause = "0s"\n'
  while read -r r; do printf '[[image]]\nname = "%s"\n' "$r"; done <"$refs"; } >"$work/config.toml"
run() { "${bin[$1]}" --config "$work/config.toml" --log-format text --log-level warn "${@:2}"; }
run new pin >/dev/null
run new pull >/dev/null

# prunable: pulls the unrequired half and adds T tags over it (by the engine API).
prunable() {
  xargs -P4 -n1 "$DOCKER_CLI" pull -q <"$work/extra" >/dev/null
  python3 - "$half" "$N" "$T" "${DOCKER_HOST#unix://}" "$STOWAGE_TEST_PLAIN" <<'PY'
import http.client, json, socket, sys, urllib.parse
first, last, t, sock, reg = int(sys.argv[1]) + 1, int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sock)
c = Conn("engine")
def call(method, path):
    c.request(method, path); r = c.getresponse(); body = r.read()
    if r.status >= 300: raise SystemExit(f"{method} {path}: {r.status} {body[:200]}")
    return body
ids = [json.loads(call("GET", "/images/" + urllib.parse.quote(f"{reg}/stowage-bench/img-{i}:1", safe="") + "/json"))["Id"] for i in range(first, last + 1)]
for k in range(t):
    q = urllib.parse.urlencode({"repo": f"{reg}/stowage-bench/extra-{k % 97}", "tag": f"t{k}"})
    call("POST", f"/images/{ids[k % len(ids)]}/tag?{q}")
PY
}
# measure WHO NAME ARGS...: wall seconds and peak RSS (KiB), appended to $work/WHO.NAME.
measure() {
  local who=$1 name=$2; shift 2
  python3 - "${bin[$who]}" --config "$work/config.toml" --log-format text --log-level warn "$@" >>"$work/$who.$name" <<'PY'
import resource, subprocess, sys, time
t0 = time.monotonic()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
print(f"{time.monotonic() - t0:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}
# daemon WHO: start to ready (s) and idle RSS (KiB) of `stowage run`, appended to $work/WHO.run.
daemon() {
  local t0 t1 rss
  t0=$(date +%s.%N)
  "${bin[$1]}" --config "$work/config.toml" --log-format text --log-level warn run &
  pid=$!
  until [[ $(curl -sf "127.0.0.1:$port/metrics" 2>/dev/null) == *$'\nstowage_ready 1\n'* ]]; do
    kill -0 "$pid" 2>/dev/null || { echo "stowage run exited before it was ready" >&2; exit 1; }
    sleep 0.01
  done
  t1=$(date +%s.%N)
  sleep 5
  rss=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" || true; pid=
  echo "$(python3 -c "print(f'{$t1 - $t0:.3f}')") $rss" >>"$work/$1.run"
}

for round in $(seq 1 "$R"); do
  if (( round % 2 )); then order=(old new); else order=(new old); fi
  for who in "${order[@]}"; do
    prunable
    [[ $ONLY == prune ]] || measure "$who" warm_pull pull
    [[ $ONLY == prune ]] || measure "$who" plan plan
    measure "$who" prune prune
    left=$("$DOCKER_CLI" images -q | sort -u | wc -l)
    echo "$left" >>"$work/$who.left"
    [[ $ONLY == prune ]] || daemon "$who"
  done
done

python3 - "$work" "$N" "$T" "$R" "$OLD" "$(git rev-parse --short HEAD)" <<'PY'
import pathlib, statistics, sys
work, n, t, r, old, new = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
def col(who, name, i):
    f = work / f"{who}.{name}"
    return [float(l.split()[i]) for l in f.read_text().splitlines()] if f.exists() else []
half = int(n) // 2
left = {w: sorted(set((work / f"{w}.left").read_text().split())) for w in ("old", "new")}
print(f"{half} images required, present and lock-pinned; {int(n) - half} more with {t} extra tags pruned "
      f"each round (images left after each prune: before {', '.join(left['old'])}, after {', '.join(left['new'])}); "
      f"median of {r} rounds, interleaved\n")
print(f"| measure | {old} (before) | {new} (after) | after / before |")
print("|---|---:|---:|---:|")
for name, i, label, unit, scale in (
        ("warm_pull", 0, "warm `stowage pull`", "s", 1), ("plan", 0, "`stowage plan` (pull and prune sides)", "s", 1),
        ("plan", 1, "`stowage plan`, peak RSS", "MiB", 1024), ("prune", 0, f"`stowage prune` ({t} tags)", "s", 1),
        ("run", 0, "`stowage run`, start to ready", "s", 1), ("run", 1, "`stowage run`, idle RSS", "MiB", 1024)):
    if not col("old", name, i):
        continue
    a = statistics.median(col("old", name, i)) / scale
    b = statistics.median(col("new", name, i)) / scale
    print(f"| {label} | {a:.2f} {unit} | {b:.2f} {unit} | {b / a:.2f}x |")
print("\nEach round, before / after (the order alternates, before first in round 1):\n")
for name, i, label in (("warm_pull", 0, "warm pull (s)"), ("plan", 0, "plan (s)"), ("prune", 0, "prune (s)"),
                       ("run", 0, "run to ready (s)"), ("run", 1, "idle RSS (KiB)")):
    pairs = list(zip(col("old", name, i), col("new", name, i)))
    if pairs:
        print(f"- {label}: " + ", ".join(f"{a:g} / {b:g}" for a, b in pairs))
PY
