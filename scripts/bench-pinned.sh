#!/usr/bin/env bash
# Benchmark (not a test): N required images, all present and pinned. Times a warm
# `stowage pull` (lock-pinned: should ask the registry nothing), the same with every image
# following its tag (one HEAD per image), and a `docker pull` loop over the same N, counting
# the plain registry's requests for each. Also times `stowage pin` and the cold pull.
# Usage: scripts/bench-pinned.sh [N] [R]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500} R=${2:-3}

scripts/test-env.sh up >/dev/null
# shellcheck disable=SC1090  # written by test-env.sh
set -a; source "${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}/env.${STOWAGE_TEST_ENGINE:-docker20}"; set +a
scripts/seed-bench.sh "$N" >/dev/null
cargo build --release --locked --quiet

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
refs=$work/refs
for i in $(seq 1 "$N"); do echo "$STOWAGE_TEST_PLAIN/stowage-bench/img-$i:1"; done >"$refs"
# make_config DIR PIN: a config in DIR with every image, `pin = PIN` unless PIN is "lock".
make_config() {
  mkdir -p "$1"
  { printf '[pull]\nconcurrency = 8\nsplay = "0s"\n[state]\nfile = "state.json"\n'
    while read -r r; do
      printf '[[image]]\nname = "%s"\n' "$r"
      [[ $2 == lock ]] || printf 'pin = "%s"\n' "$2"
    done <"$refs"; } >"$1/config.toml"
}
make_config "$work/lock" lock
make_config "$work/follow" follow
stowage() { target/release/stowage --log-format text --log-level warn "$@"; }
now() { date +%s.%N; }
mark() { wc -l <"$STOWAGE_TEST_PLAIN_LOG"; }
# requests FROM: registry requests logged since line FROM.
requests() { sleep 0.5; tail -n +"$(($1 + 1))" "$STOWAGE_TEST_PLAIN_LOG" | grep -cE '"(HEAD|GET) /v2/' || true; }
# timed NAME CMD...: run CMD, append "seconds requests" to $work/NAME.
timed() {
  local name=$1; shift
  local m t0 t1; m=$(mark); t0=$(now)
  "$@" >/dev/null 2>&1
  t1=$(now)
  echo "$t0 $t1 $(requests "$m")" >>"$work/$name"
}

xargs -r "$DOCKER_CLI" image rm -f <"$refs" >/dev/null 2>&1 || true
timed pin stowage --config "$work/lock/config.toml" pin
timed cold stowage --config "$work/lock/config.toml" pull
for _ in $(seq 1 "$R"); do
  timed warm_lock stowage --config "$work/lock/config.toml" pull
  timed warm_follow stowage --config "$work/follow/config.toml" pull
  timed docker_loop bash -c "while read -r r; do '$DOCKER_CLI' pull -q \"\$r\"; done <'$refs'"
done
xargs -r "$DOCKER_CLI" image rm -f <"$refs" >/dev/null 2>&1 || true

python3 - "$work" "$N" "$R" <<'PY'
import statistics, sys, pathlib
work, n, r = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rows(k):
    return [(float(b) - float(a), int(q)) for a, b, q in (l.split() for l in (work / k).read_text().splitlines())]
print(f"{n} images, all present; median of {r} rounds for the warm runs\n")
print("| run | time (s) | registry requests | per image |")
print("|---|---:|---:|---:|")
for k, label in (("pin", "`stowage pin` (writes the lock)"), ("cold", "cold `stowage pull` (empty store, by digest)"),
                 ("warm_lock", "warm `stowage pull`, lock-pinned"), ("warm_follow", "warm `stowage pull`, following tags"),
                 ("docker_loop", "`docker pull` loop (all present)")):
    rs = rows(k)
    t = statistics.median(x for x, _ in rs)
    q = statistics.median(y for _, y in rs)
    print(f"| {label} | {t:.2f} | {q:.0f} | {q / n:.2f} |")
PY
