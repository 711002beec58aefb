#!/usr/bin/env bash
# Builds the Debian and RPM packages into target/packages/ from a release build.
#
#   scripts/package.sh
#
# Installs the packaging tools (pinned versions, with cargo install) when they are missing.
# The package contents are declared in Cargo.toml ([package.metadata.deb] and
# [package.metadata.generate-rpm]); the unit, the shipped config and the RPM scriptlets live in
# packaging/.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB=3.8.0
CARGO_GENERATE_RPM=0.21.1

# ensure_tool CRATE VERSION SUBCOMMAND
ensure_tool() {
  if ! cargo "$3" --version 2>/dev/null | grep -qF "$2"; then
    echo "package: installing $1 $2" >&2
    cargo install --locked --quiet "$1" --version "$2"
  fi
}
ensure_tool cargo-deb "$CARGO_DEB" deb
ensure_tool cargo-generate-rpm "$CARGO_GENERATE_RPM" generate-rpm

out=target/packages
rm -rf "$out"
mkdir -p "$out"
cargo build --release --locked
# The man page and the completions, from the CLI definition; the RPM takes the page gzipped
# (cargo-deb compresses man pages itself).
rm -rf target/generated
target/release/stowage generate target/generated
gzip -9nkf target/generated/stowage.1
cargo deb --no-build --output "$out"
cargo generate-rpm --output "$out"
ls -l "$out"
