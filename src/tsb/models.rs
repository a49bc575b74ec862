//! Request and response types of the TSB REST API, parsed leniently: missing fields take
//! defaults, unknown fields are ignored, numbers and booleans may come as strings.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::Secret;

/// A sign request for `POST /v1/synchronousSign` and `POST /v1/sign`.
#[derive(Clone)]
pub struct SignRequest {
    /// `signKeyName`: the key label.
    pub key: String,
    /// `signatureAlgorithm`, e.g. `SHA256_WITH_ECDSA`.
    pub algorithm: String,
    /// The bytes to sign (sent base64 as `payload`).
    pub payload: Vec<u8>,
    /// `signatureType`: `DER` / `RAW`; `None` leaves the field out.
    pub signature_type: Option<String>,
    /// `keyPassword`, sent as an array of one-character strings; `None` leaves it out.
    pub key_password: Option<Secret>,
    /// `metaData`: the raw JSON bytes (sent base64).
    pub meta_data: Option<Vec<u8>>,
    /// `metaDataSignature`: sent base64 (null when absent).
    pub meta_data_signature: Option<Vec<u8>>,
}

impl SignRequest {
    /// A request with only the mandatory fields.
    pub fn new(key: impl Into<String>, algorithm: impl Into<String>, payload: Vec<u8>) -> Self {
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

/// Key attribute flags (`json.attributes`). Missing flags are false, except `sensitive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyFlags {
    pub sign: bool,
    pub decrypt: bool,
    pub unwrap: bool,
    pub derive: bool,
    pub sensitive: bool,
    pub always_sensitive: bool,
    pub extractable: bool,
    pub never_extractable: bool,
    pub modifiable: bool,
    pub copyable: bool,
    pub destroyable: bool,
}

impl Default for KeyFlags {
    fn default() -> Self {
        KeyFlags {
            sign: false,
            decrypt: false,
            unwrap: false,
            derive: false,
            sensitive: true,
            always_sensitive: false,
            extractable: false,
            never_extractable: false,
            modifiable: false,
            copyable: false,
            destroyable: false,
        }
    }
}

/// The attributes of a key (`GET /v1/key/{label}/attributes`, field `json`).
#[derive(Clone, Debug)]
pub struct KeyAttributes {
    /// `label`.
    pub label: String,
    /// `id` (nullable): Securosys' PKCS#11 provider's id for the key.
    pub id: Option<String>,
    /// `algorithm`: `RSA`, `EC`, `ED`, ...
    pub algorithm: String,
    /// `algorithmOid`.
    pub algorithm_oid: Option<String>,
    /// `curveOid`.
    pub curve_oid: Option<String>,
    /// `keySize` (RSA).
    pub key_size: Option<u32>,
    /// `publicKey`: if base64, the decoded DER SubjectPublicKeyInfo; if PEM, the PEM bytes.
    pub public_key: Option<Vec<u8>>,
    /// `attributes`.
    pub flags: KeyFlags,
    /// `policy`.
    pub policy: Option<Policy>,
    /// `createTime`.
    pub create_time: Option<String>,
}

impl KeyAttributes {
    /// Whether signing needs approvals (SKA): any `ruleUse` token has a non-empty `groups` list.
    pub fn needs_approval(&self) -> bool {
        self.policy.as_ref().is_some_and(Policy::needs_approval)
    }

    /// Whether the key is blocked (`policy.keyStatus.blocked`).
    pub fn blocked(&self) -> bool {
        self.policy
            .as_ref()
            .and_then(|p| p.key_status.as_ref())
            .is_some_and(|s| s.blocked)
    }
}

/// A key policy (`policy`): rules and key status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default, deserialize_with = "lenient::opt")]
    pub rule_use: Option<Rule>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub rule_block: Option<Rule>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub rule_unblock: Option<Rule>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub rule_modify: Option<Rule>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub key_status: Option<KeyStatus>,
}

impl Policy {
    /// Whether any `ruleUse` token has a non-empty `groups` list.
    pub fn needs_approval(&self) -> bool {
        self.rule_use
            .as_ref()
            .is_some_and(|r| r.tokens.iter().any(|t| !t.groups.is_empty()))
    }
}

/// A policy rule: tokens are OR'ed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, deserialize_with = "lenient::vec")]
    pub tokens: Vec<PolicyToken>,
}

