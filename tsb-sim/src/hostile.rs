//! Hostile TSB behaviours (issue 19): answers that a correct client must survive without ever
//! returning a wrong result — an extra HTTP response after an answer, one answer replayed for
//! many requests, valid signatures by the wrong key or over other data, the caller's bearer
//! token or 2 MB as a request id, an answer dripped byte by byte; and two actions: swapping the
//! key behind a label, and keys with hostile labels and ids.
//!
//! The answer behaviours are fault kinds ([`FaultKind::ExtraResponse`] ...), switched on and off
//! like every other fault (`POST /sim/faults`, [`crate::Simulator::inject`], `tsb-sim faults
//! add`); this module holds their effects. The actions are `POST /sim/hostile/swap/{label}`,
//! `POST /sim/hostile/keys`, [`crate::Simulator::swap_key`], [`crate::Simulator::add_hostile_keys`]
//! and `tsb-sim swap-key LABEL`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{Curve, KeySpec};
use crate::error::{ApiError, SimError};
use crate::faults::{Fault, FaultKind};
use crate::keys::{KeyMaterial, ParsedAlg, SigAlg, SimKey};
use crate::policy::Status;
use crate::state::Shared;

const SYNC: &str = "POST /v1/synchronousSign";
const ASYNC: &str = "POST /v1/sign";

/// Whether a fault of `kind` acts on a request to `endpoint` (`METHOD /normalised/path`). A
/// hostile kind that does not act on a request leaves it alone and is not used up by it.
pub(crate) fn applies(kind: FaultKind, endpoint: &str) -> bool {
    match kind {
        FaultKind::WrongKeySignature | FaultKind::OtherDataSignature => {
            endpoint == SYNC || endpoint == ASYNC
        }
        FaultKind::EchoToken | FaultKind::HugeRequestId => endpoint == ASYNC,
        _ => true,
    }
}

/// The hostile fault that acts on the request being signed (a request extension read by the
/// sign handlers).
#[derive(Clone)]
pub(crate) struct OnSign(pub Fault);

/// The `signRequestId` `POST /v1/sign` must answer (a request extension).
#[derive(Clone)]
pub(crate) struct RequestId(pub String);

/// Marks the request with what the sign handlers need: the signature fault, or the request id
/// to answer (the caller's token for `echoToken`).
pub(crate) fn prepare(f: &Fault, headers: &HeaderMap, extensions: &mut axum::http::Extensions) {
    match f.kind {
        FaultKind::WrongKeySignature | FaultKind::OtherDataSignature => {
            extensions.insert(OnSign(f.clone()));
        }
        FaultKind::EchoToken => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim_start_matches("Bearer ").trim().to_string());
            let api_key = headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Some(secret) = bearer.or(api_key).filter(|s| !s.is_empty()) {
                extensions.insert(RequestId(secret));
            }
        }
        FaultKind::HugeRequestId => {
            let n = f.bytes.unwrap_or(2 << 20).max(6) as usize;
            extensions.insert(RequestId(format!("huge-{}", "0".repeat(n - 5))));
        }
        _ => {}
    }
}

/// The signature a hostile sign answers instead of `key`'s signature of `payload`.
pub(crate) fn signature(
    s: &Shared,
    f: &Fault,
    key: &SimKey,
    alg: SigAlg,
    payload: &[u8],
    raw: bool,
    context: &[u8],
) -> Result<Vec<u8>, ApiError> {
    match f.kind {
        FaultKind::WrongKeySignature => {
            let other = other_key(s, key, f.key.as_deref()).ok_or_else(|| {
                ApiError::hsm("wrongKeySignature: the simulator has no other key of this type")
            })?;
            other.material.sign_with_context(alg, payload, raw, context)
        }
        FaultKind::OtherDataSignature => {
            let mut other = payload.to_vec();
            match other.first_mut() {
                Some(b) => *b ^= 0x01,
                None => other.push(0),
            }
            key.material.sign_with_context(alg, &other, raw, context)
        }
        _ => key.material.sign_with_context(alg, payload, raw, context),
    }
}

/// `label`'s key, else the first other key of `key`'s type (curve, size) that can sign.
fn other_key(s: &Shared, key: &SimKey, label: Option<&str>) -> Option<Arc<SimKey>> {
    if let Some(l) = label {
        return s.key(l).ok();
    }
    let same = |k: &SimKey| {
        k.spec.algorithm == key.spec.algorithm
            && k.spec.effective_size() == key.spec.effective_size()
            && k.spec.can_sign_attribute()
            && k.label() != key.label()
            && k.public_der != key.public_der
    };
    s.keys.read().iter().find(|k| same(k)).cloned()
}

