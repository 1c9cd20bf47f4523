#!/usr/bin/env bash
# Installs the system packages LlamaCluster builds and tests with, when they are missing
# (Debian/Ubuntu; run as root or with sudo available). Swift itself must already be on PATH.
set -euo pipefail
packages=(libzmq3-dev libprotobuf-c-dev pkg-config python3 python3-venv iproute2 curl)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v swift >/dev/null 2>&1; then
    if [ -x /opt/swift/usr/bin/swift ]; then
        echo "note: add /opt/swift/usr/bin to PATH" >&2
    else
        echo "error: Swift 6 is required (swift not found on PATH)" >&2
        exit 1
    fi
fi
