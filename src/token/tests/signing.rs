//! Multi-part signing (PKCS#11 v2.40 §5.11) and local verification (§5.13); signatures are
//! checked with OpenSSL.

use cryptoki_sys::*;
use serde_json::json;

use super::fake::FakeTsb;
use super::{
    ecdsa_sha256, openssl_verifies, private_key, public_key, session, signature, token_with,
    SignOutput,
};
use crate::token::{MechParams, Mechanism};

/// C_SignUpdate/C_SignFinal sign the concatenation; C_Sign after an update fails and ends the
/// operation; a size query on C_SignFinal makes no TSB call.
#[test]
fn multi_part_signing() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "ec");
    assert_eq!(
        token.sign_update(s, b"x").unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        token.sign_final(s, Some(64)).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    token.sign_update(s, b"hello ").unwrap();
    token.sign_update(s, b"world").unwrap();
    assert_eq!(token.sign_final(s, None).unwrap(), SignOutput::Length(64));
    let short = token.sign_final(s, Some(10)).unwrap_err();
    assert_eq!(
        (short.code(), short.needed()),
        (CKR_BUFFER_TOO_SMALL, Some(64))
    );
    assert_eq!(fake.count("sign "), 0);
    let sig = signature(token.sign_final(s, Some(64)).unwrap());
    assert!(openssl_verifies(&signer, b"hello world", &sig));
    assert_eq!(
        token.sign_final(s, Some(64)).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );

    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    token.sign_update(s, b"part").unwrap();
    assert_eq!(
        token.sign(s, b"whole", Some(64)).unwrap_err().code(),
        CKR_FUNCTION_FAILED
    );
    assert_eq!(
        token.sign_final(s, Some(64)).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    token.end_sign(s);
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
}

/// §5.11 C_SignInit: the key handle must be a private key that the mechanism fits.
#[test]
fn sign_init_checks_the_key_and_mechanism() {
    let fake = FakeTsb::new();
    fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "ec");
    let public = public_key(&token, s, "ec");
    assert_eq!(
        token
            .sign_init(s, &ecdsa_sha256(), public)
            .unwrap_err()
            .code(),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        token
            .verify_init(s, &ecdsa_sha256(), key)
            .unwrap_err()
            .code(),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        token
            .sign_init(s, &ecdsa_sha256(), 0x7fff_0001)
            .unwrap_err()
            .code(),
        CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(
        token
            .sign_init(s, &Mechanism::new(CKM_SHA256_RSA_PKCS), key)
            .unwrap_err()
            .code(),
        CKR_KEY_TYPE_INCONSISTENT
    );
    let with_params = Mechanism {
        mechanism: CKM_ECDSA_SHA256,
        params: MechParams::Invalid("unexpected"),
    };
    assert_eq!(
        token.sign_init(s, &with_params, key).unwrap_err().code(),
        CKR_MECHANISM_PARAM_INVALID
    );
    assert_eq!(
        token
            .sign_init(s, &Mechanism::new(CKM_AES_CBC), key)
            .unwrap_err()
            .code(),
        CKR_MECHANISM_INVALID
    );
    // None of the refusals left an operation behind.
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
}

/// §5.13 C_Verify with the public key object: the module's own signature verifies, a signature
/// of other data or with a flipped bit is CKR_SIGNATURE_INVALID, a wrong length
/// CKR_SIGNATURE_LEN_RANGE; every call ends the operation.
#[test]
fn verification_accepts_good_and_rejects_bad_signatures() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "ec");
    let public = public_key(&token, s, "ec");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let sig = signature(token.sign(s, b"message", Some(64)).unwrap());
    assert!(openssl_verifies(&signer, b"message", &sig));

    assert_eq!(
        token.verify(s, b"message", &sig).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    token.verify_init(s, &ecdsa_sha256(), public).unwrap();
    assert_eq!(
        token
            .verify_init(s, &ecdsa_sha256(), public)
            .unwrap_err()
            .code(),
        CKR_OPERATION_ACTIVE
    );
    token.verify(s, b"message", &sig).unwrap();
    let mut flipped = sig.clone();
    flipped[10] ^= 0x01;
    for (data, signature, rv) in [
        (&b"other"[..], &sig[..], CKR_SIGNATURE_INVALID),
        (b"message", &flipped, CKR_SIGNATURE_INVALID),
        (b"message", &sig[..63], CKR_SIGNATURE_LEN_RANGE),
    ] {
        token.verify_init(s, &ecdsa_sha256(), public).unwrap();
        assert_eq!(token.verify(s, data, signature).unwrap_err().code(), rv);
        assert_eq!(
            token.verify(s, b"message", &sig).unwrap_err().code(),
            CKR_OPERATION_NOT_INITIALIZED
        );
    }

    // Multi-part: the parts make the message.
    token.verify_init(s, &ecdsa_sha256(), public).unwrap();
    token.verify_update(s, b"mess").unwrap();
    token.verify_update(s, b"age").unwrap();
    token.verify_final(s, &sig).unwrap();
    token.verify_init(s, &ecdsa_sha256(), public).unwrap();
    token.verify_update(s, b"messag").unwrap();
    assert_eq!(
        token.verify_final(s, &sig).unwrap_err().code(),
        CKR_SIGNATURE_INVALID
    );
    token.verify_init(s, &ecdsa_sha256(), public).unwrap();
    token.verify_update(s, b"message").unwrap();
    assert_eq!(
        token.verify(s, b"message", &sig).unwrap_err().code(),
        CKR_FUNCTION_FAILED
    );
    assert_eq!(
        token.verify_final(s, &sig).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        token.verify_update(s, b"x").unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    // Ended at the C boundary (bad arguments, v3.0 §5.15): nothing is verified with it, and
    // the next C_VerifyInit starts afresh.
    token.verify_init(s, &ecdsa_sha256(), public).unwrap();
    token.end_verify(s);
    assert_eq!(
        token.verify(s, b"message", &sig).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    token.verify_init(s, &ecdsa_sha256(), public).unwrap();
    token.verify(s, b"message", &sig).unwrap();
}

/// CKM_ECDSA signs a digest the caller made; the signature is over that digest.
#[test]
fn raw_ecdsa_signs_the_callers_digest() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "ec");
    let digest = openssl::sha::sha256(b"prehashed");
    token.sign_init(s, &Mechanism::new(CKM_ECDSA), key).unwrap();
    let sig = signature(token.sign(s, &digest, Some(64)).unwrap());
    assert!(openssl_verifies(&signer, b"prehashed", &sig));
    let public = public_key(&token, s, "ec");
    token
        .verify_init(s, &Mechanism::new(CKM_ECDSA), public)
        .unwrap();
    token.verify(s, &digest, &sig).unwrap();
}

