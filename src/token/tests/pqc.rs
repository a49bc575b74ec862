//! Post-quantum keys (issue 21): ML-DSA (FIPS 204), SLH-DSA (FIPS 205) and HSS/LMS (RFC 8554)
//! through the PKCS#11 v3.2 mechanisms, over the fake TSB. Each signature is checked with the
//! verifier of the crate that made it in the fake (ml-dsa, slh-dsa, hbs-lms), called here
//! directly, never through the module; the clients' tests (tests/pqc.rs) check them with the
//! independent Python implementations.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use cryptoki_sys::*;
use serde_json::json;

use super::fake::FakeTsb;
use super::{find, private_key, public_key, session, signature, token_with, ulong, wait_for};
use crate::token::attributes::AttrValue;
use crate::token::{MechParams, Mechanism, SignOutput, Token};

fn mech(m: CK_MECHANISM_TYPE) -> Mechanism {
    Mechanism::new(m)
}

fn ctx_mech(m: CK_MECHANISM_TYPE, hedge: CK_HEDGE_TYPE, context: &[u8]) -> Mechanism {
    Mechanism {
        mechanism: m,
        params: MechParams::SignContext {
            hedge,
            context: context.to_vec(),
        },
    }
}

fn bytes(v: &AttrValue) -> &[u8] {
    match v {
        AttrValue::Bytes(b) => b,
        other => panic!("a value, not {other:?}"),
    }
}

fn as_ulong(v: &AttrValue) -> CK_ULONG {
    CK_ULONG::from_ne_bytes(bytes(v).try_into().expect("a CK_ULONG"))
}

fn ml_dsa_verifies(pk: &[u8], msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
    let enc = ml_dsa::EncodedVerifyingKey::<ml_dsa::MlDsa65>::try_from(pk).unwrap();
    let vk = ml_dsa::VerifyingKey::<ml_dsa::MlDsa65>::decode(&enc);
    match ml_dsa::Signature::<ml_dsa::MlDsa65>::try_from(sig) {
        Ok(sig) => vk.verify_with_context(msg, ctx, &sig),
        Err(_) => false,
    }
}

fn slh_dsa_verifies(pk: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let vk = slh_dsa::VerifyingKey::<slh_dsa::Sha2_128f>::try_from(pk).unwrap();
    let sig = slh_dsa::Signature::<slh_dsa::Sha2_128f>::try_from(sig).unwrap();
    vk.try_verify_with_context(msg, &[], &sig).is_ok()
}

fn lms_verifies(pk: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    hbs_lms::verify::<hbs_lms::Sha256_256>(msg, sig, pk).is_ok()
}

/// The three families with the fake's keys: label, key type, mechanism, signature size, raw
/// public key.
fn three_keys(
    fake: &FakeTsb,
) -> Vec<(&'static str, CK_KEY_TYPE, CK_MECHANISM_TYPE, usize, Vec<u8>)> {
    vec![
        (
            "mldsa",
            CKK_ML_DSA,
            CKM_ML_DSA,
            3309,
            fake.add_ml_dsa("mldsa", false),
        ),
        (
            "slhdsa",
            CKK_SLH_DSA,
            CKM_SLH_DSA,
            17088,
            fake.add_slh_dsa("slhdsa"),
        ),
        // HSS L = 1, H5, W8: 4 + (4 + 4 + 32 + 34·32) + 4 + 5·32 bytes.
        ("lms", CKK_HSS, CKM_HSS, 1296, fake.add_lms("lms")),
    ]
}

