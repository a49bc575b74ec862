//! Errors of the TSB client. They know HTTP and the TSB's JSON error bodies, nothing of PKCS#11.

use std::fmt;

use serde_json::Value;

/// An error of one TSB call.
#[derive(Clone, Debug)]
pub struct TsbError {
    /// The endpoint, without ids or labels, e.g. `POST /v1/synchronousSign` or
    /// `GET /v1/key/{label}/attributes`.
    pub(crate) endpoint: String,
    /// What went wrong.
    pub kind: TsbErrorKind,
}

/// The class of a [`TsbError`].
#[derive(Clone, Debug)]
pub enum TsbErrorKind {
    /// Failed before the request could reach the server: DNS, connection refused, connect
    /// timeout, TLS handshake, certificate or pin failure. Safe to retry anything.
    NotSent(String),
    /// A timeout after the connection was made (the request may have reached the server).
    Timeout(String),
    /// An I/O error after sending (connection dropped mid-response, malformed HTTP, ...).
    Transport(String),
    /// A non-2xx answer. The body is parsed leniently: TSB JSON
    /// (`{"errorCode","reason","message"}`), generic `{"message"}`; for HTML, text or an
    /// empty body `code` and `reason` are `None` and `message` holds at most a short
    /// sanitised excerpt (≤ 200 characters).
    Http {
        /// The HTTP status.
        status: u16,
        /// The TSB's own `errorCode` (e.g. 650), not an HTTP status.
        code: Option<i64>,
        /// The TSB `reason`, e.g. `res.error.key.not.existent`.
        reason: Option<String>,
        /// The message, sanitised.
        message: Option<String>,
    },
    /// A 2xx answer whose body is not the expected JSON.
    InvalidResponse(String),
    /// A well-formed 2xx answer the caller's check refused (a signature that does not fit the
    /// key or does not verify). The text is the module's own, never the server's.
    Refused(String),
    /// A configuration problem: bad URL, CA file, client certificate, insecure http refused.
    Config(String),
}

/// The TSB error codes the module acts on, by name (docs/tsb-api.md, "Errors"). The numbers
/// appear only here; call sites match on the names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsbReason {
    /// 401 `res.error.missing.approval`: the key needs approvals, sign through `/v1/sign`.
    MissingApproval,
    /// 600: the request failed validation.
    ValidationFailed,
    /// 607: the signature algorithm is not supported by the key.
    AlgorithmNotSupported,
    /// 612: the payload is invalid for the algorithm.
    InvalidPayload,
    /// 614: the operation is forbidden for the key (e.g. it is blocked).
    OperationForbidden,
    /// 617: the access token (JWT) is invalid.
    InvalidToken,
    /// 620 `res.error.key.password.mismatch`.
    WrongPassword,
    /// 621: the request's JSON is invalid.
    InvalidJson,
    /// 631 `res.error.invalid.api.key`: try the next API key of the role.
    InvalidApiKey,
    /// 45x: an authorisation failure.
    NotAuthorized,
    /// 650 `res.error.key.not.existent`.
    KeyNotFound,
    /// 608 `res.error.key.already.existing`: `POST /v1/key` with a label in use (the TSB's
    /// catalogue, docs/tsb-api.md "Errors"); 622, the code of earlier simulators, too.
    KeyExists,
    /// 651: the approval request does not exist.
    RequestNotFound,
    /// 7xx: an error in the HSM.
    HsmError,
}

impl TsbReason {
    /// The name of a TSB `errorCode`, if the module knows it.
    pub(crate) fn from_code(code: i64) -> Option<TsbReason> {
        Some(match code {
            401 => TsbReason::MissingApproval,
            600 => TsbReason::ValidationFailed,
            607 => TsbReason::AlgorithmNotSupported,
            612 => TsbReason::InvalidPayload,
            614 => TsbReason::OperationForbidden,
            617 => TsbReason::InvalidToken,
            620 => TsbReason::WrongPassword,
            621 => TsbReason::InvalidJson,
            631 => TsbReason::InvalidApiKey,
            450..=459 => TsbReason::NotAuthorized,
            650 => TsbReason::KeyNotFound,
            608 | 622 => TsbReason::KeyExists,
            651 => TsbReason::RequestNotFound,
            700..=799 => TsbReason::HsmError,
            _ => return None,
        })
    }
}

impl TsbError {
    pub fn new(endpoint: impl Into<String>, kind: TsbErrorKind) -> TsbError {
        TsbError {
            endpoint: endpoint.into(),
            kind,
        }
    }

