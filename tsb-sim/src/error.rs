//! Error types: [`SimError`] for the library/CLI, [`ApiError`] for TSB error bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Errors of the simulator's library API and CLI.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid (file syntax, unknown field, inconsistent values).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// File-system or socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Key generation, parsing or signing failed.
    #[error("key error: {0}")]
    Key(String),
    /// TLS set-up failed.
    #[error("TLS error: {0}")]
    Tls(String),
    /// No such sign request / key.
    #[error("not found: {0}")]
    NotFound(String),
    /// The approver is not part of the key's policy.
    #[error("{0}")]
    UnknownApprover(String),
    /// The operation is not allowed in the request's current state.
    #[error("{0}")]
    Rejected(String),
    /// A control-interface HTTP call failed (CLI).
    #[error("control request failed: {0}")]
    Http(String),
}

/// An error answered by the `/v1/` API: HTTP status plus the TSB error body
/// `{"errorCode": .., "reason": "res.error...", "message": ".."}`. Codes and reasons follow the
/// TSB's published error catalogue (`BusinessReason` of Securosys' public TSB data classes, see
/// `docs/tsb-api.md`, "Errors"); the simulator's own choices are marked as such.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    /// Builds an error; the HTTP status follows the TSB rule: 401 (auth) → 401, 45x → 403,
    /// 65x → 404, 7xx → 500, anything else → 400.
    pub fn new(code: u32, reason: &'static str, message: impl Into<String>) -> ApiError {
        let status = match code {
            617 | 631 | 632 => StatusCode::UNAUTHORIZED,
            450..=459 => StatusCode::FORBIDDEN,
            650..=659 => StatusCode::NOT_FOUND,
            700..=799 => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            code,
            reason,
            message: message.into(),
        }
    }

    /// 401 `res.error.missing.approval` (answered with HTTP 400).
    pub fn missing_approval(label: &str) -> ApiError {
        ApiError::new(
            401,
            "res.error.missing.approval",
            format!("Key '{label}' requires approvals: use the asynchronous /v1/sign endpoint"),
        )
    }
    /// 600 `res.error.input.validation.failed`.
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(600, "res.error.input.validation.failed", message)
    }
    /// 607 `res.error.algorithm.not.supported.by.key`.
    pub fn algorithm(message: impl Into<String>) -> ApiError {
        ApiError::new(607, "res.error.algorithm.not.supported.by.key", message)
    }
    /// 612 `res.error.invalid.payload`.
    pub fn payload(message: impl Into<String>) -> ApiError {
        ApiError::new(612, "res.error.invalid.payload", message)
    }
    /// 614 `res.error.operation.forbidden.for.key`.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(614, "res.error.operation.forbidden.for.key", message)
    }
    /// 617 `res.error.invalid.access.token` (HTTP 401).
    pub fn access_token(message: impl Into<String>) -> ApiError {
        ApiError::new(617, "res.error.invalid.access.token", message)
    }
    /// 620 `res.error.key.password.mismatch`.
    pub fn password(label: &str) -> ApiError {
        ApiError::new(
            620,
            "res.error.key.password.mismatch",
            format!("Wrong or missing password for key '{label}'"),
        )
    }
    /// 621 `res.error.invalid.json`.
    pub fn json(message: impl Into<String>) -> ApiError {
        ApiError::new(621, "res.error.invalid.json", message)
    }
    /// 631 `res.error.invalid.api.key` (HTTP 401).
    pub fn api_key(message: impl Into<String>) -> ApiError {
        ApiError::new(631, "res.error.invalid.api.key", message)
    }
    /// 632 `res.error.missing.client.certificate` (HTTP 401; only with `clientAuth = "optional"`).
    /// The simulator's own choice: in the TSB catalogue 632 is `res.error.approver.already.existing`
    /// and how a TSB answers a missing client certificate is not public.
    pub fn client_certificate() -> ApiError {
        ApiError::new(
            632,
            "res.error.missing.client.certificate",
            "A TLS client certificate is required",
        )
    }
    /// 608 `res.error.key.already.existing` (HTTP 400): `POST /v1/key` with a label in use.
    pub fn key_exists(label: &str) -> ApiError {
        ApiError::new(
            608,
            "res.error.key.already.existing",
            format!("Key with label '{label}' already exists"),
        )
    }
    /// 650 `res.error.key.not.existent` (HTTP 404).
    pub fn no_key(label: &str) -> ApiError {
        ApiError::new(
            650,
            "res.error.key.not.existent",
            format!("Key with label '{label}' does not exist"),
        )
    }
    /// 651 `res.error.request.not.existent` (HTTP 404).
    pub fn no_request(id: &str) -> ApiError {
        ApiError::new(
            651,
            "res.error.request.not.existent",
            format!("Request with id '{id}' does not exist"),
        )
    }
    /// 652 `res.error.certificate.does.not.exist` (HTTP 404). The simulator's own choice: the
    /// TSB's code for a key without certificate is not public (652 is
    /// `res.error.task.not.existent` in its catalogue).
    pub fn no_certificate(label: &str) -> ApiError {
        ApiError::new(
            652,
            "res.error.certificate.does.not.exist",
            format!("Key '{label}' has no certificate"),
        )
    }
    /// 701 `res.error.in.hsm` (HTTP 500).
    pub fn hsm(message: impl Into<String>) -> ApiError {
        ApiError::new(701, "res.error.in.hsm", message)
    }

    /// The JSON body `{"errorCode","reason","message"}`.
    pub fn body(&self) -> serde_json::Value {
        json!({"errorCode": self.code, "reason": self.reason, "message": self.message})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
