//! The TSB client: one `ureq` agent, authentication headers per endpoint role, API-key
//! rollover, retries of idempotent requests, bounded reads.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parking_lot::RwLock;
use serde_json::{json, Value};

use super::error::{parse_error_body, sanitize, TsbError, TsbErrorKind, TsbReason};
use super::models::{
    decode_b64, decode_pem_or_b64, parse_key_attributes, parse_key_list, parse_request_status,
    password_chars, v_str, KeyAttributes, RequestStatus, SignRequest,
};
use super::tls;

mod keys;
use crate::config::{normalise_url, AuthType, Config, Secret};
use crate::logging::Net;
pub(crate) use keys::{NewKey, NewKeyType};

/// The largest response body read (larger 2xx bodies are an `InvalidResponse`).
pub(crate) const MAX_BODY: u64 = 4 * 1024 * 1024;

/// The API-key role of an endpoint (`apiKeys` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// `KeyManagementToken`: `/v1/key*`.
    KeyManagement,
    /// `KeyOperationToken`: `/v1/synchronousSign`, `/v1/sign`, `/v1/request/**`, `/v1/certificate/**`.
    KeyOperation,
    /// `ServiceToken`: `/v1/versionInfo`, `/v1/licenseInfo`, `/v1/keystore/statistics`.
    Service,
}

impl Role {
    fn index(self) -> usize {
        match self {
            Role::KeyManagement => 0,
            Role::KeyOperation => 1,
            Role::Service => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::KeyManagement => "KeyManagementToken",
            Role::KeyOperation => "KeyOperationToken",
            Role::Service => "ServiceToken",
        }
    }
}

/// The API-key role of a request path (starting with `/v1/`).
pub(crate) fn role_for_path(path: &str) -> Option<Role> {
    let p = path.split(['?', '#']).next().unwrap_or(path);
    let under = |prefix: &str| p == prefix || p.starts_with(&format!("{prefix}/"));
    if p == "/v1/versionInfo" || p == "/v1/licenseInfo" || under("/v1/keystore/statistics") {
        Some(Role::Service)
    } else if under("/v1/key") {
        Some(Role::KeyManagement)
    } else if p == "/v1/synchronousSign"
        || p == "/v1/sign"
        || under("/v1/request")
        || under("/v1/certificate")
    {
        Some(Role::KeyOperation)
    } else {
        None
    }
}

/// Percent-encodes one path segment: everything but `A-Z a-z 0-9 - . _ ~` (so `/` too).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a value may be sent in an HTTP header (visible ASCII, space, tab).
fn header_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b))
}

/// When a failed request may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent operations: on NotSent, Timeout, Transport, 5xx, InvalidResponse.
    Idempotent,
    /// Sign requests, approval requests, certificate changes: only when the request provably
    /// never reached the server (NotSent). Always sent on a new connection.
    NotSentOnly,
}

/// One request to make.
struct Call<'a> {
    method: &'static str,
    /// The endpoint without ids, for errors and logs.
    endpoint: &'static str,
    /// The path with its (encoded) ids.
    path: String,
    body: Option<Vec<u8>>,
    retry: Retry,
    /// Non-2xx statuses handed to the parser instead of becoming errors.
    accept: &'static [u16],
    /// A bearer token to use instead of the login / configured one.
    bearer: Option<&'a Secret>,
    /// The single API key to use instead of the role's keys (no rollover).
    api_key: Option<&'a Secret>,
    /// Further secrets (e.g. a key password) to keep out of error messages.
    secrets: Vec<&'a str>,
}

impl<'a> Call<'a> {
    fn new(method: &'static str, endpoint: &'static str, path: String, retry: Retry) -> Self {
        Call {
            method,
            endpoint,
            path,
            body: None,
            retry,
            accept: &[],
            bearer: None,
            api_key: None,
            secrets: Vec::new(),
        }
    }

    fn json_body(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }
}

/// A response handed to a parser.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (2xx bodies must be JSON where a value is expected).
    fn json(&self) -> Result<Value, TsbErrorKind> {
        let text = String::from_utf8_lossy(&self.body);
        let t = text.trim();
        if t.is_empty() {
            return Err(TsbErrorKind::InvalidResponse(format!(
                "HTTP {} with an empty body, expected JSON",
                self.status
            )));
        }
        if t.starts_with('<') {
            return Err(TsbErrorKind::InvalidResponse(format!(
                "HTTP {} with HTML/XML ({} bytes), expected JSON",
                self.status,
                self.body.len()
            )));
        }
        serde_json::from_str(t).map_err(|e| {
            TsbErrorKind::InvalidResponse(format!(
                "HTTP {} with a body that is not valid JSON ({} bytes): {e}",
                self.status,
                self.body.len()
            ))
        })
    }
}