/// The effect of an answer-level hostile fault on the real answer `resp`.
pub(crate) async fn answer(
    shared: &Shared,
    injection: &Injection,
    fault_id: u64,
    f: &Fault,
    resp: Response<Body>,
) -> Response<Body> {
    match f.kind {
        FaultKind::ExtraResponse => {
            let (parts, bytes) = body_of(resp).await;
            let (status, extra) = match &f.body {
                Some(v) => (StatusCode::OK, Bytes::from(v.to_string())),
                None => (parts.status, bytes.clone()),
            };
            injection.arm(http_response(status, &extra));
            Response::from_parts(parts, Body::from(bytes))
        }
        FaultKind::ReplayAnswer => {
            let (parts, bytes) = body_of(resp).await;
            let mut memory = shared.hostile.replay.lock();
            let (status, body) = memory
                .entry(fault_id)
                .or_insert((parts.status, bytes))
                .clone();
            json_response(status, body)
        }
        FaultKind::Drip => {
            let (mut parts, bytes) = body_of(resp).await;
            parts
                .headers
                .insert(header::CONTENT_LENGTH, bytes.len().into());
            let every = Duration::from_millis(f.interval_ms.unwrap_or(100));
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let bytes = bytes.clone();
                async move {
                    if i >= bytes.len() {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    Some((Ok::<Bytes, std::io::Error>(bytes.slice(i..i + 1)), i + 1))
                }
            });
            Response::from_parts(parts, Body::from_stream(stream))
        }
        FaultKind::LyingLength => {
            let (mut parts, bytes) = body_of(resp).await;
            let declared = f.bytes.unwrap_or(1 << 62);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, declared.into());
            // A stream has no known size, so hyper sends the declared length as it is; the
            // body ends long before it, and hyper closes the connection.
            // The pause lets hyper flush what it has before the body fails.
            use futures_util::StreamExt;
            let body = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(bytes)]);
            let end = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err::<Bytes, std::io::Error>(std::io::ErrorKind::ConnectionAborted.into())
            });
            Response::from_parts(parts, Body::from_stream(body.chain(end)))
        }
        _ => resp,
    }
}

