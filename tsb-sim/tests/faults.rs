//! Fault injection: every kind, counts, endpoint matching, and the `/sim/faults` interface.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tsb_sim::{Fault, FaultKind, Simulator};

fn setup() -> (Simulator, Http) {
    let sim = start(test_config());
    let http = Http::new(&sim.url());
    (sim, http)
}

#[test]
fn fault_json_format() {
    let f: Fault = serde_json::from_value(
        json!({"endpoint": "POST /v1/synchronousSign", "kind": "status5xx", "status": 503, "count": 2}),
    )
    .unwrap();
    assert_eq!(f, Fault::status("POST /v1/synchronousSign", 503).times(2));
    assert_eq!(
        serde_json::to_value(Fault::latency("*", 250)).unwrap(),
        json!({"endpoint": "*", "kind": "latency", "latencyMs": 250})
    );
    for kind in [
        "latency",
        "status5xx",
        "htmlBadGateway",
        "unknownEndpoint",
        "malformedJson",
        "dropConnection",
        "hang",
        "badSignature",
    ] {
        let f: Fault = serde_json::from_value(json!({"kind": kind, "latencyMs": 1})).unwrap();
        assert_eq!(f.endpoint, "*");
        assert_eq!(serde_json::to_value(f.kind).unwrap(), kind);
    }
    assert_eq!(
        serde_json::from_value::<FaultKind>(json!("latencyMs")).unwrap(),
        FaultKind::Latency
    );
}

#[test]
fn status_5xx_for_count_requests() {
    let (sim, http) = setup();
    sim.inject(Fault::status("POST /v1/synchronousSign", 503).times(2));
    let body = sign_body("ec-p256", "SHA256_WITH_ECDSA", b"x");
    for _ in 0..2 {
        let r = http.post("/v1/synchronousSign", &body);
        assert_eq!(r.status, 503);
        assert_eq!(r.error_code(), 701);
        assert_eq!(r.json()["reason"], "res.error.in.hsm");
        assert!(r.json()["message"].is_string());
    }
    assert_eq!(http.post("/v1/synchronousSign", &body).status, 200);
    // Faulted requests never reached the HSM.
    assert_eq!(sim.requests().len(), 1);
    assert_eq!(sim.counter("POST /v1/synchronousSign"), 3);
    // Custom status and error code, until cleared.
    sim.inject(Fault::status("GET /v1/key", 500).with_error(705, "HSM down"));
    for _ in 0..3 {
        let r = http.get("/v1/key");
        assert_eq!((r.status, r.error_code()), (500, 705));
        assert_eq!(r.json()["message"], "HSM down");
    }
    assert_eq!(
        http.get("/v1/versionInfo").status,
        200,
        "other endpoints unaffected"
    );
    sim.clear_faults();
    assert_eq!(http.get("/v1/key").status, 200);
}

#[test]
fn html_bad_gateway() {
    let (sim, http) = setup();
    sim.inject(Fault::html_bad_gateway("*").times(1));
    let r = http.get("/v1/versionInfo");
    assert_eq!(r.status, 502);
    assert!(
        r.content_type.starts_with("text/html"),
        "{}",
        r.content_type
    );
    assert!(r.body.contains("<html>") && r.body.contains("502 Bad Gateway"));
    assert!(serde_json::from_str::<serde_json::Value>(&r.body).is_err());
    assert_eq!(http.get("/v1/versionInfo").status, 200);
    // The control interface is never faulted.
    sim.inject(Fault::html_bad_gateway("*"));
    assert_eq!(http.get("/sim/counters").status, 200);
}

#[test]
fn unknown_endpoint() {
    let (sim, http) = setup();
    sim.inject(Fault::unknown_endpoint("POST /v1/key/attributes", 405).times(1));
    sim.inject(Fault::unknown_endpoint("GET /v1/key/attributes", 404).times(1));
    let body = json!({"label": "ec-p256"});
    let r = http.post("/v1/key/attributes", &body);
    assert_eq!(r.status, 405);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"], "Method Not Allowed");
    assert!(v.get("errorCode").is_none(), "no TSB error code: {v}");
    let r = http.get("/v1/key/ec-p256/attributes");
    assert_eq!(r.status, 404);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"], "Not Found");
    assert!(v.get("errorCode").is_none(), "no TSB error code: {v}");
    // Each for one request: then answered normally.
    assert_eq!(http.post("/v1/key/attributes", &body).status, 200);
    assert_eq!(http.get("/v1/key/ec-p256/attributes").status, 200);
}

