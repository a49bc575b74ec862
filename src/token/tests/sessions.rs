//! Slot, token, session and login state (PKCS#11 v2.40 §5.5 - §5.7, v3.0 §5.6 C_SessionCancel).

use cryptoki_sys::*;
use serde_json::json;

use super::fake::FakeTsb;
use super::{ecdsa_sha256, private_key, session, token_with};
use crate::token::{Mechanism, SLOT_ID};

/// §5.5 C_GetSlotInfo / C_GetTokenInfo: the configured label and serial, the one slot, and
/// the session counts.
#[test]
fn slot_and_token_info() {
    let fake = FakeTsb::new();
    let token = token_with(
        &fake,
        json!({"tokenLabel": "my-token", "tokenSerial": "SER1"}),
    );
    assert_eq!(token.token_label(), "my-token");
    assert_eq!(token.serial(), "SER1");
    assert!(token.slot_description().contains("127.0.0.1:9"));
    assert_eq!(token.slot_info(SLOT_ID).unwrap(), CKF_TOKEN_PRESENT);
    assert_eq!(
        token.slot_info(SLOT_ID + 1).unwrap_err().code(),
        CKR_SLOT_ID_INVALID
    );
    assert_eq!(
        token.token_info(SLOT_ID + 1).unwrap_err().code(),
        CKR_SLOT_ID_INVALID
    );
    let (flags, all, rw) = token.token_info(SLOT_ID).unwrap();
    assert_eq!(flags, CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED);
    assert_eq!((all, rw), (0, 0));
    let ro = token
        .open_session(SLOT_ID, CKF_SERIAL_SESSION, None)
        .unwrap();
    let rw1 = session(&token);
    let rw2 = session(&token);
    assert_eq!(token.token_info(SLOT_ID).unwrap().1, 3);
    assert_eq!(token.token_info(SLOT_ID).unwrap().2, 2);
    token.close_session(rw1).unwrap();
    assert_eq!(token.token_info(SLOT_ID).unwrap().1, 2);
    assert_eq!(
        token.close_session(rw1).unwrap_err().code(),
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(
        token.close_all_sessions(SLOT_ID + 1).unwrap_err().code(),
        CKR_SLOT_ID_INVALID
    );
    token.close_all_sessions(SLOT_ID).unwrap();
    assert_eq!(token.token_info(SLOT_ID).unwrap(), (flags, 0, 0));
    for s in [ro, rw2] {
        assert_eq!(
            token.session_info(s).unwrap_err().code(),
            CKR_SESSION_HANDLE_INVALID
        );
    }
}

/// Without `tokenSerial` the serial is 16 upper-case hex digits of SHA-256(first TSB URL).
#[test]
fn default_serial_is_derived_from_the_tsb_url() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let expected = hex::encode_upper(&openssl::sha::sha256(b"http://127.0.0.1:9")[..8]);
    assert_eq!(token.serial(), expected);
}

/// §5.6 C_OpenSession: serial sessions only; C_GetSessionInfo reports read-only/read-write
/// and public/user states.
#[test]
fn session_states_follow_read_write_and_login() {
    let fake = FakeTsb::new();
    *fake.good_jwt.lock() = Some("jwt".into());
    let token = token_with(&fake, json!({"pinIs": "token"}));
    assert_eq!(
        token
            .open_session(SLOT_ID, CKF_RW_SESSION, None)
            .unwrap_err()
            .code(),
        CKR_SESSION_PARALLEL_NOT_SUPPORTED
    );
    assert_eq!(
        token
            .open_session(SLOT_ID + 1, CKF_SERIAL_SESSION, None)
            .unwrap_err()
            .code(),
        CKR_SLOT_ID_INVALID
    );
    let ro = token
        .open_session(SLOT_ID, CKF_SERIAL_SESSION, None)
        .unwrap();
    let rw = session(&token);
    assert_ne!(ro, rw);
    assert_eq!(
        token.session_info(ro).unwrap(),
        (CKS_RO_PUBLIC_SESSION, CKF_SERIAL_SESSION)
    );
    assert_eq!(
        token.session_info(rw).unwrap(),
        (CKS_RW_PUBLIC_SESSION, CKF_SERIAL_SESSION | CKF_RW_SESSION)
    );
    // §5.7: the token needs a login; the user type must be known.
    assert_eq!(
        token.token_info(SLOT_ID).unwrap().0 & CKF_LOGIN_REQUIRED,
        CKF_LOGIN_REQUIRED
    );
    assert_eq!(
        token.login(ro, 7, b"jwt").unwrap_err().code(),
        CKR_USER_TYPE_INVALID
    );
    assert_eq!(token.logout(ro).unwrap_err().code(), CKR_USER_NOT_LOGGED_IN);
    token.login(ro, CKU_USER, b"jwt").unwrap();
    assert_eq!(token.session_info(ro).unwrap().0, CKS_RO_USER_FUNCTIONS);
    assert_eq!(token.session_info(rw).unwrap().0, CKS_RW_USER_FUNCTIONS);
    token.logout(rw).unwrap();
    assert_eq!(token.session_info(ro).unwrap().0, CKS_RO_PUBLIC_SESSION);
    assert!(fake.login_bearer.lock().is_none(), "logout drops the JWT");
    assert_eq!(token.logout(rw).unwrap_err().code(), CKR_USER_NOT_LOGGED_IN);
    assert_eq!(
        token.login(999_999, CKU_USER, b"jwt").unwrap_err().code(),
        CKR_SESSION_HANDLE_INVALID
    );
}