/// PKCS#11 v3.2: the TSB's post-quantum keys are private and public key objects with
/// `CKA_KEY_TYPE`, `CKA_PARAMETER_SET`, the raw public key as the public key's `CKA_VALUE`, the
/// SubjectPublicKeyInfo the TSB sent as `CKA_PUBLIC_KEY_INFO`, and for HSS `CKA_HSS_LEVELS`,
/// the top level's types, every level's types and the signatures left. The same objects come
/// from a TSB that sends raw public keys instead of SubjectPublicKeyInfo.
#[test]
fn post_quantum_keys_are_objects_with_their_attributes() {
    for raw in [false, true] {
        let fake = FakeTsb::new();
        fake.raw_pqc_public_keys.store(raw, Relaxed);
        let keys = three_keys(&fake);
        let token = token_with(&fake, json!({}));
        let s = session(&token);
        for (label, key_type, _, _, pk) in &keys {
            let public = public_key(&token, s, label);
            let private = private_key(&token, s, label);
            let v = token
                .attribute_values(
                    s,
                    public,
                    &[CKA_KEY_TYPE, CKA_VALUE, CKA_PUBLIC_KEY_INFO, CKA_VERIFY],
                )
                .unwrap();
            assert_eq!(as_ulong(&v[0]), *key_type, "{label}");
            assert_eq!(
                bytes(&v[1]),
                pk.as_slice(),
                "{label}: CKA_VALUE is the raw key"
            );
            // The SubjectPublicKeyInfo ends with the raw key in the BIT STRING and names the
            // NIST OID (RFC 9881, RFC 9909, RFC 9708), without parameters.
            let spki = bytes(&v[2]);
            assert!(spki.ends_with(pk), "{label}");
            let oid: &[u8] = match *key_type {
                CKK_ML_DSA => &[
                    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x12,
                ],
                CKK_SLH_DSA => &[
                    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x15,
                ],
                _ => &[
                    0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x03, 0x11,
                ],
            };
            assert!(
                spki.windows(oid.len()).any(|w| w == oid),
                "{label}: the NIST OID in CKA_PUBLIC_KEY_INFO"
            );
            let v = token
                .attribute_values(s, private, &[CKA_KEY_TYPE, CKA_SIGN, CKA_VALUE])
                .unwrap();
            assert_eq!(as_ulong(&v[0]), *key_type);
            assert_eq!(bytes(&v[1]), &[CK_TRUE]);
            assert_eq!(v[2], AttrValue::Sensitive, "{label}: private value");
        }
        let set = |obj| {
            as_ulong(
                &token
                    .attribute_values(s, obj, &[CKA_PARAMETER_SET])
                    .unwrap()[0],
            )
        };
        assert_eq!(set(public_key(&token, s, "mldsa")), CKP_ML_DSA_65);
        assert_eq!(set(private_key(&token, s, "mldsa")), CKP_ML_DSA_65);
        assert_eq!(set(public_key(&token, s, "slhdsa")), CKP_SLH_DSA_SHA2_128F);
        let lms_pub = public_key(&token, s, "lms");
        let v = token
            .attribute_values(
                s,
                lms_pub,
                &[
                    CKA_HSS_LEVELS,
                    CKA_HSS_LMS_TYPE,
                    CKA_HSS_LMOTS_TYPE,
                    CKA_PARAMETER_SET,
                ],
            )
            .unwrap();
        assert_eq!(
            (as_ulong(&v[0]), as_ulong(&v[1]), as_ulong(&v[2])),
            (1, 5, 4),
            "L = 1, LMS_SHA256_M32_H5, LMOTS_SHA256_N32_W8"
        );
        assert_eq!(
            v[3],
            AttrValue::Invalid,
            "HSS keys have no CKA_PARAMETER_SET"
        );
        let lms_priv = private_key(&token, s, "lms");
        let v = token
            .attribute_values(
                s,
                lms_priv,
                &[
                    CKA_HSS_LMS_TYPES,
                    CKA_HSS_LMOTS_TYPES,
                    CKA_HSS_KEYS_REMAINING,
                ],
            )
            .unwrap();
        assert_eq!(bytes(&v[0]), ulong(5).as_slice());
        assert_eq!(bytes(&v[1]), ulong(4).as_slice());
        assert_eq!(as_ulong(&v[2]), 32);
        // A search by key type finds each family.
        for (label, key_type, ..) in &keys {
            let found = find(&token, s, &[(CKA_KEY_TYPE, ulong(*key_type))]);
            assert_eq!(found.len(), 2, "{label}: private and public key");
        }
    }
}

