//! Issue #6 part 5, "transport security": the built module against the simulator over TLS.
//!
//! - rustls with the system roots plus `caPath`: the simulator's CA is trusted only through
//!   `caPath`; a server certificate from another CA, an expired one and one for another host
//!   name are refused (`CKR_DEVICE_ERROR` and a log line saying why);
//! - `pkcs11.serverCertSha256` pins the server's end-entity certificate (on top of the chain
//!   check): the right pin signs, a wrong pin is refused;
//! - mTLS with `authType` CERT, `certpath` and `keypath`: signs when the TSB requires a client
//!   certificate; without one (or with one from another CA) the call fails;
//! - plain `http://` only to loopback unless `allowInsecureHttp` (the non-loopback address used
//!   here, 192.0.2.1 from TEST-NET-1, is never contacted: the module does no network I/O in
//!   `C_Initialize`, and nothing else is called);
//! - bad TLS files in the configuration make `C_Initialize` fail naming the field.
//!
//! Every signature is verified with OpenSSL against the key the simulator holds.

use tsb_pkcs11_test_support as common;
use tsb_pkcs11_test_support::netsec;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::verify::{self, Hash};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki_sys::*;
use netsec::{assert_rv, initialize_with, logged, report, timed, ConfigFile, Logged};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use serde_json::{json, Value};
use tsb_sim::{ClientAuth, ServerCertMode, SimConfig, TlsConfig};

/// The simulator with two keys over TLS; its CA (and for mTLS a client certificate and key)
/// written into `dir`.
fn tls_sim(mode: ServerCertMode, client_auth: ClientAuth, dir: &Path) -> SimConfig {
    let mut cfg = SimConfig::fast_test();
    cfg.keys
        .retain(|k| k.label == "ec-p256" || k.label == "rsa-2048");
    cfg.tls = Some(TlsConfig {
        server_cert_mode: mode,
        ca_cert_path: Some(dir.join("ca.pem")),
        client_auth,
        client_cert_path: Some(dir.join("client.pem")),
        client_key_path: Some(dir.join("client.key")),
        ..TlsConfig::default()
    });
    cfg
}

/// A module configuration for `url` with `extra` merged in at the top level and into `pkcs11`.
fn module_config(url: &str, top: Value, pkcs11: Value) -> Value {
    let mut c = json!({
        "restApi": url,
        "pkcs11": { "requestTimeoutMs": 3000, "connectTimeoutMs": 1000, "cacheTtlSecs": 0 }
    });
    if let Value::Object(m) = top {
        for (k, v) in m {
            c[k] = v;
        }
    }
    if let Value::Object(m) = pkcs11 {
        for (k, v) in m {
            c["pkcs11"][k] = v;
        }
    }
    c
}

struct Tls {
    h: Logged,
    dir: tempfile::TempDir,
}

impl Tls {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// A TLS simulator and the module configured by `config(url, dir)`.
fn tls(
    mode: ServerCertMode,
    client_auth: ClientAuth,
    config: impl FnOnce(&str, &Path) -> Value,
) -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let h = logged(tls_sim(mode, client_auth, &path), "warn", |url| {
        config(url, &path)
    });
    Tls { h, dir }
}

/// Finds ec-p256, signs with ECDSA-SHA256 and verifies with OpenSSL.
fn signs(h: &Logged) {
    let s = h.session();
    let k = h.private_key(&s, "ec-p256");
    let sig = s
        .sign(&Mechanism::EcdsaSha256, k, b"over tls")
        .expect("sign");
    assert!(verify::ecdsa(
        &h.sim_public_key("ec-p256"),
        Hash::Sha256,
        b"over tls",
        &sig
    ));
    let k = h.private_key(&s, "rsa-2048");
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, k, b"over tls")
        .expect("sign");
    assert!(verify::rsa_pkcs1(
        &h.sim_public_key("rsa-2048"),
        Hash::Sha256,
        b"over tls",
        &sig
    ));
}

/// The first object search fails with `CKR_DEVICE_ERROR` (quickly: TLS failures are not
/// timeouts) and a log line holding `why` explains it. Returns that line.
fn refused(h: &Logged, why: &str) -> String {
    let s = h.session();
    let (r, took) = timed(|| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec-p256".to_vec()),
        ])
    });
    report(&format!("refused TLS ({why})"), took);
    assert_rv(r, RvError::DeviceError);
    assert!(took < Duration::from_millis(2000), "{took:?}");
    let lines = h.lines_with("CKR_DEVICE_ERROR");
    let line = lines
        .iter()
        .find(|l| l.contains(why))
        .unwrap_or_else(|| panic!("no log line with {why:?}:\n{}", h.log_text()));
    line.clone()
}

