#!/usr/bin/env bash
# Sets up the local test environment (hermetic dockerd + registries on loopback), builds stowage,
# and runs the daemon on examples/demo.toml until Ctrl-C. `scripts/demo.sh --once` does one
# `stowage pull` instead and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-env.sh up
# shellcheck disable=SC1090  # the env file is written by test-env.sh
set -a; source "${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}/env.${STOWAGE_TEST_ENGINE:-docker20}"; set +a

cargo build --release --locked --quiet
stowage=(target/release/stowage --config examples/demo.toml)

"${stowage[@]}" check
echo "--- plan (changes nothing)"
"${stowage[@]}" plan
if [[ "${1:-}" == "--once" ]]; then
  echo "--- pull"
  "${stowage[@]}" pull || true
  echo "--- status: pins, local and registry digests, drift"
  "${stowage[@]}" status
  exit 0
fi
echo "--- daemon: boot pull, then every 30 s; the private image is retried with backoff;"
echo "    metrics: curl -s 127.0.0.1:9420/metrics | grep ^stowage_; Ctrl-C to stop"
exec "${stowage[@]}" run
