//! A small HTTP/1.1 client for one TSB origin: kept-alive connections (plain TCP or rustls,
//! TLS sessions resumed), one write per request, every I/O bounded by the call's deadline, and
//! an exact account of what reached the wire — whether the connection was reused, and whether
//! any byte of a response arrived. That account is what lets a synchronous sign that a closing
//! kept-alive connection swallowed be sent again (see `client.rs`, `Retry::Stateless`).
//!
//! No threads, no global state: a pool belongs to its `TsbClient`.

use std::io::{self, BufReader, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls::pki_types::ServerName;

use super::connect::{self, Dns};
use super::endpoint::Endpoint;
use super::framing::{read_response, ReadFailure};
use super::proxy::Route;
use super::tls;
pub(crate) use super::wire::{is_timeout, Failure, Response};

/// Where requests go: the node's [`Endpoint`], how it is reached ([`Route`]), the TLS settings
/// (the TSB's own name for SNI and verification, through a proxy too) and the resolver.
#[derive(Debug)]
pub(crate) struct Origin {
    endpoint: Endpoint,
    route: Route,
    dns: Arc<Dns>,
    /// The `Host` header (the URL's authority).
    authority: String,
    /// The base URL's path (no trailing `/`), put before each request path.
    prefix: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl Origin {
    /// Parses a base URL as produced by `config::normalise_url` (reached directly, the system
    /// resolver on a thread; see [`Origin::with_route`]).
    pub(crate) fn parse(
        base: &str,
        tls_config: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Origin, String> {
        let endpoint = Endpoint::parse(base)?;
        let tls = match tls_config {
            Some(cfg) => {
                let host = &endpoint.host;
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| format!("host \"{host}\" is not a valid TLS server name: {e}"))?;
                Some((cfg, name))
            }
            None => None,
        };
        Ok(Origin {
            authority: endpoint.authority(),
            prefix: endpoint.base_path.clone(),
            endpoint,
            route: Route::Direct("no proxy set"),
            dns: Arc::new(Dns::system(true)),
            tls,
        })
    }

    /// The same origin reached through `route`, names resolved by `dns`.
    pub(crate) fn with_route(self, route: Route, dns: Arc<Dns>) -> Origin {
        Origin { route, dns, ..self }
    }

    /// How the node is reached.
    pub(crate) fn route(&self) -> &Route {
        &self.route
    }
}

impl Origin {
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The node's endpoint (the TSB itself, not a proxy).
    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The resolver new connections use.
    pub(super) fn dns(&self) -> &Dns {
        &self.dns
    }
}

/// One request. Header values are checked by the caller (no CR/LF).
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// The path below the base URL, e.g. `/v1/key`.
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
}

/// The transport under TLS: a TCP stream whose every read and write is bounded by a deadline.
#[derive(Debug)]
struct Sock {
    tcp: TcpStream,
    deadline: Instant,
    /// The read and write timeouts set on the socket (`None`: not set yet). They outlive an
    /// exchange, so a kept-alive connection usually needs no system call to set them again.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Sock {
    fn new(tcp: TcpStream, deadline: Instant) -> Sock {
        Sock {
            tcp,
            deadline,
            read_timeout: None,
            write_timeout: None,
        }
    }
}

/// The socket timeout for one blocking call with `left` until the deadline: `None` when the
/// one already set (`current`) ends before the deadline, else the new one to set — half of
/// what is left (so that later calls, of later exchanges too, can keep it), or all of it when
/// little is left. A blocking call thus never waits past the deadline; one that times out
/// before the deadline is made again.
fn timeout_to_set(current: &mut Option<Duration>, left: Duration) -> Option<Duration> {
    match *current {
        Some(t) if t <= left => None,
        _ => {
            let t = if left > Duration::from_millis(20) {
                left / 2
            } else {
                left
            };
            *current = Some(t);
            Some(t)
        }
    }
}

impl Sock {
    fn remaining(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "requestTimeoutMs used up",
            ))
        } else {
            Ok(left)
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.remaining()?;
            if let Some(t) = timeout_to_set(&mut self.read_timeout, left) {
                self.tcp.set_read_timeout(Some(t))?;
            }
            match self.tcp.read(buf) {
                Err(e) if is_timeout(&e) && Instant::now() < self.deadline => continue,
                r => return r,
            }
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let left = self.remaining()?;
            if let Some(t) = timeout_to_set(&mut self.write_timeout, left) {
                self.tcp.set_write_timeout(Some(t))?;
            }
            match self.tcp.write(buf) {
                Err(e) if is_timeout(&e) && Instant::now() < self.deadline => continue,
                r => return r,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

#[derive(Debug)]
enum Stream {
    Plain(Sock),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Sock>>),
}

impl Stream {
    fn sock(&mut self) -> &mut Sock {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.sock,
        }
    }
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => &s.tcp,
            Stream::Tls(t) => &t.sock.tcp,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// One connection: the stream behind a read buffer.
#[derive(Debug)]
pub(super) struct Conn {
    io: BufReader<Stream>,
    /// The SHA-256 of the last request sent on this connection (method, path, body) and of its
    /// answer's body, so that the same answer to a different request can be told (see
    /// [`Lease::repeats_answer`]).
    last: Option<([u8; 32], [u8; 32])>,
    /// When the connection went back to the pool.
    idle_since: Instant,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Conn {
    /// Whether bytes of the server are waiting after a complete response: in the read buffer,
    /// in the TLS layer (decrypted and not read yet), or in the socket (plain TCP). On a
    /// connection without pipelining nothing may come before the next request: such bytes mean
    /// the server (or something on the path) sent more than one answer, and the stream is out of
    /// step with the requests. (On TLS, records waiting in the socket may be TLS messages, such
    /// as a session ticket: they keep the connection out of the pool, see [`Lease::release`], but
    /// do not make the answer suspect.)
    fn unsolicited_bytes(&mut self) -> bool {
        if !self.io.buffer().is_empty() {
            return true;
        }
        match self.io.get_mut() {
            Stream::Plain(s) => matches!(peek(&s.tcp), Peek::Data),
            Stream::Tls(t) => t
                .conn
                .process_new_packets()
                .map_or(true, |state| state.plaintext_bytes_to_read() > 0),
        }
    }

    /// The TLS session, when the connection is TLS.
    pub(super) fn tls(&self) -> Option<&rustls::ClientConnection> {
        match self.io.get_ref() {
            Stream::Tls(t) => Some(&t.conn),
            Stream::Plain(_) => None,
        }
    }

    /// Whether an idle connection is still usable: nothing buffered, and the server has
    /// neither closed it nor sent anything (a non-blocking peek would block). One system call.
    fn idle_and_open(&self) -> bool {
        self.io.buffer().is_empty() && matches!(peek(self.io.get_ref().tcp()), Peek::Nothing)
    }
}

/// What a non-blocking peek at a socket finds.
enum Peek {
    /// Nothing to read, and the connection is open.
    Nothing,
    /// Bytes are waiting.
    Data,
    /// The peer closed the connection, or the socket failed.
    Closed,
}

fn peek(tcp: &TcpStream) -> Peek {
    let tcp = socket2::SockRef::from(tcp);
    let mut b = [MaybeUninit::<u8>::uninit(); 1];
    match tcp.recv_with_flags(&mut b, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Peek::Nothing,
        Ok(n) if n > 0 => Peek::Data,
        _ => Peek::Closed,
    }
}

/// The connection an exchange used, lent to the caller with the response. The pool takes it
/// back only through [`Lease::release`], which the caller calls once it has accepted the answer
/// (a body that parsed, a signature that passed its checks); a lease dropped without it closes
/// the connection. So a connection whose answer was refused — which may be another request's
/// answer that arrived late — never serves a second request, and one TSB answer never serves two.
#[derive(Debug)]
pub(crate) struct Lease<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
    /// The response allows keeping the connection (HTTP/1.1 without `Connection: close`, body
    /// framed and read whole) and the exchange asked for it.
    keep: bool,
    reused: bool,
    /// Bytes were waiting after the response (see [`Conn::unsolicited_bytes`]).
    unsolicited: bool,
    /// The body is the one this connection carried for the previous, different request.
    repeated: bool,
}

impl Lease<'_> {
    /// Whether the request went over a kept-alive connection that had served a request before.
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Whether the server sent bytes after the complete response: on a reused connection the
    /// answer just read may itself be a late answer to an earlier request.
    pub(crate) fn unsolicited_bytes(&self) -> bool {
        self.unsolicited
    }

    /// Whether the answer's body is byte for byte the previous answer on this connection, to a
    /// request that was not the same (method, path or body) (a deterministic signature of the same data repeats
    /// legitimately: the same request is not flagged).
    pub(crate) fn repeats_answer(&self) -> bool {
        self.repeated
    }

    /// Gives the connection back to the pool: only when the response allows it, nothing came
    /// after it, and the connection is still open. Otherwise it is closed.
    pub(crate) fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.keep && !self.unsolicited && conn.idle_and_open() {
            conn.idle_since = Instant::now();
            let mut idle = self.pool.idle.lock();
            // The oldest first: drop those past the idle age (closed outside the lock).
            let expired = idle
                .iter()
                .take_while(|c| c.idle_since.elapsed() > self.pool.max_idle_age)
                .count();
            let expired: Vec<Conn> = idle.drain(..expired).collect();
            if idle.len() < self.pool.max_idle {
                idle.push(conn);
            }
            drop(idle);
            drop(expired);
        }
    }
}

