//! Key management: `POST /v1/key` and `DELETE /v1/key/{label}`. Every signature made with a
//! created key is verified with OpenSSL against the public key the attributes call returns.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tsb_sim::{ApiKeys, AuthConfig, Curve, KeySpec, SimConfig};

fn config() -> SimConfig {
    SimConfig {
        time_scale: 0.01,
        approved_execution_delay_ms: 50,
        keys: vec![KeySpec::ec("configured", Curve::P256)],
        ..SimConfig::default()
    }
}

fn setup() -> (tsb_sim::Simulator, Http) {
    let sim = start(config());
    let http = Http::new(&sim.url());
    (sim, http)
}

fn signing_attributes() -> Value {
    json!({"sign": true, "decrypt": false, "unwrap": false, "extractable": false,
           "sensitive": true, "modifiable": true, "destroyable": true})
}

fn empty_policy() -> Value {
    json!({"ruleUse": null, "ruleBlock": null, "ruleUnblock": null, "ruleModify": null,
           "keyStatus": {"blocked": false}})
}

fn attributes(http: &Http, label: &str) -> Value {
    let r = http.get(&format!("/v1/key/{label}/attributes"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["json"].clone()
}

fn public_key(http: &Http, label: &str) -> Vec<u8> {
    unb64(
        attributes(http, label)["publicKey"]
            .as_str()
            .expect("publicKey"),
    )
}

#[test]
fn creates_every_key_type_and_signs_with_it() {
    let (sim, http) = setup();
    let cases = [
        (
            "new-rsa",
            json!({"algorithm": "RSA", "keySize": 2048}),
            "SHA256_WITH_RSA",
        ),
        (
            "new-p256",
            json!({"algorithm": "EC", "curveOid": "1.2.840.10045.3.1.7"}),
            "SHA256_WITH_ECDSA",
        ),
        (
            "new-p384",
            json!({"algorithm": "EC", "curveOid": "1.3.132.0.34"}),
            "SHA384_WITH_ECDSA",
        ),
        (
            "new-p521",
            json!({"algorithm": "EC", "curveOid": "1.3.132.0.35"}),
            "SHA512_WITH_ECDSA",
        ),
        (
            "new-k256",
            json!({"algorithm": "EC", "curveOid": "1.3.132.0.10"}),
            "SHA256_WITH_ECDSA",
        ),
        (
            "new-ed",
            json!({"algorithm": "ED", "curveOid": "1.3.101.112"}),
            "EDDSA",
        ),
    ];
    for (label, kind, alg) in &cases {
        let mut body = kind.clone();
        body["label"] = json!(label);
        body["attributes"] = signing_attributes();
        body["policy"] = empty_policy();
        let r = http.post("/v1/key", &body);
        assert_eq!(r.status, 201, "{label}: {}", r.body);
        let a = attributes(&http, label);
        assert_eq!(a["algorithm"], kind["algorithm"], "{label}");
        if let Some(oid) = kind.get("curveOid").filter(|_| kind["algorithm"] == "EC") {
            assert_eq!(&a["curveOid"], oid, "{label}");
        }
        if kind["algorithm"] == "RSA" {
            assert_eq!(a["keySize"], 2048);
        }
        assert_eq!(a["attributes"]["extractable"], false);
        assert_eq!(a["attributes"]["destroyable"], true);
        assert_eq!(
            a["policy"]["ruleUse"],
            Value::Null,
            "{label}: {}",
            a["policy"]
        );
        let spki = public_key(&http, label);
        assert_eq!(sim.public_key_der(label).as_deref(), Some(spki.as_slice()));
        let sig = sign_sync(&http, label, alg, b"created on the HSM");
        assert!(
            verify(&spki, alg, b"created on the HSM", &sig, false),
            "{label}"
        );
        assert!(
            !verify(&spki, alg, b"something else", &sig, false),
            "{label}"
        );
    }
    let labels = sim.key_labels();
    for (label, _, _) in &cases {
        assert!(labels.iter().any(|l| l == label), "{label} listed");
    }
    // The two EC keys of one curve are different keys.
    let r = http.post(
        "/v1/key",
        &json!({"label": "new-p256-b", "algorithm": "EC", "curveOid": "1.2.840.10045.3.1.7"}),
    );
    assert_eq!(r.status, 201);
    assert_ne!(
        public_key(&http, "new-p256"),
        public_key(&http, "new-p256-b")
    );
    assert_eq!(sim.counter("POST /v1/key"), 7);
}

#[test]
fn rsa_3072_is_created() {
    let (_sim, http) = setup();
    let r = http.post(
        "/v1/key",
        &json!({"label": "rsa3k", "algorithm": "RSA", "keySize": 3072, "attributes": signing_attributes()}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(attributes(&http, "rsa3k")["keySize"], 3072);
    let spki = public_key(&http, "rsa3k");
    let sig = sign_sync(&http, "rsa3k", "SHA384_WITH_RSA_PSS", b"m");
    assert!(verify(&spki, "SHA384_WITH_RSA_PSS", b"m", &sig, false));
}

#[test]
fn duplicate_labels_and_bad_requests_are_refused() {
    let (sim, http) = setup();
    let body = json!({"label": "dup", "algorithm": "ED"});
    assert_eq!(http.post("/v1/key", &body).status, 201);
    let before = public_key(&http, "dup");
    let r = http.post("/v1/key", &body);
    assert_eq!((r.status, r.error_code()), (400, 608), "{}", r.body);
    assert_eq!(r.json()["reason"], "res.error.key.already.existing");
    assert_eq!(
        public_key(&http, "dup"),
        before,
        "the existing key is untouched"
    );
    let r = http.post(
        "/v1/key",
        &json!({"label": "configured", "algorithm": "ED"}),
    );
    assert_eq!((r.status, r.error_code()), (400, 608));

    for bad in [
        json!({"algorithm": "ED"}),
        json!({"label": "x", "algorithm": "RSA", "keySize": 1024}),
        json!({"label": "x", "algorithm": "RSA"}),
        json!({"label": "x", "algorithm": "EC"}),
        json!({"label": "x", "algorithm": "EC", "curveOid": "1.3.132.0.33"}),
        json!({"label": "x", "algorithm": "ED", "curveOid": "1.3.101.113"}),
        json!({"label": "x", "algorithm": "AES", "keySize": 256}),
        json!({"label": "x", "algorithm": "ED", "attributes": {"teleport": true}}),
        json!({"label": "x", "algorithm": "ED", "password": ["ab", "c"]}),
        json!({"label": "x", "algorithm": "ED", "policy": {"ruleUse": {"tokens": [
            {"name": "t", "timelock": 0, "timeout": 90, "groups": []}]}}}),
        json!({"label": "x", "algorithm": "ED", "policy": {"ruleUse": {"tokens": [
            {"name": "t", "groups": [{"name": "g", "quorum": 3, "approvals": [
                {"type": "public_key", "name": "alice", "value": "QUJD"}]}]}]}}}),
        json!({"label": "x", "algorithm": "ED", "policy": {"ruleUse": {"tokens": [
            {"name": "t", "groups": [{"name": "g", "quorum": 1, "approvals": [
                {"type": "fingerprint", "name": "alice", "value": "QUJD"}]}]}]}}}),
        json!({"label": "x", "algorithm": "ED", "keySize": "big"}),
    ] {
        let r = http.post("/v1/key", &bad);
        assert_eq!((r.status, r.error_code()), (400, 600), "{bad}: {}", r.body);
    }
    let r = http.post_raw("/v1/key", "{\"label\":");
    assert_eq!((r.status, r.error_code()), (400, 621));
    assert!(
        !sim.key_labels().iter().any(|l| l == "x"),
        "nothing was created"
    );
}

#[test]
fn password_is_stored_and_enforced() {
    let (_sim, http) = setup();
    let r = http.post(
        "/v1/key",
        &json!({"label": "pw", "algorithm": "EC", "curveOid": "1.3.132.0.34",
                "password": ["s", "3", "c"], "attributes": signing_attributes()}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = http.get("/v1/key/pw/attributes");
    assert_eq!(r.error_code(), 620);
    let r = http.post(
        "/v1/key/attributes",
        &json!({"label": "pw", "password": ["x"]}),
    );
    assert_eq!(r.error_code(), 620);
    let r = http.post(
        "/v1/key/attributes",
        &json!({"label": "pw", "password": ["s", "3", "c"]}),
    );
    assert_eq!(r.status, 200);
    let spki = unb64(r.json()["json"]["publicKey"].as_str().unwrap());
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("pw", "SHA384_WITH_ECDSA", b"m"),
    );
    assert_eq!(r.error_code(), 620);
    let mut body = sign_body("pw", "SHA384_WITH_ECDSA", b"m");
    body["signRequest"]["keyPassword"] = json!(["s", "3", "c"]);
    let r = http.post("/v1/synchronousSign", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let sig = unb64(r.json()["signature"].as_str().unwrap());
    assert!(verify(&spki, "SHA384_WITH_ECDSA", b"m", &sig, false));
}

#[test]
fn quorum_policy_is_enforced_like_configured_policies() {
    let (sim, http) = setup();
    let policy = json!({
        "ruleUse": {"tokens": [{"name": "main", "timelock": 0, "timeout": 0, "groups": [
            {"name": "board", "quorum": 2, "approvals": [
                {"type": "public_key", "name": "alice", "value": "QUxJQ0U="},
                {"type": "public_key", "name": "bob", "value": "Qk9C"},
                {"type": "onboarded_approver_certificate", "name": "carol", "value": null}]}]}]},
        "ruleBlock": null, "ruleUnblock": null, "ruleModify": null,
        "keyStatus": {"blocked": false}});
    let r = http.post(
        "/v1/key",
        &json!({"label": "ska-new", "algorithm": "EC", "curveOid": "1.2.840.10045.3.1.7",
                "attributes": signing_attributes(), "policy": policy}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let a = attributes(&http, "ska-new");
    assert_eq!(
        a["policy"]["ruleUse"], policy["ruleUse"],
        "policy shown as created"
    );
    let spki = unb64(a["publicKey"].as_str().unwrap());

    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("ska-new", "SHA256_WITH_ECDSA", b"m"),
    );
    assert_eq!((r.status, r.error_code()), (400, 401));
    let id = sign_async(&http, &sign_body("ska-new", "SHA256_WITH_ECDSA", b"m"));
    let v = http.get(&format!("/v1/request/{id}")).json();
    assert_eq!(v["status"], "PENDING");
    assert_eq!(v["notYetApprovedBy"], json!(["alice", "bob", "carol"]));
    assert!(sim.approve(&id, "mallory").is_err());
    sim.approve(&id, "alice").unwrap();
    assert_eq!(sim.request_status(&id).as_deref(), Some("PENDING"));
    sim.approve(&id, "carol").unwrap();
    let v = wait_terminal(&http, &id, Duration::from_secs(10));
    assert_eq!(v["status"], "EXECUTED", "{v}");
    let sig = unb64(v["result"].as_str().unwrap());
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"m", &sig, false));
}

#[test]
fn empty_policy_and_no_policy_sign_at_once() {
    let (_sim, http) = setup();
    for (label, policy) in [("with-empty", Some(empty_policy())), ("without", None)] {
        let mut body =
            json!({"label": label, "algorithm": "ED", "attributes": signing_attributes()});
        if let Some(p) = &policy {
            body["policy"] = p.clone();
        }
        assert_eq!(http.post("/v1/key", &body).status, 201);
        let a = attributes(&http, label);
        match &policy {
            Some(_) => assert_eq!(a["policy"]["keyStatus"]["blocked"], false),
            None => assert_eq!(a["policy"], Value::Null),
        }
        let spki = unb64(a["publicKey"].as_str().unwrap());
        let id = sign_async(&http, &sign_body(label, "EDDSA", b"now"));
        let v = http.get(&format!("/v1/request/{id}")).json();
        assert_eq!(v["status"], "EXECUTED", "{label}");
        assert!(verify(
            &spki,
            "EDDSA",
            b"now",
            &unb64(v["result"].as_str().unwrap()),
            false
        ));
    }
    // A blocked key (keyStatus.blocked) cannot sign.
    let mut blocked = empty_policy();
    blocked["keyStatus"]["blocked"] = json!(true);
    let body = json!({"label": "blk", "algorithm": "ED", "policy": blocked});
    assert_eq!(http.post("/v1/key", &body).status, 201);
    let r = http.post("/v1/synchronousSign", &sign_body("blk", "EDDSA", b"m"));
    assert_eq!(r.error_code(), 614);
}

#[test]
fn timelock_of_created_policy_holds() {
    let (sim, http) = setup();
    let policy = json!({"ruleUse": {"tokens": [{"name": "t", "timelock": 60, "timeout": 0,
        "groups": [{"name": "g", "quorum": 1, "approvals": [
            {"type": "public_key", "name": "alice", "value": "QQ=="}]}]}]}});
    let body = json!({"label": "tl", "algorithm": "ED", "policy": policy});
    assert_eq!(http.post("/v1/key", &body).status, 201);
    let id = sign_async(&http, &sign_body("tl", "EDDSA", b"m"));
    sim.approve(&id, "alice").unwrap();
    // timeScale 0.01: 60 s → 600 ms. The record's times show the timelock, independent of how
    // fast this test polls.
    let v = wait_terminal(&http, &id, Duration::from_secs(10));
    assert_eq!(v["status"], "EXECUTED");
    let rec = sim
        .requests()
        .into_iter()
        .find(|r| r.id.as_deref() == Some(&id))
        .unwrap();
    let waited = rec
        .executed_at
        .unwrap()
        .duration_since(rec.created_at)
        .unwrap();
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
}

#[test]
fn delete_keys() {
    let (sim, http) = setup();
    let r = http.delete("/v1/key/nope");
    assert_eq!((r.status, r.error_code()), (404, 650));

    let body = json!({"label": "a/b", "algorithm": "ED", "attributes": {"destroyable": true}});
    assert_eq!(http.post("/v1/key", &body).status, 201);
    let r = http.delete("/v1/key/a%2Fb");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(http.get("/v1/key/a%2Fb/attributes").error_code(), 650);
    assert!(!sim.key_labels().iter().any(|l| l == "a/b"));
    let r = http.delete("/v1/key/a%2Fb");
    assert_eq!(r.error_code(), 650);
    // The label is free again; the new key is a new key.
    assert_eq!(http.post("/v1/key", &body).status, 201);

    let body = json!({"label": "keep", "algorithm": "ED", "attributes": {"destroyable": false}});
    assert_eq!(http.post("/v1/key", &body).status, 201);
    assert_eq!(
        attributes(&http, "keep")["attributes"]["destroyable"],
        false
    );
    let r = http.delete("/v1/key/keep");
    assert_eq!((r.status, r.error_code()), (400, 614), "{}", r.body);
    assert!(sim.key_labels().iter().any(|l| l == "keep"));

    // Configured keys are destroyable by default.
    assert_eq!(http.delete("/v1/key/configured").status, 200);
    assert_eq!(sim.counter("DELETE /v1/key"), 5);
    // DELETE on the collection stays 405.
    assert_eq!(http.delete("/v1/key").status, 405);
}

#[test]
fn creation_and_deletion_need_the_key_management_role() {
    let mut cfg = config();
    cfg.auth = AuthConfig {
        bearer_token: None,
        api_keys: ApiKeys {
            key_management: vec!["km".into()],
            key_operation: vec!["ko".into()],
            service: vec![],
        },
    };
    let sim = start(cfg);
    let body = json!({"label": "k", "algorithm": "ED"});
    for key in [None, Some("ko")] {
        let mut http = Http::new(&sim.url());
        if let Some(k) = key {
            http = http.header("X-API-KEY", k);
        }
        let r = http.post("/v1/key", &body);
        assert_eq!((r.status, r.error_code()), (401, 631), "{key:?}");
        let r = http.delete("/v1/key/configured");
        assert_eq!((r.status, r.error_code()), (401, 631), "{key:?}");
    }
    assert_eq!(sim.key_labels(), ["configured"]);
    let http = Http::new(&sim.url()).header("X-API-KEY", "km");
    assert_eq!(http.post("/v1/key", &body).status, 201);
    assert_eq!(http.delete("/v1/key/configured").status, 200);
    assert_eq!(sim.key_labels(), ["k"]);
}

// ---------------------------------------------------------------------------------------------
// Post-quantum keys (docs/tsb-api.md, "Post-quantum keys"): created through POST /v1/key, the
// public key read from the attributes answer, every signature checked by tests/python/
// pqc_verify.py (dilithium-py, SLH-DSA, hsslms: independent of the simulator's crates).

fn create_pqc(http: &Http, label: &str, algorithm: &str) {
    let body = json!({"label": label, "algorithm": algorithm, "password": null,
                      "attributes": signing_attributes()});
    let r = http.post("/v1/key", &body);
    assert_eq!(r.status, 201, "{algorithm}: {}", r.body);
}

fn flipped(sig: &[u8], at: usize) -> Vec<u8> {
    let mut s = sig.to_vec();
    s[at] ^= 0x01;
    s
}

fn sign_with_context(http: &Http, key: &str, alg: &str, msg: &[u8], ctx: &[u8]) -> Resp {
    let mut body = sign_body(key, alg, msg);
    body["signRequest"]["context"] = json!(b64(ctx));
    http.post("/v1/synchronousSign", &body)
}

#[test]
fn post_quantum_keys_sign_and_verify_independently() {
    let (_sim, http) = setup();
    // (algorithm, verifier family, signatureAlgorithm, algorithmOid, public key, signature)
    let cases = [
        (
            "ML-DSA-44",
            "ML-DSA",
            "DILITHIUM",
            "2.16.840.1.101.3.4.3.17",
            1312,
            2420,
        ),
        (
            "ML-DSA-65",
            "ML-DSA",
            "ML_DSA",
            "2.16.840.1.101.3.4.3.18",
            1952,
            3309,
        ),
        (
            "ML-DSA-87",
            "ML-DSA",
            "DILITHIUM",
            "2.16.840.1.101.3.4.3.19",
            2592,
            4627,
        ),
        (
            "SLH-DSA-SHA2-128s",
            "SLH-DSA",
            "SPHINCS_PLUS",
            "2.16.840.1.101.3.4.3.20",
            32,
            7856,
        ),
        (
            "SLH-DSA-SHAKE-128f",
            "SLH-DSA",
            "SLH_DSA",
            "2.16.840.1.101.3.4.3.27",
            32,
            17088,
        ),
        (
            "SLH-DSA-SHA2-192f",
            "SLH-DSA",
            "SPHINCS_PLUS",
            "2.16.840.1.101.3.4.3.23",
            48,
            35664,
        ),
        ("LMS", "LMS", "LMS", "1.2.840.113549.1.9.16.3.17", 60, 8688),
    ];
    let message = b"firmware image v1.2.3 \x00\x01\x02".repeat(40);
    for (algorithm, family, sig_alg, oid, pk_len, sig_len) in cases {
        let label = format!("pq-{algorithm}");
        create_pqc(&http, &label, algorithm);
        let attrs = attributes(&http, &label);
        let shown = if algorithm == "LMS" {
            "HSS-LMS"
        } else {
            algorithm
        };
        assert_eq!(attrs["algorithm"], shown);
        assert_eq!(attrs["algorithmOid"], oid);
        assert_eq!(attrs["curveOid"], Value::Null);
        assert_eq!(attrs["keySize"], Value::Null);
        let spki = public_key(&http, &label);
        // SubjectPublicKeyInfo: the OID without parameters, then the raw key as the whole
        // BIT STRING (pqc_verify.py checks the DER and the OID).
        let pk_at = spki.len() - pk_len;
        let n = pk_len + 1;
        let header = match n {
            0..=127 => vec![0x03, n as u8, 0],
            128..=255 => vec![0x03, 0x81, n as u8, 0],
            _ => vec![0x03, 0x82, (n >> 8) as u8, n as u8, 0],
        };
        assert_eq!(
            &spki[pk_at - header.len()..pk_at],
            &header[..],
            "{algorithm}"
        );
        if algorithm == "LMS" {
            // HSS, one level, LMS_SHA256_M32_H5 (5), LMOTS_SHA256_N32_W1 (1): the TSB's.
            assert_eq!(
                &spki[pk_at..pk_at + 12],
                &[0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 1]
            );
            assert_eq!(attrs["remainingSignatures"], 32);
        } else {
            assert!(attrs.get("remainingSignatures").is_none(), "{attrs}");
        }

        let paramset = if algorithm == "LMS" { "-" } else { algorithm };
        let sig = sign_sync(&http, &label, sig_alg, &message);
        assert_eq!(sig.len(), sig_len, "{algorithm}");
        assert!(
            pqc_verify(family, paramset, &spki, &message, &sig, b""),
            "{algorithm}: the signature verifies"
        );
        assert!(
            !pqc_verify(
                family,
                paramset,
                &spki,
                &message,
                &flipped(&sig, sig_len / 2),
                b""
            ),
            "{algorithm}: a flipped signature byte is caught"
        );
        assert!(
            !pqc_verify(family, paramset, &spki, &flipped(&message, 3), &sig, b""),
            "{algorithm}: another message is caught"
        );
        // Another key family's signatureAlgorithm does not fit the key: 607.
        let other = if family == "LMS" { "DILITHIUM" } else { "LMS" };
        let r = http.post("/v1/synchronousSign", &sign_body(&label, other, &message));
        assert_eq!(
            (r.status, r.error_code()),
            (400, 607),
            "{algorithm} {other}"
        );
    }
    // LMS: one one-time key used.
    assert_eq!(attributes(&http, "pq-LMS")["remainingSignatures"], 31);
}

#[test]
fn post_quantum_contexts_are_signed_or_refused() {
    let (_sim, http) = setup();
    create_pqc(&http, "ctx-mldsa", "ML-DSA-65");
    create_pqc(&http, "ctx-slh", "SLH-DSA-SHA2-128f");
    create_pqc(&http, "ctx-lms", "LMS");
    let msg = b"release manifest";
    let ctx = b"tsb-pkcs11 test context";
    for (label, family, paramset, alg) in [
        ("ctx-mldsa", "ML-DSA", "ML-DSA-65", "DILITHIUM"),
        ("ctx-slh", "SLH-DSA", "SLH-DSA-SHA2-128f", "SPHINCS_PLUS"),
    ] {
        let spki = public_key(&http, label);
        let r = sign_with_context(&http, label, alg, msg, ctx);
        assert_eq!(r.status, 200, "{}", r.body);
        let sig = unb64(r.json()["signature"].as_str().unwrap());
        assert!(
            pqc_verify(family, paramset, &spki, msg, &sig, ctx),
            "{label}"
        );
        // Signed under the context, the signature does not verify without it (or with another).
        assert!(
            !pqc_verify(family, paramset, &spki, msg, &sig, b""),
            "{label}"
        );
        assert!(
            !pqc_verify(family, paramset, &spki, msg, &sig, b"other"),
            "{label}"
        );
        // An empty context ("") is the empty context.
        let r = sign_with_context(&http, label, alg, msg, b"");
        assert_eq!(r.status, 200, "{}", r.body);
        let sig = unb64(r.json()["signature"].as_str().unwrap());
        assert!(
            pqc_verify(family, paramset, &spki, msg, &sig, b""),
            "{label}"
        );
        // 255 bytes is the most FIPS 204/205 allow.
        let r = sign_with_context(&http, label, alg, msg, &[7u8; 256]);
        assert_eq!(
            (r.status, r.error_code()),
            (400, 600),
            "{label}: {}",
            r.body
        );
        let mut body = sign_body(label, alg, msg);
        body["signRequest"]["context"] = json!("not base64!");
        let r = http.post("/v1/synchronousSign", &body);
        assert_eq!(
            (r.status, r.error_code()),
            (400, 600),
            "{label}: {}",
            r.body
        );
    }
    // LMS and classical keys take no context.
    let r = sign_with_context(&http, "ctx-lms", "LMS", msg, ctx);
    assert_eq!((r.status, r.error_code()), (400, 600), "{}", r.body);
    let r = sign_with_context(&http, "configured", "SHA256_WITH_ECDSA", msg, ctx);
    assert_eq!((r.status, r.error_code()), (400, 600), "{}", r.body);
    // A refused request used no LMS one-time key.
    assert_eq!(attributes(&http, "ctx-lms")["remainingSignatures"], 32);
}

#[test]
fn lms_key_counts_down_and_refuses_when_exhausted() {
    let (_sim, http) = setup();
    create_pqc(&http, "lms-exhaust", "LMS");
    let spki = public_key(&http, "lms-exhaust");
    let mut last = Vec::new();
    for i in 0..32u32 {
        let msg = format!("build {i}");
        let sig = sign_sync(&http, "lms-exhaust", "LMS", msg.as_bytes());
        // HSS: Nspk = 0, then the leaf index q: each one-time key once, in order.
        assert_eq!(&sig[..8], &[&[0u8; 4][..], &i.to_be_bytes()].concat()[..]);
        assert_eq!(
            attributes(&http, "lms-exhaust")["remainingSignatures"],
            31 - i,
            "after signature {i}"
        );
        last = sig;
    }
    assert!(pqc_verify("LMS", "-", &spki, b"build 31", &last, b""));
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("lms-exhaust", "LMS", b"one more"),
    );
    assert_eq!((r.status, r.error_code()), (500, 701), "{}", r.body);
    assert_eq!(r.json()["reason"], "res.error.in.hsm");
    assert!(
        r.json()["message"].as_str().unwrap().contains("exhausted"),
        "{}",
        r.body
    );
    let r = http.post("/v1/sign", &sign_body("lms-exhaust", "LMS", b"one more"));
    assert_eq!((r.status, r.error_code()), (500, 701), "{}", r.body);
    assert_eq!(attributes(&http, "lms-exhaust")["remainingSignatures"], 0);
}

#[test]
fn post_quantum_creation_refusals() {
    let (_sim, http) = setup();
    for (body, what) in [
        (
            json!({"label": "x", "algorithm": "ML-DSA-99", "attributes": signing_attributes()}),
            "unknown parameter set",
        ),
        (
            json!({"label": "x", "algorithm": "DILITHIUM_L2", "attributes": signing_attributes()}),
            "obsolete draft name",
        ),
        (
            json!({"label": "x", "algorithm": "ML-DSA-65", "keySize": 2048,
                "attributes": signing_attributes()}),
            "keySize",
        ),
        (
            json!({"label": "x", "algorithm": "SLH-DSA-SHA2-128f",
                "attributes": {"sign": true, "decrypt": true, "unwrap": false}}),
            "decrypt",
        ),
    ] {
        let r = http.post("/v1/key", &body);
        assert_eq!((r.status, r.error_code()), (400, 600), "{what}: {}", r.body);
    }
    // algorithmOid names the parameter set as well.
    let r = http.post(
        "/v1/key",
        &json!({"label": "by-oid", "algorithmOid": "2.16.840.1.101.3.4.3.22",
                "attributes": signing_attributes()}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        attributes(&http, "by-oid")["algorithm"],
        "SLH-DSA-SHA2-192s"
    );
}

#[test]
fn post_quantum_signature_names_can_be_restricted() {
    for (names, refused, accepted) in [
        (
            tsb_sim::PqcSignatureNames::Documented,
            "ML_DSA",
            "DILITHIUM",
        ),
        (tsb_sim::PqcSignatureNames::Current, "DILITHIUM", "ML_DSA"),
    ] {
        let mut cfg = config();
        cfg.pqc_signature_names = names;
        let sim = start(cfg);
        let http = Http::new(&sim.url());
        create_pqc(&http, "names", "ML-DSA-44");
        let r = http.post("/v1/synchronousSign", &sign_body("names", refused, b"m"));
        assert_eq!(
            (r.status, r.error_code()),
            (400, 600),
            "{names:?}: {}",
            r.body
        );
        sign_sync(&http, "names", accepted, b"m");
    }
}
