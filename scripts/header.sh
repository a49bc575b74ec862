#!/usr/bin/env bash
# Refreshes the checked-in C header include/tsb_pkcs11.h from the one module/build.rs generates.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --workspace --lib   # as the tests select: no second build of the dependencies
header=$(ls -t target/debug/build/tsb-pkcs11-*/out/tsb_pkcs11.h | head -n 1)
cp "$header" include/tsb_pkcs11.h
echo "include/tsb_pkcs11.h refreshed from $header"
