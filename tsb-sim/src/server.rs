//! Networking: listeners, TLS/mTLS, per-request dispatch (counting, access log, faults,
//! authentication) in front of the axum routers of [`crate::api`] and [`crate::control`];
//! the cluster's listeners (`serve_node`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::cluster::{Node, NodeFault};
use crate::config::ClientAuth;
use crate::error::ApiError;
use crate::faults::{Fault, FaultKind};
use crate::state::Shared;

/// Error returned to hyper to close a connection without (completing) an answer.
#[derive(Debug)]
struct Abort(&'static str);

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection aborted ({})", self.0)
    }
}
impl std::error::Error for Abort {}

/// Per-connection facts the dispatcher needs.
#[derive(Clone)]
pub struct ConnInfo {
    /// Only `/sim/` is served (the optional plain control listener).
    pub control_only: bool,
    /// `clientAuth = "optional"` and no client certificate was presented.
    pub missing_client_cert: bool,
    /// The cluster node (listener) the connection came in on; `None` for `controlListen`.
    pub(crate) node: Option<Arc<Node>>,
    /// Bytes to write after the current answer (hostile `extraResponse`).
    pub(crate) injection: Arc<crate::hostile::Injection>,
}

/// Resolves when `node` goes down (never for `None`).
async fn node_down(node: Option<&Arc<Node>>) {
    match node {
        Some(n) => {
            let mut rx = n.subscribe();
            let _ = rx.wait_for(|f| *f == NodeFault::Down).await;
        }
        None => std::future::pending().await,
    }
}

/// The complete axum application (`/v1/` and `/sim/`).
pub fn app(shared: Arc<Shared>) -> Router {
    crate::api::router()
        .merge(crate::control::router())
        .fallback(|uri: Uri| async move { crate::api::not_found(uri.path()) })
        .method_not_allowed_fallback(|uri: Uri| async move {
            crate::api::method_not_allowed(uri.path())
        })
        .layer(DefaultBodyLimit::max(8 << 20))
        .with_state(shared)
}

/// Accepts connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    app: Router,
    control_only: bool,
    node: Option<Arc<Node>>,
) {
    let mut shutdown = shared.shutdown.clone();
    let optional_client_auth = shared
        .cfg
        .tls
        .as_ref()
        .is_some_and(|t| t.enabled && t.client_auth == ClientAuth::Optional);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
            // Closing the socket refuses further connections.
            _ = node_down(node.as_ref()) => break,
        };
        let (stream, _peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let app = app.clone();
        let tls = tls.clone();
        if !control_only {
            shared.net.count_connection();
        }
        if let Some(n) = &node {
            n.count_connection();
        }
        let node = node.clone();
        tokio::spawn(async move {
            let mut info = ConnInfo {
                control_only,
                missing_client_cert: false,
                node,
                injection: Arc::default(),
            };
            let rtt = shared.net.rtt();
            if !control_only && !rtt.is_zero() {
                // The TCP handshake's round trip.
                tokio::time::sleep(rtt).await;
            }
            let stream = if control_only {
                crate::network::RttStream::plain(stream)
            } else {
                shared.net.wrap(stream)
            };
            match tls {
                None => serve_io(stream, shared, app, info).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls_stream)) => {
                            let has_cert = tls_stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            info.missing_client_cert = optional_client_auth && !has_cert;
                            serve_io(tls_stream, shared, app, info).await
                        }
                        Ok(Err(e)) => log::info!("TLS handshake failed: {e}"),
                        Err(_) => log::info!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_io<I>(io: I, shared: Arc<Shared>, app: Router, info: ConnInfo)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = shared.shutdown.clone();
    let node = info.node.clone();
    let io = crate::hostile::InjectingIo::new(io, info.injection.clone());
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        dispatch(shared.clone(), app.clone(), info.clone(), req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        r = conn => if let Err(e) = r { log::debug!("connection closed: {e}") },
        _ = shutdown.changed() => {}
        // A node that goes down drops its connections.
        _ = node_down(node.as_ref()) => {}
    }
}

/// The counter name of a request: method plus path with path parameters removed, e.g.
/// `GET /v1/key/attributes`, `GET /v1/request`, `DELETE /v1/certificate`.
pub fn endpoint_name(method: &Method, path: &str) -> String {
    format!("{method} {}", normalized_path(path))
}

fn normalized_path(path: &str) -> String {
    let p = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let segs: Vec<&str> = p.split('/').collect();
    match segs.as_slice() {
        ["", "v1", "key", _, .., "attributes"] => "/v1/key/attributes".to_string(),
        ["", "v1", "key", "deleteKey"] => "/v1/key/deleteKey".to_string(),
        ["", "v1", "key", first, ..] if *first != "attributes" => "/v1/key".to_string(),
        ["", "v1", "request", _, ..] => "/v1/request".to_string(),
        ["", "v1", "certificate", first, ..] if *first != "import" && *first != "synchronous" => {
            "/v1/certificate".to_string()
        }
        _ => p.to_string(),
    }
}

/// API-key role of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    KeyManagement,
    KeyOperation,
    Service,
}

