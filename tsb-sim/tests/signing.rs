//! Every signature algorithm on every matching key type/size, verified with OpenSSL; payload
//! validation and key checks of `/v1/synchronousSign` and `/v1/sign`.

mod common;

use std::sync::OnceLock;

use common::*;
use serde_json::json;
use tsb_sim::{Curve, KeySpec, SimConfig, Simulator};

/// One simulator for the whole file (keys are generated once).
fn sim() -> &'static Simulator {
    static SIM: OnceLock<Simulator> = OnceLock::new();
    SIM.get_or_init(|| {
        let mut cfg = test_config();
        cfg.keys.push(KeySpec::rsa("rsa-3072", 3072));
        cfg.keys.push(KeySpec::rsa("rsa-4096", 4096));
        start(cfg)
    })
}

fn http() -> Http {
    Http::new(&sim().url())
}

const RSA_MESSAGE_ALGS: [&str; 10] = [
    "SHA1_WITH_RSA",
    "SHA224_WITH_RSA",
    "SHA256_WITH_RSA",
    "SHA384_WITH_RSA",
    "SHA512_WITH_RSA",
    "SHA1_WITH_RSA_PSS",
    "SHA224_WITH_RSA_PSS",
    "SHA256_WITH_RSA_PSS",
    "SHA384_WITH_RSA_PSS",
    "SHA512_WITH_RSA_PSS",
];

/// (algorithm, digest length) of the pre-hashed RSA algorithms.
const RSA_DIGEST_ALGS: [(&str, usize); 9] = [
    ("NONESHA1_WITH_RSA", 20),
    ("NONESHA224_WITH_RSA", 28),
    ("NONESHA256_WITH_RSA", 32),
    ("NONESHA384_WITH_RSA", 48),
    ("NONESHA512_WITH_RSA", 64),
    ("NONESHA224_WITH_RSA_PSS", 28),
    ("NONESHA256_WITH_RSA_PSS", 32),
    ("NONESHA384_WITH_RSA_PSS", 48),
    ("NONESHA512_WITH_RSA_PSS", 64),
];

const ECDSA_MESSAGE_ALGS: [&str; 15] = [
    "SHA1_WITH_ECDSA",
    "SHA224_WITH_ECDSA",
    "SHA256_WITH_ECDSA",
    "SHA384_WITH_ECDSA",
    "SHA512_WITH_ECDSA",
    "SHA3224_WITH_ECDSA",
    "SHA3256_WITH_ECDSA",
    "SHA3384_WITH_ECDSA",
    "SHA3512_WITH_ECDSA",
    "SHA256_WITH_ECDSA_DETERMINISTIC",
    "DOUBLE_SHA256_WITH_ECDSA",
    "KECCAK224_WITH_ECDSA",
    "KECCAK256_WITH_ECDSA",
    "KECCAK384_WITH_ECDSA",
    "KECCAK512_WITH_ECDSA",
];

fn message() -> Vec<u8> {
    (0..1000u32).map(|i| (i * 7 + 3) as u8).collect()
}

fn digest(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(0x80))
        .collect()
}

fn check_rsa(label: &str) {
    let http = http();
    let spki = sim().public_key_der(label).unwrap();
    let msg = message();
    for alg in RSA_MESSAGE_ALGS {
        let sig = sign_sync(&http, label, alg, &msg);
        assert!(verify(&spki, alg, &msg, &sig, false), "{label} {alg}");
        let mut other = msg.clone();
        other[0] ^= 1;
        assert!(
            !verify(&spki, alg, &other, &sig, false),
            "{label} {alg} wrong msg"
        );
    }
    for (alg, len) in RSA_DIGEST_ALGS {
        let d = digest(len);
        let sig = sign_sync(&http, label, alg, &d);
        assert!(verify(&spki, alg, &d, &sig, false), "{label} {alg}");
    }
    // NONE_WITH_RSA: a caller-made DigestInfo (SHA-256), and the maximum length k-11.
    let mut digest_info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    digest_info.extend(digest(32));
    let sig = sign_sync(&http, label, "NONE_WITH_RSA", &digest_info);
    assert!(verify(&spki, "NONE_WITH_RSA", &digest_info, &sig, false));
    assert!(verify(
        &spki,
        "NONESHA256_WITH_RSA",
        &digest(32),
        &sig,
        false
    ));
    let k = openssl::pkey::PKey::public_key_from_der(&spki)
        .unwrap()
        .size();
    let max = digest(k - 11);
    let sig = sign_sync(&http, label, "NONE_WITH_RSA", &max);
    assert_eq!(sig.len(), k);
    assert!(verify(&spki, "NONE_WITH_RSA", &max, &sig, false));
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body(label, "NONE_WITH_RSA", &digest(k - 10)),
    );
    assert_eq!((r.status, r.error_code()), (400, 612), "{}", r.body);
}