#[test]
fn malformed_json() {
    let (sim, http) = setup();
    sim.inject(Fault::malformed_json("POST /v1/synchronousSign").times(1));
    let r = http.post(
        "/v1/synchronousSign",
        &sign_body("ec-p256", "SHA256_WITH_ECDSA", b"m"),
    );
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("application/json"));
    assert!(!r.body.is_empty());
    assert!(
        serde_json::from_str::<serde_json::Value>(&r.body).is_err(),
        "{}",
        r.body
    );
    assert!(r.body.starts_with("{\"signature\""), "{}", r.body);
    // The request itself was processed.
    assert_eq!(sim.requests().len(), 1);
    sim.inject(Fault::malformed_json("GET /v1/key"));
    let r = http.get("/v1/key");
    assert!(serde_json::from_str::<serde_json::Value>(&r.body).is_err());
}

#[test]
fn drop_connection() {
    let (sim, http) = setup();
    sim.inject(Fault::drop_connection("POST /v1/synchronousSign").times(1));
    let body = sign_body("ec-p256", "SHA256_WITH_ECDSA", b"d").to_string();
    let err = http
        .try_send("POST", "/v1/synchronousSign", Some(&body))
        .expect_err("the answer must be broken");
    let msg = err.to_string();
    assert!(!msg.is_empty());
    assert_eq!(http.post_raw("/v1/synchronousSign", &body).status, 200);

    // At the socket level: status line and headers arrive, the body is cut short.
    sim.inject(Fault::drop_connection("GET /v1/key").times(1));
    let addr = sim.url().trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /v1/key HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("headers arrive");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let declared: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    assert!(body.len() < declared, "body {} of {declared}", body.len());
    assert!(!body.is_empty());
}

#[test]
fn hang_until_cleared() {
    let (sim, _) = setup();
    sim.inject(Fault::hang("GET /v1/versionInfo"));
    let quick = Http::with_agent(
        ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(400))
            .build(),
        &sim.url(),
    );
    let started = Instant::now();
    let err = quick.try_send("GET", "/v1/versionInfo", None).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(390));
    assert!(
        err.to_string().to_lowercase().contains("timed out"),
        "{err}"
    );
    assert_eq!(quick.get("/v1/key").status, 200, "other endpoints answer");

    // A hanging request is released (connection closed, no answer) when faults are cleared.
    let url = sim.url();
    let waiter = std::thread::spawn(move || {
        let patient = Http::new(&url);
        let started = Instant::now();
        (
            patient.try_send("GET", "/v1/versionInfo", None).is_err(),
            started.elapsed(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    sim.clear_faults();
    let (failed, elapsed) = waiter.join().unwrap();
    assert!(failed, "no answer is given");
    assert!(elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(10));
    assert_eq!(quick.get("/v1/versionInfo").status, 200);
}

#[test]
fn hang_is_bounded_and_ends_with_the_simulator() {
    let mut cfg = test_config();
    cfg.hang_max_ms = 300;
    let sim = start(cfg);
    sim.inject(Fault::hang("*"));
    let http = Http::new(&sim.url());
    let started = Instant::now();
    assert!(http.try_send("GET", "/v1/key", None).is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Dropping the simulator while a request hangs does not block.
    let url = sim.url();
    let waiter =
        std::thread::spawn(move || Http::new(&url).try_send("GET", "/v1/key", None).is_err());
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    drop(sim);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(waiter.join().unwrap());
}

#[test]
fn latency() {
    let (sim, http) = setup();
    sim.inject(Fault::latency("GET /v1/key", 300).times(2));
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(http.get("/v1/key").status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    let started = Instant::now();
    assert_eq!(http.get("/v1/key").status, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
    // Latency before another effect.
    sim.inject(Fault::status("*", 500).with_latency(200).times(1));
    let started = Instant::now();
    assert_eq!(http.get("/v1/versionInfo").status, 500);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn bad_signature_sync_and_async() {
    let (sim, http) = setup();
    let spki = sim.public_key_der("ec-p256").unwrap();
    sim.inject(Fault::bad_signature("POST /v1/synchronousSign").times(1));
    let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"b");
    assert!(!verify(&spki, "SHA256_WITH_ECDSA", b"b", &sig, false));
    let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"b");
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"b", &sig, false));
    for (key, alg) in [("rsa-2048", "SHA256_WITH_RSA"), ("ed25519", "EDDSA")] {
        let spki = sim.public_key_der(key).unwrap();
        sim.inject(Fault::bad_signature("*").times(1));
        let sig = sign_sync(&http, key, alg, b"b");
        assert!(!verify(&spki, alg, b"b", &sig, false), "{key}");
    }

    // On GET /v1/request only answers with a result count.
    let spki = sim.public_key_der("ska-ec-p256").unwrap();
    sim.inject(Fault::bad_signature("GET /v1/request").times(1));
    let id = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"a"));
    assert_eq!(
        http.get(&format!("/v1/request/{id}")).json()["status"],
        "PENDING"
    );
    sim.approve(&id, "alice").unwrap();
    let v = wait_terminal(&http, &id, Duration::from_secs(5));
    assert_eq!(v["status"], "EXECUTED");
    let bad = unb64(v["result"].as_str().unwrap());
    assert!(!verify(&spki, "SHA256_WITH_ECDSA", b"a", &bad, false));
    let good = unb64(
        http.get(&format!("/v1/request/{id}")).json()["result"]
            .as_str()
            .unwrap(),
    );
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"a", &good, false));
    assert_eq!(bad.len(), good.len());
}

