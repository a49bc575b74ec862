//! The Smart Key Attributes approval state machine through `/v1/sign`, `/v1/request/{id}`,
//! the library API and the `/sim/` control interface.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tsb_sim::SimError;

fn setup() -> (tsb_sim::Simulator, Http) {
    setup_with_delay(100)
}

/// A simulator whose APPROVED → EXECUTED delay is `ms`.
fn setup_with_delay(ms: u64) -> (tsb_sim::Simulator, Http) {
    let mut cfg = test_config();
    cfg.approved_execution_delay_ms = ms;
    let sim = start(cfg);
    let http = Http::new(&sim.url());
    (sim, http)
}

fn status(http: &Http, id: &str) -> serde_json::Value {
    let r = http.get(&format!("/v1/request/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn single_group_approval_then_execution() {
    let (sim, http) = setup_with_delay(800);
    let spki = sim.public_key_der("ska-ec-p256").unwrap();
    let meta = json!({"app": "ska-test", "type": "Sign"});
    let mut body = sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"needs approval");
    body["signRequest"]["metaData"] = json!(b64(meta.to_string().as_bytes()));
    let id = sign_async(&http, &body);

    let v = status(&http, &id);
    assert_eq!(v["status"], "PENDING");
    assert_eq!(v["result"], serde_json::Value::Null);
    assert_eq!(v["executionTime"], serde_json::Value::Null);
    assert_eq!(v["approvedBy"], json!([]));
    assert_eq!(v["notYetApprovedBy"], json!(["alice", "bob"]));
    assert_eq!(v["rejectedBy"], json!([]));
    assert_eq!(sim.request_status(&id).as_deref(), Some("PENDING"));
    let rec = sim
        .requests()
        .into_iter()
        .find(|r| r.id.as_deref() == Some(&id))
        .unwrap();
    assert_eq!(rec.meta_data, Some(meta));
    assert_eq!(rec.status, "PENDING");

    sim.approve(&id, "bob").unwrap();
    let v = status(&http, &id);
    assert_eq!(v["status"], "APPROVED", "waits for the execution delay");
    assert_eq!(v["approvedBy"], json!(["bob"]));
    assert_eq!(v["notYetApprovedBy"], json!(["alice"]));
    assert_eq!(v["result"], serde_json::Value::Null);

    let v = wait_terminal(&http, &id, Duration::from_secs(5));
    assert_eq!(v["status"], "EXECUTED");
    assert!(v["executionTime"].is_string());
    let sig = unb64(v["result"].as_str().unwrap());
    assert!(verify(
        &spki,
        "SHA256_WITH_ECDSA",
        b"needs approval",
        &sig,
        false
    ));
    assert_eq!(sim.request_status(&id).as_deref(), Some("EXECUTED"));
    // Terminal: further approvals are refused.
    assert!(matches!(
        sim.approve(&id, "alice"),
        Err(SimError::Rejected(_))
    ));
}

#[test]
fn rsa_ska_key_executes_with_verifiable_result() {
    let (sim, http) = setup();
    let spki = sim.public_key_der("ska-rsa-2048").unwrap();
    let id = sign_async(
        &http,
        &sign_body("ska-rsa-2048", "SHA256_WITH_RSA_PSS", b"rsa ska"),
    );
    sim.approve(&id, "alice").unwrap();
    let v = wait_terminal(&http, &id, Duration::from_secs(5));
    assert_eq!(v["status"], "EXECUTED");
    let sig = unb64(v["result"].as_str().unwrap());
    assert!(verify(
        &spki,
        "SHA256_WITH_RSA_PSS",
        b"rsa ska",
        &sig,
        false
    ));
}

#[test]
fn ml_dsa_key_signs_through_an_approval() {
    let (sim, http) = setup();
    let spki = sim.public_key_der("mldsa-65-approval").unwrap();
    let msg = b"firmware 2.0 needs alice";
    // The key needs approvals: synchronousSign is refused like for classical keys.
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("mldsa-65-approval", "DILITHIUM", msg),
    );
    assert_eq!((r.status, r.error_code()), (400, 401), "{}", r.body);
    let mut body = sign_body("mldsa-65-approval", "DILITHIUM", msg);
    body["signRequest"]["context"] = json!(b64(b"fw"));
    let id = sign_async(&http, &body);
    let v = status(&http, &id);
    assert_eq!(v["status"], "PENDING");
    assert_eq!(v["result"], serde_json::Value::Null);
    assert_eq!(v["notYetApprovedBy"], json!(["alice"]));
    sim.approve(&id, "alice").unwrap();
    let v = wait_terminal(&http, &id, Duration::from_secs(5));
    assert_eq!(v["status"], "EXECUTED");
    let sig = unb64(v["result"].as_str().unwrap());
    assert_eq!(sig.len(), 3309);
    assert!(pqc_verify("ML-DSA", "ML-DSA-65", &spki, msg, &sig, b"fw"));
    assert!(!pqc_verify("ML-DSA", "ML-DSA-65", &spki, msg, &sig, b""));
}

