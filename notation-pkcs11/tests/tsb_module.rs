//! End-to-end tests: the built `notation-pkcs11` binary driven exactly as Notation drives it
//! (`notation-pkcs11 <command>`, JSON request on stdin, JSON response on stdout) against this
//! project's PKCS#11 module `libtsb_pkcs11.so` and the in-process TSB simulator.
//!
//! Each key spec is signed with three kinds of certificate: one the TSB made itself
//! (`POST /v1/certificate/synchronous/selfsign`), one issued by an OpenSSL test CA and stored on
//! the token with `C_CreateObject` (the module imports it with
//! `POST /v1/certificate/import/plain`), and a chain from the module's `pkcs11.certificates`.
//! Signatures and the JWS envelopes Notation would assemble are verified with OpenSSL alone.
//! Smart Key Attributes keys are approved (or rejected) by a thread acting as the approvers.
//!
//! The module is `target/<profile>/libtsb_pkcs11.so` (or `TSB_PKCS11_MODULE`). Cargo does not
//! build it for this package: the test support crate's `built_module()` builds it once per
//! test process (tests/support/src/built.rs says how, and why over the whole workspace).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, CertificateType, ObjectClass};
use openssl::pkey::{PKey, Public};
use openssl::x509::X509;
use serde_json::{json, Value};
use tsb_sim::{SimConfig, Simulator};

// ---------------------------------------------------------------- the module and the TSB

/// `libtsb_pkcs11.so`, built if needed (once per test process, by the test support crate).
fn module() -> PathBuf {
    tsb_pkcs11_test_support::built_module()
}

/// The simulator's key cache, shared with the root crate's tests (RSA-4096 is generated once).
fn sim_state_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir")
        .join("tsb-sim-state")
}

/// A simulator holding the demo keys whose labels are given (all of them when empty).
fn start_sim(labels: &[&str]) -> Simulator {
    let mut cfg = SimConfig::demo();
    cfg.state_dir = Some(sim_state_dir());
    if !labels.is_empty() {
        cfg.keys.retain(|k| labels.contains(&k.label.as_str()));
    }
    cfg.approved_execution_delay_ms = 100;
    Simulator::start(cfg).expect("simulator starts")
}

/// One test's world: a TSB simulator, a module configuration pointing at it, and the plugin
/// target (module path, environment) Notation would use.
struct Tsb {
    sim: Simulator,
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    target: Target,
}

impl Tsb {
    fn new(labels: &[&str]) -> Tsb {
        Tsb::with_settings(labels, json!({}))
    }

    /// `settings` is the module configuration's `pkcs11` object.
    fn with_settings(labels: &[&str], settings: Value) -> Tsb {
        let sim = start_sim(labels);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tsb.json");
        let log = dir.path().join("plugin.log");
        let mut tsb = Tsb {
            sim,
            target: Target {
                module: module().display().to_string(),
                token: None,
                pin: None,
                env: vec![
                    ("TSB_PKCS11_CONFIG".into(), config.display().to_string()),
                    // Module log lines go to this file: stderr carries only the JSON error.
                    ("NOTATION_PKCS11_LOG".into(), log.display().to_string()),
                    ("TSB_PKCS11_LOG".into(), "info".into()),
                ],
            },
            dir,
            config,
            log,
        };
        tsb.write_config(settings);
        tsb
    }

