//! Integration tests of the TSB client against tiny hand-rolled HTTP(S) servers on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::config::{AuthType, Config, Secret};

// ---------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The request's index on its connection (0 = first).
    on_connection: usize,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

enum Action {
    /// Status, content type, body.
    Reply(u16, &'static str, Vec<u8>),
    /// Close the connection without answering.
    Close,
    /// Send these bytes (e.g. a partial response), then close.
    Raw(&'static [u8]),
    /// Keep the connection open without answering, then close.
    Hang(Duration),
    /// A complete 200 JSON response with the first body (a late or extra answer), then the
    /// answer (status, JSON body), in one write: the client finds them back to back.
    Twice(Vec<u8>, u16, Vec<u8>),
}

fn reply_json(status: u16, v: Value) -> Action {
    Action::Reply(status, "application/json", v.to_string().into_bytes())
}

type Handler = dyn Fn(&Recorded, usize) -> Action + Send + Sync;

struct TestServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TestServer {
    /// An HTTP server; `handler` gets each request and its index (0-based, over all connections).
    fn start(handler: impl Fn(&Recorded, usize) -> Action + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(listener, Arc::new(handler), None)
    }

    fn serve(
        listener: TcpListener,
        handler: Arc<Handler>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                let reqs = reqs.clone();
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => handle_connection(stream, &*handler, &reqs),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg).unwrap();
                        let tls_stream = rustls::StreamOwned::new(conn, stream);
                        handle_connection(tls_stream, &*handler, &reqs)
                    }
                });
            }
        });
        TestServer { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_request<S: Read>(reader: &mut BufReader<S>) -> Option<Recorded> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body,
        on_connection: 0,
    })
}

fn handle_connection<S: Read + Write>(stream: S, handler: &Handler, reqs: &Mutex<Vec<Recorded>>) {
    let mut reader = BufReader::new(stream);
    let mut on_connection = 0;
    while let Some(mut req) = read_request(&mut reader) {
        req.on_connection = on_connection;
        on_connection += 1;
        let index = {
            let mut r = reqs.lock().unwrap();
            r.push(req.clone());
            r.len() - 1
        };
        match handler(&req, index) {
            Action::Reply(status, ctype, body) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let s = reader.get_mut();
                if s.write_all(head.as_bytes()).is_err() || s.write_all(&body).is_err() {
                    return;
                }
                let _ = s.flush();
            }
            Action::Close => return,
            Action::Raw(bytes) => {
                let s = reader.get_mut();
                let _ = s.write_all(bytes);
                let _ = s.flush();
                return;
            }
            Action::Hang(d) => {
                std::thread::sleep(d);
                return;
            }
            Action::Twice(first, status, body) => {
                let mut out = Vec::new();
                for (status, body) in [(200, first), (status, body)] {
                    out.extend_from_slice(
                        format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    out.extend_from_slice(&body);
                }
                let s = reader.get_mut();
                if s.write_all(&out).is_err() {
                    return;
                }
                let _ = s.flush();
            }
        }
    }
}

/// A client for `url` with small timeouts and fast backoff.
fn client_with(url: &str, f: impl FnOnce(&mut Config)) -> TsbClient {
    let mut c = Config::for_url(url);
    c.pkcs11.connect_timeout = Duration::from_millis(1000);
    c.pkcs11.request_timeout = Duration::from_millis(2000);
    c.pkcs11.retries = 2;
    f(&mut c);
    let mut client = TsbClient::new(&c).unwrap();
    client.set_backoff_base(Duration::from_millis(10));
    client
}

fn client(url: &str) -> TsbClient {
    client_with(url, |_| {})
}

fn secret(s: &str) -> Secret {
    Secret::new(s.to_string())
}

fn sign_req() -> SignRequest {
    SignRequest::new("key1", "SHA256_WITH_ECDSA", b"payload".to_vec())
}

/// A port on which nothing listens.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// Endpoints, bodies and headers

#[test]
fn endpoints_and_bodies() {
    let server = TestServer::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v1/versionInfo") => reply_json(200, json!({"Version": "2.2.0"})),
        ("GET", "/v1/key") => reply_json(200, json!(["a", "m/0/1"])),
        ("POST", "/v1/key/attributes") if req.json() == json!({"label": "a"}) => reply_json(
            200,
            json!({"json": {"label": "a", "algorithm": "EC", "publicKey": "AQID",
                           "policy": {"ruleUse": {"tokens": [{"groups": [{"quorum": 1}]}]}}}}),
        ),
        ("POST", "/v1/synchronousSign") => {
            reply_json(200, json!({"signature": "AQIDBA==", "keyVersion": "1"}))
        }
        ("POST", "/v1/sign") => reply_json(201, json!({"signRequestId": "req-1"})),
        ("GET", "/v1/request/req-1") => reply_json(
            200,
            json!({"id": "req-1", "status": "EXECUTED", "result": "BQY=",
                   "approvedBy": [{"name": "alice"}], "notYetApprovedBy": [], "rejectedBy": []}),
        ),
        ("DELETE", "/v1/request/req-1") => reply_json(200, json!({})),
        ("POST", "/v1/certificate/import/plain") => reply_json(200, json!({"label": "a"})),
        ("DELETE", "/v1/certificate/a") => Action::Reply(200, "text/plain", vec![]),
        _ => reply_json(
            404,
            json!({"errorCode": 650, "reason": "res.error.key.not.existent"}),
        ),
    });
    let c = client(&server.url());
    assert_eq!(c.base_url(), server.url());
    assert_eq!(c.version_info().unwrap(), "2.2.0");
    assert_eq!(c.list_keys().unwrap(), vec!["a", "m/0/1"]);
    let attrs = c.key_attributes("a", None).unwrap();
    assert_eq!(attrs.public_key.as_deref(), Some(&[1u8, 2, 3][..]));
    assert!(attrs.needs_approval());
    let e = c.key_attributes("missing", None).unwrap_err();
    assert_eq!(e.http_status(), Some(404));
    assert_eq!(e.tsb_code(), Some(650));
    // "No such key" is the endpoint's own answer: no fallback to the GET form.
    assert_eq!(e.endpoint, "POST /v1/key/attributes");
    assert_eq!(
        e.to_string(),
        "POST /v1/key/attributes: HTTP 404, TSB 650 res.error.key.not.existent"
    );
    assert!(!server
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path.ends_with("/attributes")));

    let mut req = sign_req();
    req.signature_type = Some("DER".into());
    assert_eq!(c.sign_synchronous(&req).unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(c.sign_asynchronous(&req).unwrap(), "req-1");
    let st = c.request_status("req-1").unwrap();
    assert_eq!(st.state, RequestState::Executed);
    assert_eq!(st.result.as_deref(), Some(&[5u8, 6][..]));
    assert_eq!(st.approved_by, vec!["alice"]);
    c.cancel_request("req-1").unwrap();
    c.import_certificate("a", &[0x30, 0x03, 1, 2, 3]).unwrap();
    c.delete_certificate("a").unwrap();

    let reqs = server.requests();
    let sync = reqs
        .iter()
        .find(|r| r.path == "/v1/synchronousSign")
        .unwrap();
    assert_eq!(sync.header("content-type"), Some("application/json"));
    assert_eq!(
        sync.json(),
        json!({"signRequest": {"payload": "cGF5bG9hZA==", "payloadType": "UNSPECIFIED",
               "signKeyName": "key1", "signatureAlgorithm": "SHA256_WITH_ECDSA",
               "signatureType": "DER"}, "requestSignature": null})
    );
    let import = reqs
        .iter()
        .find(|r| r.path == "/v1/certificate/import/plain")
        .unwrap();
    assert_eq!(
        import.json(),
        json!({"label": "a", "certificate": "MAMBAgM="})
    );
}

/// A Spring "unknown endpoint" answer (no TSB `errorCode`).
fn spring(status: u16) -> Action {
    reply_json(
        status,
        json!({"timestamp": "2026-01-01T00:00:00Z", "status": status, "error": "Not Found", "path": "/x"}),
    )
}

/// Another key's attributes (e.g. a late answer to another read on a kept-alive connection)
/// are never taken for the key asked for.
#[test]
fn attributes_naming_another_key_are_refused() {
    let server = TestServer::start(|_, _| {
        reply_json(200, json!({"json": {"label": "other", "algorithm": "EC"}}))
    });
    let c = client(&server.url());
    let e = c.key_attributes("mine", None).unwrap_err();
    assert!(e.to_string().contains("not the one asked for"), "{e}");
}

/// An error answer on a kept-alive connection is confirmed on a new connection before it is
/// believed: a late "no such key" meant for another request must not make a key disappear.
#[test]
fn an_error_on_a_reused_connection_is_confirmed_on_a_new_one() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = calls.clone();
    let server = TestServer::start(move |_, _| {
        // The first answer is right, the second (on the kept-alive connection) a stray 404,
        // then right again.
        if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            reply_json(
                404,
                json!({"errorCode": 650, "reason": "res.error.key.not.existent"}),
            )
        } else {
            reply_json(200, json!({"json": {"label": "mine", "algorithm": "EC"}}))
        }
    });
    let c = client(&server.url());
    c.key_attributes("mine", None).unwrap();
    c.key_attributes("mine", None)
        .expect("the 404 was confirmed on a new connection");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn attributes_fall_back_to_get_once_per_node_with_encoded_labels() {
    let server = TestServer::start(|req, _| match req.method.as_str() {
        "POST" => spring(405),
        _ => reply_json(200, json!({"json": {"algorithm": "EC"}})),
    });
    let c = client(&server.url());
    c.key_attributes("m/44'/0 x", None).unwrap();
    c.key_attributes("b", None).unwrap();
    let reqs = server.requests();
    let seen: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    // The POST form first; refused with 405, the GET form, label percent-encoded; the node is
    // remembered, so the second read goes straight to GET.
    assert_eq!(
        seen,
        vec![
            ("POST", "/v1/key/attributes"),
            ("GET", "/v1/key/m%2F44%27%2F0%20x/attributes"),
            ("GET", "/v1/key/b/attributes"),
        ]
    );
    assert_eq!(reqs[0].json(), json!({"label": "m/44'/0 x"}));
    // "." and ".." cannot be path segments: only the POST form exists for them.
    let e = c.key_attributes("..", None).unwrap_err();
    assert_eq!(e.http_status(), Some(405));
    let last = &server.requests()[3];
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("POST", "/v1/key/attributes")
    );
    assert_eq!(last.json(), json!({"label": ".."}));
    let e = c.certificate("..").unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::Config(_)));
    assert_eq!(server.count(), 4);
}

#[test]
fn key_deletion_forms_and_fallback() {
    // DELETE is unknown (Spring 404 without errorCode); POST deleteKey works; "gone" is a key
    // the TSB does not have (404 with TSB 650, an answer of the endpoint itself).
    let server = TestServer::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/key/deleteKey") if req.json()["label"] == "gone" => reply_json(
            404,
            json!({"errorCode": 650, "reason": "res.error.key.not.existent"}),
        ),
        ("POST", "/v1/key/deleteKey") => Action::Reply(200, "text/plain", vec![]),
        _ => spring(404),
    });
    let c = client(&server.url());
    // A key with a password: POST deleteKey carrying it, nothing else.
    c.delete_key("pk", Some(&secret("pw1"))).unwrap();
    // Without a password: DELETE first; refused as unknown, POST deleteKey.
    c.delete_key("k1", None).unwrap();
    // Remembered for this node: POST deleteKey only.
    c.delete_key("k2", None).unwrap();
    let e = c.delete_key("gone", None).unwrap_err();
    assert!(e.is_key_not_found());
    assert_eq!(e.endpoint, "POST /v1/key/deleteKey");
    let reqs = server.requests();
    let seen: Vec<(&str, &str, Value)> = reqs
        .iter()
        .map(|r| {
            let body = if r.body.is_empty() {
                Value::Null
            } else {
                r.json()
            };
            (r.method.as_str(), r.path.as_str(), body)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "POST",
                "/v1/key/deleteKey",
                json!({"label": "pk", "password": ["p", "w", "1"]})
            ),
            ("DELETE", "/v1/key/k1", Value::Null),
            ("POST", "/v1/key/deleteKey", json!({"label": "k1"})),
            ("POST", "/v1/key/deleteKey", json!({"label": "k2"})),
            ("POST", "/v1/key/deleteKey", json!({"label": "gone"})),
        ]
    );
}

#[test]
fn key_deletion_falls_back_to_delete_and_keeps_tsb_refusals() {
    // An older TSB: no POST deleteKey (405); DELETE works, except for a key it will not delete.
    let server = TestServer::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("DELETE", "/v1/key/locked") => reply_json(
            400,
            json!({"errorCode": 614, "reason": "res.error.operation.forbidden.for.key"}),
        ),
        ("DELETE", _) => Action::Reply(200, "text/plain", vec![]),
        _ => spring(405),
    });
    let c = client(&server.url());
    c.delete_key("a/b", Some(&secret("pw1"))).unwrap();
    c.delete_key("pk", Some(&secret("pw1"))).unwrap();
    let e = c.delete_key("locked", None).unwrap_err();
    assert_eq!(e.reason(), Some(TsbReason::OperationForbidden));
    let seen: Vec<(String, String)> = server
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    let seen: Vec<(&str, &str)> = seen.iter().map(|(m, p)| (m.as_str(), p.as_str())).collect();
    assert_eq!(
        seen,
        vec![
            ("POST", "/v1/key/deleteKey"),
            ("DELETE", "/v1/key/a%2Fb"),
            ("DELETE", "/v1/key/pk"),
            ("DELETE", "/v1/key/locked"),
        ]
    );
}