#[test]
fn two_groups_are_anded() {
    let (sim, http) = setup_with_delay(800);
    let id = sign_async(&http, &sign_body("ska-quorum", "SHA256_WITH_ECDSA", b"q"));
    sim.approve(&id, "alice").unwrap();
    sim.approve(&id, "dave").unwrap();
    assert_eq!(
        status(&http, &id)["status"],
        "PENDING",
        "group A has 1 of 2"
    );
    sim.approve(&id, "alice").unwrap(); // idempotent, still 1 of 2
    assert_eq!(status(&http, &id)["status"], "PENDING");
    sim.approve(&id, "carol").unwrap();
    let v = status(&http, &id);
    assert_eq!(v["status"], "APPROVED");
    assert_eq!(v["approvedBy"], json!(["alice", "dave", "carol"]));
    assert_eq!(v["notYetApprovedBy"], json!(["bob"]));

    let id2 = sign_async(&http, &sign_body("ska-quorum", "SHA256_WITH_ECDSA", b"q2"));
    for a in ["alice", "bob", "carol"] {
        sim.approve(&id2, a).unwrap();
    }
    assert_eq!(
        status(&http, &id2)["status"],
        "PENDING",
        "group B (dave) missing"
    );
    sim.approve(&id2, "dave").unwrap();
    assert_eq!(status(&http, &id2)["status"], "APPROVED");
    assert_eq!(
        wait_terminal(&http, &id2, Duration::from_secs(5))["status"],
        "EXECUTED"
    );
}

#[test]
fn unknown_approver_is_a_clear_error() {
    let (sim, http) = setup();
    let id = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"x"));
    match sim.approve(&id, "mallory") {
        Err(SimError::UnknownApprover(msg)) => {
            assert!(
                msg.contains("mallory") && msg.contains("alice, bob"),
                "{msg}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        sim.reject(&id, "dave"),
        Err(SimError::UnknownApprover(_))
    ));
    assert!(matches!(
        sim.approve("no-such-id", "alice"),
        Err(SimError::NotFound(_))
    ));
    assert_eq!(sim.request_status("no-such-id"), None);
    // Over HTTP: 400 with a message.
    let r = http.post(
        &format!("/sim/requests/{id}/approve"),
        &json!({"approver": "mallory"}),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("not an approver"));
    assert_eq!(status(&http, &id)["status"], "PENDING");
}

#[test]
fn rejection() {
    let (sim, http) = setup();
    let id = sign_async(&http, &sign_body("ska-quorum", "SHA256_WITH_ECDSA", b"r"));
    sim.approve(&id, "alice").unwrap();
    sim.reject(&id, "bob").unwrap();
    let v = status(&http, &id);
    assert_eq!(v["status"], "REJECTED");
    assert_eq!(v["rejectedBy"], json!(["bob"]));
    assert_eq!(v["approvedBy"], json!(["alice"]));
    assert_eq!(v["notYetApprovedBy"], json!(["carol", "dave"]));
    assert_eq!(v["result"], serde_json::Value::Null);
    assert!(sim.approve(&id, "carol").is_err());
    // Over the control interface.
    let id2 = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"r2"));
    let r = http.post(
        &format!("/sim/requests/{id2}/reject"),
        &json!({"approver": "alice"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "REJECTED");
    let r = http.post(
        &format!("/sim/requests/{id2}/approve"),
        &json!({"approver": "bob"}),
    );
    assert_eq!(r.status, 409, "terminal request");
}

#[test]
fn expiry_after_timeout() {
    let (sim, http) = setup();
    // ska-timeout: timeout 60 s × timeScale 0.01 = 600 ms.
    let started = Instant::now();
    let id = sign_async(&http, &sign_body("ska-timeout", "SHA256_WITH_ECDSA", b"e"));
    assert_eq!(status(&http, &id)["status"], "PENDING");
    let v = wait_terminal(&http, &id, Duration::from_secs(5));
    assert_eq!(v["status"], "EXPIRED");
    assert!(started.elapsed() >= Duration::from_millis(590));
    assert!(matches!(
        sim.approve(&id, "alice"),
        Err(SimError::Rejected(_))
    ));
    // Approved in time: executes.
    let id2 = sign_async(&http, &sign_body("ska-timeout", "SHA256_WITH_ECDSA", b"e2"));
    sim.approve(&id2, "alice").unwrap();
    assert_eq!(
        wait_terminal(&http, &id2, Duration::from_secs(5))["status"],
        "EXECUTED"
    );
}

#[test]
fn cancel_with_delete() {
    let (sim, http) = setup();
    let id = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"c"));
    let r = http.delete(&format!("/v1/request/{id}"));
    assert_eq!(r.status, 200);
    assert_eq!(status(&http, &id)["status"], "CANCELLED");
    assert!(sim.approve(&id, "alice").is_err());
    assert_eq!(sim.request_status(&id).as_deref(), Some("CANCELLED"));
    // An approved (not yet executed) request can be cancelled too.
    let id2 = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"c2"));
    sim.approve(&id2, "alice").unwrap();
    assert_eq!(http.delete(&format!("/v1/request/{id2}")).status, 200);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(status(&http, &id2)["status"], "CANCELLED");
    // Unknown ids: 404 / 651.
    let r = http.delete("/v1/request/00000000-0000-0000-0000-000000000000");
    assert_eq!((r.status, r.error_code()), (404, 651));
    let r = http.get("/v1/request/nope");
    assert_eq!((r.status, r.error_code()), (404, 651));
    assert_eq!(r.json()["reason"], "res.error.request.not.existent");
}

