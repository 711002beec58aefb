#!/usr/bin/env bash
# Every check and every test: formatting, lints, unit and property tests, and the integration
# tests against the real engine and registries (started here if they are not running).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-env.sh up
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