    /// (Re)writes the module configuration (mode 0600, as the module requires).
    fn write_config(&mut self, mut settings: Value) {
        settings["pollIntervalMs"] = json!(50);
        settings["pollIntervalMaxMs"] = json!(200);
        let cfg = json!({ "restApi": self.sim.url(), "pkcs11": settings });
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&self.config)
            .unwrap();
        f.write_all(&serde_json::to_vec_pretty(&cfg).unwrap())
            .unwrap();
    }

    fn public_key(&self, label: &str) -> PKey<Public> {
        PKey::public_key_from_der(&self.sim.public_key_der(label).expect("sim key")).unwrap()
    }

    /// Asks the TSB to make a self-signed code-signing certificate for the key
    /// (`POST /v1/certificate/synchronous/selfsign`), which it also stores for the key.
    fn selfsign(&self, label: &str) -> X509 {
        let (status, body) = http_post_json(
            &self.sim.url(),
            "/v1/certificate/synchronous/selfsign",
            &json!({
                "signKeyName": label,
                "validity": 30,
                "commonName": format!("{label} (TSB self-signed)"),
                "keyUsage": ["DIGITAL_SIGNATURE"],
                "extendedKeyUsage": ["CODE_SIGNING"],
                "certificateAuthority": false,
            }),
        );
        assert_eq!(status, 200, "selfsign: {body}");
        let pem = body["certificate"].as_str().expect("certificate PEM");
        let cert = X509::from_pem(pem.as_bytes()).expect("PEM certificate");
        assert_eq!(
            self.sim.certificate_der(label),
            Some(cert.to_der().unwrap()),
            "the TSB stores the self-signed certificate for the key"
        );
        cert
    }

    /// Stores `cert` on the token for key `label` through PKCS#11 (`C_CreateObject` in a
    /// read-write session, as `pkcs11-tool --write-object` does), in a module instance of its
    /// own; the module imports it into the TSB.
    fn store_on_token(&self, label: &str, cert: &X509) {
        // In a child process (this test binary, [`store_on_token_child`]) that gets
        // TSB_PKCS11_CONFIG with `Command::env`: the test process never changes its own
        // environment (other threads may be reading it).
        let der = self.dir.path().join(format!("{label}.der"));
        std::fs::write(&der, cert.to_der().unwrap()).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store_on_token_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(STORE_CHILD, &der)
            .env(STORE_LABEL, label)
            .env("TSB_PKCS11_CONFIG", &self.config)
            .env_remove("TSB_PKCS11_LOG_FILE")
            .output()
            .expect("re-run this test binary");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the C_CreateObject child failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            self.sim.certificate_der(label),
            Some(cert.to_der().unwrap()),
            "C_CreateObject stored the certificate on the TSB"
        );
    }

    fn write_pem(&self, name: &str, certs: &[&X509]) -> PathBuf {
        let path = self.dir.path().join(name);
        let pem: Vec<u8> = certs.iter().flat_map(|c| c.to_pem().unwrap()).collect();
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A minimal HTTP/1.1 POST of a JSON body to the (plain-HTTP) simulator: (status, JSON body).
fn http_post_json(base_url: &str, path: &str, body: &Value) -> (u16, Value) {
    let host = base_url
        .strip_prefix("http://")
        .expect("plain-HTTP simulator")
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(host).expect("connect to the simulator");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = serde_json::to_vec(body).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status");
    let mut payload = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    let value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    (status, value)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The demo key labelled for each entry of [`SPECS`].
const LABELS: [&str; 6] = [
    "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ec-p521",
];

// ---------------------------------------------------------------- signing

/// generate-signature for the key of SPECS[i] over Notation's JWS signing input (with
/// `certChain` in `pluginConfig` when given); checks the response, verifies the signature with
/// the leaf by OpenSSL, and verifies the JWS envelope. Returns the chain.
fn sign_and_verify(t: &Target, i: usize, cert_chain: Option<&Path>) -> Vec<X509> {
    let (spec, hash, alg, _, _, field_len) = SPECS[i];
    let label = LABELS[i];
    let jws = JwsToSign::new(jws_alg(alg));
    let mut req = t.sign_request(label, spec, hash, &jws.signing_input);
    if let Some(p) = cert_chain {
        req["pluginConfig"]["certChain"] = json!(p.display().to_string());
    }
    let resp = t.run("generate-signature", &req).ok();
    assert_eq!(resp["keyId"], label);
    assert_eq!(resp["signingAlgorithm"], alg);
    let chain = decode_chain(&resp);
    assert_chain_ordered(&chain);
    let sig = STANDARD
        .decode(resp["signature"].as_str().unwrap())
        .unwrap();
    if field_len > 0 {
        assert_eq!(sig.len(), 2 * field_len, "ECDSA signature must be r‖s");
    }
    assert!(
        openssl_verify(&chain[0], alg, &jws.signing_input, &sig),
        "{spec}: the signature does not verify with the leaf"
    );
    assert!(!openssl_verify(&chain[0], alg, b"something else", &sig));
    assert!(
        verify_jws_envelope(&jws.envelope(&resp)),
        "{spec}: the JWS envelope does not verify"
    );
    chain
}

fn ders(chain: &[X509]) -> Vec<Vec<u8>> {
    chain.iter().map(|c| c.to_der().unwrap()).collect()
}

/// One key spec with each kind of certificate.
fn every_certificate_source(i: usize) {
    let (spec, hash, ..) = SPECS[i];
    let label = LABELS[i];
    let mut tsb = Tsb::new(&[label]);
    let t = tsb.target.clone();

    assert_eq!(
        t.describe_key(label).ok(),
        json!({"keyId": label, "keySpec": spec})
    );

    // No certificate yet: generate-signature cannot answer, and nothing is signed.
    let m = t
        .generate_signature(label, spec, hash, b"payload")
        .err_code("VALIDATION_ERROR");
    assert!(m.contains("no certificate"), "{m}");
    assert!(tsb.sim.requests().is_empty());

    // 1. The TSB's self-signed certificate: the chain is that one certificate.
    let selfsigned = tsb.selfsign(label);
    let chain = sign_and_verify(&t, i, None);
    assert_eq!(ders(&chain), ders(&[selfsigned]));

    // 2. A leaf issued by a test CA and stored on the token with C_CreateObject; the CA
    //    certificates come from the plugin's certChain file.
    let root = code_signing_root("Notation Test Root");
    let inter = root.intermediate("Notation Test Intermediate");
    let leaf = inter.issue(&format!("{label} code signing"), &tsb.public_key(label));
    tsb.store_on_token(label, &leaf);
    let cas = tsb.write_pem("cas.pem", &[&inter.cert, &root.cert]);
    let chain = sign_and_verify(&t, i, Some(&cas));
    assert_eq!(
        ders(&chain),
        ders(&[leaf.clone(), inter.cert.clone(), root.cert.clone()])
    );

    // 3. The whole chain from the module's pkcs11.certificates: leaf and root are token
    //    objects, no certChain needed.
    let other_root = code_signing_root("Configured Root");
    let other_leaf = other_root.issue(&format!("{label} (configured)"), &tsb.public_key(label));
    let chain_file = tsb.write_pem("chain.pem", &[&other_leaf, &other_root.cert]);
    tsb.write_config(json!({ "certificates": { label: chain_file } }));
    let chain = sign_and_verify(&t, i, None);
    assert_eq!(ders(&chain), ders(&[other_leaf, other_root.cert]));

    // Each generate-signature made exactly one TSB signature, without approvals.
    let signs: Vec<_> = tsb
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.key == label)
        .collect();
    assert_eq!(signs.len(), 3, "one TSB signature per generate-signature");
    assert!(signs
        .iter()
        .all(|r| r.endpoint == "POST /v1/synchronousSign"));
}

#[test]
fn rsa_2048_with_every_certificate_source() {
    every_certificate_source(0);
}

#[test]
fn rsa_3072_with_every_certificate_source() {
    every_certificate_source(1);
}

#[test]
fn rsa_4096_with_every_certificate_source() {
    every_certificate_source(2);
}

#[test]
fn ec_256_with_every_certificate_source() {
    every_certificate_source(3);
}

#[test]
fn ec_384_with_every_certificate_source() {
    every_certificate_source(4);
}

#[test]
fn ec_521_with_every_certificate_source() {
    every_certificate_source(5);
}

#[test]
fn describe_key_for_every_key_on_the_tsb() {
    let tsb = Tsb::new(&[]);
    for (i, label) in LABELS.iter().enumerate() {
        assert_eq!(
            tsb.target.describe_key(label).ok(),
            json!({"keyId": label, "keySpec": SPECS[i].0})
        );
    }
    // Keys Notation cannot use are named as such.
    let m = tsb
        .target
        .describe_key("ed25519")
        .err_code("VALIDATION_ERROR");
    assert!(m.contains("not support"), "{m}");
    assert!(tsb.sim.requests().is_empty(), "describe-key never signs");
}

// ---------------------------------------------------------------- Smart Key Attributes

const SKA: &str = "ska-ec-p256";

/// A TSB with the SKA key and a CA-issued certificate for it on the token (the TSB cannot
/// self-sign with a key that needs approvals).
fn ska_tsb() -> (Tsb, Ca) {
    let tsb = Tsb::new(&[SKA]);
    let root = code_signing_root("SKA Root");
    let leaf = root.issue("SKA signer", &tsb.public_key(SKA));
    tsb.store_on_token(SKA, &leaf);
    (tsb, root)
}

/// Waits for the simulator's first PENDING request for `key` and returns its id.
fn pending_request(sim: &Simulator, key: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(id) = sim
            .requests()
            .into_iter()
            .find(|r| r.key == key && r.status == "PENDING")
            .and_then(|r| r.id)
        {
            return id;
        }
        assert!(Instant::now() < deadline, "no PENDING request for {key}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ska_key_signs_once_approved() {
    let (tsb, root) = ska_tsb();
    let cas = tsb.write_pem("root.pem", &[&root.cert]);
    let jws = JwsToSign::new("ES256");
    let mut req = tsb
        .target
        .sign_request(SKA, "EC-256", "SHA-256", &jws.signing_input);
    req["pluginConfig"]["certChain"] = json!(cas.display().to_string());
    let started = Instant::now();
    let approver = {
        let sim = &tsb.sim;
        std::thread::scope(|scope| {
            let plugin = scope.spawn(|| tsb.target.run("generate-signature", &req));
            let id = pending_request(sim, SKA);
            // The plugin is waiting for the approval.
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                !plugin.is_finished(),
                "generate-signature must wait for approval"
            );
            sim.approve(&id, "alice").expect("alice approves");
            (id, plugin.join().unwrap())
        })
    };
    let (id, run) = approver;
    let resp = run.ok();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(tsb.sim.request_status(&id).as_deref(), Some("EXECUTED"));
    let chain = decode_chain(&resp);
    assert_eq!(chain.len(), 2);
    assert_chain_ordered(&chain);
    let sig = STANDARD
        .decode(resp["signature"].as_str().unwrap())
        .unwrap();
    assert_eq!(sig.len(), 64);
    assert!(openssl_verify(
        &chain[0],
        "ECDSA-SHA-256",
        &jws.signing_input,
        &sig
    ));
    assert!(verify_jws_envelope(&jws.envelope(&resp)));
    // One approval request, through the asynchronous endpoint.
    let records: Vec<_> = tsb
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.key == SKA)
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].endpoint, "POST /v1/sign");
    assert_eq!(records[0].approved_by, vec!["alice".to_string()]);
}

