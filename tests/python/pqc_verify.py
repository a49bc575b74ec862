#!/usr/bin/env python3
"""Verify a post-quantum signature with implementations independent of the module and of tsb-sim.

    pqc_verify.py ALG PARAMSET PUBKEY_FILE MSG_FILE SIG_FILE [--context HEX]

ALG is ML-DSA, SLH-DSA or LMS; PARAMSET names the parameter set (ML-DSA-65,
SLH-DSA-SHA2-128f, SLH-DSA-SHAKE-256s, ...; "-" for LMS, whose parameters are in its public
key). PUBKEY_FILE holds a DER SubjectPublicKeyInfo (the TSB's `publicKey`, base64-decoded) or the
raw public key. The context (FIPS 204/205) is empty unless --context gives it in hex.

Exit status: 0 the signature verifies, 1 it does not, 2 bad usage or input.

Verifiers (pure Python, from PyPI): dilithium-py (ML-DSA, FIPS 204), SLH-DSA (import name
`slhdsa`, FIPS 205), hsslms (HSS/LMS, RFC 8554).
"""

import sys

# NIST OIDs (FIPS 204/205 via the CSOR registry) and RFC 8708's id-alg-hss-lms-hashsig.
OIDS = {
    "2.16.840.1.101.3.4.3.17": "ML-DSA-44",
    "2.16.840.1.101.3.4.3.18": "ML-DSA-65",
    "2.16.840.1.101.3.4.3.19": "ML-DSA-87",
    "2.16.840.1.101.3.4.3.20": "SLH-DSA-SHA2-128s",
    "2.16.840.1.101.3.4.3.21": "SLH-DSA-SHA2-128f",
    "2.16.840.1.101.3.4.3.22": "SLH-DSA-SHA2-192s",
    "2.16.840.1.101.3.4.3.23": "SLH-DSA-SHA2-192f",
    "2.16.840.1.101.3.4.3.24": "SLH-DSA-SHA2-256s",
    "2.16.840.1.101.3.4.3.25": "SLH-DSA-SHA2-256f",
    "2.16.840.1.101.3.4.3.26": "SLH-DSA-SHAKE-128s",
    "2.16.840.1.101.3.4.3.27": "SLH-DSA-SHAKE-128f",
    "2.16.840.1.101.3.4.3.28": "SLH-DSA-SHAKE-192s",
    "2.16.840.1.101.3.4.3.29": "SLH-DSA-SHAKE-192f",
    "2.16.840.1.101.3.4.3.30": "SLH-DSA-SHAKE-256s",
    "2.16.840.1.101.3.4.3.31": "SLH-DSA-SHAKE-256f",
    "1.2.840.113549.1.9.16.3.17": "LMS",
}


class Usage(Exception):
    pass


def der_item(data, pos):
    """(tag, content, next position) of the DER item at pos."""
    if pos + 2 > len(data):
        raise Usage("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise Usage("bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise Usage("truncated DER")
    return tag, data[pos:pos + length], pos + length


def oid_text(content):
    first = content[0]
    parts = [str(min(first // 40, 2)), str(first - 40 * min(first // 40, 2))]
    value = 0
    for b in content[1:]:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(str(value))
            value = 0
    return ".".join(parts)


def parse_spki(data):
    """(parameter set name, raw key) of a SubjectPublicKeyInfo, or None if data is not one."""
    try:
        tag, seq, end = der_item(data, 0)
        if tag != 0x30 or end != len(data):
            return None
        tag, alg, pos = der_item(seq, 0)
        if tag != 0x30:
            return None
        tag, oid, _ = der_item(alg, 0)
        if tag != 0x06:
            return None
        tag, bits, pos = der_item(seq, pos)
        if tag != 0x03 or pos != len(seq) or not bits or bits[0] != 0:
            return None
    except (Usage, IndexError):
        return None
    name = OIDS.get(oid_text(oid))
    if name is None:
        raise Usage("unknown algorithm OID %s" % oid_text(oid))
    return name, bits[1:]


def verify_ml_dsa(paramset, pk, msg, sig, ctx):
    from dilithium_py.ml_dsa import ML_DSA_44, ML_DSA_65, ML_DSA_87

    impl = {"ML-DSA-44": ML_DSA_44, "ML-DSA-65": ML_DSA_65, "ML-DSA-87": ML_DSA_87}.get(paramset)
    if impl is None:
        raise Usage("unknown ML-DSA parameter set %s" % paramset)
    if len(pk) != impl._pk_size() or len(sig) != impl._sig_size():
        return False
    return bool(impl.verify(pk, msg, sig, ctx))


def verify_slh_dsa(paramset, pk, msg, sig, ctx):
    import slhdsa

    prefix = "SLH-DSA-"
    if not paramset.startswith(prefix):
        raise Usage("unknown SLH-DSA parameter set %s" % paramset)
    name = paramset[len(prefix):].lower().replace("-", "_")  # sha2_128f, shake_256s
    par = getattr(slhdsa, name, None)
    if par is None:
        raise Usage("unknown SLH-DSA parameter set %s" % paramset)
    try:
        key = slhdsa.PublicKey.from_digest(pk, par)
        return bool(key.verify_pure(msg, sig, ctx))
    except slhdsa.SLHDSAException:
        return False


def verify_lms(pk, msg, sig, ctx):
    from hsslms import HSS_Pub
    from hsslms.utils import INVALID

    if ctx:
        raise Usage("LMS signatures take no context")
    # An OCTET STRING around the key (RFC 8708's first reading) is unwrapped.
    if pk[:1] == b"\x04":
        try:
            tag, inner, end = der_item(pk, 0)
            if end == len(pk):
                pk = inner
        except Usage:
            pass
    try:
        HSS_Pub(pk).verify(msg, sig)
        return True
    except (INVALID, ValueError, IndexError, KeyError):
        return False


def main(argv):
    args = list(argv)
    ctx = b""
    if "--context" in args:
        i = args.index("--context")
        if i + 1 >= len(args):
            raise Usage("--context needs a hex value")
        ctx = bytes.fromhex(args[i + 1])
        del args[i:i + 2]
    if len(args) != 5:
        raise Usage(__doc__.strip().splitlines()[2].strip())
    alg, paramset, pk_file, msg_file, sig_file = args
    with open(pk_file, "rb") as f:
        pk = f.read()
    with open(msg_file, "rb") as f:
        msg = f.read()
    with open(sig_file, "rb") as f:
        sig = f.read()
    spki = parse_spki(pk)
    if spki is not None:
        named, pk = spki
        expected = "LMS" if alg == "LMS" else paramset
        if named != expected:
            raise Usage("the public key is %s, not %s" % (named, expected))
    if alg == "ML-DSA":
        return verify_ml_dsa(paramset, pk, msg, sig, ctx)
    if alg == "SLH-DSA":
        return verify_slh_dsa(paramset, pk, msg, sig, ctx)
    if alg == "LMS":
        return verify_lms(pk, msg, sig, ctx)
    raise Usage("ALG must be ML-DSA, SLH-DSA or LMS")


if __name__ == "__main__":
    try:
        ok = main(sys.argv[1:])
    except (Usage, OSError, ValueError) as e:
        print("pqc_verify: %s" % e, file=sys.stderr)
        sys.exit(2)
    print("valid" if ok else "INVALID")
    sys.exit(0 if ok else 1)