/// Size queries answer the exact signature size of the parameter set, before any TSB call;
/// single-part and multi-part signatures verify; every signature is verified before it is
/// returned, also with `verifySignatures: false`.
#[test]
fn post_quantum_signatures_single_and_multi_part() {
    let fake = FakeTsb::new();
    let keys = three_keys(&fake);
    let token = token_with(&fake, json!({"verifySignatures": false}));
    let s = session(&token);
    for (label, _, m, len, pk) in &keys {
        let key = private_key(&token, s, label);
        token.sign_init(s, &mech(*m), key).unwrap();
        let calls = fake.count("sign ");
        assert_eq!(
            token.sign(s, b"firmware", None).unwrap(),
            SignOutput::Length(*len)
        );
        let short = token.sign(s, b"firmware", Some(len - 1)).unwrap_err();
        assert_eq!(short.code(), CKR_BUFFER_TOO_SMALL);
        assert_eq!(fake.count("sign "), calls, "no TSB call for a size query");
        let sig = signature(token.sign(s, b"firmware", Some(*len)).unwrap());
        assert_eq!(sig.len(), *len);
        // Multi-part: the parts are buffered and signed as one message (pure signatures).
        token.sign_init(s, &mech(*m), key).unwrap();
        token.sign_update(s, b"firm").unwrap();
        token.sign_update(s, b"ware").unwrap();
        assert_eq!(token.sign_final(s, None).unwrap(), SignOutput::Length(*len));
        let sig2 = signature(token.sign_final(s, Some(*len)).unwrap());
        for sig in [&sig, &sig2] {
            let ok = match *m {
                CKM_ML_DSA => ml_dsa_verifies(pk, b"firmware", &[], sig),
                CKM_SLH_DSA => slh_dsa_verifies(pk, b"firmware", sig),
                _ => lms_verifies(pk, b"firmware", sig),
            };
            assert!(ok, "{label}: the signature verifies");
        }
        // C_Verify with the public key object, locally.
        let public = public_key(&token, s, label);
        token.verify_init(s, &mech(*m), public).unwrap();
        token.verify(s, b"firmware", &sig).unwrap();
        token.verify_init(s, &mech(*m), public).unwrap();
        assert_eq!(
            token.verify(s, b"firmwarE", &sig).unwrap_err().code(),
            CKR_SIGNATURE_INVALID
        );
    }
    // Input over the TSB's 64 KiB cannot be signed purely: CKR_DATA_LEN_RANGE, no TSB call.
    let before = fake.count("sign ");
    let key = private_key(&token, s, "mldsa");
    token.sign_init(s, &mech(CKM_ML_DSA), key).unwrap();
    assert_eq!(
        token
            .sign(s, &vec![0; 64 * 1024 + 1], Some(3309))
            .unwrap_err()
            .code(),
        CKR_DATA_LEN_RANGE
    );
    assert_eq!(fake.count("sign "), before);
    // Exactly 64 KiB is within the limit: signed, and the signature verifies.
    let (.., len, pk) = keys.iter().find(|k| k.0 == "mldsa").unwrap();
    let at_limit = vec![7u8; 64 * 1024];
    token.sign_init(s, &mech(CKM_ML_DSA), key).unwrap();
    let sig = signature(token.sign(s, &at_limit, Some(*len)).unwrap());
    assert!(ml_dsa_verifies(pk, &at_limit, &[], &sig));
}

