//! Key objects and their attributes (PKCS#11 v2.40 §4.4, §4.8, §4.9; §5.7 C_GetAttributeValue,
//! C_FindObjects*), compared with what OpenSSL derives from the fake's keys.

use cryptoki_sys::*;
use openssl::bn::BigNumContext;
use openssl::ec::PointConversionForm;
use p256::pkcs8::EncodePublicKey;
use serde_json::json;

use super::fake::FakeTsb;
use super::{find, private_key, session, token_with, ulong, EC_MECHANISMS};
use crate::token::attributes::{AttrValue, CKA_TSB_BLOCKED, CKA_TSB_NEEDS_APPROVAL};

fn b(v: bool) -> AttrValue {
    AttrValue::Bytes(vec![if v { CK_TRUE } else { CK_FALSE }])
}

fn u(v: CK_ULONG) -> AttrValue {
    AttrValue::Bytes(ulong(v))
}

fn bytes(v: &[u8]) -> AttrValue {
    AttrValue::Bytes(v.to_vec())
}

/// Every attribute of a P-256 key's private and public objects: the storage attributes, the
/// key material as OpenSSL encodes it, and the capabilities a signing-only HSM key has.
#[test]
fn ec_key_objects_have_the_attributes_of_their_key() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let private = private_key(&token, s, "ec");
    let public = find(
        &token,
        s,
        &[
            (CKA_CLASS, ulong(CKO_PUBLIC_KEY)),
            (CKA_LABEL, b"ec".to_vec()),
        ],
    );
    assert_eq!(public.len(), 1);
    let public = public[0];
    assert_ne!(private, public);

    // OpenSSL's view of the key.
    let spki = signer.verifying_key().to_public_key_der().unwrap();
    let pkey = openssl::pkey::PKey::public_key_from_der(spki.as_bytes()).unwrap();
    let ec = pkey.ec_key().unwrap();
    let mut ctx = BigNumContext::new().unwrap();
    let point = ec
        .public_key()
        .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
        .unwrap();
    let mut ec_point = vec![0x04, point.len() as u8];
    ec_point.extend_from_slice(&point);
    let params = openssl::asn1::Asn1Object::from_str("1.2.840.10045.3.1.7").unwrap();
    let mut ec_params = vec![0x06, params.as_slice().len() as u8];
    ec_params.extend_from_slice(params.as_slice());
    let allowed: Vec<u8> = EC_MECHANISMS.iter().flat_map(|m| m.to_ne_bytes()).collect();

    let common = [
        (CKA_TOKEN, b(true)),
        (CKA_PRIVATE, b(false)),
        (CKA_MODIFIABLE, b(false)),
        (CKA_COPYABLE, b(false)),
        (CKA_DESTROYABLE, b(false)),
        (CKA_LABEL, bytes(b"ec")),
        (CKA_ID, bytes(b"ec")),
        (CKA_KEY_TYPE, u(CKK_EC)),
        (CKA_START_DATE, bytes(&[])),
        (CKA_END_DATE, bytes(&[])),
        (CKA_SUBJECT, bytes(&[])),
        (CKA_DERIVE, b(false)),
        (CKA_LOCAL, b(false)),
        (CKA_KEY_GEN_MECHANISM, u(CK_UNAVAILABLE_INFORMATION)),
        (CKA_ALLOWED_MECHANISMS, AttrValue::Bytes(allowed)),
        (CKA_EC_PARAMS, AttrValue::Bytes(ec_params)),
        (CKA_EC_POINT, AttrValue::Bytes(ec_point)),
        (CKA_PUBLIC_KEY_INFO, bytes(spki.as_bytes())),
        (CKA_TSB_NEEDS_APPROVAL, b(false)),
        (CKA_TSB_BLOCKED, b(false)),
        (CKA_MODULUS, AttrValue::Invalid),
        (CKA_PUBLIC_EXPONENT, AttrValue::Invalid),
        (CKA_MODULUS_BITS, AttrValue::Invalid),
        (CKA_VENDOR_DEFINED, AttrValue::Invalid),
    ];
    let private_only = [
        (CKA_CLASS, u(CKO_PRIVATE_KEY)),
        (CKA_SIGN, b(true)),
        (CKA_SIGN_RECOVER, b(false)),
        (CKA_DECRYPT, b(false)),
        (CKA_UNWRAP, b(false)),
        (CKA_WRAP_WITH_TRUSTED, b(false)),
        (CKA_SENSITIVE, b(true)),
        (CKA_EXTRACTABLE, b(false)),
        (CKA_ALWAYS_SENSITIVE, b(true)),
        (CKA_NEVER_EXTRACTABLE, b(true)),
        (CKA_ALWAYS_AUTHENTICATE, b(false)),
        (CKA_VALUE, AttrValue::Sensitive),
        (CKA_VERIFY, AttrValue::Invalid),
        (CKA_ENCRYPT, AttrValue::Invalid),
    ];
    let public_only = [
        (CKA_CLASS, u(CKO_PUBLIC_KEY)),
        (CKA_VERIFY, b(true)),
        (CKA_ENCRYPT, b(false)),
        (CKA_WRAP, b(false)),
        (CKA_VERIFY_RECOVER, b(false)),
        (CKA_TRUSTED, b(false)),
        (CKA_SIGN, AttrValue::Invalid),
        (CKA_SENSITIVE, AttrValue::Invalid),
        (CKA_VALUE, AttrValue::Invalid),
    ];
    for (handle, only) in [(private, &private_only[..]), (public, &public_only[..])] {
        for (attr, expected) in common.iter().chain(only) {
            let got = token.attribute_values(s, handle, &[*attr]).unwrap();
            assert_eq!(
                got,
                vec![expected.clone()],
                "attribute {attr:#x} of {handle}"
            );
        }
    }
    assert_eq!(
        token
            .attribute_values(s + 1000, private, &[CKA_LABEL])
            .unwrap_err()
            .code(),
        CKR_SESSION_HANDLE_INVALID
    );
}