/// The kept-alive connections to one origin.
#[derive(Debug)]
pub(crate) struct Pool {
    origin: Origin,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
    /// A connection idle longer than this is closed, never reused (`connectionMaxIdleMs`).
    max_idle_age: Duration,
    connect_timeout: Duration,
    user_agent: &'static str,
    opened: Arc<AtomicU64>,
}

impl Pool {
    pub(crate) fn new(
        origin: Origin,
        max_idle: usize,
        connect_timeout: Duration,
        opened: Arc<AtomicU64>,
    ) -> Pool {
        Pool {
            origin,
            idle: Mutex::new(Vec::new()),
            max_idle,
            max_idle_age: super::idle::DEFAULT_MAX_IDLE_AGE,
            connect_timeout,
            user_agent: concat!("tsb-pkcs11/", env!("CARGO_PKG_VERSION")),
            opened,
        }
    }

    /// The pool with another maximum idle age (`connectionMaxIdleMs`; 50 s by default).
    pub(crate) fn with_max_idle_age(mut self, age: Duration) -> Pool {
        self.max_idle_age = age;
        self
    }

    /// Sends `req` and reads the response, all before `deadline`. With `reuse`, an idle
    /// kept-alive connection is used when there is one, and the connection may be kept
    /// afterwards: it goes back to the pool only when the caller releases the [`Lease`] returned
    /// with the response (after accepting the answer). Without `reuse`, the request goes on a
    /// new connection that is closed afterwards.
    pub(crate) fn exchange(
        &self,
        req: &Request<'_>,
        deadline: Instant,
        reuse: bool,
        max_body: usize,
    ) -> Result<(Response, Lease<'_>), Failure> {
        let pooled = if reuse { self.take_idle() } else { None };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect(deadline)?,
        };
        conn.io.get_mut().sock().deadline = deadline;
        let head = self.request_bytes(req, reuse);
        let written = write_request(conn.io.get_mut(), &head, req.body);
        let response = read_response(&mut conn.io, max_body);
        let (resp, keep) = outcome(written, response, reused)?;
        let keep = keep && reuse && resp.body_error.is_none() && !resp.truncated;
        // Bytes after a response whose end the framing told (a body read to the end of the
        // connection has nothing after it).
        let unsolicited = keep && conn.unsolicited_bytes();
        // What the request asks, not how (credentials in headers may differ between two sends
        // of the same request).
        let request = sha256(&[
            req.method.as_bytes(),
            b" ",
            req.path.as_bytes(),
            b"\n",
            req.body.unwrap_or_default(),
        ]);
        let answer = sha256(&[&resp.body]);
        let repeated = reused && matches!(conn.last, Some((q, a)) if a == answer && q != request);
        conn.last = Some((request, answer));
        let lease = Lease {
            pool: self,
            conn: Some(conn),
            keep,
            reused,
            unsolicited,
            repeated,
        };
        Ok((resp, lease))
    }

    /// How the origin is reached.
    #[cfg(test)]
    pub(crate) fn route(&self) -> &Route {
        self.origin.route()
    }

    /// Name lookups still running after their callers gave up.
    #[cfg(test)]
    pub(crate) fn stray_lookups(&self) -> usize {
        self.origin.dns.stray()
    }

    /// The number of idle connections kept.
    #[cfg(test)]
    pub(crate) fn idle_len(&self) -> usize {
        self.idle.lock().len()
    }

    /// The newest idle connection that is still open and not idle longer than the maximum idle
    /// age (older ones the server may have closed, or a NAT or load balancer dropped without a
    /// word, are closed).
    fn take_idle(&self) -> Option<Conn> {
        loop {
            let mut idle = self.idle.lock();
            let conn = idle.pop()?;
            if conn.idle_since.elapsed() > self.max_idle_age {
                // The newest is too old: so are all the others.
                let all = std::mem::take(&mut *idle);
                drop(idle);
                drop(all);
                return None;
            }
            drop(idle);
            if conn.idle_and_open() {
                return Some(conn);
            }
        }
    }

    /// A new connection: DNS, TCP and the proxy tunnel (`connect.rs`), then TLS ([`open`]).
    /// The steps are free functions so that `tsb-pkcs11 doctor` checks each the way the module
    /// makes it (`probe.rs`).
    fn connect(&self, deadline: Instant) -> Result<Conn, Failure> {
        let o = &self.origin;
        let tcp = connect::open(
            &o.endpoint,
            &o.route,
            &o.dns,
            self.connect_timeout,
            deadline,
            &self.opened,
        )?;
        open(o, tcp, deadline).map_err(|e| {
            let inner = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .map(tls::describe_tls_error);
            Failure::NotSent(match inner {
                Some(d) => d,
                None if is_timeout(&e) => format!("TLS handshake timed out: {e}"),
                None => format!("TLS handshake failed: {e}"),
            })
        })
    }

    /// Sends `req` over `conn` (a new connection of [`open`], never pooled: the request asks
    /// the server to close it) and reads the response. A failure is the `io::Error` as it came
    /// (a TLS alert inside it), for `tsb-pkcs11 doctor` to explain.
    pub(super) fn send_once(&self, mut conn: Conn, req: &Request<'_>) -> io::Result<Response> {
        let head = self.request_bytes(req, false);
        write_request(conn.io.get_mut(), &head, req.body)?;
        // The probe uses the status only: no byte of the body is kept.
        read_response(&mut conn.io, 0)
            .map(|(resp, _)| resp)
            .map_err(|f| f.error)
    }

    /// The origin this pool connects to.
    pub(super) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// `connectTimeoutMs` (at most `requestTimeoutMs`).
    pub(super) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The request line and headers, in one buffer with room for a small body.
    fn request_bytes(&self, req: &Request<'_>, keep_alive: bool) -> Vec<u8> {
        let body_len = req.body.map_or(0, <[u8]>::len);
        let mut h = Vec::with_capacity(256 + if body_len <= 16 * 1024 { body_len } else { 0 });
        let mut put = |parts: &[&[u8]]| parts.iter().for_each(|p| h.extend_from_slice(p));
        put(&[
            req.method.as_bytes(),
            b" ",
            self.origin.prefix.as_bytes(),
            req.path.as_bytes(),
            b" HTTP/1.1\r\nHost: ",
            self.origin.authority.as_bytes(),
            b"\r\nUser-Agent: ",
            self.user_agent.as_bytes(),
            b"\r\nAccept: application/json\r\n",
        ]);
        for (name, value) in req.headers {
            put(&[name.as_bytes(), b": ", value.as_bytes(), b"\r\n"]);
        }
        if !keep_alive {
            put(&[b"Connection: close\r\n"]);
        }
        if req.body.is_some() || req.method == "POST" || req.method == "PUT" {
            let n = body_len.to_string();
            put(&[b"Content-Length: ", n.as_bytes(), b"\r\n"]);
        }
        put(&[b"\r\n"]);
        if let Some(b) = req.body {
            if body_len <= 16 * 1024 {
                h.extend_from_slice(b);
            }
        }
        h
    }
}

