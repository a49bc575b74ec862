#!/usr/bin/env bash
# The Debian package end to end (run by scripts/test.sh; needs root or sudo, and changes the
# machine only while it runs):
#  1. builds it (scripts/package.sh) from the `dev` build scripts/test.sh has made, unless
#     TSB_PKCS11_PROFILE names another profile (`dist` is what ships): what is checked here is
#     installing, p11-kit, doctor and purging, not optimisation, and the test command then
#     compiles the dependencies once;
#  2. records what p11-kit applications print without it (pkcs11-tool through p11-kit-proxy,
#     p11tool --list-tokens), installs it with dpkg -i, and checks that with no configuration
#     anywhere they print exactly the same and exit the same (the module offers no slot and
#     says nothing);
#  3. starts the simulator, writes a configuration with `tsb-pkcs11 config init`, and checks the
#     token through the installed files: pkcs11-tool -L through p11-kit-proxy, p11tool, and
#     `tsb-pkcs11 doctor --sign` (its signature verified with openssl);
#  4. purges the package and checks nothing it installed is left.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

. scripts/packages.sh
ensure_packages pkcs11-tool:opensc p11tool:gnutls-bin /usr/lib/x86_64-linux-gnu/p11-kit-proxy.so:p11-kit-modules \
  p11-kit:p11-kit openssl:openssl dpkg-architecture:dpkg-dev

sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
proxy=/usr/lib/$multiarch/p11-kit-proxy.so

if dpkg -s tsb-pkcs11 >/dev/null 2>&1; then
  echo "tsb-pkcs11 is already installed on this machine: not touching it" >&2
  exit 1
fi
if [ -e /etc/tsb-pkcs11/config.json ]; then
  echo "/etc/tsb-pkcs11/config.json exists: the no-configuration check cannot run" >&2
  exit 1
fi

deb=$(TSB_PKCS11_PROFILE=${TSB_PKCS11_PROFILE:-dev} bash scripts/package.sh | tail -1)
# The simulator the configured checks talk to (before HOME changes); --workspace: the features
# of scripts/test.sh's build (see scripts/package.sh), not a second build for tsb-sim alone.
cargo build -q --workspace --bin tsb-sim
echo "== package: $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' | grep -v '/$' > target/debian/files.txt

work=$(mktemp -d)
sim_pid=""
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
  $sudo dpkg --purge tsb-pkcs11 >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The environment of a user without any configuration.
export HOME=$work/home
mkdir -p "$HOME"
unset TSB_PKCS11_CONFIG XDG_CONFIG_HOME TSB_PKCS11_LOG TSB_PKCS11_LOG_FILE || true

apps() {  # what p11-kit applications print, with their exit codes
  { pkcs11-tool --module "$proxy" -L 2>&1 && echo "exit 0" || echo "exit $?"; } | sed '/^$/d'
  { p11tool --list-tokens 2>&1 && echo "exit 0" || echo "exit $?"; } | sed '/^$/d'
}
apps > "$work/before.txt"

echo "== dpkg -i"
$sudo dpkg -i "$deb" >/dev/null
for f in /usr/lib/$multiarch/pkcs11/libtsb_pkcs11.so /usr/share/p11-kit/modules/tsb-pkcs11.module \
  /usr/bin/tsb-pkcs11 /usr/lib/tsb-pkcs11/notation-pkcs11 /usr/share/doc/tsb-pkcs11/examples/config.json; do
  [ -f "$f" ] || { echo "not installed: $f" >&2; exit 1; }
done
p11-kit list-modules 2>/dev/null | grep -q "tsb-pkcs11" || { echo "p11-kit does not list tsb-pkcs11" >&2; exit 1; }

echo "== no configuration: p11-kit applications print what they printed without the package"
apps > "$work/after.txt"
if ! diff -u "$work/before.txt" "$work/after.txt"; then
  echo "the installed module changed the output of p11-kit applications" >&2
  exit 1
fi

