//! `tsb-pkcs11 doctor` and `tsb-pkcs11 keys`, the built command against the simulator: one test
//! per failure mode (each must be found at the right step, with a fix), the healthy case with
//! a test signature verified here by OpenSSL, and the key listing with its PKCS#11 URIs.

use tsb_pkcs11_test_support as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use common::{start_sim, write_private};
use serde_json::{json, Value};
use tsb_sim::{ClientAuth, Fault, ServerCertMode, SimConfig, Simulator, TlsConfig};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The simulator with a few keys (one password-protected key only where a test wants it).
fn sim_config(keys: &[&str]) -> SimConfig {
    let mut cfg = SimConfig::fast_test();
    cfg.keys.retain(|k| keys.contains(&k.label.as_str()));
    cfg
}

struct Run {
    code: i32,
    doc: Value,
    stderr: String,
}

impl Run {
    fn checks(&self) -> &Vec<Value> {
        self.doc["checks"].as_array().expect("checks")
    }

    /// The first check of `step` with `status`.
    fn find(&self, step: &str, status: &str) -> &Value {
        self.checks()
            .iter()
            .find(|c| c["step"] == step && c["status"] == status)
            .unwrap_or_else(|| panic!("no {status} check at step {step}: {:#}", self.doc))
    }

    /// The failed check: exactly one step fails, and it is `step`.
    fn failed_at(&self, step: &str) -> &Value {
        assert_eq!(self.code, 1, "exit code: {:#}", self.doc);
        assert_eq!(self.doc["ok"], false);
        let c = self.find(step, "fail");
        assert!(
            c["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "a failure comes with a fix: {c:#}"
        );
        c
    }

    fn steps(&self) -> Vec<String> {
        self.checks()
            .iter()
            .map(|c| c["step"].as_str().unwrap().to_string())
            .collect()
    }
}

fn tsb_pkcs11(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::built_command());
    cmd.args(args)
        .env_remove("TSB_PKCS11_CONFIG")
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tsb-pkcs11")
}

/// `tsb-pkcs11 --json -c CONFIG <args>`.
fn run(config: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--json", "-c", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = tsb_pkcs11(&all, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {stdout}"));
    Run {
        code: out.status.code().expect("exit code"),
        doc,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A configuration file (mode 0600) in `dir`.
fn config_file(dir: &Path, config: &Value) -> PathBuf {
    let path = dir.join("config.json");
    write_private(&path, &serde_json::to_vec_pretty(config).unwrap());
    path
}

fn doctor(sim_url: &str, extra: Value) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = json!({ "restApi": sim_url, "pkcs11": { "requestTimeoutMs": 3000, "connectTimeoutMs": 1000 } });
    merge(&mut c, extra);
    let path = config_file(dir.path(), &c);
    (run(&path, &["doctor"]), dir)
}

