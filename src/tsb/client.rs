//! The TSB client: one method per TSB endpoint, over the nodes of the cluster (`nodes.rs`),
//! each with its pool of kept-alive connections (`http.rs`). The request machinery (retries,
//! failover, authentication per endpoint role with API-key rollover, redaction) is in
//! `client/send.rs`; key creation and deletion in `client/keys.rs`; the choice between the two
//! forms of a call the TSB offers twice (attributes, deletion) in `client/forms.rs`.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use parking_lot::RwLock;
use serde_json::{json, Value};

use super::connect::{Dns, Resolve, SystemResolver};
use super::endpoint::{Endpoint, Scheme};
use super::error::{parse_error_body, sanitize, TsbError, TsbErrorKind, TsbReason};
use super::models::{
    decode_pem_or_b64, keys::parse_key_attributes_checked, parse_key_list_checked,
    parse_request_status, parse_version_info_checked, password_chars, CertificateResponse,
    KeyAttributes, KeyList, RequestStatus, SignRequest, SignRequestCreated, SignResponse,
};
use super::nodes::{Form, Node, Nodes};
use super::probe::Probe;
use super::proxy::{self, ProxyEnv};
use super::{http, tls};

mod attestation;
mod forms;
mod keys;
mod parts;
mod retry;
mod send;
use crate::config::{normalise_url, AuthType, Config, Secret};
use crate::logging::Net;
pub use attestation::KeyAttestation;
pub use keys::{NewKey, NewKeyType, NewKeyUsage};
pub use parts::{encode_segment, TsbClient};
use parts::{segment, Call};
use retry::{is_node_failure, Retry};

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

/// Whether a value may be sent in an HTTP header (visible ASCII, space, tab).
fn header_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b))
}

/// The caller's check of a synchronous sign's answer: the signature to return, or why the answer
/// is refused (the module's own text, never the server's). The flag says that the answer came
/// over a reused kept-alive connection, where it could be a late answer to an earlier request
/// that nothing in HTTP/1.1 tells apart: such a signature must be verified in full.
pub type SignatureCheck<'a> = dyn Fn(&[u8], bool) -> Result<Vec<u8>, String> + 'a;

