#!/usr/bin/env bash
# The test command (README "Set up" step 2): installs what the tests need on a fresh Debian
# machine, then runs every test of the workspace against the in-process TSB simulator.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/packages.sh
ensure_packages pkcs11-tool:opensc /usr/lib/softhsm/libsofthsm2.so:softhsm2 openssl:openssl pkg-config:pkg-config dpkg=libssl-dev:libssl-dev

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "== fuzzing the parsers (scripts/fuzz.sh, ${FUZZ_SECS:-10} s per target)"
  bash scripts/fuzz.sh "${FUZZ_SECS:-10}"
else
  echo "== fuzzing skipped: scripts/fuzz.sh needs the nightly toolchain, which this machine lacks"
fi
mkdir -p target
echo "== cargo test (workspace)"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
echo "== the Debian package: build, install, p11-kit applications, doctor, purge (scripts/package-test.sh)"
bash scripts/package-test.sh