/// A policy token: its groups are AND'ed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyToken {
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: String,
    /// Seconds after the request's creation before it may execute (0 = none).
    #[serde(default, deserialize_with = "lenient::u64")]
    pub timelock: u64,
    /// Seconds after the request's creation when it expires (0 = none).
    #[serde(default, deserialize_with = "lenient::u64")]
    pub timeout: u64,
    #[serde(default, deserialize_with = "lenient::vec")]
    pub groups: Vec<PolicyGroup>,
}

/// A group of approvers, of which `quorum` must approve.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGroup {
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(default, deserialize_with = "lenient::u32")]
    pub quorum: u32,
    #[serde(default, deserialize_with = "lenient::vec")]
    pub approvals: Vec<Approval>,
}

/// One approver of a group.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// `type`, e.g. `public_key`, `certificate`, `onboarded_approver_certificate`.
    #[serde(rename = "type", default, deserialize_with = "lenient::string")]
    pub kind: String,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub value: Option<String>,
}

/// `keyStatus`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    #[serde(default, deserialize_with = "lenient::bool")]
    pub blocked: bool,
}

/// The state of an asynchronous request (`status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestState {
    Pending,
    Approved,
    Executed,
    Rejected,
    Expired,
    Cancelled,
    Failed,
    /// A status this client does not know, as received.
    Other(String),
}

impl RequestState {
    /// Parses a status string (case-insensitive; `CANCELED` is accepted).
    pub fn parse(s: &str) -> RequestState {
        match s.trim().to_ascii_uppercase().as_str() {
            "PENDING" => RequestState::Pending,
            "APPROVED" => RequestState::Approved,
            "EXECUTED" => RequestState::Executed,
            "REJECTED" => RequestState::Rejected,
            "EXPIRED" => RequestState::Expired,
            "CANCELLED" | "CANCELED" => RequestState::Cancelled,
            "FAILED" => RequestState::Failed,
            _ => RequestState::Other(s.to_string()),
        }
    }

    /// Whether the state is final (`EXECUTED`, `REJECTED`, `EXPIRED`, `CANCELLED`, `FAILED`).
    /// `PENDING`, `APPROVED` and unknown states are not.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RequestState::Executed
                | RequestState::Rejected
                | RequestState::Expired
                | RequestState::Cancelled
                | RequestState::Failed
        )
    }
}

/// The status of an asynchronous request (`GET /v1/request/{id}`).
#[derive(Clone, Debug)]
pub struct RequestStatus {
    pub id: String,
    pub state: RequestState,
    /// Approver names or public keys.
    pub approved_by: Vec<String>,
    pub not_yet_approved_by: Vec<String>,
    pub rejected_by: Vec<String>,
    /// The decoded `result` (the signature once `EXECUTED`).
    pub result: Option<Vec<u8>>,
    pub execution_time: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Parsing of responses (from serde_json::Value, leniently)

/// A string from a string or number; null/empty → None.
pub(crate) fn v_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn v_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn v_bool(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        _ => None,
    }
}

/// Decodes base64 leniently (standard or URL-safe, padded or not, whitespace ignored):
/// [`crate::crypto::encoding::decode_base64`].
pub(crate) fn decode_b64(s: &str) -> Option<Vec<u8>> {
    crate::crypto::encoding::decode_base64(s.as_bytes()).ok()
}

/// PEM text → its bytes as given (trimmed); else base64 → the decoded bytes.
pub(crate) fn decode_pem_or_b64(s: &str) -> Option<Vec<u8>> {
    let t = s.trim();
    if t.starts_with("-----BEGIN") {
        let mut v = t.as_bytes().to_vec();
        v.push(b'\n');
        Some(v)
    } else {
        decode_b64(t)
    }
}