#[test]
fn attributes_with_password_use_post() {
    let server = TestServer::start(|_, _| {
        reply_json(
            200,
            json!({"json": {"label": "k", "algorithm": "RSA", "keySize": 2048}}),
        )
    });
    let c = client(&server.url());
    let a = c.key_attributes("k", Some(&secret("pw1"))).unwrap();
    assert_eq!((a.label.as_str(), a.algorithm.as_str()), ("k", "RSA"));
    let r = &server.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/v1/key/attributes")
    );
    assert_eq!(r.json(), json!({"label": "k", "password": ["p", "w", "1"]}));
}

#[test]
fn certificate_shapes() {
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----";
    let server = TestServer::start(|req, _| match req.path.as_str() {
        "/v1/certificate/pem" => reply_json(200, json!({"label": "pem", "certificate": PEM})),
        "/v1/certificate/b64" => {
            reply_json(200, json!({"label": "b64", "certificate": "MAMCAQE="}))
        }
        "/v1/certificate/raw" => reply_json(
            200,
            json!({"label": "raw", "certificate": null, "rawCertificate": "MAMCAQE="}),
        ),
        "/v1/certificate/text" => Action::Reply(200, "text/plain", PEM.as_bytes().to_vec()),
        "/v1/certificate/bad" => reply_json(200, json!({"certificate": "%%%"})),
        "/v1/certificate/empty" => reply_json(200, json!({"label": "empty"})),
        _ => reply_json(404, json!({"errorCode": 650})),
    });
    let c = client(&server.url());
    let pem_bytes = format!("{PEM}\n").into_bytes();
    assert_eq!(c.certificate("pem").unwrap(), Some(pem_bytes.clone()));
    assert_eq!(c.certificate("b64").unwrap(), Some(vec![0x30, 3, 2, 1, 1]));
    assert_eq!(c.certificate("raw").unwrap(), Some(vec![0x30, 3, 2, 1, 1]));
    assert_eq!(c.certificate("text").unwrap(), Some(pem_bytes));
    assert_eq!(c.certificate("none").unwrap(), None);
    assert_eq!(c.certificate("empty").unwrap(), None);
    let e = c.certificate("bad").unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::InvalidResponse(_)), "{e}");
}

#[test]
fn auth_headers_per_endpoint() {
    let server = TestServer::start(|req, _| match req.path.as_str() {
        "/v1/versionInfo" => reply_json(200, json!({"Version": "1"})),
        "/v1/key" => reply_json(200, json!([])),
        "/v1/synchronousSign" => reply_json(200, json!({"signature": "AA=="})),
        "/v1/sign" => reply_json(201, json!({"signRequestId": "r"})),
        "/v1/request/r" => reply_json(200, json!({"status": "PENDING"})),
        _ => reply_json(404, json!({})),
    });
    let c = client_with(&server.url(), |cfg| {
        cfg.token = Some(secret("jwt-configured"));
        cfg.auth_type = AuthType::Token;
        cfg.api_keys.key_management = vec![secret("km-key")];
        cfg.api_keys.key_operation = vec![secret("op-key")];
        cfg.api_keys.service = vec![secret("svc-key")];
    });
    c.version_info().unwrap();
    c.list_keys().unwrap();
    c.sign_synchronous(&sign_req()).unwrap();
    c.sign_asynchronous(&sign_req()).unwrap();
    c.request_status("r").unwrap();
    assert_eq!(c.certificate("k").unwrap(), None);
    let reqs = server.requests();
    let expect = [
        ("/v1/versionInfo", "svc-key"),
        ("/v1/key", "km-key"),
        ("/v1/synchronousSign", "op-key"),
        ("/v1/sign", "op-key"),
        ("/v1/request/r", "op-key"),
        ("/v1/certificate/k", "op-key"),
    ];
    for (r, (path, key)) in reqs.iter().zip(expect) {
        assert_eq!(r.path, path);
        assert_eq!(r.header("x-api-key"), Some(key), "{path}");
        assert_eq!(
            r.header("authorization"),
            Some("Bearer jwt-configured"),
            "{path}"
        );
        assert_eq!(r.header("accept"), Some("application/json"));
    }

    // Login credentials override the configured ones until cleared.
    c.set_login_bearer(Some(secret("jwt-login")));
    c.set_login_operation_key(Some(secret("op-login")));
    c.list_keys().unwrap();
    c.sign_synchronous(&sign_req()).unwrap();
    c.set_login_bearer(None);
    c.set_login_operation_key(None);
    c.sign_synchronous(&sign_req()).unwrap();
    let reqs = server.requests();
    let n = reqs.len();
    assert_eq!(
        reqs[n - 3].header("authorization"),
        Some("Bearer jwt-login")
    );
    assert_eq!(reqs[n - 3].header("x-api-key"), Some("km-key"));
    assert_eq!(
        reqs[n - 2].header("authorization"),
        Some("Bearer jwt-login")
    );
    assert_eq!(reqs[n - 2].header("x-api-key"), Some("op-login"));
    assert_eq!(
        reqs[n - 1].header("authorization"),
        Some("Bearer jwt-configured")
    );
    assert_eq!(reqs[n - 1].header("x-api-key"), Some("op-key"));
}

#[test]
fn token_sent_only_with_auth_type_token() {
    let server = TestServer::start(|_, _| reply_json(200, json!([])));
    let c = client_with(&server.url(), |cfg| {
        cfg.token = Some(secret("jwt"));
        cfg.auth_type = AuthType::Cert;
        cfg.client_cert = None;
    });
    c.list_keys().unwrap();
    assert_eq!(server.requests()[0].header("authorization"), None);
    // A login token is sent whatever the authType.
    c.set_login_bearer(Some(secret("login-jwt")));
    c.list_keys().unwrap();
    assert_eq!(
        server.requests()[1].header("authorization"),
        Some("Bearer login-jwt")
    );
}

#[test]
fn no_auth_headers_without_credentials() {
    let server = TestServer::start(|_, _| reply_json(200, json!([])));
    let c = client(&server.url());
    c.list_keys().unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("x-api-key"), None);
}

// ---------------------------------------------------------------------------------------
// API-key rollover

fn invalid_api_key() -> Action {
    reply_json(
        401,
        json!({"errorCode": 631, "reason": "res.error.invalid.api.key", "message": "Invalid API key"}),
    )
}

#[test]
fn api_key_rollover_on_631() {
    let server = TestServer::start(|req, _| match req.header("x-api-key") {
        Some("new-key") => reply_json(200, json!(["k"])),
        _ => invalid_api_key(),
    });
    let c = client_with(&server.url(), |cfg| {
        cfg.api_keys.key_management = vec![secret("old-key"), secret("new-key")];
    });
    assert_eq!(c.list_keys().unwrap(), vec!["k"]);
    assert_eq!(server.count(), 2);
    // The working key is remembered.
    assert_eq!(c.list_keys().unwrap(), vec!["k"]);
    assert_eq!(server.count(), 3);
    let keys: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("x-api-key").unwrap().to_string())
        .collect();
    assert_eq!(keys, vec!["old-key", "new-key", "new-key"]);
}

#[test]
fn api_key_rollover_exhausted() {
    let server = TestServer::start(|_, _| invalid_api_key());
    let c = client_with(&server.url(), |cfg| {
        cfg.api_keys.key_operation = vec![secret("k1-secret"), secret("k2-secret")];
    });
    let e = c.sign_synchronous(&sign_req()).unwrap_err();
    assert_eq!(e.http_status(), Some(401));
    assert_eq!(e.tsb_code(), Some(631));
    assert_eq!(server.count(), 2, "each key once, no retries of a 401");
}

#[test]
fn plain_401_does_not_roll_over() {
    let server = TestServer::start(|_, _| reply_json(401, json!({"message": "Unauthorized"})));
    let c = client_with(&server.url(), |cfg| {
        cfg.api_keys.key_management = vec![secret("k1-secret"), secret("k2-secret")];
    });
    let e = c.list_keys().unwrap_err();
    assert_eq!(e.http_status(), Some(401));
    assert_eq!(server.count(), 1);
}

// ---------------------------------------------------------------------------------------
// Retries

#[test]
fn get_is_retried_after_503() {
    let server = TestServer::start(|_, i| {
        if i == 0 {
            Action::Reply(503, "text/plain", vec![])
        } else {
            reply_json(200, json!(["a"]))
        }
    });
    let c = client(&server.url());
    assert_eq!(c.list_keys().unwrap(), vec!["a"]);
    assert_eq!(server.count(), 2);
}

#[test]
fn get_gives_up_after_retries() {
    let server = TestServer::start(|_, _| Action::Reply(503, "text/plain", b"busy".to_vec()));
    let c = client(&server.url());
    let e = c.request_status("r").unwrap_err();
    assert_eq!(e.http_status(), Some(503));
    assert_eq!(server.count(), 3, "1 + retries(2)");
    let c0 = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 0);
    c0.cancel_request("r").unwrap_err();
    assert_eq!(server.count(), 4);
}

#[test]
fn get_is_not_retried_after_4xx() {
    let server = TestServer::start(|_, _| reply_json(400, json!({"errorCode": 600})));
    let c = client(&server.url());
    assert_eq!(c.list_keys().unwrap_err().tsb_code(), Some(600));
    assert_eq!(server.count(), 1);
}

#[test]
fn sign_is_not_retried_after_503() {
    let server =
        TestServer::start(|_, _| Action::Reply(503, "text/html", b"<html></html>".to_vec()));
    let c = client(&server.url());
    let e = c.sign_synchronous(&sign_req()).unwrap_err();
    assert_eq!(e.http_status(), Some(503));
    assert_eq!(server.count(), 1);
    let e = c.sign_asynchronous(&sign_req()).unwrap_err();
    assert_eq!(e.http_status(), Some(503));
    assert_eq!(server.count(), 2);
}

#[test]
fn sign_is_not_retried_after_dropped_connection() {
    let server = TestServer::start(|_, _| Action::Close);
    let c = client(&server.url());
    let e = c.sign_synchronous(&sign_req()).unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::Transport(_)), "{e:?}");
    assert!(e.may_have_reached_server());
    assert_eq!(server.count(), 1);
    let e = c.sign_asynchronous(&sign_req()).unwrap_err();
    assert!(e.may_have_reached_server(), "{e:?}");
    assert_eq!(server.count(), 2);
    // A GET is retried after the same failure.
    c.list_keys().unwrap_err();
    assert_eq!(server.count(), 5);
}

#[test]
fn sign_is_not_retried_after_malformed_json() {
    let server = TestServer::start(|_, _| {
        Action::Reply(200, "application/json", b"{\"signature\":".to_vec())
    });
    let c = client(&server.url());
    let e = c.sign_synchronous(&sign_req()).unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::InvalidResponse(_)), "{e:?}");
    assert_eq!(server.count(), 1);
}

/// A server that answers the first request of each connection and closes a connection
/// without a word when a later request arrives on it: an idle timeout at the wrong moment.
fn closes_kept_alive_connections() -> TestServer {
    TestServer::start(|req, _| {
        if req.on_connection > 0 {
            return Action::Close;
        }
        match req.path.as_str() {
            "/v1/key" => reply_json(200, json!(["a"])),
            "/v1/sign" => reply_json(201, json!({"signRequestId": "r1"})),
            _ => reply_json(200, json!({"signature": "AQI="})),
        }
    })
}

#[test]
fn synchronous_signs_reuse_kept_alive_connections() {
    let server = TestServer::start(|req, _| match req.path.as_str() {
        "/v1/key" => reply_json(200, json!(["a"])),
        _ => reply_json(200, json!({"signature": "AQI="})),
    });
    let c = client(&server.url());
    c.list_keys().unwrap();
    for _ in 0..20 {
        assert_eq!(c.sign_synchronous(&sign_req()).unwrap(), vec![1, 2]);
    }
    let reqs = server.requests();
    assert_eq!(reqs.len(), 21);
    assert_eq!(
        reqs.iter().filter(|r| r.on_connection == 0).count(),
        1,
        "one connection for a read and twenty signs"
    );
    assert_eq!(c.connections_opened(), 1);
}

#[test]
fn a_sign_on_a_kept_alive_connection_closed_by_the_server_is_sent_once_more() {
    let server = closes_kept_alive_connections();
    let c = client(&server.url());
    for _ in 0..3 {
        c.list_keys().unwrap();
        // Sent on the connection the list used, closed by the server before any answer, then
        // sent once more on a new connection, which answers.
        assert_eq!(c.sign_synchronous(&sign_req()).unwrap(), vec![1, 2]);
        // Approval requests never go over a kept-alive connection.
        assert_eq!(c.sign_asynchronous(&sign_req()).unwrap(), "r1");
    }
    let reqs = server.requests();
    let sync: Vec<_> = reqs
        .iter()
        .filter(|r| r.path == "/v1/synchronousSign")
        .collect();
    assert_eq!(sync.len(), 6, "each sign: once swallowed, once answered");
    assert_eq!(sync.iter().filter(|r| r.on_connection == 0).count(), 3);
    let approvals: Vec<_> = reqs.iter().filter(|r| r.path == "/v1/sign").collect();
    assert_eq!(approvals.len(), 3, "each approval request filed once");
    assert!(approvals.iter().all(|r| r.on_connection == 0));
}

