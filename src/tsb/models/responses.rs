//! The answers to signing and certificate calls (docs/tsb-api.md §"Signing", §"Certificates").
//!
//! Tolerated beside the contract: the request id of `POST /v1/sign` as a bare JSON string or
//! under `requestId` / `id`; a certificate as a bare JSON string or under `rawCertificate`;
//! numbers where strings are expected (the signature, the ids).

use serde::Deserialize;

use super::lenient;

/// `POST /v1/synchronousSign` (200): `{"signature": base64}`.
#[derive(Debug, Deserialize)]
pub(crate) struct SignResponse {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    signature: Option<String>,
}

impl SignResponse {
    /// The decoded signature (never empty).
    pub(crate) fn signature(self) -> Result<Vec<u8>, String> {
        let s = self
            .signature
            .ok_or_else(|| "no field \"signature\"".to_string())?;
        lenient::decode_b64(&s)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| "signature is not base64".to_string())
    }
}

/// `POST /v1/sign` (201): `{"signRequestId": id}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SignRequestCreated {
    Bare(String),
    Object {
        #[serde(
            rename = "signRequestId",
            default,
            deserialize_with = "lenient::opt_string"
        )]
        sign_request_id: Option<String>,
        #[serde(
            rename = "requestId",
            default,
            deserialize_with = "lenient::opt_string"
        )]
        request_id: Option<String>,
        #[serde(default, deserialize_with = "lenient::opt_string")]
        id: Option<String>,
    },
}

impl SignRequestCreated {
    /// The id of the filed request, once [`check_request_id`] accepts it.
    pub(crate) fn id(self) -> Result<String, String> {
        let id = match self {
            SignRequestCreated::Bare(s) if !s.is_empty() => Some(s),
            SignRequestCreated::Bare(_) => None,
            SignRequestCreated::Object {
                sign_request_id,
                request_id,
                id,
            } => sign_request_id.or(request_id).or(id),
        }
        .ok_or_else(|| "no field \"signRequestId\"".to_string())?;
        check_request_id(&id)?;
        Ok(id)
    }
}

/// The longest request id accepted (the TSB's are UUIDs, 36 characters).
pub(crate) const MAX_REQUEST_ID: usize = 128;

/// Refuses a request id the module would not keep: it is logged, written to the request
/// journal, put in URLs and shown by `tsb-pkcs11 requests`, so an id that is empty, longer
/// than [`MAX_REQUEST_ID`] characters, holds a control or bidirectional character
/// (`logging::is_unsafe_char`), or looks like a credential (`logging::looks_like_secret`: a
/// JWT, a configured secret) is an invalid answer. The message never quotes the id.
pub(crate) fn check_request_id(id: &str) -> Result<(), String> {
    let why = if id.is_empty() {
        "it is empty".to_string()
    } else if id.chars().nth(MAX_REQUEST_ID).is_some() {
        format!(
            "it has {} characters (at most {MAX_REQUEST_ID})",
            id.chars().count()
        )
    } else if id.chars().any(crate::logging::is_unsafe_char) {
        "it holds control or bidirectional-override characters".to_string()
    } else if crate::logging::looks_like_secret(id) {
        "it looks like a credential (a JWT or a configured secret)".to_string()
    } else {
        return Ok(());
    };
    Err(format!("refused the request id of POST /v1/sign: {why}"))
}

/// `GET /v1/certificate/{label}` (200) as JSON: `{"certificate": PEM or base64 DER}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum CertificateResponse {
    Bare(String),
    Object {
        #[serde(default, deserialize_with = "lenient::opt_text")]
        certificate: Option<String>,
        #[serde(
            rename = "rawCertificate",
            default,
            deserialize_with = "lenient::opt_text"
        )]
        raw_certificate: Option<String>,
    },
}

impl CertificateResponse {
    /// The certificate (PEM text as given, or decoded DER); `None` when the answer holds none.
    pub(crate) fn certificate(self) -> Result<Option<Vec<u8>>, String> {
        let text = match self {
            CertificateResponse::Bare(s) => Some(s).filter(|s| !s.trim().is_empty()),
            CertificateResponse::Object {
                certificate,
                raw_certificate,
            } => certificate.or(raw_certificate),
        };
        match text {
            None => Ok(None),
            Some(s) => lenient::decode_pem_or_b64(&s)
                .map(Some)
                .ok_or_else(|| "certificate is neither PEM nor base64".to_string()),
        }
    }
}