/// The connection over `tcp` to `origin`: plain, or after a complete TLS handshake (every read
/// and write bounded by the deadline). A TLS failure is an `io::Error` around the
/// `rustls::Error`.
pub(super) fn open(origin: &Origin, tcp: TcpStream, deadline: Instant) -> io::Result<Conn> {
    let mut sock = Sock::new(tcp, deadline);
    let stream = match &origin.tls {
        None => Stream::Plain(sock),
        Some((cfg, name)) => {
            let mut tls = rustls::ClientConnection::new(cfg.clone(), name.clone())
                .map_err(io::Error::other)?;
            while tls.is_handshaking() {
                tls.complete_io(&mut sock)?;
            }
            Stream::Tls(Box::new(rustls::StreamOwned::new(tls, sock)))
        }
    };
    Ok(Conn {
        io: BufReader::with_capacity(16 * 1024, stream),
        last: None,
        idle_since: Instant::now(),
    })
}

/// Writes the head (with a small body in it) or the head and then a large body.
fn write_request(s: &mut Stream, head: &[u8], body: Option<&[u8]>) -> io::Result<()> {
    s.write_all(head)?;
    if let Some(b) = body.filter(|b| b.len() > 16 * 1024) {
        s.write_all(b)?;
    }
    s.flush()
}

