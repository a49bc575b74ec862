//! The TSB client: one `ureq` agent, authentication headers per endpoint role, API-key
//! rollover, retries of idempotent requests, bounded reads.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parking_lot::RwLock;
use serde_json::{json, Value};

use super::error::{parse_error_body, sanitize, TsbError, TsbErrorKind, TsbReason};
use super::models::{
    decode_pem_or_b64, parse_key_attributes, parse_key_list, parse_request_status,
    parse_version_info_checked, password_chars, CertificateResponse, KeyAttributes, RequestStatus,
    SignRequest, SignRequestCreated, SignResponse,
};
use super::nodes::{Node, Nodes};
use super::{http, tls};

mod keys;
use crate::config::{normalise_url, AuthType, Config, Secret};
use crate::logging::Net;
pub(crate) use keys::{NewKey, NewKeyType};

/// The largest response body read (larger 2xx bodies are an `InvalidResponse`).
pub(crate) const MAX_BODY: u64 = 4 * 1024 * 1024;

/// The most idle kept-alive connections kept (one per signing thread, up to this many).
const MAX_IDLE: usize = 64;

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
    let under = |prefix: &str| {
        p.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
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

/// Percent-encodes one path segment: everything but the RFC 3986 §2.3 unreserved characters
/// `A-Z a-z 0-9 - . _ ~` (so `/` too).
pub(crate) fn encode_segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
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
    /// Over kept-alive connections.
    Idempotent,
    /// Synchronous signs: over kept-alive connections; sent again when the request provably
    /// never reached the server (NotSent), and once, on a new connection, when a reused
    /// connection was closed or reset before a response arrived (the TSB keeps no state for a
    /// synchronous sign, so this cannot duplicate anything the caller sees; RFC 9112 §9.3.1).
    Stateless,
    /// Approval requests, certificate changes: only when the request provably never reached
    /// the server (NotSent). Always sent on a new connection, so a kept-alive connection the
    /// server is closing can never swallow one.
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
    /// The body as JSON text (2xx bodies must be JSON where a value is expected).
    fn text(&self) -> Result<&str, TsbErrorKind> {
        let t = std::str::from_utf8(&self.body)
            .map_err(|_| {
                TsbErrorKind::InvalidResponse(format!(
                    "HTTP {} with a body that is not UTF-8 ({} bytes), expected JSON",
                    self.status,
                    self.body.len()
                ))
            })?
            .trim();
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
        Ok(t)
    }

    fn not_json(&self, e: impl fmt::Display) -> TsbErrorKind {
        TsbErrorKind::InvalidResponse(format!(
            "HTTP {} with a body that is not valid JSON ({} bytes): {e}",
            self.status,
            self.body.len()
        ))
    }

    /// The body as a JSON value (for the models' tracked parsers).
    fn json(&self) -> Result<Value, TsbErrorKind> {
        serde_json::from_str(self.text()?).map_err(|e| self.not_json(e))
    }

    /// The body as `T`, straight from the bytes; an error names the field path.
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, TsbErrorKind> {
        let text = self.text()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                self.not_json(inner)
            } else if path == "." {
                TsbErrorKind::InvalidResponse(inner.to_string())
            } else {
                TsbErrorKind::InvalidResponse(format!("{path}: {inner}"))
            }
        })?;
        de.end().map_err(|e| self.not_json(e))?;
        Ok(value)
    }
}

