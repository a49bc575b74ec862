//! Core tests: the token driven in-process over a fake TSB (`fake.rs`), without a network, a
//! simulator or `dlopen`. Each test names the PKCS#11 rule it checks. Signatures are verified
//! with OpenSSL, never with the module's code. The same rules are also tested through the built
//! `.so` against the simulator (`tests/`).

mod approval;
mod certificates;
mod digest;
mod fake;
mod handle_table;
mod keygen;
mod mechanisms;
mod objects;
mod passwords;
mod pqc;
mod rsa_eddsa;
mod sessions;
mod signing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePublicKey;
use serde_json::{json, Value};

use super::{MechParams, Mechanism, SignOutput, Token};
use crate::config::Config;
use fake::FakeTsb;

fn token_with(fake: &Arc<FakeTsb>, pkcs11: Value) -> Token {
    let mut settings = json!({"pollIntervalMs": 10, "pollIntervalMaxMs": 20});
    for (k, v) in pkcs11.as_object().expect("object") {
        settings[k] = v.clone();
    }
    let config = json!({"restApi": "http://127.0.0.1:9", "pkcs11": settings});
    let config = Config::from_json_str(&config.to_string(), "core-test").expect("config");
    Token::with_backend(config, true, fake.factory()).expect("token")
}

fn session(token: &Token) -> CK_SESSION_HANDLE {
    token
        .open_session(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, None)
        .expect("session")
}

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn find(
    token: &Token,
    s: CK_SESSION_HANDLE,
    template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Vec<CK_OBJECT_HANDLE> {
    token.find_objects_init(s, template).expect("find init");
    let found = token.find_objects(s, 100).expect("find");
    token.find_objects_final(s).expect("find final");
    found
}

/// The one object of `class` labelled `label`.
fn key_object(
    token: &Token,
    s: CK_SESSION_HANDLE,
    class: CK_OBJECT_CLASS,
    label: &str,
) -> CK_OBJECT_HANDLE {
    let found = find(
        token,
        s,
        &[
            (CKA_CLASS, ulong(class)),
            (CKA_LABEL, label.as_bytes().to_vec()),
        ],
    );
    assert_eq!(
        found.len(),
        1,
        "one object of class {class} labelled '{label}'"
    );
    found[0]
}

fn private_key(token: &Token, s: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
    key_object(token, s, CKO_PRIVATE_KEY, label)
}

fn public_key(token: &Token, s: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
    key_object(token, s, CKO_PUBLIC_KEY, label)
}

/// The ECDSA mechanisms, as PKCS#11 v3.0 §2.3 lists them (stated here independently of the
/// module's own table).
const EC_MECHANISMS: [CK_MECHANISM_TYPE; 6] = [
    CKM_ECDSA,
    CKM_ECDSA_SHA1,
    CKM_ECDSA_SHA224,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA384,
    CKM_ECDSA_SHA512,
];

fn ecdsa_sha256() -> Mechanism {
    Mechanism {
        mechanism: CKM_ECDSA_SHA256,
        params: MechParams::None,
    }
}

/// Verifies a fixed-width r‖s P-256 signature of `msg` (hashed with SHA-256) with OpenSSL.
fn openssl_verifies(key: &SigningKey, msg: &[u8], raw: &[u8]) -> bool {
    openssl_verifies_digest(key, &openssl::sha::sha256(msg), raw)
}

/// Verifies a fixed-width r‖s P-256 signature of a digest with OpenSSL.
fn openssl_verifies_digest(key: &SigningKey, digest: &[u8], raw: &[u8]) -> bool {
    use openssl::bn::BigNum;
    use openssl::ecdsa::EcdsaSig;
    let spki = key.verifying_key().to_public_key_der().expect("SPKI");
    let pkey = openssl::pkey::PKey::public_key_from_der(spki.as_bytes()).expect("OpenSSL key");
    let ec = pkey.ec_key().expect("EC key");
    assert_eq!(raw.len(), 64, "fixed-width r‖s");
    let sig = EcdsaSig::from_private_components(
        BigNum::from_slice(&raw[..32]).unwrap(),
        BigNum::from_slice(&raw[32..]).unwrap(),
    )
    .unwrap();
    sig.verify(digest, &ec).unwrap()
}

fn signature(out: SignOutput) -> Vec<u8> {
    match out {
        SignOutput::Signature(s) => s,
        SignOutput::Length(n) => panic!("a length ({n}), not a signature"),
    }
}

/// PKCS#11 v3.0 §5.2: a size query and `CKR_BUFFER_TOO_SMALL` answer from the key, keep the
/// operation active, and make no TSB call; the call with room signs exactly once.
#[test]
fn size_query_and_short_buffer_keep_the_operation_and_call_nothing() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "ec");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    assert_eq!(
        token.sign(s, b"data", None).unwrap(),
        SignOutput::Length(64)
    );
    let short = token.sign(s, b"data", Some(63)).unwrap_err();
    assert_eq!(short.code(), CKR_BUFFER_TOO_SMALL);
    assert_eq!(short.needed(), Some(64));
    assert_eq!(fake.count("sign "), 0, "no TSB call before the buffer fits");
    let sig = signature(token.sign(s, b"data", Some(64)).unwrap());
    assert_eq!(fake.count("sign "), 1);
    assert!(openssl_verifies(&signer, b"data", &sig));
    // The operation ended with the signature (§5.13 C_Sign).
    let after = token.sign(s, b"data", Some(64)).unwrap_err();
    assert_eq!(after.code(), CKR_OPERATION_NOT_INITIALIZED);
}

