//! Fault injection (`POST|GET|DELETE /sim/faults`, [`crate::Simulator::inject`]).
//!
//! A fault matches `/v1/` requests by method and path prefix and applies to the next `count`
//! matching requests (or until cleared). JSON form:
//! `{"endpoint":"POST /v1/synchronousSign","kind":"status5xx","status":503,"count":2}`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::StatusCode;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What a fault does to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// Delay the answer by `latencyMs`, then process normally.
    #[serde(alias = "latencyMs")]
    Latency,
    /// Answer `status` (default 500) with a TSB error body (errorCode default 701,
    /// `res.error.in.hsm`) without processing the request.
    Status5xx,
    /// Answer 502 with an HTML body (`text/html`), like a reverse proxy, without processing.
    HtmlBadGateway,
    /// Answer `status` (404 by default, or 405) with Spring Boot's "Not Found" / "Method Not
    /// Allowed" body (no TSB `errorCode`), without processing: a TSB that does not know this
    /// request form (an older version, or a proxy in front of it).
    UnknownEndpoint,
    /// Process the request, then answer 200 `application/json` with a truncated body.
    MalformedJson,
    /// Process the request, send the status line, headers and half of the body, then close the
    /// TCP connection (the declared Content-Length is never reached).
    DropConnection,
    /// Read the request and never answer: the connection is closed only when the faults are
    /// cleared, the simulator stops, or `hangMaxMs` (default 10 min) passed.
    Hang,
    /// Process the request; the `signature` (synchronousSign) or `result` (request status) in
    /// the answer gets its last bit flipped. Only answers that carry a signature use up `count`.
    BadSignature,
    /// Process the request; a JSON object answer gets one more field, `field` (a dotted path,
    /// e.g. `json.attributes.quantumSafe`; default `simulatedExtraField`), with the value
    /// `true`, as a TSB that differs from the documented contract would send.
    ExtraField,
    /// Hostile (see [`crate::hostile`]): process the request, answer it, then write one more
    /// complete HTTP response on the same connection: `body` (as JSON, status 200), or a copy
    /// of the answer when `body` is absent.
    ExtraResponse,
    /// Hostile: the first matching answer is remembered; each later matching request is
    /// processed but answered with the remembered answer (one answer serving many requests).
    ReplayAnswer,
    /// Hostile: a sign (`/v1/synchronousSign`, `/v1/sign`) is signed by another key of the
    /// simulator (`key`, else the first other key of the same type): a valid signature, by
    /// the wrong key.
    WrongKeySignature,
    /// Hostile: a sign is signed by the right key over other data (the payload with its first
    /// byte changed).
    OtherDataSignature,
    /// Hostile: `POST /v1/sign` answers the caller's bearer token (else its `X-API-KEY`) as the
    /// `signRequestId`, and the request is filed under that id.
    EchoToken,
    /// Hostile: `POST /v1/sign` answers a `signRequestId` of `bytes` bytes (default 2 MiB).
    HugeRequestId,
    /// Hostile: the answer's status line and headers are sent at once, its body one byte every
    /// `intervalMs` (default 100).
    Drip,
    /// Hostile: the answer declares `Content-Length: bytes` (default 2^62), sends its real body
    /// and closes the connection.
    LyingLength,
}

/// One fault. `endpoint` is `"*"` (every `/v1/` request), `"METHOD /path/prefix"`,
/// `"* /path/prefix"` or `"/path/prefix"`. The prefix matches whole path segments of either
/// the raw path or the normalised endpoint name (e.g. `GET /v1/key/attributes` matches
/// `GET /v1/key/my-key/attributes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    #[serde(default = "star")]
    pub endpoint: String,
    pub kind: FaultKind,
    /// Number of matching requests affected; `None` → until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// HTTP status for `status5xx` (default 500) and `unknownEndpoint` (default 404).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Delay before the fault's effect (required for `latency`, optional for every kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// errorCode of the `status5xx` body (default 701).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// message of the `status5xx` body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The field an `extraField` fault adds (dotted path into the answer's objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `wrongKeySignature`: the label of the key that signs instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `hugeRequestId`: the length of the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// `drip`: milliseconds between two bytes of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// `extraResponse`: the JSON body of the extra response (absent: a copy of the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

fn star() -> String {
    "*".to_string()
}

