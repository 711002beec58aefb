#!/usr/bin/env bash
# Benchmark (not a test): a store of T tags over N distinct images (tags are cheap), all
# unused. Times `stowage plan` (with the prune side) and its peak memory, then removes all of
# it with `stowage prune` and, after rebuilding the same store, with `docker image prune -a`.
# Usage: scripts/bench-prune.sh [N] [T]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300} T=${2:-5000}

scripts/test-env.sh up >/dev/null
# shellcheck disable=SC1090  # written by test-env.sh
set -a; source "${STOWAGE_TEST_ENV:-/tmp/stowage-test-env}/env.${STOWAGE_TEST_ENGINE:-docker20}"; set +a
scripts/seed-bench.sh "$N" >/dev/null
cargo build --release --locked --quiet

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for i in $(seq 1 "$N"); do echo "$STOWAGE_TEST_PLAIN/stowage-bench/img-$i:1"; done >"$work/refs"
cat >"$work/config.toml" <<TOML
[state]
file = "state.json"
[prune]
min_age = "0s"
dangling_min_age = "0s"
unused_max_age = "0s"
max_removals = 100000
pause = "0s"
TOML

# build_store: pull the N images, then add tags (by the engine API) until there are T.
build_store() {
  xargs -P4 -n1 "$DOCKER_CLI" pull -q <"$work/refs" >/dev/null
  python3 - "$N" "$T" "${DOCKER_HOST#unix://}" "$STOWAGE_TEST_PLAIN" <<'PY'
import http.client, json, socket, sys, urllib.parse
n, t, sock, reg = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sock)
c = Conn("engine")
def call(method, path):
    c.request(method, path); r = c.getresponse(); body = r.read()
    if r.status >= 300: raise SystemExit(f"{method} {path}: {r.status} {body[:200]}")
    return body
ids = [json.loads(call("GET", "/images/" + urllib.parse.quote(f"{reg}/stowage-bench/img-{i}:1", safe="") + "/json"))["Id"] for i in range(1, n + 1)]
for k in range(t - n):
    q = urllib.parse.urlencode({"repo": f"{reg}/stowage-bench/tagged-{k % 97}", "tag": f"t{k}"})
    call("POST", f"/images/{ids[k % n]}/tag?{q}")
PY
}
# measure NAME CMD...: wall seconds and peak RSS (KiB) of CMD, appended to $work/NAME.
measure() {
  local name=$1; shift
  python3 - "$@" >>"$work/$name" <<'PY'
import resource, subprocess, sys, time
t0 = time.monotonic()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
print(f"{time.monotonic() - t0:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}
count() { "$DOCKER_CLI" images -q | wc -l; }
stowage=(target/release/stowage --config "$work/config.toml" --log-format text --log-level warn)

"$DOCKER_CLI" image prune -a -f >/dev/null
build_store
echo "store: $("$DOCKER_CLI" images --format '{{.Repository}}:{{.Tag}}' | wc -l) tags over $(count) images" >"$work/store"
for _ in 1 2 3; do measure plan "${stowage[@]}" plan; done
measure prune "${stowage[@]}" prune
left_stowage=$(count)
build_store
measure docker_prune "$DOCKER_CLI" image prune -a -f
left_docker=$(count)

python3 - "$work" "$left_stowage" "$left_docker" <<'PY'
import pathlib, statistics, sys
work = pathlib.Path(sys.argv[1])
def rows(k): return [tuple(map(float, l.split())) for l in (work / k).read_text().splitlines()]
print((work / "store").read_text().strip() + "\n")
print("| run | time (s) | peak RSS (MiB) | images left |")
print("|---|---:|---:|---:|")
plan = rows("plan")
print(f"| `stowage plan` (pull and prune sides), median of 3 | {statistics.median(r[0] for r in plan):.3f} | {max(r[1] for r in plan) / 1024:.1f} | - |")
p = rows("prune")[0]; d = rows("docker_prune")[0]
print(f"| `stowage prune` (everything unused) | {p[0]:.2f} | {p[1] / 1024:.1f} | {sys.argv[2]} |")
print(f"| `docker image prune -a -f` | {d[0]:.2f} | - | {sys.argv[3]} |")
PY
