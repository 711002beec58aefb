#!/usr/bin/env bash
# Builds the stowage container image from this checkout, with no registry: the release binary,
# the glibc libraries it links (copied from this build host), the CA bundle and a default
# config, on `scratch` (packaging/container/Dockerfile).
#
#   scripts/image.sh [--no-build] [--tag NAME] [--save FILE]
#
# Builds with the Docker engine DOCKER_HOST names (the classic builder, which every engine
# version here has), tags the image `stowage:VERSION` and `stowage:latest` (or NAME), and with
# --save writes it as a `docker save` archive that `docker load` and `podman load` take, so
# the same image goes into every engine. Prints the image ID and its size.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
tag=""
save=""
while (($#)); do
  case $1 in
    --no-build) build=0 ;;
    --tag) tag=$2; shift ;;
    --save) save=$2; shift ;;
    *) echo "image: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
tag=${tag:-stowage:$version}
binary=target/release/stowage
context=target/image
rootfs=$context/rootfs

if ((build)); then
  cargo build --release --locked
fi
[[ -x $binary ]] || { echo "image: no $binary (run without --no-build)" >&2; exit 1; }

# The libraries the binary links, at the paths the dynamic loader looks for them. glibc's
# loader finds its name service (files, dns) inside libc.so.6 since 2.34: nothing else of the
# distribution is needed to resolve registry names.
copy_libraries() {
  local lib
  for lib in $(ldd "$binary" | grep -o '/[^ ]*' | sort -u); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}

# A CA bundle: stowage asks HTTPS registries itself (tags, signatures).
copy_ca_bundle() {
  local bundle=/etc/ssl/certs/ca-certificates.crt
  [[ -s $bundle ]] || { echo "image: no CA bundle at $bundle (install ca-certificates)" >&2; exit 1; }
  mkdir -p "$rootfs/etc/ssl/certs"
  cp "$bundle" "$rootfs/etc/ssl/certs/"
}

assemble() {
  rm -rf "$context"
  mkdir -p "$rootfs/usr/bin" "$rootfs/etc/stowage" "$rootfs/var/lib/stowage" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  install -m 0755 "$binary" "$rootfs/usr/bin/stowage"
  copy_libraries
  copy_ca_bundle
  install -m 0644 packaging/container/config.toml "$rootfs/etc/stowage/config.toml"
  # Names for the IDs a container runs as (error messages, `docker exec ... id`).
  printf 'root:x:0:0:root:/root:/usr/bin/stowage\nnobody:x:65534:65534:nobody:/:/usr/bin/stowage\n' \
    >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  cp packaging/container/Dockerfile "$context/Dockerfile"
}

assemble
# The classic builder: Docker 20.10's default, and present in every later engine.
DOCKER_BUILDKIT=0 docker build --quiet \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.title=stowage" \
  --label "org.opencontainers.image.source=https://example.org/stowage" \
  --label "org.opencontainers.image.licenses=Apache-2.0" \
  -t "$tag" -t "${tag%%:*}:latest" "$context" >/dev/null
id=$(docker image inspect -f '{{.Id}}' "$tag")
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "image: $tag $id ($size bytes)"
if [[ -n $save ]]; then
  mkdir -p "$(dirname "$save")"
  docker save -o "$save" "$tag" "${tag%%:*}:latest"
  echo "image: saved to $save ($(stat -c %s "$save") bytes)"
fi