#[test]
fn control_interface_faults() {
    let (_sim, http) = setup();
    let r = http.post(
        "/sim/faults",
        &json!([
            {"endpoint": "POST /v1/sign", "kind": "status5xx", "status": 503, "count": 1},
            {"endpoint": "GET /v1/key/attributes", "kind": "htmlBadGateway"}
        ]),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(http.get("/sim/faults").json().as_array().unwrap().len(), 2);
    // Matching: /v1/sign is not /v1/synchronousSign; attributes by normalised name.
    sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"x");
    let r = http.post("/v1/sign", &sign_body("ec-p256", "SHA256_WITH_ECDSA", b"x"));
    assert_eq!(r.status, 503);
    assert_eq!(http.get("/v1/key/m%2F44'%2F0'%2F0'/attributes").status, 502);
    assert_eq!(http.get("/v1/key").status, 200);
    let faults = http.get("/sim/faults").json();
    assert_eq!(
        faults.as_array().unwrap().len(),
        1,
        "the counted fault is used up"
    );
    assert_eq!(http.delete("/sim/faults").status, 204);
    assert_eq!(http.get("/v1/key/rsa-2048/attributes").status, 200);
    // Invalid faults.
    for bad in [
        json!({"kind": "explode"}),
        json!({"kind": "latency"}),
        json!({"kind": "hang", "count": 0}),
        json!({"kind": "hang", "endpoint": "v1"}),
    ] {
        assert_eq!(http.post("/sim/faults", &bad).status, 400, "{bad}");
    }
    assert_eq!(http.post_raw("/sim/faults", "{").status, 400);
}

/// Reads one HTTP/1.1 response with a Content-Length from `s`; `(head, body)`.
fn read_response(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "head: {raw:?}");
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn hostile_extra_response_follows_the_answer() {
    let (sim, _) = setup();
    sim.inject(Fault::extra_response("POST /v1/synchronousSign", None).times(1));
    sim.inject(Fault::extra_response("GET /v1/key", Some(json!(["forged"]))).times(1));
    let addr = sim.url().trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = sign_body("ec-p256", "SHA256_WITH_ECDSA", b"x").to_string();
    write!(
        s,
        "POST /v1/synchronousSign HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (head, first) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head2, second) = read_response(&mut s);
    assert!(head2.starts_with("HTTP/1.1 200"), "{head2}");
    assert_eq!(first, second, "a duplicate of the answer");
    // Used up: the next request on the connection gets its own answer, then the GET fault's
    // forged body.
    write!(s, "GET /v1/key HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let (_, list) = read_response(&mut s);
    assert!(String::from_utf8_lossy(&list).contains("ec-p256"));
    let (_, forged) = read_response(&mut s);
    assert_eq!(forged, br#"["forged"]"#);
}

#[test]
fn hostile_signatures_wrong_key_and_other_data() {
    let (sim, http) = setup();
    let spki = sim.public_key_der("ec-p256").unwrap();
    sim.inject(Fault::wrong_key_signature("*", Some("ska-ec-p256")).times(1));
    let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"d");
    assert!(!verify(&spki, "SHA256_WITH_ECDSA", b"d", &sig, false));
    let other = sim.public_key_der("ska-ec-p256").unwrap();
    assert!(verify(&other, "SHA256_WITH_ECDSA", b"d", &sig, false));
    // Without a label: another key of the same type; GET requests do not use the fault up.
    sim.inject(Fault::wrong_key_signature("*", None).times(1));
    assert_eq!(http.get("/v1/key").status, 200);
    let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"d");
    assert!(!verify(&spki, "SHA256_WITH_ECDSA", b"d", &sig, false));
    assert!(sim
        .key_labels()
        .iter()
        .filter(|l| l.contains("p256") && *l != "ec-p256")
        .any(|l| verify(
            &sim.public_key_der(l).unwrap(),
            "SHA256_WITH_ECDSA",
            b"d",
            &sig,
            false
        )));
    sim.inject(Fault::other_data_signature("POST /v1/synchronousSign").times(1));
    let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"d");
    assert!(!verify(&spki, "SHA256_WITH_ECDSA", b"d", &sig, false));
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"e", &sig, false));
    let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"d");
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"d", &sig, false));
}

