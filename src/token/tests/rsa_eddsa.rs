//! RSA (PKCS#11 v2.40 Current Mechanisms §2.1) and Ed25519 (v3.0 §2.3.14) keys: attributes,
//! every signing mechanism and its parameters, input limits, and input over 64 KiB hashed
//! locally. Signatures are verified with OpenSSL.

use std::sync::OnceLock;

use cryptoki_sys::*;
use openssl::hash::{hash, MessageDigest};
use openssl::md::Md;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Verifier};
use serde_json::json;

use super::fake::{FakeTsb, Tamper};
use super::{find, private_key, public_key, session, signature, token_with, ulong};
use crate::token::attributes::AttrValue;
use crate::token::{MechParams, Mechanism, SignOutput, Token};

fn rsa_key() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    K.get_or_init(|| PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap())
}

fn ed_key() -> &'static PKey<Private> {
    static K: OnceLock<PKey<Private>> = OnceLock::new();
    K.get_or_init(|| PKey::generate_ed25519().unwrap())
}

fn setup() -> (std::sync::Arc<FakeTsb>, Token, CK_SESSION_HANDLE) {
    let fake = FakeTsb::new();
    fake.add_openssl_key("rsa", rsa_key());
    fake.add_openssl_key("ed", ed_key());
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    (fake, token, s)
}

fn sign(
    token: &Token,
    s: CK_SESSION_HANDLE,
    m: &Mechanism,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
) -> Vec<u8> {
    token.sign_init(s, m, key).unwrap();
    signature(token.sign(s, data, Some(512)).unwrap())
}

fn pss(m: CK_MECHANISM_TYPE, hash: CK_MECHANISM_TYPE, mgf: CK_ULONG, salt: CK_ULONG) -> Mechanism {
    Mechanism {
        mechanism: m,
        params: MechParams::Pss {
            hash_alg: hash,
            mgf,
            salt_len: salt,
        },
    }
}

fn openssl_pss_verifies(md: MessageDigest, msg: &[u8], sig: &[u8]) -> bool {
    let mut v = Verifier::new(md, rsa_key()).unwrap();
    v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
    v.set_rsa_mgf1_md(md).unwrap();
    v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
    v.verify_oneshot(sig, msg).unwrap()
}

/// A PSS hash: its digest mechanism, the hash-and-sign mechanism, its MGF1 and OpenSSL's hash.
type PssHash = (
    CK_MECHANISM_TYPE,
    CK_MECHANISM_TYPE,
    CK_ULONG,
    fn() -> MessageDigest,
);

const HASHES: [PssHash; 4] = [
    (
        CKM_SHA224,
        CKM_SHA224_RSA_PKCS_PSS,
        CKG_MGF1_SHA224,
        MessageDigest::sha224,
    ),
    (
        CKM_SHA256,
        CKM_SHA256_RSA_PKCS_PSS,
        CKG_MGF1_SHA256,
        MessageDigest::sha256,
    ),
    (
        CKM_SHA384,
        CKM_SHA384_RSA_PKCS_PSS,
        CKG_MGF1_SHA384,
        MessageDigest::sha384,
    ),
    (
        CKM_SHA512,
        CKM_SHA512_RSA_PKCS_PSS,
        CKG_MGF1_SHA512,
        MessageDigest::sha512,
    ),
];