/// A signature the TSB returns for other data or another key, or of the wrong length, is never
/// returned (`CKR_DEVICE_ERROR`), even with `verifySignatures: false`; a longer answer than the
/// size query announced is an error, not an overflow.
#[test]
fn wrong_post_quantum_signatures_are_never_returned() {
    type Tamper = fn(Vec<u8>) -> Vec<u8>;
    let tampers: [(&str, Tamper); 3] = [
        ("a flipped byte", |mut s| {
            let n = s.len() / 2;
            s[n] ^= 1;
            s
        }),
        ("one byte more", |mut s| {
            s.push(0);
            s
        }),
        ("one byte less", |mut s| {
            s.pop();
            s
        }),
    ];
    for (what, tamper) in tampers {
        let fake = FakeTsb::new();
        let keys = three_keys(&fake);
        *fake.tamper.lock() = Some(Box::new(tamper));
        let token = token_with(&fake, json!({"verifySignatures": false}));
        let s = session(&token);
        for (label, _, m, len, _) in &keys {
            let key = private_key(&token, s, label);
            token.sign_init(s, &mech(*m), key).unwrap();
            assert_eq!(
                token.sign(s, b"data", Some(len + 1)).unwrap_err().code(),
                CKR_DEVICE_ERROR,
                "{label}: {what}"
            );
        }
    }
    // Another key's valid signature (the TSB answering for another ML-DSA key).
    let fake = FakeTsb::new();
    fake.add_ml_dsa("mldsa", false);
    let other = Arc::new(FakeTsb::new());
    other.add_ml_dsa("other", false);
    let other_sig = {
        let token = token_with(&other, json!({}));
        let s = session(&token);
        let key = private_key(&token, s, "other");
        token.sign_init(s, &mech(CKM_ML_DSA), key).unwrap();
        signature(token.sign(s, b"data", Some(3309)).unwrap())
    };
    *fake.tamper.lock() = Some(Box::new(move |_| other_sig.clone()));
    let token = token_with(&fake, json!({"verifySignatures": false}));
    let s = session(&token);
    let key = private_key(&token, s, "mldsa");
    token.sign_init(s, &mech(CKM_ML_DSA), key).unwrap();
    assert_eq!(
        token.sign(s, b"data", Some(3309)).unwrap_err().code(),
        CKR_DEVICE_ERROR
    );
}