echo "== with a configuration (tsb-pkcs11 config init) against the simulator"
cat > "$work/sim.toml" <<'EOF'
[[keys]]
label = "ec-p256"
algorithm = "EC"
curve = "P-256"
id = "0004"
[[keys]]
label = "rsa-2048"
algorithm = "RSA"
keySize = 2048
id = "0001"
EOF
TSB_SIM_STATE_DIR="$root/target/tsb-sim-state" "${CARGO_TARGET_DIR:-target}/debug/tsb-sim" --config "$work/sim.toml" \
  --listen 127.0.0.1:0 > "$work/sim.out" 2> "$work/sim.err" &
sim_pid=$!
for _ in $(seq 1 600); do
  grep -q '^listening on ' "$work/sim.out" 2>/dev/null && break
  kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.err" >&2; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$work/sim.out" | head -1)
[ -n "$url" ] || { echo "the simulator did not start" >&2; exit 1; }

tsb-pkcs11 config init --url "$url" --auth none
config=$HOME/.config/tsb-pkcs11/config.json
[ "$(stat -c %a "$config")" = 600 ] || { echo "config init: mode is not 0600" >&2; exit 1; }

out=$(pkcs11-tool --module "$proxy" -L 2>&1)
echo "$out" | grep -q "token label *: TSB" || { echo "pkcs11-tool -L through p11-kit-proxy: no TSB token:" >&2; echo "$out" >&2; exit 1; }
p11tool --list-tokens 2>&1 | grep -q "Label: TSB" || { echo "p11tool does not list the TSB token" >&2; exit 1; }
tsb-pkcs11 keys | grep -q "pkcs11:token=TSB;object=ec-p256;id=%00%04;type=private"

set +e
tsb-pkcs11 --json doctor --sign ec-p256 > "$work/doctor.json"
code=$?
set -e
[ "$code" = 0 ] || { cat "$work/doctor.json" >&2; echo "doctor exit code $code" >&2; exit 1; }
python3 - "$work" <<'EOF'
import base64, json, sys
work = sys.argv[1]
doc = json.load(open(f"{work}/doctor.json"))
sign = [c for c in doc["checks"] if c["step"] == "sign"][0]["details"]
for k in ("data", "signature", "publicKey"):
    open(f"{work}/{k}.bin", "wb").write(base64.b64decode(sign[k]))
# PKCS#11 ECDSA signatures are r||s; OpenSSL wants DER.
sig = open(f"{work}/signature.bin", "rb").read()
def der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80: b = b"\0" + b
    return b"\x02" + bytes([len(b)]) + b
n = len(sig) // 2
body = der_int(sig[:n]) + der_int(sig[n:])
open(f"{work}/signature.der", "wb").write(b"\x30" + bytes([len(body)]) + body)
EOF
openssl dgst -sha256 -verify <(openssl pkey -pubin -inform DER -in "$work/publicKey.bin") \
  -signature "$work/signature.der" "$work/data.bin"
/usr/lib/tsb-pkcs11/notation-pkcs11 get-plugin-metadata <<< '{}' | grep -q '"name":"pkcs11"'
# The documented one line that makes the plugin Notation's (docs/notation.md); through it, the
# plugin finds the module beside its real location.
mkdir -p ~/.config/notation/plugins/pkcs11 && ln -sf /usr/lib/tsb-pkcs11/notation-pkcs11 ~/.config/notation/plugins/pkcs11/
~/.config/notation/plugins/pkcs11/notation-pkcs11 describe-key <<< '{"contractVersion":"1.0","keyId":"ec-p256"}' \
  | grep -q '"keySpec":"EC-256"'
kill "$sim_pid"; sim_pid=""

echo "== dpkg --purge: nothing left"
$sudo dpkg --purge tsb-pkcs11 >/dev/null
left=0
while read -r f; do
  if [ -e "$f" ] || [ -L "$f" ]; then echo "left after purge: $f" >&2; left=1; fi
done < target/debian/files.txt
for d in /usr/lib/tsb-pkcs11 /usr/share/doc/tsb-pkcs11 /etc/tsb-pkcs11; do
  if [ -e "$d" ]; then echo "left after purge: $d" >&2; left=1; fi
done
[ "$left" = 0 ]
echo "== package test passed"