/// The client of one TSB. `Send + Sync`; share it through an `Arc`. It owns no threads.
pub struct TsbClient {
    base: String,
    /// Keeps idle keep-alive connections: reads and other idempotent requests.
    agent: ureq::Agent,
    /// Keeps no connection: each request on a new one. Used for requests that are retried only
    /// when they provably never reached the TSB (signing, approval requests, certificate
    /// changes): a pooled connection the TSB is closing could swallow such a request with no
    /// way to tell whether it arrived.
    fresh_agent: ureq::Agent,
    token: Option<Secret>,
    /// Indexed by [`Role::index`].
    api_keys: [Vec<Secret>; 3],
    /// The index of the key of each role that worked last.
    key_index: [AtomicUsize; 3],
    login_bearer: RwLock<Option<Secret>>,
    login_operation_key: RwLock<Option<Secret>>,
    retries: u32,
    backoff_base: Duration,
    /// `requestTimeoutMs`: the deadline of one call, retries included.
    request_timeout: Duration,
    /// `connectTimeoutMs`, at most `requestTimeoutMs`.
    connect_timeout: Duration,
}

impl fmt::Debug for TsbClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsbClient")
            .field("base", &self.base)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

fn setup_error(message: impl Into<String>) -> TsbError {
    TsbError::new("", TsbErrorKind::Config(message.into()))
}

impl TsbClient {
    /// Builds the HTTP agents (ureq with a rustls client configuration, connect/read/write
    /// timeouts and an overall per-request deadline from the configuration). No network I/O.
    /// The configured `token` is sent only with authType TOKEN; the client certificate is
    /// used with authType CERT or when both `certpath` and `keypath` are set.
    pub fn new(config: &Config) -> Result<TsbClient, TsbError> {
        let base =
            normalise_url(config.rest_api()).map_err(|m| setup_error(format!("restApi: {m}")))?;
        let (scheme, host) = tls::scheme_and_host(&base)
            .ok_or_else(|| setup_error("restApi: the URL has no host"))?;
        let s = &config.pkcs11;
        let tls_config = match scheme.as_str() {
            "https" => Some(tls::client_config(config).map_err(setup_error)?),
            "http" => {
                if !tls::is_loopback_host(&host) {
                    if s.allow_insecure_http {
                        log::warn!(
                            "TSB at {base}: plain http:// to a non-loopback host (pkcs11.allowInsecureHttp); \
                             credentials and payloads travel unencrypted"
                        );
                    } else {
                        return Err(setup_error(
                            "plain http:// to a non-loopback host is refused; set pkcs11.allowInsecureHttp to allow it",
                        ));
                    }
                }
                if config.client_cert.is_some() {
                    log::warn!("TSB at {base}: plain http://, the client certificate (certpath) is not used");
                }
                None
            }
            _ => return Err(setup_error("restApi: expected an http:// or https:// URL")),
        };
        // Two agents with the same settings (and the same rustls configuration, so TLS
        // sessions are resumed across both): one keeps idle connections for reads, the other
        // keeps none, for requests that must not be sent twice.
        // ureq bounds a connect by the connect timeout alone, not by the request's deadline:
        // never let it be longer than the deadline (and retry only while a whole connect fits,
        // see `execute`).
        let connect_timeout = s.connect_timeout.min(s.request_timeout);
        let agent = |pooled: bool| {
            let mut builder = ureq::AgentBuilder::new()
                .timeout_connect(connect_timeout)
                .timeout_read(s.request_timeout)
                .timeout_write(s.request_timeout)
                .timeout(s.request_timeout)
                .redirects(0)
                .user_agent(concat!("tsb-pkcs11/", env!("CARGO_PKG_VERSION")));
            builder = if pooled {
                builder.max_idle_connections_per_host(4)
            } else {
                builder.max_idle_connections(0)
            };
            if let Some(tls) = &tls_config {
                builder = builder.tls_config(tls.clone());
            }
            builder.build()
        };
        if let Some(t) = &config.token {
            if !header_safe(t.expose()) {
                return Err(setup_error(
                    "token contains characters not allowed in an HTTP header",
                ));
            }
        }
        let roles = [
            (&config.api_keys.key_management, Role::KeyManagement),
            (&config.api_keys.key_operation, Role::KeyOperation),
            (&config.api_keys.service, Role::Service),
        ];
        for (keys, role) in roles {
            if let Some(i) = keys.iter().position(|k| !header_safe(k.expose())) {
                return Err(setup_error(format!(
                    "apiKeys.{}[{i}] contains characters not allowed in an HTTP header",
                    role.name()
                )));
            }
        }
        // The configured JWT is sent with authType TOKEN only (as Securosys' Notation plugin
        // does); a JWT given at login is always sent.
        let token = match config.auth_type {
            AuthType::Token => config.token.clone(),
            _ => {
                if config.token.is_some() {
                    log::debug!("TSB: token ignored (authType is not TOKEN)");
                }
                None
            }
        };
        Ok(TsbClient {
            base,
            agent: agent(true),
            fresh_agent: agent(false),
            token,
            api_keys: [
                config.api_keys.key_management.clone(),
                config.api_keys.key_operation.clone(),
                config.api_keys.service.clone(),
            ],
            key_index: [
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            ],
            login_bearer: RwLock::new(None),
            login_operation_key: RwLock::new(None),
            retries: s.retries,
            backoff_base: Duration::from_millis(100),
            request_timeout: s.request_timeout,
            connect_timeout,
        })
    }