/// A key with a use policy shows `CKA_TSB_NEEDS_APPROVAL`; a search template matches each
/// attribute by value (§5.7 C_FindObjectsInit), so both key classes and the approval flag
/// select exactly the right objects.
#[test]
fn search_templates_match_attribute_values() {
    let fake = FakeTsb::new();
    fake.add_key("plain", false);
    fake.add_key("approved", true);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let needs = private_key(&token, s, "approved");
    assert_eq!(
        token
            .attribute_values(s, needs, &[CKA_TSB_NEEDS_APPROVAL, CKA_LABEL])
            .unwrap(),
        vec![b(true), bytes(b"approved")]
    );
    let all = find(&token, s, &[]);
    assert_eq!(all.len(), 4, "two keys, two objects each");
    let with_approval = find(&token, s, &[(CKA_TSB_NEEDS_APPROVAL, vec![CK_TRUE])]);
    assert_eq!(with_approval.len(), 2);
    assert!(with_approval.contains(&needs));
    let private = find(&token, s, &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY))]);
    assert_eq!(private.len(), 2);
    let by_id = find(&token, s, &[(CKA_ID, b"plain".to_vec())]);
    assert_eq!(by_id.len(), 2);
    assert!(!by_id.contains(&needs));
    assert!(find(&token, s, &[(CKA_KEY_TYPE, ulong(CKK_RSA))]).is_empty());
    assert_eq!(find(&token, s, &[(CKA_KEY_TYPE, ulong(CKK_EC))]).len(), 4);
    assert!(find(&token, s, &[(CKA_ID, b"nothing".to_vec())]).is_empty());
    assert!(find(&token, s, &[(CKA_LABEL, vec![0xff])]).is_empty());
}

/// §5.7 C_FindObjects hands out the matches in chunks of at most `max`, and one search at a
/// time per session.
#[test]
fn find_objects_returns_chunks_and_one_search_at_a_time() {
    let fake = FakeTsb::new();
    for label in ["k1", "k2", "k3"] {
        fake.add_key(label, false);
    }
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    assert_eq!(
        token.find_objects(s, 1).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        token.find_objects_final(s).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    token.find_objects_init(s, &[]).unwrap();
    assert_eq!(
        token.find_objects_init(s, &[]).unwrap_err().code(),
        CKR_OPERATION_ACTIVE
    );
    let mut seen = Vec::new();
    for expected in [4, 2, 0, 0] {
        let chunk = token.find_objects(s, 4).unwrap();
        assert_eq!(chunk.len(), expected);
        seen.extend(chunk);
    }
    token.find_objects_final(s).unwrap();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 6, "every object once");
    token.find_objects_init(s, &[]).unwrap();
    assert_eq!(token.find_objects(s, usize::MAX).unwrap().len(), 6);
    token.find_objects_final(s).unwrap();
}

