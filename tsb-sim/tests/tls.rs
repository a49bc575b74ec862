//! TLS with the generated CA, server certificate modes, and mTLS.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tsb_sim::{ClientAuth, ServerCertMode, SimConfig, Simulator, TlsConfig};

fn tls_config(mode: ServerCertMode, client_auth: ClientAuth) -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.keys
        .push(tsb_sim::KeySpec::ec("ec-p256", tsb_sim::Curve::P256));
    cfg.tls = Some(TlsConfig {
        server_cert_mode: mode,
        client_auth,
        ..TlsConfig::default()
    });
    cfg
}

fn roots(ca: &Path) -> rustls::RootCertStore {
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

fn agent(ca: &Path, client: Option<(&Path, &Path)>) -> ureq::Agent {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots(ca));
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .tls_config(Arc::new(config))
        .build()
}

fn tls_error(sim: &Simulator) -> String {
    let http = Http::with_agent(agent(&sim.ca_cert_pem_path().unwrap(), None), &sim.url());
    match http.try_send("GET", "/v1/versionInfo", None) {
        Ok(r) => panic!("TLS should fail, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn valid_certificate_with_generated_ca() {
    let sim = start(tls_config(ServerCertMode::Valid, ClientAuth::None));
    let url = sim.url();
    assert!(url.starts_with("https://localhost:"), "{url}");
    let ca = sim.ca_cert_pem_path().expect("CA path");
    assert!(std::fs::read_to_string(&ca)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert_eq!(sim.client_cert_paths(), None);
    let http = Http::with_agent(agent(&ca, None), &url);
    assert_eq!(http.get("/v1/versionInfo").json()["Version"], "2.2.0");
    let spki = sim.public_key_der("ec-p256").unwrap();
    let sig = sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"over tls");
    assert!(verify(&spki, "SHA256_WITH_ECDSA", b"over tls", &sig, false));
    assert_eq!(http.get("/sim/counters").status, 200);
    // Also by IP address (the certificate has IP SANs).
    let by_ip = url.replace("localhost", "127.0.0.1");
    assert_eq!(
        Http::with_agent(agent(&ca, None), &by_ip)
            .get("/v1/key")
            .status,
        200
    );
    // A client that does not trust the CA fails.
    let plain = Http::new(&url);
    let err = plain
        .try_send("GET", "/v1/versionInfo", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
}

#[test]
fn expired_server_certificate() {
    let sim = start(tls_config(ServerCertMode::Expired, ClientAuth::None));
    let err = tls_error(&sim);
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[test]
fn wrong_host_server_certificate() {
    let sim = start(tls_config(ServerCertMode::WrongHost, ClientAuth::None));
    let err = tls_error(&sim);
    assert!(err.contains("not valid for name"), "{err}");
}

#[test]
fn untrusted_server_certificate() {
    let sim = start(tls_config(ServerCertMode::Untrusted, ClientAuth::None));
    let err = tls_error(&sim);
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn mtls_required() {
    let sim = start(tls_config(ServerCertMode::Valid, ClientAuth::Required));
    let ca = sim.ca_cert_pem_path().unwrap();
    let (cert, key) = sim.client_cert_paths().expect("client certificate written");
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("PRIVATE KEY"));
    // Without a client certificate the handshake fails.
    let http = Http::with_agent(agent(&ca, None), &sim.url());
    let err = http.try_send("GET", "/v1/versionInfo", None);
    assert!(err.is_err(), "{err:?}");
    // With it: OK.
    let http = Http::with_agent(agent(&ca, Some((&cert, &key))), &sim.url());
    assert_eq!(http.get("/v1/versionInfo").status, 200);
    sign_sync(&http, "ec-p256", "SHA256_WITH_ECDSA", b"mtls");
    // A certificate from another CA is refused.
    let other = start(tls_config(ServerCertMode::Valid, ClientAuth::Required));
    let (ocert, okey) = other.client_cert_paths().unwrap();
    let http = Http::with_agent(agent(&ca, Some((&ocert, &okey))), &sim.url());
    assert!(http.try_send("GET", "/v1/versionInfo", None).is_err());
}

#[test]
fn mtls_optional_answers_401() {
    let sim = start(tls_config(ServerCertMode::Valid, ClientAuth::Optional));
    let ca = sim.ca_cert_pem_path().unwrap();
    let (cert, key) = sim.client_cert_paths().unwrap();
    let r = Http::with_agent(agent(&ca, None), &sim.url()).get("/v1/key");
    assert_eq!((r.status, r.error_code()), (401, 632));
    let r = Http::with_agent(agent(&ca, Some((&cert, &key))), &sim.url()).get("/v1/key");
    assert_eq!(r.status, 200);
}

#[test]
fn control_listener_and_persistent_state_dir() {
    let dir = std::env::temp_dir().join(format!("tsb-sim-test-{}", uuid::Uuid::new_v4()));
    let mut cfg = tls_config(ServerCertMode::Valid, ClientAuth::Required);
    cfg.state_dir = Some(dir.clone());
    cfg.control_listen = Some("127.0.0.1:0".into());
    let sim = start(cfg.clone());
    let ca = sim.ca_cert_pem_path().unwrap();
    assert!(ca.starts_with(&dir));
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    // The plain control listener serves /sim/ only.
    let control = Http::new(&sim.control_url().unwrap());
    assert_eq!(control.get("/sim/requests").status, 200);
    assert_eq!(control.get("/v1/versionInfo").status, 404);
    let spki = sim.public_key_der("ec-p256").unwrap();
    drop(sim);
    // Restart: same CA file still trusted, same (cached) key.
    let sim = start(cfg);
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), ca_pem);
    assert_eq!(sim.public_key_der("ec-p256").unwrap(), spki);
    let (cert, key) = sim.client_cert_paths().unwrap();
    let http = Http::with_agent(agent(&ca, Some((&cert, &key))), &sim.url());
    assert_eq!(http.get("/v1/versionInfo").status, 200);
    assert!(dir.join("keys").read_dir().unwrap().count() >= 1);
    drop(sim);
    std::fs::remove_dir_all(&dir).unwrap();
}
