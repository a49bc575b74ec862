#!/usr/bin/env bash
# The test command (README "Set up" step 2): installs what the tests need on a fresh Debian
# machine, then runs every test of the workspace against the in-process TSB simulator.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v pkcs11-tool >/dev/null || need+=(opensc)
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v openssl >/dev/null || need+=(openssl)
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
mkdir -p target
echo "== cargo test (workspace)"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
