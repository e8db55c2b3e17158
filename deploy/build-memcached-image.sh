#!/usr/bin/env bash
# Builds `bifrost-memcached:latest`: Debian's memcached (the package installed here) with the
# shared libraries it links, copied into an image FROM scratch (no registry is needed), run as
# the numeric user 65534. The fleet tests (tests/container.rs) and deploy/compose.yaml use it.
#
# Usage: bash deploy/build-memcached-image.sh    (apt-get install memcached first)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in docker memcached ldd; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
bin=$(command -v memcached)
context=target/memcached-image
rm -rf "$context"
mkdir -p "$context/rootfs/usr/bin"
cp "$bin" "$context/rootfs/usr/bin/memcached"
# Every library ldd names (the loader included), at the same path.
ldd "$bin" | grep -oE '/[^ ]+' | sort -u | while read -r lib; do
    mkdir -p "$context/rootfs$(dirname "$lib")"
    cp -L "$lib" "$context/rootfs$lib"
done
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
USER 65534:65534
EXPOSE 11211
ENTRYPOINT ["/usr/bin/memcached"]
CMD ["-p", "11211", "-m", "64"]
DOCKERFILE
docker build -q -t bifrost-memcached:latest "$context" >/dev/null
size=$(docker image inspect bifrost-memcached:latest --format '{{.Size}}')
echo "bifrost-memcached:latest ($(memcached -V)): $((size / 1024)) KiB"