fn role(normalized: &str) -> Option<Role> {
    match normalized {
        "/v1/key" | "/v1/key/attributes" | "/v1/key/deleteKey" => Some(Role::KeyManagement),
        "/v1/synchronousSign" | "/v1/sign" | "/v1/request" => Some(Role::KeyOperation),
        p if p.starts_with("/v1/certificate") => Some(Role::KeyOperation),
        "/v1/versionInfo" | "/v1/licenseInfo" | "/v1/keystore/statistics" => Some(Role::Service),
        _ => None,
    }
}

/// Authentication of a `/v1/` request: client certificate (optional mTLS), bearer token, API key
/// of the endpoint's role.
fn check_auth(
    shared: &Shared,
    info: &ConnInfo,
    req: &Request<Incoming>,
    normalized: &str,
) -> Result<(), ApiError> {
    if info.missing_client_cert {
        return Err(ApiError::client_certificate());
    }
    let auth = &shared.cfg.auth;
    if let Some(expected) = &auth.bearer_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match given {
            None => return Err(ApiError::access_token("Missing bearer access token")),
            Some(v) => {
                let token = v
                    .strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .map(str::trim);
                if token != Some(expected.as_str()) {
                    return Err(ApiError::access_token("Invalid access token"));
                }
            }
        }
    }
    let keys = match role(normalized) {
        Some(Role::KeyManagement) => &auth.api_keys.key_management,
        Some(Role::KeyOperation) => &auth.api_keys.key_operation,
        Some(Role::Service) => &auth.api_keys.service,
        None => return Ok(()),
    };
    if !keys.is_empty() {
        let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
        match given {
            None => return Err(ApiError::api_key("Missing API key (header X-API-KEY)")),
            Some(k) if !keys.iter().any(|e| e == k) => {
                return Err(ApiError::api_key("Invalid API key"))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn dispatch(
    shared: Arc<Shared>,
    app: Router,
    info: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, Abort> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let is_api = path == "/v1" || path.starts_with("/v1/");
    let result = if info.control_only && !path.starts_with("/sim/") {
        Ok(crate::api::not_found(&path))
    } else if is_api {
        api_request(&shared, app, &info, req, &method, &path).await
    } else {
        Ok(call(app, req).await)
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Ok(resp) => log::info!(
            target: "tsb_sim::access",
            "{method} {path} {} {ms:.1}ms",
            resp.status().as_u16()
        ),
        Err(abort) => {
            log::info!(target: "tsb_sim::access", "{method} {path} - {ms:.1}ms ({})", abort.0)
        }
    }
    result
}

async fn call(app: Router, req: Request<Incoming>) -> Response<Body> {
    match app.oneshot(req.map(Body::new)).await {
        Ok(r) => r,
        Err(e) => {
            let e: Infallible = e;
            match e {}
        }
    }
}

async fn api_request(
    shared: &Shared,
    app: Router,
    info: &ConnInfo,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> Result<Response<Body>, Abort> {
    let normalized = normalized_path(path);
    shared.count(&format!("{method} {normalized}"));
    shared.record_host_header(&String::from_utf8_lossy(
        req.headers()
            .get(header::HOST)
            .map_or(&b""[..], |h| h.as_bytes()),
    ));
    if let Some(node) = &info.node {
        node.count_request();
        match node.fault() {
            NodeFault::None => {}
            // A connection accepted before the node went down, not closed yet: the request is
            // dropped unanswered, as a node that died would.
            NodeFault::Down => return Err(Abort("listener down")),
            NodeFault::Slow { latency_ms } => {
                tokio::time::sleep(Duration::from_millis(latency_ms)).await
            }
            NodeFault::Unavailable => {
                let f = Fault::status("*", 503)
                    .with_error(701, "Simulated fault: this TSB node is unavailable");
                return Ok(status_fault(&f));
            }
            NodeFault::Hang => {
                let _ = axum::body::to_bytes(Body::new(req.into_body()), 16 << 20).await;
                let mut rx = node.subscribe();
                let mut shutdown = shared.shutdown.clone();
                tokio::select! {
                    _ = rx.wait_for(|f| *f != NodeFault::Hang) => {}
                    _ = shutdown.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(shared.cfg.hang_max_ms)) => {}
                }
                return Err(Abort("hanging listener"));
            }
        }
    }
    let cleared = shared.faults.cleared_signal();
    let endpoint = format!("{method} {normalized}");
    let fault = shared.faults.find(method.as_str(), path, &normalized, |f| {
        crate::hostile::applies(f.kind, &endpoint)
    });
    if let Some((id, f)) = &fault {
        if f.kind != FaultKind::BadSignature {
            shared.faults.consume(*id);
        }
        if let Some(ms) = f.latency_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match f.kind {
            FaultKind::Status5xx => return Ok(status_fault(f)),
            FaultKind::HtmlBadGateway => return Ok(html_bad_gateway()),
            FaultKind::UnknownEndpoint => {
                return Ok(if f.status == Some(405) {
                    crate::api::method_not_allowed(path)
                } else {
                    crate::api::not_found(path)
                })
            }
            FaultKind::Hang => {
                // Read the whole request, then never answer.
                let _ = axum::body::to_bytes(Body::new(req.into_body()), 16 << 20).await;
                hang(shared, cleared).await;
                return Err(Abort("hang fault"));
            }
            _ => {}
        }
    }
    if let Err(e) = check_auth(shared, info, &req, &normalized) {
        return Ok(e.into_response());
    }
    if method == Method::POST && !is_json(&req) {
        // Like Spring Boot: a body that is not declared as JSON is refused.
        return Ok(crate::api::unsupported_media_type(path));
    }
    let mut req = req;
    if let Some((_, f)) = &fault {
        let (mut parts, body) = req.into_parts();
        crate::hostile::prepare(f, &parts.headers, &mut parts.extensions);
        req = Request::from_parts(parts, body);
    }
    let resp = call(app, req).await;
    match fault {
        Some((_, f)) if f.kind == FaultKind::MalformedJson => Ok(malformed(resp).await),
        Some((_, f)) if f.kind == FaultKind::DropConnection => Ok(drop_connection(resp).await),
        Some((_, f)) if f.kind == FaultKind::ExtraField => Ok(extra_field(resp, &f).await),
        Some((id, f)) if f.kind == FaultKind::BadSignature => {
            let (resp, applied) = bad_signature(resp).await;
            if applied {
                shared.faults.consume(id);
            }
            Ok(resp)
        }
        Some((id, f)) => Ok(crate::hostile::answer(shared, &info.injection, id, &f, resp).await),
        _ => Ok(resp),
    }
}

fn is_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

async fn hang(shared: &Shared, mut cleared: tokio::sync::watch::Receiver<u64>) {
    let mut shutdown = shared.shutdown.clone();
    tokio::select! {
        _ = cleared.changed() => {}
        _ = shutdown.changed() => {}
        _ = tokio::time::sleep(Duration::from_millis(shared.cfg.hang_max_ms)) => {}
    }
}

fn status_fault(f: &Fault) -> Response<Body> {
    let status =
        StatusCode::from_u16(f.status.unwrap_or(500)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({
        "errorCode": f.error_code.unwrap_or(701),
        "reason": if f.error_code.is_none_or(|c| (700..800).contains(&c)) { "res.error.in.hsm" } else { "res.error.simulated" },
        "message": f.message.clone().unwrap_or_else(|| "Simulated fault: error in HSM communication".to_string()),
    });
    (status, axum::Json(body)).into_response()
}

fn html_bad_gateway() -> Response<Body> {
    let html = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n\
                </body>\r\n</html>\r\n";
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/html")],
        html,
    )
        .into_response()
}

async fn body_bytes(resp: Response<Body>) -> (axum::http::response::Parts, Bytes) {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, bytes)
}

async fn malformed(resp: Response<Body>) -> Response<Body> {
    let (_, bytes) = body_bytes(resp).await;
    let cut = if bytes.len() >= 2 {
        bytes.slice(..bytes.len() / 2)
    } else {
        Bytes::from_static(b"{\"signature\": \"")
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        cut,
    )
        .into_response()
}

async fn drop_connection(resp: Response<Body>) -> Response<Body> {
    let (mut parts, bytes) = body_bytes(resp).await;
    let declared = bytes.len().max(2);
    let half = bytes.slice(..bytes.len() / 2);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
    let first = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(half)]);
    let fail = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated dropped connection",
        ))
    });
    use futures_util::StreamExt;
    Response::from_parts(parts, Body::from_stream(first.chain(fail)))
}