/// §5.7 C_Login as CKU_SO: refused while a read-only session exists, while the user is logged
/// in, and otherwise with CKR_PIN_INCORRECT (this token has no SO).
#[test]
fn security_officer_login_rules() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let ro = token
        .open_session(SLOT_ID, CKF_SERIAL_SESSION, None)
        .unwrap();
    let rw = session(&token);
    assert_eq!(
        token.login(rw, CKU_SO, b"x").unwrap_err().code(),
        CKR_SESSION_READ_ONLY_EXISTS
    );
    token.close_session(ro).unwrap();
    assert_eq!(
        token.login(rw, CKU_SO, b"x").unwrap_err().code(),
        CKR_PIN_INCORRECT
    );
    token.login(rw, CKU_USER, b"anything").unwrap();
    assert_eq!(
        token.login(rw, CKU_SO, b"x").unwrap_err().code(),
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN
    );
    // pinIs none: no login required, and private keys are not private objects.
    assert_eq!(token.token_info(SLOT_ID).unwrap().0 & CKF_LOGIN_REQUIRED, 0);
}

/// §5.7 CKU_CONTEXT_SPECIFIC needs an operation in the session and a logged-in user.
#[test]
fn context_specific_login_needs_an_operation_and_a_user() {
    let fake = FakeTsb::new();
    fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    assert_eq!(
        token
            .login(s, CKU_CONTEXT_SPECIFIC, b"x")
            .unwrap_err()
            .code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    let key = private_key(&token, s, "ec");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    assert_eq!(
        token
            .login(s, CKU_CONTEXT_SPECIFIC, b"x")
            .unwrap_err()
            .code(),
        CKR_USER_NOT_LOGGED_IN
    );
    token.login(s, CKU_USER, b"x").unwrap();
    token.login(s, CKU_CONTEXT_SPECIFIC, b"x").unwrap();
    // A verification in progress is an operation too.
    let s2 = session(&token);
    assert_eq!(
        token
            .login(s2, CKU_CONTEXT_SPECIFIC, b"x")
            .unwrap_err()
            .code(),
        CKR_OPERATION_NOT_INITIALIZED
    );
    let public = super::find(
        &token,
        s2,
        &[
            (CKA_CLASS, super::ulong(CKO_PUBLIC_KEY)),
            (CKA_LABEL, b"ec".to_vec()),
        ],
    );
    token.verify_init(s2, &ecdsa_sha256(), public[0]).unwrap();
    token.login(s2, CKU_CONTEXT_SPECIFIC, b"x").unwrap();
}

/// `pinIs: apiKey`: the PIN is checked as a KeyOperationToken key; the fake refuses every key,
/// which is CKR_PIN_INCORRECT and sets CKF_USER_PIN_COUNT_LOW until a good login.
#[test]
fn wrong_pin_sets_user_pin_count_low() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({"pinIs": "apiKey"}));
    let s = session(&token);
    let (flags, _, _) = token.token_info(SLOT_ID).unwrap();
    assert_eq!(flags & CKF_USER_PIN_COUNT_LOW, 0);
    assert_eq!(
        token.login(s, CKU_USER, b"bad key").unwrap_err().code(),
        CKR_PIN_INCORRECT
    );
    assert_eq!(fake.count("check-api-key"), 1);
    let (flags, _, _) = token.token_info(SLOT_ID).unwrap();
    assert_eq!(flags & CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_COUNT_LOW);
    assert_eq!(
        token.login(s, CKU_USER, &[0xff, 0xfe]).unwrap_err().code(),
        CKR_PIN_INCORRECT,
        "a PIN that is not UTF-8"
    );

    // pinIs token: a good login clears the flag.
    *fake.good_jwt.lock() = Some("good".into());
    let token = token_with(&fake, json!({"pinIs": "token"}));
    let s = session(&token);
    token.login(s, CKU_USER, b"bad").unwrap_err();
    assert_ne!(
        token.token_info(SLOT_ID).unwrap().0 & CKF_USER_PIN_COUNT_LOW,
        0
    );
    token.login(s, CKU_USER, b"good").unwrap();
    assert_eq!(
        token.token_info(SLOT_ID).unwrap().0 & CKF_USER_PIN_COUNT_LOW,
        0
    );
}