/// §4.8/§4.9: an RSA key shows its modulus, exponent and size as OpenSSL has them, and the
/// RSA mechanisms as its allowed mechanisms.
#[test]
fn rsa_key_attributes() {
    let (_fake, token, s) = setup();
    let key = private_key(&token, s, "rsa");
    let public = public_key(&token, s, "rsa");
    let rsa = rsa_key().rsa().unwrap();
    let allowed: Vec<u8> = super::mechanisms::RSA
        .iter()
        .flat_map(|m| m.to_ne_bytes())
        .collect();
    for h in [key, public] {
        let got = token
            .attribute_values(
                s,
                h,
                &[
                    CKA_KEY_TYPE,
                    CKA_MODULUS,
                    CKA_PUBLIC_EXPONENT,
                    CKA_MODULUS_BITS,
                    CKA_ALLOWED_MECHANISMS,
                    CKA_EC_PARAMS,
                    CKA_EC_POINT,
                    CKA_PUBLIC_KEY_INFO,
                ],
            )
            .unwrap();
        assert_eq!(
            got,
            vec![
                AttrValue::Bytes(ulong(CKK_RSA)),
                AttrValue::Bytes(rsa.n().to_vec()),
                AttrValue::Bytes(rsa.e().to_vec()),
                AttrValue::Bytes(ulong(2048)),
                AttrValue::Bytes(allowed.clone()),
                AttrValue::Invalid,
                AttrValue::Invalid,
                AttrValue::Bytes(rsa_key().public_key_to_der().unwrap()),
            ]
        );
    }
    for attr in [
        CKA_PRIVATE_EXPONENT,
        CKA_PRIME_1,
        CKA_PRIME_2,
        CKA_EXPONENT_1,
        CKA_EXPONENT_2,
        CKA_COEFFICIENT,
    ] {
        assert_eq!(
            token.attribute_values(s, key, &[attr]).unwrap(),
            vec![AttrValue::Sensitive],
            "{attr:#x}"
        );
        assert_eq!(
            token.attribute_values(s, public, &[attr]).unwrap(),
            vec![AttrValue::Invalid]
        );
    }
    assert_eq!(find(&token, s, &[(CKA_KEY_TYPE, ulong(CKK_RSA))]).len(), 2);
}

/// CKM_SHAxxx_RSA_PKCS: PKCS#1 v1.5 with the mechanism's hash, 256-byte signatures.
#[test]
fn rsa_pkcs1_hash_mechanisms() {
    let (_fake, token, s) = setup();
    let key = private_key(&token, s, "rsa");
    let public = public_key(&token, s, "rsa");
    let msg = b"RSA PKCS#1 v1.5";
    for (m, md) in [
        (CKM_SHA1_RSA_PKCS, MessageDigest::sha1()),
        (CKM_SHA224_RSA_PKCS, MessageDigest::sha224()),
        (CKM_SHA256_RSA_PKCS, MessageDigest::sha256()),
        (CKM_SHA384_RSA_PKCS, MessageDigest::sha384()),
        (CKM_SHA512_RSA_PKCS, MessageDigest::sha512()),
    ] {
        token.sign_init(s, &Mechanism::new(m), key).unwrap();
        assert_eq!(token.sign(s, msg, None).unwrap(), SignOutput::Length(256));
        let sig = signature(token.sign(s, msg, Some(256)).unwrap());
        let mut v = Verifier::new(md, rsa_key()).unwrap();
        assert!(v.verify_oneshot(&sig, msg).unwrap(), "{m:#x}");
        token.verify_init(s, &Mechanism::new(m), public).unwrap();
        token.verify(s, msg, &sig).unwrap();
        token.verify_init(s, &Mechanism::new(m), public).unwrap();
        assert_eq!(
            token.verify(s, b"other", &sig).unwrap_err().code(),
            CKR_SIGNATURE_INVALID
        );
    }
}

/// CKM_RSA_PKCS signs its input as it is: a DigestInfo (the TSB signs it as NONESHAxxx) or any
/// other data up to k-11 bytes; empty or longer input is CKR_DATA_LEN_RANGE.
#[test]
fn raw_rsa_pkcs_input_rules() {
    let (_fake, token, s) = setup();
    let key = private_key(&token, s, "rsa");
    let public = public_key(&token, s, "rsa");
    let raw = Mechanism::new(CKM_RSA_PKCS);
    let msg = b"a DigestInfo made by the caller";
    let digest_info = crate::crypto::hash::digest_info(
        crate::crypto::HashAlg::Sha384,
        &hash(MessageDigest::sha384(), msg).unwrap(),
    );
    let sig = sign(&token, s, &raw, key, &digest_info);
    let mut v = Verifier::new(MessageDigest::sha384(), rsa_key()).unwrap();
    assert!(v.verify_oneshot(&sig, msg).unwrap());

    let rsa = rsa_key().rsa().unwrap();
    for len in [1, 100, 245] {
        let data = vec![0x5a; len];
        let sig = sign(&token, s, &raw, key, &data);
        let mut recovered = vec![0; 256];
        let n = rsa
            .public_decrypt(&sig, &mut recovered, Padding::PKCS1)
            .unwrap();
        assert_eq!(&recovered[..n], &data[..], "{len} bytes");
        token.verify_init(s, &raw, public).unwrap();
        token.verify(s, &data, &sig).unwrap();
    }
    for len in [0, 246] {
        token.sign_init(s, &raw, key).unwrap();
        assert_eq!(
            token.sign(s, &vec![1; len], Some(256)).unwrap_err().code(),
            CKR_DATA_LEN_RANGE,
            "{len} bytes"
        );
    }
    // Multi-part input past k-11 bytes is refused at the update.
    token.sign_init(s, &raw, key).unwrap();
    token.sign_update(s, &[1; 200]).unwrap();
    assert_eq!(
        token.sign_update(s, &[1; 46]).unwrap_err().code(),
        CKR_DATA_LEN_RANGE
    );
    assert_eq!(
        token.sign_final(s, Some(256)).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        token
            .sign_init(
                s,
                &Mechanism {
                    mechanism: CKM_RSA_PKCS,
                    params: pss(0, CKM_SHA256, CKG_MGF1_SHA256, 32).params
                },
                key
            )
            .unwrap_err()
            .code(),
        CKR_MECHANISM_PARAM_INVALID
    );
}

