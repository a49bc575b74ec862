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
//! - HTTP CONNECT proxies (a real one, Debian's tinyproxy, started per test): signing through
//!   it with proxy authentication (password from a `file:` secret), a wrong password (407) and a
//!   port the proxy forbids (403) as one error naming the proxy, the proxy killed under its
//!   tunnels and started again, and `https_proxy`/`HTTPS_PROXY`/`NO_PROXY`/`"proxy": "none"`
//!   through `tsb-pkcs11 keys` run with its own environment.
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
    use common::pki::{ec_key, CertBuilder, Profile};
    let key = ec_key();
    let profile = if ca { Profile::Ca } else { Profile::Bare };
    let cert = CertBuilder::new(cn).profile(profile).self_signed(&key);
    (
        cert.to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

fn netsec_write_private(path: &Path, data: &[u8]) {
    common::write_private(path, data);
}

// ---------------------------------------------------------------------------------------
// HTTP CONNECT proxies (tinyproxy)

/// A tinyproxy on 127.0.0.1, in the foreground, logging to a file; killed when dropped.
struct Tinyproxy {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
    connect_port: u16,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Tinyproxy {
    /// Allows CONNECT to `connect_port` only; with `auth`, Basic authentication.
    fn start(auth: Option<(&str, &str)>, connect_port: u16) -> Tinyproxy {
        let mut p = Tinyproxy {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            connect_port,
        };
        p.restart();
        p
    }

    /// Starts it (again) on its port.
    fn restart(&mut self) {
        let mut conf = format!(
            "Port {}\nListen 127.0.0.1\nTimeout 30\nMaxClients 32\nLogLevel Connect\nConnectPort {}\n",
            self.port, self.connect_port
        );
        if let Some((u, p)) = &self.auth {
            conf.push_str(&format!("BasicAuth {u} {p}\n"));
        }
        let conf_path = self.dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tinyproxy.log"))
            .unwrap();
        let child = std::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tinyproxy (Debian package tinyproxy) runs");
        self.child = Some(child);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "tinyproxy did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// A TLS simulator and the module reaching it through a tinyproxy started for it (`auth`,
/// CONNECT allowed to `connect_port(sim port)`), configured by `pkcs11(proxy, dir)`.
fn through_tinyproxy(
    auth: Option<(&str, &str)>,
    connect_port: impl FnOnce(u16) -> u16,
    pkcs11: impl FnOnce(&Tinyproxy, &Path) -> Value,
) -> (Tls, Tinyproxy) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut proxy = None;
    let h = logged(
        tls_sim(ServerCertMode::Valid, ClientAuth::None, &path),
        "debug",
        |url| {
            let p = Tinyproxy::start(auth, connect_port(port_of(url)));
            let extra = pkcs11(&p, &path);
            proxy = Some(p);
            module_config(url, json!({ "caPath": path.join("ca.pem") }), extra)
        },
    );
    (Tls { h, dir }, proxy.unwrap())
}

#[test]
fn signs_through_an_authenticating_https_proxy() {
    let (t, proxy) = through_tinyproxy(
        Some(("alice", "pr0xy-s3cret")),
        |p| p,
        |p, dir| {
            std::fs::write(dir.join("proxy.pass"), "pr0xy-s3cret\n").unwrap();
            json!({
                "proxy": format!("http://alice@127.0.0.1:{}", p.port),
                "proxyPassword": format!("file:{}", dir.join("proxy.pass").display()),
            })
        },
    );
    // TLS inside the tunnel is checked against the TSB's name (`localhost`, caPath).
    signs(&t.h);
    let sim_port = t.h.sim.local_addr().port();
    assert!(
        proxy
            .log()
            .contains(&format!("CONNECT localhost:{sim_port}")),
        "{}",
        proxy.log()
    );
    let log = t.h.log_text();
    assert!(
        log.contains(&format!("through the HTTP proxy {}", proxy.url())),
        "{log}"
    );
    assert!(!log.contains("pr0xy-s3cret"), "{log}");
}

#[test]
fn a_refusing_proxy_is_one_error_naming_it_and_its_status() {
    // A wrong password (tinyproxy answers 401 where RFC 9110 says 407), and a port the proxy
    // does not allow for CONNECT (403).
    for (password, allow_sim_port, why) in [
        ("wrong-pa55", true, "HTTP 401 (proxy authentication failed"),
        ("pr0xy-s3cret", false, "HTTP 403 (forbidden by the proxy"),
    ] {
        let (t, proxy) = through_tinyproxy(
            Some(("alice", "pr0xy-s3cret")),
            |p| if allow_sim_port { p } else { 443 },
            |p, _| json!({ "proxy": format!("http://alice:{password}@127.0.0.1:{}", p.port) }),
        );
        let line = refused(&t.h, why);
        assert!(line.contains(&format!("proxy {}", proxy.url())), "{line}");
        let log = t.h.log_text();
        assert!(
            !log.contains(password) && !log.contains("pr0xy-s3cret"),
            "{log}"
        );
        assert_eq!(t.h.sim.counters().values().sum::<u64>(), 0);
    }
}

#[test]
fn a_proxy_killed_under_its_tunnels_fails_naming_it_then_recovers() {
    let (t, mut proxy) = through_tinyproxy(None, |p| p, |p, _| json!({ "proxy": p.url() }));
    let h = &t.h;
    let s = h.session();
    let k = h.private_key(&s, "ec-p256");
    let sign = || s.sign(&Mechanism::EcdsaSha256, k, b"tunnel");
    let ok = |sig: Vec<u8>| {
        assert!(verify::ecdsa(
            &h.sim_public_key("ec-p256"),
            Hash::Sha256,
            b"tunnel",
            &sig
        ))
    };
    ok(sign().unwrap());
    proxy.kill();
    assert_rv(sign(), RvError::DeviceError);
    let lines = h.lines_with("CKR_DEVICE_ERROR");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("connection to the proxy {} failed", proxy.url()))),
        "{}",
        h.log_text()
    );
    proxy.restart();
    ok(sign().unwrap());
}

