"""python-pkcs11 generates key pairs through the module and signs with them (run by
tests/keygen.rs, which verifies the signatures with OpenSSL).

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
        # python-pkcs11 returns r||s; tests/keygen.rs converts it for OpenSSL.
        write(out, "py-p384", priv.sign(MESSAGE, mechanism=Mechanism.ECDSA_SHA384))

        # A template the TSB cannot honour is refused, not silently changed.
        try:
            session.generate_keypair(
                KeyType.RSA,
                2048,
                label="py-decrypt",
                store=True,
                capabilities=SIGN | MechanismFlag.DECRYPT | MechanismFlag.ENCRYPT,
            )
        except pkcs11.exceptions.TemplateInconsistent:
            print("refused py-decrypt")
        else:
            sys.exit("a decrypting key was created")

    # Without store=True python-pkcs11 asks for a session key pair (CKA_TOKEN false): it signs,
    # and closing the session leaves no key on the TSB (tests/keygen.rs checks).
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