#[test]
fn rejected_ska_request_is_access_denied() {
    let (tsb, root) = ska_tsb();
    let cas = tsb.write_pem("root.pem", &[&root.cert]);
    let mut req = tsb
        .target
        .sign_request(SKA, "EC-256", "SHA-256", b"payload");
    req["pluginConfig"]["certChain"] = json!(cas.display().to_string());
    let (id, run) = std::thread::scope(|scope| {
        let plugin = scope.spawn(|| tsb.target.run("generate-signature", &req));
        let id = pending_request(&tsb.sim, SKA);
        tsb.sim.reject(&id, "bob").expect("bob rejects");
        (id, plugin.join().unwrap())
    });
    let m = run.err_code("ACCESS_DENIED");
    assert!(m.contains("CKR_FUNCTION_REJECTED"), "{m}");
    assert_eq!(tsb.sim.request_status(&id).as_deref(), Some("REJECTED"));
    // The module's own account of it went to the NOTATION_PKCS11_LOG file, not to stderr.
    assert!(tsb.log_text().contains(SKA), "{}", tsb.log_text());
}

// ---------------------------------------------------------------- bad requests

#[test]
fn bad_requests_give_the_contract_error_codes() {
    let tsb = Tsb::new(&["ec-p256", "rsa-2048"]);
    tsb.selfsign("ec-p256");
    let t = &tsb.target;

    // Unknown key.
    let m = t.describe_key("no-such-key").err_code("VALIDATION_ERROR");
    assert!(m.contains("'no-such-key' not found"), "{m}");
    t.generate_signature("no-such-key", "EC-256", "SHA-256", b"p")
        .err_code("VALIDATION_ERROR");

    // Key spec or hash that is not the key's.
    let m = t
        .generate_signature("ec-p256", "EC-384", "SHA-384", b"p")
        .err_code("VALIDATION_ERROR");
    assert!(m.contains("does not match key 'ec-p256'"), "{m}");
    t.generate_signature("ec-p256", "RSA-2048", "SHA-256", b"p")
        .err_code("VALIDATION_ERROR");
    t.generate_signature("ec-p256", "EC-256", "SHA-512", b"p")
        .err_code("VALIDATION_ERROR");
    // A key without a certificate.
    let m = t
        .generate_signature("rsa-2048", "RSA-2048", "SHA-256", b"p")
        .err_code("VALIDATION_ERROR");
    assert!(m.contains("no certificate"), "{m}");

    // Unsupported contract version.
    for command in ["describe-key", "generate-signature"] {
        let mut req = t.sign_request("ec-p256", "EC-256", "SHA-256", b"p");
        req["contractVersion"] = json!("2.0");
        t.run(command, &req)
            .err_code("UNSUPPORTED_CONTRACT_VERSION");
    }

    // Malformed JSON.
    for command in ["describe-key", "generate-signature"] {
        let run = run_plugin(
            &[command],
            br#"{"contractVersion": "1.0", "keyId": "#,
            &t.env,
        );
        run.err_code("VALIDATION_ERROR");
    }

    // None of these reached the TSB's signing endpoints.
    assert!(tsb.sim.requests().is_empty());
    // And a good request still works after all that.
    let resp = t
        .generate_signature("ec-p256", "EC-256", "SHA-256", b"p")
        .ok();
    assert_eq!(resp["signingAlgorithm"], "ECDSA-SHA-256");
}