#[test]
fn rsa_2048_all_algorithms() {
    check_rsa("rsa-2048");
}

#[test]
fn rsa_3072_all_algorithms() {
    check_rsa("rsa-3072");
}

#[test]
fn rsa_4096_all_algorithms() {
    check_rsa("rsa-4096");
}

fn check_ec(label: &str, curve: Curve) {
    let http = http();
    let spki = sim().public_key_der(label).unwrap();
    let field = match curve {
        Curve::P256 | Curve::Secp256k1 => 32,
        Curve::P384 => 48,
        Curve::P521 => 66,
    };
    let msg = message();
    for alg in ECDSA_MESSAGE_ALGS {
        for raw in [false, true] {
            let mut body = sign_body(label, alg, &msg);
            if raw {
                body["signRequest"]["signatureType"] = json!("RAW");
            } else if alg == "SHA256_WITH_ECDSA" {
                body["signRequest"]["signatureType"] = json!("DER");
            }
            let r = http.post("/v1/synchronousSign", &body);
            assert_eq!(r.status, 200, "{label} {alg}: {}", r.body);
            let sig = unb64(r.json()["signature"].as_str().unwrap());
            if raw {
                assert_eq!(sig.len(), 2 * field, "{label} {alg} RAW length");
            } else {
                assert_eq!(sig[0], 0x30, "{label} {alg} is DER");
            }
            assert!(
                verify(&spki, alg, &msg, &sig, raw),
                "{label} {alg} raw={raw}"
            );
            assert!(
                !verify(&spki, alg, b"other message", &sig, raw),
                "{label} {alg} verifies another message"
            );
        }
    }
    // NONE_WITH_ECDSA: short (left-padded), exact and long (truncated) digests.
    for len in [1, 10, 20, 28, 32, 48, 64, 66, 100] {
        let d = digest(len);
        let sig = sign_sync(&http, label, "NONE_WITH_ECDSA", &d);
        assert!(
            verify(&spki, "NONE_WITH_ECDSA", &d, &sig, false),
            "{label} NONE_WITH_ECDSA {len} bytes"
        );
    }
}

#[test]
fn ecdsa_p256_all_algorithms() {
    check_ec("ec-p256", Curve::P256);
}

#[test]
fn ecdsa_p384_all_algorithms() {
    check_ec("ec-p384", Curve::P384);
}

#[test]
fn ecdsa_p521_all_algorithms() {
    check_ec("ec-p521", Curve::P521);
}

#[test]
fn ed25519_eddsa() {
    let http = http();
    let spki = sim().public_key_der("ed25519").unwrap();
    for msg in [Vec::new(), b"abc".to_vec(), message()] {
        let sig = sign_sync(&http, "ed25519", "EDDSA", &msg);
        assert_eq!(sig.len(), 64);
        assert!(verify(&spki, "EDDSA", &msg, &sig, false));
        assert!(!verify(&spki, "EDDSA", b"x", &sig, false));
    }
}

#[test]
fn algorithm_not_fitting_the_key_is_607() {
    let http = http();
    for (key, alg) in [
        ("rsa-2048", "SHA256_WITH_ECDSA"),
        ("rsa-2048", "EDDSA"),
        ("ec-p256", "SHA256_WITH_RSA"),
        ("ec-p256", "SHA256_WITH_RSA_PSS"),
        ("ec-p256", "EDDSA"),
        ("ed25519", "SHA256_WITH_ECDSA"),
        ("ed25519", "NONE_WITH_RSA"),
        ("rsa-2048", "SHA256_WITH_DSA"),
        ("rsa-2048", "NONE_WITH_RSA_PSS"),
    ] {
        let r = http.post("/v1/synchronousSign", &sign_body(key, alg, b"data"));
        assert_eq!(r.status, 400, "{key} {alg}");
        assert_eq!(r.error_code(), 607, "{key} {alg}: {}", r.body);
        assert_eq!(
            r.json()["reason"],
            "res.error.algorithm.not.supported.by.key"
        );
    }
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("ec-p256", "SHA256withECDSA", b"x"),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (400, 600),
        "unknown name: {}",
        r.body
    );
    let mut body = sign_body("ec-p256", "SHA256_WITH_ECDSA", b"x");
    body["signRequest"]["signatureType"] = json!("ETH");
    let r = http.post("/v1/synchronousSign", &body);
    assert_eq!(r.error_code(), 607);
}