/// Parses a key attributes response: `{"json": {...}, "xml": ..}`, or the inner object itself.
pub(crate) fn parse_key_attributes(v: &Value) -> Result<KeyAttributes, String> {
    let obj = match v.get("json") {
        Some(Value::Object(o)) => o,
        Some(Value::String(s)) => {
            // Some serialisers wrap the object as a string.
            return serde_json::from_str::<Value>(s)
                .map_err(|_| "field \"json\" is not an object".to_string())
                .and_then(|inner| {
                    if inner.is_object() {
                        parse_key_attributes(&inner)
                    } else {
                        Err("field \"json\" is not an object".to_string())
                    }
                });
        }
        _ => match v {
            Value::Object(o) if o.contains_key("label") || o.contains_key("algorithm") => o,
            Value::Object(_) => return Err("no field \"json\"".to_string()),
            _ => return Err("expected a JSON object".to_string()),
        },
    };
    let label = v_str(obj.get("label")).unwrap_or_default();
    let algorithm = v_str(obj.get("algorithm")).unwrap_or_default();
    let public_key = match obj.get("publicKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(
            decode_pem_or_b64(s)
                .ok_or_else(|| "publicKey is neither base64 nor PEM".to_string())?,
        ),
        Some(_) => return Err("publicKey is not a string".to_string()),
    };
    let attrs = obj.get("attributes").and_then(Value::as_object);
    let flag =
        |name: &str, default: bool| attrs.and_then(|a| v_bool(a.get(name))).unwrap_or(default);
    let flags = KeyFlags {
        sign: flag("sign", false),
        decrypt: flag("decrypt", false),
        unwrap: flag("unwrap", false),
        derive: flag("derive", false),
        sensitive: flag("sensitive", true),
        always_sensitive: flag("alwaysSensitive", false),
        extractable: flag("extractable", false),
        never_extractable: flag("neverExtractable", false),
        modifiable: flag("modifiable", false),
        copyable: flag("copyable", false),
        destroyable: flag("destroyable", false),
    };
    let policy = parse_policy(obj.get("policy"))?;
    Ok(KeyAttributes {
        label,
        id: v_str(obj.get("id")),
        algorithm,
        algorithm_oid: v_str(obj.get("algorithmOid")),
        curve_oid: v_str(obj.get("curveOid")),
        key_size: v_u64(obj.get("keySize")).and_then(|n| u32::try_from(n).ok()),
        public_key,
        flags,
        policy,
        create_time: v_str(obj.get("createTime")),
    })
}

fn parse_policy(v: Option<&Value>) -> Result<Option<Policy>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(inner @ Value::Object(_)) => parse_policy(Some(&inner)),
            Ok(Value::Null) => Ok(None),
            _ => Err("policy is not a JSON object".to_string()),
        },
        Some(obj @ Value::Object(_)) => serde_json::from_value::<Policy>(obj.clone())
            .map(Some)
            .map_err(|e| format!("policy: {e}")),
        Some(_) => Err("policy is not a JSON object".to_string()),
    }
}

/// Parses `GET /v1/key`: a JSON array of labels (strings, or objects with `label`), or an
/// object wrapping such an array.
pub(crate) fn parse_key_list(v: &Value) -> Result<Vec<String>, String> {
    let items = match v {
        Value::Array(items) => items,
        Value::Object(o) => ["keys", "labels", "keyLabels", "content"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_array))
            .ok_or_else(|| "expected a JSON array of key labels".to_string())?,
        _ => return Err("expected a JSON array of key labels".to_string()),
    };
    let mut labels = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => labels.push(s.clone()),
            Value::Object(o) => match v_str(o.get("label")) {
                Some(l) => labels.push(l),
                None => return Err("a key list entry has no label".to_string()),
            },
            _ => return Err("a key list entry is not a string".to_string()),
        }
    }
    Ok(labels)
}

/// One approver list entry: a string, or an object → its name / public key.
fn approver_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => [
            "name",
            "approverName",
            "publicKey",
            "approverPublicKey",
            "approver",
            "certificate",
            "id",
            "value",
        ]
        .iter()
        .find_map(|k| v_str(o.get(*k)))
        .or_else(|| Some(Value::Object(o.clone()).to_string())),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn approver_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(approver_name).collect(),
        Some(single @ (Value::String(_) | Value::Object(_))) => {
            approver_name(single).into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// Parses `GET /v1/request/{id}`. `id` is used when the body has none.
pub(crate) fn parse_request_status(v: &Value, id: &str) -> Result<RequestStatus, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| "expected a JSON object".to_string())?;
    let status = v_str(obj.get("status"))
        .or_else(|| v_str(obj.get("state")))
        .ok_or_else(|| "no field \"status\"".to_string())?;
    let state = RequestState::parse(&status);
    let result = match obj.get("result") {
        Some(Value::String(s)) if !s.trim().is_empty() => match decode_b64(s) {
            Some(bytes) => Some(bytes),
            None if state == RequestState::Executed => {
                return Err("result is not base64".to_string())
            }
            None => None,
        },
        _ => None,
    };
    Ok(RequestStatus {
        id: v_str(obj.get("id")).unwrap_or_else(|| id.to_string()),
        state,
        approved_by: approver_list(obj.get("approvedBy")),
        not_yet_approved_by: approver_list(obj.get("notYetApprovedBy")),
        rejected_by: approver_list(obj.get("rejectedBy")),
        result,
        execution_time: v_str(obj.get("executionTime")),
    })
}