#[test]
fn hostile_request_ids_replay_and_drip() {
    let (sim, http) = setup();
    let http = http.header("Authorization", "Bearer tok-123");
    sim.inject(Fault::echo_token().times(1));
    let id = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"a"));
    assert_eq!(id, "tok-123");
    assert_eq!(sim.request_status("tok-123").as_deref(), Some("PENDING"));
    sim.inject(Fault::huge_request_id(2 << 20).times(1));
    let id = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"a"));
    assert_eq!(id.len(), 2 << 20);

    sim.inject(Fault::replay_answer("POST /v1/synchronousSign").times(2));
    let a = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"one");
    let b = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"two");
    assert_eq!(a, b, "the second request gets the first answer");
    let c = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"two");
    assert_ne!(b, c);

    sim.inject(Fault::drip("GET /v1/versionInfo", 30).times(1));
    let started = Instant::now();
    let v = http.get("/v1/versionInfo").json();
    assert_eq!(v["Version"], "2.2.0");
    assert!(started.elapsed() >= Duration::from_millis(30 * 15));
}

#[test]
fn swap_key_keeps_the_label_and_changes_the_key() {
    let (sim, http) = setup();
    let before = http.get("/v1/key/ec-p256/attributes").json()["json"].clone();
    let swap = sim.swap_key("ec-p256").unwrap();
    let after = http.get("/v1/key/ec-p256/attributes").json()["json"].clone();
    assert_eq!(after["label"], "ec-p256");
    assert_eq!(after["id"], swap.id.as_str());
    assert_ne!(after["id"], before["id"]);
    assert_ne!(after["publicKey"], before["publicKey"]);
    assert_eq!(sim.public_key_der("ec-p256").unwrap(), swap.public_key_der);
    let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"s");
    assert!(verify(
        &swap.public_key_der,
        "SHA256_WITH_ECDSA",
        b"s",
        &sig,
        false
    ));
    let v = http.post("/sim/hostile/swap/ec-p256", &json!({}));
    assert_eq!(v.status, 200);
    assert_ne!(v.json()["id"], swap.id.as_str());
    assert_eq!(http.post("/sim/hostile/swap/nope", &json!({})).status, 404);

    // A pending approval request is signed again by the new key.
    let id = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"p"));
    let swap = sim.swap_key("ska-ec-p256").unwrap();
    sim.approve(&id, "alice").unwrap();
    let v = wait_terminal(&http, &id, Duration::from_secs(5));
    let sig = unb64(v["result"].as_str().unwrap());
    assert!(verify(
        &swap.public_key_der,
        "SHA256_WITH_ECDSA",
        b"p",
        &sig,
        false
    ));

    let labels = sim.add_hostile_keys().unwrap();
    assert!(labels.iter().any(|l| l.contains('\u{1b}')));
    let list = http.get("/v1/key").json();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "nl-\nFORGED LINE"));
}

#[test]
fn hostile_lying_length() {
    let (sim, _) = setup();
    sim.inject(Fault::lying_length("GET /v1/key", 1 << 40).times(1));
    let addr = sim.url().trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /v1/key HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("headers arrive");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-length: 1099511627776"),
        "{head}"
    );
    assert!(body.contains("ec-p256"), "{body}");
}
