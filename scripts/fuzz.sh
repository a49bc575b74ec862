#!/usr/bin/env bash
# Fuzzes the module's parsers with cargo-fuzz (libFuzzer + AddressSanitizer, nightly Rust):
# mechanism parameters, templates, crypto parsers, X.509 certificates, TSB responses (JSON) and
# the HTTP/1.1 response reader (status line, headers, sized and chunked bodies, keep-alive).
#
#   scripts/fuzz.sh                 # 30 s per target (6 targets: ~3 min + the first build)
#   scripts/fuzz.sh 10              # the short run CI can call (~50 s + build)
#   scripts/fuzz.sh 300 mechanism   # one target for longer
#
# Each target starts from the seeds in fuzz/seeds/<target> plus the corpus kept in
# fuzz/corpus/<target> (not checked in). A crash leaves its input in fuzz/artifacts/<target>/
# and makes the script exit non-zero after the other targets ran; reproduce it with
#   cd fuzz && cargo +nightly fuzz run -a <target> artifacts/<target>/<file>
# Without nightly the targets still type-check (as cargo fuzz compiles them, with --cfg fuzzing):
#   cd fuzz && RUSTFLAGS="--cfg fuzzing" cargo check --bins
# The template target feeds ffi::convert's bounded reader lengths that lie (ulValueLen past the
# buffer, ulCount past the array): any read before the bound check is an ASan report.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-${FUZZ_SECS:-30}}"
shift || true

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# -a: debug assertions (integer overflow checks) in the fuzzed code.
echo "== building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build -a
bin_dir="target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

failed=()
start=$(date +%s)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  if [ -d "seeds/$t" ]; then cp -n "seeds/$t"/* "corpus/$t"/ 2>/dev/null || true; fi
  echo "== $t: ${secs}s"
  # The binary cargo fuzz built (calling it directly skips a cargo run per target).
  if ! "$bin_dir/$t" -artifact_prefix="artifacts/$t/" \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
      "corpus/$t" >"target/fuzz-$t.log" 2>&1; then
    failed+=("$t")
    echo "   FAILED: see fuzz/target/fuzz-$t.log and fuzz/artifacts/$t/"
    tail -n 30 "target/fuzz-$t.log"
  else
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)' \
      "target/fuzz-$t.log" | tr '\n' ' '
    echo
  fi
done
echo "== fuzzing took $(( $(date +%s) - start ))s for ${#targets[@]} targets"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: no crashes"