/// §5.13: one signing operation per session at a time; an error other than a short buffer ends
/// the operation.
#[test]
fn operation_state_rules() {
    let fake = FakeTsb::new();
    fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    assert_eq!(
        token.sign(s, b"x", Some(64)).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    let key = private_key(&token, s, "ec");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    assert_eq!(
        token.sign_init(s, &ecdsa_sha256(), key).unwrap_err().code(),
        CKR_OPERATION_ACTIVE
    );
    // The key disappears on the TSB: 650 → CKR_KEY_HANDLE_INVALID, and the operation is over.
    fake.remove_key("ec");
    assert_eq!(
        token.sign(s, b"x", Some(64)).unwrap_err().code(),
        CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(
        token.sign(s, b"x", Some(64)).unwrap_err().code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    // A key the token has seen gone is not found any more, and its handle is invalid.
    assert!(find(&token, s, &[(CKA_LABEL, b"ec".to_vec())]).is_empty());
    assert_eq!(
        token
            .attribute_values(s, key, &[CKA_LABEL])
            .unwrap_err()
            .code(),
        CKR_OBJECT_HANDLE_INVALID
    );
}

/// Lazy discovery: a search by label fetches that key only; the key list and attributes are
/// cached for `cacheTtlSecs`; handles stay the same.
#[test]
fn searches_are_lazy_and_cached_with_stable_handles() {
    let fake = FakeTsb::new();
    fake.add_key("a", false);
    fake.add_key("b", false);
    let token = token_with(&fake, json!({"cacheTtlSecs": 60}));
    let s = session(&token);
    let first = private_key(&token, s, "a");
    assert_eq!(fake.count("list"), 0, "a search by label lists nothing");
    assert_eq!(fake.count("attributes a"), 1);
    assert_eq!(private_key(&token, s, "a"), first);
    assert_eq!(fake.count("attributes a"), 1, "served from the cache");
    let all = find(&token, s, &[]);
    let again = find(&token, s, &[]);
    assert_eq!(all, again);
    assert!(all.contains(&first));
    assert_eq!(
        fake.count("list"),
        1,
        "the second listing comes from the cache"
    );
    assert_eq!(fake.count("attributes b"), 1);
}

/// With `cacheTtlSecs` 0 every search asks the TSB again, the handles stay the same, and a key
/// removed on the TSB disappears with its handle.
#[test]
fn expired_cache_refreshes_and_forgets_removed_keys() {
    let fake = FakeTsb::new();
    fake.add_key("a", false);
    fake.add_key("b", false);
    let token = token_with(&fake, json!({"cacheTtlSecs": 0}));
    let s = session(&token);
    let a = private_key(&token, s, "a");
    let b = private_key(&token, s, "b");
    assert_eq!(private_key(&token, s, "a"), a);
    assert_eq!(fake.count("attributes a"), 2, "no cache with a TTL of 0");
    fake.remove_key("b");
    let all = find(&token, s, &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY))]);
    assert_eq!(all, vec![a]);
    // The key list expires too: a key created on the TSB since is listed.
    fake.add_key("c", false);
    let all = find(&token, s, &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY))]);
    assert_eq!(all.len(), 2);
    assert!(all.contains(&a) && all.contains(&private_key(&token, s, "c")));
    assert_eq!(
        token
            .attribute_values(s, b, &[CKA_LABEL])
            .unwrap_err()
            .code(),
        CKR_OBJECT_HANDLE_INVALID
    );
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A key that needs approvals: `C_Sign` files one request, waits, and returns the executed
/// result (verified by OpenSSL).
#[test]
fn approval_wait_returns_the_executed_signature() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("ska", true);
    let token = Arc::new(token_with(&fake, json!({})));
    let s = session(&token);
    let key = private_key(&token, s, "ska");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let signing = {
        let token = token.clone();
        std::thread::spawn(move || token.sign(s, b"approve me", Some(64)))
    };
    let id = wait_for("the approval request", || fake.request_ids().pop());
    wait_for("a poll", || (fake.count("poll ") > 0).then_some(()));
    // The approvers see what is signed (TSB contract, "Signing": metaData).
    let meta = fake.request_metadata(&id).expect("metaData");
    assert_eq!(meta["keyLabel"], "ska");
    assert_eq!(meta["signatureAlgorithm"], "SHA256_WITH_ECDSA");
    assert_eq!(meta["type"], "Sign");
    assert_eq!(meta["pid"], std::process::id());
    fake.approve(&id);
    let sig = signature(signing.join().unwrap().unwrap());
    assert!(openssl_verifies(&signer, b"approve me", &sig));
    assert_eq!(fake.count("file ska"), 1, "one request per signature");
    assert_eq!(fake.count("sign ska"), 0, "never the synchronous endpoint");
}