    /// The normalised base URL (no trailing `/`, no `/v1`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET path` → the answer's JSON as it came (`tsb-pkcs11 doctor` compares it with the
    /// fields this client knows). `endpoint` names the call in errors.
    pub(crate) fn get_json(&self, endpoint: &'static str, path: String) -> Result<Value, TsbError> {
        let call = Call::new("GET", endpoint, path, Retry::Idempotent);
        self.execute(&call, |reply| reply.json())
    }

    #[cfg(test)]
    pub(crate) fn set_backoff_base(&mut self, d: Duration) {
        self.backoff_base = d;
    }

    /// `GET /v1/versionInfo` → the `Version` string.
    pub fn version_info(&self) -> Result<String, TsbError> {
        let call = Call::new(
            "GET",
            "GET /v1/versionInfo",
            "/v1/versionInfo".into(),
            Retry::Idempotent,
        );
        self.execute(&call, |reply| {
            let v = reply.json()?;
            v_str(v.get("Version"))
                .or_else(|| v_str(v.get("version")))
                .ok_or_else(|| TsbErrorKind::InvalidResponse("no field \"Version\"".into()))
        })
    }

    /// `GET /v1/key` → the key labels.
    pub fn list_keys(&self) -> Result<Vec<String>, TsbError> {
        let call = Call::new("GET", "GET /v1/key", "/v1/key".into(), Retry::Idempotent);
        self.execute(&call, |reply| {
            parse_key_list(&reply.json()?).map_err(TsbErrorKind::InvalidResponse)
        })
    }

    /// `GET /v1/key/{label}/attributes` (label percent-encoded, `/` included), or
    /// `POST /v1/key/attributes` with `{"label", "password": [chars]}` when a password is given.
    pub fn key_attributes(
        &self,
        label: &str,
        password: Option<&Secret>,
    ) -> Result<KeyAttributes, TsbError> {
        let post = password.is_some() || label.is_empty() || label == "." || label == "..";
        let call = if post {
            let mut body = json!({ "label": label });
            if let Some(pw) = password {
                body["password"] = password_chars(pw);
            }
            let mut call = Call::new(
                "POST",
                "POST /v1/key/attributes",
                "/v1/key/attributes".into(),
                Retry::Idempotent,
            )
            .json_body(&body);
            if let Some(pw) = password {
                call.secrets.push(pw.expose());
            }
            call
        } else {
            Call::new(
                "GET",
                "GET /v1/key/{label}/attributes",
                format!("/v1/key/{}/attributes", encode_segment(label)),
                Retry::Idempotent,
            )
        };
        self.execute(&call, |reply| {
            let mut attrs =
                parse_key_attributes(&reply.json()?).map_err(TsbErrorKind::InvalidResponse)?;
            if attrs.label.is_empty() {
                attrs.label = label.to_string();
            }
            Ok(attrs)
        })
    }