/// PKCS#11 v2.40 §5.5 reserves CKF_USER_PIN_COUNT_LOW for "an incorrect user login PIN": a
/// login the TSB could not judge (503, an HSM error: CKR_DEVICE_ERROR) neither sets the flag nor
/// clears one a wrong PIN set.
#[test]
fn a_login_failing_for_another_reason_leaves_user_pin_count_low_alone() {
    for pin_is in ["token", "apiKey"] {
        let fake = FakeTsb::new();
        *fake.good_jwt.lock() = Some("good".into());
        let token = token_with(&fake, json!({ "pinIs": pin_is }));
        let s = session(&token);
        let count_low = || token.token_info(SLOT_ID).unwrap().0 & CKF_USER_PIN_COUNT_LOW;
        *fake.login_error.lock() = Some((503, 701));
        assert_eq!(
            token.login(s, CKU_USER, b"good").unwrap_err().code(),
            CKR_DEVICE_ERROR,
            "{pin_is}"
        );
        assert_eq!(
            count_low(),
            0,
            "{pin_is}: a TSB that cannot answer is no wrong PIN"
        );
        assert!(token.session_info(s).unwrap().0 == CKS_RW_PUBLIC_SESSION);

        // A wrong PIN sets the flag; a later failure for another reason leaves it set.
        *fake.login_error.lock() = None;
        token.login(s, CKU_USER, b"bad").unwrap_err();
        assert_eq!(count_low(), CKF_USER_PIN_COUNT_LOW, "{pin_is}");
        *fake.login_error.lock() = Some((503, 701));
        token.login(s, CKU_USER, b"good").unwrap_err();
        assert_eq!(count_low(), CKF_USER_PIN_COUNT_LOW, "{pin_is}");
    }
}