/// `CK_SIGN_ADDITIONAL_CONTEXT`: an empty context (or none) signs as plain pure ML-DSA; a
/// non-empty context is sent to the TSB and the signature verifies under it (and not without
/// it); `CKH_DETERMINISTIC_REQUIRED` cannot be honoured (the TSB signs hedged) and a TSB that
/// refuses the `context` field gives `CKR_MECHANISM_PARAM_INVALID`, never a signature made
/// without the context.
#[test]
fn sign_context_is_honoured_or_refused() {
    let fake = FakeTsb::new();
    let pk = fake.add_ml_dsa("mldsa", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "mldsa");
    token
        .sign_init(s, &ctx_mech(CKM_ML_DSA, CKH_HEDGE_PREFERRED, b""), key)
        .unwrap();
    let sig = signature(token.sign(s, b"m", Some(3309)).unwrap());
    assert!(ml_dsa_verifies(&pk, b"m", &[], &sig));
    token
        .sign_init(s, &ctx_mech(CKM_ML_DSA, CKH_HEDGE_REQUIRED, b"fw-v1"), key)
        .unwrap();
    let sig = signature(token.sign(s, b"m", Some(3309)).unwrap());
    assert!(ml_dsa_verifies(&pk, b"m", b"fw-v1", &sig));
    assert!(!ml_dsa_verifies(&pk, b"m", &[], &sig));
    let sent = fake.sign_requests.lock().clone();
    assert_eq!(
        sent[0],
        ("DILITHIUM".to_string(), None),
        "no context field when empty"
    );
    assert_eq!(sent[1], ("DILITHIUM".to_string(), Some(b"fw-v1".to_vec())));
    // Deterministic signing is not what the TSB does; the refusal says so.
    let err = token
        .sign_init(
            s,
            &ctx_mech(CKM_ML_DSA, CKH_DETERMINISTIC_REQUIRED, b""),
            key,
        )
        .unwrap_err();
    assert_eq!(err.code(), CKR_MECHANISM_PARAM_INVALID);
    assert!(
        err.message()
            .contains("CKH_DETERMINISTIC_REQUIRED cannot be honoured"),
        "{}",
        err.message()
    );
    assert_eq!(
        token
            .sign_init(s, &ctx_mech(CKM_ML_DSA, 7, b""), key)
            .unwrap_err()
            .code(),
        CKR_MECHANISM_PARAM_INVALID
    );
    // A TSB that refuses the context field.
    fake.no_context_field.store(true, Relaxed);
    token
        .sign_init(s, &ctx_mech(CKM_ML_DSA, CKH_HEDGE_PREFERRED, b"fw-v1"), key)
        .unwrap();
    assert_eq!(
        token.sign(s, b"m", Some(3309)).unwrap_err().code(),
        CKR_MECHANISM_PARAM_INVALID
    );
    let sent = fake.sign_requests.lock().clone();
    assert!(
        sent[2..]
            .iter()
            .all(|(_, c)| c.as_deref() == Some(&b"fw-v1"[..])),
        "the context is never dropped: {sent:?}"
    );
    // HSS takes no parameter at all.
    let lms = FakeTsb::new();
    lms.add_lms("lms");
    let token = token_with(&lms, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "lms");
    assert_eq!(
        token
            .sign_init(s, &ctx_mech(CKM_HSS, CKH_HEDGE_PREFERRED, b""), key)
            .unwrap_err()
            .code(),
        CKR_MECHANISM_PARAM_INVALID
    );
}

/// A TSB that knows only the newer names (`ML_DSA`, `SLH_DSA`) refuses the documented ones
/// with 400/600: the module sends the request once more under the newer name.
#[test]
fn newer_algorithm_names_are_tried_once() {
    let fake = FakeTsb::new();
    let pk = fake.add_ml_dsa("mldsa", false);
    fake.add_slh_dsa("slhdsa");
    fake.newer_pqc_names_only.store(true, Relaxed);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "mldsa");
    token.sign_init(s, &mech(CKM_ML_DSA), key).unwrap();
    let sig = signature(token.sign(s, b"m", Some(3309)).unwrap());
    assert!(ml_dsa_verifies(&pk, b"m", &[], &sig));
    let key = private_key(&token, s, "slhdsa");
    token.sign_init(s, &mech(CKM_SLH_DSA), key).unwrap();
    signature(token.sign(s, b"m", Some(17088)).unwrap());
    let names: Vec<String> = fake
        .sign_requests
        .lock()
        .iter()
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(names, ["DILITHIUM", "ML_DSA", "SPHINCS_PLUS", "SLH_DSA"]);
}

/// Only a refused algorithm name is sent again under the newer name: another failure (here a
/// TSB error 500) is answered at once, and the TSB sees the request once.
#[test]
fn other_sign_failures_are_not_retried_under_the_newer_name() {
    let fake = FakeTsb::new();
    fake.add_ml_dsa("mldsa", false);
    *fake.sign_error.lock() = Some((500, 700));
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "mldsa");
    token.sign_init(s, &mech(CKM_ML_DSA), key).unwrap();
    assert_eq!(
        token.sign(s, b"m", Some(3309)).unwrap_err().code(),
        CKR_DEVICE_ERROR
    );
    assert_eq!(
        *fake.sign_requests.lock(),
        [("DILITHIUM".to_string(), None)]
    );
}