/// CKM_SHAxxx_RSA_PKCS_PSS and CKM_RSA_PKCS_PSS (over a digest): MGF1 with the same hash and
/// a salt as long as the hash, verified by OpenSSL.
#[test]
fn rsa_pss_mechanisms() {
    let (_fake, token, s) = setup();
    let key = private_key(&token, s, "rsa");
    let public = public_key(&token, s, "rsa");
    let msg = b"RSA-PSS";
    for (h, m, mgf, md) in HASHES {
        let n = md().size() as CK_ULONG;
        let mech = pss(m, h, mgf, n);
        let sig = sign(&token, s, &mech, key, msg);
        assert!(openssl_pss_verifies(md(), msg, &sig), "{m:#x}");
        token.verify_init(s, &mech, public).unwrap();
        token.verify(s, msg, &sig).unwrap();

        let digest = hash(md(), msg).unwrap();
        let mech = pss(CKM_RSA_PKCS_PSS, h, mgf, n);
        let sig = sign(&token, s, &mech, key, &digest);
        assert!(
            openssl_pss_verifies(md(), msg, &sig),
            "CKM_RSA_PKCS_PSS {h:#x}"
        );
        let mut ctx = PkeyCtx::new(rsa_key()).unwrap();
        ctx.verify_init().unwrap();
        ctx.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        ctx.set_signature_md(Md::from_nid(md().type_()).unwrap())
            .unwrap();
        assert!(ctx.verify(&digest, &sig).unwrap());
        token.verify_init(s, &mech, public).unwrap();
        token.verify(s, &digest, &sig).unwrap();
        token.sign_init(s, &mech, key).unwrap();
        assert_eq!(
            token.sign(s, &digest[1..], Some(256)).unwrap_err().code(),
            CKR_DATA_LEN_RANGE,
            "a digest of another length"
        );
    }
}

/// CK_RSA_PKCS_PSS_PARAMS the TSB cannot honour are CKR_MECHANISM_PARAM_INVALID at C_SignInit.
#[test]
fn rsa_pss_parameters_are_checked() {
    let (_fake, token, s) = setup();
    let key = private_key(&token, s, "rsa");
    let bad = [
        Mechanism::new(CKM_SHA256_RSA_PKCS_PSS),
        Mechanism::new(CKM_RSA_PKCS_PSS),
        pss(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384, CKG_MGF1_SHA384, 48),
        pss(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA384, 32),
        pss(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 20),
        pss(CKM_SHA256_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 0),
        pss(CKM_RSA_PKCS_PSS, CKM_SHA_1, CKG_MGF1_SHA1, 20),
        pss(CKM_RSA_PKCS_PSS, CKM_MD5, CKG_MGF1_SHA256, 16),
        pss(CKM_RSA_PKCS_PSS, CKM_SHA512, CKG_MGF1_SHA256, 64),
        Mechanism {
            mechanism: CKM_SHA256_RSA_PKCS,
            params: pss(0, CKM_SHA256, CKG_MGF1_SHA256, 32).params,
        },
    ];
    for m in &bad {
        assert_eq!(
            token.sign_init(s, m, key).unwrap_err().code(),
            CKR_MECHANISM_PARAM_INVALID,
            "{m:?}"
        );
    }
    // The mechanism must fit the key type.
    for m in [CKM_ECDSA_SHA256, CKM_ECDSA, CKM_EDDSA] {
        assert_eq!(
            token
                .sign_init(s, &Mechanism::new(m), key)
                .unwrap_err()
                .code(),
            CKR_KEY_TYPE_INCONSISTENT
        );
    }
}