/// Every ECDSA hash mechanism hashes with its own hash (the TSB algorithm names it): OpenSSL
/// verifies each signature over that hash of the message, and the module's verification
/// accepts it under the same mechanism only.
#[test]
fn each_ecdsa_mechanism_signs_with_its_hash() {
    use openssl::hash::{hash, MessageDigest};
    let fake = FakeTsb::new();
    let signer = fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "ec");
    let public = public_key(&token, s, "ec");
    let msg = b"hash me with the mechanism's hash";
    let cases = [
        (CKM_ECDSA_SHA1, MessageDigest::sha1()),
        (CKM_ECDSA_SHA224, MessageDigest::sha224()),
        (CKM_ECDSA_SHA256, MessageDigest::sha256()),
        (CKM_ECDSA_SHA384, MessageDigest::sha384()),
        (CKM_ECDSA_SHA512, MessageDigest::sha512()),
    ];
    for (m, md) in cases {
        token.sign_init(s, &Mechanism::new(m), key).unwrap();
        let sig = signature(token.sign(s, msg, Some(64)).unwrap());
        let digest = hash(md, msg).unwrap();
        assert!(
            super::openssl_verifies_digest(&signer, &digest, &sig),
            "{m:#x}"
        );
        token.verify_init(s, &Mechanism::new(m), public).unwrap();
        token.verify(s, msg, &sig).unwrap();
        let other = if m == CKM_ECDSA_SHA256 {
            CKM_ECDSA_SHA384
        } else {
            CKM_ECDSA_SHA256
        };
        token
            .verify_init(s, &Mechanism::new(other), public)
            .unwrap();
        assert_eq!(
            token.verify(s, msg, &sig).unwrap_err().code(),
            CKR_SIGNATURE_INVALID,
            "{m:#x} signature checked as {other:#x}"
        );
    }
}

/// CKM_ECDSA takes a digest: empty input or more than 1024 bytes is CKR_DATA_LEN_RANGE
/// (PKCS#11 v2.40 Current Mechanisms §2.3.6), single- or multi-part.
#[test]
fn raw_ecdsa_input_limits() {
    let fake = FakeTsb::new();
    fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "ec");
    for data in [vec![], vec![7; 1025]] {
        token.sign_init(s, &Mechanism::new(CKM_ECDSA), key).unwrap();
        assert_eq!(
            token.sign(s, &data, Some(64)).unwrap_err().code(),
            CKR_DATA_LEN_RANGE,
            "{} bytes",
            data.len()
        );
    }
    token.sign_init(s, &Mechanism::new(CKM_ECDSA), key).unwrap();
    token.sign_update(s, &[7; 1024]).unwrap();
    assert_eq!(
        token.sign_update(s, &[7]).unwrap_err().code(),
        CKR_DATA_LEN_RANGE
    );
    token.sign_init(s, &Mechanism::new(CKM_ECDSA), key).unwrap();
    let sig = signature(token.sign(s, &[7; 1024], Some(64)).unwrap());
    assert_eq!(sig.len(), 64);
    assert_eq!(fake.count("sign ec"), 1, "only the call within the limits");
}

/// A TSB that answers ECDSA as fixed-width r‖s instead of DER: the signature is taken as it is
/// (and still verified by OpenSSL).
#[test]
fn raw_ecdsa_answers_are_accepted() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("ec", false);
    fake.raw_ecdsa
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "ec");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let sig = signature(token.sign(s, b"raw", Some(64)).unwrap());
    assert!(openssl_verifies(&signer, b"raw", &sig));
}