fn merge(into: &mut Value, from: Value) {
    if let Value::Object(m) = from {
        for (k, v) in m {
            match (into.get_mut(&k), v) {
                (Some(Value::Object(a)), Value::Object(b)) => {
                    for (kk, vv) in b {
                        a.insert(kk, vv);
                    }
                }
                (_, v) => {
                    into[&k] = v;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The healthy case

#[test]
fn a_healthy_setup_passes_every_step_and_the_test_signature_verifies_with_openssl() {
    let sim = start_sim(sim_config(&["ec-p256", "rsa-2048", "ska-ec-p256"]));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &json!({ "restApi": sim.url() }));
    let r = run(&path, &["doctor", "--sign", "ec-p256"]);
    assert_eq!(r.code, 0, "{:#}\n{}", r.doc, r.stderr);
    assert_eq!(r.doc["result"], "ok");
    let steps = r.steps();
    for s in [
        "config", "dns", "tcp", "auth", "version", "key", "keys", "sign",
    ] {
        assert!(steps.iter().any(|x| x == s), "step {s} missing: {steps:?}");
    }
    // The order of the network steps.
    let pos = |s: &str| steps.iter().position(|x| x == s).unwrap();
    assert!(pos("config") < pos("dns") && pos("dns") < pos("tcp") && pos("tcp") < pos("auth"));
    let keys = r.find("keys", "ok");
    assert!(
        keys["message"].as_str().unwrap().contains("3 of 3"),
        "{keys:#}"
    );
    let ska = r
        .checks()
        .iter()
        .find(|c| c["step"] == "key" && c["details"]["label"] == "ska-ec-p256")
        .unwrap();
    assert!(
        ska["details"]["approval"]
            .as_str()
            .unwrap()
            .contains("1 of alice, bob"),
        "{ska:#}"
    );
    // The signature, checked by OpenSSL against the key the simulator holds.
    let sign = &r.find("sign", "ok")["details"];
    let data = B64.decode(sign["data"].as_str().unwrap()).unwrap();
    let sig = B64.decode(sign["signature"].as_str().unwrap()).unwrap();
    let key =
        openssl::pkey::PKey::public_key_from_der(&sim.public_key_der("ec-p256").unwrap()).unwrap();
    assert!(common::verify::ecdsa(
        &key,
        common::verify::Hash::Sha256,
        &data,
        &sig
    ));
    assert_eq!(sim.requests().len(), 1, "one signature, no more");
}

#[test]
fn text_output_names_each_step_and_the_exit_code_follows_the_worst_check() {
    let sim = start_sim(sim_config(&["ec-p256", "ec-p256-pw"]));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &json!({ "restApi": sim.url() }));
    let out = tsb_pkcs11(&["-c", path.to_str().unwrap(), "doctor"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    // A password-protected key without a password is left out: a warning with its fix.
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("ec-p256-pw': left out: the key is password-protected"),
        "{text}"
    );
    assert!(text.contains("fix: add \"keyPasswords\""), "{text}");
    assert!(text.contains("result: works, with warnings"), "{text}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the password configured, the key is shown and all is well.
    let path = config_file(
        dir.path(),
        &json!({ "restApi": sim.url(), "pkcs11": { "keyPasswords": { "ec-p256-pw": "secret-pw" } } }),
    );
    let out = tsb_pkcs11(&["-c", path.to_str().unwrap(), "doctor"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("'ec-p256-pw': shown"), "{text}");
    assert!(!text.contains("secret-pw"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Configuration

#[test]
fn no_configuration_file_anywhere_is_reported_with_config_init_as_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let out = tsb_pkcs11(
        &["--json", "doctor"],
        &[
            ("HOME", home.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", home.path().join("cfg").to_str().unwrap()),
        ],
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    if Path::new("/etc/tsb-pkcs11/config.json").exists() {
        // A system-wide configuration is found; the missing user files are not a problem.
        assert_eq!(doc["checks"][0]["step"], "config");
        return;
    }
    assert_eq!(out.status.code(), Some(1));
    let c = &doc["checks"][0];
    assert_eq!(c["status"], "fail");
    assert!(c["message"]
        .as_str()
        .unwrap()
        .contains("no configuration file"));
    assert!(c["fix"]
        .as_str()
        .unwrap()
        .contains("tsb-pkcs11 config init"));
}

#[test]
fn an_insecure_or_unreadable_or_invalid_configuration_fails_at_the_config_step() {
    let dir = tempfile::tempdir().unwrap();
    // Writable by others: refused as the module refuses it.
    let path = dir.path().join("config.json");
    std::fs::write(&path, br#"{"restApi":"http://127.0.0.1:9"}"#).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = run(&path, &["doctor"]);
    assert_eq!(r.code, 1);
    let c = r.find("config", "fail");
    assert!(
        c["message"].as_str().unwrap().contains("chmod go-w"),
        "{c:#}"
    );
    assert_eq!(r.steps(), ["config"], "nothing after a refused config");
    std::fs::remove_file(&path).unwrap();
    // Not a readable file (a directory).
    let r = run(dir.path(), &["doctor"]);
    r.failed_at("config");
    // A named file that does not exist.
    let r = run(&dir.path().join("missing.json"), &["doctor"]);
    let c = r.failed_at("config");
    assert!(c["fix"].as_str().unwrap().contains("config init"), "{c:#}");
    // A wrong value names the field.
    let path = config_file(
        dir.path(),
        &json!({ "restApi": "http://127.0.0.1:9", "pkcs11": { "pollIntervalMs": "soon" } }),
    );
    let r = run(&path, &["doctor"]);
    let c = r.failed_at("config");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("pkcs11.pollIntervalMs"),
        "{c:#}"
    );
    // A secret from an unset environment variable.
    let path = config_file(
        dir.path(),
        &json!({ "restApi": "http://127.0.0.1:9", "token": "env:TSB_PKCS11_TEST_UNSET_VAR" }),
    );
    let r = run(&path, &["doctor"]);
    let c = r.failed_at("config");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("TSB_PKCS11_TEST_UNSET_VAR"),
        "{c:#}"
    );
}

// ---------------------------------------------------------------------------------------
// Network and TLS

#[test]
fn a_wrong_url_port_fails_at_tcp() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (r, _d) = doctor(&format!("http://127.0.0.1:{port}"), json!({}));
    let c = r.failed_at("tcp");
    assert!(
        c["fix"].as_str().unwrap().contains(&format!("port {port}")),
        "{c:#}"
    );
    assert!(!r.steps().contains(&"auth".to_string()));
}

/// An IPv6 literal with an explicit port, over plain http and over TLS: every step passes, and
/// every request doctor sends names the URL's authority in its `Host` header, brackets and port
/// included (RFC 9112 §3.2), as the module's own requests do.
#[test]
fn an_ipv6_url_with_a_port_passes_and_every_host_header_carries_brackets_and_port() {
    let mut cfg = sim_config(&["ec-p256"]);
    cfg.listen = Some("[::1]:0".into());
    let sim = start_sim(cfg);
    let port = sim.local_addr().port();
    assert_eq!(sim.url(), format!("http://[::1]:{port}"));
    let (r, _d) = doctor(&sim.url(), json!({}));
    assert_eq!(r.code, 0, "{:#}", r.doc);
    assert!(r.find("dns", "ok")["message"]
        .as_str()
        .unwrap()
        .contains("::1"));
    assert_eq!(sim.host_headers(), vec![format!("[::1]:{port}")]);

    // TLS: the simulator serves its port on ::1 too, with a certificate naming ::1.
    let dir = tempfile::tempdir().unwrap();
    let sim = tls_sim(ServerCertMode::Valid, ClientAuth::None, dir.path());
    let port = sim.local_addr().port();
    let url = format!("https://[::1]:{port}");
    let (r, _d) = doctor(&url, json!({ "caPath": dir.path().join("ca.pem") }));
    assert_eq!(r.code, 0, "{:#}", r.doc);
    assert!(r.find("tls", "ok")["message"]
        .as_str()
        .unwrap()
        .contains("server certificate"));
    assert!(r.find("tcp", "ok")["message"]
        .as_str()
        .unwrap()
        .contains(&format!("[::1]:{port}")));
    assert_eq!(sim.host_headers(), vec![format!("[::1]:{port}")]);
}

#[test]
fn a_url_that_is_not_a_tsb_api_fails_at_auth_with_the_url_as_fix() {
    let sim = start_sim(sim_config(&["ec-p256"]));
    let (r, _d) = doctor(&format!("{}/not-the-api", sim.url()), json!({}));
    let c = r.failed_at("auth");
    assert!(c["fix"].as_str().unwrap().contains("restApi"), "{c:#}");
}

fn tls_sim(mode: ServerCertMode, client_auth: ClientAuth, dir: &Path) -> Simulator {
    let mut cfg = sim_config(&["ec-p256"]);
    cfg.tls = Some(TlsConfig {
        server_cert_mode: mode,
        ca_cert_path: Some(dir.join("ca.pem")),
        client_auth,
        client_cert_path: Some(dir.join("client.pem")),
        client_key_path: Some(dir.join("client.key")),
        ..TlsConfig::default()
    });
    start_sim(cfg)
}

fn tls_doctor(mode: ServerCertMode, client_auth: ClientAuth, extra: Value) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let sim = tls_sim(mode, client_auth, dir.path());
    let mut e = json!({ "caPath": dir.path().join("ca.pem") });
    merge(&mut e, extra);
    // `{dir}` in string values stands for the simulator's TLS folder.
    let text = e.to_string().replace("{dir}", dir.path().to_str().unwrap());
    doctor(&sim.url(), serde_json::from_str(&text).unwrap()).0
}

/// The TLS step names the server certificate and gives its SHA-256: the value that, set as
/// `pkcs11.serverCertSha256`, pins it (checked against the certificate OpenSSL reads off the
/// wire).
#[test]
fn tls_with_the_right_ca_passes_and_gives_the_pin_of_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let sim = tls_sim(ServerCertMode::Valid, ClientAuth::None, dir.path());
    let ca = json!({ "caPath": dir.path().join("ca.pem") });
    let (r, _d) = doctor(&sim.url(), ca.clone());
    assert_eq!(r.code, 0, "{:#}", r.doc);
    let tls = r.find("tls", "ok");
    assert!(
        tls["message"]
            .as_str()
            .unwrap()
            .contains("server certificate 'CN=tsb-sim server'"),
        "{tls:#}"
    );
    let pin = tls["details"]["serverCertificate"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = sim.local_addr().to_string();
    let (ok, text) = openssl(&["s_client", "-connect", &addr, "-servername", "localhost"]);
    assert!(ok, "{text}");
    let start = text.find("-----BEGIN CERTIFICATE-----").unwrap();
    let end = text.find("-----END CERTIFICATE-----").unwrap() + 25;
    let der = openssl::x509::X509::from_pem(&text.as_bytes()[start..end])
        .unwrap()
        .to_der()
        .unwrap();
    let want: String = openssl::sha::sha256(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(pin, want);
    let mut pinned = ca;
    merge(
        &mut pinned,
        json!({ "pkcs11": { "serverCertSha256": pin } }),
    );
    let (r, _d) = doctor(&sim.url(), pinned);
    assert_eq!(r.code, 0, "{:#}", r.doc);
    assert!(r.find("tls", "ok")["message"]
        .as_str()
        .unwrap()
        .contains("; pin matches"));
}

#[test]
fn an_untrusted_server_certificate_fails_at_tls_with_ca_path_as_fix() {
    let r = tls_doctor(ServerCertMode::Untrusted, ClientAuth::None, json!({}));
    let c = r.failed_at("tls");
    assert!(c["fix"].as_str().unwrap().contains("caPath"), "{c:#}");
}

#[test]
fn a_server_certificate_for_another_host_fails_at_tls() {
    let r = tls_doctor(ServerCertMode::WrongHost, ClientAuth::None, json!({}));
    let c = r.failed_at("tls");
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("not issued for 'localhost'"),
        "{c:#}"
    );
}

#[test]
fn an_expired_server_certificate_fails_at_tls() {
    let r = tls_doctor(ServerCertMode::Expired, ClientAuth::None, json!({}));
    let c = r.failed_at("tls");
    assert!(c["fix"].as_str().unwrap().contains("expired"), "{c:#}");
}

#[test]
fn a_wrong_certificate_pin_fails_at_tls() {
    let r = tls_doctor(
        ServerCertMode::Valid,
        ClientAuth::None,
        json!({ "pkcs11": { "serverCertSha256": "ab".repeat(32) } }),
    );
    let c = r.failed_at("tls");
    assert!(
        c["message"].as_str().unwrap().contains("serverCertSha256"),
        "{c:#}"
    );
    assert!(
        c["fix"].as_str().unwrap().contains("serverCertSha256"),
        "{c:#}"
    );
}

#[test]
fn mutual_tls_without_a_client_certificate_fails_and_with_one_passes() {
    let r = tls_doctor(ServerCertMode::Valid, ClientAuth::Required, json!({}));
    let c = r.failed_at("tls");
    assert!(c["fix"].as_str().unwrap().contains("certpath"), "{c:#}");
    let r = tls_doctor(
        ServerCertMode::Valid,
        ClientAuth::Required,
        json!({ "authType": "CERT", "certpath": "{dir}/client.pem", "keypath": "{dir}/client.key" }),
    );
    assert_eq!(r.code, 0, "{:#}", r.doc);
    assert!(r.find("tls", "ok")["message"]
        .as_str()
        .unwrap()
        .contains("client certificate presented"));
}

// ---------------------------------------------------------------------------------------
// Authentication

#[test]
fn a_bad_jwt_fails_every_role_with_a_fresh_token_as_fix() {
    let mut cfg = sim_config(&["ec-p256"]);
    cfg.auth.bearer_token = Some("the-right-jwt".into());
    let sim = start_sim(cfg);
    let (r, _d) = doctor(
        &sim.url(),
        json!({ "authType": "TOKEN", "token": "a-wrong-jwt" }),
    );
    r.failed_at("auth");
    let fails: Vec<&Value> = r
        .checks()
        .iter()
        .filter(|c| c["step"] == "auth" && c["status"] == "fail")
        .collect();
    assert_eq!(fails.len(), 3, "{:#}", r.doc);
    assert!(fails[0]["fix"].as_str().unwrap().contains("fresh JWT"));
    let text = r.doc.to_string();
    assert!(!text.contains("a-wrong-jwt") && !text.contains("the-right-jwt"));
    // The right JWT passes.
    let (r, _d) = doctor(
        &sim.url(),
        json!({ "authType": "TOKEN", "token": "the-right-jwt" }),
    );
    assert_eq!(r.code, 0, "{:#}", r.doc);
}

#[test]
fn an_api_key_of_the_wrong_role_is_named_with_the_list_it_belongs_to() {
    let mut cfg = sim_config(&["ec-p256"]);
    cfg.auth.api_keys.key_management = vec!["km-key-1".into()];
    cfg.auth.api_keys.key_operation = vec!["ko-key-1".into()];
    cfg.auth.api_keys.service = vec!["svc-key-1".into()];
    let sim = start_sim(cfg);
    let (r, _d) = doctor(
        &sim.url(),
        json!({ "apiKeys": {
            "KeyManagementToken": ["km-key-1"],
            "KeyOperationToken": ["svc-key-1"],
            "ServiceToken": ["svc-key-1"] } }),
    );
    let c = r.failed_at("auth");
    let m = c["message"].as_str().unwrap();
    assert!(m.starts_with("KeyOperationToken"), "{c:#}");
    assert!(m.contains("accepted as a ServiceToken key"), "{c:#}");
    assert!(c["fix"].as_str().unwrap().contains("wrong list"), "{c:#}");
    // The two right roles pass.
    let oks = r
        .checks()
        .iter()
        .filter(|c| c["step"] == "auth" && c["status"] == "ok")
        .count();
    assert_eq!(oks, 2, "{:#}", r.doc);
    assert!(!r.doc.to_string().contains("svc-key-1"));
    // A missing key of a role that needs one.
    let (r, _d) = doctor(
        &sim.url(),
        json!({ "apiKeys": { "KeyManagementToken": ["km-key-1"], "ServiceToken": ["svc-key-1"] } }),
    );
    let c = r.failed_at("auth");
    assert!(
        c["fix"].as_str().unwrap().contains("KeyOperationToken"),
        "{c:#}"
    );
}

// ---------------------------------------------------------------------------------------
// Keys and answers

#[test]
fn a_tsb_without_keys_fails_at_keys() {
    let sim = start_sim(sim_config(&[]));
    let (r, _d) = doctor(&sim.url(), json!({}));
    let c = r.failed_at("keys");
    assert!(c["message"].as_str().unwrap().contains("no key"), "{c:#}");
}

#[test]
fn keys_the_token_leaves_out_are_listed_with_the_reason() {
    let sim = start_sim(sim_config(&["decrypt-only-rsa", "aes-256"]));
    let (r, _d) = doctor(
        &sim.url(),
        json!({ "pkcs11": { "keys": ["decrypt-only-rsa", "aes-256", "not-there"] } }),
    );
    let c = r.failed_at("keys");
    assert!(
        c["message"].as_str().unwrap().contains("none of the 3"),
        "{c:#}"
    );
    let text = r.doc.to_string();
    assert!(
        text.contains("'decrypt-only-rsa': left out: its sign attribute is false"),
        "{text}"
    );
    let gone = r
        .checks()
        .iter()
        .find(|c| c["details"]["label"] == "not-there")
        .unwrap();
    assert!(gone["fix"]
        .as_str()
        .unwrap()
        .contains("remove 'not-there' from pkcs11.keys"));
}

#[test]
fn fields_the_module_does_not_know_are_reported() {
    let sim = start_sim(sim_config(&["ec-p256", "rsa-2048"]));
    // The attributes as the module reads them (POST, the form Securosys' clients use).
    sim.inject(Fault::extra_field(
        "POST /v1/key/attributes",
        "json.attributes.quantumSafe",
    ));
    sim.inject(Fault::extra_field("GET /v1/versionInfo", "buildTime"));
    let (r, _d) = doctor(&sim.url(), json!({}));
    assert_eq!(r.code, 2, "warnings only: {:#}", r.doc);
    let unknown: Vec<&Value> = r
        .checks()
        .iter()
        .filter(|c| c["step"] == "unknown")
        .collect();
    assert_eq!(unknown.len(), 3, "{:#}", r.doc);
    assert_eq!(unknown[0]["details"]["fields"], json!(["buildTime"]));
    // One warning per key, naming it.
    for label in ["ec-p256", "rsa-2048"] {
        let c = unknown[1..]
            .iter()
            .find(|c| c["details"]["endpoint"].as_str().unwrap().contains(label))
            .unwrap_or_else(|| panic!("no warning names {label}: {:#}", r.doc));
        assert_eq!(
            c["details"]["fields"],
            json!(["json.attributes.quantumSafe"])
        );
    }
    // Without the faults: nothing unknown.
    sim.clear_faults();
    let (r, _d) = doctor(&sim.url(), json!({}));
    assert_eq!(r.code, 0, "{:#}", r.doc);
}

#[test]
fn keys_lists_objects_with_percent_encoded_pkcs11_uris() {
    let sim = start_sim(sim_config(&["ec-p256", "ska-ec-p256", "decrypt-only-rsa"]));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        dir.path(),
        &json!({ "restApi": sim.url(), "pkcs11": { "tokenLabel": "My TSB" } }),
    );
    let r = run(&path, &["keys"]);
    assert_eq!(r.code, 0);
    let keys = r.doc["keys"].as_array().unwrap();
    let labels: Vec<&str> = keys.iter().map(|k| k["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["ec-p256", "ska-ec-p256"]);
    assert_eq!(keys[0]["id"], "0004");
    assert_eq!(
        keys[0]["uri"]["privateKey"],
        "pkcs11:token=My%20TSB;object=ec-p256;id=%00%04;type=private"
    );
    assert!(keys[1]["approval"]
        .as_str()
        .unwrap()
        .starts_with("needs approval"));
    // --all adds the key left out, with its reason.
    let r = run(&path, &["keys", "--all"]);
    let keys = r.doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys[2]["leftOut"]
        .as_str()
        .unwrap()
        .contains("sign attribute"));
}

/// `keys` reads each key's attributes as the module does: `POST /v1/key/attributes` (what
/// Securosys' clients send), and `GET /v1/key/{label}/attributes` only where a TSB does not know
/// the POST form; the fields the module does not know are still reported.
#[test]
fn keys_reads_attributes_by_post_with_the_module_fallback() {
    let sim = start_sim(sim_config(&["ec-p256", "rsa-2048"]));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &json!({ "restApi": sim.url() }));
    let r = run(&path, &["keys"]);
    assert_eq!(r.code, 0, "{:#}", r.doc);
    assert_eq!(r.doc["keys"].as_array().unwrap().len(), 2, "{:#}", r.doc);
    assert!(sim.counter("POST /v1/key/attributes") >= 2);
    assert_eq!(sim.counter("GET /v1/key/attributes"), 0);

    sim.inject(Fault::unknown_endpoint("POST /v1/key/attributes", 404));
    sim.inject(Fault::extra_field(
        "GET /v1/key/attributes",
        "json.attributes.simulatedFlag",
    ));
    let r = run(&path, &["keys"]);
    assert_eq!(r.code, 0, "{:#}", r.doc);
    let keys = r.doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{:#}", r.doc);
    assert!(sim.counter("GET /v1/key/attributes") >= 2);
    assert!(
        r.doc.to_string().contains("simulatedFlag"),
        "unknown fields are reported: {:#}",
        r.doc
    );
}

/// A label with an ESC sequence, a carriage return, a right-to-left override and a forged line.
const HOSTILE: &str = "evil\u{1b}[31m\rOK\u{202e}txt.exe\nFAKE LINE";

/// True for the characters no human-readable output may carry raw (C0 but the line breaks
/// between lines, C1, DEL, Unicode line separators, bidirectional marks and overrides).
fn raw_unsafe(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| {
            (c.is_control() && *c != '\n')
                || matches!(*c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
                || ('\u{202a}'..='\u{202e}').contains(c)
                || ('\u{2066}'..='\u{2069}').contains(c)
        })
        .collect()
}

/// `keys` and `doctor` print TSB labels escaped (issue #19 item 11); `--json` keeps them exact.
#[test]
fn hostile_labels_are_escaped_in_text_and_exact_in_json() {
    let mut cfg = sim_config(&["ec-p256"]);
    cfg.keys
        .push(tsb_sim::KeySpec::ec(HOSTILE, tsb_sim::Curve::P256));
    cfg.keys.push(
        tsb_sim::KeySpec::ec(&format!("pw-{HOSTILE}"), tsb_sim::Curve::P256)
            .with_password("pw1234"),
    );
    let sim = start_sim(cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &json!({ "restApi": sim.url() }));
    let c = path.to_str().unwrap();
    let escaped = "evil\\u{1b}[31m\\rOK\\u{202e}txt.exe\\nFAKE LINE";
    for args in [
        vec!["-c", c, "keys"],
        vec!["-c", c, "keys", "--all"],
        vec!["-c", c, "doctor"],
    ] {
        let out = tsb_pkcs11(&args, &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            raw_unsafe(&text).is_empty(),
            "{args:?}: {:?}\n{text}",
            raw_unsafe(&text)
        );
        assert!(text.contains(escaped), "{args:?}:\n{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("FAKE LINE")),
            "{args:?}: forged line:\n{text}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(raw_unsafe(&err).is_empty(), "{args:?} stderr: {err}");
    }
    // JSON output round-trips the exact label.
    let r = run(&path, &["keys", "--all"]);
    let labels: Vec<&str> = r.doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&HOSTILE), "{labels:?}");
    let r = run(&path, &["doctor"]);
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(m) => m.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(&r.doc, &mut all);
    assert!(all.iter().any(|s| s.contains(HOSTILE)), "{:#}", r.doc);
}

// ---------------------------------------------------------------------------------------
// config init

#[test]
fn config_init_writes_a_private_file_the_module_reads_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("cfg").join("config.json");
    let o = out_path.to_str().unwrap();
    let init = |extra: &[&str]| {
        let mut args = vec!["--json", "config", "init", "-o", o];
        args.extend_from_slice(extra);
        let out = tsb_pkcs11(&args, &[]);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code().unwrap(), doc)
    };
    let (code, doc) = init(&[
        "--url",
        "https://tsb.example.com:8080",
        "--token-env",
        "MY_JWT",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    // The JWT's variable is not set here: a note, not a failure.
    assert!(doc["warnings"].to_string().contains("MY_JWT"), "{doc:#}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let written: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(written["restApi"], "https://tsb.example.com:8080");
    assert_eq!(written["token"], "env:MY_JWT");
    assert!(dir.path().join("cfg").join("config-notes.txt").exists());
    // An existing file is kept unless --force.
    let (code, doc) = init(&["--url", "https://other.example.com"]);
    assert_eq!(code, 1, "{doc:#}");
    assert!(doc["error"].as_str().unwrap().contains("--force"));
    let (code, _) = init(&["--url", "https://other.example.com", "--force"]);
    assert_eq!(code, 0);
    let written: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(written["restApi"], "https://other.example.com");
}

#[test]
fn config_init_takes_over_a_notation_plugin_config_with_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let src_dir = dir.path().join("notation");
    std::fs::create_dir_all(&src_dir).unwrap();
    std::fs::write(src_dir.join("client.pem"), b"").unwrap();
    let src = src_dir.join("config.json");
    std::fs::write(
        &src,
        json!({
            "restApi": "https://tsb.example.com:8080",
            "authType": "CERT",
            "certpath": "client.pem",
            "keypath": "client.key",
            "apiKeys": { "KeyOperationToken": ["a-literal-api-key"] },
            "metaData": { "team": "build" }
        })
        .to_string(),
    )
    .unwrap();
    let out_path = dir.path().join("out").join("config.json");
    let out = tsb_pkcs11(
        &[
            "--json",
            "config",
            "init",
            "--from-notation",
            src.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
        ],
        &[],
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let written: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(
        written["certpath"],
        src_dir.join("client.pem").to_str().unwrap()
    );
    assert_eq!(
        written["keypath"],
        src_dir.join("client.key").to_str().unwrap()
    );
    assert_eq!(written["metaData"], json!({ "team": "build" }));
    assert_eq!(written["pkcs11"], json!({}));
    let warnings = doc["warnings"].to_string();
    assert!(
        warnings.contains("literal secrets copied (apiKeys.KeyOperationToken)"),
        "{doc:#}"
    );
    assert!(!warnings.contains("a-literal-api-key"));
    assert_eq!(doc["ok"], true, "{doc:#}");
}

// ---------------------------------------------------------------------------------------
// Several nodes (issue #13)

#[test]
fn every_node_of_a_cluster_is_checked_and_a_down_node_is_a_warning() {
    let sim = common::start_cluster(sim_config(&["ec-p256"]), 3);
    let urls = sim.urls();
    sim.set_listener_fault(1, tsb_sim::NodeFault::Down).unwrap();
    sim.set_listener_fault(2, tsb_sim::NodeFault::Unavailable)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = json!({
        "restApi": urls,
        "pkcs11": { "requestTimeoutMs": 3000, "connectTimeoutMs": 1000, "nodeStrategy": "spread" }
    });
    let r = run(&config_file(dir.path(), &c), &["doctor"]);
    let nodes: Vec<&Value> = r.checks().iter().filter(|c| c["step"] == "node").collect();
    assert_eq!(nodes.len(), 3, "{:#}", r.doc);
    assert_eq!(nodes[0]["status"], "ok", "{:#}", nodes[0]);
    assert!(nodes[0]["message"].as_str().unwrap().contains(&urls[0]));
    for (c, url) in nodes[1..].iter().zip(&urls[1..]) {
        assert_eq!(c["status"], "warn", "{c:#}");
        let m = c["message"].as_str().unwrap();
        assert!(m.contains(url) && m.contains("down"), "{m}");
    }
    assert!(nodes[2]["message"].as_str().unwrap().contains("503"));
    let cluster = r.find("cluster", "info");
    assert!(
        cluster["message"]
            .as_str()
            .unwrap()
            .starts_with("1 of 3 nodes up"),
        "{cluster:#}"
    );
    // Node 2 refuses connections: its TCP check is a warning, as the module does without it.
    assert!(
        r.checks().iter().all(|c| c["status"] != "fail"),
        "{:#}",
        r.doc
    );
    assert_eq!(r.code, 2, "works, with warnings: {:#}", r.doc);
    // The module's own checks (auth, keys) pass through the node that is up.
    r.find("auth", "ok");

    // Every node down: the doctor fails.
    sim.set_listener_fault(0, tsb_sim::NodeFault::Down).unwrap();
    let r = run(&config_file(dir.path(), &c), &["doctor"]);
    assert_eq!(r.code, 1, "{:#}", r.doc);
}

// ---------------------------------------------------------------------------------------
// From a key to a certificate: `csr` and `attest`

/// `openssl ARGS`: exit status and stdout+stderr.
fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Checks a request file with `openssl req -verify` and returns its text form; its public key
/// must be the simulator's key `label`.
fn checked_request(sim: &Simulator, label: &str, file: &Path) -> String {
    let f = file.to_str().unwrap();
    let (ok, text) = openssl(&["req", "-in", f, "-verify", "-noout", "-text"]);
    assert!(
        ok,
        "openssl req -verify refuses the request of {label}: {text}"
    );
    assert!(
        text.contains("verify OK"),
        "{label}: no 'verify OK' from openssl: {text}"
    );
    let req = openssl::x509::X509Req::from_pem(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(
        req.public_key().unwrap().public_key_to_der().unwrap(),
        sim.public_key_der(label).unwrap(),
        "{label}: the request names the key's public key"
    );
    text
}

#[test]
fn csr_for_every_key_type_verifies_with_openssl_and_carries_subject_and_sans() {
    let keys = ["rsa-2048", "ec-p256", "ec-p384", "ec-p521", "ed25519"];
    let sim = start_sim(sim_config(&keys));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &json!({ "restApi": sim.url() }));
    let cfg = path.to_str().unwrap();
    for (label, algorithm) in [
        ("rsa-2048", "sha256WithRSAEncryption"),
        ("ec-p256", "ecdsa-with-SHA256"),
        ("ec-p384", "ecdsa-with-SHA384"),
        ("ec-p521", "ecdsa-with-SHA512"),
        ("ed25519", "ED25519"),
    ] {
        let file = dir.path().join(format!("{label}.csr"));
        let out = tsb_pkcs11(
            &[
                "-c",
                cfg,
                "csr",
                label,
                "--subject",
                "CN=host.example,O=Example Org,C=CH",
                "--san",
                "DNS:a.example",
                "--san",
                "IP:1.2.3.4",
                "--san",
                "IP:2001:db8::1",
                "-o",
                file.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = checked_request(&sim, label, &file);
        assert!(
            text.contains("Subject: C = CH, O = Example Org, CN = host.example"),
            "{label}: {text}"
        );
        for san in [
            "DNS:a.example",
            "IP Address:1.2.3.4",
            "IP Address:2001:DB8:0:0:0:0:0:1",
        ] {
            assert!(text.contains(san), "{label}: {san} missing: {text}");
        }
        assert!(
            text.contains(&format!("Signature Algorithm: {algorithm}")),
            "{label}: {text}"
        );
    }
    // Without -o the PEM goes to stdout, and nothing else does.
    let out = tsb_pkcs11(&["-c", cfg, "csr", "ec-p256", "--subject", "CN=x"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{stdout}"
    );
    assert!(stdout
        .trim_end()
        .ends_with("-----END CERTIFICATE REQUEST-----"));
    // Bad input is refused before the key signs anything.
    let before = sim.requests().len();
    for bad in [
        vec!["--subject", "CN=x", "--san", "a.example"],
        vec!["--subject", "CN=x", "--san", "IP:1.2.3"],
        vec!["--subject", "not a name"],
    ] {
        let mut args = vec!["-c", cfg, "csr", "ec-p256"];
        args.extend(bad.iter());
        let out = tsb_pkcs11(&args, &[]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(out.stdout.is_empty(), "{bad:?}");
    }
    assert_eq!(
        sim.requests().len(),
        before,
        "no signature for refused input"
    );
}

#[test]
fn csr_with_an_approval_key_announces_the_wait_and_is_signed_once_approved() {
    use std::io::BufRead;
    let sim = start_sim(sim_config(&["ska-ec-p256"]));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        dir.path(),
        &json!({ "restApi": sim.url(), "pkcs11": { "pollIntervalMs": 20, "pollIntervalMaxMs": 50 } }),
    );
    let file = dir.path().join("ska.csr");
    let mut child = Command::new(common::built_command())
        .args([
            "-c",
            path.to_str().unwrap(),
            "csr",
            "ska-ec-p256",
            "--subject",
            "CN=approved.example",
            "-o",
            file.to_str().unwrap(),
        ])
        .env_remove("TSB_PKCS11_CONFIG")
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // The wait is announced on stderr: the request id and who must approve.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut lines = Vec::new();
    let id = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("no announcement of the approval wait on stderr: {lines:?}")
            });
        lines.push(line.clone());
        if let Some(rest) = line.split("approval request ").nth(1) {
            if line.contains("filed for key 'ska-ec-p256'") {
                assert!(line.contains("alice, bob"), "who must approve: {line}");
                break rest.split_whitespace().next().unwrap().to_string();
            }
        }
    };
    assert!(!file.exists(), "nothing written before the approval");
    sim.approve(&id, "alice").unwrap();
    let status = child.wait().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{lines:?} {rest:?}");
    checked_request(&sim, "ska-ec-p256", &file);
}

#[test]
fn attest_is_verified_written_and_a_tampered_attestation_is_refused() {
    let sim = start_sim(sim_config(&["ska-ec-p256"]));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &json!({ "restApi": sim.url() }));
    let out_dir = dir.path().join("att");
    let r = run(
        &path,
        &["attest", "ska-ec-p256", "-o", out_dir.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{:#} {}", r.doc, r.stderr);
    assert_eq!(r.doc["facts"]["generatedInside"], true, "{:#}", r.doc);
    assert_eq!(r.doc["facts"]["neverExtractable"], true, "{:#}", r.doc);
    assert!(
        r.doc["policy"]
            .as_str()
            .unwrap()
            .contains("1 of [alice, bob]"),
        "{:#}",
        r.doc
    );
    assert_eq!(r.doc["anchored"], false);
    assert_eq!(
        B64.decode(r.doc["publicKey"].as_str().unwrap()).unwrap(),
        sim.public_key_der("ska-ec-p256").unwrap()
    );
    // What was written verifies with OpenSSL alone: the chain, and the XML's signature under
    // the attestation key (Securosys' own verification steps).
    let f = |ext: &str| out_dir.join(format!("ska-ec-p256.{ext}"));
    let chain = std::fs::read(f("chain.pem")).unwrap();
    let certs = openssl::x509::X509::stack_from_pem(&chain).unwrap();
    assert_eq!(certs.len(), 3);
    let root = dir.path().join("root.pem");
    std::fs::write(&root, certs[2].to_pem().unwrap()).unwrap();
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        root.to_str().unwrap(),
        "-untrusted",
        f("chain.pem").to_str().unwrap(),
        f("chain.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        f("attestation-key.pem").to_str().unwrap(),
        "-signature",
        f("sig").to_str().unwrap(),
        f("xml").to_str().unwrap(),
    ]);
    assert!(ok && text.contains("Verified OK"), "{text}");
    // Anchored in the given root; the saved files check again offline.
    let r = run(
        &path,
        &[
            "attest",
            "ska-ec-p256",
            "--from",
            out_dir.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{:#} {}", r.doc, r.stderr);
    assert_eq!(r.doc["anchored"], true);
    // Another root: refused.
    let other = dir.path().join("other-root.pem");
    std::fs::write(&other, certs[1].to_pem().unwrap()).unwrap();
    let bad_root = tsb_pkcs11(
        &[
            "attest",
            "ska-ec-p256",
            "--from",
            out_dir.to_str().unwrap(),
            "--root",
            other.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(bad_root.status.code(), Some(1));
    // A tampered attestation (the key made to look exportable, which it is not):
    // the signature no longer verifies, and the command refuses it.
    let xml = std::fs::read_to_string(f("xml")).unwrap();
    assert!(xml.contains("<extractable>false</extractable>"), "{xml}");
    std::fs::write(
        f("xml"),
        xml.replace(
            "<extractable>false</extractable>",
            "<extractable>true</extractable>",
        ),
    )
    .unwrap();
    let out = tsb_pkcs11(
        &["attest", "ska-ec-p256", "--from", out_dir.to_str().unwrap()],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("REFUSED") && stderr.contains("signature does not verify"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