#[test]
fn timelock_holds_execution() {
    let (sim, http) = setup();
    // ska-timelock: timelock 60 s × 0.01 = 600 ms from creation.
    let started = Instant::now();
    let id = sign_async(&http, &sign_body("ska-timelock", "SHA256_WITH_ECDSA", b"t"));
    sim.approve(&id, "alice").unwrap();
    // Well past the 100 ms execution delay, but before the timelock.
    std::thread::sleep(Duration::from_millis(300));
    let v = status(&http, &id);
    if started.elapsed() < Duration::from_millis(600) {
        assert_eq!(
            v["status"], "APPROVED",
            "not executable before the timelock"
        );
        assert_eq!(v["result"], serde_json::Value::Null);
    }
    let v = wait_terminal(&http, &id, Duration::from_secs(5));
    assert_eq!(v["status"], "EXECUTED");
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[test]
fn auto_approval() {
    let (sim, http) = setup();
    // ska-auto: auto-approved after 200 ms, then executed 100 ms later.
    let spki = sim.public_key_der("ska-auto").unwrap();
    let started = Instant::now();
    let id = sign_async(&http, &sign_body("ska-auto", "SHA256_WITH_ECDSA", b"auto"));
    assert_eq!(status(&http, &id)["status"], "PENDING");
    let v = wait_terminal(&http, &id, Duration::from_secs(5));
    assert_eq!(v["status"], "EXECUTED");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        v["approvedBy"],
        json!(["alice"]),
        "quorum 1: approved as alice"
    );
    let sig = unb64(v["result"].as_str().unwrap());
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"auto", &sig, false));

    // Global autoApproveAfterMs applies to every SKA key.
    let mut cfg = test_config();
    cfg.auto_approve_after_ms = Some(50);
    let sim2 = start(cfg);
    let http2 = Http::new(&sim2.url());
    let id = sign_async(&http2, &sign_body("ska-quorum", "SHA256_WITH_ECDSA", b"g"));
    let v = wait_terminal(&http2, &id, Duration::from_secs(5));
    assert_eq!(v["status"], "EXECUTED");
    assert_eq!(v["approvedBy"], json!(["alice", "bob", "dave"]));
}

#[test]
fn failed_via_control() {
    let (sim, http) = setup();
    let id = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"f"));
    sim.fail(&id).unwrap();
    let v = status(&http, &id);
    assert_eq!(v["status"], "FAILED");
    assert_eq!(v["result"], serde_json::Value::Null);
    assert!(sim.fail(&id).is_err());
    let id2 = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"f2"));
    let r = http.post_raw(&format!("/sim/requests/{id2}/fail"), "");
    assert_eq!(r.status, 200);
    assert_eq!(status(&http, &id2)["status"], "FAILED");
}

#[test]
fn control_interface_lists_requests() {
    let (sim, http) = setup();
    let meta = json!({"app": "ctl"});
    let mut body = sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"listed");
    body["signRequest"]["metaData"] = json!(b64(meta.to_string().as_bytes()));
    body["signRequest"]["metaDataSignature"] = json!("bWV0YXNpZw==");
    let id = sign_async(&http, &body);
    let _ = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"sync one");
    let list = http.get("/sim/requests").json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let a = &list[0];
    assert_eq!(a["id"], id.as_str());
    assert_eq!(a["key"], "ska-ec-p256");
    assert_eq!(a["algorithm"], "SHA256_WITH_ECDSA");
    assert_eq!(a["endpoint"], "POST /v1/sign");
    assert_eq!(a["status"], "PENDING");
    assert_eq!(a["payload"], b64(b"listed"));
    assert_eq!(a["metaData"], meta);
    assert_eq!(a["metaDataRaw"], b64(meta.to_string().as_bytes()));
    assert_eq!(a["metaDataSignature"], "bWV0YXNpZw==");
    assert_eq!(a["notYetApprovedBy"], json!(["alice", "bob"]));
    assert!(a["createdAt"].is_string());
    let b = &list[1];
    assert_eq!(b["id"], serde_json::Value::Null);
    assert_eq!(b["endpoint"], "POST /v1/synchronousSign");
    assert_eq!(b["status"], "EXECUTED");
    let r = http.post(
        &format!("/sim/requests/{id}/approve"),
        &json!({"approver": "alice"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "APPROVED");
    assert_eq!(
        http.get(&format!("/sim/requests/{id}")).json()["approvedBy"],
        json!(["alice"])
    );
    let r = http.post_raw(&format!("/sim/requests/{id}/approve"), "{}");
    assert_eq!(r.status, 400);
    assert_eq!(sim.requests().len(), 2);
}