async fn body_of(resp: Response<Body>) -> (axum::http::response::Parts, Bytes) {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, bytes)
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A complete HTTP/1.1 response with a JSON body, as bytes on the wire.
fn http_response(status: StatusCode, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Status"),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// Bytes after an answer

/// Bytes a connection writes right after the answer being sent (`extraResponse`).
#[derive(Default)]
pub(crate) struct Injection {
    armed: Mutex<Option<Vec<u8>>>,
}

impl Injection {
    fn arm(&self, bytes: Vec<u8>) {
        *self.armed.lock() = Some(bytes);
    }
}

/// The server side of a connection that can write an armed [`Injection`] once the answer has
/// been written and flushed. hyper buffers a whole answer with a complete body (head and body)
/// and writes it before it flushes, so the injection follows the answer's last byte.
pub(crate) struct InjectingIo<I> {
    inner: I,
    injection: Arc<Injection>,
    /// Bytes of an answer were written since the injection was armed.
    wrote: bool,
    pending: Vec<u8>,
}

impl<I> InjectingIo<I> {
    pub(crate) fn new(inner: I, injection: Arc<Injection>) -> InjectingIo<I> {
        InjectingIo {
            inner,
            injection,
            wrote: false,
            pending: Vec::new(),
        }
    }
}

impl<I: AsyncWrite + Unpin> InjectingIo<I> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for InjectingIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for InjectingIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if n > 0 && this.injection.armed.lock().is_some() {
            this.wrote = true;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        if this.wrote {
            this.wrote = false;
            if let Some(bytes) = this.injection.armed.lock().take() {
                this.pending = bytes;
            }
            ready!(this.poll_pending(cx))?;
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Actions on keys

/// The key behind a label after [`crate::Simulator::swap_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySwap {
    /// The new `json.id` (16 hex digits).
    pub id: String,
    /// The new public key (DER SubjectPublicKeyInfo).
    pub public_key_der: Vec<u8>,
}

/// Replaces the key behind `label` by a new key of the same type and policy: fresh key
/// material (never from the key caches), a new id, no certificate. The label stays. Approval
/// requests of the label not yet executed are signed again by the new key, as a TSB that signs
/// at execution with the key then behind the label would.
pub(crate) fn swap_key(s: &Shared, label: &str) -> Result<KeySwap, SimError> {
    let old = s
        .key(label)
        .map_err(|_| SimError::NotFound(format!("key '{label}'")))?;
    let id = format!("{:016x}", rand::random::<u64>());
    let spec = old.spec.clone().with_id(&id);
    let material = Arc::new(KeyMaterial::generate(&spec)?);
    let mut key = SimKey::new(spec, material)?;
    key.policy_doc = old.policy_doc.clone();
    let public_key_der = key.public_der.clone().unwrap_or_default();
    let material = key.material.clone();
    {
        let mut keys = s.keys.write();
        match keys.iter().position(|k| k.label() == label) {
            Some(pos) => keys[pos] = Arc::new(key),
            None => return Err(SimError::NotFound(format!("key '{label}'"))),
        }
    }
    s.update_requests(|e| {
        let waiting = matches!(e.machine.status(), Status::Pending | Status::Approved);
        if e.key == label && waiting {
            if let ParsedAlg::Known(alg) = SigAlg::parse(&e.algorithm) {
                let raw = e.signature_type.as_deref() == Some("RAW");
                if let Ok(sig) = material.sign(alg, &e.payload, raw) {
                    e.signature = sig;
                }
            }
        }
    });
    Ok(KeySwap { id, public_key_der })
}

/// EC P-256 keys with hostile labels and ids: ESC sequences (colour, window title), a carriage
/// return, U+202E (right-to-left override), a newline starting a forged line, a label of
/// 60,000 characters (a path hyper still serves), and an id of 1 MiB.
pub fn hostile_key_specs() -> Vec<KeySpec> {
    let ec = |label: &str| KeySpec::ec(label, Curve::P256);
    vec![
        ec("esc-\u{1b}[31mRED\u{1b}[0m\u{1b}]0;owned\u{7}").with_id("e5c0"),
        ec("cr-\rOVERWRITTEN"),
        ec("rlo-\u{202e}gpj.exe"),
        ec("nl-\nFORGED LINE"),
        ec(&format!("huge-{}", "L".repeat(60_000))),
        ec("huge-id").with_id(&"ab".repeat(512 * 1024)),
    ]
}

/// Adds the keys of [`hostile_key_specs`] (replacing keys of the same labels); returns their
/// labels.
pub(crate) fn add_hostile_keys(s: &Shared) -> Result<Vec<String>, SimError> {
    let specs = hostile_key_specs();
    let labels = specs.iter().map(|k| k.label.clone()).collect();
    for spec in specs {
        s.add_key(spec)?;
    }
    Ok(labels)
}

/// The `/sim/hostile/` control routes.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sim/hostile/keys", post(hostile_keys_route))
        .route("/sim/hostile/swap/{*label}", post(swap_route))
}

fn control_error(e: SimError) -> axum::response::Response {
    let status = match e {
        SimError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

/// `POST /sim/hostile/swap/{label}` → `{"label","id","publicKey"}` (the new key).
async fn swap_route(
    State(s): State<Arc<Shared>>,
    Path(label): Path<String>,
) -> axum::response::Response {
    let shared = s.clone();
    let l = label.clone();
    match tokio::task::spawn_blocking(move || swap_key(&shared, &l)).await {
        Ok(Ok(swap)) => Json(json!({
            "label": label,
            "id": swap.id,
            "publicKey": B64.encode(&swap.public_key_der),
        }))
        .into_response(),
        Ok(Err(e)) => control_error(e),
        Err(e) => control_error(SimError::Key(e.to_string())),
    }
}

/// `POST /sim/hostile/keys` → `{"labels": [...]}`.
async fn hostile_keys_route(State(s): State<Arc<Shared>>) -> axum::response::Response {
    let shared = s.clone();
    match tokio::task::spawn_blocking(move || add_hostile_keys(&shared)).await {
        Ok(Ok(labels)) => (StatusCode::CREATED, Json(json!({ "labels": labels }))).into_response(),
        Ok(Err(e)) => control_error(e),
        Err(e) => control_error(SimError::Key(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_act_on_their_endpoints_only() {
        assert!(applies(FaultKind::EchoToken, ASYNC));
        assert!(!applies(FaultKind::EchoToken, SYNC));
        assert!(!applies(FaultKind::HugeRequestId, "GET /v1/request"));
        assert!(applies(FaultKind::WrongKeySignature, SYNC));
        assert!(!applies(FaultKind::OtherDataSignature, "GET /v1/key"));
        assert!(applies(FaultKind::ExtraResponse, "GET /v1/key"));
    }

    #[test]
    fn an_extra_response_is_complete_http() {
        let r = http_response(StatusCode::OK, b"{\"a\":1}");
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn echo_token_takes_the_bearer_token() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        let mut ext = axum::http::Extensions::new();
        prepare(&Fault::echo_token(), &h, &mut ext);
        assert_eq!(ext.get::<RequestId>().map(|r| r.0.as_str()), Some("s3cret"));
        let mut ext = axum::http::Extensions::new();
        prepare(&Fault::huge_request_id(100), &h, &mut ext);
        assert_eq!(ext.get::<RequestId>().map(|r| r.0.len()), Some(100));
    }
}
