//! Request bodies the module sends.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::config::Secret;

/// A sign request for `POST /v1/synchronousSign` and `POST /v1/sign`.
#[derive(Clone)]
pub(crate) struct SignRequest {
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
        }
    }

    /// The JSON body:
    /// `{"signRequest": {"payload", "payloadType": "UNSPECIFIED", "signKeyName",
    /// "signatureAlgorithm", "signatureType"?, "keyPassword"?, "metaData"?, "metaDataSignature"?},
    /// "requestSignature": null}`. It holds the key password: never log it.
    pub(crate) fn to_json(&self) -> Value {
        let mut sr = Map::new();
        sr.insert(
            "payload".into(),
            Value::String(STANDARD.encode(&self.payload)),
        );
        sr.insert("payloadType".into(), Value::String("UNSPECIFIED".into()));
        sr.insert("signKeyName".into(), Value::String(self.key.clone()));
        sr.insert(
            "signatureAlgorithm".into(),
            Value::String(self.algorithm.clone()),
        );
        if let Some(t) = &self.signature_type {
            sr.insert("signatureType".into(), Value::String(t.clone()));
        }
        if let Some(pw) = &self.key_password {
            sr.insert("keyPassword".into(), password_chars(pw));
        }
        if let Some(md) = &self.meta_data {
            sr.insert("metaData".into(), Value::String(STANDARD.encode(md)));
            sr.insert(
                "metaDataSignature".into(),
                match &self.meta_data_signature {
                    Some(sig) => Value::String(STANDARD.encode(sig)),
                    None => Value::Null,
                },
            );
        } else if let Some(sig) = &self.meta_data_signature {
            sr.insert(
                "metaDataSignature".into(),
                Value::String(STANDARD.encode(sig)),
            );
        }
        json!({ "signRequest": Value::Object(sr), "requestSignature": Value::Null })
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