/// Hash-and-sign input past the TSB's 64 KiB payload limit is hashed locally and signed as a
/// digest, single- and multi-part; OpenSSL verifies over the whole message.
#[test]
fn long_input_is_hashed_locally() {
    let (fake, token, s) = setup();
    let key = private_key(&token, s, "rsa");
    let public = public_key(&token, s, "rsa");
    let long: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    let limit = crate::token::mechanisms::PAYLOAD_LIMIT;
    // docs/objects-and-mechanisms.md: `SHAxxx_WITH_RSA` with the message up to 64 KiB, else
    // hashed here and `NONESHAxxx_WITH_RSA`.
    let sent = || fake.sign_requests.lock().last().unwrap().0.clone();
    for data in [&long[..limit], &long[..limit + 1], &long[..]] {
        let digest_sent = data.len() > limit;
        let m = Mechanism::new(CKM_SHA256_RSA_PKCS);
        let sig = sign(&token, s, &m, key, data);
        assert_eq!(sent().starts_with("NONE"), digest_sent, "{}", sent());
        let mut v = Verifier::new(MessageDigest::sha256(), rsa_key()).unwrap();
        assert!(
            v.verify_oneshot(&sig, data).unwrap(),
            "{} bytes",
            data.len()
        );
        // Multi-part, crossing the limit inside an update.
        token.sign_init(s, &m, key).unwrap();
        for part in data.chunks(30_000) {
            token.sign_update(s, part).unwrap();
        }
        let sig = signature(token.sign_final(s, Some(256)).unwrap());
        assert_eq!(sent().starts_with("NONE"), digest_sent, "{}", sent());
        let mut v = Verifier::new(MessageDigest::sha256(), rsa_key()).unwrap();
        assert!(
            v.verify_oneshot(&sig, data).unwrap(),
            "{} bytes",
            data.len()
        );
        token.verify_init(s, &m, public).unwrap();
        for part in data.chunks(30_000) {
            token.verify_update(s, part).unwrap();
        }
        token.verify_final(s, &sig).unwrap();

        let m = pss(CKM_SHA384_RSA_PKCS_PSS, CKM_SHA384, CKG_MGF1_SHA384, 48);
        let sig = sign(&token, s, &m, key, data);
        assert_eq!(sent().starts_with("NONE"), digest_sent, "{}", sent());
        assert!(openssl_pss_verifies(MessageDigest::sha384(), data, &sig));
    }
    // The TSB saw the message up to the limit, a digest beyond it.
    let calls = fake.calls();
    assert!(calls
        .iter()
        .all(|c| !c.starts_with("sign ") || c == "sign rsa"));
    // Ed25519 has no local hash: more than 64 KiB is refused.
    let ed = private_key(&token, s, "ed");
    token.sign_init(s, &Mechanism::new(CKM_EDDSA), ed).unwrap();
    assert_eq!(
        token.sign(s, &long, Some(64)).unwrap_err().code(),
        CKR_DATA_LEN_RANGE
    );
    token.sign_init(s, &Mechanism::new(CKM_EDDSA), ed).unwrap();
    token.sign_update(s, &long[..limit]).unwrap();
    assert_eq!(
        token.sign_update(s, b"one more").unwrap_err().code(),
        CKR_DATA_LEN_RANGE
    );
    // Exactly 64 KiB is within the limit, single- and multi-part (OpenSSL verifies).
    let sig = sign(&token, s, &Mechanism::new(CKM_EDDSA), ed, &long[..limit]);
    let mut v = Verifier::new_without_digest(ed_key()).unwrap();
    assert!(v.verify_oneshot(&sig, &long[..limit]).unwrap());
    token.sign_init(s, &Mechanism::new(CKM_EDDSA), ed).unwrap();
    for part in long[..limit].chunks(30_000) {
        token.sign_update(s, part).unwrap();
    }
    let sig = signature(token.sign_final(s, Some(64)).unwrap());
    let mut v = Verifier::new_without_digest(ed_key()).unwrap();
    assert!(v.verify_oneshot(&sig, &long[..limit]).unwrap());
}

