"""python-pkcs11 generates key pairs through the module and signs with them (run by
tests/module/keygen.rs, which verifies the signatures with OpenSSL).

Usage: keygen.py MODULE OUTDIR. Writes OUTDIR/<label>.sig over the message b"python-pkcs11".
"""
import sys

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11.util.ec import encode_named_curve_parameters

MESSAGE = b"python-pkcs11"
SIGN = MechanismFlag.SIGN | MechanismFlag.VERIFY


def main():
    lib = pkcs11.lib(sys.argv[1])
    out = sys.argv[2]
    token = lib.get_slots(token_present=True)[0].get_token()
    with token.open(rw=True) as session:
        _, priv = session.generate_keypair(
            KeyType.RSA, 2048, label="py-rsa", store=True, capabilities=SIGN
        )
        write(out, "py-rsa", priv.sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS))

        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp384r1")},
            local=True,
        )
        _, priv = params.generate_keypair(label="py-p384", store=True, capabilities=SIGN)
        # python-pkcs11 returns r||s; tests/module/keygen.rs converts it for OpenSSL.
        write(out, "py-p384", priv.sign(MESSAGE, mechanism=Mechanism.ECDSA_SHA384))

        # python-pkcs11's default capabilities (RSA: encrypt, decrypt, sign, verify, wrap,
        # unwrap) are stored on the TSB as asked and reported truthfully.
        _, priv = session.generate_keypair(KeyType.RSA, 2048, label="py-default", store=True)
        if not priv[Attribute.DECRYPT] or not priv[Attribute.UNWRAP]:
            sys.exit("py-default does not report CKA_DECRYPT/CKA_UNWRAP as asked")
        write(out, "py-default", priv.sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS))

        # Without a label, a token key gets a generated one.
        _, priv = params.generate_keypair(store=True)
        label = priv[Attribute.LABEL]
        if not label.startswith("key-"):
            sys.exit(f"unexpected generated label {label!r}")
        write(out, "py-nolabel", priv.sign(MESSAGE, mechanism=Mechanism.ECDSA_SHA384))
        print(f"generated label {label}")

    # Without store=True python-pkcs11 asks for a session key pair (CKA_TOKEN false): it signs,
    # and closing the session leaves no key on the TSB (tests/module/keygen.rs checks).
    with token.open() as session:
        _, priv = session.generate_keypair(
            KeyType.RSA, 2048, label="py-session", capabilities=SIGN
        )
        priv.sign(MESSAGE, mechanism=Mechanism.SHA256_RSA_PKCS)
        print("signed with a session key pair")


def write(out, label, sig):
    with open(f"{out}/{label}.sig", "wb") as f:
        f.write(sig)
    print(f"signed with {label}")


if __name__ == "__main__":
    main()