/// SHA-256 (hex) of the server's end-entity certificate, read with an OpenSSL client that
/// does not verify it.
fn server_cert_sha256(h: &Logged) -> String {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let connector = b.build();
    let tcp = std::net::TcpStream::connect(h.sim.local_addr()).unwrap();
    let stream = connector
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect("localhost", tcp)
        .expect("TLS handshake");
    let der = stream
        .ssl()
        .peer_certificate()
        .expect("cert")
        .to_der()
        .unwrap();
    hex(&openssl::sha::sha256(&der))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Server certificate verification

#[test]
fn right_ca_through_ca_path_signs() {
    let t = tls(ServerCertMode::Valid, ClientAuth::None, |url, dir| {
        assert!(url.starts_with("https://localhost:"), "{url}");
        module_config(url, json!({ "caPath": dir.join("ca.pem") }), json!({}))
    });
    signs(&t.h);
    assert!(t.ca().exists());
    assert_eq!(t.h.sim.counter("POST /v1/synchronousSign"), 2);
}

#[test]
fn system_roots_alone_do_not_trust_the_simulator() {
    let t = tls(ServerCertMode::Valid, ClientAuth::None, |url, _| {
        module_config(url, json!({}), json!({}))
    });
    let line = refused(&t.h, "UnknownIssuer");
    assert!(line.contains("TLS: server certificate rejected"), "{line}");
    assert_eq!(
        t.h.sim.counters().values().sum::<u64>(),
        0,
        "no request reached the TSB"
    );
}

#[test]
fn server_certificate_from_another_ca_is_refused() {
    let t = tls(ServerCertMode::Untrusted, ClientAuth::None, |url, dir| {
        module_config(url, json!({ "caPath": dir.join("ca.pem") }), json!({}))
    });
    refused(&t.h, "UnknownIssuer");
    assert_eq!(t.h.sim.counters().values().sum::<u64>(), 0);
}

#[test]
fn expired_server_certificate_is_refused() {
    let t = tls(ServerCertMode::Expired, ClientAuth::None, |url, dir| {
        module_config(url, json!({ "caPath": dir.join("ca.pem") }), json!({}))
    });
    refused(&t.h, "Expired");
    assert_eq!(t.h.sim.counters().values().sum::<u64>(), 0);
}

#[test]
fn server_certificate_for_another_host_is_refused() {
    let t = tls(ServerCertMode::WrongHost, ClientAuth::None, |url, dir| {
        module_config(url, json!({ "caPath": dir.join("ca.pem") }), json!({}))
    });
    refused(&t.h, "NotValidForName");
    assert_eq!(t.h.sim.counters().values().sum::<u64>(), 0);
}

#[test]
fn a_ca_path_of_another_ca_is_refused() {
    // caPath holds a valid CA certificate, just not the simulator's.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other-ca.pem");
    std::fs::write(&other_ca, self_signed_pem("other CA", true).0).unwrap();
    let t = tls(ServerCertMode::Valid, ClientAuth::None, |url, _| {
        module_config(url, json!({ "caPath": other_ca }), json!({}))
    });
    refused(&t.h, "UnknownIssuer");
}

#[test]
fn a_tls_handshake_that_never_completes_fails_within_the_deadline() {
    // A server that accepts TCP connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let url = format!("https://127.0.0.1:{port}");
    let h = logged(
        SimConfig::default(),
        "warn",
        |_| json!({ "restApi": url, "pkcs11": { "requestTimeoutMs": 1000, "connectTimeoutMs": 200 } }),
    );
    let s = h.session();
    let (r, took) = timed(|| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec-p256".to_vec()),
        ])
    });
    report(
        "silent server during the TLS handshake (requestTimeoutMs 1000)",
        took,
    );
    assert_rv(r, RvError::DeviceError);
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_millis(1300), "{took:?}");
    assert!(
        !h.lines_with("CKR_DEVICE_ERROR").is_empty(),
        "{}",
        h.log_text()
    );
}

// ---------------------------------------------------------------------------------------
// Pinning