/// docs/tsb-api.md: the TSB refuses a used-up LMS key's sign also with 614 (operation
/// forbidden for the key): that is `CKR_KEY_EXHAUSTED` too (PKCS#11 v3.1).
#[test]
fn an_lms_sign_forbidden_by_the_tsb_is_key_exhausted() {
    let fake = FakeTsb::new();
    fake.add_lms("lms");
    *fake.sign_error.lock() = Some((403, 614));
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "lms");
    token.sign_init(s, &mech(CKM_HSS), key).unwrap();
    assert_eq!(
        token.sign(s, b"one", Some(1296)).unwrap_err().code(),
        CKR_KEY_EXHAUSTED
    );
}

/// Only an LMS key is used up: the same 614 for an ML-DSA key is the key's function not
/// permitted, and another failure of an LMS key's sign (a TSB error 500) is a device error,
/// neither `CKR_KEY_EXHAUSTED`.
#[test]
fn only_an_lms_key_refused_as_used_up_is_key_exhausted() {
    for (forbidden, label, m, len, want) in [
        (
            (403, 614),
            "mldsa",
            CKM_ML_DSA,
            3309,
            CKR_KEY_FUNCTION_NOT_PERMITTED,
        ),
        ((500, 700), "lms", CKM_HSS, 1296, CKR_DEVICE_ERROR),
    ] {
        let fake = FakeTsb::new();
        fake.add_ml_dsa("mldsa", false);
        fake.add_lms("lms");
        *fake.sign_error.lock() = Some(forbidden);
        let token = token_with(&fake, json!({}));
        let s = session(&token);
        let key = private_key(&token, s, label);
        token.sign_init(s, &mech(m), key).unwrap();
        assert_eq!(
            token.sign(s, b"one", Some(len)).unwrap_err().code(),
            want,
            "{label}: {forbidden:?}"
        );
    }
}

/// A TSB that answers a one-level LMS key's signature as the bare LMS signature (RFC 8554
/// §5.4) still gives the application the HSS signature CKM_HSS returns (§6.2: `Nspk` = 0 in
/// front), which verifies under the key's HSS public key.
#[test]
fn a_bare_lms_signature_is_returned_as_the_hss_signature() {
    let fake = FakeTsb::new();
    let pk = fake.add_lms("lms");
    fake.bare_lms
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "lms");
    token.sign_init(s, &mech(CKM_HSS), key).unwrap();
    let sig = signature(token.sign(s, b"bare", Some(1296)).unwrap());
    assert_eq!(sig.len(), 1296);
    assert_eq!(sig[..4], [0, 0, 0, 0], "Nspk = 0");
    assert!(lms_verifies(&pk, b"bare", &sig));
}

/// An exhausted LMS key: the TSB's refusal (500/701 "LMS key exhausted") is
/// `CKR_KEY_EXHAUSTED` (PKCS#11 v3.1), and once the TSB reports no signature left the module
/// answers so without asking it again. `CKA_HSS_KEYS_REMAINING` counts down.
#[test]
fn exhausted_lms_key() {
    let fake = FakeTsb::new();
    let pk = fake.add_lms("lms");
    let token = token_with(&fake, json!({"cacheTtlSecs": 0}));
    let s = session(&token);
    let key = private_key(&token, s, "lms");
    token.sign_init(s, &mech(CKM_HSS), key).unwrap();
    let sig = signature(token.sign(s, b"one", Some(1296)).unwrap());
    assert!(lms_verifies(&pk, b"one", &sig));
    let remaining = |token: &Token| {
        let key = private_key(token, s, "lms");
        as_ulong(
            &token
                .attribute_values(s, key, &[CKA_HSS_KEYS_REMAINING])
                .unwrap()[0],
        )
    };
    assert_eq!(remaining(&token), 31);
    fake.set_remaining("lms", 0);
    let key = private_key(&token, s, "lms");
    token.sign_init(s, &mech(CKM_HSS), key).unwrap();
    assert_eq!(
        token.sign(s, b"two", Some(1296)).unwrap_err().code(),
        CKR_KEY_EXHAUSTED
    );
    assert_eq!(remaining(&token), 0);
    let calls = fake.count("sign ");
    let key = private_key(&token, s, "lms");
    token.sign_init(s, &mech(CKM_HSS), key).unwrap();
    assert_eq!(
        token.sign(s, b"three", Some(1296)).unwrap_err().code(),
        CKR_KEY_EXHAUSTED
    );
    assert_eq!(
        fake.count("sign "),
        calls,
        "no TSB call for a key known to be used up"
    );
}