/// A response handed to a parser.
struct Reply {
    status: u16,
    body: Vec<u8>,
    /// The answer came over a kept-alive connection that had served earlier requests: HTTP/1.1
    /// ties nothing in it to this request, so it may be a late answer to another one.
    reused: bool,
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

fn setup_error(message: impl Into<String>) -> TsbError {
    TsbError::new("", TsbErrorKind::Config(message.into()))
}

/// How the client reaches the network: the proxy variables of the environment, whether name
/// lookups may run on a thread of their own, and the resolver.
pub(crate) struct NetOptions {
    pub(crate) env: ProxyEnv,
    /// False when the application forbade threads (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`).
    pub(crate) threads: bool,
    pub(crate) resolver: Arc<dyn Resolve>,
}

impl NetOptions {
    /// The process environment and the system resolver.
    pub(crate) fn from_process(threads: bool) -> NetOptions {
        NetOptions {
            env: ProxyEnv::from_process(),
            threads,
            resolver: Arc::new(SystemResolver),
        }
    }
}

/// The origin of one node (`restApi` URL): https:// with the shared rustls configuration
/// (built on first use), plain http:// only to a loopback host unless allowed; and its route
/// (directly or through a proxy).
fn node_origin(
    config: &Config,
    url: &str,
    tls_config: &mut Option<Arc<rustls::ClientConfig>>,
    net: &NetOptions,
    dns: &Arc<Dns>,
) -> Result<http::Origin, TsbError> {
    let base = normalise_url(url).map_err(|m| setup_error(format!("restApi: {m}")))?;
    let endpoint = Endpoint::parse(&base).map_err(|m| setup_error(format!("restApi: {m}")))?;
    let tls = match endpoint.scheme {
        Scheme::Https => {
            if tls_config.is_none() {
                *tls_config = Some(tls::client_config(config).map_err(setup_error)?);
            }
            tls_config.clone()
        }
        Scheme::Http => {
            if !tls::is_loopback_host(&endpoint.host) {
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
    };
    let s = &config.pkcs11;
    let route = proxy::route_for(
        &endpoint,
        &s.proxy,
        s.no_proxy.as_deref(),
        s.proxy_password.as_ref(),
        &net.env,
    )
    .map_err(setup_error)?;
    log::debug!("TSB node {base}: {route}");
    Ok(http::Origin::parse(&base, tls)
        .map_err(|m| setup_error(format!("restApi: {m}")))?
        .with_route(route, dns.clone()))
}

impl TsbClient {
    /// Builds the client: the nodes with their connection pools (src/tsb/http.rs over std TCP
    /// and a rustls client configuration), connect/read/write timeouts and an overall
    /// per-request deadline from the configuration. No network I/O.
    /// The configured `token` is sent only with authType TOKEN; the client certificate is
    /// used with authType CERT or when both `certpath` and `keypath` are set.
    pub fn new(config: &Config) -> Result<TsbClient, TsbError> {
        TsbClient::with_net(config, NetOptions::from_process(true))
    }

    /// [`TsbClient::new`] with the network options given (environment, threads, resolver).
    pub(crate) fn with_net(config: &Config, net: NetOptions) -> Result<TsbClient, TsbError> {
        let s = &config.pkcs11;
        // A connect is bounded by the connect timeout and the request's deadline; a retry is
        // made only while a whole connect fits (see `execute`).
        let connect_timeout = s.connect_timeout.min(s.request_timeout);
        let opened = Arc::new(AtomicU64::new(0));
        // One rustls configuration for every https:// node (same CA, client certificate, pin).
        let mut tls_config = None;
        // One resolver for every node (its count of stray lookups is the client's).
        let dns = Arc::new(Dns::new(net.resolver.clone(), net.threads));
        let mut pools = Vec::with_capacity(config.rest_apis.len());
        for url in &config.rest_apis {
            let origin = node_origin(config, url, &mut tls_config, &net, &dns)?;
            let base = normalise_url(url).map_err(|m| setup_error(format!("restApi: {m}")))?;
            pools.push((
                base,
                http::Pool::new(origin, MAX_IDLE, connect_timeout, opened.clone())
                    .with_max_idle_age(s.connection_max_idle),
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

    /// How each node is reached (directly or through which proxy), in configured order; the
    /// `Display` of a [`proxy::Route`] holds no credentials (for `tsb-pkcs11 doctor` and logs).
    #[cfg(test)]
    pub(crate) fn node_routes(&self) -> Vec<(String, proxy::Route)> {
        (0..self.nodes.len())
            .map(|i| {
                let node = self.nodes.node(i);
                (node.url.clone(), node.pool.route().clone())
            })
            .collect()
    }

    /// The nodes' base URLs, in configured order.
    pub fn node_urls(&self) -> Vec<String> {
        (0..self.nodes.len())
            .map(|i| self.nodes.node(i).url.clone())
            .collect()
    }

    /// For `tsb-pkcs11 doctor`: the steps of a new connection to node `i` (in configured
    /// order), one at a time.
    pub fn probe(&self, i: usize) -> Probe<'_> {
        Probe::new(self.nodes.node(i))
    }

    /// The number of nodes (`restApi` URLs).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// For `tsb-pkcs11 doctor`: `GET /v1/versionInfo` on node `i` alone (no other node, no
    /// retry, within `requestTimeoutMs`) → the `Version`, or the error. `Ok(None)`: the node
    /// answered with an error that says nothing against it (e.g. 401 without a ServiceToken).
    pub fn probe_node(&self, i: usize) -> Result<Option<String>, TsbError> {
        let call = Call::new(
            "GET",
            "GET /v1/versionInfo",
            "/v1/versionInfo".into(),
            Retry::Idempotent,
        );
        let started = Instant::now();
        let node = self.nodes.node(i);
        let result = self.send_with_keys(node, &call, started + self.request_timeout, &|reply| {
            let (version, _unknown) = parse_version_info_checked(&reply.json()?)
                .map_err(TsbErrorKind::InvalidResponse)?;
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
    pub fn get_json(&self, endpoint: &'static str, path: String) -> Result<Value, TsbError> {
        let call = Call::new("GET", endpoint, path, Retry::Idempotent);
        self.execute(&call, |reply| reply.json())
    }

    /// Name lookups still running after their callers gave up.
    #[cfg(test)]
    pub(crate) fn stray_lookups(&self) -> usize {
        self.nodes.node(0).pool.stray_lookups()
    }

    #[cfg(test)]
    pub(crate) fn set_backoff_base(&mut self, d: Duration) {
        self.backoff_base = d;
    }

    /// `GET /v1/versionInfo` → the `Version` string.
    #[cfg(test)]
    pub(crate) fn version_info(&self) -> Result<String, TsbError> {
        self.version_info_checked()?.0.ok_or_else(|| {
            TsbError::new(
                "GET /v1/versionInfo",
                TsbErrorKind::InvalidResponse("no field \"Version\"".into()),
            )
        })
    }

    /// `GET /v1/versionInfo` → the `Version` string (`None` when the answer has none), and the
    /// fields of the answer this client does not know (for `tsb-pkcs11 doctor`).
    pub fn version_info_checked(&self) -> Result<(Option<String>, Vec<String>), TsbError> {
        let call = Call::new(
            "GET",
            "GET /v1/versionInfo",
            "/v1/versionInfo".into(),
            Retry::Idempotent,
        );
        self.execute(&call, |reply| {
            parse_version_info_checked(&reply.json()?).map_err(TsbErrorKind::InvalidResponse)
        })
    }

    /// `GET /v1/key` → the key labels.
    pub fn list_keys(&self) -> Result<Vec<String>, TsbError> {
        self.list_keys_checked().map(|l| l.labels)
    }

    /// `GET /v1/key` → the key labels, and the shape they came in (for `tsb-pkcs11 doctor`).
    pub fn list_keys_checked(&self) -> Result<KeyList, TsbError> {
        let call = Call::new("GET", "GET /v1/key", "/v1/key".into(), Retry::Idempotent);
        self.execute(&call, |reply| {
            parse_key_list_checked(&reply.json()?).map_err(TsbErrorKind::InvalidResponse)
        })
    }

    /// `POST /v1/key/attributes` with `{"label", "password"?: [chars]}`, the form Securosys'
    /// clients use (docs/tsb-api.md, "Keys"); a node that does not know it (404 without a TSB
    /// error, 405) is asked `GET /v1/key/{label}/attributes` (label percent-encoded, `/`
    /// included) instead, for a key without password whose label fits in a path.
    pub fn key_attributes(
        &self,
        label: &str,
        password: Option<&Secret>,
    ) -> Result<KeyAttributes, TsbError> {
        self.key_attributes_checked(label, password)
            .map(|(attrs, _)| attrs)
    }

    /// [`TsbClient::key_attributes`], and the fields of the answer this client does not know
    /// (JSON paths such as `json.attributes.newFlag`, for `tsb-pkcs11 doctor`).
    pub fn key_attributes_checked(
        &self,
        label: &str,
        password: Option<&Secret>,
    ) -> Result<(KeyAttributes, Vec<String>), TsbError> {
        let call = Self::attributes_call(label, password);
        self.execute(&call, |reply| {
            let (mut attrs, unknown) = parse_key_attributes_checked(&reply.json()?)
                .map_err(TsbErrorKind::InvalidResponse)?;
            if attrs.label.is_empty() {
                attrs.label = label.to_string();
            } else if attrs.label != label {
                // Another key's attributes (e.g. a late answer to another read on a kept-alive
                // connection): never bound to this label's handles.
                return Err(TsbErrorKind::InvalidResponse(format!(
                    "the answer names key '{}', not the one asked for",
                    crate::logging::sanitize(&attrs.label)
                )));
            }
            Ok((attrs, unknown))
        })
    }

    /// The call of [`TsbClient::key_attributes`]: `POST /v1/key/attributes` first (what
    /// Securosys' clients send), `GET /v1/key/{label}/attributes` as its fallback for a key
    /// without a password whose label fits in a path.
    fn attributes_call<'a>(label: &str, password: Option<&'a Secret>) -> Call<'a> {
        let mut body = json!({ "label": label });
        if let Some(pw) = password {
            body["password"] = password_chars(pw);
        }
        let mut post = Call::new(
            "POST",
            "POST /v1/key/attributes",
            "/v1/key/attributes".into(),
            Retry::Idempotent,
        )
        .json_body(&body);
        if let Some(pw) = password {
            post.secrets.push(pw.expose());
        }
        let get = match (password, segment(label, "")) {
            (None, Ok(seg)) => Some(
                Call::new(
                    "GET",
                    "GET /v1/key/{label}/attributes",
                    format!("/v1/key/{seg}/attributes"),
                    Retry::Idempotent,
                )
                .with_fallback(Form::AttributesGet, None),
            ),
            _ => None,
        };
        post.with_fallback(Form::AttributesPost, get)
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

    /// `POST /v1/synchronousSign` → the decoded `signature` as `check` turns it out.
    /// Sent again only when the request provably never reached the server, or once, on a new
    /// connection, when the reused connection was closed before a response arrived (see
    /// [`Retry::Stateless`]) or its answer may be a late answer to an earlier request — bytes
    /// came after it, it repeats the previous answer to a different request, or `check` refused
    /// it. The connection goes back to the pool only after `check` accepted the answer; a
    /// refusal comes back as [`TsbErrorKind::Refused`] with `check`'s text.
    ///
    /// `check` is the caller's: it knows the key the request named and checks the signature
    /// against it. Nothing of the answer but `signature` is used (a key name, id or version in
    /// it is not looked at).
    pub(crate) fn sign_synchronous_checked(
        &self,
        req: &SignRequest,
        check: &SignatureCheck<'_>,
    ) -> Result<Vec<u8>, TsbError> {
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
            let raw = reply
                .parse::<SignResponse>()?
                .signature()
                .map_err(TsbErrorKind::InvalidResponse)?;
            log::trace!("TSB synchronousSign: signature {} bytes", raw.len());
            check(&raw, reply.reused).map_err(TsbErrorKind::Refused)
        })?;
        Ok(sig)
    }

    /// [`Self::sign_synchronous_checked`] taking any signature.
    #[cfg(test)]
    pub(crate) fn sign_synchronous(&self, req: &SignRequest) -> Result<Vec<u8>, TsbError> {
        self.sign_synchronous_checked(req, &|s, _| Ok(s.to_vec()))
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
        // Visible ASCII from '!' to '~', space and tab; no other control character, no DEL.
        assert!(header_safe("Bearer a!~\tb"));
        for bad in ["a\u{7f}", "a\0", "\u{1f}", "a\nb", "a\u{b}"] {
            assert!(!header_safe(bad), "{bad:?}");
        }
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
