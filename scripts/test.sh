#!/usr/bin/env bash
# Every check and every test: formatting, lints, unit and property tests, the packages (built
# here, then checked by the tests), the integration tests against each engine profile and the
# real registries, and the fault scenarios' short profile (all started here if not running).
#
# STOWAGE_TEST_ENGINES narrows the engines (default "docker20 docker26 docker28 podman podman5");
# the first one also runs the unit tests and the tests that do not depend on the engine (the
# packages, `stowage check`, the layering, the alert rules). The signature tests run on those
# in STOWAGE_SIGNATURE_ENGINES (default "docker20 podman5"), the fault scenarios on those in
# STOWAGE_FAULT_ENGINES (default "docker20 docker28 podman5": the classic store, the containerd
# 2 store, the newest Podman), each on the first engine when none of those is selected: all
# five of each do not fit CI's hour (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a engines <<<"${STOWAGE_TEST_ENGINES:-docker20 docker26 docker28 podman podman5}"
# Those of the engines under test that are in the list $1, or the first of them.
selected() {
  local picked=() engine
  for engine in "${engines[@]}"; do
    [[ " $1 " == *" $engine "* ]] && picked+=("$engine")
  done
  ((${#picked[@]})) || picked=("${engines[0]}")
  echo "${picked[@]}"
}
read -r -a faults <<<"$(selected "${STOWAGE_FAULT_ENGINES:-docker20 docker28 podman5}")"
read -r -a signatures <<<"$(selected "${STOWAGE_SIGNATURE_ENGINES:-docker20 podman5}")"
for engine in "${engines[@]}"; do STOWAGE_TEST_ENGINE=$engine scripts/test-env.sh up; done
scripts/test-env.sh tools
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
scripts/package.sh
# The container image, built once by the seed engine (Docker 20.10) and loaded by each engine's
# tests from the archive.
seed=$(sed -n 's/^STOWAGE_TEST_SEED_DOCKER_HOST=//p' \
  "${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}/env.${engines[0]}")
DOCKER_HOST=$seed scripts/image.sh --no-build --save target/image/stowage.tar
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
first=${engines[0]}
echo "=== unit tests, and the integration tests against $first" | tee -a "$log"
STOWAGE_TEST_ENGINE=$first cargo test --locked 2>&1 | tee -a "$log" || status=1
for engine in "${engines[@]:1}"; do
  echo "=== integration tests against $engine" | tee -a "$log"
  skip=(--skip packaging:: --skip check:: --skip layers::
    --skip metrics::the_alert_rules_pass_promtool_and_their_unit_tests)
  [[ " ${signatures[*]} " == *" $engine "* ]] || skip+=(--skip signatures::)
  STOWAGE_TEST_ENGINE=$engine cargo test --locked --test tests -- "${skip[@]}" 2>&1 |
    tee -a "$log" || status=1
done
echo "=== fault scenarios, short profile, against ${faults[*]}" | tee -a "$log"
scripts/reliability.sh short "${faults[@]}" 2>&1 | tee -a "$log" || status=1
# The .deb under a real systemd as PID 1 (Debian 12 and 13 roots in systemd-nspawn), against a
# Docker engine (Podman's rootful socket has no group for the daemon's user).
systemd_engine=""
for engine in "${engines[@]}"; do
  [[ $engine == docker26 || ( $engine == docker20 && -z $systemd_engine ) ]] && systemd_engine=$engine
done
if [[ -n $systemd_engine ]]; then
  echo "=== the .deb under a real systemd, against $systemd_engine" | tee -a "$log"
  STOWAGE_TEST_ENGINE=$systemd_engine scripts/systemd-test.sh 2>&1 | tee -a "$log" || status=1
fi
# One closing line over every test binary and engine, e.g. "67 passed, 0 failed".
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit $status
