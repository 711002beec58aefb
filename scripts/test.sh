#!/usr/bin/env bash
# Every check and every test: formatting, lints, unit and property tests, the packages (built
# here, then checked by the tests), and the integration tests against the real engine and
# registries (started here if they are not running).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-env.sh up
scripts/test-env.sh tools
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
scripts/package.sh
log=$(mktemp); trap 'rm -f "$log"' EXIT
cargo test --locked 2>&1 | tee "$log"
# One closing line over every test binary, e.g. "67 passed, 0 failed".
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
