//! Counters, the configuration file format, and the `tsb-sim` binary (serve + CLI clients).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use tsb_sim::{SimConfig, SimError};

const BIN: &str = env!("CARGO_BIN_EXE_tsb-sim");

#[test]
fn counters_per_normalised_endpoint() {
    let sim = start(test_config());
    let http = Http::new(&sim.url());
    http.get("/v1/key");
    http.get("/v1/key");
    http.get("/v1/key/rsa-2048/attributes");
    http.get("/v1/key/m%2F44'%2F0'%2F0'/attributes");
    http.post("/v1/key/attributes", &json!({"label": "rsa-2048"}));
    sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"c");
    let id = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"c"));
    http.get(&format!("/v1/request/{id}"));
    http.get("/v1/request/unknown");
    http.delete(&format!("/v1/request/{id}"));
    http.get("/v1/certificate/ec-p256");
    http.get("/sim/requests");
    assert_eq!(sim.counter("GET /v1/key"), 2);
    assert_eq!(sim.counter("GET /v1/key/attributes"), 2);
    assert_eq!(sim.counter("POST /v1/key/attributes"), 1);
    assert_eq!(sim.counter("POST /v1/synchronousSign"), 1);
    assert_eq!(sim.counter("POST /v1/sign"), 1);
    assert_eq!(sim.counter("GET /v1/request"), 2);
    assert_eq!(sim.counter("DELETE /v1/request"), 1);
    assert_eq!(sim.counter("GET /v1/certificate"), 1);
    assert_eq!(
        sim.counter("GET /sim/requests"),
        0,
        "control calls are not counted"
    );
    let over_http = http.get("/sim/counters").json();
    assert_eq!(serde_json::to_value(sim.counters()).unwrap(), over_http);
    assert_eq!(
        tsb_sim::endpoint_name("GET", "/v1/request/abc"),
        "GET /v1/request"
    );
    sim.reset_counters();
    assert!(sim.counters().is_empty());
    http.get("/v1/key");
    assert_eq!(http.delete("/sim/counters").status, 204);
    assert_eq!(http.get("/sim/counters").json(), json!({}));
}