/// The module verifies LMS signatures on the application's thread: with a small stack (1 MiB,
/// a Java thread's default) too.
#[test]
fn lms_verification_fits_a_small_stack() {
    let fake = FakeTsb::new();
    let pk = fake.add_lms("lms");
    let token = Arc::new(token_with(&fake, json!({})));
    let s = session(&token);
    let key = private_key(&token, s, "lms");
    let public = public_key(&token, s, "lms");
    token.sign_init(s, &mech(CKM_HSS), key).unwrap();
    let sig = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn({
            let token = token.clone();
            move || {
                let sig = signature(token.sign(s, b"small", Some(1296)).unwrap());
                token.verify_init(s, &mech(CKM_HSS), public).unwrap();
                token.verify(s, b"small", &sig).unwrap();
                sig
            }
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(lms_verifies(&pk, b"small", &sig));
}

/// An ML-DSA key with an approval policy signs through the approval wait like a classical key.
#[test]
fn ml_dsa_key_with_approvals() {
    let fake = FakeTsb::new();
    let pk = fake.add_ml_dsa("ska", true);
    let token = Arc::new(token_with(&fake, json!({})));
    let s = session(&token);
    let key = private_key(&token, s, "ska");
    token.sign_init(s, &mech(CKM_ML_DSA), key).unwrap();
    let signing = {
        let token = token.clone();
        std::thread::spawn(move || token.sign(s, b"approve me", Some(3309)))
    };
    let id = wait_for("the approval request", || fake.request_ids().pop());
    fake.approve(&id);
    let sig = signature(signing.join().unwrap().unwrap());
    assert!(ml_dsa_verifies(&pk, b"approve me", &[], &sig));
    assert_eq!(fake.count("sign "), 0, "filed, never signed synchronously");
}

/// `C_GetMechanismList` / `C_GetMechanismInfo` report the three signature mechanisms (sign and
/// verify) and the three key-pair generation mechanisms.
#[test]
fn mechanisms_are_listed() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let list = token.mechanism_list(0).unwrap();
    for m in [CKM_ML_DSA, CKM_SLH_DSA, CKM_HSS] {
        assert!(list.contains(&m), "{m:#x}");
        let info = token.mechanism_info(0, m).unwrap();
        assert_eq!(info.flags & (CKF_SIGN | CKF_VERIFY), CKF_SIGN | CKF_VERIFY);
    }
    for m in [
        CKM_ML_DSA_KEY_PAIR_GEN,
        CKM_SLH_DSA_KEY_PAIR_GEN,
        CKM_HSS_KEY_PAIR_GEN,
    ] {
        assert!(list.contains(&m), "{m:#x}");
        let info = token.mechanism_info(0, m).unwrap();
        assert_ne!(info.flags & CKF_GENERATE_KEY_PAIR, 0);
    }
}

type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

fn pqc_templates(label: &str, extra_public: Template) -> (Template, Template) {
    let mut public = vec![(CKA_LABEL, label.as_bytes().to_vec())];
    public.extend(extra_public);
    (
        public,
        vec![
            (CKA_LABEL, label.as_bytes().to_vec()),
            (CKA_SIGN, vec![CK_TRUE]),
            (CKA_TOKEN, vec![CK_TRUE]),
        ],
    )
}

/// The generation mechanisms create TSB keys of the parameter set asked for (ML-DSA, SLH-DSA:
/// `CKA_PARAMETER_SET`, required) or the one LMS key the TSB makes; a value the TSB cannot make
/// is refused, never dropped.
#[test]
fn post_quantum_key_generation() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let gen = |m, t: &(Template, Template)| token.generate_key_pair(s, &mech(m), &t.0, &t.1);
    let (public, private) = gen(
        CKM_ML_DSA_KEY_PAIR_GEN,
        &pqc_templates("new-mldsa", vec![(CKA_PARAMETER_SET, ulong(CKP_ML_DSA_65))]),
    )
    .unwrap();
    assert_eq!(
        as_ulong(
            &token
                .attribute_values(s, public, &[CKA_PARAMETER_SET])
                .unwrap()[0]
        ),
        CKP_ML_DSA_65
    );
    token.sign_init(s, &mech(CKM_ML_DSA), private).unwrap();
    signature(token.sign(s, b"m", Some(3309)).unwrap());
    gen(
        CKM_SLH_DSA_KEY_PAIR_GEN,
        &pqc_templates(
            "new-slh",
            vec![(CKA_PARAMETER_SET, ulong(CKP_SLH_DSA_SHA2_128F))],
        ),
    )
    .unwrap();
    gen(
        CKM_HSS_KEY_PAIR_GEN,
        &pqc_templates(
            "new-lms",
            vec![
                (CKA_HSS_LEVELS, ulong(1)),
                (CKA_HSS_LMS_TYPES, ulong(5)),
                (CKA_HSS_LMOTS_TYPES, ulong(1)),
            ],
        ),
    )
    .unwrap();
    let calls = fake.calls();
    for want in [
        "create new-mldsa PostQuantum(\"ML-DSA-65\")",
        "create new-slh PostQuantum(\"SLH-DSA-SHA2-128f\")",
        "create new-lms PostQuantum(\"LMS\")",
    ] {
        assert!(
            calls.iter().any(|c| c.starts_with(want)),
            "{want}: {calls:?}"
        );
    }
    let refused = [
        (
            CKM_ML_DSA_KEY_PAIR_GEN,
            pqc_templates("x1", vec![]),
            CKR_TEMPLATE_INCOMPLETE,
        ),
        (
            CKM_ML_DSA_KEY_PAIR_GEN,
            pqc_templates("x2", vec![(CKA_PARAMETER_SET, ulong(4))]),
            CKR_PARAMETER_SET_NOT_SUPPORTED,
        ),
        (
            CKM_SLH_DSA_KEY_PAIR_GEN,
            pqc_templates("x3", vec![(CKA_PARAMETER_SET, ulong(13))]),
            CKR_PARAMETER_SET_NOT_SUPPORTED,
        ),
        (
            CKM_HSS_KEY_PAIR_GEN,
            pqc_templates("x4", vec![(CKA_HSS_LEVELS, ulong(2))]),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            CKM_HSS_KEY_PAIR_GEN,
            pqc_templates("x5", vec![(CKA_HSS_LMS_TYPES, ulong(6))]),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            CKM_ML_DSA_KEY_PAIR_GEN,
            pqc_templates("x6", vec![(CKA_KEY_TYPE, ulong(CKK_SLH_DSA))]),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        // HSS attributes belong to HSS keys only, even with the one value the TSB makes.
        (
            CKM_ML_DSA_KEY_PAIR_GEN,
            pqc_templates(
                "x7",
                vec![
                    (CKA_PARAMETER_SET, ulong(CKP_ML_DSA_65)),
                    (CKA_HSS_LMS_TYPES, ulong(5)),
                ],
            ),
            CKR_ATTRIBUTE_TYPE_INVALID,
        ),
    ];
    for (m, t, rv) in refused {
        assert_eq!(gen(m, &t).unwrap_err().code(), rv, "{:?}", t.0);
    }
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("create x")),
        "nothing created for a refused template"
    );
}
