//! Password-protected keys (TSB contract: `keyPassword`, error 620): the password comes from
//! `keyPasswords` or, with `pinIs: keyPassword`, from the PIN (docs/configuration.md), and it is
//! sent with every call about the key: attributes, synchronous signatures, approval requests and
//! deletion. A key whose password is missing or wrong is left out, never an error of the search.

use std::sync::Arc;

use cryptoki_sys::*;
use serde_json::json;

use super::fake::FakeTsb;
use super::{
    ecdsa_sha256, find, openssl_verifies, private_key, public_key, session, signature, token_with,
    ulong, wait_for,
};

fn private_keys(token: &crate::token::Token, s: CK_SESSION_HANDLE) -> usize {
    find(token, s, &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY))]).len()
}

/// `keyPasswords`: the right password opens the key for search and signing, synchronously and
/// through an approval request (signatures verified by OpenSSL); without it, or with a wrong
/// one, the key is left out and the other keys are still found.
#[test]
fn key_passwords_open_password_protected_keys() {
    let fake = FakeTsb::new();
    let plain = fake.add_key("plain", false);
    let locked = fake.add_password_key("pw", "core-test-kp-right", false);
    let approved = fake.add_password_key("pw-ska", "core-test-kp-ska", true);

    for passwords in [
        json!({}),
        json!({"pw": "core-test-kp-wrong", "pw-ska": "core-test-kp-wrong"}),
    ] {
        let token = token_with(&fake, json!({"keyPasswords": passwords}));
        let s = session(&token);
        assert_eq!(private_keys(&token, s), 1, "only 'plain' ({passwords})");
        let key = private_key(&token, s, "plain");
        token.sign_init(s, &ecdsa_sha256(), key).unwrap();
        let sig = signature(token.sign(s, b"plain", Some(64)).unwrap());
        assert!(openssl_verifies(&plain, b"plain", &sig));
    }

    let token = Arc::new(token_with(
        &fake,
        json!({"keyPasswords": {"pw": "core-test-kp-right", "pw-ska": "core-test-kp-ska"}}),
    ));
    let s = session(&token);
    assert_eq!(private_keys(&token, s), 3);
    public_key(&token, s, "pw");
    let key = private_key(&token, s, "pw");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let sig = signature(token.sign(s, b"with a password", Some(64)).unwrap());
    assert!(openssl_verifies(&locked, b"with a password", &sig));
    assert_eq!(fake.count("sign pw"), 1);

    // The approval request carries the password too (the TSB refuses to file it otherwise).
    let key = private_key(&token, s, "pw-ska");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let signing = {
        let token = token.clone();
        std::thread::spawn(move || token.sign(s, b"approve me", Some(64)))
    };
    let id = wait_for("the approval request", || fake.request_ids().pop());
    fake.approve(&id);
    let sig = signature(signing.join().unwrap().unwrap());
    assert!(openssl_verifies(&approved, b"approve me", &sig));
}

/// `pinIs: keyPassword` (docs/configuration.md): a wrong PIN is CKR_PIN_INCORRECT (§5.7
/// C_Login) and opens nothing; the right PIN opens the password-protected key, also after a
/// search before the login left it out; `keyPasswords` still wins for the keys it names.
#[test]
fn the_pin_is_the_password_of_keys_without_a_configured_one() {
    let fake = FakeTsb::new();
    fake.add_key("plain", false);
    let locked = fake.add_password_key("pw", "core-test-kp-pin", false);
    let other = fake.add_password_key("other", "core-test-kp-configured", false);
    let token = token_with(
        &fake,
        json!({"pinIs": "keyPassword", "keyPasswords": {"other": "core-test-kp-configured"}}),
    );
    let s = session(&token);
    // Public objects are visible before the login: 'plain' and 'other' (its password is
    // configured), not 'pw'.
    let public = find(&token, s, &[(CKA_CLASS, ulong(CKO_PUBLIC_KEY))]);
    assert_eq!(public.len(), 2);

    assert_eq!(
        token
            .login(s, CKU_USER, b"core-test-kp-not-the-pin")
            .unwrap_err()
            .code(),
        CKR_PIN_INCORRECT
    );
    assert_eq!(private_keys(&token, s), 0, "not logged in");

    token.login(s, CKU_USER, b"core-test-kp-pin").unwrap();
    assert_eq!(private_keys(&token, s), 3);
    let key = private_key(&token, s, "pw");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let sig = signature(token.sign(s, b"pin as password", Some(64)).unwrap());
    assert!(openssl_verifies(&locked, b"pin as password", &sig));
    let key = private_key(&token, s, "other");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let sig = signature(token.sign(s, b"configured", Some(64)).unwrap());
    assert!(openssl_verifies(&other, b"configured", &sig));

    // After C_Logout the PIN is forgotten: the key cannot sign any more.
    token.logout(s).unwrap();
    token.login(s, CKU_USER, b"core-test-kp-pin").unwrap();
    token.logout(s).unwrap();
    assert_eq!(private_keys(&token, s), 0);
}

/// `pinIs: keyPassword`: a listed key that is gone when C_Login checks the PIN (TSB 650) is
/// passed over; the PIN is checked against the next password-protected key.
#[test]
fn a_key_gone_during_the_pin_check_is_passed_over() {
    let fake = FakeTsb::new();
    fake.add_key("a-gone", false);
    let locked = fake.add_password_key("b-pw", "core-test-kp-gone", false);
    fake.label_errors
        .lock()
        .insert("a-gone".to_string(), (404, Some(650)));
    let token = token_with(&fake, json!({"pinIs": "keyPassword"}));
    let s = session(&token);
    token.login(s, CKU_USER, b"core-test-kp-gone").unwrap();
    assert_eq!(fake.count("attributes a-gone"), 1);
    let key = private_key(&token, s, "b-pw");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let sig = signature(token.sign(s, b"after the check", Some(64)).unwrap());
    assert!(openssl_verifies(&locked, b"after the check", &sig));
}