#[test]
fn a_swallowed_sign_is_sent_again_only_once() {
    // The first connection answers the list; every later request is closed unanswered, on
    // the reused connection and on the new one alike.
    let server = TestServer::start(|req, i| {
        if i == 0 {
            reply_json(200, json!(["a"]))
        } else {
            let _ = req;
            Action::Close
        }
    });
    let c = client(&server.url());
    c.list_keys().unwrap();
    let e = c.sign_synchronous(&sign_req()).unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::Transport(_)), "{e:?}");
    assert!(e.may_have_reached_server());
    let reqs = server.requests();
    assert_eq!(
        reqs.len(),
        3,
        "the list, the swallowed sign, one more: {reqs:?}"
    );
    assert_eq!(reqs[1].on_connection, 1);
    assert_eq!(reqs[2].on_connection, 0);
}

#[test]
fn a_sign_that_got_an_answer_on_a_kept_alive_connection_is_never_sent_twice() {
    // The answer to the sign on the reused connection starts, then the connection drops; or it
    // is an error status; or nothing comes before the deadline. The TSB may have signed: the
    // request is not repeated.
    type Case = (&'static str, fn() -> Action);
    let partial: [Case; 5] = [
        ("half a status line, then close", || {
            Action::Raw(b"HTTP/1.1 2")
        }),
        ("status line, then close", || {
            Action::Raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        }),
        ("half a body, then close", || {
            Action::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"sig",
            )
        }),
        ("503", || reply_json(503, json!({"errorCode": 701}))),
        ("hang", || Action::Hang(Duration::from_millis(2500))),
    ];
    for (name, action) in partial {
        let server = TestServer::start(move |req, _| {
            if req.on_connection == 0 {
                reply_json(200, json!(["a"]))
            } else {
                action()
            }
        });
        let c = client(&server.url());
        c.list_keys().unwrap();
        let e = c.sign_synchronous(&sign_req()).unwrap_err();
        assert!(e.may_have_reached_server(), "{name}: {e:?}");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2, "{name}: sent once: {reqs:?}");
        assert_eq!(
            reqs[1].on_connection, 1,
            "{name}: on the kept-alive connection"
        );
    }
}

/// `{"signature": base64(bytes)}` as a body.
fn signature_body(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine;
    json!({ "signature": base64::engine::general_purpose::STANDARD.encode(bytes) })
        .to_string()
        .into_bytes()
}

/// The payload of a recorded sign request, decoded.
fn payload_of(req: &Recorded) -> Vec<u8> {
    use base64::Engine;
    let p = req.json()["signRequest"]["payload"]
        .as_str()
        .unwrap()
        .to_string();
    base64::engine::general_purpose::STANDARD.decode(p).unwrap()
}

fn sign_req_for(payload: &[u8]) -> SignRequest {
    SignRequest::new("key1", "SHA256_WITH_ECDSA", payload.to_vec())
}

/// Issue 19: an extra answer that arrived late on a kept-alive connection (here: right in front
/// of the answer to the next request) is never taken for that request's answer. The bytes after
/// it show the stream is out of step; the sign is sent once more on a new connection, whose
/// first answer can only be its own.
#[test]
fn a_late_answer_on_a_kept_alive_connection_is_never_returned() {
    let server = TestServer::start(|req, _| match (req.path.as_str(), req.on_connection) {
        ("/v1/key", _) => reply_json(200, json!(["a"])),
        // On a reused connection: a stray answer first, then this request's own.
        (_, n) if n > 0 => Action::Twice(
            signature_body(b"stale"),
            200,
            signature_body(&payload_of(req)),
        ),
        _ => Action::Reply(200, "application/json", signature_body(&payload_of(req))),
    });
    let c = client(&server.url());
    c.list_keys().unwrap();
    let sig = c.sign_synchronous(&sign_req_for(b"data-1")).unwrap();
    assert_eq!(
        sig, b"data-1",
        "the answer to this request, not the stray one"
    );
    let reqs = server.requests();
    let signs: Vec<_> = reqs
        .iter()
        .filter(|r| r.path == "/v1/synchronousSign")
        .collect();
    assert_eq!(signs.len(), 2, "sent once more: {reqs:?}");
    assert_eq!(signs[0].on_connection, 1);
    assert_eq!(signs[1].on_connection, 0, "on a new connection");
    // The connection that carried the stray answer was closed (and the one-off new connection
    // too): the next request opens another.
    c.list_keys().unwrap();
    assert_eq!(server.requests().last().unwrap().on_connection, 0);
    assert_eq!(c.connections_opened(), 3);
}

/// Issue 19: the same answer body to a different sign request on one connection is a replayed
/// answer, refused; the same request answered the same (a deterministic signature) is not.
#[test]
fn a_repeated_answer_to_a_different_sign_is_refused() {
    // Each connection answers every sign with the signature of the first payload it saw (the
    // test uses one connection at a time).
    let first: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let server = TestServer::start(move |req, _| {
        let mut f = first.lock().unwrap();
        if req.on_connection == 0 {
            *f = None;
        }
        let answer = f.get_or_insert_with(|| payload_of(req)).clone();
        Action::Reply(200, "application/json", signature_body(&answer))
    });
    let c = client(&server.url());
    assert_eq!(c.sign_synchronous(&sign_req_for(b"A")).unwrap(), b"A");
    // The same request again: the same answer is fine.
    assert_eq!(c.sign_synchronous(&sign_req_for(b"A")).unwrap(), b"A");
    assert_eq!(c.connections_opened(), 1);
    // Another request answered with that same body: refused, sent once more on a new
    // connection (which answers for B).
    assert_eq!(c.sign_synchronous(&sign_req_for(b"B")).unwrap(), b"B");
    assert_eq!(c.connections_opened(), 2);
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 1, 2, 0]);
}

/// An approval request (and every other call that may be sent only once) never rides a
/// kept-alive connection, which the server may be closing: it opens its own, and does not
/// leave it for others. Reads keep theirs (docs/architecture.md, the retry table).
#[test]
fn an_approval_request_is_sent_on_a_new_connection() {
    let server = TestServer::start(|req, _| match req.path.as_str() {
        "/v1/key" => reply_json(200, json!(["a"])),
        _ => reply_json(201, json!({"signRequestId": "r"})),
    });
    let c = client(&server.url());
    c.list_keys().unwrap();
    assert_eq!(c.sign_asynchronous(&sign_req()).unwrap(), "r");
    c.list_keys().unwrap();
    // Each request's place on its connection: the approval request is the first on a new one,
    // the second listing the second on the first connection.
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 0, 1], "the request on a connection of its own");
    assert_eq!(c.connections_opened(), 2);
}

/// Issue 19: a connection goes back to the pool only after the caller accepted its answer. An
/// answer the check refuses on a reused connection is sent once more on a new connection; the
/// refused connections are closed, never reused.
#[test]
fn a_connection_whose_answer_was_refused_is_closed() {
    let server = TestServer::start(|req, _| match req.path.as_str() {
        "/v1/key" => reply_json(200, json!(["a"])),
        _ => reply_json(200, json!({"signature": "AQI="})),
    });
    let c = client(&server.url());
    c.list_keys().unwrap();
    let e = c
        .sign_synchronous_checked(&sign_req(), &|_, _| Err("does not verify".into()))
        .unwrap_err();
    assert!(
        matches!(&e.kind, TsbErrorKind::Refused(m) if m == "does not verify"),
        "{e:?}"
    );
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(
        on,
        [0, 1, 0],
        "once on the kept-alive connection, once on a new one"
    );
    // Neither connection came back to the pool.
    c.list_keys().unwrap();
    assert_eq!(server.requests().last().unwrap().on_connection, 0);
    assert_eq!(c.connections_opened(), 3);
    // An accepted answer keeps its connection.
    assert_eq!(
        c.sign_synchronous_checked(&sign_req(), &|s, _| Ok(s.to_vec()))
            .unwrap(),
        [1, 2]
    );
    assert_eq!(server.requests().last().unwrap().on_connection, 1);
    // A refused answer on a new connection is not sent again (the TSB answered this request).
    let server = TestServer::start(|_, _| reply_json(200, json!({"signature": "AQI="})));
    let c = client(&server.url());
    c.sign_synchronous_checked(&sign_req(), &|_, _| Err("no".into()))
        .unwrap_err();
    assert_eq!(server.count(), 1);
}

/// The lease: dropped (the answer not accepted) closes the connection; released, the connection
/// is pooled unless bytes came after the response.
#[test]
fn the_pool_takes_a_connection_back_only_on_release_and_only_clean() {
    let server = TestServer::start(|req, _| match req.path.as_str() {
        "/extra" => Action::Twice(b"{}".to_vec(), 200, b"{}".to_vec()),
        _ => reply_json(200, json!({})),
    });
    let pool = pool_for(&server, 8);
    let get = |path: &'static str| http::Request {
        method: "GET",
        path,
        headers: &[],
        body: None,
    };
    let deadline = || Instant::now() + Duration::from_secs(2);
    let (_, lease) = pool.exchange(&get("/a"), deadline(), true, 1024).unwrap();
    assert!(!lease.unsolicited_bytes());
    drop(lease);
    assert_eq!(pool.idle_len(), 0, "not released: closed");
    let (_, lease) = pool.exchange(&get("/a"), deadline(), true, 1024).unwrap();
    lease.release();
    assert_eq!(pool.idle_len(), 1, "released: pooled");
    // A response with another complete response behind it: not pooled, even when released.
    let (resp, lease) = pool
        .exchange(&get("/extra"), deadline(), true, 1024)
        .unwrap();
    assert_eq!(resp.body, b"{}");
    assert!(lease.reused());
    assert!(lease.unsolicited_bytes());
    lease.release();
    assert_eq!(pool.idle_len(), 0, "bytes after the response: closed");
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 0, 1]);
}

/// A connection given back to the pool drops those idle past connectionMaxIdleMs (they may
/// have been closed by the server or a NAT) and keeps the younger ones.
#[test]
fn a_release_drops_the_connections_idle_past_the_idle_age() {
    let server = TestServer::start(|_, _| reply_json(200, json!({})));
    let pool = pool_for(&server, 8).with_max_idle_age(Duration::from_millis(500));
    let req = http::Request {
        method: "GET",
        path: "/a",
        headers: &[],
        body: None,
    };
    let deadline = || Instant::now() + Duration::from_secs(2);
    let (_, a) = pool.exchange(&req, deadline(), true, 1024).unwrap();
    let (_, b) = pool.exchange(&req, deadline(), true, 1024).unwrap();
    let (_, c) = pool.exchange(&req, deadline(), true, 1024).unwrap();
    a.release();
    // Past the idle age for `a` (a lower bound only: the clock cannot make it shorter).
    std::thread::sleep(Duration::from_millis(700));
    b.release();
    assert_eq!(pool.idle_len(), 1, "a, idle past the age, dropped; b kept");
    c.release();
    assert_eq!(pool.idle_len(), 2, "b, young, kept beside c");
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 0, 0], "three connections");
}

/// A server that closes the connection after a complete answer (without `Connection: close`):
/// the answer stands (a close is no unsolicited byte), and the connection is not pooled.
#[test]
fn a_connection_the_server_closed_after_its_answer_is_not_pooled() {
    let server = TestServer::start(|_, _| {
        Action::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
    });
    let pool = pool_for(&server, 8);
    let req = http::Request {
        method: "GET",
        path: "/a",
        headers: &[],
        body: None,
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let (resp, lease) = pool.exchange(&req, deadline, true, 1024).unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"{}"[..]));
    // Let the server's FIN arrive (loopback: microseconds); this waits, it measures nothing.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!lease.unsolicited_bytes());
    lease.release();
    assert_eq!(pool.idle_len(), 0, "closed by the server: not pooled");
}

