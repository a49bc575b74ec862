#!/usr/bin/env bash
# Race and memory checking of the module under the reliability tests. Not part of the default
# test command (scripts/test.sh): the first ThreadSanitizer build takes ~13 min on 2 cores.
#
#   scripts/sanitize.sh                 # tsan + memcheck
#   scripts/sanitize.sh tsan            # ThreadSanitizer (nightly, -Zbuild-std)
#   scripts/sanitize.sh memcheck        # valgrind memcheck
#   scripts/sanitize.sh helgrind        # valgrind helgrind, informational (see below)
#
# tsan:     tests/module/concurrency.rs (all four tests) and the C_Finalize-under-load test of
#           tests/unload.rs, with std, every dependency, the module (.so) and the simulator
#           instrumented. The tests dlopen the module, whose __tsan_* calls resolve against the
#           runtime linked into the test executable: it is linked with --export-dynamic.
#           Fork tests are left out (TSan does not support fork() in multi-threaded programs).
#           Its own target directory (target/sanitize, or $SANITIZE_TARGET_DIR). Suppressed:
#           only tokio (the simulator) in scripts/tsan-suppressions.txt.
#           TSAN_REPEAT=n runs the concurrency tests n times (default 1).
# memcheck: tests/module/concurrency.rs, tests/module/bad_input.rs and tests/unload.rs (stable debug build)
#           under valgrind; any error fails.
# helgrind: the shared-session test only. Helgrind does not understand locks built on atomics
#           and futexes (parking_lot, std's Mutex, tokio), so it reports every access under such
#           a lock as a race; the script prints how many reports have a module frame and does
#           not fail. Use tsan for a verdict.
#
# TSB_PKCS11_SOAK_SECS (default 3 here) sets the soak's length.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then set -- tsan memcheck; fi
export TSB_PKCS11_SOAK_SECS="${TSB_PKCS11_SOAK_SECS:-3}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
status=0

need_valgrind() {
  if ! command -v valgrind >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
  fi
}

# The executables of the given test targets (stable debug build).
test_executables() {
  local args=()
  for t in "$@"; do args+=(--test "$t"); done
  cargo build -q -p tsb-pkcs11 -p tsb-pkcs11-command # what the tests load and run
  cargo test -p tsb-pkcs11-core "${args[@]}" --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | cut -d'"' -f4
}

run_tsan() {
  if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    rustup component add rust-src --toolchain nightly
  fi
  local dir="${SANITIZE_TARGET_DIR:-target/sanitize}"
  # The simulator's key cache, so RSA-4096 is not generated again under TSan.
  mkdir -p "$dir/$triple"
  if [ -d target/tsb-sim-state ]; then cp -rn target/tsb-sim-state "$dir/$triple/"; fi
  local flags="-Zsanitizer=thread -Clink-arg=-Wl,--export-dynamic"
  local opts="halt_on_error=1 second_deadlock_stack=1"
  opts="$opts suppressions=$PWD/scripts/tsan-suppressions.txt ${TSAN_OPTIONS:-}"
  # The instrumented module the tests load (tests/support would build an uninstrumented one).
  echo "== tsan: building the module"
  CARGO_TARGET_DIR="$dir" RUSTFLAGS="$flags" \
    cargo +nightly build -q -Zbuild-std --target "$triple" -p tsb-pkcs11 || return 1
  local module="$dir/$triple/debug/libtsb_pkcs11.so"
  case "$module" in /*) ;; *) module="$PWD/$module" ;; esac
  local i
  for i in $(seq 1 "${TSAN_REPEAT:-1}"); do
    echo "== tsan: tests/module/concurrency.rs (run $i)"
    if ! CARGO_TARGET_DIR="$dir" RUSTFLAGS="$flags" TSAN_OPTIONS="$opts" TSB_PKCS11_MODULE="$module" \
        cargo +nightly test -Zbuild-std --target "$triple" -p tsb-pkcs11-core --test module \
        -- --test-threads=1 --nocapture concurrency::; then
      echo "tsan: concurrency FAILED"; status=1
    fi
  done
  echo "== tsan: tests/unload.rs finalize_with_signs_in_flight"
  if ! CARGO_TARGET_DIR="$dir" RUSTFLAGS="$flags" TSAN_OPTIONS="$opts" TSB_PKCS11_MODULE="$module" \
      cargo +nightly test -Zbuild-std --target "$triple" -p tsb-pkcs11-core --test unload \
      -- --test-threads=1 --nocapture finalize_with_signs_in_flight; then
    echo "tsan: unload FAILED"; status=1
  fi
}

run_memcheck() {
  need_valgrind
  local module unload family
  module="$(test_executables module)"
  unload="$(test_executables unload)"
  # The grouped binary (tests/module): only the concurrency and bad_input families.
  for family in concurrency bad_input; do
    echo "== memcheck: $(basename "$module") $family::"
    if ! valgrind --error-exitcode=1 --leak-check=no --quiet "$module" --test-threads=1 "$family::"; then
      echo "memcheck: $family FAILED"; status=1
    fi
  done
  echo "== memcheck: $(basename "$unload")"
  if ! valgrind --error-exitcode=1 --leak-check=no --quiet "$unload" --test-threads=1; then
    echo "memcheck: $(basename "$unload") FAILED"; status=1
  fi
}

run_helgrind() {
  need_valgrind
  local exe log
  exe="$(test_executables module)"
  log="target/helgrind.log"
  echo "== helgrind: $(basename "$exe") threads_sharing_one_session (log: $log)"
  valgrind --tool=helgrind "$exe" --test-threads=1 concurrency::threads_sharing_one_session >"$log" 2>&1 || true
  local all module
  all=$(grep -c 'Possible data race' "$log" || true)
  module=$(awk '/Possible data race/{r=1; m=0} r && /tsb_pkcs11/{m=1} r && /^==[0-9]+== *$/{if (m) n++; r=0} END{print n+0}' "$log")
  echo "helgrind: $all race reports, $module with a frame in the module (informational: see the header)"
}

for mode in "$@"; do
  case "$mode" in
    tsan) run_tsan ;;
    memcheck) run_memcheck ;;
    helgrind) run_helgrind ;;
    *) echo "unknown mode '$mode' (tsan, memcheck, helgrind)" >&2; exit 2 ;;
  esac
done
if [ $status -eq 0 ]; then echo "sanitize.sh: clean ($*)"; else echo "sanitize.sh: FAILED ($*)" >&2; fi
exit $status
