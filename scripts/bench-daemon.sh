#!/usr/bin/env bash
# Benchmark (not a test): the daemon with N required images, all present and lock-pinned.
# Measures the time from `stowage run` to ready (every image checked, no registry request),
# its resident memory once idle, and the cost of a metrics scrape; and, for comparison, a
# `docker image inspect` loop over the same N (what a hand-written boot check does).
# Usage: scripts/bench-daemon.sh [N] [SCRAPES]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500} S=${2:-200}

scripts/test-env.sh up >/dev/null
# shellcheck disable=SC1090  # written by test-env.sh
set -a; source "${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}/env.${STOWAGE_TEST_ENGINE:-docker20}"; set +a
scripts/seed-bench.sh "$N" >/dev/null
cargo build --release --locked --quiet

work=$(mktemp -d)
pid=
refs=$work/refs
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  # Leave the store as found.
  [[ -f $refs ]] && { xargs -r "$DOCKER_CLI" image rm -f <"$refs" >/dev/null 2>&1 || true; }
  rm -rf "$work"
}
trap cleanup EXIT
for i in $(seq 1 "$N"); do echo "$STOWAGE_TEST_PLAIN/stowage-bench/img-$i:1"; done >"$refs"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{ printf '[pull]\nconcurrency = 8\nsplay = "0s"\nschedule = "0 0 1 1 *"\n[state]\nfile = "state.json"\n'
  printf '[metrics]\nlisten = "127.0.0.1:%s"\n' "$port"
  while read -r r; do printf '[[image]]\nname = "%s"\n' "$r"; done <"$refs"; } >"$work/config.toml"
stowage() { target/release/stowage --config "$work/config.toml" --log-format text --log-level warn "$@"; }
stowage pin >/dev/null
stowage pull >/dev/null # all present from here on

now() { date +%s.%N; }
t0=$(now)
# The binary itself, not the shell function: $! must be its PID (for its memory).
target/release/stowage --config "$work/config.toml" --log-format text --log-level warn run &
pid=$!
# Polls the metrics (not `curl | grep -q`: under pipefail, grep closing early fails curl).
until [[ $(curl -sf "127.0.0.1:$port/metrics" 2>/dev/null) == *$'\nstowage_ready 1\n'* ]]; do
  kill -0 "$pid" 2>/dev/null || { echo "stowage run exited before it was ready" >&2; exit 1; }
  sleep 0.01
done
t1=$(now)
sleep 10
rss=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status")
bytes=$(curl -sf "127.0.0.1:$port/metrics" | wc -c)
for _ in $(seq 1 "$S"); do curl -sf -o /dev/null -w '%{time_total}\n' "127.0.0.1:$port/metrics"; done >"$work/scrapes"
kill -TERM "$pid"; wait "$pid" || true; pid=
t2=$(now)
xargs "$DOCKER_CLI" image inspect <"$refs" >/dev/null # one call for all: the fastest CLI form
t3=$(now)
t4=$(now)
while read -r r; do "$DOCKER_CLI" image inspect "$r" >/dev/null; done <"$refs"
t5=$(now)

python3 - "$work/scrapes" "$N" "$t0" "$t1" "$rss" "$bytes" "$t2" "$t3" "$t4" "$t5" <<'PY'
import statistics, sys
scrapes = [float(l) * 1000 for l in open(sys.argv[1])]
n, t0, t1, rss, size, t2, t3, t4, t5 = sys.argv[2:]
n = int(n)
print(f"{n} required images, all present and lock-pinned\n")
print("| measure | value |")
print("|---|---:|")
print(f"| `stowage run` start to ready (metrics `stowage_ready 1`) | {float(t1) - float(t0):.2f} s |")
print(f"| resident memory, idle after ready | {int(rss) / 1024:.1f} MiB |")
print(f"| metrics scrape, median of {len(scrapes)} ({int(size) / 1024:.0f} KiB) | {statistics.median(scrapes):.2f} ms |")
print(f"| metrics scrape, max | {max(scrapes):.2f} ms |")
print(f"| `docker image inspect` of all {n} in one call | {float(t3) - float(t2):.2f} s |")
print(f"| `docker image inspect` loop, one call per image | {float(t5) - float(t4):.2f} s |")
PY
