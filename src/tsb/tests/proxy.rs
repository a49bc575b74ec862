//! The client through HTTP CONNECT proxies (a hand-rolled proxy that tunnels, refuses, sends
//! garbage or dies at each point), and name lookups bounded by the call's deadline (an injected
//! resolver that does not answer).

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Condvar;

use super::tls_server::{pki, tls_server_with, Pki};
use super::*;
use crate::tsb::connect::{Resolve, MAX_STRAY_LOOKUPS};
use crate::tsb::proxy::ProxyEnv;

/// What the fake proxy does with a CONNECT.
#[derive(Clone, Copy)]
enum Act {
    /// Answers 200 and relays bytes both ways to 127.0.0.1 at the requested port.
    Tunnel,
    /// Sends these bytes and relays afterwards (e.g. a 200 with extra bytes).
    TunnelAfter(&'static [u8]),
    /// Sends these bytes, then closes.
    Answer(&'static [u8]),
    /// Answers 200, then closes as soon as the client sends anything.
    CloseAfter200,
    /// Reads the CONNECT and never answers (for 3 s).
    Silent,
    /// Reads the CONNECT and resets the connection.
    Reset,
}

struct FakeProxy {
    port: u16,
    /// Each CONNECT request head.
    heads: Arc<Mutex<Vec<String>>>,
    /// The client side of each tunnel (to cut them).
    tunnels: Arc<Mutex<Vec<TcpStream>>>,
}

impl FakeProxy {
    fn start(act: Act) -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let (h, t) = (heads.clone(), tunnels.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (h, t) = (h.clone(), t.clone());
                std::thread::spawn(move || serve_connect(stream, act, &h, &t));
            }
        });
        FakeProxy {
            port,
            heads,
            tunnels,
        }
    }

    fn url(&self, userinfo: &str) -> String {
        format!("http://{userinfo}127.0.0.1:{}", self.port)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Cuts every open tunnel (the proxy dies under its connections).
    fn cut_tunnels(&self) {
        for s in self.tunnels.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn serve_connect(
    mut client: TcpStream,
    act: Act,
    heads: &Mutex<Vec<String>>,
    tunnels: &Mutex<Vec<TcpStream>>,
) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let port: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(0);
    heads.lock().unwrap().push(head);
    let relay = |client: TcpStream, first: &[u8]| {
        let mut client = client;
        let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
            return;
        };
        if client.write_all(first).is_err() {
            return;
        }
        tunnels.lock().unwrap().push(client.try_clone().unwrap());
        let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut s2);
            let _ = s2.shutdown(Shutdown::Both);
        });
        let (mut s, mut c) = (server, client);
        let _ = std::io::copy(&mut s, &mut c);
        let _ = c.shutdown(Shutdown::Both);
        let _ = up.join();
    };
    match act {
        Act::Tunnel => relay(client, b"HTTP/1.1 200 Connection established\r\n\r\n"),
        Act::TunnelAfter(bytes) => relay(client, bytes),
        Act::Answer(bytes) => {
            let _ = client.write_all(bytes);
        }
        Act::CloseAfter200 => {
            let _ = client.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            let _ = client.read(&mut [0u8; 16]);
        }
        Act::Silent => std::thread::sleep(Duration::from_secs(3)),
        Act::Reset => {
            // A linger of zero: closing sends RST.
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
        }
    }
}

/// A TLS TSB (certificate for `localhost`) answering signs and versionInfo.
fn tsb(pki: &Pki) -> TestServer {
    tls_server_with(
        pki,
        false,
        Arc::new(|req: &Recorded, _| match req.path.as_str() {
            "/v1/versionInfo" => reply_json(200, json!({"Version": "through"})),
            _ => Action::Reply(200, "application/json", signature_body(&payload_of(req))),
        }),
    )
}

/// A client of `https://localhost:<port>` of `server` through `proxy` (pkcs11.proxy), with an
/// environment of its own (never the test process's).
fn proxied_client(
    server: &TestServer,
    pki: &Pki,
    proxy: &str,
    f: impl FnOnce(&mut Config),
) -> TsbClient {
    let mut c = Config::for_url(&format!("https://localhost:{}", server.addr.port()));
    c.ca_path = Some(pki.ca_pem.clone());
    c.pkcs11.connect_timeout = Duration::from_millis(1000);
    c.pkcs11.request_timeout = Duration::from_millis(3000);
    c.pkcs11.proxy = crate::config::ProxySetting::Url(secret(proxy));
    f(&mut c);
    let net = NetOptions {
        env: ProxyEnv::default(),
        threads: true,
        resolver: Arc::new(crate::tsb::connect::SystemResolver),
    };
    let mut client = TsbClient::with_net(&c, net).unwrap();
    client.set_backoff_base(Duration::from_millis(10));
    client
}