#[test]
fn right_pin_signs() {
    // The pin is only known once the simulator is up: start it through a first harness,
    // then point a second module copy at it with the pin.
    let dir = tempfile::tempdir().unwrap();
    let probe = logged(
        tls_sim(ServerCertMode::Valid, ClientAuth::None, dir.path()),
        "warn",
        |url| {
            module_config(
                url,
                json!({ "caPath": dir.path().join("ca.pem") }),
                json!({}),
            )
        },
    );
    let pin = server_cert_sha256(&probe);
    // Colons and upper case are accepted too.
    let pin_colons = pin
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    for pin in [pin.clone(), pin_colons] {
        let url = probe.sim.url();
        let ca = dir.path().join("ca.pem");
        let pinned = logged(SimConfig::default(), "warn", |_| {
            module_config(
                &url,
                json!({ "caPath": ca }),
                json!({ "serverCertSha256": pin }),
            )
        });
        // `pinned.sim` is an idle simulator; the module talks to `probe.sim`.
        let s = pinned.session();
        let k = pinned.private_key(&s, "ec-p256");
        let sig = s.sign(&Mechanism::EcdsaSha256, k, b"pinned").unwrap();
        assert!(verify::ecdsa(
            &probe.sim_public_key("ec-p256"),
            Hash::Sha256,
            b"pinned",
            &sig
        ));
    }
}

#[test]
fn wrong_pin_is_refused() {
    let t = tls(ServerCertMode::Valid, ClientAuth::None, |url, dir| {
        module_config(
            url,
            json!({ "caPath": dir.join("ca.pem") }),
            json!({ "serverCertSha256": "ab".repeat(32) }),
        )
    });
    refused(&t.h, "does not match pkcs11.serverCertSha256");
    assert_eq!(t.h.sim.counters().values().sum::<u64>(), 0);
}

#[test]
fn a_pin_does_not_replace_the_chain_check() {
    // The pin of the simulator's own certificate, but the CA is not trusted: refused.
    let dir = tempfile::tempdir().unwrap();
    let probe = logged(
        tls_sim(ServerCertMode::Valid, ClientAuth::None, dir.path()),
        "warn",
        |url| module_config(url, json!({}), json!({})),
    );
    let pin = server_cert_sha256(&probe);
    let url = probe.sim.url();
    let pinned = logged(SimConfig::default(), "warn", |_| {
        module_config(&url, json!({}), json!({ "serverCertSha256": pin }))
    });
    refused(&pinned, "UnknownIssuer");
}

// ---------------------------------------------------------------------------------------
// mTLS

#[test]
fn mutual_tls_with_the_client_certificate_signs() {
    let t = tls(ServerCertMode::Valid, ClientAuth::Required, |url, dir| {
        module_config(
            url,
            json!({
                "authType": "CERT",
                "certpath": dir.join("client.pem"),
                "keypath": dir.join("client.key"),
                "caPath": dir.join("ca.pem"),
            }),
            json!({}),
        )
    });
    let (paths_cert, paths_key) = t.h.sim.client_cert_paths().expect("mTLS material");
    assert_eq!(paths_cert, t.dir.path().join("client.pem"));
    assert_eq!(paths_key, t.dir.path().join("client.key"));
    signs(&t.h);
}

#[test]
fn mutual_tls_required_without_a_client_certificate_fails() {
    let t = tls(ServerCertMode::Valid, ClientAuth::Required, |url, dir| {
        module_config(url, json!({ "caPath": dir.join("ca.pem") }), json!({}))
    });
    let line = refused(&t.h, "TLS");
    assert!(
        line.to_lowercase().contains("certificate"),
        "the reason names the certificate: {line}"
    );
    assert_eq!(t.h.sim.counters().values().sum::<u64>(), 0);
}

#[test]
fn mutual_tls_with_a_certificate_of_another_ca_fails() {
    let other = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_pem("intruder", false);
    std::fs::write(other.path().join("c.pem"), cert).unwrap();
    netsec_write_private(&other.path().join("k.pem"), &key);
    let (c, k) = (other.path().join("c.pem"), other.path().join("k.pem"));
    let t = tls(ServerCertMode::Valid, ClientAuth::Required, |url, dir| {
        module_config(
            url,
            json!({ "authType": "CERT", "certpath": c, "keypath": k, "caPath": dir.join("ca.pem") }),
            json!({}),
        )
    });
    refused(&t.h, "TLS");
    assert_eq!(t.h.sim.counters().values().sum::<u64>(), 0);
}

#[test]
fn optional_client_certificate_missing_is_an_authentication_failure() {
    // The TLS handshake succeeds; the TSB answers 401 (errorCode 632) to every request.
    let t = tls(ServerCertMode::Valid, ClientAuth::Optional, |url, dir| {
        module_config(url, json!({ "caPath": dir.join("ca.pem") }), json!({}))
    });
    let s = t.h.session();
    let r = s.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(b"ec-p256".to_vec()),
    ]);
    assert_rv(r, RvError::UserNotLoggedIn);
    assert!(
        !t.h.lines_with("HTTP 401, TSB 632").is_empty(),
        "{}",
        t.h.log_text()
    );
}