    /// `GET /v1/certificate/{label}` → the certificate of a key as received: the PEM text bytes,
    /// or the decoded DER when the field (`certificate` or `rawCertificate`) is base64.
    /// `Ok(None)` on 404 or when the response has no certificate.
    pub fn certificate(&self, label: &str) -> Result<Option<Vec<u8>>, TsbError> {
        let mut call = Call::new(
            "GET",
            "GET /v1/certificate/{label}",
            format!(
                "/v1/certificate/{}",
                segment(label, "GET /v1/certificate/{label}")?
            ),
            Retry::Idempotent,
        );
        call.accept = &[404];
        self.execute(&call, |reply| {
            if reply.status == 404 {
                return Ok(None);
            }
            let text = String::from_utf8_lossy(&reply.body);
            if text.trim_start().starts_with("-----BEGIN") {
                return Ok(decode_pem_or_b64(&text));
            }
            let v = reply.json()?;
            let field = match &v {
                Value::String(_) => Some(&v),
                _ => ["certificate", "rawCertificate"]
                    .iter()
                    .filter_map(|k| v.get(*k))
                    .find(|f| f.as_str().is_some_and(|s| !s.trim().is_empty())),
            };
            match field.and_then(Value::as_str) {
                None => Ok(None),
                Some(s) => decode_pem_or_b64(s).map(Some).ok_or_else(|| {
                    TsbErrorKind::InvalidResponse("certificate is neither PEM nor base64".into())
                }),
            }
        })
    }

    /// `POST /v1/certificate/import/plain` with `{"label", "certificate": base64 DER}`.
    pub fn import_certificate(&self, label: &str, der: &[u8]) -> Result<(), TsbError> {
        let body = json!({ "label": label, "certificate": STANDARD.encode(der) });
        let call = Call::new(
            "POST",
            "POST /v1/certificate/import/plain",
            "/v1/certificate/import/plain".into(),
            Retry::NotSentOnly,
        )
        .json_body(&body);
        self.execute(&call, |_| Ok(()))
    }

    /// `DELETE /v1/certificate/{label}`.
    pub fn delete_certificate(&self, label: &str) -> Result<(), TsbError> {
        let call = Call::new(
            "DELETE",
            "DELETE /v1/certificate/{label}",
            format!(
                "/v1/certificate/{}",
                segment(label, "DELETE /v1/certificate/{label}")?
            ),
            Retry::NotSentOnly,
        );
        self.execute(&call, |_| Ok(()))
    }

