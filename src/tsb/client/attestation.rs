//! Key attestation (docs/tsb-api.md, "Key attestation"): the signed XML the key attributes
//! answer carries (`xml`, `xmlSignature`, `attestationKeyName`), and the attestation key's
//! certificate chain (`{"attestationCertificateChain": [base64 DER, ...]}`, the TSB class
//! `AttestationCertificateDto`). Both are reads (`KeyManagementToken`), retried like reads.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use super::parts::{Call, TsbClient};
use super::retry::Retry;
use crate::config::Secret;
use crate::tsb::{TsbError, TsbErrorKind};

/// Where the attestation key's certificate chain is asked for. The public material names the
/// answer's shape (`AttestationCertificateDto`) but not its path; this is the simulator's.
pub(crate) const CHAIN_PATH: &str = "/v1/key/attestation/certificateChain";

/// What the TSB attests about one key.
#[derive(Clone, Debug)]
pub struct KeyAttestation {
    /// The attested key attributes, XML text exactly as signed (UTF-8).
    pub xml: String,
    /// The attestation key's signature over `xml`.
    pub signature: Vec<u8>,
    /// The name of the attestation key on the HSM.
    pub attestation_key_name: String,
    /// The key's public key as the `json` part of the answer gives it (SubjectPublicKeyInfo).
    pub public_key: Option<Vec<u8>>,
}

fn invalid(m: impl Into<String>) -> TsbErrorKind {
    TsbErrorKind::InvalidResponse(m.into())
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(&clean)
        .ok()
        .or_else(|| crate::crypto::encoding::decode_base64(clean.as_bytes()).ok())
}

/// The attestation of a key attributes answer (`answer` is its whole JSON).
pub(crate) fn parse_attestation(answer: &Value) -> Result<KeyAttestation, String> {
    let text = |name: &str| -> Result<String, String> {
        match answer.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | Some(Value::Null) | None => Err(format!(
                "the answer carries no \"{name}\" (the TSB gives no attestation for this key)"
            )),
            Some(_) => Err(format!("\"{name}\" is not a string")),
        }
    };
    let xml = text("xml")?;
    let signature = decode_b64(&text("xmlSignature")?).ok_or("\"xmlSignature\" is not base64")?;
    let attestation_key_name = text("attestationKeyName").unwrap_or_default();
    let public_key = crate::tsb::models::keys::parse_key_attributes(answer)
        .ok()
        .and_then(|a| a.public_key);
    Ok(KeyAttestation {
        xml,
        signature,
        attestation_key_name,
        public_key,
    })
}

/// The chain of a `AttestationCertificateDto` answer: DER certificates, attestation key first.
pub(crate) fn parse_chain(answer: &Value) -> Result<Vec<Vec<u8>>, String> {
    let list = answer
        .get("attestationCertificateChain")
        .and_then(Value::as_array)
        .ok_or("no list \"attestationCertificateChain\"")?;
    if list.is_empty() {
        return Err("\"attestationCertificateChain\" is empty".into());
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let s = v
                .as_str()
                .ok_or_else(|| format!("attestationCertificateChain[{i}] is not a string"))?;
            crate::crypto::encoding::to_der(s.as_bytes(), &["CERTIFICATE"])
                .ok()
                .or_else(|| decode_b64(s))
                .ok_or_else(|| format!("attestationCertificateChain[{i}] is not a certificate"))
        })
        .collect()
}

impl TsbClient {
    /// The attestation of key `label`, from its attributes answer.
    pub fn key_attestation(
        &self,
        label: &str,
        password: Option<&Secret>,
    ) -> Result<KeyAttestation, TsbError> {
        let call = Self::attributes_call(label, password);
        self.execute(&call, |reply| {
            parse_attestation(&reply.json()?).map_err(invalid)
        })
    }

    /// The attestation key's certificate chain (DER, attestation key first).
    pub fn attestation_chain(&self) -> Result<Vec<Vec<u8>>, TsbError> {
        let call = Call::new(
            "GET",
            "GET /v1/key/attestation/certificateChain",
            CHAIN_PATH.into(),
            Retry::Idempotent,
        );
        self.execute(&call, |reply| parse_chain(&reply.json()?).map_err(invalid))
    }
}