/// `tsb-pkcs11 keys` with a configuration of its own and the environment given (the test
/// process's proxy variables are never inherited).
fn keys_with_env(config: &Path, env: &[(&str, String)]) -> std::process::Output {
    command_with_env(config, "keys", env)
}

/// `tsb-pkcs11 --json -c CONFIG COMMAND` with only the proxy variables of `env`.
fn command_with_env(config: &Path, command: &str, env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(common::built_command());
    common::child_env(&mut cmd);
    cmd.args(["--json", "-c"]).arg(config).arg(command);
    for v in [
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(v);
    }
    cmd.env_remove("TSB_PKCS11_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run tsb-pkcs11")
}

#[test]
fn proxy_from_the_environment_no_proxy_and_config_none() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(tls_sim(ServerCertMode::Valid, ClientAuth::None, dir.path()));
    let proxy = Tinyproxy::start(None, sim.local_addr().port());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let write = |name: &str, pkcs11: Value| {
        let path = dir.path().join(name);
        let c = module_config(
            &sim.url(),
            json!({ "caPath": dir.path().join("ca.pem") }),
            pkcs11,
        );
        common::write_private(&path, &serde_json::to_vec(&c).unwrap());
        path
    };
    let plain = write("plain.json", json!({}));
    let none = write("none.json", json!({ "proxy": "none" }));
    let connects = || proxy.log().matches("CONNECT localhost:").count();
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // HTTPS_PROXY: through the proxy.
    ok(&keys_with_env(&plain, &[("HTTPS_PROXY", proxy.url())]));
    let through = connects();
    assert!(through >= 1, "{}", proxy.log());
    // https_proxy wins over HTTPS_PROXY (curl's order): the dead one is named.
    let out = keys_with_env(
        &plain,
        &[("https_proxy", dead.clone()), ("HTTPS_PROXY", proxy.url())],
    );
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("connection to the proxy {dead} failed")),
        "{text}"
    );
    // NO_PROXY (case-insensitive names, among other entries) and "proxy": "none": direct,
    // although the environment names a dead proxy.
    ok(&keys_with_env(
        &plain,
        &[
            ("HTTPS_PROXY", dead.clone()),
            ("NO_PROXY", "example.com, LOCALHOST".into()),
        ],
    ));
    ok(&keys_with_env(
        &plain,
        &[("https_proxy", dead.clone()), ("no_proxy", "*".into())],
    ));
    ok(&keys_with_env(&none, &[("HTTPS_PROXY", dead.clone())]));
    assert_eq!(connects(), through, "the direct runs did not use the proxy");
    // doctor shows the route and checks the proxy as its own step, through the module's client.
    let out = command_with_env(&plain, "doctor", &[("HTTPS_PROXY", proxy.url())]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("through the HTTP proxy {}", proxy.url()))
            && text.contains("opened a tunnel to the TSB"),
        "{text}"
    );
    assert!(connects() > through, "doctor went through the proxy");
    let out = command_with_env(&plain, "doctor", &[("HTTPS_PROXY", dead.clone())]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("through the HTTP proxy {dead}")),
        "{text}"
    );
}
