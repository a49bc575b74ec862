//! Transport security: the rustls client configuration (system roots + `caPath`, optional
//! mTLS client certificate, optional SHA-256 pin of the server certificate) and the
//! plain-http policy.

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::{AuthType, Config};

/// Builds the rustls client configuration for `config` (ring provider, TLS 1.2 and 1.3).
pub fn client_config(config: &Config) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(root_store(config.ca_path.as_deref())?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match config.pkcs11.server_cert_sha256 {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier { inner: webpki, pin })),
        None => builder.with_webpki_verifier(webpki),
    };
    // A client certificate when both files are given (the configuration loader refuses one
    // without the other); authType CERT cannot do without one.
    let tls = match (&config.client_cert, &config.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let certs = load_certs(cert_path, "certpath")?;
            let key = load_key(key_path)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!(
                    "client certificate {} / keypath {}: {e}",
                    cert_path.display(),
                    key_path.display()
                )
            })?
        }
        _ if config.auth_type == AuthType::Cert => {
            return Err("authType CERT needs certpath and keypath".to_string())
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}

/// The system roots (load errors only logged) plus the certificates of `ca_path`.
fn root_store(ca_path: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        log::debug!("loading system CA certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    log::debug!("system CA certificates: {added} loaded, {ignored} ignored");
    if let Some(path) = ca_path {
        let certs = load_certs(path, "caPath")?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("caPath {}: unusable CA certificate: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates: the system store is empty and caPath is not set"
                .to_string(),
        );
    }
    Ok(roots)
}

/// Reads every certificate of a PEM file (at least one).
pub(crate) fn load_certs(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = crate::config::read_regular_file(path)
        .map_err(|e| format!("{field} {}: cannot read: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{field} {}: bad PEM: {}", path.display(), pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{field} {}: no PEM certificate found",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = crate::config::read_regular_file(path)
        .map_err(|e| format!("keypath {}: cannot read: {e}", path.display()))?;
    match PrivateKeyDer::from_pem_slice(&data) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(format!(
            "keypath {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found",
            path.display()
        )),
        Err(e) => Err(format!(
            "keypath {}: bad PEM: {}",
            path.display(),
            pem_error(&e)
        )),
    }
}

/// What is wrong with a PEM file, without quoting it (a key file's lines are secret).
fn pem_error(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line",
        pem::Error::Base64Decode(_) => "invalid base64",
        pem::Error::SectionTooLarge => "section too large",
        _ => "unreadable",
    }
}

/// The error reported when the server certificate does not match the pin.
#[derive(Debug)]
struct PinMismatch;

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("server certificate does not match pkcs11.serverCertSha256")
    }
}

impl std::error::Error for PinMismatch {}

/// A one-line description of a TLS error for [`super::TsbErrorKind::NotSent`].
pub fn describe_tls_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.0.downcast_ref::<PinMismatch>().is_some() =>
        {
            // PinMismatch's Display is the one text of a pin mismatch.
            format!("TLS: {}", other.0)
        }
        rustls::Error::InvalidCertificate(c) => {
            format!("TLS: server certificate rejected: {c:?}")
        }
        other => format!("TLS: {other}"),
    }
}