    /// `POST /v1/synchronousSign` → the decoded `signature`. Retried only when the request
    /// provably never reached the server.
    pub fn sign_synchronous(&self, req: &SignRequest) -> Result<Vec<u8>, TsbError> {
        let call = sign_call(req, "POST /v1/synchronousSign", "/v1/synchronousSign");
        log::trace!(
            "TSB synchronousSign {} {}: payload {} bytes",
            Net(&req.key),
            req.algorithm,
            req.payload.len()
        );
        let sig = self.execute(&call, |reply| {
            let v = reply.json()?;
            let s = v_str(v.get("signature"))
                .ok_or_else(|| TsbErrorKind::InvalidResponse("no field \"signature\"".into()))?;
            decode_b64(&s)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| TsbErrorKind::InvalidResponse("signature is not base64".into()))
        })?;
        log::trace!("TSB synchronousSign: signature {} bytes", sig.len());
        Ok(sig)
    }

    /// `POST /v1/sign` (201) → the `signRequestId`. Retried only when the request provably
    /// never reached the server, so an approval request is never filed twice.
    pub fn sign_asynchronous(&self, req: &SignRequest) -> Result<String, TsbError> {
        let call = sign_call(req, "POST /v1/sign", "/v1/sign");
        log::trace!(
            "TSB sign {} {}: payload {} bytes",
            Net(&req.key),
            req.algorithm,
            req.payload.len()
        );
        self.execute(&call, |reply| {
            let v = reply.json()?;
            let id = match &v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                _ => v_str(v.get("signRequestId"))
                    .or_else(|| v_str(v.get("requestId")))
                    .or_else(|| v_str(v.get("id"))),
            };
            id.ok_or_else(|| TsbErrorKind::InvalidResponse("no field \"signRequestId\"".into()))
        })
    }

    /// `GET /v1/request/{id}` → the request's status.
    pub fn request_status(&self, id: &str) -> Result<RequestStatus, TsbError> {
        let call = Call::new(
            "GET",
            "GET /v1/request/{id}",
            format!("/v1/request/{}", segment(id, "GET /v1/request/{id}")?),
            Retry::Idempotent,
        );
        self.execute(&call, |reply| {
            let status =
                parse_request_status(&reply.json()?, id).map_err(TsbErrorKind::InvalidResponse)?;
            if let Some(r) = &status.result {
                log::trace!("TSB request status: result {} bytes", r.len());
            }
            Ok(status)
        })
    }

    /// `DELETE /v1/request/{id}`: cancels a request.
    pub fn cancel_request(&self, id: &str) -> Result<(), TsbError> {
        let call = Call::new(
            "DELETE",
            "DELETE /v1/request/{id}",
            format!("/v1/request/{}", segment(id, "DELETE /v1/request/{id}")?),
            Retry::Idempotent,
        );
        self.execute(&call, |_| Ok(()))
    }

    /// Login check (pinIs token): `GET /v1/key` with `jwt` as the bearer token. Ok when the
    /// TSB accepts it; a 401 comes back as the Http error.
    pub fn check_bearer(&self, jwt: &Secret) -> Result<(), TsbError> {
        if !header_safe(jwt.expose()) {
            return Err(TsbError::new(
                "GET /v1/key",
                TsbErrorKind::Config(
                    "the token contains characters not allowed in an HTTP header".into(),
                ),
            ));
        }
        let mut call = Call::new("GET", "GET /v1/key", "/v1/key".into(), Retry::Idempotent);
        call.bearer = Some(jwt);
        self.execute(&call, |_| Ok(()))
    }

    /// Login check (pinIs apiKey): `GET /v1/request/<random uuid>` with `key` as the
    /// `KeyOperationToken`. 404 / TSB 651 (no such request) = the key is accepted; 401 = wrong.
    pub fn check_operation_api_key(&self, key: &Secret) -> Result<(), TsbError> {
        const ENDPOINT: &str = "GET /v1/request/{id}";
        if !header_safe(key.expose()) {
            return Err(TsbError::new(
                ENDPOINT,
                TsbErrorKind::Config(
                    "the API key contains characters not allowed in an HTTP header".into(),
                ),
            ));
        }
        let mut call = Call::new(
            "GET",
            ENDPOINT,
            format!("/v1/request/{}", random_uuid()),
            Retry::Idempotent,
        );
        call.api_key = Some(key);
        call.accept = &[404];
        match self.execute(&call, |_| Ok(())) {
            Ok(()) => Ok(()),
            Err(e) if e.reason() == Some(TsbReason::RequestNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets (or with `None` clears) the JWT given at login; it replaces the configured token.
    pub fn set_login_bearer(&self, jwt: Option<Secret>) {
        *self.login_bearer.write() = jwt;
    }

    /// Sets (or with `None` clears) the `KeyOperationToken` API key given at login; it replaces
    /// the configured keys of that role.
    pub fn set_login_operation_key(&self, key: Option<Secret>) {
        *self.login_operation_key.write() = key;
    }

    // -----------------------------------------------------------------------------------
    // Request machinery

    fn err(&self, call: &Call<'_>, kind: TsbErrorKind) -> TsbError {
        TsbError::new(call.endpoint, kind)
    }

    /// Runs a call with retries; `parse` turns a response into the value (an error from it
    /// is an `InvalidResponse`-class failure, retried like one).
    ///
    /// `requestTimeoutMs` is the deadline of the whole call, retries included: each attempt
    /// gets the time that is left, and a retry is made only when, after its backoff, at least
    /// a quarter of the timeout and a whole connect timeout are left (so a TSB that hangs
    /// costs one timeout, not three, and a connect never runs past the deadline).
    fn execute<T>(
        &self,
        call: &Call<'_>,
        parse: impl Fn(&Reply) -> Result<T, TsbErrorKind>,
    ) -> Result<T, TsbError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut attempt: u32 = 0;
        loop {
            let result = self
                .send_with_keys(call, deadline)
                .and_then(|reply| parse(&reply).map_err(|k| self.err(call, self.redact(call, k))));
            let e = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let retryable = match call.retry {
                Retry::Idempotent => e.retryable_if_idempotent(),
                Retry::NotSentOnly => matches!(e.kind, TsbErrorKind::NotSent(_)),
            };
            let delay = self.backoff(attempt);
            let left_after_backoff = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(delay);
            let retry = retryable
                && attempt < self.retries
                && left_after_backoff >= (self.request_timeout / 4).max(self.connect_timeout);
            if !retry {
                if retryable && attempt < self.retries {
                    log::debug!(
                        "TSB request failed: {} (no retry: requestTimeoutMs {} nearly used up)",
                        Net(&e.to_string()),
                        self.request_timeout.as_millis()
                    );
                } else {
                    log::debug!("TSB request failed: {}", Net(&e.to_string()));
                }
                return Err(e);
            }
            log::warn!(
                "TSB request failed: {} (attempt {} of {}; retrying in {} ms)",
                Net(&e.to_string()),
                attempt + 1,
                self.retries + 1,
                delay.as_millis()
            );
            std::thread::sleep(delay);
            attempt += 1;
        }
    }

    /// 100 ms, 300 ms, 900 ms, ... capped at 2 s (for the default base).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 3u32.saturating_pow(attempt.min(10));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_base.saturating_mul(20))
    }

    /// Sends a call with the API keys of its role: a 401 with TSB 631 moves on to the next key;
    /// the key that worked is remembered.
    fn send_with_keys(&self, call: &Call<'_>, deadline: Instant) -> Result<Reply, TsbError> {
        let role = role_for_path(&call.path);
        if let Some(key) = call.api_key {
            return self.send_once(call, Some(key), deadline);
        }
        if role == Some(Role::KeyOperation) {
            let login_key = self.login_operation_key.read().clone();
            if let Some(key) = login_key {
                return self.send_once(call, Some(&key), deadline);
            }
        }
        let Some(role) = role else {
            return self.send_once(call, None, deadline);
        };
        let keys = &self.api_keys[role.index()];
        if keys.is_empty() {
            return self.send_once(call, None, deadline);
        }
        let n = keys.len();
        let start = self.key_index[role.index()].load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match self.send_once(call, Some(&keys[idx]), deadline) {
                Err(e) if e.is_invalid_api_key() => {
                    if i + 1 < n {
                        log::warn!(
                            "TSB {}: API key #{} of {} rejected (TSB 631); trying the next one",
                            call.endpoint,
                            idx + 1,
                            role.name()
                        );
                    }
                    last = Some(e);
                }
                other => {
                    let authenticated = match &other {
                        Ok(_) => true,
                        Err(e) => e.http_status().is_some_and(|s| s != 401),
                    };
                    if authenticated && idx != start {
                        self.key_index[role.index()].store(idx, Ordering::Relaxed);
                        log::info!("TSB: now using API key #{} of {}", idx + 1, role.name());
                    }
                    return other;
                }
            }
        }
        Err(last.expect("at least one key was tried"))
    }

    /// Sends one HTTP request and reads its (bounded) body.
    /// `deadline` bounds the whole exchange (connect, TLS, send, response and body).
    fn send_once(
        &self,
        call: &Call<'_>,
        api_key: Option<&Secret>,
        deadline: Instant,
    ) -> Result<Reply, TsbError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.err(
                call,
                TsbErrorKind::NotSent(format!(
                    "requestTimeoutMs ({} ms) used up before the request was sent",
                    self.request_timeout.as_millis()
                )),
            ));
        }
        let url = format!("{}{}", self.base, call.path);
        let agent = match call.retry {
            Retry::Idempotent => &self.agent,
            Retry::NotSentOnly => &self.fresh_agent,
        };
        let mut req = agent
            .request(call.method, &url)
            .timeout(remaining)
            .set("Accept", "application/json");
        let login_bearer = if call.bearer.is_none() {
            self.login_bearer.read().clone()
        } else {
            None
        };
        let bearer = call
            .bearer
            .or(login_bearer.as_ref())
            .or(self.token.as_ref());
        if let Some(b) = bearer {
            if !header_safe(b.expose()) {
                return Err(self.err(
                    call,
                    TsbErrorKind::Config(
                        "the token contains characters not allowed in an HTTP header".into(),
                    ),
                ));
            }
            req = req.set("Authorization", &format!("Bearer {}", b.expose()));
        }
        if let Some(k) = api_key {
            if !header_safe(k.expose()) {
                return Err(self.err(
                    call,
                    TsbErrorKind::Config(
                        "the API key contains characters not allowed in an HTTP header".into(),
                    ),
                ));
            }
            req = req.set("X-API-KEY", k.expose());
        }
        let started = Instant::now();
        let result = match &call.body {
            Some(body) => req.set("Content-Type", "application/json").send_bytes(body),
            None => req.call(),
        };
        let response = match result {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => {
                let kind = classify_transport(&t);
                log::debug!(
                    "TSB {} {} -> failed after {} ms",
                    call.method,
                    Net(&call.path),
                    started.elapsed().as_millis()
                );
                return Err(self.err(call, kind));
            }
        };
        let status = response.status();
        let ok = (200..300).contains(&status) || call.accept.contains(&status);
        let body = read_body(response);
        log::debug!(
            "TSB {} {} -> {} ({} ms)",
            call.method,
            Net(&call.path),
            status,
            started.elapsed().as_millis()
        );
        if ok {
            let (body, truncated) = body.map_err(|k| self.err(call, k))?;
            if truncated {
                return Err(self.err(
                    call,
                    TsbErrorKind::InvalidResponse(format!(
                        "HTTP {status} with a body larger than {} bytes",
                        MAX_BODY
                    )),
                ));
            }
            Ok(Reply { status, body })
        } else {
            // The error body is best effort: an unreadable one still gives the status.
            let body = body.map(|(b, _)| b).unwrap_or_default();
            let secrets = self.secrets(call);
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let (code, reason, message) = parse_error_body(&body, &secrets);
            Err(self.err(
                call,
                TsbErrorKind::Http {
                    status,
                    code,
                    reason,
                    message,
                },
            ))
        }
    }

    /// Every secret this call could carry, for redaction of server texts.
    fn secrets(&self, call: &Call<'_>) -> Vec<String> {
        let mut out: Vec<String> = call.secrets.iter().map(|s| s.to_string()).collect();
        let mut push = |s: &Secret| out.push(s.expose().to_string());
        if let Some(t) = &self.token {
            push(t);
        }
        if let Some(b) = call.bearer {
            push(b);
        }
        if let Some(k) = call.api_key {
            push(k);
        }
        if let Some(b) = self.login_bearer.read().as_ref() {
            push(b);
        }
        if let Some(k) = self.login_operation_key.read().as_ref() {
            push(k);
        }
        for keys in &self.api_keys {
            keys.iter().for_each(&mut push);
        }
        out
    }

    fn redact(&self, call: &Call<'_>, kind: TsbErrorKind) -> TsbErrorKind {
        match kind {
            TsbErrorKind::InvalidResponse(m) => {
                let secrets = self.secrets(call);
                let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                TsbErrorKind::InvalidResponse(sanitize(&m, &secrets).unwrap_or_default())
            }
            other => other,
        }
    }
}

