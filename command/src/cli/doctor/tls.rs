//! The TLS step of one node: the handshake with the module's TLS settings (roots and `caPath`,
//! host name, `serverCertSha256`, client certificate), and one request over it (a TLS 1.3
//! server refuses a missing client certificate only after the client's handshake is done).

use std::time::Instant;

use serde_json::json;

use super::report::{unix_now, Failure, Report};
use crate::config::Config;
use crate::tsb::{Connected, Probe, TlsFacts};

/// The handshake and `GET /v1/versionInfo` (without credentials: any HTTP answer will do) on
/// the connection `c`; false when either failed.
pub(super) fn check_tls(config: &Config, probe: &Probe<'_>, c: Connected, r: &mut Report) -> bool {
    let host = probe.host();
    let deadline = Instant::now() + config.pkcs11.request_timeout;
    let checked = probe.open(c, deadline).and_then(|mut opened| {
        let facts = opened.tls.take();
        probe.request(opened, "/v1/versionInfo").map(|_| facts)
    });
    match checked {
        Ok(facts) => {
            let (message, details) = describe(config, host, facts.as_ref());
            r.ok("tls", message).with_details(details);
            true
        }
        Err(e) => {
            let (message, fix) = describe_tls_failure(config, host, &e);
            r.fail("tls", message, fix);
            false
        }
    }
}

/// The ok line: protocol, server certificate, pin, client certificate; and the details (the
/// certificate's SHA-256, the value `pkcs11.serverCertSha256` would pin).
fn describe(config: &Config, host: &str, facts: Option<&TlsFacts>) -> (String, serde_json::Value) {
    let protocol = facts.map(|f| f.protocol.as_str()).unwrap_or_default();
    let mut message = format!("{protocol} with {host}");
    let cert = facts.and_then(|f| f.certificate.as_ref());
    if let Some(c) = cert {
        if let (Some(subject), Some(not_after)) = (&c.subject, c.not_after_unix) {
            let days = (not_after - unix_now()) / 86_400;
            message.push_str(&format!(
                "; server certificate '{subject}', valid {days} more days"
            ));
        }
    }
    if let Some(pin) = &config.pkcs11.server_cert_sha256 {
        // The handshake fails on a mismatch; this says what it compared.
        if cert.is_some_and(|c| &c.sha256 == pin) {
            message.push_str("; pin matches");
        }
    }
    if config.client_cert.is_some() && config.client_key.is_some() {
        message.push_str("; client certificate presented and accepted");
    }
    let details = json!({
        "protocol": protocol,
        "serverCertificate": cert.map(|c| json!({
            "subject": c.subject,
            "notAfterUnix": c.not_after_unix,
            "sha256": crate::cli::hex(&c.sha256),
        })),
    });
    (message, details)
}

fn describe_tls_failure(config: &Config, host: &str, e: &std::io::Error) -> Failure {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        let m = e.to_string();
        let fix = if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut
        {
            Some("the TSB does not complete the TLS handshake: is the port a TLS port? (try http:// or the right port)".into())
        } else if config.client_cert.is_none() {
            Some(
                "the TSB may require a client certificate: set authType CERT, certpath and keypath"
                    .into(),
            )
        } else {
            None
        };
        return (format!("TLS: {m}"), fix);
    };
    let text = crate::tsb::describe_tls_error(tls);
    let debug = format!("{tls:?}");
    let fix = if text.contains("serverCertSha256") {
        "the server certificate changed: if the TSB's certificate was renewed, update pkcs11.serverCertSha256 (sha256 of its DER); otherwise something is in between".to_string()
    } else if debug.contains("UnknownIssuer") || debug.contains("BadSignature") {
        format!(
            "the TSB's certificate is issued by a CA this host does not trust: set caPath to the CA's PEM file{}",
            if config.ca_path.is_some() { " (the configured caPath is another CA)" } else { "" }
        )
    } else if debug.contains("Expired") {
        "the TSB's server certificate has expired: the TSB operator must renew it (check this host's clock too)".to_string()
    } else if debug.contains("NotValidYet") {
        "the TSB's certificate is not valid yet: check this host's clock".to_string()
    } else if debug.contains("NotValidForName") {
        format!("the certificate is not issued for '{host}': use the host name it names in restApi")
    } else if debug.contains("CertificateRequired")
        || debug.contains("BadCertificate")
        || debug.contains("UnknownCA")
        || debug.contains("HandshakeFailure")
    {
        if config.client_cert.is_none() {
            "the TSB requires a client certificate: set authType CERT, certpath and keypath"
                .to_string()
        } else {
            "the TSB refused the client certificate: use one issued by a CA the TSB trusts"
                .to_string()
        }
    } else {
        "see the TLS message".to_string()
    };
    (text, Some(fix))
}