/// Ed25519 (v3.0 §2.3.14): CKA_EC_PARAMS names the curve, CKA_EC_POINT wraps the 32-byte key;
/// CKM_EDDSA signs the message (pure Ed25519), verified by OpenSSL; prehash or a context is
/// refused.
#[test]
fn ed25519_keys_and_signatures() {
    let (_fake, token, s) = setup();
    let key = private_key(&token, s, "ed");
    let public = public_key(&token, s, "ed");
    let raw = ed_key().raw_public_key().unwrap();
    let mut point = vec![0x04, 32];
    point.extend_from_slice(&raw);
    for h in [key, public] {
        assert_eq!(
            token
                .attribute_values(
                    s,
                    h,
                    &[
                        CKA_KEY_TYPE,
                        CKA_EC_PARAMS,
                        CKA_EC_POINT,
                        CKA_ALLOWED_MECHANISMS
                    ],
                )
                .unwrap(),
            vec![
                AttrValue::Bytes(ulong(CKK_EC_EDWARDS)),
                AttrValue::Bytes(vec![0x06, 0x03, 0x2b, 0x65, 0x70]),
                AttrValue::Bytes(point.clone()),
                AttrValue::Bytes(CKM_EDDSA.to_ne_bytes().to_vec()),
            ]
        );
    }
    let msg = b"pure Ed25519";
    token.sign_init(s, &Mechanism::new(CKM_EDDSA), key).unwrap();
    assert_eq!(token.sign(s, msg, None).unwrap(), SignOutput::Length(64));
    let sig = signature(token.sign(s, msg, Some(64)).unwrap());
    let mut v = Verifier::new_without_digest(ed_key()).unwrap();
    assert!(v.verify_oneshot(&sig, msg).unwrap());
    token
        .verify_init(s, &Mechanism::new(CKM_EDDSA), public)
        .unwrap();
    token.verify(s, msg, &sig).unwrap();
    token
        .verify_init(s, &Mechanism::new(CKM_EDDSA), public)
        .unwrap();
    assert_eq!(
        token.verify(s, b"other", &sig).unwrap_err().code(),
        CKR_SIGNATURE_INVALID
    );
    let pure = Mechanism {
        mechanism: CKM_EDDSA,
        params: MechParams::EdDsa {
            prehash: false,
            context: vec![],
        },
    };
    let sig = sign(&token, s, &pure, key, msg);
    let mut v = Verifier::new_without_digest(ed_key()).unwrap();
    assert!(v.verify_oneshot(&sig, msg).unwrap());
    for params in [
        MechParams::EdDsa {
            prehash: true,
            context: vec![],
        },
        MechParams::EdDsa {
            prehash: false,
            context: b"ctx".to_vec(),
        },
        MechParams::Invalid("bytes"),
    ] {
        let m = Mechanism {
            mechanism: CKM_EDDSA,
            params,
        };
        assert_eq!(
            token.sign_init(s, &m, key).unwrap_err().code(),
            CKR_MECHANISM_PARAM_INVALID
        );
    }
}