/// `pkcs11.keys` limits the token to the listed labels, without listing the TSB's keys.
#[test]
fn the_keys_allow_list_limits_what_is_seen() {
    let fake = FakeTsb::new();
    fake.add_key("shown", false);
    fake.add_key("hidden", false);
    let token = token_with(&fake, json!({"keys": ["shown"]}));
    let s = session(&token);
    assert_eq!(find(&token, s, &[]).len(), 2);
    assert!(find(&token, s, &[(CKA_LABEL, b"hidden".to_vec())]).is_empty());
    assert!(find(&token, s, &[(CKA_LABEL, b"".to_vec())]).is_empty());
    assert_eq!(fake.count("list"), 0);
    assert_eq!(fake.count("attributes hidden"), 0);
}

/// A blocked key (keyStatus.blocked) is not listed and cannot sign: a handle taken before it
/// was blocked gives CKR_KEY_FUNCTION_NOT_PERMITTED at C_SignInit (§5.11), and its
/// CKA_SIGN and CKA_TSB_BLOCKED say so.
#[test]
fn blocked_keys_cannot_sign() {
    let fake = FakeTsb::new();
    fake.add_key("k", false);
    let token = token_with(&fake, json!({"cacheTtlSecs": 0}));
    let s = session(&token);
    let key = private_key(&token, s, "k");
    fake.set_blocked("k", true);
    assert!(find(&token, s, &[(CKA_LABEL, b"k".to_vec())]).is_empty());
    assert_eq!(
        token
            .attribute_values(s, key, &[CKA_TSB_BLOCKED, CKA_SIGN])
            .unwrap(),
        vec![b(true), b(false)]
    );
    assert_eq!(
        token
            .sign_init(s, &super::ecdsa_sha256(), key)
            .unwrap_err()
            .code(),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    fake.set_blocked("k", false);
    assert_eq!(private_key(&token, s, "k"), key);
    token.sign_init(s, &super::ecdsa_sha256(), key).unwrap();
}

/// A search by a CKA_ID that spells a label fetches that key only, without listing the TSB.
#[test]
fn an_id_that_is_a_label_is_looked_up_directly() {
    let fake = FakeTsb::new();
    fake.add_key("a", false);
    fake.add_key("b", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    assert_eq!(find(&token, s, &[(CKA_ID, b"a".to_vec())]).len(), 2);
    assert_eq!(fake.count("list"), 0);
    assert_eq!(fake.count("attributes b"), 0);
    // An ID with a control character is no label: the key list is searched.
    assert!(find(&token, s, &[(CKA_ID, b"a\n".to_vec())]).is_empty());
    assert_eq!(fake.count("list"), 1);
}

/// A key found gone while signing leaves the cached key list too: the next full search shows
/// the other keys at once, from the cache.
#[test]
fn a_key_found_gone_leaves_the_cached_list() {
    let fake = FakeTsb::new();
    fake.add_key("kept", false);
    fake.add_key("gone", false);
    let token = token_with(&fake, json!({"cacheTtlSecs": 600}));
    let s = session(&token);
    assert_eq!(find(&token, s, &[]).len(), 4);
    let kept = find(&token, s, &[(CKA_LABEL, b"kept".to_vec())]);
    let gone = private_key(&token, s, "gone");
    fake.remove_key("gone");
    token.sign_init(s, &super::ecdsa_sha256(), gone).unwrap();
    assert_eq!(
        token.sign(s, b"x", Some(64)).unwrap_err().code(),
        CKR_KEY_HANDLE_INVALID
    );
    let mut all = find(&token, s, &[]);
    all.sort_unstable();
    let mut kept = kept;
    kept.sort_unstable();
    assert_eq!(all, kept);
    assert_eq!(
        fake.count("list"),
        1,
        "the cached list, without the gone key"
    );
}

/// A TSB failure while loading a key is reported (CKR_DEVICE_ERROR), not taken for "no such
/// key": the key keeps its handle once the TSB answers again.
#[test]
fn a_tsb_failure_is_not_a_missing_key() {
    let fake = FakeTsb::new();
    fake.add_key("k", false);
    let token = token_with(&fake, json!({"cacheTtlSecs": 0}));
    let s = session(&token);
    let key = private_key(&token, s, "k");
    *fake.attributes_error.lock() = Some((503, 700));
    assert_eq!(
        token
            .find_objects_init(s, &[(CKA_LABEL, b"k".to_vec())])
            .unwrap_err()
            .code(),
        CKR_DEVICE_ERROR
    );
    *fake.attributes_error.lock() = None;
    assert_eq!(private_key(&token, s, "k"), key);
}

/// The approvers of a key's use policy, named in the approval log lines: "group: quorum of
/// names"; a key without a policy names none.
#[test]
fn a_policy_key_names_its_approvers() {
    let fake = FakeTsb::new();
    fake.add_key("ska", true);
    fake.add_key("plain", false);
    let token = token_with(&fake, json!({}));
    let ska = token.load_key("ska").unwrap().expect("ska");
    assert_eq!(ska.approvers, "g: 1 of alice");
    let plain = token.load_key("plain").unwrap().expect("plain");
    assert_eq!(plain.approvers, "");
}

/// PKCS#11 v2.40 §4: a CK_BBOOL attribute is one byte, a CK_ULONG-typed one sizeof(CK_ULONG);
/// byte arrays and strings have no fixed size (templates are checked against this before any
/// value is read).
#[test]
fn fixed_size_attributes_have_the_size_of_their_type() {
    use crate::token::attributes::fixed_len;
    for a in [
        CKA_TOKEN,
        CKA_PRIVATE,
        CKA_SIGN,
        CKA_SENSITIVE,
        CKA_EXTRACTABLE,
    ] {
        assert_eq!(fixed_len(a), Some(1), "{a:#x}");
    }
    let ulong_len = std::mem::size_of::<CK_ULONG>();
    for a in [
        CKA_CLASS,
        CKA_KEY_TYPE,
        CKA_CERTIFICATE_TYPE,
        CKA_MODULUS_BITS,
    ] {
        assert_eq!(fixed_len(a), Some(ulong_len), "{a:#x}");
    }
    for a in [CKA_LABEL, CKA_ID, CKA_VALUE, CKA_EC_PARAMS, CKA_SUBJECT] {
        assert_eq!(fixed_len(a), None, "{a:#x}");
    }
}

/// A key the TSB refuses to describe (414 for a label too long for a URI, 400 for one it
/// rejects) is left out of a listing with a WARN line; the other keys are listed and the search
/// succeeds (PKCS#11 v3.0 §5.7.7: C_FindObjects returns the objects that match). A failure that
/// is not about one key (a TSB that is down) still fails the search: a partial list would hide it.
#[test]
fn a_key_the_tsb_refuses_to_describe_is_left_out_of_listings() {
    let fake = FakeTsb::new();
    fake.add_key("a", false);
    fake.add_key("b", false);
    let long = format!("long-{}\u{1b}[2J", "x".repeat(9000));
    fake.add_key(&long, false);
    fake.add_key("rejected", false);
    fake.label_errors.lock().insert(long.clone(), (414, None));
    fake.label_errors
        .lock()
        .insert("rejected".into(), (400, Some(600)));
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let all = find(&token, s, &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY))]);
    assert_eq!(all.len(), 2, "the two describable keys");
    let mut labels: Vec<Vec<u8>> = all
        .iter()
        .map(
            |h| match &token.attribute_values(s, *h, &[CKA_LABEL]).unwrap()[0] {
                AttrValue::Bytes(l) => l.clone(),
                other => panic!("{other:?}"),
            },
        )
        .collect();
    labels.sort();
    assert_eq!(labels, vec![b"a".to_vec(), b"b".to_vec()]);
    // Asked by its label, the refused key is simply not found.
    let by_label = find(&token, s, &[(CKA_LABEL, b"rejected".to_vec())]);
    assert!(by_label.is_empty());

    let down = FakeTsb::new();
    down.add_key("a", false);
    down.add_key("b", false);
    down.label_errors.lock().insert("b".into(), (503, None));
    let token = token_with(&down, json!({}));
    let s = session(&token);
    let failed = token
        .find_objects_init(s, &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY))])
        .and_then(|()| token.find_objects(s, 100));
    assert_eq!(failed.err().map(|e| e.code()), Some(CKR_DEVICE_ERROR));
}

