#!/usr/bin/env bash
# The fault scenarios (tests/reliability.rs) against one or more engine profiles:
#
#   scripts/reliability.sh [short|long] [ENGINE...]
#
# short (the default, what CI runs): 100 kills, 100 prune cycles under churn, 40 race tries.
# long (release checks): 1,000 kills, 1,000 cycles, 200 tries, 10 failed runs of an outage.
# ENGINE is a profile of scripts/test-env.sh (default: docker20 docker26 docker28 podman podman5).
# Each scenario's figures land in
# target/reliability/PROFILE-ENGINE.jsonl, one JSON object a line, and are printed at the end.
# Starts the test environment for each engine it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-short}
case $profile in short | long) ;; *) echo "usage: $0 [short|long] [ENGINE...]" >&2; exit 2 ;; esac
shift || true
engines=("$@")
((${#engines[@]})) || engines=(docker20 docker26 docker28 podman podman5)

out=target/reliability
mkdir -p "$out"
status=0
for engine in "${engines[@]}"; do
  STOWAGE_TEST_ENGINE=$engine scripts/test-env.sh up
  log=$out/$profile-$engine.log
  echo "reliability: $profile profile on $engine (log: $log)" >&2
  # One scenario at a time: they restart the engine and fill the store.
  if ! STOWAGE_TEST_ENGINE=$engine STOWAGE_RELIABILITY=$profile \
    cargo test --locked --test tests reliability:: -- --ignored --test-threads=1 --nocapture \
    >"$log" 2>&1; then
    status=1
    grep -E '^(test .*FAILED|---- |thread )' "$log" >&2 || true
  fi
  sed -n 's/.*RELIABILITY //p' "$log" >"$out/$profile-$engine.jsonl"
  grep -E '^test result:' "$log" >&2 || true
done
for engine in "${engines[@]}"; do
  echo "--- $engine ($profile)"
  cat "$out/$profile-$engine.jsonl"
done
exit $status
