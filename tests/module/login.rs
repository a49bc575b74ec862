//! `C_Login` in each `pinIs` mode, checked against the TSB (the simulator with authentication
//! on), and credentials from a Securosys-style configuration.

use tsb_pkcs11_test_support as common;

use common::verify::{self, Hash};
use common::Harness;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use tsb_sim::SimConfig;

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.e30.simulated-jwt-for-tests";

fn sim_with_auth(bearer: Option<&str>, km: &[&str], ko: &[&str]) -> SimConfig {
    let mut cfg = SimConfig::demo();
    cfg.auth.bearer_token = bearer.map(str::to_string);
    cfg.auth.api_keys.key_management = km.iter().map(|s| s.to_string()).collect();
    cfg.auth.api_keys.key_operation = ko.iter().map(|s| s.to_string()).collect();
    cfg
}

fn rv(e: &cryptoki::error::Error) -> String {
    format!("{e:?}")
}

fn private_keys(s: &cryptoki::session::Session) -> usize {
    s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap()
        .len()
}

#[test]
fn pin_is_token_the_pin_is_the_jwt() {
    let h = Harness::with(
        sim_with_auth(Some(JWT), &[], &[]),
        serde_json::json!({ "pinIs": "token" }),
    );
    let info = h.pkcs11.get_token_info(h.slot).unwrap();
    assert!(info.login_required());
    let s = h.session();
    // Before login nothing can be listed (the TSB refuses) and private keys are hidden.
    let err = s
        .login(UserType::User, Some(&AuthPin::new("wrong-jwt".into())))
        .unwrap_err();
    assert!(rv(&err).contains("PinIncorrect"));
    s.login(UserType::User, Some(&AuthPin::new(JWT.into())))
        .expect("right JWT");
    assert!(private_keys(&s) > 5);
    let key = h.private_key(&s, "ec-p256");
    let sig = s.sign(&Mechanism::EcdsaSha256, key, b"hello").unwrap();
    assert!(verify::ecdsa(
        &h.sim_public_key("ec-p256"),
        Hash::Sha256,
        b"hello",
        &sig
    ));
    let err = s
        .login(UserType::User, Some(&AuthPin::new(JWT.into())))
        .unwrap_err();
    assert!(rv(&err).contains("UserAlreadyLoggedIn"));
    s.logout().unwrap();
    assert!(rv(&s.logout().unwrap_err()).contains("UserNotLoggedIn"));
}

#[test]
fn pin_is_api_key_the_pin_is_the_key_operation_token() {
    let h = Harness::with_config(sim_with_auth(None, &["km-1"], &["ko-1", "ko-2"]), |url| {
        serde_json::json!({
            "restApi": url,
            "apiKeys": { "KeyManagementToken": ["km-1"] },
            "pkcs11": { "pinIs": "apiKey" }
        })
    });
    let s = h.session();
    assert_eq!(
        private_keys(&s),
        0,
        "private keys are private objects before login"
    );
    let err = s
        .login(UserType::User, Some(&AuthPin::new("ko-wrong".into())))
        .unwrap_err();
    assert!(rv(&err).contains("PinIncorrect"));
    s.login(UserType::User, Some(&AuthPin::new("ko-2".into())))
        .expect("right API key");
    let key = h.private_key(&s, "rsa-2048");
    let sig = s.sign(&Mechanism::Sha256RsaPkcs, key, b"hello").unwrap();
    assert!(verify::rsa_pkcs1(
        &h.sim_public_key("rsa-2048"),
        Hash::Sha256,
        b"hello",
        &sig
    ));
}

#[test]
fn pin_is_key_password() {
    let h = Harness::with(
        SimConfig::demo(),
        serde_json::json!({ "pinIs": "keyPassword", "keys": ["ec-p256-pw", "ec-p256"] }),
    );
    let s = h.session();
    let err = s
        .login(UserType::User, Some(&AuthPin::new("not-it".into())))
        .unwrap_err();
    assert!(rv(&err).contains("PinIncorrect"), "{err:?}");
    s.login(UserType::User, Some(&AuthPin::new("secret-pw".into())))
        .expect("right password");
    let key = h.private_key(&s, "ec-p256-pw");
    let sig = s.sign(&Mechanism::EcdsaSha256, key, b"hello").unwrap();
    assert!(verify::ecdsa(
        &h.sim_public_key("ec-p256-pw"),
        Hash::Sha256,
        b"hello",
        &sig
    ));
    let last = h.sim.requests().last().cloned().unwrap();
    assert_eq!(last.key, "ec-p256-pw");
}

#[test]
fn pin_is_none_accepts_any_login_and_key_passwords_come_from_the_config() {
    let h = Harness::with(
        SimConfig::demo(),
        serde_json::json!({ "keyPasswords": { "ec-p256-pw": "secret-pw" } }),
    );
    let info = h.pkcs11.get_token_info(h.slot).unwrap();
    assert!(!info.login_required());
    let s = h.session();
    s.login(UserType::User, Some(&AuthPin::new("anything".into())))
        .expect("any PIN");
    let key = h.private_key(&s, "ec-p256-pw");
    let sig = s.sign(&Mechanism::EcdsaSha256, key, b"pw").unwrap();
    assert!(verify::ecdsa(
        &h.sim_public_key("ec-p256-pw"),
        Hash::Sha256,
        b"pw",
        &sig
    ));
}

/// A Securosys Notation plugin `config.json` (JWT + API keys per role, several per role) works
/// unchanged; a rejected first API key (631) rolls over to the next.
#[test]
fn securosys_style_config_with_jwt_and_api_key_rollover() {
    let h = Harness::with_config(sim_with_auth(Some(JWT), &["km-new"], &["ko-new"]), |url| {
        serde_json::json!({
            "restApi": format!("{url}/v1/"),
            "authType": "TOKEN",
            "token": JWT,
            "apiKeys": {
                "KeyManagementToken": ["km-old", "km-new"],
                "KeyOperationToken": ["ko-old", "ko-new"],
                "ServiceToken": []
            },
            "metaData": { "team": "release" }
        })
    });
    let s = h.session();
    let key = h.private_key(&s, "ec-p521");
    let sig = s.sign(&Mechanism::EcdsaSha512, key, b"rollover").unwrap();
    assert!(verify::ecdsa(
        &h.sim_public_key("ec-p521"),
        Hash::Sha512,
        b"rollover",
        &sig
    ));
}

#[test]
fn wrong_configured_credentials_give_user_not_logged_in() {
    let h = Harness::with_config(
        sim_with_auth(Some(JWT), &[], &[]),
        |url| serde_json::json!({ "restApi": url, "authType": "TOKEN", "token": "not-the-jwt" }),
    );
    let s = h.session();
    let err = s
        .find_objects(&[Attribute::Label(b"ec-p256".to_vec())])
        .unwrap_err();
    assert!(rv(&err).contains("UserNotLoggedIn"), "{err:?}");
}