#[test]
fn signs_through_a_proxy_over_one_kept_tunnel_with_tls_to_the_tsb_name() {
    let pki = pki();
    let server = tsb(&pki);
    let proxy = FakeProxy::start(Act::Tunnel);
    let c = proxied_client(&server, &pki, &proxy.url("alice:s%3Acret@"), |_| {});
    for data in [&b"one"[..], b"two", b"three"] {
        assert_eq!(c.sign_synchronous(&sign_req_for(data)).unwrap(), data);
    }
    // One CONNECT, to the TSB's name (not an address the module resolved), with the
    // credentials only in Proxy-Authorization; the three signs on the one tunnel.
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let port = server.addr.port();
    assert!(
        heads[0].starts_with(&format!(
            "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n"
        )),
        "{}",
        heads[0]
    );
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:s:cret");
    assert!(heads[0].contains(&format!("\r\nProxy-Authorization: Basic {basic}\r\n")));
    assert_eq!(c.connections_opened(), 1);
    let on: Vec<usize> = server.requests().iter().map(|r| r.on_connection).collect();
    assert_eq!(on, [0, 1, 2]);
    // The TSB never sees the proxy's credentials.
    for r in server.requests() {
        assert!(r.header("proxy-authorization").is_none());
    }
    // The route, as logs and the doctor show it: no password.
    let routes = c.node_routes();
    let shown = routes[0].1.to_string();
    assert!(
        shown.starts_with(&format!(
            "through the HTTP proxy http://127.0.0.1:{}",
            proxy.port
        )),
        "{shown}"
    );
    assert!(
        !shown.contains("cret") && !format!("{:?}", routes[0].1).contains("cret"),
        "{shown}"
    );
}