/// A key fetch worker that panics (a bug) fails the search with CKR_GENERAL_ERROR instead of
/// leaving its key out of the result as if it did not exist.
#[test]
fn a_panicking_fetch_fails_the_search() {
    let fake = FakeTsb::new();
    for label in ["a", "b", "c"] {
        fake.add_key(label, false);
    }
    *fake.attributes_panic.lock() = Some("b".into());
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let r = token
        .find_objects_init(s, &[(CKA_CLASS, super::ulong(CKO_PRIVATE_KEY))])
        .and_then(|()| token.find_objects(s, 10));
    assert_eq!(r.unwrap_err().code(), CKR_GENERAL_ERROR);
}

/// §5.7.6 with §4.4: before login, on a token with private objects, a private key's handle is
/// invalid for C_SetAttributeValue and C_CopyObject; its public key stays visible (refused as
/// not modifiable).
#[test]
fn a_private_key_is_invisible_to_modification_before_login() {
    let fake = FakeTsb::new();
    fake.add_key("k", false);
    *fake.good_jwt.lock() = Some("jwt".into());
    let token = token_with(&fake, json!({"pinIs": "token"}));
    let s = session(&token);
    token.login(s, CKU_USER, b"jwt").unwrap();
    let private = private_key(&token, s, "k");
    let public = super::public_key(&token, s, "k");
    token.logout(s).unwrap();
    let change = [(CKA_LABEL, b"other".to_vec())];
    let rv = |r: crate::error::Result<()>| r.err().map(|e| e.code());
    assert_eq!(
        rv(token.set_attribute_values(s, private, &change)),
        Some(CKR_OBJECT_HANDLE_INVALID)
    );
    assert_eq!(
        token.copy_object(s, private).err().map(|e| e.code()),
        Some(CKR_OBJECT_HANDLE_INVALID)
    );
    assert_eq!(
        rv(token.set_attribute_values(s, public, &change)),
        Some(CKR_ACTION_PROHIBITED)
    );
}

