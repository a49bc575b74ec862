#!/usr/bin/env bash
# Compatibility suite: the PKCS#11 applications people use, each driving the built module
# (libtsb_pkcs11.so) against the TSB simulator (tsb-sim). Every signature is verified outside the
# module: with the openssl CLI against the simulator's own public key, or by the client's own
# verifier (p11tool --test-sign, jarsigner -verify, ssh-keygen -Y verify, openssl s_client).
#
#   bash tests/compat/run.sh [BIN_DIR]     # BIN_DIR holds libtsb_pkcs11.so and tsb-sim
#                                          # (default target/debug; scripts/test.sh builds them)
#
# Prints a table client x operation: "pass", "FAIL (reason)", or "n/s" (not supported by the client,
# reason given below the table). Exits non-zero when any cell expected to pass fails.
# The clients are installed by scripts/test.sh (scripts/packages.sh); a missing client is a failure.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/compat
BIN=${1:-$ROOT/target/debug}
VENV=${TSB_COMPAT_VENV:-$ROOT/target/compat-venv}
START=$(date +%s)

W=$(mktemp -d "${TMPDIR:-/tmp}/tsb-compat.XXXXXX")
# Workers of nginx (www-data), the p11-kit user and ssh helpers must reach the module and config.
chmod 755 "$W"
mkdir -p "$W/logs"
PIDS=()
# Daemons started inside a check (ssh-agent, p11-kit server) append their pid to $W/pids.
cleanup() {
  [ -f "$W/nginx/nginx.pid" ] && kill "$(cat "$W/nginx/nginx.pid")" 2>/dev/null
  [ -f "$W/pids" ] && while read -r p; do kill "$p" 2>/dev/null; done <"$W/pids"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ -n "${TSB_COMPAT_KEEP:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- results table
OPS=(list pubkey p256 p384 rsa-pkcs1 rsa-pss ed25519 approval extra denied)
CLIENTS=()
declare -A RES
NOTES=()
FAILED=0
add_client() { CLIENTS+=("$1"); }
pass() { RES["$1|$2"]="pass"; }
fail() {
  RES["$1|$2"]="FAIL"
  NOTES+=("FAIL $1 / $2: $3")
  FAILED=1
}
ns() {
  RES["$1|$2"]="n/s"
  NOTES+=("n/s  $1 / $2: $3")
}
# check CLIENT OP FUNCTION ARGS...: runs the function (output to a log), records pass or the
# last line of its output as the failure reason. Every check has a deadline.
check() {
  local client=$1 op=$2; shift 2
  local log="$W/logs/${client// /_}.$op.log" rc
  # Not inside an "if": there bash would ignore set -e in the subshell, and a failing step in
  # the middle of a check would go unnoticed.
  ( set -e; "$@" ) >"$log" 2>&1
  rc=$?
  if [ $rc = 0 ]; then
    pass "$client" "$op"
  else
    fail "$client" "$op" "$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | cut -c1-160) (log: ${log#"$W"/})"
    [ -n "${TSB_COMPAT_VERBOSE:-}" ] && sed 's/^/    /' "$log"
  fi
  return 0
}
print_table() {
  local c op line
  printf '\n%-22s' "client"
  for op in "${OPS[@]}"; do printf ' %-9s' "$op"; done
  printf '\n'
  for c in "${CLIENTS[@]}"; do
    printf '%-22s' "$c"
    for op in "${OPS[@]}"; do printf ' %-9s' "${RES["$c|$op"]:--}"; done
    printf '\n'
  done
  printf '\napproval: a key that needs one approval, approved with tsb-sim approve while the client waits.\n'
  printf 'extra: pkcs11-tool: mechanism list (-M); provider/engine/GnuTLS: a self-signed certificate\n'
  printf '(openssl req -x509, certtool --generate-self-signed); Java: jarsigner + jarsigner -verify;\n'
  printf 'OpenSSH: ssh-agent (ssh-add -s) signing; p11-kit: RPC (p11-kit server/remote); nginx: reload.\n'
  printf 'denied: nginx workers that cannot read the configuration fail every handshake and log the error\n'
  printf 'once (then at most one "repeated N times" line per 10 s), not once per handshake.\n'
  for line in "${NOTES[@]}"; do printf '  %s\n' "$line"; done
  printf '\ncompatibility suite: %s s\n' "$(($(date +%s) - START))"
}

die() { echo "compat: $*" >&2; exit 1; }

# ---------------------------------------------------------------- simulator and module
[ -x "$BIN/tsb-sim" ] || die "no $BIN/tsb-sim (cargo build -p tsb-sim)"
# `cargo test` leaves the module in deps/, `cargo build` in BIN: take the newer.
SO=$(ls -t "$BIN/libtsb_pkcs11.so" "$BIN/deps/libtsb_pkcs11.so" 2>/dev/null | head -n1)
[ -n "$SO" ] || die "no $BIN/libtsb_pkcs11.so (cargo build -p tsb-pkcs11)"
cp "$SO" "$W/libtsb_pkcs11.so"
MOD=$W/libtsb_pkcs11.so
cp "$BIN/tsb-sim" "$W/tsb-sim"
SIMBIN=$W/tsb-sim

mkdir -p "$W/sim"
TSB_SIM_STATE_DIR=$W/sim "$SIMBIN" serve --config "$HERE/sim.toml" --listen 127.0.0.1:0 \
  >"$W/sim/stdout" 2>"$W/sim/stderr" &
PIDS+=($!)
for _ in $(seq 1 300); do
  grep -q '^listening on ' "$W/sim/stdout" 2>/dev/null && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$W/sim/stderr"; die "tsb-sim exited"; }
  sleep 0.1
done
URL=$(sed -n 's/^listening on \(http[^ ]*\).*/\1/p' "$W/sim/stdout" | head -n1)
[ -n "$URL" ] || die "tsb-sim did not start within 30 s"
export TSB_SIM_URL=$URL
echo "== compat: tsb-sim at $URL, work dir $W"

# Module configuration, readable by every user (it holds no secret: the simulator needs none).
cat >"$W/config.json" <<EOF
{ "restApi": "$URL", "authType": "NONE",
  "pkcs11": { "pollIntervalMs": 100, "pollIntervalMaxMs": 200, "approvalTimeoutSecs": 60 } }
EOF
# libp11 0.4.12 stops enumerating private keys at the first Ed25519 key: allow-list the others.
cat >"$W/config-libp11.json" <<EOF
{ "restApi": "$URL", "authType": "NONE",
  "pkcs11": { "keys": ["rsa-2048", "ec-p256", "ec-p384", "ska-ec-p256"],
              "pollIntervalMs": 100, "pollIntervalMaxMs": 200, "approvalTimeoutSecs": 60 } }
EOF
chmod 644 "$W/config.json" "$W/config-libp11.json"
export TSB_PKCS11_CONFIG=$W/config.json
export TSB_PKCS11_LOG_FILE=$W/logs/module.log

# The simulator's public keys (PEM and DER): the independent reference for every verification.
for label in rsa-2048 ec-p256 ec-p384 ed25519 ska-ec-p256; do
  curl -sf "$URL/v1/key/$label/attributes" |
    python3 -c 'import json,sys,base64; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["json"]["publicKey"]))' \
      >"$W/$label.pub.der" || die "public key of $label"
  openssl pkey -pubin -inform DER -in "$W/$label.pub.der" -out "$W/$label.pub.pem" || die "pem of $label"
done
curl -sf "$URL/v1/certificate/ec-p256" |
  python3 -c 'import json,sys,base64; sys.stdout.buffer.write(base64.b64decode(json.load(sys.stdin)["certificate"]))' \
    >"$W/ec-p256.crt.der" || die "certificate of ec-p256"
openssl x509 -inform DER -in "$W/ec-p256.crt.der" -out "$W/ec-p256.crt.pem" || die "certificate pem"
head -c 1000 /dev/urandom >"$W/data.bin"
DATA=$W/data.bin

# ---------------------------------------------------------------- verification helpers
digest_of() { case $1 in ec-p384) echo sha384 ;; *) echo sha256 ;; esac; }
# verify LABEL SIGFILE [pss]: a DER ECDSA / PKCS#1 v1.5 / PSS signature over data.bin.
verify() {
  local label=$1 sig=$2 extra=()
  [ "${3:-}" = pss ] && extra=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:auto)
  OPENSSL_CONF=/dev/null openssl dgst "-$(digest_of "$label")" -verify "$W/$label.pub.pem" \
    "${extra[@]}" -signature "$sig" "$DATA"
}
verify_ed() { OPENSSL_CONF=/dev/null openssl pkeyutl -verify -pubin -inkey "$W/ed25519.pub.pem" -rawin -in "$DATA" -sigfile "$1"; }
# ECDSA r||s (fixed width) to DER, for clients that write raw signatures.
raw_to_der() {
  python3 - "$1" "$2" <<'PY'
import sys
raw = open(sys.argv[1], "rb").read(); n = len(raw) // 2
def integer(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80: b = b"\0" + b
    return b"\x02" + bytes([len(b)]) + b
body = integer(raw[:n]) + integer(raw[n:])
ln = bytes([len(body)]) if len(body) < 128 else b"\x81" + bytes([len(body)])
open(sys.argv[2], "wb").write(b"\x30" + ln + body)
PY
}
same_key() { cmp "$W/$1.pub.der" "$2"; }
# app_is PREFIX: the "app" approvers saw in the metaData of the last approved request.
app_is() {
  "$SIMBIN" requests --json | python3 -c '
import json, sys
r = next(r for r in json.load(sys.stdin) if r["id"] == sys.argv[1])
app = (r.get("metaData") or {}).get("app", "")
print("approvers saw app:", app, "| algorithm:", r["algorithm"])
sys.exit(0 if app.startswith(sys.argv[2]) else 1)' "$(cat "$W/approval.id")" "$1"
}

# approve_while CMD...: runs CMD in the background, waits for its PENDING request on the
# simulator, approves it as alice, and returns CMD's exit status.
approve_while() {
  local before id pid rc
  before=$("$SIMBIN" requests --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  "$@" &
  pid=$!
  id=""
  for _ in $(seq 1 300); do
    id=$("$SIMBIN" requests --json | python3 -c '
import json, sys
rs = json.load(sys.stdin)[int(sys.argv[1]):]
print(next((r["id"] for r in rs if r["status"] == "PENDING"), ""))' "$before")
    [ -n "$id" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$id" ]; then
    kill "$pid" 2>/dev/null
    echo "no pending approval request appeared"
    return 1
  fi
  echo "approving $id while the client waits"
  echo "$id" >"$W/approval.id"
  "$SIMBIN" approve "$id" --as alice || return 1
  wait "$pid"; rc=$?
  return $rc
}

# ---------------------------------------------------------------- pkcs11-tool (OpenSC)
c="pkcs11-tool"; add_client "$c"
p11t() { timeout 60 pkcs11-tool --module "$MOD" "$@"; }
pt_list() {
  p11t -O >"$W/pt.objects"
  for l in rsa-2048 ec-p256 ec-p384 ed25519 ska-ec-p256; do grep -q "label:      $l" "$W/pt.objects" || { echo "no $l"; return 1; }; done
}
pt_pub() {
  for id in 0001:rsa-2048 0004:ec-p256; do
    p11t --read-object --type pubkey --id "${id%%:*}" -o "$W/pt.${id#*:}.pub.der"
    same_key "${id#*:}" "$W/pt.${id#*:}.pub.der"
  done
}
pt_sign() { # ID MECH LABEL OUT [pkcs11-tool args]
  local id=$1 mech=$2 label=$3 out=$4; shift 4
  p11t -s --id "$id" -m "$mech" -i "$DATA" -o "$out" "$@"
}
pt_ec() { pt_sign "$1" "$2" "$3" "$W/pt.$3.sig" --signature-format openssl && verify "$3" "$W/pt.$3.sig"; }
pt_rsa() { pt_sign 0001 SHA256-RSA-PKCS rsa-2048 "$W/pt.rsa.sig" && verify rsa-2048 "$W/pt.rsa.sig"; }
pt_pss() {
  pt_sign 0001 SHA256-RSA-PKCS-PSS rsa-2048 "$W/pt.pss.sig" --mgf MGF1-SHA256 --salt-len 32 &&
    verify rsa-2048 "$W/pt.pss.sig" pss
}
pt_ed() { pt_sign 0007 EDDSA ed25519 "$W/pt.ed.sig" && verify_ed "$W/pt.ed.sig"; }
pt_mechs() {
  p11t -M >"$W/pt.mechs"
  for m in ECDSA-SHA256 ECDSA-SHA384 SHA256-RSA-PKCS SHA256-RSA-PKCS-PSS RSA-PKCS-PSS EDDSA; do
    grep -q "^  $m" "$W/pt.mechs" || { echo "no $m in -M"; return 1; }
  done
}
pt_approve() { approve_while pt_sign 0008 ECDSA-SHA256 ska-ec-p256 "$W/pt.ska.sig" --signature-format openssl && verify ska-ec-p256 "$W/pt.ska.sig" && app_is pkcs11-tool; }
if command -v pkcs11-tool >/dev/null; then
  check "$c" list pt_list
  check "$c" pubkey pt_pub
  check "$c" p256 pt_ec 0004 ECDSA-SHA256 ec-p256
  check "$c" p384 pt_ec 0005 ECDSA-SHA384 ec-p384
  check "$c" rsa-pkcs1 pt_rsa
  check "$c" rsa-pss pt_pss
  check "$c" ed25519 pt_ed
  check "$c" approval pt_approve
  check "$c" extra pt_mechs
else
  fail "$c" list "pkcs11-tool is not installed (scripts/test.sh installs opensc)"
fi

# ---------------------------------------------------------------- OpenSSL 3 + pkcs11-provider
c="openssl+provider"; add_client "$c"
PROV=$(find /usr/lib -path '*ossl-modules/pkcs11.so' 2>/dev/null | head -n1)
cat >"$W/provider.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect
[default_sect]
activate = 1
[pkcs11_sect]
module = $PROV
pkcs11-module-path = $MOD
activate = 1
EOF
pv() { OPENSSL_CONF=$W/provider.cnf timeout 60 openssl "$@"; }
uri() { echo "pkcs11:token=TSB;object=$1;type=${2:-private}"; }
pv_list() {
  pv storeutl -keys "pkcs11:token=TSB;type=private" >"$W/pv.keys"
  cat "$W/pv.keys"
  grep -qx 'Total found: 5' "$W/pv.keys" || { echo "expected 5 private keys"; return 1; }
  for l in rsa-2048 ec-p256 ec-p384 ed25519 ska-ec-p256; do
    pv storeutl -keys "$(uri "$l")" | grep -qx 'Total found: 1' || { echo "no private key $l"; return 1; }
  done
}
pv_pub() {
  for l in rsa-2048 ec-p256 ec-p384 ed25519; do
    pv pkey -pubin -in "$(uri "$l" public)" -pubout -outform DER -out "$W/pv.$l.pub.der"
    same_key "$l" "$W/pv.$l.pub.der"
  done
}
pv_dgst() { pv dgst "-$(digest_of "$1")" -sign "$(uri "$1")" "${@:3}" -out "$2" "$DATA"; }
pv_ec() { pv_dgst "$1" "$W/pv.$1.sig" && verify "$1" "$W/pv.$1.sig"; }
pv_pss() { pv_dgst rsa-2048 "$W/pv.pss.sig" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 && verify rsa-2048 "$W/pv.pss.sig" pss; }
pv_ed() { pv pkeyutl -sign -inkey "$(uri ed25519)" -rawin -in "$DATA" -out "$W/pv.ed.sig" && verify_ed "$W/pv.ed.sig"; }
pv_approve() { approve_while pv_dgst ska-ec-p256 "$W/pv.ska.sig" && verify ska-ec-p256 "$W/pv.ska.sig" && app_is openssl; }
pv_x509() {
  pv req -x509 -new -key "$(uri ec-p256)" -subj /CN=provider -days 1 -out "$W/pv.crt.pem"
  OPENSSL_CONF=/dev/null openssl verify -CAfile "$W/pv.crt.pem" "$W/pv.crt.pem"
  OPENSSL_CONF=/dev/null openssl x509 -in "$W/pv.crt.pem" -noout -pubkey | openssl pkey -pubin -outform DER -out "$W/pv.crt.pub.der"
  same_key ec-p256 "$W/pv.crt.pub.der"
}
if [ -n "$PROV" ]; then
  check "$c" list pv_list
  check "$c" pubkey pv_pub
  check "$c" p256 pv_ec ec-p256
  check "$c" p384 pv_ec ec-p384
  check "$c" rsa-pkcs1 pv_ec rsa-2048
  check "$c" rsa-pss pv_pss
  check "$c" ed25519 pv_ed
  check "$c" approval pv_approve
  check "$c" extra pv_x509
else
  fail "$c" list "pkcs11-provider is not installed (scripts/test.sh installs it from bookworm-backports)"
fi

# ---------------------------------------------------------------- OpenSSL 3 + libp11 engine
c="openssl+libp11"; add_client "$c"
ENG=$(find /usr/lib -path '*engines-3/pkcs11.so' 2>/dev/null | head -n1)
cat >"$W/engine.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENG
MODULE_PATH = $MOD
init = 1
EOF
en() { TSB_PKCS11_CONFIG=$W/config-libp11.json OPENSSL_CONF=$W/engine.cnf timeout 60 openssl "$@"; }
en_pub() {
  for l in rsa-2048 ec-p256 ec-p384; do
    en pkey -engine pkcs11 -inform engine -pubin -in "$(uri "$l" public)" -pubout -outform DER -out "$W/en.$l.pub.der"
    same_key "$l" "$W/en.$l.pub.der"
  done
}
en_dgst() { en dgst -engine pkcs11 -keyform engine "-$(digest_of "$1")" -sign "$(uri "$1")" "${@:3}" -out "$2" "$DATA"; }
en_ec() { en_dgst "$1" "$W/en.$1.sig" && verify "$1" "$W/en.$1.sig"; }
en_pss() { en_dgst rsa-2048 "$W/en.pss.sig" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 && verify rsa-2048 "$W/en.pss.sig" pss; }
en_x509() {
  en req -engine pkcs11 -keyform engine -x509 -new -key "$(uri ec-p256)" -subj /CN=libp11 -days 1 -out "$W/en.crt.pem"
  OPENSSL_CONF=/dev/null openssl verify -CAfile "$W/en.crt.pem" "$W/en.crt.pem"
  OPENSSL_CONF=/dev/null openssl x509 -in "$W/en.crt.pem" -noout -pubkey | openssl pkey -pubin -outform DER -out "$W/en.crt.pub.der"
  same_key ec-p256 "$W/en.crt.pub.der"
}
en_approve() { approve_while en_dgst ska-ec-p256 "$W/en.ska.sig" && verify ska-ec-p256 "$W/en.ska.sig" && app_is openssl; }
if [ -n "$ENG" ]; then
  ns "$c" list "the engine has no key listing command (keys are addressed by URI)"
  check "$c" pubkey en_pub
  check "$c" p256 en_ec ec-p256
  check "$c" p384 en_ec ec-p384
  check "$c" rsa-pkcs1 en_ec rsa-2048
  check "$c" rsa-pss en_pss
  ns "$c" ed25519 "libp11 0.4.12 has no EdDSA, and loads no private key while the token shows an Ed25519 one (pkcs11.keys allow-list used)"
  check "$c" approval en_approve
  check "$c" extra en_x509
else
  fail "$c" list "libengine-pkcs11-openssl is not installed"
fi

# ---------------------------------------------------------------- GnuTLS (p11tool, certtool)
c="gnutls"; add_client "$c"
gt() { GNUTLS_PIN=0000 timeout 60 p11tool --provider "$MOD" "$@"; }
gt_list() {
  gt --list-privkeys --login "pkcs11:token=TSB" >"$W/gt.keys"
  for l in rsa-2048 ec-p256 ec-p384 ed25519 ska-ec-p256; do grep -q "object=$l;" "$W/gt.keys" || { echo "no $l"; return 1; }; done
}
gt_pub() {
  for l in rsa-2048 ec-p256 ec-p384 ed25519; do
    gt --export-pubkey --outfile "$W/gt.$l.pub.pem" "pkcs11:token=TSB;object=$l;type=public"
    OPENSSL_CONF=/dev/null openssl pkey -pubin -in "$W/gt.$l.pub.pem" -outform DER -out "$W/gt.$l.pub.der"
    same_key "$l" "$W/gt.$l.pub.der"
  done
}
# --test-sign signs a test vector through the module and verifies it with GnuTLS' own verifier.
gt_test() {
  gt --login --test-sign "$@" 2>&1 | tee "$W/gt.test"
  grep -q '^Verifying against public key in the token... ok' "$W/gt.test"
}
gt_cert() {
  printf 'cn = gnutls\nexpiration_days = 1\nsigning_key\n' >"$W/gt.tmpl"
  GNUTLS_PIN=0000 timeout 60 certtool --provider "$MOD" --generate-self-signed \
    --load-privkey "$(uri ec-p256)" --load-pubkey "$(uri ec-p256 public)" \
    --template "$W/gt.tmpl" --outfile "$W/gt.crt.pem"
  OPENSSL_CONF=/dev/null openssl verify -CAfile "$W/gt.crt.pem" "$W/gt.crt.pem"
  OPENSSL_CONF=/dev/null openssl x509 -in "$W/gt.crt.pem" -noout -pubkey | openssl pkey -pubin -outform DER -out "$W/gt.crt.pub.der"
  same_key ec-p256 "$W/gt.crt.pub.der"
}
if command -v p11tool >/dev/null && command -v certtool >/dev/null; then
  check "$c" list gt_list
  check "$c" pubkey gt_pub
  check "$c" p256 gt_test "$(uri ec-p256)"
  check "$c" p384 gt_test "$(uri ec-p384)"
  check "$c" rsa-pkcs1 gt_test "$(uri rsa-2048)"
  check "$c" rsa-pss gt_test --sign-params RSA-PSS "$(uri rsa-2048)"
  check "$c" ed25519 gt_test --hash SHA512 "$(uri ed25519)"
  gt_approve() { approve_while gt_test "$(uri ska-ec-p256)" && app_is p11tool; }
  check "$c" approval gt_approve
  check "$c" extra gt_cert
else
  fail "$c" list "gnutls-bin (p11tool, certtool) is not installed"
fi

# ---------------------------------------------------------------- p11-kit proxy (module file)
# p11-kit ignores user configuration when run as root: the client runs as "nobody" with a
# private HOME holding ~/.config/pkcs11/modules/tsb.module.
c="p11-kit proxy"; add_client "$c"
PROXY=$(find /usr/lib -name p11-kit-proxy.so 2>/dev/null | head -n1)
mkdir -p "$W/p11home/.config/pkcs11/modules"
printf 'module: %s\n' "$MOD" >"$W/p11home/.config/pkcs11/modules/tsb.module"
chmod -R a+rX "$W/p11home"
chmod a+rwx "$W/logs" && touch "$W/logs/module.log" && chmod a+rw "$W/logs/module.log"
mkdir -p "$W/px" && chmod a+rwx "$W/px"
chmod a+r "$DATA"
as_nobody() {
  if [ "$(id -u)" = 0 ]; then
    timeout 60 setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$W/p11home" "$@"
  else
    timeout 60 env HOME="$W/p11home" "$@"
  fi
}
px() { as_nobody pkcs11-tool --module "$PROXY" --token-label TSB "$@"; }
px_list() {
  as_nobody p11-kit list-modules >"$W/px/modules" 2>&1; grep -q 'token: TSB' "$W/px/modules" || { cat "$W/px/modules"; return 1; }
  px -O >"$W/px/objects"
  for l in rsa-2048 ec-p256 ec-p384 ed25519 ska-ec-p256; do grep -q "label:      $l" "$W/px/objects" || { echo "no $l"; return 1; }; done
}
px_pub() { px --read-object --type pubkey --id 0004 -o "$W/px/ec-p256.pub.der" && same_key ec-p256 "$W/px/ec-p256.pub.der"; }
px_sign() { px -s --id "$1" -m "$2" -i "$DATA" -o "$W/px/$3.sig" "${@:4}"; }
px_ec() { px_sign "$1" "$2" "$3" --signature-format openssl && verify "$3" "$W/px/$3.sig"; }
px_rsa() { px_sign 0001 SHA256-RSA-PKCS rsa-2048 && verify rsa-2048 "$W/px/rsa-2048.sig"; }
px_pss() { px_sign 0001 SHA256-RSA-PKCS-PSS pss --mgf MGF1-SHA256 --salt-len 32 && verify rsa-2048 "$W/px/pss.sig" pss; }
px_ed() { px_sign 0007 EDDSA ed && verify_ed "$W/px/ed.sig"; }
# p11-kit RPC: "p11-kit server" exports the token over a socket, the client loads
# p11-kit-client.so. 0.24 forwards CKM_ECDSA (pre-hashed) parameters correctly.
px_rpc() {
  local sock=$W/px/p11kit.sock addr spid
  as_nobody p11-kit server --sh --provider "$MOD" --name "$sock" "pkcs11:token=TSB" >"$W/px/server.env" 2>&1
  cat "$W/px/server.env"
  addr=$(sed -n "s/^P11_KIT_SERVER_ADDRESS='\{0,1\}\([^';]*\).*/\1/p" "$W/px/server.env")
  spid=$(sed -n "s/^P11_KIT_SERVER_PID=\([0-9]*\).*/\1/p" "$W/px/server.env")
  [ -n "$spid" ] && echo "$spid" >>"$W/pids"
  [ -n "$addr" ] || { echo "p11-kit server did not start"; return 1; }
  local client rc=0; client=$(find /usr/lib -name p11-kit-client.so 2>/dev/null | head -n1)
  openssl dgst -sha256 -binary -out "$W/px/digest" "$DATA"
  chmod a+r "$W/px/digest"
  as_nobody env P11_KIT_SERVER_ADDRESS="$addr" pkcs11-tool --module "$client" --token-label TSB \
    -s --id 0004 -m ECDSA -i "$W/px/digest" -o "$W/px/rpc.sig" --signature-format openssl || rc=1
  [ -n "$spid" ] && kill "$spid" 2>/dev/null
  [ $rc = 0 ] && OPENSSL_CONF=/dev/null openssl pkeyutl -verify -pubin -inkey "$W/ec-p256.pub.pem" -in "$W/px/digest" -sigfile "$W/px/rpc.sig"
}
if [ -n "$PROXY" ] && command -v p11-kit >/dev/null; then
  check "$c" list px_list
  check "$c" pubkey px_pub
  check "$c" p256 px_ec 0004 ECDSA-SHA256 ec-p256
  check "$c" p384 px_ec 0005 ECDSA-SHA384 ec-p384
  check "$c" rsa-pkcs1 px_rsa
  check "$c" rsa-pss px_pss
  check "$c" ed25519 px_ed
  px_approve() { approve_while px_ec 0008 ECDSA-SHA256 ska-ec-p256 && app_is pkcs11-tool; }
  check "$c" approval px_approve
  check "$c" extra px_rpc
else
  fail "$c" list "p11-kit is not installed"
fi

# ---------------------------------------------------------------- Java 17 SunPKCS11
c="java (SunPKCS11)"; add_client "$c"
mkdir -p "$W/java"
printf 'name = TSB\nlibrary = %s\nslotListIndex = 0\n' "$MOD" >"$W/java/pkcs11.cfg"
cp "$DATA" "$W/java/data.bin"
KT=(-storetype PKCS11 -providerClass sun.security.pkcs11.SunPKCS11 -providerArg "$W/java/pkcs11.cfg" -storepass 0000)
jv() { timeout 120 java "$HERE/Compat.java" "$W/java/pkcs11.cfg" "$W/java" "$1"; }
jv_list() {
  timeout 60 keytool -list "${KT[@]}" >"$W/java/keytool.txt"
  cat "$W/java/keytool.txt"
  for l in rsa-2048 ec-p256 ec-p384 ska-ec-p256; do grep -q "^$l, PrivateKeyEntry" "$W/java/keytool.txt" || { echo "keytool lists no $l"; return 1; }; done
}
jv_pub() {
  jv keys
  for l in rsa-2048 ec-p256 ec-p384; do same_key "$l" "$W/java/$l.pub.der"; done
}
jv_sig() { # LABEL ALG [pss]
  [ -f "$W/java/$1.$2.sig" ] || { echo "Java wrote no $1 $2 signature"; grep -h "^$1 $2:" "$W/logs/java.sign.log"; return 1; }
  verify "$1" "$W/java/$1.$2.sig" "${3:-}"
}
jv_approve() { approve_while jv approve && jv_sig ska-ec-p256 SHA256withECDSA && app_is java; }
jv_jar() {
  (cd "$W/java" && printf 'hello\n' >hello.txt && timeout 60 jar cf app.jar hello.txt)
  timeout 60 jarsigner -keystore NONE "${KT[@]}" "$W/java/app.jar" ec-p384
  timeout 60 jarsigner -verify "$W/java/app.jar" | tee "$W/java/verify.txt"
  grep -q '^jar verified' "$W/java/verify.txt"
}
if command -v java >/dev/null; then
  check "$c" list jv_list
  check "$c" pubkey jv_pub
  jv sign >"$W/logs/java.sign.log" 2>&1
  check "$c" p256 jv_sig ec-p256 SHA256withECDSA
  check "$c" p384 jv_sig ec-p384 SHA384withECDSA
  check "$c" rsa-pkcs1 jv_sig rsa-2048 SHA256withRSA
  check "$c" rsa-pss jv_sig rsa-2048 RSASSA-PSS pss
  ns "$c" ed25519 "Java 17 SunPKCS11 has no EdDSA"
  check "$c" approval jv_approve
  check "$c" extra jv_jar
else
  fail "$c" list "java is not installed"
fi

# ---------------------------------------------------------------- OpenSSH (ssh-keygen, ssh-agent)
c="openssh"; add_client "$c"
mkdir -p "$W/ssh"
ssh_pub_of() { ssh-keygen -i -m PKCS8 -f "$W/$1.pub.pem"; }
sh_list() {
  timeout 60 ssh-keygen -D "$MOD" >"$W/ssh/keys.txt"
  cat "$W/ssh/keys.txt"
  for l in rsa-2048 ec-p256 ec-p384 ska-ec-p256; do
    grep -qF "$(ssh_pub_of "$l" | cut -d' ' -f2)" "$W/ssh/keys.txt" || { echo "ssh-keygen -D lists no $l"; return 1; }
  done
}
# ssh-agent loads the module in ssh-pkcs11-helper (ssh-add -s; the PIN comes from SSH_ASKPASS).
sh_agent() {
  printf '#!/bin/sh\necho 0000\n' >"$W/ssh/askpass" && chmod 755 "$W/ssh/askpass"
  eval "$(ssh-agent -s -a "$W/ssh/agent.sock" -P "$W/*")" >/dev/null
  echo "$SSH_AGENT_PID" >>"$W/pids"
  SSH_ASKPASS=$W/ssh/askpass SSH_ASKPASS_REQUIRE=force DISPLAY=none timeout 60 ssh-add -s "$MOD" </dev/null
  SSH_AUTH_SOCK=$W/ssh/agent.sock ssh-add -L | tee "$W/ssh/agent.txt"
  [ "$(grep -c . "$W/ssh/agent.txt")" -ge 4 ]
}
# Signs data.bin with the agent's key of LABEL and verifies with ssh-keygen -Y verify against
# the simulator's public key (allowed_signers).
sh_sign() {
  local l=$1 pub; pub=$(ssh_pub_of "$l")
  echo "$pub" >"$W/ssh/$l.pub"
  echo "compat@tsb ${pub}" >"$W/ssh/$l.allowed"
  cp "$DATA" "$W/ssh/$l.data"
  SSH_AUTH_SOCK=$W/ssh/agent.sock timeout 60 ssh-keygen -Y sign -f "$W/ssh/$l.pub" -n file "$W/ssh/$l.data"
  ssh-keygen -Y verify -f "$W/ssh/$l.allowed" -I compat@tsb -n file -s "$W/ssh/$l.data.sig" <"$W/ssh/$l.data"
}
sh_approve() { approve_while sh_sign ska-ec-p256 && app_is 'ssh-pkcs11-helper (OpenSSH'; }
if command -v ssh-keygen >/dev/null && command -v ssh-agent >/dev/null; then
  check "$c" list sh_list
  check "$c" pubkey sh_list
  check "$c" extra sh_agent
  check "$c" p256 sh_sign ec-p256
  check "$c" p384 sh_sign ec-p384
  check "$c" rsa-pkcs1 sh_sign rsa-2048
  ns "$c" rsa-pss "SSH has no RSA-PSS signatures"
  ns "$c" ed25519 "OpenSSH 9.2 skips Ed25519 token keys"
  check "$c" approval sh_approve
else
  fail "$c" list "openssh-client is not installed"
fi

# ---------------------------------------------------------------- python-pkcs11
c="python-pkcs11"; add_client "$c"
mkdir -p "$W/py"
cp "$DATA" "$W/py/data.bin"
py() { timeout 120 "$VENV/bin/python" "$HERE/py_compat.py" "$MOD" "$W/py" "$1"; }
py_list() {
  py keys
  for l in rsa-2048 ec-p256 ec-p384 ed25519 ska-ec-p256; do grep -qx "$l" "$W/py/labels.txt" || { echo "no $l"; return 1; }; done
  for l in rsa-2048 ec-p256 ec-p384; do same_key "$l" "$W/py/$l.pub.der"; done
}
py_sig() {
  [ -f "$W/py/$1.$2.sig" ] || { echo "python-pkcs11 wrote no $1 $2 signature"; grep -h "^$1 $2:" "$W/logs/python.sign.log"; return 1; }
  if [ "$1" = ed25519 ]; then verify_ed "$W/py/$1.$2.sig"; else verify "$1" "$W/py/$1.$2.sig" "${3:-}"; fi
}
py_approve() { approve_while py approve && py_sig ska-ec-p256 ECDSA_SHA256 && app_is python; }
if "$VENV/bin/python" -c 'import pkcs11' 2>/dev/null; then
  check "$c" list py_list
  check "$c" pubkey py_list
  py sign >"$W/logs/python.sign.log" 2>&1
  check "$c" p256 py_sig ec-p256 ECDSA_SHA256
  check "$c" p384 py_sig ec-p384 ECDSA_SHA384
  check "$c" rsa-pkcs1 py_sig rsa-2048 SHA256_RSA_PKCS
  check "$c" rsa-pss py_sig rsa-2048 SHA256_RSA_PKCS_PSS pss
  check "$c" ed25519 py_sig ed25519 EDDSA
  check "$c" approval py_approve
else
  fail "$c" list "python-pkcs11 is not installed in $VENV (scripts/test.sh installs it)"
fi

# ---------------------------------------------------------------- nginx + libp11 engine
# Master and two workers; libp11 initialises the module again in every worker after fork, so the
# worker user must be able to read the module configuration.
c="nginx+libp11"; add_client "$c"
NG=$W/nginx
mkdir -p "$NG"
NGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
NGUSER=""
[ "$(id -u)" = 0 ] && NGUSER=$(getent passwd www-data >/dev/null && echo www-data || echo nobody)
cat >"$NG/nginx.conf" <<EOF
${NGUSER:+user $NGUSER;}
worker_processes 2;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
env TSB_PKCS11_CONFIG;
env TSB_PKCS11_LOG_FILE;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $NG/body; proxy_temp_path $NG/proxy; fastcgi_temp_path $NG/fastcgi;
  uwsgi_temp_path $NG/uwsgi; scgi_temp_path $NG/scgi;
  server {
    listen 127.0.0.1:$NGPORT ssl;
    ssl_certificate $W/ec-p256.crt.pem;
    ssl_certificate_key "engine:pkcs11:$(uri ec-p256)";
    ssl_session_cache off;
    ssl_session_tickets off;
    location / { return 200 "ok\n"; }
  }
}
EOF
ngx() { TSB_PKCS11_CONFIG=$W/config-libp11.json OPENSSL_CONF=$W/engine.cnf timeout 60 nginx -p "$NG/" -e "$NG/error.log" -c "$NG/nginx.conf" "$@"; }
signs() { curl -sf "$URL/sim/counters" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("POST /v1/synchronousSign", 0))'; }
# N full handshakes (no session reuse), each server signature verified by openssl s_client
# against the simulator's certificate; the simulator must have made N more signatures.
handshakes() {
  local n=$1 before after i
  before=$(signs)
  for i in $(seq 1 "$n"); do
    OPENSSL_CONF=/dev/null timeout 30 openssl s_client -connect "127.0.0.1:$NGPORT" -servername localhost \
      -CAfile "$W/ec-p256.crt.pem" -verify_return_error -verify_hostname localhost -brief </dev/null \
      >"$NG/hs.$i" 2>&1 || { cat "$NG/hs.$i"; return 1; }
    grep -q 'Verification: OK' "$NG/hs.$i" || { cat "$NG/hs.$i"; return 1; }
  done
  after=$(signs)
  echo "$n handshakes, $((after - before)) signatures by the TSB"
  [ $((after - before)) -ge "$n" ]
}
workers() { pgrep -P "$(cat "$NG/nginx.pid")" | sort; }
ng_start() {
  ngx -t
  ngx
  for _ in $(seq 1 100); do [ "$(workers | grep -c .)" = 2 ] && break; sleep 0.1; done
  echo "workers: $(workers | tr '\n' ' ')"
  [ "$(workers | grep -c .)" = 2 ]
  handshakes 6
}
ng_reload() {
  local old; old=$(workers)
  ngx -s reload
  for _ in $(seq 1 100); do
    [ "$(workers | grep -c .)" = 2 ] && [ -z "$(comm -12 <(echo "$old") <(workers))" ] && break
    sleep 0.1
  done
  echo "workers after reload: $(workers | tr '\n' ' ')"
  [ -z "$(comm -12 <(echo "$old") <(workers))" ] || { echo "old workers still running"; return 1; }
  handshakes 4
  ! grep -E '\[(emerg|alert|crit)\]' "$NG/error.log"
}
ng_stop() {
  [ -f "$NG/nginx.pid" ] || return 0
  ngx -s quit
  for _ in $(seq 1 100); do [ -f "$NG/nginx.pid" ] || return 0; sleep 0.1; done
  echo "nginx did not stop"; return 1
}
# Workers that cannot read the configuration (root-only file, www-data workers): every handshake
# fails, and the module logs the error once per worker, later only "(repeated N times)" lines (at
# most one per 10 s), not one line per handshake.
ng_denied() {
  install -m 600 "$W/config-libp11.json" "$NG/config-private.json"
  # The module logs to stderr here, which nginx sends to its error log: read what this run adds.
  local from; from=$(wc -l <"$NG/error.log")
  env -u TSB_PKCS11_LOG_FILE TSB_PKCS11_CONFIG="$NG/config-private.json" OPENSSL_CONF="$W/engine.cnf" \
    timeout 60 nginx -p "$NG/" -e "$NG/error.log" -c "$NG/nginx.conf"
  for _ in $(seq 1 100); do [ "$(workers | grep -c .)" = 2 ] && break; sleep 0.1; done
  local i ok=0
  for i in $(seq 1 30); do
    OPENSSL_CONF=/dev/null timeout 30 openssl s_client -connect "127.0.0.1:$NGPORT" -brief </dev/null >/dev/null 2>&1 && ok=$((ok + 1))
  done
  ng_stop
  tail -n "+$((from + 1))" "$NG/error.log" | grep -v 'SSL_do_handshake() failed' >"$NG/denied.log" || true
  echo "handshakes that succeeded: $ok of 30"; cat "$NG/denied.log"
  [ "$ok" = 0 ] || { echo "workers should not sign without their configuration"; return 1; }
  grep -q 'config-private.json' "$NG/denied.log" || { echo "the module logged no error about its configuration"; return 1; }
  local n plain
  n=$(grep -c 'config-private.json' "$NG/denied.log")
  plain=$(grep 'config-private.json' "$NG/denied.log" | grep -vc 'repeated [0-9]* times' || true)
  echo "$n error lines for 30 failed handshakes, $plain without a repeat count"
  # One plain line per worker; every later line carries a count (their number depends on time).
  [ "$plain" -le 2 ] && [ "$n" -lt 30 ]
}
if command -v nginx >/dev/null && [ -n "$ENG" ]; then
  check "$c" p256 ng_start
  if [ "${RES["$c|p256"]}" = pass ]; then check "$c" extra ng_reload; else fail "$c" extra "nginx did not start"; fi
  ng_stop
  if [ "$(id -u)" = 0 ]; then
    check "$c" denied ng_denied
  else
    ns "$c" denied "needs root (workers of another user)"
  fi
  ns "$c" list "a TLS server; keys are addressed by URI"
else
  fail "$c" p256 "nginx or the libp11 engine is not installed"
fi

print_table
exit $FAILED