    /// Whether the request may have reached the server (false only for `NotSent` and `Config`).
    #[cfg(test)]
    pub(crate) fn may_have_reached_server(&self) -> bool {
        !matches!(
            self.kind,
            TsbErrorKind::NotSent(_) | TsbErrorKind::Config(_)
        )
    }

    /// The TSB `errorCode` of an HTTP error, if any.
    pub fn tsb_code(&self) -> Option<i64> {
        match &self.kind {
            TsbErrorKind::Http { code, .. } => *code,
            _ => None,
        }
    }

    /// The named reason of an HTTP error that carries a TSB `errorCode` the module knows.
    pub(crate) fn reason(&self) -> Option<TsbReason> {
        self.tsb_code().and_then(TsbReason::from_code)
    }

    /// For a call about one key: whether the answer says the key does not exist (TSB 650, or
    /// HTTP 404 whatever the body, as a proxy or another TSB version may answer).
    pub(crate) fn is_key_not_found(&self) -> bool {
        self.reason() == Some(TsbReason::KeyNotFound) || self.http_status() == Some(404)
    }

    /// The HTTP status of an HTTP error, if any.
    pub fn http_status(&self) -> Option<u16> {
        match &self.kind {
            TsbErrorKind::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether this is the TSB's "invalid API key" answer (HTTP 401 with errorCode 631).
    pub(crate) fn is_invalid_api_key(&self) -> bool {
        self.http_status() == Some(401) && self.reason() == Some(TsbReason::InvalidApiKey)
    }
}

impl fmt::Display for TsbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.endpoint.is_empty() {
            write!(f, "{}: ", self.endpoint)?;
        }
        match &self.kind {
            TsbErrorKind::NotSent(m) => write!(f, "request not sent: {m}"),
            TsbErrorKind::Timeout(m) => write!(f, "timed out: {m}"),
            TsbErrorKind::Transport(m) => write!(f, "transport error: {m}"),
            TsbErrorKind::InvalidResponse(m) => write!(f, "invalid response: {m}"),
            TsbErrorKind::Refused(m) => write!(f, "answer refused: {m}"),
            TsbErrorKind::Config(m) => write!(f, "configuration: {m}"),
            TsbErrorKind::Http {
                status,
                code,
                reason,
                message,
            } => {
                write!(f, "HTTP {status}")?;
                match (code, reason) {
                    (Some(c), Some(r)) => write!(f, ", TSB {c} {r}")?,
                    (Some(c), None) => write!(f, ", TSB {c}")?,
                    (None, Some(r)) => write!(f, ", {r}")?,
                    (None, None) => {}
                }
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TsbError {}

/// Maximum length of a message taken from a response body.
pub(crate) const MAX_MESSAGE_CHARS: usize = 200;

/// Cleans text from a server for logs and errors: control characters become spaces,
/// runs of whitespace collapse, the known secrets are replaced by `<redacted>`, and the
/// result is cut to [`MAX_MESSAGE_CHARS`] characters. Empty → `None`.
pub(crate) fn sanitize(text: &str, secrets: &[&str]) -> Option<String> {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for secret in secrets {
        // Very short "secrets" would only garble the text; they are not worth hiding.
        if secret.len() >= 4 && s.contains(secret) {
            s = s.replace(secret, "<redacted>");
        }
    }
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return None;
    }
    if collapsed.chars().count() > MAX_MESSAGE_CHARS {
        let mut cut: String = collapsed.chars().take(MAX_MESSAGE_CHARS - 1).collect();
        cut.push('…');
        Some(cut)
    } else {
        Some(collapsed)
    }
}

/// The fields of an error body: (`errorCode`, `reason`, `message`).
pub(crate) type ErrorFields = (Option<i64>, Option<String>, Option<String>);

/// Parses a non-2xx body leniently: TSB JSON, generic JSON, HTML, plain text or empty.
pub(crate) fn parse_error_body(body: &[u8], secrets: &[&str]) -> ErrorFields {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return (None, None, None);
    }
    if let Ok(value) = serde_json::from_str::<Value>(trimmed) {
        return match value {
            Value::Object(obj) => {
                let code = obj
                    .get("errorCode")
                    .or_else(|| obj.get("code"))
                    .and_then(|v| match v {
                        Value::Number(n) => n.as_i64(),
                        Value::String(s) => s.trim().parse().ok(),
                        _ => None,
                    });
                let reason = obj
                    .get("reason")
                    .and_then(Value::as_str)
                    .and_then(|s| sanitize(s, secrets));
                let message = ["message", "error_description", "error", "detail", "title"]
                    .iter()
                    .find_map(|k| obj.get(*k).and_then(Value::as_str))
                    .and_then(|s| sanitize(s, secrets));
                (code, reason, message)
            }
            Value::String(s) => (None, None, sanitize(&s, secrets)),
            _ => (None, None, None),
        };
    }
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with('<') {
        // HTML (or XML) from a proxy: the title if any, else the text without tags.
        if let Some(start) = lower.find("<title") {
            if let Some(gt) = lower[start..].find('>') {
                let from = start + gt + 1;
                if let Some(end) = lower[from..].find("</title") {
                    if let Some(t) = trimmed.get(from..from + end) {
                        return (None, None, sanitize(t, secrets));
                    }
                }
            }
        }
        return (None, None, sanitize(&strip_tags(trimmed), secrets));
    }
    (None, None, sanitize(trimmed, secrets))
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(4096));
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
        if out.len() > 4 * MAX_MESSAGE_CHARS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that is a JSON string (some gateways answer so) is the message itself.
    #[test]
    fn a_json_string_body_is_the_message() {
        assert_eq!(
            parse_error_body(br#""key not found""#, &[]),
            (None, None, Some("key not found".to_string()))
        );
    }

    #[test]
    fn html_text_is_read_up_to_four_times_the_message_length() {
        // A tag becomes a space: `<p>` and the spaces make 4 × MAX_MESSAGE_CHARS bytes, then
        // one more character is kept; beyond it nothing is.
        let body = format!("<p>{}x</p>", " ".repeat(4 * MAX_MESSAGE_CHARS - 1));
        assert_eq!(strip_tags(&body).trim(), "x");
        assert_eq!(
            parse_error_body(body.as_bytes(), &[]).2.as_deref(),
            Some("x")
        );
        let body = format!("<p>{}x</p>", " ".repeat(4 * MAX_MESSAGE_CHARS));
        assert_eq!(strip_tags(&body).trim(), "");
    }

    /// Each TSB errorCode the module acts on has its name (docs/tsb-api.md, "Errors"), the
    /// ranges end where they should, and other codes have none.
    #[test]
    fn tsb_codes_by_name() {
        use TsbReason::*;
        for (code, reason) in [
            (401, Some(MissingApproval)),
            (600, Some(ValidationFailed)),
            (607, Some(AlgorithmNotSupported)),
            (612, Some(InvalidPayload)),
            (614, Some(OperationForbidden)),
            (617, Some(InvalidToken)),
            (620, Some(WrongPassword)),
            (621, Some(InvalidJson)),
            (631, Some(InvalidApiKey)),
            (449, None),
            (450, Some(NotAuthorized)),
            (459, Some(NotAuthorized)),
            (460, None),
            (650, Some(KeyNotFound)),
            (651, Some(RequestNotFound)),
            (699, None),
            (700, Some(HsmError)),
            (799, Some(HsmError)),
            (800, None),
            (0, None),
            (-650, None),
        ] {
            assert_eq!(TsbReason::from_code(code), reason, "{code}");
        }
    }

    /// A key that does not exist: TSB 650 under whatever status, or HTTP 404 whatever the body.
    #[test]
    fn key_not_found_by_code_or_status() {
        let http = |status, code| {
            TsbError::new(
                "POST /v1/key/attributes",
                TsbErrorKind::Http {
                    status,
                    code,
                    reason: None,
                    message: None,
                },
            )
        };
        assert!(http(400, Some(650)).is_key_not_found());
        assert!(http(404, Some(650)).is_key_not_found());
        assert!(http(404, None).is_key_not_found());
        assert!(http(404, Some(600)).is_key_not_found());
        assert!(!http(400, Some(651)).is_key_not_found());
        assert!(!http(400, None).is_key_not_found());
        assert!(!TsbError::new("x", TsbErrorKind::Transport("404 650".into())).is_key_not_found());
    }

    /// Only tags are left out of an HTML page's text: a `>` in the text stays.
    #[test]
    fn html_text_keeps_a_greater_than_sign() {
        let (_, _, message) = parse_error_body(b"<html><p>load > 90 %</p></html>", &[]);
        assert_eq!(message.as_deref(), Some("load > 90 %"));
    }

    #[test]
    fn label_in_use_is_608_and_622() {
        // 608 is the TSB catalogue's code; 622 the one earlier simulators sent.
        assert_eq!(TsbReason::from_code(608), Some(TsbReason::KeyExists));
        assert_eq!(TsbReason::from_code(622), Some(TsbReason::KeyExists));
        assert_eq!(TsbReason::from_code(609), None);
    }

    #[test]
    fn tsb_error_body() {
        let body = br#"{"errorCode":650,"reason":"res.error.key.not.existent","message":"Key 'k' does not exist"}"#;
        let (code, reason, message) = parse_error_body(body, &[]);
        assert_eq!(code, Some(650));
        assert_eq!(reason.as_deref(), Some("res.error.key.not.existent"));
        assert_eq!(message.as_deref(), Some("Key 'k' does not exist"));
    }

    #[test]
    fn error_code_as_string() {
        let (code, _, _) = parse_error_body(br#"{"errorCode":"631","reason":"x"}"#, &[]);
        assert_eq!(code, Some(631));
    }

    #[test]
    fn generic_error_body() {
        let (code, reason, message) = parse_error_body(br#"{"message":"Bad request"}"#, &[]);
        assert_eq!((code, reason), (None, None));
        assert_eq!(message.as_deref(), Some("Bad request"));
        // Spring-style default error body
        let (_, _, message) = parse_error_body(
            br#"{"timestamp":"2024","status":500,"error":"Internal Server Error","path":"/v1/key"}"#,
            &[],
        );
        assert_eq!(message.as_deref(), Some("Internal Server Error"));
    }

    #[test]
    fn html_error_body() {
        let body = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>";
        let (code, reason, message) = parse_error_body(body, &[]);
        assert_eq!((code, reason), (None, None));
        assert_eq!(message.as_deref(), Some("502 Bad Gateway"));
        let (_, _, message) = parse_error_body(b"<html><body><h1>Oops</h1></body></html>", &[]);
        assert_eq!(message.as_deref(), Some("Oops"));
    }

    #[test]
    fn empty_and_garbage_bodies() {
        assert_eq!(parse_error_body(b"", &[]), (None, None, None));
        assert_eq!(parse_error_body(b"  \r\n", &[]), (None, None, None));
        assert_eq!(parse_error_body(b"[1,2]", &[]), (None, None, None));
        let (c, r, m) = parse_error_body(b"{\"errorCode\": 6", &[]);
        assert_eq!((c, r), (None, None));
        assert_eq!(m.as_deref(), Some("{\"errorCode\": 6"));
        let long = "x".repeat(1000);
        let (_, _, m) = parse_error_body(long.as_bytes(), &[]);
        assert_eq!(m.unwrap().chars().count(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn secrets_are_redacted_from_messages() {
        let body = br#"{"errorCode":631,"reason":"res.error.invalid.api.key","message":"API key sk-12345 is invalid\n"}"#;
        let (_, _, m) = parse_error_body(body, &["sk-12345"]);
        assert_eq!(m.as_deref(), Some("API key <redacted> is invalid"));
    }

    #[test]
    fn display_formats() {
        let e = TsbError::new(
            "POST /v1/synchronousSign",
            TsbErrorKind::Http {
                status: 404,
                code: Some(650),
                reason: Some("res.error.key.not.existent".into()),
                message: Some("message".into()),
            },
        );
        assert_eq!(
            e.to_string(),
            "POST /v1/synchronousSign: HTTP 404, TSB 650 res.error.key.not.existent: message"
        );
        assert_eq!(e.tsb_code(), Some(650));
        assert_eq!(e.http_status(), Some(404));
        assert!(e.may_have_reached_server());
        let e = TsbError::new(
            "GET /v1/key",
            TsbErrorKind::Http {
                status: 502,
                code: None,
                reason: None,
                message: None,
            },
        );
        assert_eq!(e.to_string(), "GET /v1/key: HTTP 502");
        let e = TsbError::new("GET /v1/key", TsbErrorKind::NotSent("refused".into()));
        assert!(!e.may_have_reached_server());
        assert_eq!(e.to_string(), "GET /v1/key: request not sent: refused");
        assert_eq!(e.tsb_code(), None);
        assert_eq!(e.http_status(), None);
        let e = TsbError::new("GET /v1/key", TsbErrorKind::Timeout("read".into()));
        assert!(e.may_have_reached_server());
        let e = TsbError::new("", TsbErrorKind::Config("bad".into()));
        assert_eq!(e.to_string(), "configuration: bad");
        assert!(!e.may_have_reached_server());
    }
}