/// A request body of at most 16 KiB goes out in the head's buffer (one write), a larger one is
/// written after the head (`http.rs`): on both sides of that limit the server gets the body
/// whole, byte for byte, with its `Content-Length`, and the connection stays in step for the
/// next request. The server echoes each body, so the answers cross the 16 KiB read buffer too.
#[test]
fn request_bodies_around_16_kib_arrive_byte_for_byte() {
    let server = TestServer::start(|req, _| {
        Action::Reply(200, "application/octet-stream", req.body.clone())
    });
    let origin = http::Origin::parse(&format!("{}/base", server.url()), None).unwrap();
    let pool = http::Pool::new(
        origin,
        8,
        Duration::from_secs(1),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    // A pattern that does not repeat every 256 bytes (a part sent twice or out of place shows).
    let body_of = |n: usize| -> Vec<u8> {
        let mut x = n as u32 ^ 0x9e37_79b9;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect()
    };
    let sizes = [0, 1, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 100_000];
    for &n in &sizes {
        let body = body_of(n);
        let req = http::Request {
            method: "POST",
            path: "/v1/echo",
            headers: &[("X-Test", "t")],
            body: Some(&body),
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        let (resp, lease) = pool.exchange(&req, deadline, true, 200_000).unwrap();
        assert_eq!(resp.status, 200, "{n} bytes");
        assert!(resp.body_error.is_none() && !resp.truncated, "{n} bytes");
        assert!(
            resp.body == body,
            "{n} bytes: the answer is the body echoed"
        );
        assert!(!lease.unsolicited_bytes(), "{n} bytes");
        lease.release();
    }
    let reqs = server.requests();
    assert_eq!(reqs.len(), sizes.len(), "{reqs:?}");
    let authority = server.addr.to_string();
    for (k, (r, &n)) in reqs.iter().zip(&sizes).enumerate() {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/base/v1/echo")
        );
        assert!(r.body == body_of(n), "{n} bytes arrived byte for byte");
        let names: Vec<&str> = r.headers.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(
            names,
            ["Host", "User-Agent", "Accept", "X-Test", "Content-Length"],
            "{n} bytes"
        );
        assert_eq!(r.header("host"), Some(authority.as_str()));
        assert_eq!(
            r.header("user-agent"),
            Some(concat!("tsb-pkcs11/", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(r.header("accept"), Some("application/json"));
        assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
        assert_eq!(r.on_connection, k, "{n} bytes: one kept-alive connection");
    }
}

/// The head of requests without a body: a `POST` or `PUT` says `Content-Length: 0`, a `GET`
/// says nothing of a length; a request that may not reuse a connection asks the server to close
/// it (and its connection is not kept).
#[test]
fn request_heads_without_a_body() {
    let server = TestServer::start(|_, _| reply_json(200, json!({})));
    let pool = pool_for(&server, 8);
    let deadline = || Instant::now() + Duration::from_secs(2);
    for (method, reuse) in [
        ("GET", true),
        ("POST", true),
        ("PUT", true),
        ("DELETE", false),
    ] {
        let req = http::Request {
            method,
            path: "/p",
            headers: &[],
            body: None,
        };
        let (resp, lease) = pool.exchange(&req, deadline(), reuse, 1024).unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"{}"[..]));
        lease.release();
        // The DELETE's connection is closed; the first one stays in the pool.
        assert_eq!(pool.idle_len(), 1, "{method}");
    }
    let reqs = server.requests();
    let heads: Vec<(&str, Option<&str>, Option<&str>)> = reqs
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.header("content-length"),
                r.header("connection"),
            )
        })
        .collect();
    assert_eq!(
        heads,
        [
            ("GET", None, None),
            ("POST", Some("0"), None),
            ("PUT", Some("0"), None),
            ("DELETE", None, Some("close")),
        ]
    );
    let on: Vec<usize> = reqs.iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 1, 2, 0]);
}

/// A pool with room for `max_idle` connections to `server`.
fn pool_for(server: &TestServer, max_idle: usize) -> http::Pool {
    let origin = http::Origin::parse(&server.url(), None).unwrap();
    http::Pool::new(
        origin,
        max_idle,
        Duration::from_secs(1),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
    )
}

/// The pool keeps at most `max_idle` connections: a released one beyond them is closed.
#[test]
fn the_pool_keeps_at_most_max_idle_connections() {
    let server = TestServer::start(|_, _| reply_json(200, json!({})));
    let pool = pool_for(&server, 1);
    let req = http::Request {
        method: "GET",
        path: "/a",
        headers: &[],
        body: None,
    };
    let deadline = || Instant::now() + Duration::from_secs(2);
    // Two exchanges at once: two connections.
    let (_, first) = pool.exchange(&req, deadline(), true, 1024).unwrap();
    let (_, second) = pool.exchange(&req, deadline(), true, 1024).unwrap();
    first.release();
    second.release();
    assert_eq!(pool.idle_len(), 1);
    let (_, lease) = pool.exchange(&req, deadline(), true, 1024).unwrap();
    assert!(lease.reused());
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 0, 1]);
}

/// A socket read that times out before the call's deadline (the socket timeout is half of
/// what is left) is made again: an answer that comes after the first socket timeout but within
/// the deadline is read.
#[test]
fn an_answer_after_the_first_socket_timeout_is_read() {
    let server = TestServer::start(|_, _| {
        // Past the first socket timeout (half of the 3 s deadline), well before the deadline.
        std::thread::sleep(Duration::from_millis(1700));
        reply_json(200, json!({"late": true}))
    });
    let pool = pool_for(&server, 8);
    let req = http::Request {
        method: "GET",
        path: "/slow",
        headers: &[],
        body: None,
    };
    let (resp, _) = pool
        .exchange(&req, Instant::now() + Duration::from_secs(3), true, 1024)
        .unwrap();
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (200, &br#"{"late":true}"#[..])
    );
}

/// Bytes that came after a complete response are seen when they wait in the socket, not only
/// in the read buffer: here the first answer fills the 16 KiB read buffer exactly, and a second
/// answer (sent in the same write) waits behind it in the socket. The connection is not pooled.
#[test]
fn bytes_waiting_in_the_socket_after_a_response_are_seen() {
    // `Action::Twice` heads: "HTTP/1.1 200 X", Content-Type and Content-Length lines.
    let head_len = |n: usize| {
        format!("HTTP/1.1 200 X\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n")
            .len()
    };
    let n = (16_000..16 * 1024)
        .find(|&n| head_len(n) + n == 16 * 1024)
        .unwrap();
    let server = TestServer::start(move |_, _| Action::Twice(vec![b'7'; n], 200, b"{}".to_vec()));
    let pool = pool_for(&server, 8);
    let req = http::Request {
        method: "GET",
        path: "/a",
        headers: &[],
        body: None,
    };
    let (resp, lease) = pool
        .exchange(&req, Instant::now() + Duration::from_secs(2), true, 100_000)
        .unwrap();
    assert!(resp.body == vec![b'7'; n]);
    assert!(lease.unsolicited_bytes());
    lease.release();
    assert_eq!(pool.idle_len(), 0);
}

#[test]
fn connection_refused_is_not_sent() {
    let port = closed_port();
    let c = client(&format!("http://127.0.0.1:{port}"));
    let started = Instant::now();
    let e = c.sign_synchronous(&sign_req()).unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::NotSent(_)), "{e:?}");
    assert!(!e.may_have_reached_server());
    // retried twice: backoff 10 ms + 30 ms
    assert!(started.elapsed() >= Duration::from_millis(40));
}

#[test]
fn sign_is_retried_after_connection_refused() {
    let port = closed_port();
    // The server comes up after the first attempt was refused.
    let requests = Arc::new(Mutex::new(Vec::new()));
    let reqs = requests.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let server = TestServer::serve(
            listener,
            Arc::new(|_: &Recorded, _| reply_json(200, json!({"signature": "AQI="}))),
            None,
        );
        *reqs.lock().unwrap() = vec![server];
    });
    let mut cfg = Config::for_url(&format!("http://127.0.0.1:{port}"));
    cfg.pkcs11.retries = 3;
    let mut c = TsbClient::new(&cfg).unwrap();
    c.set_backoff_base(Duration::from_millis(60)); // 60, 180, 540 ms
    let sig = c.sign_synchronous(&sign_req()).unwrap();
    assert_eq!(sig, vec![1, 2]);
    starter.join().unwrap();
    assert_eq!(requests.lock().unwrap()[0].count(), 1);
}

// ---------------------------------------------------------------------------------------
// Timeouts and bodies

#[test]
fn read_timeout_is_bounded() {
    let server = TestServer::start(|_, _| Action::Hang(Duration::from_secs(5)));
    let c = client_with(&server.url(), |cfg| {
        cfg.pkcs11.request_timeout = Duration::from_millis(300);
        cfg.pkcs11.retries = 1;
    });
    let started = Instant::now();
    let e = c.sign_synchronous(&sign_req()).unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::Timeout(_)), "{e:?}");
    assert!(e.may_have_reached_server());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.count(), 1, "a sign is never retried after a timeout");
    // requestTimeoutMs is the deadline of the whole call: a GET that used it up is not
    // retried (a hanging TSB costs one timeout, not one per attempt).
    let started = Instant::now();
    let e = c.list_keys().unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::Timeout(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.count(), 2);
}

#[test]
fn retries_fit_in_the_request_deadline() {
    // Each answer takes 150 ms and is a 503: with a 1000 ms deadline and 10 ms backoff,
    // attempts go on while a quarter of the deadline (and a whole connect timeout, 100 ms) is
    // left after the backoff.
    let server = TestServer::start(|_, _| {
        std::thread::sleep(Duration::from_millis(150));
        Action::Reply(503, "text/plain", vec![])
    });
    let c = client_with(&server.url(), |cfg| {
        cfg.pkcs11.request_timeout = Duration::from_millis(1000);
        cfg.pkcs11.connect_timeout = Duration::from_millis(100);
        cfg.pkcs11.retries = 10;
    });
    let started = Instant::now();
    let e = c.list_keys().unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.http_status(), Some(503));
    assert!(took < Duration::from_millis(1100), "{took:?}");
    let n = server.count();
    assert!((3..=6).contains(&n), "{n} attempts in {took:?}");
}

#[test]
fn no_retry_when_a_connect_could_outlast_the_deadline() {
    // connectTimeoutMs equal to requestTimeoutMs: a retry's connect could run past the
    // deadline (a retry is made only while a whole connect fits in what is left of it, see
    // `execute`), so there is none.
    let server = TestServer::start(|_, _| Action::Reply(503, "text/plain", vec![]));
    let c = client_with(&server.url(), |cfg| {
        cfg.pkcs11.request_timeout = Duration::from_millis(1000);
        cfg.pkcs11.connect_timeout = Duration::from_millis(5000);
    });
    assert_eq!(c.list_keys().unwrap_err().http_status(), Some(503));
    assert_eq!(server.count(), 1);
}

/// The debug line of a call that failed for good says why it was not sent again: only a
/// failure the table would retry, with retries left, is "requestTimeoutMs nearly used up"; a
/// 4xx (never retried) and a failure after the last retry are the failure alone.
#[test]
fn a_failed_call_s_log_line_gives_the_reason_there_was_no_retry() {
    if !log_capture::install() {
        eprintln!("another logger is installed; test skipped");
        return;
    }
    let lines_with = |marker: &str| -> Vec<String> {
        log_capture::LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(marker) && l.contains("TSB request failed"))
            .cloned()
            .collect()
    };
    // A 4xx with retries left: never retried, and not for lack of time.
    let server = TestServer::start(|_, _| {
        reply_json(400, json!({"errorCode": 600, "reason": "marker-4xx-7c1e"}))
    });
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 2);
    c.list_keys().unwrap_err();
    assert_eq!(server.count(), 1);
    let lines = lines_with("marker-4xx-7c1e");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("DEBUG") && !lines[0].contains("no retry"),
        "{lines:?}"
    );
    // A 503 with retries left but no time for one (a connect could outlast the deadline).
    let server = TestServer::start(|_, _| {
        reply_json(503, json!({"errorCode": 600, "reason": "marker-5xx-7c1e"}))
    });
    let c = client_with(&server.url(), |cfg| {
        cfg.pkcs11.request_timeout = Duration::from_millis(1000);
        cfg.pkcs11.connect_timeout = Duration::from_millis(5000);
    });
    c.list_keys().unwrap_err();
    assert_eq!(server.count(), 1);
    let lines = lines_with("marker-5xx-7c1e");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("(no retry: requestTimeoutMs 1000 nearly used up)"),
        "{lines:?}"
    );
    // A 503 retried once (a WARN line), then failing after the last retry: the failure alone.
    let server = TestServer::start(|_, _| {
        reply_json(503, json!({"errorCode": 600, "reason": "marker-last-7c1e"}))
    });
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 1);
    c.list_keys().unwrap_err();
    assert_eq!(server.count(), 2);
    let lines = lines_with("marker-last-7c1e");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("WARN") && lines[0].contains("(attempt 1 of 2; retrying in 10 ms)"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("DEBUG") && !lines[1].contains("no retry"),
        "{lines:?}"
    );
}

/// A TLS handshake the server never answers ends at the deadline as not sent (safe to send
/// anywhere again), saying it timed out; a server closing at once is a failed handshake.
#[test]
fn a_tls_handshake_without_an_answer_is_a_timeout_before_sending() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let closing = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = [
        silent.local_addr().unwrap().port(),
        closing.local_addr().unwrap().port(),
    ];
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(3));
        drop(held);
    });
    std::thread::spawn(move || {
        for s in closing.incoming().take(1) {
            drop(s);
        }
    });
    let expected = ["TLS handshake timed out", "TLS handshake failed"];
    for (port, why) in ports.into_iter().zip(expected) {
        let c = client_with(&format!("https://127.0.0.1:{port}"), |cfg| {
            cfg.pkcs11.request_timeout = Duration::from_millis(400);
            cfg.pkcs11.retries = 0;
        });
        let e = c.sign_synchronous(&sign_req()).unwrap_err();
        assert!(
            matches!(&e.kind, TsbErrorKind::NotSent(m) if m.contains(why)),
            "{why}: {e:?}"
        );
    }
}

/// A server that resets the connection while the request's body is being written: the write
/// error ends the call as a transport failure at once, not retried until the deadline and then
/// reported as a timeout.
#[test]
fn a_write_error_is_a_transport_failure_not_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in listener.incoming().take(1) {
            // Closing with unread bytes resets the connection.
            let mut s = s.unwrap();
            let _ = s.read(&mut [0u8; 1024]);
        }
    });
    let c = client_with(&url, |cfg| {
        cfg.pkcs11.retries = 0;
        cfg.pkcs11.request_timeout = Duration::from_secs(20);
    });
    // 16 MiB (21 MiB of JSON): more than the socket buffers take before the reset.
    let payload = vec![7u8; 16 << 20];
    let started = Instant::now();
    let e = c.sign_synchronous(&sign_req_for(&payload)).unwrap_err();
    assert!(
        matches!(&e.kind, TsbErrorKind::Transport(m) if m.contains("sending the request")),
        "{e:?}"
    );
    // Not written again and again until the 20 s deadline (a bound, not a speed target).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A peer that never reads: the request's body fills the socket buffers and each write then