#[test]
fn invalid_payloads_are_612() {
    let http = http();
    for (key, alg, payload) in [
        ("rsa-2048", "NONESHA256_WITH_RSA", digest(31)),
        ("rsa-2048", "NONESHA256_WITH_RSA", digest(33)),
        ("rsa-2048", "NONESHA1_WITH_RSA", digest(32)),
        ("rsa-2048", "NONESHA512_WITH_RSA_PSS", digest(32)),
        ("rsa-2048", "NONE_WITH_RSA", digest(246)),
        ("ec-p256", "NONE_WITH_ECDSA", Vec::new()),
    ] {
        let r = http.post("/v1/synchronousSign", &sign_body(key, alg, &payload));
        assert_eq!((r.status, r.error_code()), (400, 612), "{alg}: {}", r.body);
        assert_eq!(r.json()["reason"], "res.error.invalid.payload");
    }
    let mut body = sign_body("ec-p256", "SHA256_WITH_ECDSA", b"x");
    body["signRequest"]["payload"] = json!("not base64!!");
    let r = http.post("/v1/synchronousSign", &body);
    assert_eq!((r.status, r.error_code()), (400, 612));
}

#[test]
fn payload_limit_is_64_kib() {
    let http = http();
    let spki = sim().public_key_der("ec-p256").unwrap();
    let max = vec![0x5au8; 65536];
    let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", &max);
    assert!(verify(&spki, "SHA256_WITH_ECDSA", &max, &sig, false));
    let over = vec![0x5au8; 65537];
    for endpoint in ["/v1/synchronousSign", "/v1/sign"] {
        let r = http.post(endpoint, &sign_body("ec-p256", "SHA256_WITH_ECDSA", &over));
        assert_eq!((r.status, r.error_code()), (400, 612), "{endpoint}");
        assert!(r.json()["message"].as_str().unwrap().contains("65536"));
    }
}

#[test]
fn keys_that_cannot_sign_are_614() {
    let http = http();
    for key in ["decrypt-only-rsa", "blocked-ec-p256", "aes-256"] {
        let alg = if key.contains("rsa") {
            "SHA256_WITH_RSA"
        } else {
            "SHA256_WITH_ECDSA"
        };
        for endpoint in ["/v1/synchronousSign", "/v1/sign"] {
            let r = http.post(endpoint, &sign_body(key, alg, b"data"));
            assert_eq!((r.status, r.error_code()), (400, 614), "{key} {endpoint}");
            assert_eq!(r.json()["reason"], "res.error.operation.forbidden.for.key");
        }
    }
}

#[test]
fn passwords() {
    let http = http();
    let spki = sim().public_key_der("ec-p256-pw").unwrap();
    let chars: Vec<String> = "secret-pw".chars().map(|c| c.to_string()).collect();
    let mut body = sign_body("ec-p256-pw", "SHA256_WITH_ECDSA", b"pw");
    body["signRequest"]["keyPassword"] = json!(chars);
    let r = http.post("/v1/synchronousSign", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let sig = unb64(r.json()["signature"].as_str().unwrap());
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"pw", &sig, false));

    body["signRequest"]["keyPassword"] = json!(["w", "r", "o", "n", "g"]);
    let r = http.post("/v1/synchronousSign", &body);
    assert_eq!((r.status, r.error_code()), (400, 620));
    assert_eq!(r.json()["reason"], "res.error.key.password.mismatch");
    body["signRequest"]
        .as_object_mut()
        .unwrap()
        .remove("keyPassword");
    let r = http.post("/v1/synchronousSign", &body);
    assert_eq!((r.status, r.error_code()), (400, 620));
    body["signRequest"]["keyPassword"] = json!(["se", "cret-pw"]);
    let r = http.post("/v1/synchronousSign", &body);
    assert_eq!(
        (r.status, r.error_code()),
        (400, 600),
        "multi-char elements"
    );
}

#[test]
fn missing_key_and_bad_requests() {
    let http = http();
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("nope", "SHA256_WITH_ECDSA", b"x"),
    );
    assert_eq!((r.status, r.error_code()), (404, 650));
    assert_eq!(r.json()["reason"], "res.error.key.not.existent");
    let r = http.post_raw("/v1/synchronousSign", "{\"signRequest\": {");
    assert_eq!((r.status, r.error_code()), (400, 621));
    let r = http.post("/v1/synchronousSign", &json!({"payload": "AA=="}));
    assert_eq!((r.status, r.error_code()), (400, 600));
    let r = http.post(
        "/v1/synchronousSign",
        &json!({"signRequest": {"signKeyName": "ec-p256", "signatureAlgorithm": "SHA256_WITH_ECDSA"}}),
    );
    assert_eq!((r.status, r.error_code()), (400, 600), "missing payload");
}