async fn extra_field(resp: Response<Body>, f: &Fault) -> Response<Body> {
    let (parts, bytes) = body_bytes(resp).await;
    if let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) {
        let path = f.field.as_deref().unwrap_or("simulatedExtraField");
        let mut segments: Vec<&str> = path.split('.').collect();
        let last = segments.pop().unwrap_or("simulatedExtraField");
        let mut at = &mut v;
        for seg in segments {
            match at.get_mut(seg) {
                Some(next) if next.is_object() => at = next,
                _ => return Response::from_parts(parts, Body::from(bytes)),
            }
        }
        if let Some(obj) = at.as_object_mut() {
            obj.insert(last.to_string(), Value::Bool(true));
            let body = serde_json::to_vec(&v).unwrap_or_default();
            return Response::from_parts(parts, Body::from(body));
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

async fn bad_signature(resp: Response<Body>) -> (Response<Body>, bool) {
    let (parts, bytes) = body_bytes(resp).await;
    let mut applied = false;
    if let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) {
        for field in ["signature", "result"] {
            let Some(Value::String(s)) = v.get(field) else {
                continue;
            };
            if let Ok(mut raw) = B64.decode(s) {
                if let Some(last) = raw.last_mut() {
                    *last ^= 1;
                    v[field] = Value::String(B64.encode(&raw));
                    applied = true;
                }
            }
        }
        if applied {
            let body = serde_json::to_vec(&v).unwrap_or_default();
            return (Response::from_parts(parts, Body::from(body)), true);
        }
    }
    (Response::from_parts(parts, Body::from(bytes)), false)
}

// ---------------------------------------------------------------------------------------------
// Cluster nodes

/// Binds `addr` again after the node was down (SO_REUSEADDR, so connections of the previous
/// socket in TIME_WAIT do not block it).
fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves one node until shutdown: accepts on its sockets while it is not down, closes them
/// when it goes down, binds them again when it is revived.
pub(crate) async fn serve_node(
    node: Arc<Node>,
    mut listeners: Vec<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    app: Router,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut faults = node.subscribe();
    loop {
        let tasks: Vec<_> = listeners
            .drain(..)
            .map(|l| {
                tokio::spawn(serve(
                    l,
                    tls.clone(),
                    shared.clone(),
                    app.clone(),
                    false,
                    Some(node.clone()),
                ))
            })
            .collect();
        node.set_listening(true);
        // Each socket task ends on shutdown or when the node goes down, dropping its socket.
        for t in tasks {
            let _ = t.await;
        }
        node.set_listening(false);
        if *shutdown.borrow() {
            return;
        }
        // Down: wait for a revival, then listen again.
        loop {
            tokio::select! {
                r = faults.wait_for(|f| *f != NodeFault::Down) => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            match bind_again(&node).await {
                Some(ls) => {
                    listeners = ls;
                    break;
                }
                // Stay down (the caller of `set_fault` gets a time-out error).
                None => {
                    node.stay_down();
                }
            }
        }
    }
}

/// Binds the node's addresses again: the main one with retries for up to 5 s (the port may
/// be held for a moment), the `[::1]` alias once.
async fn bind_again(node: &Node) -> Option<Vec<TcpListener>> {
    let addrs = node.addrs().to_vec();
    let mut listeners = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    for (i, addr) in addrs.iter().enumerate() {
        loop {
            match rebind(*addr) {
                Ok(l) => {
                    listeners.push(l);
                    break;
                }
                Err(e) if i == 0 && Instant::now() < deadline => {
                    log::debug!("listener {}: rebinding {addr}: {e}", node.index);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    log::error!(
                        "listener {}: cannot listen on {addr} again: {e}",
                        node.index
                    );
                    if i == 0 {
                        return None;
                    }
                    break;
                }
            }
        }
    }
    Some(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names() {
        let get = Method::GET;
        assert_eq!(endpoint_name(&get, "/v1/key"), "GET /v1/key");
        assert_eq!(
            endpoint_name(&get, "/v1/key/a%2Fb/attributes"),
            "GET /v1/key/attributes"
        );
        assert_eq!(
            endpoint_name(&Method::POST, "/v1/key/attributes"),
            "POST /v1/key/attributes"
        );
        assert_eq!(endpoint_name(&get, "/v1/request/123"), "GET /v1/request");
        assert_eq!(
            endpoint_name(&Method::DELETE, "/v1/certificate/k"),
            "DELETE /v1/certificate"
        );
        assert_eq!(
            endpoint_name(&Method::DELETE, "/v1/key/a%2Fb"),
            "DELETE /v1/key"
        );
        assert_eq!(
            endpoint_name(&Method::POST, "/v1/key/deleteKey"),
            "POST /v1/key/deleteKey"
        );
        assert_eq!(
            endpoint_name(&Method::POST, "/v1/certificate/import/plain"),
            "POST /v1/certificate/import/plain"
        );
    }
}
