//! The status of an asynchronous (approval) request: `GET /v1/request/{id}`.
//!
//! Tolerated beyond the documented contract (docs/tsb-api.md): `state` for `status`; approver
//! entries as strings or as objects with one of several name fields (or a single entry instead
//! of a list); `result` in any base64 alphabet, padded or not.

use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::lenient::{self, Known};

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
    pub(crate) fn parse(s: &str) -> RequestState {
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
    pub state: RequestState,
    /// Approver names or public keys.
    pub approved_by: Vec<String>,
    pub not_yet_approved_by: Vec<String>,
    pub(crate) rejected_by: Vec<String>,
    /// The decoded `result` (the signature once `EXECUTED`).
    pub(crate) result: Option<Vec<u8>>,
}

/// The body of `GET /v1/request/{id}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusWire {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    status: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    state: Option<String>,
    #[serde(default, deserialize_with = "approvers")]
    approved_by: Vec<String>,
    #[serde(default, deserialize_with = "approvers")]
    not_yet_approved_by: Vec<String>,
    #[serde(default, deserialize_with = "approvers")]
    rejected_by: Vec<String>,
    /// Only a non-blank string counts.
    #[serde(default, deserialize_with = "lenient::opt_text")]
    result: Option<String>,
    /// The request the answer is about: when present it must be the one asked for (a late
    /// answer to another request on a kept-alive connection must not be read as this one's).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    id: Option<String>,
    // Known fields the module does not use.
    #[serde(rename = "executionTime", default)]
    _execution_time: Known,
}

/// An approver list: an array of entries, or a single string or object; anything else is
/// empty. Entries that are null are left out.
fn approvers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of approvers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
            while let Some(Approver(name)) = seq.next_element()? {
                out.extend(name);
            }
            Ok(out)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(vec![s.to_string()])
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<String>, A::Error> {
            ApproverVisitor
                .visit_map(map)
                .map(|a| a.into_iter().collect())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

/// One approver entry → its name or public key; null → none. An object gives the first of
/// its name fields, else its JSON text; other values give their JSON text.
struct Approver(Option<String>);

impl<'de> Deserialize<'de> for Approver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ApproverVisitor).map(Approver)
    }
}

/// The fields an approver object may name its approver with, in this order of preference.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApproverObject {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    approver_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    public_key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    approver_public_key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    approver: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    certificate: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    value: Option<String>,
}

impl ApproverObject {
    fn name(self) -> Option<String> {
        self.name
            .or(self.approver_name)
            .or(self.public_key)
            .or(self.approver_public_key)
            .or(self.approver)
            .or(self.certificate)
            .or(self.id)
            .or(self.value)
    }
}

struct ApproverVisitor;

impl<'de> Visitor<'de> for ApproverVisitor {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an approver")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<String>, E> {
        Ok(Some(s.to_string()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<String>, A::Error> {
        // Approver objects are free-form: read whole (their fields are never "unknown"), so
        // that one without a name field can still be shown as it came.
        let object = Value::Object(Map::deserialize(MapAccessDeserializer::new(map))?);
        let name = ApproverObject::deserialize(&object)
            .ok()
            .and_then(ApproverObject::name);
        Ok(Some(name.unwrap_or_else(|| object.to_string())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<String>, A::Error> {
        Ok(Some(
            Value::deserialize(SeqAccessDeserializer::new(seq))?.to_string(),
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Option<String>, E> {
        Ok(Some(b.to_string()))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<String>, E> {
        Ok(Some(n.to_string()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<String>, E> {
        Ok(Some(n.to_string()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Option<String>, E> {
        Ok(Some(Value::from(n).to_string()))
    }
}

/// Parses `GET /v1/request/{id}`. (`id` is the request asked for; an answer whose own `id`
/// names another request is refused.)
pub(crate) fn parse_request_status(v: &Value, id: &str) -> Result<RequestStatus, String> {
    parse_request_status_checked(v, id).map(|(status, _)| status)
}

/// [`parse_request_status`], and the JSON paths of the fields the module does not know, for
/// `tsb-pkcs11 doctor`.
pub fn parse_request_status_checked(
    v: &Value,
    id: &str,
) -> Result<(RequestStatus, Vec<String>), String> {
    if !v.is_object() {
        return Err("expected a JSON object".to_string());
    }
    let mut unknown = Vec::new();
    let wire: StatusWire = lenient::from_value_tracked(v, "", &mut unknown)?;
    unknown.sort();
    if let Some(other) = wire.id.as_deref().filter(|o| !o.is_empty() && *o != id) {
        return Err(format!(
            "the answer is about request {}, not the one asked for",
            crate::logging::sanitize(other)
        ));
    }
    let status = wire
        .status
        .or(wire.state)
        .ok_or_else(|| "no field \"status\"".to_string())?;
    let state = RequestState::parse(&status);
    let result = match wire.result.as_deref().map(lenient::decode_b64) {
        Some(Some(bytes)) => Some(bytes),
        // A failed request may carry an error text there.
        Some(None) if state == RequestState::Executed => {
            return Err("result: not base64".to_string())
        }
        _ => None,
    };
    Ok((
        RequestStatus {
            state,
            approved_by: wire.approved_by,
            not_yet_approved_by: wire.not_yet_approved_by,
            rejected_by: wire.rejected_by,
            result,
        },
        unknown,
    ))
}