#[test]
fn synchronous_sign_on_ska_key_needs_approval() {
    let http = http();
    let before = sim().requests().len();
    for key in ["ska-ec-p256", "ska-quorum"] {
        let r = http.post(
            "/v1/synchronousSign",
            &sign_body(key, "SHA256_WITH_ECDSA", b"x"),
        );
        assert_eq!((r.status, r.error_code()), (400, 401), "{key}");
        assert_eq!(r.json()["reason"], "res.error.missing.approval");
    }
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("ska-rsa-2048", "SHA256_WITH_RSA", b"x"),
    );
    assert_eq!(r.error_code(), 401);
    // Refused requests are not logged as sign requests.
    assert!(sim()
        .requests()
        .iter()
        .skip(before)
        .all(|r| !r.key.starts_with("ska-")));
}

#[test]
fn async_sign_on_plain_key_executes_at_once() {
    let http = http();
    let spki = sim().public_key_der("ec-p384").unwrap();
    let meta = json!({"time": "2026-01-01T00:00:00Z", "app": "tests", "type": "Sign"});
    let mut body = sign_body("ec-p384", "SHA384_WITH_ECDSA", b"async");
    body["signRequest"]["metaData"] = json!(b64(meta.to_string().as_bytes()));
    body["signRequest"]["metaDataSignature"] = json!("c2ln");
    let id = sign_async(&http, &body);
    let v = http.get(&format!("/v1/request/{id}")).json();
    assert_eq!(v["status"], "EXECUTED");
    assert_eq!(v["id"], id.as_str());
    assert!(v["executionTime"].is_string());
    let sig = unb64(v["result"].as_str().unwrap());
    assert!(verify(&spki, "SHA384_WITH_ECDSA", b"async", &sig, false));
    let rec = sim()
        .requests()
        .into_iter()
        .find(|r| r.id.as_deref() == Some(id.as_str()))
        .unwrap();
    assert_eq!(rec.endpoint, "POST /v1/sign");
    assert_eq!(rec.key, "ec-p384");
    assert_eq!(rec.algorithm, "SHA384_WITH_ECDSA");
    assert_eq!(rec.payload, b"async");
    assert_eq!(rec.meta_data, Some(meta));
    assert_eq!(rec.meta_data_signature.as_deref(), Some("c2ln"));
    assert_eq!(rec.status, "EXECUTED");
}

#[test]
fn sync_requests_are_recorded() {
    let http = http();
    let mut body = sign_body("ed25519", "EDDSA", b"recorded payload");
    body["signRequest"]["metaData"] = json!(b64(b"not json"));
    let r = http.post("/v1/synchronousSign", &body);
    assert_eq!(r.status, 200);
    let rec = sim()
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.payload == b"recorded payload")
        .expect("recorded");
    assert_eq!(rec.id, None);
    assert_eq!(rec.endpoint, "POST /v1/synchronousSign");
    assert_eq!(rec.status, "EXECUTED");
    assert_eq!(rec.meta_data, Some(json!("not json")));
    assert_eq!(
        rec.meta_data_raw.as_deref(),
        Some(b64(b"not json").as_str())
    );
}

#[test]
fn demo_config_keys_sign() {
    // SimConfig::demo() keys exist in the fast test config too (minus the big RSA keys).
    let demo = SimConfig::demo();
    let labels: Vec<&str> = demo.keys.iter().map(|k| k.label.as_str()).collect();
    for l in [
        "rsa-2048",
        "rsa-3072",
        "rsa-4096",
        "ec-p256",
        "ec-p384",
        "ec-p521",
        "ed25519",
        "ec-p256-pw",
        "ska-ec-p256",
        "ska-rsa-2048",
        "ska-quorum",
        "ska-timelock",
        "blocked-ec-p256",
        "decrypt-only-rsa",
        "aes-256",
    ] {
        assert!(labels.contains(&l), "{l}");
    }
    let spki = sim().public_key_der("m/44'/0'/0'").unwrap();
    let sig = sign_sync(&http(), "m/44'/0'/0'", "SHA256_WITH_ECDSA", b"path");
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"path", &sig, false));
}