// ---------------------------------------------------------------------------------------
// Plain HTTP

#[test]
fn plain_http_to_a_non_loopback_host_is_refused() {
    let config = json!({ "restApi": "http://192.0.2.1:9", "pkcs11": { "connectTimeoutMs": 1 } });
    let out = initialize_with(
        ConfigFile::Bytes(config.to_string().as_bytes(), 0o600),
        None,
        &[],
    );
    assert_eq!(out.rv, CKR_GENERAL_ERROR, "{}", out.log);
    let lines = out.log_lines();
    assert_eq!(lines.len(), 1, "one log line: {}", out.log);
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    assert!(
        lines[0].contains("plain http:// to a non-loopback host is refused")
            && lines[0].contains("allowInsecureHttp"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("/config-1.json"),
        "names the file: {}",
        lines[0]
    );
    assert!(
        out.elapsed < Duration::from_millis(500),
        "{:?}",
        out.elapsed
    );
}

#[test]
fn plain_http_to_a_non_loopback_host_with_allow_insecure_http_warns() {
    let config = json!({
        "restApi": "http://192.0.2.1:9",
        "pkcs11": { "allowInsecureHttp": true, "connectTimeoutMs": 1 }
    });
    let out = initialize_with(
        ConfigFile::Bytes(config.to_string().as_bytes(), 0o600),
        None,
        &[],
    );
    assert_eq!(out.rv, CKR_OK, "{}", out.log);
    let lines = out.log_lines();
    assert_eq!(lines.len(), 1, "{}", out.log);
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(
        lines[0].contains("http://192.0.2.1:9") && lines[0].contains("unencrypted"),
        "{}",
        lines[0]
    );
    // Nothing else is called: no traffic to 192.0.2.1.
}

#[test]
fn plain_http_to_loopback_names_is_allowed() {
    for host in ["localhost", "127.0.0.1"] {
        let h = logged(SimConfig::fast_test(), "warn", |url| {
            let port = url.rsplit(':').next().unwrap().to_string();
            json!({ "restApi": format!("http://{host}:{port}") })
        });
        let s = h.session();
        let k = h.private_key(&s, "ec-p256");
        s.sign(&Mechanism::EcdsaSha256, k, b"loopback").unwrap();
        assert!(
            !h.log_text().contains("non-loopback"),
            "{host}: {}",
            h.log_text()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Bad TLS files in the configuration

#[test]
fn bad_tls_files_fail_c_initialize_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let (cert, _) = self_signed_pem("client", false);
    let cert_path = dir.path().join("cert.pem");
    std::fs::write(&cert_path, cert).unwrap();
    let cases = [
        (
            json!({ "restApi": "https://localhost:1", "caPath": dir.path().join("missing.pem") }),
            "caPath",
        ),
        (
            json!({ "restApi": "https://localhost:1", "caPath": not_pem }),
            "caPath",
        ),
        (
            json!({ "restApi": "https://localhost:1", "authType": "CERT",
                    "certpath": dir.path().join("missing.pem"), "keypath": not_pem }),
            "certpath",
        ),
        (
            json!({ "restApi": "https://localhost:1", "authType": "CERT",
                    "certpath": cert_path, "keypath": not_pem }),
            "keypath",
        ),
        (
            json!({ "restApi": "https://localhost:1", "authType": "CERT" }),
            "certpath",
        ),
    ];
    for (config, field) in cases {
        let out = initialize_with(
            ConfigFile::Bytes(config.to_string().as_bytes(), 0o600),
            None,
            &[],
        );
        assert_eq!(out.rv, CKR_GENERAL_ERROR, "{config}: {}", out.log);
        let lines = out.log_lines();
        assert_eq!(lines.len(), 1, "{config}: {}", out.log);
        assert!(
            lines[0].contains(field) && lines[0].contains("/config-1.json"),
            "{field}: {}",
            lines[0]
        );
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A self-signed certificate and its PKCS#8 key, in PEM (a CA when `ca`).
fn self_signed_pem(cn: &str, ca: bool) -> (Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::BasicConstraints;
    use openssl::x509::{X509Name, X509};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(7).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

fn netsec_write_private(path: &Path, data: &[u8]) {
    common::write_private(path, data);
}