#[test]
fn config_file_format() {
    let demo = SimConfig::from_toml_str(tsb_sim::DEMO_TOML).expect("demo.toml parses");
    assert_eq!(demo, SimConfig::demo(), "demo.toml == SimConfig::demo()");
    let cfg = SimConfig::from_toml_str(
        r#"
        listen = "127.0.0.1:0"
        timeScale = 0.5
        autoApproveAfterMs = 1000
        [auth]
        bearerToken = "t"
        [auth.apiKeys]
        KeyOperationToken = ["a", "b"]
        [tls]
        serverCertMode = "wrong-host"
        clientAuth = "required"
        [[keys]]
        label = "k"
        algorithm = "EC"
        curve = "P-384"
        id = "01"
        autoApproveAfterMs = 10
        [[keys.policy.tokens]]
        timelock = 120
        [[keys.policy.tokens.groups]]
        name = "g"
        quorum = 1
        approvers = ["x"]
        [keys.certificate]
        commonName = "cn"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.time_scale, 0.5);
    assert_eq!(cfg.auth.api_keys.key_operation, ["a", "b"]);
    let tls = cfg.tls.as_ref().unwrap();
    assert!(tls.enabled);
    assert_eq!(tls.server_cert_mode, tsb_sim::ServerCertMode::WrongHost);
    assert_eq!(cfg.keys[0].curve, Some(tsb_sim::Curve::P384));
    assert_eq!(cfg.keys[0].policy.as_ref().unwrap().tokens[0].timelock, 120);
    assert_eq!(cfg.keys[0].certificate.as_ref().unwrap().validity_days, 365);
    for bad in [
        "unknownField = 1",
        "[[keys]]\nlabel = \"a\"\nalgorithm = \"DSA\"",
        "[[keys]]\nlabel = \"a\"\nalgorithm = \"RSA\"\nkeySize = 100",
        "[[keys]]\nlabel = \"a\"\nalgorithm = \"EC\"\n[[keys]]\nlabel = \"a\"\nalgorithm = \"EC\"",
        "[[keys]]\nlabel = \"a\"\nalgorithm = \"EC\"\n[[keys.policy.tokens]]\n[[keys.policy.tokens.groups]]\nname = \"g\"\nquorum = 2\napprovers = [\"x\"]",
        "timeScale = 0",
    ] {
        assert!(
            matches!(SimConfig::from_toml_str(bad), Err(SimError::Config(_))),
            "{bad}"
        );
    }
    let path = std::env::temp_dir().join(format!("tsb-sim-cfg-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, "version = \"2.1.1\"").unwrap();
    assert_eq!(SimConfig::from_file(&path).unwrap().version, "2.1.1");
    std::fs::remove_file(&path).unwrap();
    assert!(SimConfig::from_file(&path).is_err());
}

fn cli(args: &[&str], url: &str) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("TSB_SIM_URL", url)
        .output()
        .expect("run tsb-sim");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn cli_client_commands() {
    let sim = start(test_config());
    let url = sim.url();
    let http = Http::new(&url);
    let mut body = sign_body("ska-quorum", "SHA256_WITH_ECDSA", b"cli");
    body["signRequest"]["metaData"] = json!(b64(br#"{"app":"cli-test"}"#));
    let id = sign_async(&http, &body);

    let (code, out, _) = cli(&["requests"], &url);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("ska-quorum") && out.contains("PENDING"),
        "{out}"
    );
    assert!(out.contains("cli-test"), "metaData shown: {out}");
    let (code, out, _) = cli(&["requests", "--json", "--url", &url], "http://127.0.0.1:1");
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["id"],
        id.as_str()
    );

    let (code, _, err) = cli(&["approve", &id, "--as", "mallory"], &url);
    assert_eq!(code, 1);
    assert!(
        err.contains("not an approver") && err.contains("alice"),
        "{err}"
    );
    for a in ["alice", "bob"] {
        let (code, out, _) = cli(&["approve", &id, "--as", a], &url);
        assert_eq!(code, 0);
        assert!(out.contains("PENDING"), "{out}");
    }
    let (code, out, _) = cli(&["approve", &id, "--as", "dave"], &url);
    assert_eq!(code, 0);
    assert!(
        out.contains("APPROVED") || out.contains("EXECUTED"),
        "{out}"
    );
    assert_eq!(sim.requests()[0].approved_by, ["alice", "bob", "dave"]);

    let id2 = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"r"));
    let (code, out, _) = cli(&["reject", &id2, "--as", "bob"], &url);
    assert_eq!(code, 0);
    assert!(out.contains("REJECTED"));
    assert_eq!(sim.request_status(&id2).as_deref(), Some("REJECTED"));
    let id3 = sign_async(&http, &sign_body("ska-ec-p256", "SHA256_WITH_ECDSA", b"f"));
    assert_eq!(cli(&["fail", &id3], &url).0, 0);
    assert_eq!(sim.request_status(&id3).as_deref(), Some("FAILED"));
    let (code, _, err) = cli(&["approve", "no-such", "--as", "alice"], &url);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");

    let (code, out, _) = cli(&["counters"], &url);
    assert_eq!(code, 0);
    assert!(out.contains("POST /v1/sign"), "{out}");
    assert_eq!(cli(&["counters", "--reset"], &url).0, 0);
    assert!(sim.counters().is_empty());

    let fault = r#"{"endpoint":"GET /v1/versionInfo","kind":"status5xx","status":503}"#;
    assert_eq!(cli(&["faults", "add", fault], &url).0, 0);
    assert_eq!(http.get("/v1/versionInfo").status, 503);
    let (_, out, _) = cli(&["faults", "list"], &url);
    assert!(out.contains("status5xx"));
    assert_eq!(cli(&["faults", "add", "{\"kind\":\"nope\"}"], &url).0, 1);
    assert_eq!(cli(&["faults", "clear"], &url).0, 0);
    assert_eq!(http.get("/v1/versionInfo").status, 200);

    let (code, out, _) = cli(&["demo-config"], &url);
    assert_eq!(code, 0);
    assert_eq!(out, tsb_sim::DEMO_TOML);
    // Unreachable simulator: a clear error.
    let (code, _, err) = cli(&["requests"], "http://127.0.0.1:1");
    assert_eq!(code, 1);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn binary_serves_and_logs() {
    let path = std::env::temp_dir().join(format!("tsb-sim-serve-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        "[[keys]]\nlabel = \"bin-ec\"\nalgorithm = \"EC\"\n[[keys]]\nlabel = \"bin-ska\"\nalgorithm = \"ED\"\n[[keys.policy.tokens]]\n[[keys.policy.tokens.groups]]\nname = \"g\"\nquorum = 1\napprovers = [\"alice\"]\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"));
    let http = Http::new(&url);
    let labels = http.get("/v1/key").json();
    assert_eq!(labels, json!(["bin-ec", "bin-ska"]));
    let sig = sign_sync(&http, "bin-ec", "SHA256_WITH_ECDSA", b"bin");
    let spki = unb64(
        http.get("/v1/key/bin-ec/attributes").json()["json"]["publicKey"]
            .as_str()
            .unwrap(),
    );
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"bin", &sig, false));
    let id = sign_async(&http, &sign_body("bin-ska", "EDDSA", b"x"));
    let (code, out, _) = cli(&["approve", &id, "--as", "alice"], &url);
    assert_eq!(code, 0, "{out}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("GET /v1/key 200"), "{err}");
    assert!(err.contains("POST /v1/synchronousSign 200"), "{err}");
    assert!(!err.contains("bmlu"), "payloads are not logged");
    std::fs::remove_file(&path).unwrap();

    // A broken config file: exit code 1 and a message.
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/tsb.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tsb.toml"));
    let _ = Duration::ZERO;
}

/// `tsb-sim requests | head`: a closed stdout pipe ends the client quietly (issue 12.7).
#[test]
fn closed_stdout_pipe_exits_quietly() {
    let sim = start(test_config());
    let http = Http::new(&sim.url());
    sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"pipe");
    for args in [
        &["requests"][..],
        &["requests", "--json"],
        &["counters"],
        &["demo-config"],
    ] {
        // The reader is gone before the child writes anything: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .env("TSB_SIM_URL", sim.url())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}