/// Lenient serde helpers for the policy types.
mod lenient {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(super::v_u64(Some(&v)).unwrap_or(0))
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(super::v_u64(Some(&v))
            .map(|n| n.min(u32::MAX as u64) as u32)
            .unwrap_or(0))
    }

    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(super::v_bool(Some(&v)).unwrap_or(false))
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(super::v_str(Some(&v)).unwrap_or_default())
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(super::v_str(Some(&v)))
    }

    /// An array whose unparseable elements become defaults (so counts are kept);
    /// null → empty; a single object → one element.
    pub fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned + Default,
    {
        let v = Value::deserialize(d)?;
        Ok(match v {
            Value::Array(items) => items
                .into_iter()
                .map(|item| serde_json::from_value(item).unwrap_or_default())
                .collect(),
            Value::Null => Vec::new(),
            other => vec![serde_json::from_value(other).unwrap_or_default()],
        })
    }

    /// null → None; an object (or a string holding a JSON object) → Some.
    pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned + Default,
    {
        let v = Value::deserialize(d)?;
        Ok(match v {
            Value::Null => None,
            Value::String(s) => match serde_json::from_str::<Value>(&s) {
                Ok(Value::Null) | Err(_) => None,
                Ok(inner) => Some(serde_json::from_value(inner).unwrap_or_default()),
            },
            other => Some(serde_json::from_value(other).unwrap_or_default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTRS_WITH_POLICY: &str = r#"{
      "json": {
        "label": "ska-key",
        "id": "4f2a",
        "attributes": {"encrypt": false, "decrypt": false, "verify": true, "sign": true,
                       "wrap": false, "unwrap": false, "derive": false, "bip32": false,
                       "extractable": false, "modifiable": true, "destroyable": true,
                       "sensitive": true, "copyable": false, "alwaysSensitive": true,
                       "neverExtractable": true},
        "keySize": 256,
        "algorithm": "EC",
        "algorithmOid": "1.2.840.10045.2.1",
        "curveOid": "1.2.840.10045.3.1.7",
        "publicKey": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
        "createTime": "2024-05-01T10:00:00Z",
        "policy": {
          "ruleUse": {"tokens": [{"name": "main", "timelock": 0, "timeout": 600,
             "groups": [{"name": "g1", "quorum": 2, "approvals": [
                {"type": "public_key", "name": "alice", "value": "MFkw..."},
                {"type": "public_key", "name": "bob", "value": "MFkw..."}]}]}]},
          "ruleBlock": {"tokens": []},
          "ruleUnblock": {"tokens": [{"name": "t", "timelock": "60", "timeout": "0", "groups": []}]},
          "ruleModify": null,
          "keyStatus": {"blocked": false}
        }
      },
      "xml": "<xml/>",
      "xmlSignature": "abc",
      "attestationKeyName": "attestation-key"
    }"#;

    #[test]
    fn attributes_with_policy() {
        let v: Value = serde_json::from_str(ATTRS_WITH_POLICY).unwrap();
        let a = parse_key_attributes(&v).unwrap();
        assert_eq!(a.label, "ska-key");
        assert_eq!(a.id.as_deref(), Some("4f2a"));
        assert_eq!(a.algorithm, "EC");
        assert_eq!(a.algorithm_oid.as_deref(), Some("1.2.840.10045.2.1"));
        assert_eq!(a.curve_oid.as_deref(), Some("1.2.840.10045.3.1.7"));
        assert_eq!(a.key_size, Some(256));
        assert_eq!(
            a.public_key.as_deref(),
            Some(
                &STANDARD
                    .decode("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
                    .unwrap()[..]
            )
        );
        assert_eq!(a.create_time.as_deref(), Some("2024-05-01T10:00:00Z"));
        assert!(a.flags.sign && a.flags.sensitive && a.flags.always_sensitive);
        assert!(a.flags.never_extractable && a.flags.modifiable && a.flags.destroyable);
        assert!(!a.flags.decrypt && !a.flags.extractable && !a.flags.copyable);
        assert!(a.needs_approval());
        assert!(!a.blocked());
        let p = a.policy.as_ref().unwrap();
        let tok = &p.rule_use.as_ref().unwrap().tokens[0];
        assert_eq!(tok.name, "main");
        assert_eq!(tok.timeout, 600);
        assert_eq!(tok.groups[0].quorum, 2);
        assert_eq!(tok.groups[0].approvals.len(), 2);
        assert_eq!(tok.groups[0].approvals[0].kind, "public_key");
        assert_eq!(tok.groups[0].approvals[1].name.as_deref(), Some("bob"));
        assert_eq!(p.rule_unblock.as_ref().unwrap().tokens[0].timelock, 60);
        assert!(p.rule_modify.is_none());
    }

    #[test]
    fn attributes_minimal_and_defaults() {
        let v = json!({"json": {"label": "rsa", "algorithm": "RSA", "keySize": "2048",
                                "publicKey": null, "policy": null, "id": null}});
        let a = parse_key_attributes(&v).unwrap();
        assert_eq!(a.key_size, Some(2048));
        assert!(a.id.is_none() && a.public_key.is_none() && a.policy.is_none());
        assert_eq!(a.flags, KeyFlags::default());
        assert!(a.flags.sensitive && !a.flags.sign);
        assert!(!a.needs_approval() && !a.blocked());
        // The inner object directly, numbers as id, string booleans
        let v = json!({"label": "ed", "algorithm": "ED", "id": 17, "curveOid": null,
                       "algorithmOid": "1.3.101.112",
                       "attributes": {"sign": "true", "sensitive": "false"}});
        let a = parse_key_attributes(&v).unwrap();
        assert_eq!(a.id.as_deref(), Some("17"));
        assert!(a.curve_oid.is_none());
        assert!(a.flags.sign && !a.flags.sensitive);
    }

    #[test]
    fn attributes_pem_public_key() {
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n";
        let v = json!({"json": {"label": "k", "algorithm": "EC", "publicKey": pem}});
        let a = parse_key_attributes(&v).unwrap();
        assert_eq!(a.public_key.unwrap(), pem.as_bytes());
        let v = json!({"json": {"label": "k", "algorithm": "EC", "publicKey": "%%%"}});
        assert!(parse_key_attributes(&v).is_err());
        assert!(parse_key_attributes(&json!([1])).is_err());
        assert!(parse_key_attributes(&json!({"xml": "x"})).is_err());
    }

    #[test]
    fn policy_variants() {
        // empty groups: no approval needed
        let v = json!({"json": {"label": "k", "algorithm": "EC",
            "policy": {"ruleUse": {"tokens": [{"name": "t", "groups": []}]},
                       "keyStatus": {"blocked": "true"}}}});
        let a = parse_key_attributes(&v).unwrap();
        assert!(!a.needs_approval());
        assert!(a.blocked());
        // a policy given as a JSON string, numbers as strings, unknown fields
        let inner = json!({"ruleUse": {"tokens": [{"name": "t", "timelock": "120", "extra": 1,
            "groups": [{"name": "g", "quorum": "1", "approvals": [{"type": "public_key", "value": "AA=="}]}]}]}});
        let v = json!({"json": {"label": "k", "algorithm": "EC", "policy": inner.to_string()}});
        let a = parse_key_attributes(&v).unwrap();
        assert!(a.needs_approval());
        let tok = &a.policy.unwrap().rule_use.unwrap().tokens[0];
        assert_eq!(tok.timelock, 120);
        assert_eq!(tok.groups[0].quorum, 1);
        assert!(tok.groups[0].approvals[0].name.is_none());
        // groups with odd entries still count
        let v = json!({"json": {"label": "k", "algorithm": "EC",
            "policy": {"ruleUse": {"tokens": [{"groups": ["weird"]}]}}}});
        assert!(parse_key_attributes(&v).unwrap().needs_approval());
        let v = json!({"json": {"label": "k", "algorithm": "EC", "policy": 5}});
        assert!(parse_key_attributes(&v).is_err());
    }

    #[test]
    fn request_status_shapes() {
        let v = json!({"id": "r1", "status": "PENDING", "executionTime": null,
            "approvedBy": ["MFkwEw-alice"], "notYetApprovedBy": [{"name": "bob", "publicKey": "MFkw"}],
            "rejectedBy": [], "result": null});
        let s = parse_request_status(&v, "x").unwrap();
        assert_eq!(s.id, "r1");
        assert_eq!(s.state, RequestState::Pending);
        assert!(!s.state.is_terminal());
        assert_eq!(s.approved_by, vec!["MFkwEw-alice"]);
        assert_eq!(s.not_yet_approved_by, vec!["bob"]);
        assert!(s.rejected_by.is_empty() && s.result.is_none());

        let v = json!({"status": "executed", "executionTime": "2024-01-01T00:00:00Z",
            "approvedBy": [{"publicKey": "PK1"}, {"approverName": "carol"}], "result": "AQID"});
        let s = parse_request_status(&v, "r2").unwrap();
        assert_eq!(s.id, "r2");
        assert_eq!(s.state, RequestState::Executed);
        assert!(s.state.is_terminal());
        assert_eq!(s.approved_by, vec!["PK1", "carol"]);
        assert_eq!(s.result.as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(s.execution_time.as_deref(), Some("2024-01-01T00:00:00Z"));

        for (text, state) in [
            ("APPROVED", RequestState::Approved),
            ("REJECTED", RequestState::Rejected),
            ("EXPIRED", RequestState::Expired),
            ("CANCELLED", RequestState::Cancelled),
            ("CANCELED", RequestState::Cancelled),
            ("FAILED", RequestState::Failed),
            ("SOMETHING", RequestState::Other("SOMETHING".into())),
        ] {
            let s = parse_request_status(&json!({"status": text}), "r").unwrap();
            assert_eq!(s.state, state);
        }
        assert!(parse_request_status(&json!({"id": "r"}), "r").is_err());
        assert!(parse_request_status(&json!("PENDING"), "r").is_err());
        assert!(parse_request_status(&json!({"status": "EXECUTED", "result": "!!"}), "r").is_err());
        // Non-base64 result of a failed request is ignored
        let s = parse_request_status(&json!({"status": "FAILED", "result": "HSM error!"}), "r")
            .unwrap();
        assert!(s.result.is_none());
    }

    #[test]
    fn key_list_shapes() {
        assert_eq!(
            parse_key_list(&json!(["a", "b/0/1"])).unwrap(),
            vec!["a", "b/0/1"]
        );
        assert_eq!(parse_key_list(&json!([{"label": "a"}])).unwrap(), vec!["a"]);
        assert_eq!(parse_key_list(&json!({"keys": ["a"]})).unwrap(), vec!["a"]);
        assert!(parse_key_list(&json!({"x": 1})).is_err());
        assert!(parse_key_list(&json!([1])).is_err());
        assert!(parse_key_list(&json!("a")).is_err());
    }

    #[test]
    fn sign_request_body() {
        let mut r = SignRequest::new("k", "SHA256_WITH_ECDSA", b"hello".to_vec());
        let v = r.to_json();
        assert_eq!(
            v,
            json!({"signRequest": {"payload": "aGVsbG8=", "payloadType": "UNSPECIFIED",
                   "signKeyName": "k", "signatureAlgorithm": "SHA256_WITH_ECDSA"},
                   "requestSignature": null})
        );
        r.signature_type = Some("DER".into());
        r.key_password = Some(Secret::new("pwé".into()));
        r.meta_data = Some(br#"{"app":"x"}"#.to_vec());
        let v = r.to_json();
        let sr = &v["signRequest"];
        assert_eq!(sr["signatureType"], "DER");
        assert_eq!(sr["keyPassword"], json!(["p", "w", "é"]));
        assert_eq!(sr["metaData"], STANDARD.encode(br#"{"app":"x"}"#));
        assert_eq!(sr["metaDataSignature"], Value::Null);
        r.meta_data_signature = Some(vec![1, 2]);
        assert_eq!(r.to_json()["signRequest"]["metaDataSignature"], "AQI=");
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("pw") && dbg.contains("<redacted>"));
    }

    #[test]
    fn base64_and_pem() {
        assert_eq!(decode_b64("AQID").unwrap(), vec![1, 2, 3]);
        assert_eq!(decode_b64("AQ").unwrap(), vec![1]);
        assert_eq!(decode_b64("AQ==\n").unwrap(), vec![1]);
        assert_eq!(decode_b64("-_8").unwrap(), vec![0xfb, 0xff]);
        assert!(decode_b64("***").is_none());
        assert_eq!(
            decode_pem_or_b64("  -----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----")
                .unwrap(),
            b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
        );
    }
}