/// What one exchange gives, from the result of writing the request and of reading the
/// response. A write error is never hidden by a response: an answer to a request that was not
/// sent whole may be a stray answer that was waiting on the connection, or the server's
/// answer to a part of the request. `Stale` (the request may be sent again) only when the
/// connection was reused and not one byte of a response arrived.
fn outcome(
    written: io::Result<()>,
    response: Result<(Response, bool), ReadFailure>,
    reused: bool,
) -> Result<(Response, bool), Failure> {
    match (written, response) {
        (Ok(()), Ok(r)) => Ok(r),
        (Err(we), response) => {
            let seen = match &response {
                Ok(_) => 1,
                Err(f) => f.seen,
            };
            Err(if is_timeout(&we) {
                Failure::Timeout(format!("sending the request: {we}"))
            } else if seen == 0 && reused {
                // Nothing came back on a connection we could not write to.
                Failure::Stale(format!("sending the request: {we}"))
            } else if seen == 0 {
                Failure::Transport(format!("sending the request: {we}"))
            } else {
                Failure::Transport(format!(
                    "sending the request: {we} (the server answered before the request was sent whole)"
                ))
            })
        }
        (Ok(()), Err(ReadFailure { seen, error })) => {
            let tls_error = error
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .map(tls::describe_tls_error);
            Err(if is_timeout(&error) {
                Failure::Timeout(format!("waiting for the response: {error}"))
            } else if let Some(d) = tls_error {
                // E.g. the server refusing the client certificate after the handshake
                // (TLS 1.3).
                Failure::Transport(d)
            } else if seen == 0 && reused && closed(&error) {
                Failure::Stale(describe_read(&error))
            } else if seen == 0 || error.kind() == io::ErrorKind::UnexpectedEof {
                Failure::Transport(
                    "the server closed the connection without a complete response".into(),
                )
            } else if error.kind() == io::ErrorKind::InvalidData {
                Failure::Transport(format!("malformed HTTP response: {error}"))
            } else {
                Failure::Transport(describe_read(&error))
            })
        }
    }
}