/// Normal WebPKI verification, then a SHA-256 pin of the end-entity certificate.
#[derive(Debug)]
struct PinnedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pin: [u8; 32],
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if constant_time_eq(&digest, &self.pin) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Whether a host is loopback: exactly `localhost`, or a literal IP of 127.0.0.0/8 or `::1`
/// (also v4-mapped).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.to_ascii_lowercase();
    // Exactly `localhost`, not a name under it: `tsb.localhost` would go to DNS, and
    // plain http must never leave the machine unless pkcs11.allowInsecureHttp says so.
    if h == "localhost" {
        return true;
    }
    match h.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6 == Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pin mismatch is named as such; any other certificate error, also another
    /// `CertificateError::Other`, is a rejected certificate with rustls's reason.
    #[test]
    fn tls_errors_are_described() {
        let other = |e: Arc<dyn std::error::Error + Send + Sync>| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e)))
        };
        assert_eq!(
            describe_tls_error(&other(Arc::new(PinMismatch))),
            "TLS: server certificate does not match pkcs11.serverCertSha256"
        );
        let io = std::io::Error::other("odd extension");
        let text = describe_tls_error(&other(Arc::new(io)));
        assert!(
            text.starts_with("TLS: server certificate rejected: Other(")
                && text.contains("odd extension"),
            "{text}"
        );
        assert_eq!(
            describe_tls_error(&rustls::Error::InvalidCertificate(
                CertificateError::Expired
            )),
            "TLS: server certificate rejected: Expired"
        );
        let text = describe_tls_error(&rustls::Error::General("x".into()));
        assert!(text.starts_with("TLS: ") && text.contains('x'), "{text}");
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1",
            "::2",
            "localhost.example.com",
            "foo.localhost",
            "tsb.localhost",
            "localhost.",
            "128.0.0.1",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn missing_ca_file_is_a_config_error() {
        let mut c = Config::for_url("https://tsb.example");
        c.ca_path = Some("/nonexistent/ca.pem".into());
        let e = client_config(&c).unwrap_err();
        assert!(e.contains("caPath /nonexistent/ca.pem"), "{e}");
    }

    /// authType CERT without its client certificate files is refused before any connection;
    /// another authType without them simply has no client certificate.
    #[test]
    fn cert_auth_needs_its_files() {
        let mut c = Config::for_url("https://tsb.example");
        c.auth_type = AuthType::Cert;
        let e = client_config(&c).unwrap_err();
        assert_eq!(e, "authType CERT needs certpath and keypath");
        c.client_cert = Some("/nonexistent/client.pem".into());
        assert_eq!(client_config(&c).unwrap_err(), e);
        c.auth_type = AuthType::Token;
        c.client_cert = None;
        assert!(client_config(&c).is_ok());
    }

    /// PEM files as people have them: CRLF line ends, text around the blocks, several
    /// certificates, keys in PKCS#8, PKCS#1 and SEC1 form; broken files give a reason that
    /// quotes nothing of the file.
    #[test]
    fn pem_variants() {
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, data: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            p
        };
        let rsa = Rsa::generate(2048).unwrap();
        let ec =
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
        let pkcs8 = PKey::from_rsa(rsa.clone()).unwrap();
        for (pem, der) in [
            (
                pkcs8.private_key_to_pem_pkcs8().unwrap(),
                pkcs8.private_key_to_pkcs8().unwrap(),
            ),
            (
                rsa.private_key_to_pem().unwrap(),
                rsa.private_key_to_der().unwrap(),
            ),
            (
                ec.private_key_to_pem().unwrap(),
                ec.private_key_to_der().unwrap(),
            ),
        ] {
            let text = String::from_utf8(pem).unwrap();
            let crlf = format!("a comment line\r\n{}", text.replace('\n', "\r\n"));
            let key = load_key(&write("key.pem", crlf.as_bytes())).unwrap();
            assert_eq!(key.secret_der(), &der[..]);
        }
        let cert = {
            let mut b = openssl::x509::X509Builder::new().unwrap();
            b.set_pubkey(&pkcs8).unwrap();
            b.sign(&pkcs8, openssl::hash::MessageDigest::sha256())
                .unwrap();
            b.build()
        };
        let one = String::from_utf8(cert.to_pem().unwrap()).unwrap();
        let bundle = format!("subject=whatever\n{one}\n\n{one}");
        let certs = load_certs(&write("ca.pem", bundle.as_bytes()), "caPath").unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), &cert.to_der().unwrap()[..]);
        // no certificate / no key / broken base64 / missing END line
        let e = load_certs(&write("none.pem", b"hello"), "caPath").unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = load_key(&write("none.pem", one.as_bytes())).unwrap_err();
        assert!(e.contains("no PEM private key"), "{e}");
        let secret = "-----BEGIN PRIVATE KEY-----\nSECRETSECRET!!\n-----END PRIVATE KEY-----\n";
        let e = load_key(&write("bad.pem", secret.as_bytes())).unwrap_err();
        assert!(e.contains("invalid base64") && !e.contains("SECRET"), "{e}");
        let e = load_key(&write("cut.pem", &secret.as_bytes()[..40])).unwrap_err();
        assert!(e.contains("no END line") && !e.contains("SECRET"), "{e}");
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(&[1; 32], &[1; 32]));
        let mut b = [1; 32];
        b[31] = 2;
        assert!(!constant_time_eq(&[1; 32], &b));
    }
}
