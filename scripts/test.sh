#!/usr/bin/env bash
# The test command (README "Set up" step 2): installs what the tests need on a fresh Debian
# machine, then runs every test of the workspace against the in-process TSB simulator.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/packages.sh
ensure_packages pkcs11-tool:opensc /usr/lib/softhsm/libsofthsm2.so:softhsm2 certutil:libnss3-tools openssl:openssl pkg-config:pkg-config dpkg=libssl-dev:libssl-dev tinyproxy:tinyproxy
# The clients of the compatibility suite (tests/compat/run.sh); pkcs11-provider comes from backports.
dpkg -s pkcs11-provider >/dev/null 2>&1 || ensure_backports
ensure_packages dpkg=pkcs11-provider:pkcs11-provider dpkg=libengine-pkcs11-openssl:libengine-pkcs11-openssl \
  p11tool:gnutls-bin certtool:gnutls-bin p11-kit:p11-kit dpkg=p11-kit-modules:p11-kit-modules \
  ssh-agent:openssh-client nginx:nginx curl:curl pgrep:procps java:openjdk-17-jdk-headless \
  jarsigner:openjdk-17-jdk-headless /usr/bin/python3:python3 dpkg=python3-venv:python3-venv
# python-pkcs11 for the compatibility tests, PyKCS11 for the post-quantum client test; the pure-Python post-quantum verifiers of
# tests/python/pqc_verify.py (ML-DSA, SLH-DSA, HSS/LMS).
ensure_venv target/compat-venv python-pkcs11 pykcs11:PyKCS11 dilithium-py slh-dsa:slhdsa hsslms

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
echo "== cargo build (workspace): the module, the command and the simulator the tests run"
cargo build --workspace -q
echo "== cargo test (workspace)"
# The module honours https_proxy/HTTPS_PROXY and NO_PROXY like curl, loopback included. The tests
# reach simulators on this machine, and the proxy tests start their own proxy and set what they
# test explicitly: a proxy setting of the machine would change what they see (a NO_PROXY that
# names localhost bypasses the tests' own proxy), so the test run has none.
unset https_proxy HTTPS_PROXY http_proxy HTTP_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
echo "== compatibility suite (tests/compat/run.sh: PKCS#11 applications against the module)"
# `cargo build --workspace` has built the module and tsb-sim (target/debug).
bash tests/compat/run.sh target/debug
echo "== the Debian package: build, install, p11-kit applications, doctor, purge (scripts/package-test.sh)"
bash scripts/package-test.sh
