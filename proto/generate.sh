#!/usr/bin/env bash
# Regenerates the protobuf-c code in Sources/CClusterWire from proto/llama_cluster.proto.
# Needs protoc-c (Debian package protobuf-c-compiler). The generated files are
# committed, so building the package never needs this script.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/Sources/CClusterWire"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

protoc-c --proto_path="$root/proto" --c_out="$tmp" llama_cluster.proto

mkdir -p "$out/include"
cp "$tmp/llama_cluster.pb-c.c" "$out/llama_cluster.pb-c.c"
cp "$tmp/llama_cluster.pb-c.h" "$out/include/llama_cluster.pb-c.h"
echo "generated $out/llama_cluster.pb-c.c and $out/include/llama_cluster.pb-c.h with $(protoc-c --version | head -1)"
