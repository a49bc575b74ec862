#!/usr/bin/env bash
# The main job (README "Set up" step 1): builds the module, starts the TSB simulator with its demo
# keys, writes a module configuration pointing at it, and drives the module through PKCS#11,
# saying what happens. An approver ("alice") is simulated with `tsb-sim approve`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

. scripts/packages.sh
ensure_packages pkg-config:pkg-config dpkg=libssl-dev:libssl-dev

echo "== building the module, the simulator and the demo (dev profile: optimised dependencies)"
# Only what the demo runs: the module (libtsb_pkcs11.so), the simulator (tsb-sim) and the demo
# program (module/examples/demo.rs). The dev profile's dependencies are optimised (Cargo.toml):
# the simulator's key generation and signing are theirs. The tests (scripts/test.sh) build the
# whole workspace; cargo resolves some dependencies' features differently for it, so they
# compile those dependencies once more.
cargo build -q -p tsb-pkcs11 -p tsb-sim --lib --bins --example demo
bin=$(realpath "${CARGO_TARGET_DIR:-target}/debug")

work=$(mktemp -d)
sim_pid=""
approver_pid=""
cleanup() {
  [ -n "$approver_pid" ] && kill "$approver_pid" 2>/dev/null || true
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting the TSB simulator with the demo keys (tsb-sim/demo.toml)"
state="${TSB_SIM_STATE_DIR:-$root/target/tsb-sim-state}"
"$bin/tsb-sim" --listen 127.0.0.1:0 --config tsb-sim/demo.toml --state-dir "$state" \
  >"$work/sim.out" 2>"$work/sim.log" &
sim_pid=$!
url=""
for _ in $(seq 1 600); do
  url=$(sed -n 's/^listening on //p' "$work/sim.out" | head -n1)
  [ -n "$url" ] && break
  kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.log"; echo "the simulator did not start"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "the simulator did not start in time"; exit 1; }
echo "   simulator listening on $url"

config="$work/config.json"
cat >"$config" <<JSON
{
  "restApi": "$url",
  "pkcs11": {
    "tokenLabel": "TSB demo",
    "pollIntervalMs": 500,
    "pollIntervalMaxMs": 2000,
    "keyPasswords": { "ec-p256-pw": "secret-pw" }
  }
}
JSON
chmod 600 "$config"
echo "== module configuration written to $config (restApi: $url)"

# The approver: waits for an approval request, then approves it as alice after two seconds.
(
  while true; do
    id=$("$bin/tsb-sim" requests --url "$url" 2>/dev/null | awk '$4 == "PENDING" { print $1; exit }')
    if [ -n "$id" ]; then
      sleep 2
      echo "   [approver] tsb-sim approve $id --as alice"
      "$bin/tsb-sim" approve "$id" --as alice --url "$url" >/dev/null
    fi
    sleep 0.5
  done
) &
approver_pid=$!

echo "== driving the module through PKCS#11 (module/examples/demo.rs)"
echo
TSB_PKCS11_CONFIG="$config" TSB_PKCS11_LOG="${TSB_PKCS11_LOG:-info}" \
  "$bin/examples/demo" "$bin/libtsb_pkcs11.so"

if command -v pkcs11-tool >/dev/null; then
  echo
  echo "== the same token seen by OpenSC's pkcs11-tool"
  TSB_PKCS11_CONFIG="$config" pkcs11-tool --module "$bin/libtsb_pkcs11.so" -L
fi