/// A refused C_SetAttributeValue names the attribute in its message (the module's WARN line),
/// so an administrator sees which one the application tried to change.
#[test]
fn a_refused_modification_names_the_attribute() {
    let fake = FakeTsb::new();
    fake.add_key("k", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "k");
    for (attr, name) in [
        (CKA_LABEL, "CKA_LABEL"),
        (CKA_ID, "CKA_ID"),
        (CKA_TOKEN, "CKA_TOKEN"),
        (CKA_PRIVATE, "CKA_PRIVATE"),
        (CKA_SUBJECT, "CKA_SUBJECT"),
        (CKA_VALUE, "CKA_VALUE"),
        (CKA_SIGN, "CKA_SIGN"),
        (CKA_DECRYPT, "CKA_DECRYPT"),
        (CKA_START_DATE, "CKA_START_DATE"),
        (CKA_END_DATE, "CKA_END_DATE"),
        (CKA_MODULUS, "attribute 0x120"),
    ] {
        let e = token
            .set_attribute_values(s, key, &[(attr, vec![0xaa; 3])])
            .unwrap_err();
        assert!(e.to_string().contains(name), "{name}: {e}");
    }
}

/// §5.7.6 C_SetAttributeValue on objects whose CKA_MODIFIABLE is false: a template that
/// changes nothing succeeds (SunPKCS11 sets CKA_ID to the alias it generated the key under);
/// any change is CKR_ACTION_PROHIBITED, a sensitive attribute is refused without being
/// compared, an attribute the object lacks is CKR_ATTRIBUTE_TYPE_INVALID, and a read-only
/// session may not modify token objects. §5.7.2 C_CopyObject: CKA_COPYABLE false gives
/// CKR_ACTION_PROHIBITED. The handle still names the same key afterwards.
#[test]
fn objects_cannot_be_modified_or_copied_but_an_unchanged_value_is_accepted() {
    let fake = FakeTsb::new();
    fake.add_key("k", false);
    fake.add_key("other", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "k");
    let rv = |r: crate::error::Result<()>| r.err().map(|e| e.code());
    assert_eq!(
        rv(token.set_attribute_values(
            s,
            key,
            &[(CKA_ID, b"k".to_vec()), (CKA_LABEL, b"k".to_vec())]
        )),
        None
    );
    assert_eq!(
        rv(token.set_attribute_values(s, key, &[(CKA_ID, b"other".to_vec())])),
        Some(CKR_ACTION_PROHIBITED)
    );
    assert_eq!(
        rv(token.set_attribute_values(s, key, &[(CKA_LABEL, b"other".to_vec())])),
        Some(CKR_ACTION_PROHIBITED)
    );
    assert_eq!(
        rv(token.set_attribute_values(s, key, &[(CKA_VALUE, Vec::new())])),
        Some(CKR_ACTION_PROHIBITED)
    );
    assert_eq!(
        rv(token.set_attribute_values(s, key, &[(CKA_MODULUS, Vec::new())])),
        Some(CKR_ATTRIBUTE_TYPE_INVALID)
    );
    let ro = token.open_session(0, CKF_SERIAL_SESSION, None).unwrap();
    assert_eq!(
        rv(token.set_attribute_values(ro, key, &[(CKA_ID, b"k".to_vec())])),
        Some(CKR_SESSION_READ_ONLY)
    );
    let copied = token.copy_object(s, key);
    assert_eq!(copied.err().map(|e| e.code()), Some(CKR_ACTION_PROHIBITED));
    assert_eq!(
        private_key(&token, s, "k"),
        key,
        "the handle names the same key"
    );
    assert_ne!(private_key(&token, s, "other"), key);
    assert_eq!(
        token.copy_object(s, 0xdead_beef).err().map(|e| e.code()),
        Some(CKR_OBJECT_HANDLE_INVALID)
    );
}