/// The client of one TSB. `Send + Sync`; share it through an `Arc`. It owns no threads.
pub(crate) struct TsbClient {
    /// The TSB nodes (one unless `restApi` is an array), each with its kept-alive connections:
    /// reads, idempotent requests, synchronous signs. Requests that must never be sent twice
    /// (approval requests, certificate and key changes) go on a new connection each: a pooled
    /// connection the TSB is closing could swallow one with no way to tell whether it arrived.
    nodes: Nodes,
    /// Connections opened (TCP connects attempted).
    #[cfg(test)]
    opened: Arc<AtomicU64>,
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
            .field("nodes", &self.node_urls())
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

fn setup_error(message: impl Into<String>) -> TsbError {
    TsbError::new("", TsbErrorKind::Config(message.into()))
}

/// The origin of one node (`restApi` URL): https:// with the shared rustls configuration
/// (built on first use), plain http:// only to a loopback host unless allowed.
fn node_origin(
    config: &Config,
    url: &str,
    tls_config: &mut Option<Arc<rustls::ClientConfig>>,
) -> Result<http::Origin, TsbError> {
    let base = normalise_url(url).map_err(|m| setup_error(format!("restApi: {m}")))?;
    let (scheme, host) =
        tls::scheme_and_host(&base).ok_or_else(|| setup_error("restApi: the URL has no host"))?;
    let tls = match scheme.as_str() {
        "https" => {
            if tls_config.is_none() {
                *tls_config = Some(tls::client_config(config).map_err(setup_error)?);
            }
            tls_config.clone()
        }
        "http" => {
            if !tls::is_loopback_host(&host) {
                if config.pkcs11.allow_insecure_http {
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
                log::warn!(
                    "TSB at {base}: plain http://, the client certificate (certpath) is not used"
                );
            }
            None
        }
        _ => return Err(setup_error("restApi: expected an http:// or https:// URL")),
    };
    http::Origin::parse(&base, tls).map_err(|m| setup_error(format!("restApi: {m}")))
}

impl TsbClient {
    /// Builds the HTTP agents (ureq with a rustls client configuration, connect/read/write
    /// timeouts and an overall per-request deadline from the configuration). No network I/O.
    /// The configured `token` is sent only with authType TOKEN; the client certificate is
    /// used with authType CERT or when both `certpath` and `keypath` are set.
    pub(crate) fn new(config: &Config) -> Result<TsbClient, TsbError> {
        let s = &config.pkcs11;
        // A connect is bounded by the connect timeout and the request's deadline; a retry is
        // made only while a whole connect fits (see `execute`).
        let connect_timeout = s.connect_timeout.min(s.request_timeout);
        let opened = Arc::new(AtomicU64::new(0));
        // One rustls configuration for every https:// node (same CA, client certificate, pin).
        let mut tls_config = None;
        let mut pools = Vec::with_capacity(config.rest_apis.len());
        for url in &config.rest_apis {
            let origin = node_origin(config, url, &mut tls_config)?;
            let base = normalise_url(url).map_err(|m| setup_error(format!("restApi: {m}")))?;
            pools.push((
                base,
                http::Pool::new(origin, MAX_IDLE, connect_timeout, opened.clone()),
            ));
        }
        if pools.is_empty() {
            return Err(setup_error("restApi: no URL"));
        }
        let nodes = Nodes::new(
            pools,
            s.node_strategy,
            s.node_down_backoff,
            s.node_down_backoff_max,
        );
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
            nodes,
            #[cfg(test)]
            opened,
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
    #[cfg(test)]
    pub(crate) fn base_url(&self) -> &str {
        &self.nodes.node(0).url
    }

    /// The nodes' base URLs, in configured order.
    pub(crate) fn node_urls(&self) -> Vec<String> {
        (0..self.nodes.len())
            .map(|i| self.nodes.node(i).url.clone())
            .collect()
    }

    /// For `tsb-pkcs11 doctor`: `GET /v1/versionInfo` on node `i` alone (no other node, no
    /// retry, within `requestTimeoutMs`) → the `Version`, or the error. `Ok(None)`: the node
    /// answered with an error that says nothing against it (e.g. 401 without a ServiceToken).
    pub(crate) fn probe_node(&self, i: usize) -> Result<Option<String>, TsbError> {
        let call = Call::new(
            "GET",
            "GET /v1/versionInfo",
            "/v1/versionInfo".into(),
            Retry::Idempotent,
        );
        let started = Instant::now();
        let node = self.nodes.node(i);
        let result = self
            .send_with_keys(node, &call, started + self.request_timeout)
            .and_then(|reply| {
                let v = reply.json().map_err(|k| self.err(&call, k))?;
                let (version, _unknown) = parse_version_info_checked(&v)
                    .map_err(|m| self.err(&call, TsbErrorKind::InvalidResponse(m)))?;
                Ok(version)
            });
        match result {
            Ok(v) => Ok(Some(v.unwrap_or_else(|| "?".into()))),
            Err(e) if !is_node_failure(&e) && matches!(e.kind, TsbErrorKind::Http { .. }) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The number of connections this client has opened (attempted) so far.
    #[cfg(test)]
    pub(crate) fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
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
    #[cfg(test)]
    pub(crate) fn version_info(&self) -> Result<String, TsbError> {
        let call = Call::new(
            "GET",
            "GET /v1/versionInfo",
            "/v1/versionInfo".into(),
            Retry::Idempotent,
        );
        self.execute(&call, |reply| {
            super::models::parse_version_info_checked(&reply.json()?)
                .map_err(TsbErrorKind::InvalidResponse)?
                .0
                .ok_or_else(|| TsbErrorKind::InvalidResponse("no field \"Version\"".into()))
        })
    }

    /// `GET /v1/key` → the key labels.
    pub(crate) fn list_keys(&self) -> Result<Vec<String>, TsbError> {
        let call = Call::new("GET", "GET /v1/key", "/v1/key".into(), Retry::Idempotent);
        self.execute(&call, |reply| {
            parse_key_list(&reply.json()?).map_err(TsbErrorKind::InvalidResponse)
        })
    }

    /// `GET /v1/key/{label}/attributes` (label percent-encoded, `/` included), or
    /// `POST /v1/key/attributes` with `{"label", "password": [chars]}` when a password is given.
    pub(crate) fn key_attributes(
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
    pub(crate) fn certificate(&self, label: &str) -> Result<Option<Vec<u8>>, TsbError> {
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
            reply
                .parse::<CertificateResponse>()?
                .certificate()
                .map_err(TsbErrorKind::InvalidResponse)
        })
    }

    /// `POST /v1/certificate/import/plain` with `{"label", "certificate": base64 DER}`.
    pub(crate) fn import_certificate(&self, label: &str, der: &[u8]) -> Result<(), TsbError> {
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
    pub(crate) fn delete_certificate(&self, label: &str) -> Result<(), TsbError> {
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

    /// `POST /v1/synchronousSign` → the decoded `signature`, over a kept-alive connection.
    /// Sent again only when the request provably never reached the server, or once when the
    /// reused connection was closed before a response arrived (see [`Retry::Stateless`]).
    pub(crate) fn sign_synchronous(&self, req: &SignRequest) -> Result<Vec<u8>, TsbError> {
        let call = sign_call(
            req,
            "POST /v1/synchronousSign",
            "/v1/synchronousSign",
            Retry::Stateless,
        );
        log::trace!(
            "TSB synchronousSign {} {}: payload {} bytes",
            Net(&req.key),
            req.algorithm,
            req.payload.len()
        );
        let sig = self.execute(&call, |reply| {
            reply
                .parse::<SignResponse>()?
                .signature()
                .map_err(TsbErrorKind::InvalidResponse)
        })?;
        log::trace!("TSB synchronousSign: signature {} bytes", sig.len());
        Ok(sig)
    }

    /// `POST /v1/sign` (201) → the `signRequestId`. Retried only when the request provably
    /// never reached the server, so an approval request is never filed twice.
    pub(crate) fn sign_asynchronous(&self, req: &SignRequest) -> Result<String, TsbError> {
        let call = sign_call(req, "POST /v1/sign", "/v1/sign", Retry::NotSentOnly);
        log::trace!(
            "TSB sign {} {}: payload {} bytes",
            Net(&req.key),
            req.algorithm,
            req.payload.len()
        );
        self.execute(&call, |reply| {
            reply
                .parse::<SignRequestCreated>()?
                .id()
                .map_err(TsbErrorKind::InvalidResponse)
        })
    }

    /// `GET /v1/request/{id}` → the request's status.
    pub(crate) fn request_status(&self, id: &str) -> Result<RequestStatus, TsbError> {
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
    pub(crate) fn cancel_request(&self, id: &str) -> Result<(), TsbError> {
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
    pub(crate) fn check_bearer(&self, jwt: &Secret) -> Result<(), TsbError> {
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
    pub(crate) fn check_operation_api_key(&self, key: &Secret) -> Result<(), TsbError> {
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
    pub(crate) fn set_login_bearer(&self, jwt: Option<Secret>) {
        *self.login_bearer.write() = jwt;
    }

    /// Sets (or with `None` clears) the `KeyOperationToken` API key given at login; it replaces
    /// the configured keys of that role.
    pub(crate) fn set_login_operation_key(&self, key: Option<Secret>) {
        *self.login_operation_key.write() = key;
    }

    /// The JWT and the `KeyOperationToken` API key given at login.
    pub(crate) fn login_credentials(&self) -> (Option<Secret>, Option<Secret>) {
        (
            self.login_bearer.read().clone(),
            self.login_operation_key.read().clone(),
        )
    }

    // -----------------------------------------------------------------------------------
    // Request machinery

    fn err(&self, call: &Call<'_>, kind: TsbErrorKind) -> TsbError {
        TsbError::new(call.endpoint, kind)
    }

    /// Runs a call with retries and, with several nodes, failover; `parse` turns a response
    /// into the value (an error from it is an `InvalidResponse`-class failure, retried like
    /// one).
    ///
    /// `requestTimeoutMs` is the deadline of the whole call, retries and nodes included. One
    /// round tries the nodes in the order [`Nodes::plan`] gives (one node: just that one). A
    /// call that may move to another node (reads, synchronous signs) gives each node an equal
    /// share of the time left (with two nodes, a node that hangs costs half the deadline, and
    /// the other node gets the rest); one that may not (approval requests, certificate and key
    /// changes) gives the node all of it. A failed round is repeated after a backoff only when
    /// its errors allow a retry of this call, fewer than `retries` rounds were repeated, and at
    /// least a quarter of the timeout and a whole connect timeout are left after the backoff
    /// (so a TSB that hangs costs one timeout, not three, and a connect never runs past the
    /// deadline).
    fn execute<T>(
        &self,
        call: &Call<'_>,
        parse: impl Fn(&Reply) -> Result<T, TsbErrorKind>,
    ) -> Result<T, TsbError> {
        let deadline = Instant::now() + self.request_timeout;
        let multi = self.nodes.len() > 1;
        let mut attempt: u32 = 0;
        loop {
            let plan = self
                .nodes
                .plan(Instant::now(), call.retry != Retry::NotSentOnly);
            // The last error of each node tried in this round.
            let mut failures: Vec<(usize, TsbError)> = Vec::new();
            for (k, &i) in plan.iter().enumerate() {
                let node = self.nodes.node(i);
                let started = Instant::now();
                let left = deadline.saturating_duration_since(started);
                if left.is_zero() && !failures.is_empty() {
                    break;
                }
                let node_deadline = if multi && call.retry != Retry::NotSentOnly {
                    started + left / (plan.len() - k) as u32
                } else {
                    deadline
                };
                let result = self
                    .send_with_keys(node, call, node_deadline)
                    .and_then(|reply| {
                        parse(&reply).map_err(|k| self.err(call, self.redact(call, k)))
                    });
                let e = match result {
                    Ok(v) => {
                        self.nodes.answered(i, started);
                        return Ok(v);
                    }
                    Err(e) => e,
                };
                let down = is_node_failure(&e);
                if down {
                    self.nodes.failed(i, started, &e.to_string());
                } else if matches!(e.kind, TsbErrorKind::Http { .. }) {
                    self.nodes.answered(i, started);
                }
                let e = if multi { at_node(e, node) } else { e };
                let movable = match call.retry {
                    Retry::Idempotent => down || e.retryable_if_idempotent(),
                    Retry::Stateless => down,
                    Retry::NotSentOnly => matches!(e.kind, TsbErrorKind::NotSent(_)),
                };
                if !movable {
                    if multi && down {
                        // Approval requests, certificate and key changes: the node may have
                        // received it, so it is not sent to another node (filed at most once).
                        log::error!(
                            "TSB node {}: {} failed after it may have reached the node; \
                             not sent to another node, so that it is made at most once",
                            node.url,
                            call.endpoint
                        );
                    }
                    log::debug!("TSB request failed: {}", Net(&e.to_string()));
                    return Err(e);
                }
                if multi && k + 1 < plan.len() {
                    log::debug!(
                        "TSB {} failed on node {} ({}); trying the next node",
                        call.endpoint,
                        node.url,
                        Net(&e.to_string())
                    );
                }
                failures.push((i, e));
            }
            let retryable = !failures.is_empty()
                && failures.iter().all(|(_, e)| match call.retry {
                    Retry::Idempotent => e.retryable_if_idempotent(),
                    Retry::Stateless | Retry::NotSentOnly => {
                        matches!(e.kind, TsbErrorKind::NotSent(_))
                    }
                });
            let e = self.round_error(call, &failures, &plan);
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
                if multi && failures.len() > 1 {
                    // One line naming each node (each reason shown in full, not the capped
                    // text of the whole error).
                    let each: Vec<String> = failures
                        .iter()
                        .map(|(i, e)| {
                            let kind = TsbError::new("", e.kind.clone()).to_string();
                            format!("{} ({})", self.nodes.node(*i).url, Net(&kind))
                        })
                        .collect();
                    log::error!(
                        "TSB {}: every TSB node failed: {}",
                        call.endpoint,
                        each.join("; ")
                    );
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

    /// The error of a round in which every node tried failed (the first node of a round is
    /// always tried): the node's own error with one node, else one error naming each node and its failure (`NotSent` when no request left,
    /// so nothing can have been received).
    fn round_error(
        &self,
        call: &Call<'_>,
        failures: &[(usize, TsbError)],
        plan: &[usize],
    ) -> TsbError {
        if self.nodes.len() == 1 || failures.len() == 1 && plan.len() == 1 {
            if let Some((_, e)) = failures.first() {
                return e.clone();
            }
            return self.err(call, TsbErrorKind::NotSent("no node was tried".into()));
        }
        let not_sent = failures
            .iter()
            .all(|(_, e)| matches!(e.kind, TsbErrorKind::NotSent(_)));
        let mut parts: Vec<String> = failures
            .iter()
            .map(|(i, e)| {
                format!(
                    "{}: {}",
                    self.nodes.node(*i).url,
                    TsbError::new("", e.kind.clone())
                )
            })
            .collect();
        for &i in plan {
            if !failures.iter().any(|(j, _)| *j == i) {
                parts.push(format!(
                    "{}: not tried (requestTimeoutMs used up)",
                    self.nodes.node(i).url
                ));
            }
        }
        let message = format!(
            "every TSB node failed within requestTimeoutMs ({} ms): {}",
            self.request_timeout.as_millis(),
            parts.join("; ")
        );
        self.err(
            call,
            if not_sent {
                TsbErrorKind::NotSent(message)
            } else {
                TsbErrorKind::Transport(message)
            },
        )
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
    fn send_with_keys(
        &self,
        node: &Node,
        call: &Call<'_>,
        deadline: Instant,
    ) -> Result<Reply, TsbError> {
        let role = role_for_path(&call.path);
        if let Some(key) = call.api_key {
            return self.send_once(node, call, Some(key), deadline);
        }
        if role == Some(Role::KeyOperation) {
            let login_key = self.login_operation_key.read().clone();
            if let Some(key) = login_key {
                return self.send_once(node, call, Some(&key), deadline);
            }
        }
        let Some(role) = role else {
            return self.send_once(node, call, None, deadline);
        };
        let keys = &self.api_keys[role.index()];
        if keys.is_empty() {
            return self.send_once(node, call, None, deadline);
        }
        let n = keys.len();
        let start = self.key_index[role.index()].load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match self.send_once(node, call, Some(&keys[idx]), deadline) {
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

    /// Sends one HTTP request and reads its (bounded) body; a synchronous sign that a reused
    /// connection swallowed (closed or reset before a response arrived) is sent once more, on a
    /// new connection.
    fn send_once(
        &self,
        node: &Node,
        call: &Call<'_>,
        api_key: Option<&Secret>,
        deadline: Instant,
    ) -> Result<Reply, TsbError> {
        match self.send_attempt(node, call, api_key, deadline, false) {
            Err(Attempt::StaleConnection(e)) => {
                log::debug!(
                    "TSB {}: the kept-alive connection was closed before a response ({e}); \
                     sending again on a new connection",
                    call.endpoint
                );
                self.send_attempt(node, call, api_key, deadline, true)
                    .map_err(Attempt::into_error)
            }
            other => other.map_err(Attempt::into_error),
        }
    }

    /// One HTTP exchange. `deadline` bounds it all (connect, TLS, send, response and body).
    fn send_attempt(
        &self,
        node: &Node,
        call: &Call<'_>,
        api_key: Option<&Secret>,
        deadline: Instant,
        fresh: bool,
    ) -> Result<Reply, Attempt> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Attempt::Failed(self.err(
                call,
                TsbErrorKind::NotSent(format!(
                    "requestTimeoutMs ({} ms) used up before the request was sent",
                    self.request_timeout.as_millis()
                )),
            )));
        }
        let login_bearer = if call.bearer.is_none() {
            self.login_bearer.read().clone()
        } else {
            None
        };
        let bearer = call
            .bearer
            .or(login_bearer.as_ref())
            .or(self.token.as_ref());
        let authorization;
        let mut headers: [(&str, &str); 3] = [("", ""); 3];
        let mut n = 0;
        if let Some(b) = bearer {
            if !header_safe(b.expose()) {
                return Err(Attempt::Failed(self.err(
                    call,
                    TsbErrorKind::Config(
                        "the token contains characters not allowed in an HTTP header".into(),
                    ),
                )));
            }
            authorization = format!("Bearer {}", b.expose());
            headers[n] = ("Authorization", &authorization);
            n += 1;
        }
        if let Some(k) = api_key {
            if !header_safe(k.expose()) {
                return Err(Attempt::Failed(self.err(
                    call,
                    TsbErrorKind::Config(
                        "the API key contains characters not allowed in an HTTP header".into(),
                    ),
                )));
            }
            headers[n] = ("X-API-KEY", k.expose());
            n += 1;
        }
        if call.body.is_some() {
            headers[n] = ("Content-Type", "application/json");
            n += 1;
        }
        let request = http::Request {
            method: call.method,
            path: &call.path,
            headers: &headers[..n],
            body: call.body.as_deref(),
        };
        let reuse = match call.retry {
            Retry::Idempotent | Retry::Stateless => !fresh,
            Retry::NotSentOnly => false,
        };
        let started = Instant::now();
        let response = match node
            .pool
            .exchange(&request, deadline, reuse, MAX_BODY as usize)
        {
            Ok(r) => r,
            Err(failure) => {
                log::debug!(
                    "TSB {} {} -> failed after {} ms",
                    call.method,
                    Net(&call.path),
                    started.elapsed().as_millis()
                );
                let stale = matches!(failure, http::Failure::Stale(_));
                let e = self.err(call, failure_kind(failure));
                // With several nodes a read is sent again too: a kept-alive connection the
                // node closed while idle must not mark the node down.
                let resend = match call.retry {
                    Retry::Stateless => true,
                    Retry::Idempotent => self.nodes.len() > 1,
                    Retry::NotSentOnly => false,
                };
                if stale && resend {
                    return Err(Attempt::StaleConnection(e));
                }
                return Err(Attempt::Failed(e));
            }
        };
        let status = response.status;
        let ok = (200..300).contains(&status) || call.accept.contains(&status);
        let body = match response.body_error {
            Some(f) => Err(failure_kind(f)),
            None => Ok((response.body, response.truncated)),
        };
        log::debug!(
            "TSB {} {} -> {} ({} ms)",
            call.method,
            Net(&call.path),
            status,
            started.elapsed().as_millis()
        );
        if ok {
            let (body, truncated) = body.map_err(|k| Attempt::Failed(self.err(call, k)))?;
            if truncated {
                return Err(Attempt::Failed(self.err(
                    call,
                    TsbErrorKind::InvalidResponse(format!(
                        "HTTP {status} with a body larger than {} bytes",
                        MAX_BODY
                    )),
                )));
            }
            Ok(Reply { status, body })
        } else {
            // The error body is best effort: an unreadable one still gives the status.
            let body = body.map(|(b, _)| b).unwrap_or_default();
            let secrets = self.secrets(call);
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let (code, reason, message) = parse_error_body(&body, &secrets);
            Err(Attempt::Failed(self.err(
                call,
                TsbErrorKind::Http {
                    status,
                    code,
                    reason,
                    message,
                },
            )))
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

/// How one HTTP exchange failed.
enum Attempt {
    Failed(TsbError),
    /// A synchronous sign on a reused connection that was closed or reset before any response
    /// arrived: it may be sent once more on a new connection.
    StaleConnection(TsbError),
}

impl Attempt {
    fn into_error(self) -> TsbError {
        match self {
            Attempt::Failed(e) | Attempt::StaleConnection(e) => e,
        }
    }
}

/// The call of a sign endpoint (body holds the key password: never logged).
fn sign_call<'a>(
    req: &'a SignRequest,
    endpoint: &'static str,
    path: &str,
    retry: Retry,
) -> Call<'a> {
    let mut call = Call::new("POST", endpoint, path.into(), retry);
    call.body = Some(req.to_body());
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

/// The error kind of a failed HTTP exchange. Server-provided text can reach here (TLS
/// alerts, proxies): it is kept short and clean.
fn failure_kind(f: http::Failure) -> TsbErrorKind {
    let clean = |m: String| sanitize(&m, &[]).unwrap_or_default();
    match f {
        http::Failure::NotSent(m) => TsbErrorKind::NotSent(clean(m)),
        http::Failure::Timeout(m) => TsbErrorKind::Timeout(clean(m)),
        http::Failure::Stale(m) => TsbErrorKind::Transport(clean(format!(
            "the server closed the kept-alive connection before answering ({m})"
        ))),
        http::Failure::Transport(m) => TsbErrorKind::Transport(clean(m)),
    }
}

/// Whether an error says the node is unwell (not the request): connection refused or reset,
/// connect or TLS handshake failure or timeout, no (complete) answer in time, HTTP 5xx, or a
/// TSB 7xx HSM error. A 4xx or a TSB business error (no such key, wrong password, ...) is an
/// answer, and so is an unreadable 2xx body.
fn is_node_failure(e: &TsbError) -> bool {
    match &e.kind {
        TsbErrorKind::NotSent(_) | TsbErrorKind::Timeout(_) | TsbErrorKind::Transport(_) => true,
        TsbErrorKind::Http { status, .. } => {
            *status >= 500 || e.reason() == Some(TsbReason::HsmError)
        }
        TsbErrorKind::InvalidResponse(_) | TsbErrorKind::Config(_) => false,
    }
}

/// The error of a call on one of several nodes names the node.
fn at_node(mut e: TsbError, node: &Node) -> TsbError {
    e.endpoint = if e.endpoint.is_empty() {
        format!("TSB node {}", node.url)
    } else {
        format!("{} at {}", e.endpoint, node.url)
    };
    e
}

/// A random version-4 UUID (a request id that does not exist), from ring's system RNG.
fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    // The system RNG does not fail on the platforms ring supports; zeros would still give a
    // well-formed (if not random) v4 UUID.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
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