/// times out on the socket's own timeout (a part of the time left). Such a write is made again
/// until the deadline: the call ends as a timeout, never before `requestTimeoutMs`. (A lower
/// bound the clock guarantees, not a speed target: giving up at the first socket timeout would
/// end the call at about half of it.)
#[test]
fn a_write_to_a_peer_that_never_reads_lasts_until_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        // Accepted and held, never read, until the call is over.
        let held: Vec<_> = listener.incoming().take(1).collect();
        let _ = wait.recv_timeout(Duration::from_secs(30));
        drop(held);
    });
    let timeout = Duration::from_millis(1500);
    let c = client_with(&url, |cfg| {
        cfg.pkcs11.retries = 0;
        cfg.pkcs11.request_timeout = timeout;
    });
    // 16 MiB (21 MiB of JSON): more than the socket buffers take.
    let payload = vec![7u8; 16 << 20];
    let started = Instant::now();
    let e = c.sign_synchronous(&sign_req_for(&payload)).unwrap_err();
    let elapsed = started.elapsed();
    let _ = done.send(());
    assert!(matches!(&e.kind, TsbErrorKind::Timeout(_)), "{e:?}");
    assert!(elapsed >= timeout * 9 / 10, "{elapsed:?}: {e:?}");
}

/// Failover over two nodes that both refuse connections: a debug line says the first node of
/// the round failed and the next is tried (none for the last node), and the error names each
/// node with its own failure.
#[test]
fn when_every_node_fails_the_error_names_each_and_the_log_the_failover() {
    if !log_capture::install() {
        eprintln!("another logger is installed; test skipped");
        return;
    }
    let first = closed_port();
    let second = std::iter::repeat_with(closed_port)
        .find(|&p| p != first)
        .unwrap();
    let urls = [first, second].map(|p| format!("http://127.0.0.1:{p}"));
    let c = client_with(&urls[0], |cfg| {
        cfg.rest_apis = urls.to_vec();
        cfg.pkcs11.retries = 0;
    });
    let e = c.list_keys().unwrap_err();
    let TsbErrorKind::NotSent(m) = &e.kind else {
        panic!("{e:?}")
    };
    assert!(
        m.starts_with("every TSB node failed within requestTimeoutMs (2000 ms): "),
        "{m}"
    );
    for url in &urls {
        assert!(
            m.contains(&format!("{url}: request not sent: ")),
            "{url}: {m}"
        );
    }
    let failover: Vec<String> = log_capture::LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l.contains("trying the next node")
                && urls
                    .iter()
                    .any(|u| l.contains(&format!("failed on node {u} (")))
        })
        .cloned()
        .collect();
    // One line, for the first node of the round (whichever the plan put first).
    assert_eq!(failover.len(), 1, "{failover:?}");
    assert!(
        failover[0].starts_with("DEBUG")
            && failover[0].contains(" failed on node http://127.0.0.1:"),
        "{failover:?}"
    );
    // One ERROR line naming each node with its failure.
    let every = every_node_failed_lines(&urls);
    assert_eq!(every.len(), 1, "{every:?}");
    assert!(
        every[0].starts_with("ERROR")
            && every[0].contains("TSB GET /v1/key: every TSB node failed: "),
        "{every:?}"
    );
    for url in &urls {
        assert!(
            every[0].contains(&format!("{url} (request not sent: ")),
            "{every:?}"
        );
    }
    // Over two nodes, a round that one node's TSB answer ends (a 4xx is no node failure) is
    // not "every node failed".
    let answering: Vec<TestServer> = (0..2)
        .map(|_| {
            TestServer::start(|_, _| {
                reply_json(400, json!({"errorCode": 600, "reason": "validation"}))
            })
        })
        .collect();
    let urls: Vec<String> = answering.iter().map(|s| s.url()).collect();
    let c = client_with(&urls[0], |cfg| cfg.rest_apis = urls.clone());
    assert_eq!(c.list_keys().unwrap_err().http_status(), Some(400));
    assert_eq!(answering.iter().map(|s| s.count()).sum::<usize>(), 1);
    assert_eq!(every_node_failed_lines(&urls), Vec::<String>::new());
}

/// The captured "every TSB node failed" lines that name one of `urls`.
fn every_node_failed_lines(urls: &[String]) -> Vec<String> {
    log_capture::LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l.contains("every TSB node failed: ") && urls.iter().any(|u| l.contains(u.as_str()))
        })
        .cloned()
        .collect()
}

/// How a broken answer is reported: the server closing the connection in the middle of an
/// answer is "closed without a complete response"; a reset after some bytes of one is the
/// reset as the socket reported it (not read past, not taken for a close).
#[test]
fn a_broken_answer_says_how_it_broke() {
    // The server reads the request, sends `bytes`, then closes (FIN) or resets (RST).
    let serve = |bytes: &'static [u8], reset: bool| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            if let Some(Ok(mut s)) = listener.incoming().next() {
                let _ = s.read(&mut [0u8; 4096]);
                let _ = s.write_all(bytes);
                // The bytes arrive first; a linger of zero makes the close an RST.
                std::thread::sleep(Duration::from_millis(50));
                if reset {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
            }
        });
        url
    };
    for (bytes, reset, want) in [
        (
            &b"HTTP/1.1 2"[..],
            false,
            "the server closed the connection without a complete response",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Le",
            true,
            "reading the response: Connection reset",
        ),
    ] {
        let c = client_with(&serve(bytes, reset), |cfg| cfg.pkcs11.retries = 0);
        let e = c.list_keys().unwrap_err();
        assert!(
            matches!(&e.kind, TsbErrorKind::Transport(m) if m.contains(want)),
            "{want}: {e:?}"
        );
    }
}

/// With two nodes a read gives each node an equal share of the time left (`execute`): a node
/// that never answers costs half the deadline, and the other node answers within the rest.
#[test]
fn a_hanging_node_leaves_the_next_node_its_share_of_the_deadline() {
    let hanging = TestServer::start(|_, _| Action::Hang(Duration::from_secs(5)));
    let live = TestServer::start(|_, _| reply_json(200, json!(["a"])));
    let c = client_with(&hanging.url(), |cfg| {
        cfg.rest_apis.push(live.url());
        cfg.pkcs11.retries = 0;
    });
    assert_eq!(c.list_keys().unwrap(), vec!["a"]);
    assert_eq!((hanging.count(), live.count()), (1, 1));
}

/// `tsb-pkcs11 doctor`'s view of the nodes: their URLs in configured order, and a probe of
/// each alone that tells a node failure (an error) from an answer that says nothing against the
/// node (`Ok(None)`, e.g. a 401).
#[test]
fn node_urls_and_probes_of_each_node() {
    let up = TestServer::start(|_, _| reply_json(200, json!({"Version": "2.2.0"})));
    let refusing = TestServer::start(|_, _| reply_json(401, json!({"errorCode": 401})));
    let unavailable = TestServer::start(|_, _| Action::Reply(503, "text/plain", vec![]));
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let urls = [up.url(), refusing.url(), unavailable.url(), dead];
    let c = client_with(&urls[0], |cfg| {
        cfg.rest_apis = urls.to_vec();
        cfg.pkcs11.retries = 0;
    });
    assert_eq!(c.node_urls(), urls);
    assert_eq!(c.node_count(), 4);
    // Debug output (a host's panic or trace) names the nodes and never a credential.
    let c_keyed = client_with(&urls[0], |cfg| {
        cfg.rest_apis = urls.to_vec();
        cfg.api_keys.key_operation = vec![secret("op-key-5d1f")];
    });
    let shown = format!("{c_keyed:?}");
    assert!(shown.starts_with("TsbClient {"), "{shown}");
    assert!(urls.iter().all(|u| shown.contains(u.as_str())), "{shown}");
    assert!(!shown.contains("op-key-5d1f"), "{shown}");
    assert_eq!(c.probe_node(0).unwrap().as_deref(), Some("2.2.0"));
    assert_eq!(c.probe_node(1).unwrap(), None);
    assert_eq!(c.probe_node(2).unwrap_err().http_status(), Some(503));
    assert!(matches!(
        c.probe_node(3).unwrap_err().kind,
        TsbErrorKind::NotSent(_)
    ));
    // Each probe went to its node alone.
    assert_eq!(
        (up.count(), refusing.count(), unavailable.count()),
        (1, 1, 1)
    );
}

/// A key's attestation: the `xml` and its `xmlSignature` from the attributes answer; a blank
/// `xml` is no attestation.
#[test]
fn key_attestation_needs_its_xml() {
    let server = TestServer::start(|req, _| {
        let label = req.json()["label"].as_str().unwrap_or_default().to_string();
        let xml = if label == "blank" { "" } else { "<k/>" };
        reply_json(
            200,
            json!({"json": {"label": label, "algorithm": "EC", "publicKey": "AQID"},
                   "xml": xml, "xmlSignature": "c2ln", "attestationKeyName": "att"}),
        )
    });
    let c = client(&server.url());
    let a = c.key_attestation("k", None).unwrap();
    assert_eq!(
        (
            a.xml.as_str(),
            a.signature.as_slice(),
            a.attestation_key_name.as_str()
        ),
        ("<k/>", &b"sig"[..], "att")
    );
    assert_eq!(a.public_key.as_deref(), Some(&[1u8, 2, 3][..]));
    let e = c.key_attestation("blank", None).unwrap_err();
    assert!(
        matches!(&e.kind, TsbErrorKind::InvalidResponse(m) if m.contains("carries no \"xml\"")),
        "{e:?}"
    );
}

/// The attestation key's chain: each entry PEM or bare base64, in the TSB's order; an empty or
/// missing list is an invalid answer, not an empty chain.
#[test]
fn attestation_chain_entries_in_order() {
    let server = TestServer::start(|req, i| match (req.method.as_str(), req.path.as_str(), i) {
        ("GET", "/v1/key/attestation/certificateChain", 0) => reply_json(
            200,
            json!({"attestationCertificateChain": [
                "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n",
                "BAUG"
            ]}),
        ),
        ("GET", "/v1/key/attestation/certificateChain", 1) => {
            reply_json(200, json!({"attestationCertificateChain": []}))
        }
        _ => reply_json(200, json!({})),
    });
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 0);
    assert_eq!(
        c.attestation_chain().unwrap(),
        vec![vec![1u8, 2, 3], vec![4u8, 5, 6]]
    );
    for why in ["is empty", "no list"] {
        let e = c.attestation_chain().unwrap_err();
        assert!(
            matches!(&e.kind, TsbErrorKind::InvalidResponse(m) if m.contains(why)),
            "{e:?}"
        );
    }
    assert_eq!(server.count(), 3);
}

/// An approval request may not move to another node once sent, so its node gets all of the
/// deadline, not a share of it: a node that answers after half of it still files the request,
/// and the other node never sees it.
#[test]
fn an_approval_request_gets_all_of_the_deadline_on_its_node() {
    let slow = TestServer::start(|_, _| {
        std::thread::sleep(Duration::from_millis(1300));
        reply_json(201, json!({"signRequestId": "r1"}))
    });
    let other = TestServer::start(|_, _| reply_json(201, json!({"signRequestId": "r2"})));
    let c = client_with(&slow.url(), |cfg| {
        cfg.rest_apis.push(other.url());
        cfg.pkcs11.retries = 0;
    });
    assert_eq!(c.sign_asynchronous(&sign_req()).unwrap(), "r1");
    assert_eq!((slow.count(), other.count()), (1, 0));
}

#[test]
fn connect_timeout_is_bounded() {
    // A non-routable address: the connect either times out or fails at once.
    let c = client_with("http://10.255.255.1:9", |cfg| {
        cfg.pkcs11.allow_insecure_http = true;
        cfg.pkcs11.connect_timeout = Duration::from_millis(200);
        cfg.pkcs11.retries = 0;
    });
    let started = Instant::now();
    // (Some sandboxes intercept outbound connections and answer themselves.)
    let _ = c.list_keys();
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[test]
fn html_502_is_http_error_without_code() {
    let server = TestServer::start(|_, _| {
        Action::Reply(
            502,
            "text/html",
            b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>".to_vec(),
        )
    });
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 0);
    let e = c.list_keys().unwrap_err();
    match &e.kind {
        TsbErrorKind::Http {
            status,
            code,
            reason,
            message,
        } => {
            assert_eq!(*status, 502);
            assert_eq!(*code, None);
            assert_eq!(*reason, None);
            assert_eq!(message.as_deref(), Some("502 Bad Gateway"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.to_string(), "GET /v1/key: HTTP 502: 502 Bad Gateway");
}

#[test]
fn empty_error_body() {
    let server = TestServer::start(|_, _| Action::Reply(500, "text/plain", vec![]));
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 0);
    let e = c.version_info().unwrap_err();
    assert!(matches!(
        e.kind,
        TsbErrorKind::Http {
            status: 500,
            code: None,
            reason: None,
            message: None
        }
    ));
}

#[test]
fn malformed_json_on_200_is_invalid_response() {
    let server =
        TestServer::start(|_, _| Action::Reply(200, "application/json", b"[\"a\", ".to_vec()));
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 1);
    let e = c.list_keys().unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::InvalidResponse(_)), "{e:?}");
    assert_eq!(server.count(), 2, "an idempotent GET is retried once");
    let server =
        TestServer::start(|_, _| Action::Reply(200, "text/html", b"<html>login</html>".to_vec()));
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 0);
    let e = c.version_info().unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::InvalidResponse(_)), "{e:?}");
    let server = TestServer::start(|_, _| Action::Reply(200, "application/json", vec![]));
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 0);
    let e = c.sign_asynchronous(&sign_req()).unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::InvalidResponse(_)), "{e:?}");
    let server = TestServer::start(|_, _| reply_json(200, json!({"unexpected": true})));
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 0);
    let e = c.sign_synchronous(&sign_req()).unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::InvalidResponse(_)), "{e:?}");
}