/// An application that forbids helper threads (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`, PKCS#11
/// v2.40 §5.4 C_Initialize): a full listing fetches every key's attributes on the calling
/// thread; with threads allowed, on parallel workers.
#[test]
fn a_listing_starts_no_thread_when_the_application_forbids_them() {
    for threads in [false, true] {
        let fake = FakeTsb::new();
        for label in ["k1", "k2", "k3"] {
            fake.add_key(label, false);
        }
        let config = r#"{"restApi": "http://127.0.0.1:9"}"#;
        let config = crate::config::Config::from_json_str(config, "core-test").unwrap();
        let token = crate::token::Token::with_backend(config, threads, fake.factory()).unwrap();
        let s = session(&token);
        let keys = find(&token, s, &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY))]);
        assert_eq!(keys.len(), 3);
        let me = std::thread::current().id();
        let seen = fake.attribute_threads.lock().clone();
        assert_eq!(seen.len(), 3, "threads {threads}");
        assert_eq!(
            seen.iter().all(|t| *t == me),
            !threads,
            "threads {threads}: {seen:?}"
        );
    }
}

/// Within `cacheTtlSecs` a key's attributes are fetched once: finding it again by its label
/// asks the TSB nothing more.
#[test]
fn a_key_is_fetched_once_within_the_cache_lifetime() {
    let fake = FakeTsb::new();
    fake.add_key("ec", false);
    let token = token_with(&fake, json!({"cacheTtlSecs": 600}));
    let s = session(&token);
    let label = [(CKA_LABEL, b"ec".to_vec())];
    assert_eq!(find(&token, s, &label).len(), 2);
    let fetched = fake.count("attributes ec");
    assert_eq!(find(&token, s, &label).len(), 2);
    private_key(&token, s, "ec");
    assert_eq!(fake.count("attributes ec"), fetched, "no second fetch");
}

/// A `CKA_ID` that cannot be a TSB label (empty, or with a control character) is not looked up
/// as one: the search goes to the key list, and no key is asked for by that name.
#[test]
fn an_id_that_is_no_label_is_not_looked_up_as_one() {
    let fake = FakeTsb::new();
    fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    for id in [&b"a\nb"[..], b"\tec"] {
        assert!(find(&token, s, &[(CKA_ID, id.to_vec())]).is_empty());
        let label = String::from_utf8(id.to_vec()).unwrap();
        assert!(
            !fake.calls().contains(&format!("attributes {label}")),
            "{:?}",
            fake.calls()
        );
    }
}
