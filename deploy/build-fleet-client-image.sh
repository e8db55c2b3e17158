#!/usr/bin/env bash
# Builds `bifrost-fleet-client:latest`: the fleet tests' load tool (benches/fleet_client.rs),
# static (musl), in an image FROM scratch, so that the clients of tests/fleet.rs run in a
# container of their own on the fleet's network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target=x86_64-unknown-linux-musl
exe=$(cargo build --release --target "$target" --bench fleet_client --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*fleet_client[^"]*"' | tail -n 1 | cut -d'"' -f4)
if [[ -z $exe || ! -x $exe ]]; then
    echo "error: the fleet_client bench did not build for $target" >&2
    exit 1
fi
context=target/fleet-client-image
rm -rf "$context"
mkdir -p "$context"
strip -o "$context/fleet_client" "$exe"
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY fleet_client /fleet_client
USER 65532:65532
ENTRYPOINT ["/fleet_client"]
DOCKERFILE
docker build -q -t bifrost-fleet-client:latest "$context" >/dev/null
echo "bifrost-fleet-client:latest: $(($(docker image inspect bifrost-fleet-client:latest --format '{{.Size}}') / 1024)) KiB"
