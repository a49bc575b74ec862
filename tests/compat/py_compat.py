"""python-pkcs11 client of the compatibility suite (run by tests/compat/run.sh).

Usage: py_compat.py MODULE OUTDIR MODE. It only drives the module; run.sh verifies every
signature it writes with the openssl CLI against the simulator's public key.
  keys:    labels.txt (private keys found) and <label>.pub.der (public key objects as SPKI DER)
  sign:    <label>.<mech>.sig (ECDSA as DER, RSA and Ed25519 raw) over data.bin
  approve: ska-ec-p256.ECDSA_SHA256.sig
"""
import sys
from pathlib import Path

import pkcs11
from pkcs11 import KeyType, Mechanism, MGF, ObjectClass, Attribute
from pkcs11.util.ec import encode_ec_public_key, encode_ecdsa_signature
from pkcs11.util.rsa import encode_rsa_public_key

module, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
data = (out / "data.bin").read_bytes()
token = pkcs11.lib(module).get_token(token_label="TSB")
failed = False


def spki(pub):
    """SubjectPublicKeyInfo DER of a public key object, built by python-pkcs11's own encoders."""
    if pub.key_type == KeyType.RSA:
        from asn1crypto.core import Null
        from asn1crypto.keys import PublicKeyInfo, RSAPublicKey

        return PublicKeyInfo(
            {
                "algorithm": {"algorithm": "rsa", "parameters": Null()},
                "public_key": RSAPublicKey.load(encode_rsa_public_key(pub)),
            }
        ).dump()
    return encode_ec_public_key(pub)


def sign(session, label, mech, param=None, der=False):
    global failed
    try:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        sig = key.sign(data, mechanism=mech, mechanism_param=param)
        if der:
            sig = encode_ecdsa_signature(sig)
        (out / f"{label}.{mech.name}.sig").write_bytes(sig)
    except Exception as e:  # reported; run.sh marks the cell as failed
        print(f"{label} {mech.name}: {e!r}", file=sys.stderr)
        failed = True


with token.open(user_pin="0000") as session:
    if mode == "keys":
        labels = sorted(k.label for k in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        (out / "labels.txt").write_text("\n".join(labels) + "\n")
        for label in ("rsa-2048", "ec-p256", "ec-p384"):
            pub = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
            (out / f"{label}.pub.der").write_bytes(spki(pub))
    elif mode == "sign":
        sign(session, "ec-p256", Mechanism.ECDSA_SHA256, der=True)
        sign(session, "ec-p384", Mechanism.ECDSA_SHA384, der=True)
        sign(session, "rsa-2048", Mechanism.SHA256_RSA_PKCS)
        sign(session, "rsa-2048", Mechanism.SHA256_RSA_PKCS_PSS, (Mechanism.SHA256, MGF.SHA256, 32))
        sign(session, "ed25519", Mechanism.EDDSA)
    elif mode == "approve":
        sign(session, "ska-ec-p256", Mechanism.ECDSA_SHA256, der=True)
    else:
        sys.exit(f"unknown mode {mode}")
sys.exit(1 if failed else 0)