/// The call of a sign endpoint (body holds the key password: never logged).
fn sign_call<'a>(req: &'a SignRequest, endpoint: &'static str, path: &str) -> Call<'a> {
    let mut call =
        Call::new("POST", endpoint, path.into(), Retry::NotSentOnly).json_body(&req.to_json());
    if let Some(pw) = &req.key_password {
        call.secrets.push(pw.expose());
    }
    call
}

/// A path segment for a label or id; `.`, `..` and empty are refused (URL normalisation
/// would change the path).
fn segment(value: &str, endpoint: &str) -> Result<String, TsbError> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(TsbError::new(
            endpoint,
            TsbErrorKind::Config(format!("\"{value}\" cannot be used in a URL path")),
        ));
    }
    Ok(encode_segment(value))
}

/// Reads a response body, at most [`MAX_BODY`] bytes; returns (body, truncated).
fn read_body(response: ureq::Response) -> Result<(Vec<u8>, bool), TsbErrorKind> {
    let mut buf = Vec::new();
    response
        .into_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut buf)
        .map_err(|e| classify_io(&e, "reading the response"))?;
    let truncated = buf.len() as u64 > MAX_BODY;
    if truncated {
        buf.truncate(MAX_BODY as usize);
    }
    Ok((buf, truncated))
}

