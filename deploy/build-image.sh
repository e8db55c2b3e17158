#!/usr/bin/env bash
# Builds the container image `bifrost:latest` (also tagged with the crate's version) FROM
# scratch: the static musl binary, stripped, as deploy/Dockerfile describes.
#
# Usage: bash deploy/build-image.sh            (prints the image's size at the end)
#
# The shipped binary carries no debug info; the build tree keeps it for profiling:
# target/x86_64-unknown-linux-musl/release/bifrost is the unstripped binary (perf and
# flamegraph read it), and target/image/bifrost.debug the debug info alone, which the stripped
# binary names by a GNU debuglink (gdb and perf find it when pointed at target/image).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in docker cargo objcopy strip; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    rustup target add "$target"
fi
command -v musl-gcc >/dev/null || {
    echo "error: musl-gcc not found (apt-get install musl-tools)" >&2
    exit 1
}
cargo build --release --target "$target"
bin="target/$target/release/bifrost"
context=target/image
rm -rf "$context"
mkdir -p "$context"
objcopy --only-keep-debug "$bin" "$context/bifrost.debug"
strip --strip-all -o "$context/bifrost" "$bin"
objcopy --add-gnu-debuglink="$context/bifrost.debug" "$context/bifrost"
# Only the binary goes into the build context.
printf 'bifrost.debug\n' >"$context/.dockerignore"
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
docker build -q -f deploy/Dockerfile -t bifrost:latest -t "bifrost:$version" "$context" >/dev/null
size=$(docker image inspect bifrost:latest --format '{{.Size}}')
echo "bifrost:latest (bifrost:$version): $((size / 1024)) KiB"