/// Whether a read failure means the connection was closed or reset.
fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn describe_read(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => tls::describe_tls_error(t),
        None => format!("reading the response: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_timeouts_never_reach_past_the_deadline() {
        let ms = Duration::from_millis;
        // Nothing set yet: half of what is left.
        let mut t = None;
        assert_eq!(timeout_to_set(&mut t, ms(30_000)), Some(ms(15_000)));
        // The one set ends before the deadline: kept (no system call).
        assert_eq!(timeout_to_set(&mut t, ms(29_000)), None);
        assert_eq!(timeout_to_set(&mut t, ms(15_000)), None);
        // It would end after the deadline: halved again, then all of a small rest.
        assert_eq!(timeout_to_set(&mut t, ms(14_000)), Some(ms(7_000)));
        assert_eq!(timeout_to_set(&mut t, ms(15)), Some(ms(15)));
        assert_eq!(t, Some(ms(15)));
        assert_eq!(timeout_to_set(&mut t, ms(14)), Some(ms(14)));
        // 20 ms or less is all set at once; above, half.
        assert_eq!(timeout_to_set(&mut None, ms(20)), Some(ms(20)));
        assert_eq!(timeout_to_set(&mut None, ms(22)), Some(ms(11)));
    }

    /// `outcome`'s decision table for a write that failed: only a reused connection on which
    /// not one byte of a response arrived may have the request sent again (`Stale`).
    #[test]
    fn a_failed_write_is_stale_only_on_a_reused_connection_that_answered_nothing() {
        let pipe = || Err(io::Error::from(io::ErrorKind::BrokenPipe));
        let reset = |seen| {
            Err(ReadFailure {
                seen,
                error: io::Error::from(io::ErrorKind::ConnectionReset),
            })
        };
        let answer = || {
            Ok((
                Response {
                    status: 200,
                    body: vec![],
                    truncated: false,
                    body_error: None,
                },
                true,
            ))
        };
        let name = |r: Result<(Response, bool), Failure>| match r {
            Ok(_) => "ok".to_string(),
            Err(Failure::Stale(_)) => "stale".into(),
            Err(Failure::Transport(m)) => format!("transport: {m}"),
            Err(Failure::Timeout(_)) => "timeout".into(),
            Err(Failure::NotSent(_)) => "not sent".into(),
        };
        assert_eq!(name(outcome(pipe(), reset(0), true)), "stale");
        let fresh = name(outcome(pipe(), reset(0), false));
        assert!(
            fresh.starts_with("transport: sending the request"),
            "{fresh}"
        );
        assert!(!fresh.contains("answered before"), "{fresh}");
        for (response, reused) in [(reset(3), true), (reset(3), false), (answer(), true)] {
            let r = name(outcome(pipe(), response, reused));
            assert!(
                r.contains("answered before the request was sent whole"),
                "{r}"
            );
        }
        let slow = Err(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(name(outcome(slow, reset(0), true)), "timeout");
        assert_eq!(name(outcome(Ok(()), answer(), true)), "ok");
        // A read that fails before one byte on a reused connection: Stale only when the
        // connection was closed or reset, not for any other error.
        let read = |kind| {
            Err(ReadFailure {
                seen: 0,
                error: io::Error::from(kind),
            })
        };
        for kind in [
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
        ] {
            assert_eq!(name(outcome(Ok(()), read(kind), true)), "stale", "{kind:?}");
            assert!(name(outcome(Ok(()), read(kind), false)).starts_with("transport: "));
        }
        for kind in [io::ErrorKind::InvalidData, io::ErrorKind::PermissionDenied] {
            let r = name(outcome(Ok(()), read(kind), true));
            assert!(r.starts_with("transport: "), "{kind:?}: {r}");
        }
    }

    #[test]
    fn origins() {
        let o = Origin::parse("http://127.0.0.1:8080/tsb", None).unwrap();
        assert_eq!(o.authority, "127.0.0.1:8080");
        assert_eq!(o.prefix, "/tsb");
        let o = Origin::parse("https://[::1]", None).unwrap();
        assert_eq!((o.authority.as_str(), o.prefix.as_str()), ("[::1]", ""));
        assert!(Origin::parse("http://h:99999", None).is_err());
        assert!(Origin::parse("http://:80", None).is_err());
    }
}
