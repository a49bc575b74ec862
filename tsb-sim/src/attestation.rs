//! Key attestation: the simulator's attestation key and its certificate chain, and the signed
//! attributes response of `GET /v1/key/{label}/attributes` (`json`, `xml`, `xmlSignature`).

use std::sync::LazyLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::rngs::OsRng;
use serde_json::{json, Value};

use crate::keys::SimKey;

/// The whole attributes response: `{"json", "xml", "xmlSignature", "attestationKeyName"}`.
/// The XML (names as Securosys' attestation files write them: `public_key`,
/// `never_extractable`, `attest_time`) is signed, ECDSA P-256 with SHA-256 (DER), by the
/// simulator's attestation key, whose certificate chain [`chain`] gives.
pub(crate) fn attributes_response(key: &SimKey) -> Value {
    let json = key.attributes_json();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><key>");
    xml.push_str(&format!("<label>{}</label>", xml_escape(&key.spec.label)));
    xml.push_str(&format!(
        "<algorithm>{}</algorithm>",
        crate::pqc::attributes_name(key.spec.algorithm)
    ));
    if let Some(der) = &key.public_der {
        xml.push_str(&format!("<public_key>{}</public_key>", B64.encode(der)));
    }
    xml.push_str(&format!(
        "<create_time>{}</create_time><attest_time>{}</attest_time>",
        xml_escape(&json["createTime"].to_string()),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    if let Value::Object(attrs) = &json["attributes"] {
        xml.push_str("<attributes>");
        for (k, v) in attrs {
            let k = snake_case(k);
            xml.push_str(&format!("<{k}>{v}</{k}>"));
        }
        xml.push_str("</attributes>");
    }
    if !json["policy"].is_null() {
        xml.push_str(&format!(
            "<policy>{}</policy>",
            xml_escape(&json["policy"].to_string())
        ));
    }
    xml.push_str("</key>");
    let signature: p256::ecdsa::Signature = {
        use signature::Signer;
        ATTESTATION.key.sign(xml.as_bytes())
    };
    json!({
        "json": json,
        "xml": xml,
        "xmlSignature": B64.encode(signature.to_der().as_bytes()),
        "attestationKeyName": ATTESTATION_KEY_NAME,
    })
}

/// The name of the simulator's attestation key.
pub(crate) const ATTESTATION_KEY_NAME: &str = "tsb-sim-attestation-key";

/// The simulator's attestation key and its certificate chain (as a Primus HSM has: a root,
/// a device certificate, the partition's attestation key), made once per process.
struct Attestation {
    key: p256::ecdsa::SigningKey,
    /// DER certificates, attestation key first, root last.
    chain: Vec<Vec<u8>>,
}

static ATTESTATION: LazyLock<Attestation> = LazyLock::new(|| {
    let key = p256::ecdsa::SigningKey::random(&mut OsRng);
    let chain = crate::certs::attestation_chain(&key, ATTESTATION_KEY_NAME)
        .expect("the attestation chain is made");
    Attestation { key, chain }
});

/// The attestation key's certificate chain (DER; attestation key first, root last).
pub(crate) fn chain() -> Vec<Vec<u8>> {
    ATTESTATION.chain.clone()
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