fn is_timeout(kind: std::io::ErrorKind) -> bool {
    matches!(
        kind,
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

fn classify_io(e: &std::io::Error, what: &str) -> TsbErrorKind {
    if is_timeout(e.kind()) {
        TsbErrorKind::Timeout(format!("{what}: {e}"))
    } else {
        TsbErrorKind::Transport(format!("{what}: {e}"))
    }
}

/// Classifies a ureq transport error: anything before the request was written (DNS,
/// connect, TLS handshake) is `NotSent`.
fn classify_transport(t: &ureq::Transport) -> TsbErrorKind {
    use std::error::Error as _;
    let mut detail = String::new();
    if let Some(m) = t.message() {
        detail.push_str(m);
    }
    let mut timed_out = false;
    let mut source = t.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            timed_out |= is_timeout(io.kind());
            if let Some(tls_err) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                detail = tls::describe_tls_error(tls_err);
                break;
            }
        }
        let text = s.to_string();
        if !detail.contains(&text) {
            if !detail.is_empty() {
                detail.push_str(": ");
            }
            detail.push_str(&text);
        }
        source = s.source();
    }
    if detail.is_empty() {
        detail = t.kind().to_string();
    }
    // Server-provided text can reach here (TLS alerts, proxies); keep it short and clean.
    let detail = sanitize(&detail, &[]).unwrap_or_default();
    use ureq::ErrorKind as K;
    match t.kind() {
        K::Dns => TsbErrorKind::NotSent(format!("DNS lookup failed: {detail}")),
        K::ConnectionFailed if timed_out => {
            TsbErrorKind::NotSent(format!("connect timed out: {detail}"))
        }
        K::ConnectionFailed => TsbErrorKind::NotSent(format!("connection failed: {detail}")),
        K::InvalidProxyUrl | K::ProxyConnect | K::ProxyUnauthorized => {
            TsbErrorKind::NotSent(format!("proxy: {detail}"))
        }
        K::InvalidUrl | K::UnknownScheme | K::InsecureRequestHttpsOnly => {
            TsbErrorKind::Config(detail)
        }
        K::Io if timed_out => TsbErrorKind::Timeout(detail),
        _ if detail.contains("Unexpected EOF") => TsbErrorKind::Transport(
            "the server closed the connection without a complete response".into(),
        ),
        K::BadStatus | K::BadHeader => {
            TsbErrorKind::Transport(format!("malformed HTTP response: {detail}"))
        }
        _ => TsbErrorKind::Transport(detail),
    }
}