/// PKCS#11 v3.0 §5.17 C_SessionCancel: a waiting `C_Sign` returns `CKR_FUNCTION_CANCELED`, and
/// the request is cancelled on the TSB so nobody approves it.
#[test]
fn session_cancel_ends_an_approval_wait_and_cancels_the_request() {
    let fake = FakeTsb::new();
    fake.add_key("ska", true);
    let token = Arc::new(token_with(&fake, json!({})));
    let s = session(&token);
    let key = private_key(&token, s, "ska");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let signing = {
        let token = token.clone();
        std::thread::spawn(move || token.sign(s, b"never approved", Some(64)))
    };
    let id = wait_for("the approval request", || fake.request_ids().pop());
    token.session_cancel(s, CKF_SIGN).unwrap();
    let err = signing.join().unwrap().unwrap_err();
    assert_eq!(err.code(), CKR_FUNCTION_CANCELED);
    assert_eq!(
        fake.request_state(&id),
        Some(crate::tsb::RequestState::Cancelled)
    );
    assert!(fake.calls().contains(&format!("cancel {id}")));
}

/// §5.7 C_Login with `pinIs: token`: the PIN is the JWT, checked against the TSB; a wrong one is
/// `CKR_PIN_INCORRECT`, a right one is used for later calls.
#[test]
fn login_with_the_jwt_as_pin() {
    let fake = FakeTsb::new();
    *fake.good_jwt.lock() = Some("right.jwt.value".into());
    let token = token_with(&fake, json!({"pinIs": "token"}));
    let s = session(&token);
    assert_eq!(
        token.login(s, CKU_USER, b"wrong.jwt").unwrap_err().code(),
        CKR_PIN_INCORRECT
    );
    assert!(fake.login_bearer.lock().is_none());
    token.login(s, CKU_USER, b"right.jwt.value").unwrap();
    assert_eq!(fake.login_bearer.lock().as_deref(), Some("right.jwt.value"));
    assert_eq!(
        token
            .login(s, CKU_USER, b"right.jwt.value")
            .unwrap_err()
            .code(),
        CKR_USER_ALREADY_LOGGED_IN
    );
}