// ---------------------------------------------------------------- installation layout

#[test]
fn module_beside_the_plugin_needs_no_module_setting() {
    // ~/.config/notation/plugins/pkcs11/{notation-pkcs11, libtsb_pkcs11.so}, as docs/notation.md
    // describes; pluginConfig without "module".
    let tsb = Tsb::new(&["ec-p256"]);
    let selfsigned = tsb.selfsign("ec-p256");
    let plugin_dir = tsb.dir.path().join("plugins/pkcs11");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let plugin = plugin_dir.join("notation-pkcs11");
    std::fs::copy(PLUGIN, &plugin).unwrap();
    std::fs::copy(module(), plugin_dir.join("libtsb_pkcs11.so")).unwrap();
    let req = json!({
        "contractVersion": "1.0",
        "keyId": "ec-p256",
        "pluginConfig": {},
        "keySpec": "EC-256",
        "hashAlgorithm": "SHA-256",
        "payload": STANDARD.encode(b"payload"),
    });
    let resp = run_plugin_at(
        &plugin,
        &["generate-signature"],
        serde_json::to_string(&req).unwrap().as_bytes(),
        &tsb.target.env,
    )
    .ok();
    let chain = decode_chain(&resp);
    assert_eq!(ders(&chain), ders(&[selfsigned]));
    let sig = STANDARD
        .decode(resp["signature"].as_str().unwrap())
        .unwrap();
    assert!(openssl_verify(&chain[0], "ECDSA-SHA-256", b"payload", &sig));
}

/// Set in the child of `Tsb::store_on_token`: the certificate (DER) to store.
const STORE_CHILD: &str = "TSB_NOTATION_STORE_CERT";
/// Its label.
const STORE_LABEL: &str = "TSB_NOTATION_STORE_LABEL";

/// The child process of `Tsb::store_on_token` (a no-op otherwise): stores a certificate on the
/// token with `C_CreateObject` in a read-write session, as `pkcs11-tool --write-object` does.
#[test]
fn store_on_token_child() {
    let Some(der) = std::env::var_os(STORE_CHILD) else {
        return;
    };
    let label = std::env::var(STORE_LABEL).expect("label");
    let der = std::fs::read(der).unwrap();
    let pkcs11 = Pkcs11::new(module()).expect("load module");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = pkcs11.get_slots_with_token().unwrap()[0];
    let session = pkcs11.open_rw_session(slot).unwrap();
    session
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Label(label.into_bytes()),
            Attribute::Value(der),
        ])
        .expect("C_CreateObject");
    drop(session);
    pkcs11.finalize().unwrap();
}