/// A proxy that refuses or misbehaves: one `NotSent` error naming the proxy (never its
/// credentials) and what happened; nothing reaches the TSB; the node counts as failed.
#[test]
fn proxy_refusals_and_garbage_are_one_clear_error_and_nothing_reaches_the_tsb() {
    let pki = pki();
    let server = tsb(&pki);
    let long_head = [
        &b"HTTP/1.1 200 OK\r\n"[..],
        &b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(400),
    ]
    .concat();
    let cases: [(Act, &str); 12] = [
        // No head is read beyond 16 KiB.
        (
            Act::Answer(Vec::leak(long_head)),
            "answer to CONNECT longer than 16384 bytes",
        ),
        (
            Act::Reset,
            "reading the answer to CONNECT: ",
        ),
        (
            Act::Answer(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n"),
            "refused CONNECT to localhost:PORT: HTTP 407 (proxy authentication failed",
        ),
        (
            Act::Answer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
            "HTTP 403 (forbidden by the proxy",
        ),
        (
            Act::Answer(b"HTTP/1.0 502 Bad Gateway\r\n\r\n<html>evil\x1b[31m</html>"),
            "HTTP 502 (the proxy could not reach the TSB)",
        ),
        (
            Act::Answer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
            "the answer to CONNECT localhost:PORT is not HTTP",
        ),
        // A 200 of another protocol is no HTTP/1.x answer, and neither is an odd status.
        (
            Act::TunnelAfter(b"HTTP/2 200 OK\r\n\r\n"),
            "the answer to CONNECT localhost:PORT is not HTTP",
        ),
        (
            Act::TunnelAfter(b"HTTP/1.1 2000 OK\r\n\r\n"),
            "the answer to CONNECT localhost:PORT is not HTTP",
        ),
        (
            Act::Answer(b"HTTP/1.1 200 OK\r\n"),
            "closed the connection before answering CONNECT localhost:PORT",
        ),
        (
            Act::TunnelAfter(b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x03\x00\x02\x02\x28"),
            "sent 7 bytes after its 200 answer to CONNECT localhost:PORT",
        ),
        (Act::CloseAfter200, "TLS"),
        // Bounded by connectTimeoutMs (300 ms here), not by the 3 s requestTimeoutMs.
        (Act::Silent, "no answer to CONNECT localhost:PORT in time"),
    ];
    for (act, why) in cases {
        let proxy = FakeProxy::start(act);
        let c = proxied_client(&server, &pki, &proxy.url("alice:hunter2@"), |cfg| {
            cfg.pkcs11.retries = 0;
            cfg.pkcs11.connect_timeout = Duration::from_millis(300);
        });
        let e = c.sign_synchronous(&sign_req_for(b"x")).unwrap_err();
        let text = e.to_string();
        let why = why.replace("PORT", &server.addr.port().to_string());
        assert!(matches!(e.kind, TsbErrorKind::NotSent(_)), "{text}");
        assert!(text.contains(&why), "{text}\n  expected: {why}");
        if !matches!(act, Act::CloseAfter200) {
            assert!(
                text.contains(&format!("proxy http://127.0.0.1:{}", proxy.port)),
                "{text}"
            );
        }
        assert!(
            !text.contains("hunter2") && !text.contains("alice") && !text.contains('\x1b'),
            "{text}"
        );
        assert_eq!(proxy.heads().len(), 1);
    }
    assert_eq!(server.count(), 0, "nothing reached the TSB");
}

/// The proxy dies under a kept tunnel: the next sign finds the kept-alive connection closed
/// before any answer (provably not processed) and is sent again on a new tunnel; a proxy that
/// dies while the TSB works on a request gives an error that says the request may have arrived
/// (not resent).
#[test]
fn a_proxy_dying_under_its_tunnels() {
    let pki = pki();
    let server = tls_server_with(
        &pki,
        false,
        Arc::new(|req: &Recorded, _| match req.path.as_str() {
            "/v1/versionInfo" => Action::Hang(Duration::from_millis(1500)),
            _ => Action::Reply(200, "application/json", signature_body(&payload_of(req))),
        }),
    );
    let proxy = FakeProxy::start(Act::Tunnel);
    let c = proxied_client(&server, &pki, &proxy.url(""), |cfg| cfg.pkcs11.retries = 0);
    assert_eq!(c.sign_synchronous(&sign_req_for(b"a")).unwrap(), b"a");
    proxy.cut_tunnels();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(c.sign_synchronous(&sign_req_for(b"b")).unwrap(), b"b");
    assert_eq!(proxy.heads().len(), 2, "a new tunnel for the resend");
    // Mid-exchange: the request reached the TSB, which has not answered when the tunnel dies.
    let cut = {
        let tunnels = proxy.tunnels.clone();
        let requests = server.requests.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                if requests
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|r| r.path == "/v1/versionInfo")
                {
                    for s in tunnels.lock().unwrap().drain(..) {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let e = c.version_info().unwrap_err();
    cut.join().unwrap();
    assert!(matches!(e.kind, TsbErrorKind::Transport(_)), "{e}");
    let asked = server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/versionInfo")
        .count();
    assert_eq!(
        asked, 1,
        "not resent on a closed tunnel it may have reached the TSB over"
    );
}

/// A resolver that answers only when released.
#[derive(Debug, Default)]
struct StuckResolver {
    calls: AtomicUsize,
    released: Mutex<bool>,
    wake: Condvar,
    answered: AtomicBool,
}

impl Resolve for StuckResolver {
    fn resolve(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut r = self.released.lock().unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        while !*r && Instant::now() < until {
            r = self
                .wake
                .wait_timeout(r, Duration::from_millis(100))
                .unwrap()
                .0;
        }
        self.answered.store(true, Ordering::SeqCst);
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }
}

/// A client of `c` (no proxy) whose name lookups go to `resolver`.
fn resolving_with(c: &Config, resolver: &Arc<StuckResolver>) -> TsbClient {
    let net = NetOptions {
        env: ProxyEnv::default(),
        threads: true,
        resolver: resolver.clone(),
    };
    TsbClient::with_net(c, net).unwrap()
}

/// A name lookup that never answers ends with the call's deadline (a sign returns its
/// not-sent error while the resolver is still stuck), and stuck lookups are bounded: once
/// `MAX_STRAY_LOOKUPS` are pending, further calls fail at once without starting another.
#[test]
fn a_name_lookup_that_never_answers_is_bounded_by_the_deadline() {
    let resolver = Arc::new(StuckResolver::default());
    let mut c = Config::for_url("https://tsb.example:8443");
    c.pkcs11.connect_timeout = Duration::from_millis(5000);
    c.pkcs11.request_timeout = Duration::from_millis(300);
    c.pkcs11.retries = 0;
    let client = resolving_with(&c, &resolver);
    let e = client.sign_synchronous(&sign_req()).unwrap_err();
    assert!(
        !resolver.answered.load(Ordering::SeqCst),
        "the sign returned only once the resolver answered: {e}"
    );
    assert!(matches!(e.kind, TsbErrorKind::NotSent(_)), "{e}");
    assert!(
        e.to_string()
            .contains("DNS lookup of tsb.example timed out"),
        "{e}"
    );
    for _ in 1..MAX_STRAY_LOOKUPS + 3 {
        let e = client.version_info().unwrap_err();
        assert!(matches!(e.kind, TsbErrorKind::NotSent(_)), "{e}");
    }
    let e = client.version_info().unwrap_err();
    assert!(
        e.to_string()
            .contains("earlier lookups still have no answer"),
        "{e}"
    );
    assert_eq!(resolver.calls.load(Ordering::SeqCst), MAX_STRAY_LOOKUPS);
    assert_eq!(client.stray_lookups(), MAX_STRAY_LOOKUPS);
    // Released, the stray lookups end and are no longer counted.
    *resolver.released.lock().unwrap() = true;
    resolver.wake.notify_all();
    for _ in 0..200 {
        if client.stray_lookups() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(client.stray_lookups(), 0);
}

/// `serverCertSha256` holds inside the tunnel: the TSB's certificate, not the proxy's, is
/// pinned.
#[test]
fn the_certificate_pin_holds_through_a_proxy() {
    use sha2::{Digest, Sha256};
    let pki = pki();
    let server = tsb(&pki);
    let proxy = FakeProxy::start(Act::Tunnel);
    let right: [u8; 32] = Sha256::digest(&pki.server_der).into();
    let c = proxied_client(&server, &pki, &proxy.url(""), |cfg| {
        cfg.pkcs11.server_cert_sha256 = Some(right)
    });
    assert_eq!(
        c.sign_synchronous(&sign_req_for(b"pinned")).unwrap(),
        b"pinned"
    );
    let c = proxied_client(&server, &pki, &proxy.url(""), |cfg| {
        cfg.pkcs11.server_cert_sha256 = Some([0xab; 32]);
        cfg.pkcs11.retries = 0;
    });
    let e = c.sign_synchronous(&sign_req_for(b"x")).unwrap_err();
    assert!(
        e.to_string()
            .contains("does not match pkcs11.serverCertSha256"),
        "{e}"
    );
    assert_eq!(server.count(), 1);
}

/// A node the proxy cannot reach (its 502) is a node failure like a refused connection: the
/// sign moves on to the next node, through the same proxy, and succeeds.
#[test]
fn failover_through_a_proxy_that_cannot_reach_a_node() {
    let pki = pki();
    let server = tsb(&pki);
    let proxy = FakeProxy::start(Act::Tunnel);
    let dead = closed_port();
    let c = proxied_client(&server, &pki, &proxy.url(""), |cfg| {
        let live = cfg.rest_apis[0].clone();
        cfg.rest_apis = vec![format!("https://localhost:{dead}"), live];
        cfg.pkcs11.retries = 0;
    });
    assert_eq!(
        c.sign_synchronous(&sign_req_for(b"moved")).unwrap(),
        b"moved"
    );
    let targets: Vec<String> = proxy
        .heads()
        .iter()
        .map(|h| h.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    let live = format!("localhost:{}", server.addr.port());
    assert_eq!(targets, [format!("localhost:{dead}"), live]);
    assert_eq!(server.count(), 1);
}

/// `tsb-pkcs11 doctor`'s probe opens the tunnel as the module does and says why the proxy
/// refused it.
#[test]
fn the_probe_s_tunnel_step_gives_the_proxy_s_refusal() {
    let pki = pki();
    let server = tsb(&pki);
    let proxy = FakeProxy::start(Act::Answer(b"HTTP/1.1 403 Forbidden\r\n\r\n"));
    let c = proxied_client(&server, &pki, &proxy.url(""), |_| {});
    let probe = c.probe(0);
    assert!(probe.is_tls(), "the TSB behind the proxy is https://");
    let deadline = Instant::now() + Duration::from_secs(2);
    let addrs = probe.resolve(deadline).unwrap();
    let mut connected = probe.connect(&addrs, deadline).unwrap();
    let e = probe.tunnel(&mut connected, deadline).unwrap_err();
    assert!(
        e.contains("refused CONNECT") && e.contains("HTTP 403"),
        "{e}"
    );
    assert_eq!(server.count(), 0);
}

/// An approval request (filed at most once, so its first node gets the whole deadline) whose
/// first node's name lookup never answers: the error names that node's failure and the other
/// node as not tried, and no log line claims that every node failed.
#[test]
fn an_approval_request_stuck_on_its_first_node_names_the_other_as_not_tried() {
    let resolver = Arc::new(StuckResolver::default());
    let urls = ["https://tsb-a.example:8443", "https://tsb-b.example:8443"];
    let mut c = Config::for_url(urls[0]);
    c.rest_apis = urls.iter().map(|u| u.to_string()).collect();
    c.pkcs11.request_timeout = Duration::from_millis(300);
    c.pkcs11.retries = 0;
    let client = resolving_with(&c, &resolver);
    let captured = log_capture::install();
    let e = client.sign_asynchronous(&sign_req()).unwrap_err();
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 1, "{e}");
    let m = e.to_string();
    assert!(
        m.contains("every TSB node failed within requestTimeoutMs (300 ms): "),
        "{m}"
    );
    assert!(m.contains("DNS lookup of tsb-"), "{m}");
    assert!(
        m.contains(".example:8443: not tried (requestTimeoutMs used up)"),
        "{m}"
    );
    if captured {
        let hosts = ["tsb-a.example".to_string(), "tsb-b.example".to_string()];
        assert_eq!(every_node_failed_lines(&hosts), Vec::<String>::new());
    }
    *resolver.released.lock().unwrap() = true;
    resolver.wake.notify_all();
}
