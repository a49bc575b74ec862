//! Request bodies the module sends.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::config::Secret;

/// A sign request for `POST /v1/synchronousSign` and `POST /v1/sign`.
#[derive(Clone)]
pub struct SignRequest {
    /// `signKeyName`: the key label.
    pub(crate) key: String,
    /// `signatureAlgorithm`, e.g. `SHA256_WITH_ECDSA`.
    pub(crate) algorithm: String,
    /// The bytes to sign (sent base64 as `payload`).
    pub(crate) payload: Vec<u8>,
    /// `signatureType`: `DER` / `RAW`; `None` leaves the field out.
    pub(crate) signature_type: Option<String>,
    /// `keyPassword`, sent as an array of one-character strings; `None` leaves it out.
    pub(crate) key_password: Option<Secret>,
    /// `metaData`: the raw JSON bytes (sent base64).
    pub(crate) meta_data: Option<Vec<u8>>,
    /// `metaDataSignature`: sent base64 (null when absent).
    pub(crate) meta_data_signature: Option<Vec<u8>>,
    /// `context`: the ML-DSA / SLH-DSA context string (FIPS 204 §5.2, FIPS 205 §10.2), sent
    /// base64; `None` (the empty context) leaves the field out, so a TSB that does not know the
    /// field never sees it (docs/tsb-api.md, "Post-quantum keys").
    pub(crate) context: Option<Vec<u8>>,
}

impl SignRequest {
    /// A request with only the mandatory fields.
    #[cfg(test)]
    pub(crate) fn new(
        key: impl Into<String>,
        algorithm: impl Into<String>,
        payload: Vec<u8>,
    ) -> Self {
        SignRequest {
            key: key.into(),
            algorithm: algorithm.into(),
            payload,
            signature_type: None,
            key_password: None,
            meta_data: None,
            meta_data_signature: None,
            context: None,
        }
    }

    /// The JSON body, serialised straight to bytes:
    /// `{"requestSignature": null, "signRequest": {"keyPassword"?, "metaData"?,
    /// "metaDataSignature"?, "payload", "payloadType": "UNSPECIFIED", "signKeyName",
    /// "signatureAlgorithm", "signatureType"?, "context"?}}`. It holds the key password: never
    /// log it.
    pub(crate) fn to_body(&self) -> Vec<u8> {
        let body = SignBody {
            request_signature: (),
            sign_request: SignFields {
                key_password: self.key_password.as_ref().map(PasswordChars),
                meta_data: self.meta_data.as_deref().map(Base64),
                // With metaData the field is always sent (null when there is no signature).
                meta_data_signature: match (&self.meta_data, &self.meta_data_signature) {
                    (_, Some(sig)) => Some(Some(Base64(sig))),
                    (Some(_), None) => Some(None),
                    (None, None) => None,
                },
                payload: Base64(&self.payload),
                payload_type: "UNSPECIFIED",
                sign_key_name: &self.key,
                signature_algorithm: &self.algorithm,
                signature_type: self.signature_type.as_deref(),
                context: self.context.as_deref().map(Base64),
            },
        };
        // Serialising plain strings and sequences into a Vec cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// The body of a sign request (fields in the order the TSB has always received them).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignBody<'a> {
    request_signature: (),
    sign_request: SignFields<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key_password: Option<PasswordChars<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta_data: Option<Base64<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta_data_signature: Option<Option<Base64<'a>>>,
    payload: Base64<'a>,
    payload_type: &'static str,
    sign_key_name: &'a str,
    signature_algorithm: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Base64<'a>>,
}

/// Bytes serialised as a standard base64 string.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(self.0))
    }
}

/// A password as the TSB wants it: a sequence of one-character strings.
struct PasswordChars<'a>(&'a Secret);

impl Serialize for PasswordChars<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // serde_json writes a char as a one-character string.
        s.collect_seq(self.0.expose().chars())
    }
}

impl fmt::Debug for SignRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignRequest")
            .field("key", &self.key)
            .field("algorithm", &self.algorithm)
            .field("payload_len", &self.payload.len())
            .field("signature_type", &self.signature_type)
            .field(
                "key_password",
                &self.key_password.as_ref().map(|_| "<redacted>"),
            )
            .field("meta_data_len", &self.meta_data.as_ref().map(Vec::len))
            .field(
                "meta_data_signature_len",
                &self.meta_data_signature.as_ref().map(Vec::len),
            )
            .field("context_len", &self.context.as_ref().map(Vec::len))
            .finish()
    }
}

/// A password as the TSB wants it: a JSON array of one-character strings.
pub(crate) fn password_chars(pw: &Secret) -> Value {
    Value::Array(
        pw.expose()
            .chars()
            .map(|c| Value::String(c.to_string()))
            .collect(),
    )
}
