#!/usr/bin/env bash
# Push N distinct small images to the plain test registry, for benchmarks:
#   scripts/seed-bench.sh N [PREFIX]   ->  127.0.0.1:5101/PREFIX-1:1 ... PREFIX-N:1
# PREFIX defaults to stowage-bench/img. Images already in the registry are skipped; the built
# images are removed from the hermetic engine afterwards. Needs `scripts/test-env.sh up` first.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=test-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/test-env.sh" # ROOT, PLAIN, dk, http_status, log, die

N=${1:?usage: $0 N [PREFIX]}
PREFIX=${2:-stowage-bench/img}
[[ $N =~ ^[0-9]+$ ]] || die "N must be a number"
if ! { dockerd_up && registry_up plain; }; then die "test environment is not up: run scripts/test-env.sh up"; fi

MANIFEST_V2='Accept: application/vnd.docker.distribution.manifest.v2+json'
refs=() # the images not yet in the registry
for ((i = 1; i <= N; i++)); do
  [[ $(http_status "$PLAIN" "/v2/$PREFIX-$i/manifests/1" "$MANIFEST_V2") == 200 ]] ||
    refs+=("$PLAIN/$PREFIX-$i:1")
done
log "$((N - ${#refs[@]})) of $N already in $PLAIN, pushing ${#refs[@]}"
((${#refs[@]})) || exit 0

tmp=$(mktemp -d)
# On any exit: remove the temp dir and whatever was made, so the engine store stays empty.
trap 'rm -rf "$tmp"; dk rmi "${refs[@]}" >/dev/null 2>&1 || true' EXIT
# `docker import` of a one-file tar makes the same one-layer FROM-scratch image as a build with
# COPY, ~3x faster (no intermediate containers: the classic builder spends ~0.4 s per image).
for ref in "${refs[@]}"; do
  head -c 65536 /dev/urandom >"$tmp/data.bin" # distinct content => distinct layer and digest
  tar -C "$tmp" -c data.bin | dk import -c 'LABEL org.stowage.test=1' - "$ref" >/dev/null
done
# Pushing is mostly round trips to the registry: 4 at once.
printf '%s\n' "${refs[@]}" |
  DOCKER_CONFIG=$ROOT/cli-config xargs -P4 -I{} "$DOCKER_CLI" -H "unix://$ROOT/$SEED_ENGINE/engine.sock" push -q {} >/dev/null
log "pushed ${#refs[@]} images"