/// With a PIN required, private keys are private objects: invisible and unusable before
/// C_Login (§4.4 CKA_PRIVATE, §5.13 CKR_USER_NOT_LOGGED_IN), visible after.
#[test]
fn private_keys_need_a_login_when_a_pin_is_required() {
    let fake = FakeTsb::new();
    fake.add_key("ec", false);
    *fake.good_jwt.lock() = Some("jwt".into());
    let token = token_with(&fake, json!({"pinIs": "token"}));
    let s = session(&token);
    let private = [
        (CKA_CLASS, super::ulong(CKO_PRIVATE_KEY)),
        (CKA_LABEL, b"ec".to_vec()),
    ];
    assert!(super::find(&token, s, &private).is_empty());
    let public = super::find(&token, s, &[(CKA_LABEL, b"ec".to_vec())]);
    assert_eq!(public.len(), 1, "only the public key");
    assert_eq!(
        token
            .attribute_values(s, public[0], &[CKA_PRIVATE])
            .unwrap(),
        vec![crate::token::attributes::AttrValue::Bytes(vec![CK_FALSE])]
    );
    token.login(s, CKU_USER, b"jwt").unwrap();
    let key = private_key(&token, s, "ec");
    assert_eq!(
        token.attribute_values(s, key, &[CKA_PRIVATE]).unwrap(),
        vec![crate::token::attributes::AttrValue::Bytes(vec![CK_TRUE])]
    );
    token.logout(s).unwrap();
    assert_eq!(
        token
            .attribute_values(s, key, &[CKA_LABEL])
            .unwrap_err()
            .code(),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert_eq!(
        token.sign_init(s, &ecdsa_sha256(), key).unwrap_err().code(),
        CKR_USER_NOT_LOGGED_IN
    );
}

/// §5.15: no RNG; the session is checked first, then the arguments.
#[test]
fn random_is_not_supported() {
    let fake = FakeTsb::new();
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    assert_eq!(token.random(s, true).unwrap_err().code(), CKR_RANDOM_NO_RNG);
    assert_eq!(
        token.random(s, false).unwrap_err().code(),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        token.random(s + 1000, true).unwrap_err().code(),
        CKR_SESSION_HANDLE_INVALID
    );
}

/// v3.0 §5.6 C_SessionCancel ends exactly the operations its flags name.
#[test]
fn session_cancel_ends_the_named_operations_only() {
    let fake = FakeTsb::new();
    fake.add_key("ec", false);
    let token = token_with(&fake, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, "ec");
    let public = super::find(
        &token,
        s,
        &[
            (CKA_CLASS, super::ulong(CKO_PUBLIC_KEY)),
            (CKA_LABEL, b"ec".to_vec()),
        ],
    )[0];
    let start_all = || {
        token.sign_init(s, &ecdsa_sha256(), key).unwrap();
        token.verify_init(s, &ecdsa_sha256(), public).unwrap();
        token.find_objects_init(s, &[]).unwrap();
        token.digest_init(s, &Mechanism::new(CKM_SHA256)).unwrap();
    };
    // (sign, verify, find, digest) still active after cancelling `flags`.
    let active = || {
        let ops = token.sessions.get(s).unwrap();
        let ops = ops.ops.lock();
        (
            ops.sign.is_some(),
            ops.verify.is_some(),
            ops.find.is_some(),
            ops.digest.is_some(),
        )
    };
    let end_all = || token.session_cancel(s, CKF_SIGN | CKF_VERIFY | CKF_FIND_OBJECTS | CKF_DIGEST);
    start_all();
    token.session_cancel(s, CKF_ENCRYPT | CKF_DECRYPT).unwrap();
    assert_eq!(active(), (true, true, true, true));
    for (flag, expected) in [
        (CKF_SIGN, (false, true, true, true)),
        (CKF_VERIFY, (true, false, true, true)),
        (CKF_FIND_OBJECTS, (true, true, false, true)),
        (CKF_DIGEST, (true, true, true, false)),
    ] {
        token.session_cancel(s, flag).unwrap();
        assert_eq!(active(), expected, "flag {flag:#x}");
        end_all().unwrap();
        assert_eq!(active(), (false, false, false, false));
        start_all();
    }
    end_all().unwrap();
    assert_eq!(
        token.session_cancel(s + 1000, CKF_SIGN).unwrap_err().code(),
        CKR_SESSION_HANDLE_INVALID
    );
}

/// A PIN that is a credential (here the JWT) is never shown in a log line, not even a wrong
/// one; with `pinIs: none` the PIN means nothing and is left alone.
#[test]
fn credential_pins_are_redacted_from_logs() {
    use crate::logging::sanitize;
    let fake = FakeTsb::new();
    *fake.good_jwt.lock() = Some("jwt-core-test-right".into());
    let token = token_with(&fake, json!({"pinIs": "token"}));
    let s = session(&token);
    token
        .login(s, CKU_USER, b"jwt-core-test-wrong")
        .unwrap_err();
    token.login(s, CKU_USER, b"jwt-core-test-right").unwrap();
    for pin in ["jwt-core-test-wrong", "jwt-core-test-right"] {
        assert_eq!(sanitize(&format!("a {pin} b")), "a <redacted> b");
    }
    let plain = token_with(&fake, json!({}));
    let s = session(&plain);
    plain.login(s, CKU_USER, b"pin-core-test-none").unwrap();
    assert_eq!(sanitize("a pin-core-test-none b"), "a pin-core-test-none b");
}

/// The configuration's secrets (here a key password) are never shown in a log line.
#[test]
fn configured_secrets_are_redacted_from_logs() {
    let fake = FakeTsb::new();
    let _token = token_with(&fake, json!({"keyPasswords": {"k": "kp-core-test-secret"}}));
    assert_eq!(
        crate::logging::sanitize("x kp-core-test-secret y"),
        "x <redacted> y"
    );
}
