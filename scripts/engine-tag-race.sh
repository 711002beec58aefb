#!/usr/bin/env bash
# The engine's own race between moving a tag and removing an image, without stowage: what
# docs/reliability.md ("An engine race no client can close") measures. For a report upstream,
# and to try each new engine.
#
#   DOCKER_HOST=unix:///path/engine.sock scripts/engine-tag-race.sh [name|id] [ROUNDS]
#
# Each round: image K has no name (a tag moved away from it), image C has the tag race:t.
# Then, a few milliseconds apart in either order, `POST /images/K/tag` moves race:t onto K
# while `DELETE /images/race:t` (name) or `DELETE /images/C` (id) removes C. K is kept by
# nobody's rule here, but it is not the image asked to go: if it is gone afterwards, the
# engine removed it. Uses a hermetic engine only: every image in it is deleted between
# rounds.
set -euo pipefail

mode=${1:-name}
rounds=${2:-100}
case $mode in name | id) ;; *) echo "usage: $0 [name|id] [ROUNDS]" >&2; exit 2 ;; esac
sock=${DOCKER_HOST#unix://}
[[ -S $sock ]] || { echo "$0: DOCKER_HOST must name the unix socket of a test engine" >&2; exit 2; }

api() { curl -s --unix-socket "$sock" "$@"; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# A one-file image (imported: no builder state involved), tagged $1; prints its ID without
# `sha256:`.
build() {
  echo "$RANDOM$RANDOM$RANDOM" >"$dir/file"
  local id
  id=$(tar -C "$dir" -c file | docker import - "$1") || exit 1
  id=${id##* } # Podman's CLI prints the ID twice
  echo "${id#sha256:}"
}

lost=0
for ((round = 1; round <= rounds; round++)); do
  k=$(build race:k) && c=$(build race:t) || exit 1
  api -X POST "http://engine/images/$c/tag?repo=race&tag=k" >/dev/null # K loses its name
  api -X DELETE "http://engine/images/race:k?noprune=1" >/dev/null     # C keeps race:t only
  target=race:t
  [[ $mode == id ]] && target=$c
  (
    sleep "0.00$((RANDOM % 6))"
    api -X POST "http://engine/images/$k/tag?repo=race&tag=t" >/dev/null
  ) &
  sleep "0.00$((RANDOM % 6))"
  answer=$(api -X DELETE "http://engine/images/$target?noprune=1")
  wait
  if [[ $(api -o /dev/null -w '%{http_code}' "http://engine/images/$k/json") != 200 ]]; then
    lost=$((lost + 1))
    echo "round $round: K is gone; the DELETE answered: ${answer//$k/K}"
  fi
  docker images -q | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
done
echo "$mode: K, never asked to go, was removed in $lost of $rounds rounds"