/// A random version-4 UUID (not for cryptography; a request id that does not exist).
fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn roles_per_endpoint() {
        assert_eq!(role_for_path("/v1/key"), Some(Role::KeyManagement));
        assert_eq!(
            role_for_path("/v1/key/a%2Fb/attributes"),
            Some(Role::KeyManagement)
        );
        assert_eq!(
            role_for_path("/v1/key/attributes"),
            Some(Role::KeyManagement)
        );
        assert_eq!(
            role_for_path("/v1/synchronousSign"),
            Some(Role::KeyOperation)
        );
        assert_eq!(role_for_path("/v1/sign"), Some(Role::KeyOperation));
        assert_eq!(role_for_path("/v1/request/abc"), Some(Role::KeyOperation));
        assert_eq!(role_for_path("/v1/certificate/k"), Some(Role::KeyOperation));
        assert_eq!(
            role_for_path("/v1/certificate/import/plain"),
            Some(Role::KeyOperation)
        );
        assert_eq!(role_for_path("/v1/versionInfo"), Some(Role::Service));
        assert_eq!(role_for_path("/v1/licenseInfo"), Some(Role::Service));
        assert_eq!(
            role_for_path("/v1/keystore/statistics"),
            Some(Role::Service)
        );
        assert_eq!(role_for_path("/v1/keys"), None);
        assert_eq!(role_for_path("/v1/signature"), None);
        assert_eq!(role_for_path("/v1/other"), None);
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(encode_segment("abc-1.2_~"), "abc-1.2_~");
        assert_eq!(encode_segment("m/44'/0"), "m%2F44%27%2F0");
        assert_eq!(encode_segment("a b?#%"), "a%20b%3F%23%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert!(segment("..", "x").is_err());
        assert!(segment("", "x").is_err());
        assert_eq!(segment("...", "x").unwrap(), "...");
    }

    #[test]
    fn header_safety() {
        assert!(header_safe("eyJhbGciOi.abc-_=+/"));
        assert!(!header_safe("a\r\nX-Evil: 1"));
        assert!(!header_safe("é"));
    }

    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = random_uuid();
        let b = random_uuid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let c = TsbClient::new(&Config::for_url("http://127.0.0.1:1")).unwrap();
        assert_eq!(c.backoff(0), Duration::from_millis(100));
        assert_eq!(c.backoff(1), Duration::from_millis(300));
        assert_eq!(c.backoff(2), Duration::from_millis(900));
        assert_eq!(c.backoff(5), Duration::from_millis(2000));
        assert_eq!(c.backoff(100), Duration::from_millis(2000));
    }

    #[test]
    fn client_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TsbClient>();
        assert_send_sync::<TsbError>();
    }
}
