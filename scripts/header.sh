#!/usr/bin/env bash
# Refreshes the checked-in C header include/tsb_pkcs11.h: the header test (tests/module/header.rs)
# generates it with cbindgen from module/src/ffi into the target's tmp folder; this copies it.
set -euo pipefail
cd "$(dirname "$0")/.."
# `--workspace`, as the tests select: no second build of the dependencies. The test fails while
# the checked-in header is stale, which is why this script runs.
rm -f "${CARGO_TARGET_DIR:-target}/tmp/tsb_pkcs11.h"
cargo test -q --workspace --test module header:: >/dev/null 2>&1 || true
header="${CARGO_TARGET_DIR:-target}/tmp/tsb_pkcs11.h"
[ -f "$header" ] || { echo "the header test did not generate $header: run cargo test --workspace --test module header::"; exit 1; }
cp "$header" include/tsb_pkcs11.h
echo "include/tsb_pkcs11.h refreshed from $header"