#[test]
fn oversized_body_is_refused() {
    let server = TestServer::start(|_, _| {
        let mut body = b"[\"".to_vec();
        body.extend(std::iter::repeat_n(b'a', 5 * 1024 * 1024));
        body.extend(b"\"]");
        Action::Reply(200, "application/json", body)
    });
    let c = client_with(&server.url(), |cfg| cfg.pkcs11.retries = 0);
    let e = c.list_keys().unwrap_err();
    match &e.kind {
        TsbErrorKind::InvalidResponse(m) => assert!(m.contains("larger than"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Login checks

#[test]
fn check_bearer_uses_the_given_token() {
    let server = TestServer::start(|req, _| match req.header("authorization") {
        Some("Bearer good-jwt") => reply_json(200, json!([])),
        _ => reply_json(
            401,
            json!({"errorCode": 617, "reason": "res.error.invalid.access.token"}),
        ),
    });
    let c = client_with(&server.url(), |cfg| {
        cfg.token = Some(secret("configured-jwt"));
        cfg.auth_type = AuthType::Token;
    });
    c.check_bearer(&secret("good-jwt")).unwrap();
    let e = c.check_bearer(&secret("bad-jwt")).unwrap_err();
    assert_eq!(e.http_status(), Some(401));
    assert!(!e.to_string().contains("bad-jwt"));
    let e = c.check_bearer(&secret("bad\njwt")).unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::Config(_)));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs
        .iter()
        .all(|r| r.path == "/v1/key" && r.method == "GET"));
    // Checking does not change the credentials in use.
    c.list_keys().unwrap_err();
    assert_eq!(
        server.requests()[2].header("authorization"),
        Some("Bearer configured-jwt")
    );
}

#[test]
fn check_operation_api_key() {
    let server = TestServer::start(|req, _| match req.header("x-api-key") {
        Some("good-key") => reply_json(
            404,
            json!({"errorCode": 651, "reason": "res.error.request.not.existent"}),
        ),
        Some("good-key-400") => reply_json(400, json!({"errorCode": 651})),
        _ => invalid_api_key(),
    });
    let c = client_with(&server.url(), |cfg| {
        cfg.api_keys.key_operation = vec![secret("configured-key")];
    });
    c.check_operation_api_key(&secret("good-key")).unwrap();
    c.check_operation_api_key(&secret("good-key-400")).unwrap();
    let e = c.check_operation_api_key(&secret("bad-key")).unwrap_err();
    assert_eq!(e.http_status(), Some(401));
    let reqs = server.requests();
    assert_eq!(
        reqs.len(),
        3,
        "no rollover to configured keys while checking"
    );
    for r in &reqs {
        assert_eq!(r.method, "GET");
        let id = r.path.strip_prefix("/v1/request/").unwrap();
        assert_eq!(id.len(), 36);
    }
    assert_ne!(reqs[0].path, reqs[1].path);
}

// ---------------------------------------------------------------------------------------
// The steps of a connection one by one (`Probe`, for `tsb-pkcs11 doctor`)

/// The probe's steps reach the node as the client's own connections do: the resolver's
/// addresses, the TCP connection, and one request that names the URL's authority in `Host`
/// (IPv6 brackets and port, RFC 9112 §3.2), carries no credential, and asks to close the
/// connection. A port nothing listens on gives each address tried with its error.
#[test]
fn probe_steps_reach_the_node_as_the_client_does() {
    let listener = TcpListener::bind("[::1]:0").unwrap();
    let server = TestServer::serve(
        listener,
        Arc::new(|_: &Recorded, _| reply_json(200, json!({ "Version": "2.2.0" }))),
        None,
    );
    let port = server.addr.port();
    let c = client_with(&format!("http://[::1]:{port}"), |c| {
        c.auth_type = AuthType::Token;
        c.token = Some(secret("the-jwt"));
        c.api_keys.service = vec![secret("the-service-key")];
    });
    let probe = c.probe(0);
    assert_eq!(
        (probe.host(), probe.port(), probe.is_tls()),
        ("::1", port, false)
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    let addrs = probe.resolve(deadline).unwrap();
    assert_eq!(addrs, vec![server.addr]);
    let connected = probe.connect(&addrs, deadline).unwrap();
    assert_eq!(connected.addr, server.addr);
    let opened = probe.open(connected, deadline).unwrap();
    assert!(opened.tls.is_none());
    assert_eq!(probe.request(opened, "/v1/versionInfo").unwrap(), 200);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/versionInfo");
    let host = format!("[::1]:{port}");
    assert_eq!(reqs[0].header("host"), Some(host.as_str()));
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[0].header("x-api-key"), None);
    assert_eq!(reqs[0].header("connection"), Some("close"));

    let c = client(&format!("http://127.0.0.1:{}", closed_port()));
    let probe = c.probe(0);
    let addrs = probe.resolve(deadline).unwrap();
    let tried = probe.connect(&addrs, deadline).err().unwrap();
    assert_eq!(tried.len(), 1);
    assert_eq!(tried[0].0, addrs[0]);
    assert_eq!(tried[0].1.kind(), std::io::ErrorKind::ConnectionRefused);
}

// ---------------------------------------------------------------------------------------
// Transport security

#[test]
fn plain_http_to_non_loopback_is_refused() {
    let e = TsbClient::new(&Config::for_url("http://tsb.example.com:8080")).unwrap_err();
    match &e.kind {
        TsbErrorKind::Config(m) => assert_eq!(
            m,
            "plain http:// to a non-loopback host is refused; set pkcs11.allowInsecureHttp to allow it"
        ),
        other => panic!("{other:?}"),
    }
    let mut cfg = Config::for_url("http://tsb.example.com:8080");
    cfg.pkcs11.allow_insecure_http = true;
    TsbClient::new(&cfg).unwrap();
    for url in [
        "http://127.0.0.1:8080",
        "http://localhost",
        "http://[::1]:1",
    ] {
        TsbClient::new(&Config::for_url(url)).unwrap();
    }
    let e = TsbClient::new(&Config::for_url("ftp://x")).unwrap_err();
    assert!(matches!(e.kind, TsbErrorKind::Config(_)));
}

#[test]
fn bad_credentials_in_config_are_refused_without_echo() {
    let mut cfg = Config::for_url("http://127.0.0.1:1");
    cfg.api_keys.key_operation = vec![secret("ok"), secret("bad\r\nkey")];
    let e = TsbClient::new(&cfg).unwrap_err();
    assert_eq!(
        e.to_string(),
        "configuration: apiKeys.KeyOperationToken[1] contains characters not allowed in an HTTP header"
    );
}

/// Through HTTP CONNECT proxies, and name lookups bounded by the deadline.
mod proxy;

mod tls_server {
    use super::*;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::X509;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use sha2::{Digest, Sha256};
    use tsb_pkcs11_test_support::pki::{ec_key as key, CertBuilder, Profile};

    /// A CA (no issuer) or a TLS server/client leaf for localhost, from the tests' one
    /// certificate builder (tests/support/src/pki.rs).
    fn cert(
        cn: &str,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
        client: bool,
    ) -> X509 {
        let b = CertBuilder::new(cn).days(2);
        match issuer {
            None => b.profile(Profile::Ca).self_signed(key),
            Some((ca, ca_key)) => b
                .profile(if client {
                    Profile::TlsClient
                } else {
                    Profile::TlsServer
                })
                .issued_by(key, ca, ca_key),
        }
    }

    pub(super) struct Pki {
        dir: tempfile::TempDir,
        pub(super) ca_pem: std::path::PathBuf,
        pub(super) server_der: Vec<u8>,
        server_key: Vec<u8>,
        ca: X509,
        ca_key: PKey<Private>,
    }

    pub(super) fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = key();
        let ca = cert("Test CA", &ca_key, None, false);
        let server_key = key();
        let server = cert("localhost", &server_key, Some((&ca, &ca_key)), false);
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.to_pem().unwrap()).unwrap();
        Pki {
            dir,
            ca_pem,
            server_der: server.to_der().unwrap(),
            server_key: server_key.private_key_to_pkcs8().unwrap(),
            ca,
            ca_key,
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn tls_server(pki: &Pki, require_client_cert: bool) -> TestServer {
        tls_server_with(
            pki,
            require_client_cert,
            Arc::new(|_: &Recorded, _| reply_json(200, json!({"Version": "tls"}))),
        )
    }

    pub(super) fn tls_server_with(
        pki: &Pki,
        require_client_cert: bool,
        handler: Arc<Handler>,
    ) -> TestServer {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(pki.ca.to_der().unwrap()))
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let cfg = builder
            .with_single_cert(
                vec![CertificateDer::from(pki.server_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
            )
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        TestServer::serve(listener, handler, Some(Arc::new(cfg)))
    }

    /// Over TLS a clean answer keeps its connection (TLS messages are not taken for stray
    /// bytes), and a stray answer in front of the next one is caught as over plain TCP.
    #[test]
    fn tls_connections_are_kept_and_stray_answers_caught() {
        let pki = pki();
        let server = tls_server_with(
            &pki,
            false,
            Arc::new(
                |req: &Recorded, _| match (req.path.as_str(), req.on_connection) {
                    ("/v1/versionInfo", _) => reply_json(200, json!({"Version": "tls"})),
                    (_, 3) => Action::Twice(
                        signature_body(b"stale"),
                        200,
                        signature_body(&payload_of(req)),
                    ),
                    _ => Action::Reply(200, "application/json", signature_body(&payload_of(req))),
                },
            ),
        );
        let c = https_client(&server, |cfg| cfg.ca_path = Some(pki.ca_pem.clone()));
        assert_eq!(c.version_info().unwrap(), "tls");
        for data in [&b"A"[..], b"B", b"C"] {
            assert_eq!(c.sign_synchronous(&sign_req_for(data)).unwrap(), data);
        }
        assert_eq!(c.connections_opened(), 2, "one resend, for C");
        let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
        assert_eq!(on, [0, 1, 2, 3, 0]);
    }

    /// Bodies larger than the 16 KiB the request head's buffer carries and than the read
    /// buffer, both ways over TLS: the server gets the sign's payload byte for byte, the client
    /// the signature.
    #[test]
    fn large_bodies_cross_tls_whole() {
        let pki = pki();
        let server = tls_server_with(
            &pki,
            false,
            Arc::new(|req: &Recorded, _| {
                Action::Reply(200, "application/json", signature_body(&payload_of(req)))
            }),
        );
        let c = https_client(&server, |cfg| cfg.ca_path = Some(pki.ca_pem.clone()));
        let payload: Vec<u8> = (0..40_000u32).map(|i| (i * 31 % 251) as u8).collect();
        assert!(c.sign_synchronous(&sign_req_for(&payload)).unwrap() == payload);
        assert!(c.sign_synchronous(&sign_req_for(b"small")).unwrap() == b"small");
        let reqs = server.requests();
        assert!(payload_of(&reqs[0]) == payload);
        assert_eq!(reqs[1].on_connection, 1, "the connection stayed in step");
    }

    /// `tsb-pkcs11 doctor`'s probe of an https:// node: the TLS session's protocol and the
    /// server certificate it verified, then an answer over that session.
    #[test]
    fn the_probe_reports_the_tls_session_and_its_certificate() {
        let pki = pki();
        let server = tls_server(&pki, false);
        let c = https_client(&server, |cfg| cfg.ca_path = Some(pki.ca_pem.clone()));
        let probe = c.probe(0);
        assert!(probe.is_tls());
        let deadline = Instant::now() + Duration::from_secs(2);
        let addrs = probe.resolve(deadline).unwrap();
        let connected = probe.connect(&addrs, deadline).unwrap();
        let opened = probe.open(connected, deadline).unwrap();
        let tls = opened.tls.as_ref().expect("TLS facts");
        assert!(tls.protocol.starts_with("TLSv1_"), "{}", tls.protocol);
        let cert = tls.certificate.as_ref().expect("the server's certificate");
        let want: [u8; 32] = Sha256::digest(&pki.server_der).into();
        assert_eq!(cert.sha256, want);
        let subject = cert.subject.as_deref().unwrap_or_default();
        assert!(subject.contains("localhost"), "{subject}");
        assert_eq!(probe.request(opened, "/v1/versionInfo").unwrap(), 200);
    }

    fn https_client(server: &TestServer, f: impl FnOnce(&mut Config)) -> TsbClient {
        client_with(&format!("https://127.0.0.1:{}", server.addr.port()), f)
    }

    #[test]
    fn tls_with_ca_path_and_pin() {
        let pki = pki();
        let server = tls_server(&pki, false);
        // Trusted through caPath
        let c = https_client(&server, |cfg| cfg.ca_path = Some(pki.ca_pem.clone()));
        assert_eq!(c.version_info().unwrap(), "tls");
        // Matching pin
        let pin: [u8; 32] = Sha256::digest(&pki.server_der).into();
        let c = https_client(&server, |cfg| {
            cfg.ca_path = Some(pki.ca_pem.clone());
            cfg.pkcs11.server_cert_sha256 = Some(pin);
        });
        assert_eq!(c.version_info().unwrap(), "tls");
        assert_eq!(server.count(), 2);
        // Pin mismatch: NotSent, nothing reaches the server, even a sign is retried safely.
        let c = https_client(&server, |cfg| {
            cfg.ca_path = Some(pki.ca_pem.clone());
            cfg.pkcs11.server_cert_sha256 = Some([7u8; 32]);
        });
        let e = c.sign_synchronous(&sign_req()).unwrap_err();
        match &e.kind {
            TsbErrorKind::NotSent(m) => assert!(m.contains("serverCertSha256"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!e.may_have_reached_server());
        assert_eq!(server.count(), 2);
    }

    #[test]
    fn untrusted_server_is_not_sent() {
        let pki = pki();
        let server = tls_server(&pki, false);
        // Another CA in caPath: the server's chain is untrusted.
        let other = pki_other_ca(&pki);
        let c = https_client(&server, |cfg| cfg.ca_path = Some(other));
        let e = c.version_info().unwrap_err();
        assert!(matches!(e.kind, TsbErrorKind::NotSent(_)), "{e:?}");
        assert_eq!(server.count(), 0);
    }

    fn pki_other_ca(pki: &Pki) -> std::path::PathBuf {
        let k = key();
        let ca = cert("Other CA", &k, None, false);
        let p = pki.dir.path().join("other-ca.pem");
        std::fs::write(&p, ca.to_pem().unwrap()).unwrap();
        p
    }

    #[test]
    fn mutual_tls_with_client_certificate() {
        let pki = pki();
        let server = tls_server(&pki, true);
        // Without a client certificate the handshake fails.
        let c = https_client(&server, |cfg| cfg.ca_path = Some(pki.ca_pem.clone()));
        assert!(c.version_info().is_err());
        assert_eq!(server.count(), 0);
        // With one (SEC1 "EC PRIVATE KEY" PEM), it works.
        let client_key = key();
        let client_cert = cert("client", &client_key, Some((&pki.ca, &pki.ca_key)), true);
        let cert_path = pki.dir.path().join("client.pem");
        let key_path = pki.dir.path().join("client.key");
        std::fs::write(&cert_path, client_cert.to_pem().unwrap()).unwrap();
        std::fs::write(
            &key_path,
            client_key.ec_key().unwrap().private_key_to_pem().unwrap(),
        )
        .unwrap();
        let c = https_client(&server, |cfg| {
            cfg.ca_path = Some(pki.ca_pem.clone());
            cfg.auth_type = AuthType::Cert;
            cfg.client_cert = Some(cert_path.clone());
            cfg.client_key = Some(key_path.clone());
        });
        assert_eq!(c.version_info().unwrap(), "tls");
        // A missing key file is a configuration error at construction.
        let mut cfg = Config::for_url("https://127.0.0.1:1");
        cfg.ca_path = Some(pki.ca_pem.clone());
        cfg.auth_type = AuthType::Cert;
        cfg.client_cert = Some(cert_path);
        cfg.client_key = Some(pki.dir.path().join("missing.key"));
        let e = TsbClient::new(&cfg).unwrap_err();
        assert!(matches!(e.kind, TsbErrorKind::Config(_)), "{e:?}");
        assert!(e.to_string().contains("keypath"), "{e}");
    }

    #[test]
    fn ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "not a pem").unwrap();
        let mut cfg = Config::for_url("https://tsb.example");
        cfg.ca_path = Some(p);
        let e = TsbClient::new(&cfg).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Secrets never reach the logs

/// A logger that keeps every line, for tests that check what is logged (also the core
/// tests in `token::tests`). The logger of the test process: lines of all tests mix, so a
/// test looks for text only it logs.
pub(crate) mod log_capture {
    use std::sync::LazyLock;
    use std::sync::Mutex;

    pub(crate) static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            // Only the module's own lines and rustls's are checked; `ureq` (the HTTP client the
            // module used before its own, still a dev-dependency of the tests) echoes headers at
            // debug, and the module's logger setup caps that target at info.
            if record.target().starts_with("ureq") {
                return;
            }
            LINES.lock().unwrap().push(format!(
                "{} {} {}",
                record.level(),
                record.target(),
                record.args()
            ));
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture;

    /// Installs the capturing logger if no other logger is installed; false if that failed.
    pub(crate) fn install() -> bool {
        static INSTALLED: LazyLock<bool> = LazyLock::new(|| {
            let ok = log::set_logger(&CAPTURE).is_ok();
            if ok {
                log::set_max_level(log::LevelFilter::Trace);
            }
            ok
        });
        *INSTALLED
    }
}

#[test]
fn secrets_never_logged() {
    if !log_capture::install() {
        eprintln!("another logger is installed; secrets_never_logged skipped");
        return;
    }
    let server = TestServer::start(|req, i| match (req.path.as_str(), i % 3) {
        (_, 0) => invalid_api_key(),
        ("/v1/synchronousSign", _) => reply_json(
            400,
            json!({"errorCode": 620, "reason": "res.error.key.password.mismatch",
                   "message": "password SuperSecretPw1 for key with jwt SecretJwtValue1 via SecretApiKey2"}),
        ),
        _ => Action::Reply(503, "text/plain", b"SecretApiKey1 SecretJwtValue1".to_vec()),
    });
    let c = client_with(&server.url(), |cfg| {
        cfg.token = Some(secret("SecretJwtValue1"));
        cfg.auth_type = AuthType::Token;
        cfg.api_keys.key_operation = vec![secret("SecretApiKey1"), secret("SecretApiKey2")];
        cfg.api_keys.key_management = vec![secret("SecretApiKey1"), secret("SecretApiKey2")];
    });
    let mut req = sign_req();
    req.key_password = Some(secret("SuperSecretPw1"));
    let e = c.sign_synchronous(&req).unwrap_err();
    let shown = format!("{e} {e:?}");
    let _ = c.list_keys();
    let _ = c.key_attributes("k", Some(&secret("SuperSecretPw1")));
    c.set_login_bearer(Some(secret("SecretLoginJwt1")));
    let _ = c.check_bearer(&secret("SecretCheckJwt1"));
    let _ = c.check_operation_api_key(&secret("SecretCheckKey1"));
    assert!(server.count() >= 4);
    let lines = log_capture::LINES.lock().unwrap().join("\n");
    assert!(lines.contains("TSB"), "nothing captured");
    for s in [
        "SecretJwtValue1",
        "SecretApiKey1",
        "SecretApiKey2",
        "SuperSecretPw1",
        "SecretLoginJwt1",
        "SecretCheckJwt1",
        "SecretCheckKey1",
    ] {
        assert!(!lines.contains(s), "{s} logged");
        assert!(!shown.contains(s), "{s} in error");
    }
}

// ---------------------------------------------------------------------------------------
// Strict response framing (issue 20 item 2): a raw server sends each variant

/// What one framing variant must give.
#[derive(Debug)]
enum Framed {
    /// The status and body; whether the connection goes back to the pool when released.
    Good(u16, &'static [u8], bool),
    /// The head is refused: the exchange fails (`Transport`, with this text) and its
    /// connection is closed.
    HeadRefused(&'static str),
    /// The status stands, the body is refused (`body_error` with this text); the connection is
    /// not pooled.
    BodyRefused(u16, &'static str),
}

/// A server that answers the first request of each connection with `bytes`, then waits for
/// the client to close the connection and reports that on the channel.
fn raw_server(bytes: Vec<u8>) -> (SocketAddr, std::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let bytes = bytes.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                if read_request(&mut reader).is_none() {
                    return;
                }
                let s = reader.get_mut();
                let _ = s.write_all(&bytes);
                let _ = s.flush();
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut sink = [0u8; 256];
                while let Ok(n) = s.read(&mut sink) {
                    if n == 0 {
                        let _ = tx.send(());
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn framing_cases() -> Vec<(&'static str, Vec<u8>, Framed)> {
    use Framed::*;
    let ok = |head: &str, body: &str| format!("HTTP/1.1 200 OK\r\n{head}\r\n{body}").into_bytes();
    let chunked = |body: &str| ok("Transfer-Encoding: chunked\r\n", body);
    let many = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
    // One field line of `n` bytes (CRLF included).
    let line = |n: usize| format!("X-Long: {}\r\n", "a".repeat(n - 10));
    // Field lines of `n` bytes in all, none longer than 8000.
    let lines = |mut n: usize| {
        let mut out = String::new();
        for i in 0.. {
            if n == 0 {
                break;
            }
            let len = if n > 8000 && n - 8000 < 20 {
                n - 20
            } else {
                n.min(8000)
            };
            out.push_str(&format!("X-{i:02}: {}\r\n", "a".repeat(len - 8)));
            n -= len;
        }
        out
    };
    vec![
        // Transfer-Encoding
        (
            "Transfer-Encoding with Content-Length",
            ok(
                "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
                "2\r\n{}\r\n0\r\n\r\n",
            ),
            HeadRefused("both Transfer-Encoding and Content-Length"),
        ),
        (
            "gzip, chunked",
            ok("Transfer-Encoding: gzip, chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"),
            HeadRefused("other than chunked alone"),
        ),
        (
            "xchunkedx",
            ok("Transfer-Encoding: xchunkedx\r\n", "2\r\n{}\r\n0\r\n\r\n"),
            HeadRefused("other than chunked alone"),
        ),
        (
            "gzip alone, body to the end",
            ok("Transfer-Encoding: gzip\r\nConnection: close\r\n", "{}"),
            HeadRefused("other than chunked alone"),
        ),
        (
            "chunked twice",
            ok(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "2\r\n{}\r\n0\r\n\r\n",
            ),
            HeadRefused("other than chunked alone"),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".to_vec(),
            HeadRefused("HTTP/1.0"),
        ),
        // Chunk lines
        (
            "chunk-size line ending in a bare LF",
            chunked("2\n{}\r\n0\r\n\r\n"),
            BodyRefused(200, "chunk-size line not ended by CRLF"),
        ),
        (
            "chunk data followed by a bare LF",
            chunked("2\r\n{}\n0\r\n\r\n"),
            BodyRefused(200, "chunk data not followed by CRLF"),
        ),
        (
            "last chunk ending in a bare LF",
            chunked("2\r\n{}\r\n0\n\r\n"),
            BodyRefused(200, "chunk-size line not ended by CRLF"),
        ),
        (
            "signed chunk size",
            chunked("+2\r\n{}\r\n0\r\n\r\n"),
            BodyRefused(200, "bad chunk size"),
        ),
        (
            "chunk size after a space",
            chunked(" 2\r\n{}\r\n0\r\n\r\n"),
            BodyRefused(200, "bad chunk size"),
        ),
        (
            "chunk size 0x2",
            chunked("0x2\r\n{}\r\n0\r\n\r\n"),
            BodyRefused(200, "bad chunk size"),
        ),
        (
            "chunk size beyond 64 bits",
            chunked("10000000000000000\r\n{}\r\n0\r\n\r\n"),
            BodyRefused(200, "chunk size too large"),
        ),
        (
            "trailer line ending in a bare LF",
            chunked("2\r\n{}\r\n0\r\nX-T: 1\n\r\n"),
            BodyRefused(200, "trailer line not ended by CRLF"),
        ),
        (
            "65 trailer fields",
            chunked(&format!("2\r\n{{}}\r\n0\r\n{}\r\n", many(65))),
            BodyRefused(200, "more than 64 trailer fields"),
        ),
        (
            "a trailer line that is not a field",
            chunked("2\r\n{}\r\n0\r\nnot a field\r\n\r\n"),
            BodyRefused(200, "malformed trailer field"),
        ),
        // Content-Length
        (
            "signed Content-Length",
            ok("Content-Length: +2\r\n", "{}"),
            HeadRefused("invalid Content-Length"),
        ),
        (
            "negative Content-Length",
            ok("Content-Length: -2\r\n", "{}"),
            HeadRefused("invalid Content-Length"),
        ),
        (
            "Content-Length beyond 64 bits",
            ok("Content-Length: 18446744073709551616\r\n", "{}"),
            HeadRefused("invalid Content-Length"),
        ),
        (
            "conflicting Content-Length in one field",
            ok("Content-Length: 2, 3\r\n", "{}"),
            HeadRefused("conflicting Content-Length"),
        ),
        (
            "repeated different Content-Length",
            ok("Content-Length: 2\r\nContent-Length: 3\r\n", "{}"),
            HeadRefused("conflicting Content-Length"),
        ),
        (
            "repeated equal Content-Length",
            ok("Content-Length: 2\r\nContent-Length: 2\r\n", "{}"),
            Good(200, b"{}", true),
        ),
        (
            "equal Content-Length values in one field",
            ok("Content-Length: 2, 2\r\n", "{}"),
            Good(200, b"{}", true),
        ),
        // Interim responses
        (
            "101 is not interim",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            HeadRefused("101 Switching Protocols"),
        ),
        (
            "100 and 103 are skipped",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            Good(200, b"{}", true),
        ),
        // Bounds and the head's syntax
        (
            "65 header fields",
            ok(&format!("{}Content-Length: 2\r\n", many(64)), "{}"),
            HeadRefused("more than 64 header fields"),
        ),
        (
            "a header line of 9000 bytes",
            ok(&format!("X-Long: {}\r\nContent-Length: 2\r\n", "a".repeat(9000)), "{}"),
            HeadRefused("longer than 8192 bytes"),
        ),
        (
            "a header line without a colon",
            ok("Content-Length: 2\r\nnot a field\r\n", "{}"),
            HeadRefused("malformed response head"),
        ),
        (
            "an obsolete folded header line",
            ok("Content-Length: 2\r\nX-A: a\r\n  folded\r\n", "{}"),
            HeadRefused("malformed response head"),
        ),
        (
            "status code 099",
            b"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            HeadRefused("status code 99 out of range"),
        ),
        (
            "HTTP/1.2",
            b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            HeadRefused("malformed response head"),
        ),
        // The bounds, on either side
        (
            "64 header fields",
            ok(&format!("{}Content-Length: 2\r\n", many(63)), "{}"),
            Good(200, b"{}", true),
        ),
        (
            "a header line of 8192 bytes",
            ok(&format!("{}Content-Length: 2\r\n", line(8192)), "{}"),
            Good(200, b"{}", true),
        ),
        (
            "a header line of 8193 bytes",
            ok(&format!("{}Content-Length: 2\r\n", line(8193)), "{}"),
            HeadRefused("longer than 8192 bytes"),
        ),
        (
            // Status line (17), Content-Length (19) and the empty line (2) around the padding.
            "a head of 64 KiB",
            ok(&format!("{}Content-Length: 2\r\n", lines(65536 - 38)), "{}"),
            Good(200, b"{}", true),
        ),
        (
            "a head of 64 KiB and 1 byte",
            ok(&format!("{}Content-Length: 2\r\n", lines(65537 - 38)), "{}"),
            HeadRefused("response head longer than 65536 bytes"),
        ),
        (
            "64 trailer fields",
            chunked(&format!("2\r\n{{}}\r\n0\r\n{}\r\n", many(64))),
            Good(200, b"{}", true),
        ),
        (
            // The empty line (2) ends the section.
            "a trailer section of 64 KiB",
            chunked(&format!("2\r\n{{}}\r\n0\r\n{}\r\n", lines(65536 - 2))),
            Good(200, b"{}", true),
        ),
        (
            "a trailer section of 64 KiB and 1 byte",
            chunked(&format!("2\r\n{{}}\r\n0\r\n{}\r\n", lines(65537 - 2))),
            BodyRefused(200, "trailer section longer than 65536 bytes"),
        ),
        (
            // `2;` and CRLF around the extension.
            "a chunk-size line of 1024 bytes",
            chunked(&format!("2;{}\r\n{{}}\r\n0\r\n\r\n", "e".repeat(1020))),
            Good(200, b"{}", true),
        ),
        (
            "a chunk-size line of 1025 bytes",
            chunked(&format!("2;{}\r\n{{}}\r\n0\r\n\r\n", "e".repeat(1021))),
            BodyRefused(200, "longer than 1024 bytes"),
        ),
        (
            "status code 599",
            b"HTTP/1.1 599 X\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            Good(599, b"{}", true),
        ),
        (
            "status code 600",
            b"HTTP/1.1 600 X\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            HeadRefused("status code 600 out of range"),
        ),
        // What stays accepted
        (
            "chunked with an extension and a trailer",
            chunked("2;a=b\r\n{}\r\n0\r\nX-T: 1\r\n\r\n"),
            Good(200, b"{}", true),
        ),
        (
            "Connection: close",
            ok("Content-Length: 2\r\nConnection: close\r\n", "{}"),
            Good(200, b"{}", false),
        ),
        (
            "a body to the end of the connection",
            ok("Connection: close\r\n", "{}"),
            Good(200, b"{}", false),
        ),
        (
            "204 without a body",
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            Good(204, b"", true),
        ),
    ]
}

/// Issue 20 item 2: every framing variant gives its exact outcome, and a refused response's
/// connection is closed, never pooled.
#[test]
fn responses_are_framed_strictly() {
    let mut wrong = Vec::new();
    for (name, bytes, expected) in framing_cases() {
        // A server that closes after sending, for answers that end with the connection.
        let close_after = matches!(expected, Framed::Good(_, _, false));
        let (addr, closed) = if close_after {
            let server = TestServer::start({
                let bytes = bytes.clone();
                let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                move |_, _| Action::Raw(leaked)
            });
            let (_tx, rx) = std::sync::mpsc::channel();
            (server.addr, rx)
        } else {
            raw_server(bytes)
        };
        let origin = http::Origin::parse(&format!("http://{addr}"), None).unwrap();
        let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pool = http::Pool::new(origin, 8, Duration::from_secs(1), opened.clone());
        let req = http::Request {
            method: "GET",
            path: "/v1/key",
            headers: &[],
            body: None,
        };
        let result = pool.exchange(&req, Instant::now() + Duration::from_secs(2), true, 1024);
        let got = match result {
            Ok((resp, lease)) => {
                let body_error = resp.body_error.clone();
                lease.release();
                let pooled = pool.idle_len() == 1;
                match body_error {
                    None => format!(
                        "Good({}, {:?}, {pooled})",
                        resp.status,
                        String::from_utf8_lossy(&resp.body)
                    ),
                    Some(f) => format!("BodyRefused({}, {f:?}) pooled={pooled}", resp.status),
                }
            }
            Err(f) => format!("HeadRefused({f:?})"),
        };
        let fine = match &expected {
            Framed::Good(status, body, pooled) => {
                got == format!(
                    "Good({status}, {:?}, {pooled})",
                    String::from_utf8_lossy(body)
                )
            }
            Framed::HeadRefused(text) => {
                got.starts_with("HeadRefused(Transport(")
                    && got.contains(text)
                    && closed.recv_timeout(Duration::from_secs(3)).is_ok()
            }
            Framed::BodyRefused(status, text) => {
                got.starts_with(&format!("BodyRefused({status}, Transport("))
                    && got.contains(text)
                    && got.ends_with("pooled=false")
                    && closed.recv_timeout(Duration::from_secs(3)).is_ok()
            }
        };
        if !fine {
            wrong.push(format!("{name}: expected {expected:?}, got {got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} variants wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Issue 20 item 2: a response that arrives while the request could not be written whole is
/// not taken as the request's answer (it may be a stray answer that waited on the
/// connection): the exchange fails.
#[test]
fn a_write_error_is_not_hidden_by_a_response() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Answer at once without reading the request, then close with the request unread (the
        // kernel resets the connection): the client's write fails.
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    });
    let origin = http::Origin::parse(&format!("http://{addr}"), None).unwrap();
    let pool = http::Pool::new(
        origin,
        8,
        Duration::from_secs(1),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let body = vec![b'x'; 64 << 20];
    let req = http::Request {
        method: "POST",
        path: "/v1/synchronousSign",
        headers: &[],
        body: Some(&body),
    };
    match pool.exchange(&req, Instant::now() + Duration::from_secs(5), true, 1024) {
        Err(http::Failure::Transport(m)) => assert!(m.contains("sending the request"), "{m}"),
        Ok((resp, _)) => panic!("the answer was taken: {} {:?}", resp.status, resp.body),
        Err(f) => panic!("{f:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Idle connections (issue 20 item 4)

/// A TCP relay in front of `target`. Once `black_hole` is set, the connections it carries
/// stop forwarding in both directions without closing (a NAT or load balancer that forgot
/// them): bytes sent into them vanish. Connections made later are relayed normally.
fn relay(target: SocketAddr) -> (SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let black_hole = Arc::new(AtomicBool::new(false));
    let switch = black_hole.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = std::net::TcpStream::connect(target) else {
                continue;
            };
            // Connections accepted before the switch is set are the ones it black-holes.
            let dropped = Arc::new(AtomicBool::new(false));
            let watch = (switch.clone(), dropped.clone());
            let later = switch.load(Ordering::Relaxed);
            std::thread::spawn(move || {
                if later {
                    return;
                }
                while !watch.0.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                watch.1.store(true, Ordering::Relaxed);
            });
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let dropped = dropped.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                if !dropped.load(Ordering::Relaxed) {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                }
                                // A black hole never closes: keep `to` open.
                                if dropped.load(Ordering::Relaxed) {
                                    std::thread::sleep(Duration::from_secs(10));
                                }
                                return;
                            }
                            Ok(n) => {
                                if !dropped.load(Ordering::Relaxed)
                                    && to.write_all(&buf[..n]).is_err()
                                {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    (addr, black_hole)
}

/// A connection that a NAT dropped without a word while it was idle in the pool is not
/// reused once it is older than `connectionMaxIdleMs`: the sign goes over a new connection
/// and succeeds, instead of vanishing into the dead one and timing out (a timeout a sign may
/// not retry).
#[test]
fn a_black_holed_idle_connection_is_not_reused_after_the_idle_age() {
    let server = TestServer::start(|req, _| match req.path.as_str() {
        "/v1/key" => reply_json(200, json!(["a"])),
        _ => reply_json(200, json!({"signature": "AQI="})),
    });
    let (addr, black_hole) = relay(server.addr);
    let c = client_with(&format!("http://{addr}"), |c| {
        c.pkcs11.connection_max_idle = Duration::from_millis(300);
        c.pkcs11.request_timeout = Duration::from_millis(1500);
    });
    c.list_keys().unwrap();
    black_hole.store(true, std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(c.sign_synchronous(&sign_req()).unwrap(), vec![1, 2]);
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 0], "the sign went over a new connection");
    assert_eq!(c.connections_opened(), 2);
}

/// A pooled connection idle longer than the maximum idle age is closed, not reused; one
/// younger is reused.
#[test]
fn a_connection_older_than_the_idle_age_is_not_reused() {
    let server = TestServer::start(|_, _| reply_json(200, json!(["a"])));
    let c = client_with(&server.url(), |c| {
        c.pkcs11.connection_max_idle = Duration::from_millis(200);
    });
    c.list_keys().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.list_keys().unwrap();
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 0], "past the idle age: a new connection");
    // Within the default age (50 s) the connection is reused.
    let c = client(&server.url());
    c.list_keys().unwrap();
    c.list_keys().unwrap();
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 0, 0, 1]);
}

#[test]
fn key_creation_sends_its_body_and_gives_the_tsb_s_refusal() {
    // `POST /v1/key` is answered 201 with an empty body; a label in use is TSB 608.
    let server = TestServer::start(|req, _| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/key") if req.json()["label"] == "taken" => reply_json(
            400,
            json!({"errorCode": 608, "reason": "res.error.key.already.existing"}),
        ),
        ("POST", "/v1/key") => Action::Reply(201, "text/plain", vec![]),
        _ => spring(404),
    });
    let c = client(&server.url());
    let policy = crate::config::PolicySpec::default();
    let pw = secret("pw1");
    let rsa = NewKey {
        label: "r1",
        id: Some("01"),
        usage: NewKeyUsage::default(),
        key_type: NewKeyType::Rsa(3072),
        password: Some(&pw),
        destroyable: true,
        modifiable: false,
        policy: &policy,
    };
    c.create_key(&rsa).unwrap();
    let ec = NewKey {
        label: "e1",
        id: None,
        key_type: NewKeyType::Ec("1.2.840.10045.3.1.7"),
        password: None,
        ..rsa
    };
    c.create_key(&ec).unwrap();
    let e = c
        .create_key(&NewKey {
            label: "taken",
            ..ec
        })
        .unwrap_err();
    assert_eq!(e.reason(), Some(TsbReason::KeyExists));
    assert_eq!(e.endpoint, "POST /v1/key");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "a refusal is not sent again");
    let rsa_body = reqs[0].json();
    assert_eq!(rsa_body["label"], "r1");
    assert_eq!(rsa_body["id"], "01");
    assert_eq!(rsa_body["algorithm"], "RSA");
    assert_eq!(rsa_body["keySize"], 3072);
    assert!(rsa_body.get("curveOid").is_none());
    assert_eq!(rsa_body["password"], json!(["p", "w", "1"]));
    assert_eq!(rsa_body["attributes"]["sign"], true);
    assert_eq!(rsa_body["attributes"]["destroyable"], true);
    assert_eq!(rsa_body["attributes"]["modifiable"], false);
    let ec_body = reqs[1].json();
    assert_eq!(ec_body["algorithm"], "EC");
    assert_eq!(ec_body["curveOid"], "1.2.840.10045.3.1.7");
    assert!(ec_body.get("keySize").is_none());
    assert!(ec_body.get("password").is_none());
    assert!(ec_body.get("id").is_none());
    assert!(ec_body.get("policy").is_some());
}

/// A connect that gets no answer (a listener whose accept queue is full drops the SYN) ends
/// at connectTimeoutMs as "connect timed out"; a refused one is "connection failed". Both are
/// not sent.
#[test]
fn a_connect_without_an_answer_times_out_and_a_refused_one_fails() {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // The one connection a backlog of 0 queues; the listener never accepts.
    let _queued = std::net::TcpStream::connect(addr).unwrap();
    let c = client_with(&format!("http://{addr}"), |cfg| {
        cfg.pkcs11.connect_timeout = Duration::from_millis(200);
        cfg.pkcs11.retries = 0;
    });
    let e = c.version_info().unwrap_err();
    let TsbErrorKind::NotSent(m) = &e.kind else {
        panic!("{e:?}")
    };
    assert!(m.starts_with("connect timed out: "), "{m}");
    let c = client(&format!("http://127.0.0.1:{}", closed_port()));
    let e = c.version_info().unwrap_err();
    let TsbErrorKind::NotSent(m) = &e.kind else {
        panic!("{e:?}")
    };
    assert!(m.starts_with("connection failed: "), "{m}");
}

/// The system resolver answers a name with its addresses, at the port asked for.
#[test]
fn the_system_resolver_resolves_localhost() {
    use crate::tsb::connect::{Resolve, SystemResolver};
    let addrs = SystemResolver.resolve("localhost", 8443).unwrap();
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8443),
        "{addrs:?}"
    );
}
