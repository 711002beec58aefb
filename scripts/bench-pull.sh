#!/usr/bin/env bash
# Benchmark (not a test): from an empty store, time pulling N distinct images from the local
# registry with `stowage pull`, a sequential `docker pull` loop, and `xargs -P4 docker pull`.
# Prints a markdown table of medians over R rounds. Usage: scripts/bench-pull.sh [N] [R]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50} R=${2:-5}

scripts/test-env.sh up >/dev/null
# shellcheck disable=SC1090  # written by test-env.sh
set -a; source "${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}/env.${STOWAGE_TEST_ENGINE:-docker20}"; set +a
scripts/seed-bench.sh "$N" >/dev/null
cargo build --release --locked --quiet

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
refs=$work/refs
for i in $(seq 1 "$N"); do echo "$STOWAGE_TEST_PLAIN/stowage-bench/img-$i:1"; done >"$refs"
for c in 4 8; do
  { printf '[pull]\nconcurrency = %d\nsplay = "0s"\n' "$c"
    while read -r r; do printf '[[image]]\nname = "%s"\n' "$r"; done <"$refs"; } >"$work/c$c.toml"
done

dk() { "$DOCKER_CLI" "$@"; }
clear_store() { xargs -r "$DOCKER_CLI" image rm -f <"$refs" >/dev/null 2>&1 || true; }
now() { date +%s.%N; }
# time_it NAME CMD...: clear the store, run CMD, append the seconds to $work/NAME.
time_it() {
  local name=$1; shift
  clear_store
  local t0; t0=$(now)
  "$@" >/dev/null 2>&1
  echo "$t0 $(now)" >>"$work/$name"
}
stowage_pull() { target/release/stowage --config "$work/c$1.toml" --log-format text --log-level warn pull; }
seq_loop() { while read -r r; do dk pull -q "$r"; done <"$refs"; }
xargs_p4() { xargs -P4 -n1 "$DOCKER_CLI" pull -q <"$refs"; }

for _ in $(seq 1 "$R"); do
  time_it stowage stowage_pull 4
  time_it stowage8 stowage_pull 8
  time_it sequential seq_loop
  time_it xargs_p4 xargs_p4
done
clear_store

python3 - "$work" "$N" "$R" <<'PY'
import statistics, sys, pathlib
work, n, r = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
def secs(k):
    return [float(b) - float(a) for a, b in (l.split() for l in (work / k).read_text().splitlines())]
med = {k: statistics.median(secs(k)) for k in ("stowage", "stowage8", "sequential", "xargs_p4")}
print(f"{n} images, median of {r} rounds, empty store each time\n")
print("| method | median (s) | vs stowage |")
print("|---|---:|---:|")
for k, label in (("stowage", "`stowage pull` (concurrency 4)"), ("stowage8", "`stowage pull` (concurrency 8)"), ("xargs_p4", "`xargs -P4 docker pull`"), ("sequential", "`docker pull` loop")):
    print(f"| {label} | {med[k]:.2f} | {med[k] / med['stowage']:.2f}x |")
PY