impl Fault {
    /// A fault of `kind` on `endpoint` until cleared.
    pub fn new(endpoint: &str, kind: FaultKind) -> Fault {
        Fault {
            endpoint: endpoint.to_string(),
            kind,
            count: None,
            status: None,
            latency_ms: None,
            error_code: None,
            message: None,
            field: None,
            key: None,
            bytes: None,
            interval_ms: None,
            body: None,
        }
    }
    /// `latency`: add `ms` milliseconds.
    pub fn latency(endpoint: &str, ms: u64) -> Fault {
        Fault {
            latency_ms: Some(ms),
            ..Fault::new(endpoint, FaultKind::Latency)
        }
    }
    /// `status5xx` with HTTP `status` and a TSB error body (errorCode 701).
    pub fn status(endpoint: &str, status: u16) -> Fault {
        Fault {
            status: Some(status),
            ..Fault::new(endpoint, FaultKind::Status5xx)
        }
    }
    /// `unknownEndpoint` with HTTP `status` (404 or 405).
    pub fn unknown_endpoint(endpoint: &str, status: u16) -> Fault {
        Fault {
            status: Some(status),
            ..Fault::new(endpoint, FaultKind::UnknownEndpoint)
        }
    }
    /// `htmlBadGateway`.
    pub fn html_bad_gateway(endpoint: &str) -> Fault {
        Fault::new(endpoint, FaultKind::HtmlBadGateway)
    }
    /// `malformedJson`.
    pub fn malformed_json(endpoint: &str) -> Fault {
        Fault::new(endpoint, FaultKind::MalformedJson)
    }
    /// `dropConnection`.
    pub fn drop_connection(endpoint: &str) -> Fault {
        Fault::new(endpoint, FaultKind::DropConnection)
    }
    /// `hang`.
    pub fn hang(endpoint: &str) -> Fault {
        Fault::new(endpoint, FaultKind::Hang)
    }
    /// `badSignature`.
    pub fn bad_signature(endpoint: &str) -> Fault {
        Fault::new(endpoint, FaultKind::BadSignature)
    }
    /// `extraField`: adds `field` (a dotted path) to JSON object answers.
    pub fn extra_field(endpoint: &str, field: &str) -> Fault {
        Fault {
            field: Some(field.to_string()),
            ..Fault::new(endpoint, FaultKind::ExtraField)
        }
    }
    /// `extraResponse`: after each answer, one more HTTP response with `body` (`None`: a copy
    /// of the answer).
    pub fn extra_response(endpoint: &str, body: Option<serde_json::Value>) -> Fault {
        Fault {
            body,
            ..Fault::new(endpoint, FaultKind::ExtraResponse)
        }
    }
    /// `replayAnswer`: every matching request gets the first matching answer.
    pub fn replay_answer(endpoint: &str) -> Fault {
        Fault::new(endpoint, FaultKind::ReplayAnswer)
    }
    /// `wrongKeySignature`: signs are signed by `key` (`None`: another key of the same type).
    pub fn wrong_key_signature(endpoint: &str, key: Option<&str>) -> Fault {
        Fault {
            key: key.map(str::to_string),
            ..Fault::new(endpoint, FaultKind::WrongKeySignature)
        }
    }
    /// `otherDataSignature`: signs are signed by the right key over other data.
    pub fn other_data_signature(endpoint: &str) -> Fault {
        Fault::new(endpoint, FaultKind::OtherDataSignature)
    }
    /// `echoToken`: `POST /v1/sign` answers the caller's bearer token as the request id.
    pub fn echo_token() -> Fault {
        Fault::new("POST /v1/sign", FaultKind::EchoToken)
    }
    /// `hugeRequestId`: `POST /v1/sign` answers a request id of `bytes` bytes.
    pub fn huge_request_id(bytes: u64) -> Fault {
        Fault {
            bytes: Some(bytes),
            ..Fault::new("POST /v1/sign", FaultKind::HugeRequestId)
        }
    }
    /// `drip`: the body of the answer is sent one byte every `interval_ms`.
    pub fn drip(endpoint: &str, interval_ms: u64) -> Fault {
        Fault {
            interval_ms: Some(interval_ms),
            ..Fault::new(endpoint, FaultKind::Drip)
        }
    }
    /// `lyingLength`: the answer declares `Content-Length: bytes` and is cut at its real end.
    pub fn lying_length(endpoint: &str, bytes: u64) -> Fault {
        Fault {
            bytes: Some(bytes),
            ..Fault::new(endpoint, FaultKind::LyingLength)
        }
    }
    /// Limit the fault to the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Fault {
        self.count = Some(n);
        self
    }
    /// Sets the errorCode and message of a `status5xx` body.
    pub fn with_error(mut self, error_code: u32, message: &str) -> Fault {
        self.error_code = Some(error_code);
        self.message = Some(message.to_string());
        self
    }
    /// Adds a delay before the fault's effect.
    pub fn with_latency(mut self, ms: u64) -> Fault {
        self.latency_ms = Some(ms);
        self
    }

    /// Checks the fault is well formed.
    pub fn validate(&self) -> Result<(), String> {
        if self.count == Some(0) {
            return Err("count must be at least 1 (leave it out for 'until cleared')".into());
        }
        if self.kind == FaultKind::Latency && self.latency_ms.is_none() {
            return Err("a latency fault needs latencyMs".into());
        }
        if self.kind == FaultKind::HugeRequestId && self.bytes.is_some_and(|b| b > 16 << 20) {
            return Err("bytes must be at most 16 MiB".into());
        }
        if self.interval_ms.is_some_and(|ms| ms > 60_000) {
            return Err("intervalMs must be at most 60000".into());
        }
        if let Some(s) = self.status {
            if !(400..=599).contains(&s) {
                return Err(format!("status {s} is not an HTTP error status"));
            }
        }
        let e = self.endpoint.trim();
        if e != "*" && !e.contains('/') {
            return Err(format!(
                "endpoint '{e}' must be '*' or 'METHOD /path' (e.g. 'POST /v1/synchronousSign')"
            ));
        }
        Ok(())
    }

    /// Whether this fault applies to a request.
    pub fn matches(&self, method: &str, path: &str, normalized_path: &str) -> bool {
        let spec = self.endpoint.trim();
        if spec == "*" {
            return true;
        }
        let (m, prefix) = match spec.split_once(char::is_whitespace) {
            Some((m, p)) => (m.trim(), p.trim()),
            None => ("*", spec),
        };
        if m != "*" && !m.eq_ignore_ascii_case(method) {
            return false;
        }
        if prefix == "*" {
            return true;
        }
        prefix_matches(prefix, path) || prefix_matches(prefix, normalized_path)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    let path = path.trim_end_matches('/');
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

#[derive(Debug)]
struct Active {
    id: u64,
    fault: Fault,
}

/// The active faults, in insertion order (the first match wins).
#[derive(Debug)]
pub struct FaultRegistry {
    active: Mutex<(u64, Vec<Active>)>,
    cleared: tokio::sync::watch::Sender<u64>,
}

impl Default for FaultRegistry {
    fn default() -> Self {
        FaultRegistry {
            active: Mutex::new((0, Vec::new())),
            cleared: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl FaultRegistry {
    pub fn add(&self, fault: Fault) {
        let mut g = self.active.lock();
        g.0 += 1;
        let id = g.0;
        g.1.push(Active { id, fault });
    }

    /// Removes all faults and wakes hanging requests.
    pub fn clear(&self) {
        self.active.lock().1.clear();
        self.cleared.send_modify(|g| *g += 1);
    }

    /// The active faults with their remaining counts.
    pub fn list(&self) -> Vec<Fault> {
        self.active
            .lock()
            .1
            .iter()
            .map(|a| a.fault.clone())
            .collect()
    }

    /// The first fault matching the request (not yet consumed) that `acts` accepts.
    pub fn find(
        &self,
        method: &str,
        path: &str,
        normalized: &str,
        acts: impl Fn(&Fault) -> bool,
    ) -> Option<(u64, Fault)> {
        self.active
            .lock()
            .1
            .iter()
            .find(|a| a.fault.matches(method, path, normalized) && acts(&a.fault))
            .map(|a| (a.id, a.fault.clone()))
    }

    /// Uses up one application of fault `id`.
    pub fn consume(&self, id: u64) {
        let mut g = self.active.lock();
        if let Some(pos) = g.1.iter().position(|a| a.id == id) {
            if let Some(n) = g.1[pos].fault.count.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    g.1.remove(pos);
                }
            }
        }
    }

    /// A receiver that changes whenever the faults are cleared.
    pub fn cleared_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cleared.subscribe()
    }
}

/// What hostile faults remember: the first answer of each `replayAnswer` fault (by fault id),
/// which the later requests it matches get again (see `hostile::answer`).
#[derive(Default)]
pub(crate) struct AnswerMemory {
    pub(crate) replay: Mutex<HashMap<u64, (StatusCode, Bytes)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let f: Fault = serde_json::from_str(
            r#"{"endpoint":"POST /v1/synchronousSign","kind":"status5xx","status":503,"count":2}"#,
        )
        .unwrap();
        assert_eq!(f, Fault::status("POST /v1/synchronousSign", 503).times(2));
        let back = serde_json::to_value(&f).unwrap();
        assert_eq!(back["kind"], "status5xx");
    }

    #[test]
    fn matching() {
        let f = Fault::hang("GET /v1/request");
        assert!(f.matches("GET", "/v1/request/abc", "/v1/request"));
        assert!(!f.matches("DELETE", "/v1/request/abc", "/v1/request"));
        let f = Fault::hang("POST /v1/sign");
        assert!(!f.matches("POST", "/v1/synchronousSign", "/v1/synchronousSign"));
        let f = Fault::hang("GET /v1/key/attributes");
        assert!(f.matches("GET", "/v1/key/a%2Fb/attributes", "/v1/key/attributes"));
        assert!(Fault::hang("*").matches("GET", "/v1/key", "/v1/key"));
    }

    #[test]
    fn counting() {
        let r = FaultRegistry::default();
        r.add(Fault::html_bad_gateway("*").times(2));
        let (id, _) = r.find("GET", "/v1/key", "/v1/key", |_| true).unwrap();
        r.consume(id);
        assert!(r.find("GET", "/v1/key", "/v1/key", |_| true).is_some());
        r.consume(id);
        assert!(r.find("GET", "/v1/key", "/v1/key", |_| true).is_none());
    }
}
