"""PyKCS11 signs with the module's post-quantum keys using the raw PKCS#11 3.2 mechanism numbers
(run by tests/mechanisms.rs, which verifies the signatures with tests/python/pqc_verify.py).

Usage: pqc_sign.py MODULE OUTDIR LABEL:MECH... (MECH: ML_DSA, SLH_DSA or HSS). Signs
b"pykcs11 pqc" with each key, writes OUTDIR/LABEL.sig and prints "LABEL KEYTYPE PARAMSET SIZE"
(CKA_KEY_TYPE and CKA_PARAMETER_SET of the private key, "-" where it has none).
"""
import sys

import PyKCS11

MESSAGE = b"pykcs11 pqc"
# PKCS#11 v3.2 (pkcs11t.h): mechanisms and attributes PyKCS11 has no names for.
MECHANISMS = {"ML_DSA": 0x1D, "SLH_DSA": 0x2E, "HSS": 0x4033}
CKA_PARAMETER_SET = 0x61D


def main():
    lib = PyKCS11.PyKCS11Lib()
    lib.load(sys.argv[1])
    session = lib.openSession(lib.getSlotList(tokenPresent=True)[0])
    for arg in sys.argv[3:]:
        label, mech = arg.split(":")
        [key] = session.findObjects(
            [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_LABEL, label)]
        )
        key_type = session.getAttributeValue(key, [PyKCS11.CKA_KEY_TYPE])[0]
        try:
            pset = session.getAttributeValue(key, [CKA_PARAMETER_SET])[0]
            # PyKCS11 hands an attribute it does not know as its bytes (a CK_ULONG here), and
            # None for one the object does not have.
            if pset is None:
                pset = "-"
            elif not isinstance(pset, int):
                pset = int.from_bytes(bytes(pset), sys.byteorder)
        except PyKCS11.PyKCS11Error:
            pset = "-"
        sig = bytes(session.sign(key, MESSAGE, PyKCS11.Mechanism(MECHANISMS[mech], None)))
        with open(f"{sys.argv[2]}/{label}.sig", "wb") as f:
            f.write(sig)
        print(f"{label} {key_type:#x} {pset if pset == '-' else hex(pset)} {len(sig)}")
    session.closeSession()


if __name__ == "__main__":
    main()