/// CKM_RSA_PKCS_PSS signs a digest of the PSS hash: multi-part input longer than that digest
/// is refused at the C_SignUpdate that makes it too long, which ends the operation.
#[test]
fn pss_over_a_digest_refuses_longer_input_at_the_update() {
    let (fake, token, s) = setup();
    let key = private_key(&token, s, "rsa");
    let m = pss(CKM_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 32);
    token.sign_init(s, &m, key).unwrap();
    token.sign_update(s, &[1; 20]).unwrap();
    token.sign_update(s, &[1; 12]).unwrap();
    assert_eq!(
        token.sign_update(s, &[1]).unwrap_err().code(),
        CKR_DATA_LEN_RANGE
    );
    assert_eq!(
        token.sign_final(s, Some(256)).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(fake.count("sign "), 0);
}

/// Issue 19 item 3: even with `verifySignatures: false`, a TSB answer that cannot be a
/// signature by the key the handle names is never returned: wrong length, RSA not below the
/// modulus (or 0), ECDSA r or s zero or not below the order, malformed DER, Ed25519 S not below
/// the group order. Each gives `CKR_DEVICE_ERROR`; the answer as it comes is returned again once
/// the TSB is fixed.
#[test]
fn signatures_of_the_wrong_form_are_refused_without_verification() {
    let fake = FakeTsb::new();
    fake.add_openssl_key("rsa", rsa_key());
    fake.add_openssl_key("ed", ed_key());
    fake.add_key("ec", false);
    let token = token_with(&fake, json!({"verifySignatures": false}));
    let s = session(&token);
    let modulus = rsa_key().rsa().unwrap().n().to_vec();
    // P-256's group order n (FIPS 186-4 D.1.2.3).
    let p256_n =
        hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551").unwrap();
    // Ed25519's L (RFC 8032 §5.1), little-endian.
    let mut ed_l = hex::decode("edd3f55c1a631258d69cf7a2def9de14").unwrap();
    ed_l.extend_from_slice(&[0; 15]);
    ed_l.push(0x10);
    let rsa = Mechanism {
        mechanism: CKM_SHA256_RSA_PKCS,
        params: MechParams::None,
    };
    let ed = Mechanism {
        mechanism: CKM_EDDSA,
        params: MechParams::None,
    };
    let ec = Mechanism {
        mechanism: CKM_ECDSA_SHA256,
        params: MechParams::None,
    };
    let n = modulus.clone();
    let (n1, l1, l2) = (p256_n.clone(), ed_l.clone(), ed_l.clone());
    let cases: Vec<(&str, &str, &Mechanism, Tamper)> = vec![
        (
            "rsa",
            "one byte short",
            &rsa,
            Box::new(|mut s| {
                s.pop();
                s
            }),
        ),
        (
            "rsa",
            "the modulus itself",
            &rsa,
            Box::new(move |_| n.clone()),
        ),
        (
            "rsa",
            "all ones (above the modulus)",
            &rsa,
            Box::new(|s| vec![0xff; s.len()]),
        ),
        ("rsa", "zero", &rsa, Box::new(|s| vec![0; s.len()])),
        (
            "ec",
            "malformed DER",
            &ec,
            Box::new(|mut s| {
                s[0] = 0x31;
                s
            }),
        ),
        (
            "ec",
            "r||s with r = 0",
            &ec,
            Box::new(|_| {
                let mut raw = vec![0u8; 32];
                raw.extend_from_slice(&[1; 32]);
                raw
            }),
        ),
        (
            "ec",
            "r||s with s = n",
            &ec,
            Box::new(move |_| {
                let mut raw = vec![1u8; 32];
                raw.extend_from_slice(&n1);
                raw
            }),
        ),
        (
            "ec",
            "r||s one byte short",
            &ec,
            Box::new(|_| vec![1u8; 63]),
        ),
        (
            "ed",
            "S = L",
            &ed,
            Box::new(move |s| {
                let mut s = s[..32].to_vec();
                s.extend_from_slice(&l1);
                s
            }),
        ),
        (
            "ed",
            "S above L",
            &ed,
            Box::new(move |s| {
                let mut s = s[..32].to_vec();
                let mut big = l2.clone();
                big[31] = 0x7f;
                s.append(&mut big);
                s
            }),
        ),
        (
            "ed",
            "65 bytes",
            &ed,
            Box::new(|mut s| {
                s.push(0);
                s
            }),
        ),
    ];
    use crate::tsb::tests::log_capture;
    let logged = log_capture::install();
    let malformed = || {
        log_capture::LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                l.starts_with("ERROR ")
                    && l.contains("signature from the TSB for key 'ec' (")
                    && l.contains(") refused: malformed ECDSA signature (")
            })
            .count()
    };
    for (label, what, mech, tamper) in cases {
        let before = malformed();
        *fake.tamper.lock() = Some(tamper);
        let key = private_key(&token, s, label);
        token.sign_init(s, mech, key).unwrap();
        let e = token.sign(s, b"data", Some(512)).unwrap_err();
        assert_eq!(e.code(), CKR_DEVICE_ERROR, "{label}: {what}: {e}");
        // An ECDSA answer that is neither DER nor r‖s of the curve's width is refused as
        // malformed (the ERROR line says so) before its numbers are looked at.
        if matches!(what, "malformed DER" | "r||s one byte short") && logged {
            assert!(
                malformed() > before,
                "{what}: no ERROR line says it is malformed"
            );
        }
        *fake.tamper.lock() = None;
        token.sign_init(s, mech, key).unwrap();
        token
            .sign(s, b"data", Some(512))
            .expect("the untampered answer is returned");
    }
}
