//! HTTP CONNECT proxies: which proxy (if any) a TSB node is reached through — `pkcs11.proxy`,
//! or the environment's `https_proxy`/`HTTPS_PROXY` and `no_proxy`/`NO_PROXY` with curl's
//! conventions — and the CONNECT exchange that opens the tunnel (RFC 9110 §9.3.6). TLS to the
//! TSB then runs inside the tunnel with the TSB's own name (`http.rs`).
//!
//! Only `https://` nodes go through a proxy. Plain `http://` nodes (loopback, or explicitly
//! allowed with `allowInsecureHttp`) are always reached directly, and `HTTP_PROXY` is never
//! read: a forwarding proxy would see the TSB credentials in clear, and in CGI-style hosts
//! `HTTP_PROXY` can be set by a request's `Proxy:` header ("httpoxy").
//!
//! Credentials: the proxy's user and password (from the URL, percent-decoded, or
//! `pkcs11.proxyPassword`) are sent only as `Proxy-Authorization: Basic` to the proxy; the
//! [`Proxy`] and [`Route`] shown in logs, errors and by `tsb-pkcs11 doctor` never hold them.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::endpoint::{Endpoint, Scheme};
use super::wire::Failure;
use crate::config::{ProxySetting, Secret};

/// The largest answer head read from a proxy.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// An HTTP proxy. `Display` shows `http://host:port`, never credentials.
#[derive(Clone, Debug)]
pub struct Proxy {
    pub(crate) endpoint: Endpoint,
    /// Where the setting came from: `pkcs11.proxy` or the variable's name.
    pub(crate) source: &'static str,
    user: Option<String>,
    password: Option<Secret>,
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.endpoint.host_port())
    }
}

impl Proxy {
    /// Parses a proxy URL (`http://[user[:password]@]host[:port]`, port 1080 by default as with
    /// curl; a URL without scheme is `http://`). `password` is used when the URL has a user and
    /// no password of its own.
    pub(crate) fn parse(
        text: &str,
        source: &'static str,
        password: Option<&Secret>,
    ) -> Result<Proxy, String> {
        let text = text.trim_matches(|c| c == ' ');
        let with_scheme;
        let text = if text.contains("://") {
            text
        } else {
            with_scheme = format!("http://{text}");
            &with_scheme
        };
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(
                "TLS to the proxy (an https:// proxy URL) is not supported; give the proxy as \
                 http:// (the TSB connection inside the tunnel is TLS all the same)"
                    .into(),
            );
        }
        if !lower.starts_with("http://") {
            return Err("only http:// proxies (HTTP CONNECT) are supported".into());
        }
        let explicit_port = {
            // The url crate drops the default port 80; curl's default for a proxy is 1080.
            let authority = text["http://".len()..]
                .split(['/', '?', '#'])
                .next()
                .unwrap_or("");
            let host_port = authority.rsplit('@').next().unwrap_or("");
            host_port
                .rsplit_once(':')
                .is_some_and(|(h, p)| !p.is_empty() && (!h.starts_with('[') || h.ends_with(']')))
        };
        let (mut endpoint, userinfo) = Endpoint::parse_with_userinfo(text, true)?;
        if endpoint.scheme != Scheme::Http {
            return Err("only http:// proxies (HTTP CONNECT) are supported".into());
        }
        if !explicit_port {
            endpoint.port = 1080;
        }
        if !endpoint.base_path.is_empty() {
            return Err("a proxy URL has no path".into());
        }
        let (user, url_password) = match userinfo {
            Some((u, p)) => (Some(u), p.map(Secret::new)),
            None => (None, None),
        };
        let password =
            match (url_password, password) {
                (Some(_), Some(_)) if source == "pkcs11.proxy" => return Err(
                    "the proxy URL has a password and pkcs11.proxyPassword is set too; give one"
                        .into(),
                ),
                (Some(p), _) => Some(p),
                // Used only with a user (`authorization`, `Display`).
                (None, Some(p)) => Some(p.clone()),
                (None, None) => None,
            };
        Ok(Proxy {
            endpoint,
            source,
            user,
            password,
        })
    }

    /// The `Proxy-Authorization` value, when the proxy has a user.
    fn authorization(&self) -> Option<Secret> {
        let user = self.user.as_deref()?;
        let pass = self.password.as_ref().map_or("", Secret::expose);
        Some(Secret::new(format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{pass}"))
        )))
    }
}

/// How a TSB node is reached: directly, or through an HTTP proxy. `Display` is one line for
/// logs and `tsb-pkcs11 doctor`, without credentials.
#[derive(Clone, Debug)]
pub enum Route {
    /// Directly; why (no proxy set, `NO_PROXY`, `proxy: "none"`, plain http://).
    Direct(&'static str),
    /// Through this proxy (CONNECT tunnel).
    Proxy(Box<Proxy>),
}

impl Route {
    /// The proxy, when there is one.
    pub fn proxy(&self) -> Option<&Proxy> {
        match self {
            Route::Direct(_) => None,
            Route::Proxy(p) => Some(p),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct(why) => write!(f, "direct ({why})"),
            Route::Proxy(p) => {
                write!(f, "through the HTTP proxy {p} (from {}", p.source)?;
                match (&p.user, &p.password) {
                    (Some(_), Some(_)) => f.write_str("; user and password set, not shown)"),
                    (Some(_), None) => f.write_str("; user set, no password)"),
                    _ => f.write_str("; no proxy authentication)"),
                }
            }
        }
    }
}

/// The proxy variables of the environment (looked up once per client; the tests pass their own).
#[derive(Clone, Debug, Default)]
pub(crate) struct ProxyEnv {
    /// (variable name, value) of the proxy: `https_proxy`, else `HTTPS_PROXY`.
    https_proxy: Option<(&'static str, String)>,
    /// `no_proxy`, else `NO_PROXY`.
    no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads the variables with `get` (curl's order: lower case first; empty is unset).
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
        };
        ProxyEnv {
            https_proxy: first(["https_proxy", "HTTPS_PROXY"]),
            no_proxy: first(["no_proxy", "NO_PROXY"]).map(|(_, v)| v),
        }
    }

    /// The process environment.
    pub(crate) fn from_process() -> ProxyEnv {
        ProxyEnv::from_lookup(|n| std::env::var(n).ok())
    }
}

/// The route to `endpoint` given the configured setting (`pkcs11.proxy`, `pkcs11.noProxy`,
/// `pkcs11.proxyPassword`) and the environment. Each configured field overrides its variable.
pub(crate) fn route_for(
    endpoint: &Endpoint,
    setting: &ProxySetting,
    no_proxy: Option<&str>,
    password: Option<&Secret>,
    env: &ProxyEnv,
) -> Result<Route, String> {
    if endpoint.scheme == Scheme::Http {
        return Ok(Route::Direct("plain http:// is never proxied"));
    }
    let proxy = match setting {
        ProxySetting::None => return Ok(Route::Direct("pkcs11.proxy is \"none\"")),
        ProxySetting::Url(url) => Proxy::parse(url.expose(), "pkcs11.proxy", password)
            .map_err(|e| format!("pkcs11.proxy: {e}"))?,
        ProxySetting::Environment => match &env.https_proxy {
            None => return Ok(Route::Direct("no proxy set")),
            Some((name, value)) => {
                Proxy::parse(value, name, password).map_err(|e| format!("{name}: {e}"))?
            }
        },
    };
    let (rules, rules_name) = match no_proxy {
        Some(r) => (Some(r), "pkcs11.noProxy"),
        None => (env.no_proxy.as_deref(), "NO_PROXY"),
    };
    if let Some(rules) = rules {
        if NoProxy::parse(rules).matches(endpoint) {
            return Ok(Route::Direct(if rules_name == "NO_PROXY" {
                "NO_PROXY lists it"
            } else {
                "pkcs11.noProxy lists it"
            }));
        }
    }
    Ok(Route::Proxy(Box::new(proxy)))
}

/// A `NO_PROXY` list (curl's conventions): entries separated by commas or spaces; `*` alone
/// matches every host; a name matches itself and the names below it, with or without a leading
/// `.` (or `*.`), case-insensitively, a trailing `.` ignored; an IP address matches that
/// address, and `address/bits` a network (IP literals in the URL only: no name is resolved
/// for this); `host:port` (IPv6 as `[addr]:port`) matches only that port.
#[derive(Debug, Default)]
pub(crate) struct NoProxy {
    all: bool,
    entries: Vec<(Pattern, Option<u16>)>,
}

#[derive(Debug)]
enum Pattern {
    Name(String),
    Net(IpAddr, u8),
}

impl NoProxy {
    pub(crate) fn parse(text: &str) -> NoProxy {
        let mut out = NoProxy::default();
        for raw in text.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
            if raw == "*" {
                out.all = true;
                continue;
            }
            if let Some(entry) = parse_entry(raw) {
                out.entries.push(entry);
            }
        }
        out
    }

    pub(crate) fn matches(&self, endpoint: &Endpoint) -> bool {
        if self.all {
            return true;
        }
        let host = endpoint.host.trim_end_matches('.').to_ascii_lowercase();
        let ip = endpoint.ip();
        self.entries.iter().any(|(pattern, port)| {
            if port.is_some_and(|p| p != endpoint.port) {
                return false;
            }
            match (pattern, ip) {
                (Pattern::Net(net, bits), Some(addr)) => in_network(addr, *net, *bits),
                (Pattern::Name(name), None) => {
                    host == *name
                        || host
                            .strip_suffix(name.as_str())
                            .is_some_and(|above| above.ends_with('.'))
                }
                _ => false,
            }
        })
    }
}

fn parse_entry(raw: &str) -> Option<(Pattern, Option<u16>)> {
    // [v6]:port, [v6]
    if let Some(rest) = raw.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return net_pattern(addr).map(|p| (p, port));
    }
    // A bare address or network (IPv6 has colons: never a port here).
    if let Some(p) = net_pattern(raw) {
        return Some((p, None));
    }
    let (name, port) = match raw.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, Some(p.parse().ok()?))
        }
        _ => (raw, None),
    };
    if let Some(p) = net_pattern(name) {
        return Some((p, port));
    }
    let name = name
        .strip_prefix("*.")
        .or_else(|| name.strip_prefix('.'))
        .unwrap_or(name)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!name.is_empty()).then_some((Pattern::Name(name), port))
}

fn net_pattern(s: &str) -> Option<Pattern> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some(Pattern::Net(addr, bits))
}

fn in_network(addr: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, n, width) = match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a) as u128, u32::from(n) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (a >> shift) == (n >> shift)
}

/// What [`open_tunnel`] needs of its connection: a `TcpStream`, or a scripted one in tests.
pub(crate) trait TunnelSocket: Read + Write {
    /// Bounds the next reads and writes by `t`.
    fn set_timeout(&self, t: Duration) -> std::io::Result<()>;
}

impl TunnelSocket for TcpStream {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

/// Opens a CONNECT tunnel to `target` on `tcp`, a fresh connection to `proxy`, before
/// `deadline`. On success the stream carries the TSB's bytes from its first byte: an answer that
/// has anything after its head (bytes the TSB cannot have sent, since TLS's client speaks first)
/// is refused, so nothing of the proxy is taken for the TSB's TLS.
pub(crate) fn open_tunnel(
    tcp: &mut impl TunnelSocket,
    proxy: &Proxy,
    target: &Endpoint,
    deadline: Instant,
) -> Result<(), Failure> {
    let host_port = target.host_port();
    let mut head = format!(
        "CONNECT {host_port} HTTP/1.1\r\nHost: {host_port}\r\nUser-Agent: tsb-pkcs11/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let auth = proxy.authorization();
    if let Some(a) = &auth {
        head.push_str("Proxy-Authorization: ");
        head.push_str(a.expose());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let fail = |what: String| Failure::NotSent(format!("proxy {proxy}: {what}"));
    let left = || {
        let l = deadline.saturating_duration_since(Instant::now());
        (!l.is_zero()).then_some(l)
    };
    let timed_out = || fail(format!("no answer to CONNECT {host_port} in time"));
    let io_fail = |e: std::io::Error, doing: &str| {
        if super::wire::is_timeout(&e) {
            timed_out()
        } else {
            fail(format!("{doing}: {e}"))
        }
    };
    let l = left().ok_or_else(timed_out)?;
    tcp.set_timeout(l).map_err(|e| io_fail(e, "socket"))?;
    tcp.write_all(head.as_bytes())
        .map_err(|e| io_fail(e, "sending CONNECT"))?;
    drop(head);
    let mut buf = Vec::with_capacity(512);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= MAX_CONNECT_HEAD {
            return Err(fail(format!(
                "answer to CONNECT longer than {MAX_CONNECT_HEAD} bytes"
            )));
        }
        let l = left().ok_or_else(timed_out)?;
        tcp.set_timeout(l).map_err(|e| io_fail(e, "socket"))?;
        let mut chunk = [0u8; 1024];
        match tcp.read(&mut chunk) {
            Ok(0) => {
                return Err(fail(format!(
                    "closed the connection before answering CONNECT {host_port}"
                )))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A signal (`EINTR`: with a receive timeout set, even a handler installed with
            // `SA_RESTART` interrupts recv(2)); read again with the time then left.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // The read timeout is all that is left before the deadline, so a timeout here is
            // the deadline (`io_fail` names it so).
            Err(e) => return Err(io_fail(e, "reading the answer to CONNECT")),
        }
    };
    let status = connect_status(&buf[..end]).ok_or_else(|| {
        fail(format!(
            "the answer to CONNECT {host_port} is not HTTP ({} bytes)",
            end
        ))
    })?;
    if !(200..300).contains(&status) {
        return Err(fail(format!(
            "refused CONNECT to {host_port}: HTTP {status} ({})",
            refusal_hint(status, auth.is_some())
        )));
    }
    if buf.len() > end {
        return Err(fail(format!(
            "sent {} bytes after its {status} answer to CONNECT {host_port} (before the TSB could \
             send any); tunnel not used",
            buf.len() - end
        )));
    }
    Ok(())
}

/// The status code of an answer head `HTTP/1.x NNN ...`.
fn connect_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !(version == "HTTP/1.1" || version == "HTTP/1.0") || code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

/// What a proxy's refusal usually means (the module's words; the proxy's reason phrase is not
/// repeated).
fn refusal_hint(status: u16, sent_credentials: bool) -> &'static str {
    match status {
        // Some proxies (tinyproxy) answer a failed authentication with 401.
        401 | 407 if sent_credentials => {
            "proxy authentication failed: check the proxy user and password"
        }
        401 | 407 => "the proxy requires authentication: give a user and password in the proxy URL",
        403 => "forbidden by the proxy: is CONNECT to this host and port allowed?",
        502 | 504 => "the proxy could not reach the TSB",
        503 => "the proxy is unavailable",
        400..=499 => "the proxy refused the request",
        _ => "the proxy failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap()
    }

    #[test]
    fn no_proxy_follows_curl() {
        let np = NoProxy::parse("example.com, .corp.example,*.intra ,10.0.0.0/8 192.168.1.7,[::1]:8443,tsb.local:9443,OTHER.Example.");
        let yes = [
            "https://example.com",
            "https://EXAMPLE.com.",
            "https://a.b.example.com:8443",
            "https://corp.example",
            "https://x.corp.example",
            "https://intra",
            "https://h.intra",
            "https://10.1.2.3",
            "https://192.168.1.7",
            "https://[::1]:8443",
            "https://tsb.local:9443",
            "https://other.example",
            "https://x.other.example",
        ];
        for u in yes {
            assert!(np.matches(&ep(u)), "{u} should bypass");
        }
        let no = [
            "https://notexample.com",
            "https://example.com.evil",
            "https://corp.example.org",
            "https://11.0.0.1",
            "https://192.168.1.8",
            "https://[::1]",
            "https://[::1]:443",
            "https://tsb.local",
            "https://tsb.local:443",
            "https://x.tsb.local:9444",
        ];
        for u in no {
            assert!(!np.matches(&ep(u)), "{u} should use the proxy");
        }
        assert!(NoProxy::parse("*").matches(&ep("https://anything")));
        assert!(!NoProxy::parse("").matches(&ep("https://anything")));
        assert!(NoProxy::parse("::1").matches(&ep("https://[::1]")));
        assert!(NoProxy::parse("[::1]").matches(&ep("https://[::1]:8443")));
        // Anything after an IPv6 literal's `]` other than `:port` spoils the entry.
        for entry in ["[::1]x", "[::1]/8", "[::1]8443"] {
            assert!(
                !NoProxy::parse(entry).matches(&ep("https://[::1]")),
                "{entry}"
            );
        }
        assert!(NoProxy::parse("fd00::/8").matches(&ep("https://[fd12::1]")));
        assert!(!NoProxy::parse("fd00::/8").matches(&ep("https://[fe12::1]")));
        // A name pattern never matches an IP literal, and the reverse.
        assert!(!NoProxy::parse("127.0.0.1").matches(&ep("https://localhost")));
        assert!(NoProxy::parse("localhost").matches(&ep("https://localhost:8443")));
        // A port that is not all digits is no port (u16's parse would take "+9443"): the entry
        // is a name with a ':', which matches no host.
        for entry in ["tsb.local:+9443", "tsb.local:abc", "tsb.local:"] {
            let np = NoProxy::parse(entry);
            for u in ["https://tsb.local:9443", "https://tsb.local"] {
                assert!(!np.matches(&ep(u)), "{entry}: {u} should use the proxy");
            }
        }
    }

    /// A connection answering from a script, recording what was set and written.
    struct Scripted {
        reads: Vec<std::io::Result<Vec<u8>>>,
        written: Vec<u8>,
        timeouts: std::cell::RefCell<Vec<Duration>>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let bytes = self.reads.remove(0)?;
            buf[..bytes.len()].copy_from_slice(&bytes);
            Ok(bytes.len())
        }
    }

    impl Write for Scripted {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl TunnelSocket for Scripted {
        fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
            self.timeouts.borrow_mut().push(t);
            Ok(())
        }
    }

    #[test]
    fn a_signal_while_waiting_for_connect_s_answer_is_read_through() {
        use std::io::ErrorKind::{Interrupted, WouldBlock};
        let proxy = Proxy::parse("http://proxy.corp:3128", "pkcs11.proxy", None).unwrap();
        let target = ep("https://tsb.corp:8443");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut sock = Scripted {
            reads: vec![
                Err(Interrupted.into()),
                Ok(b"HTTP/1.1 200 Connection".to_vec()),
                Err(Interrupted.into()),
                Ok(b" established\r\n\r\n".to_vec()),
            ],
            written: vec![],
            timeouts: Default::default(),
        };
        open_tunnel(&mut sock, &proxy, &target, deadline).unwrap();
        assert!(sock.reads.is_empty());
        let head = String::from_utf8(sock.written).unwrap();
        assert!(
            head.starts_with("CONNECT tsb.corp:8443 HTTP/1.1\r\n"),
            "{head}"
        );
        // The write and each read are bounded by what is left of the deadline, measured again
        // after a signal.
        let t = sock.timeouts.into_inner();
        assert_eq!(t.len(), 5, "the write, then each read");
        assert!(t.windows(2).all(|w| w[1] <= w[0]) && t[0] <= Duration::from_secs(30));
        // A timeout is the deadline: one clear error, not a read failure.
        let mut sock = Scripted {
            reads: vec![Err(WouldBlock.into())],
            written: vec![],
            timeouts: Default::default(),
        };
        let e = open_tunnel(&mut sock, &proxy, &target, deadline).unwrap_err();
        assert!(
            matches!(&e, Failure::NotSent(m) if m.ends_with("no answer to CONNECT tsb.corp:8443 in time")),
            "{e:?}"
        );
    }

    /// What a proxy's refusal of CONNECT tells the user to look at, by status and by whether
    /// credentials were sent.
    #[test]
    fn refusal_hints() {
        for (status, sent, hint) in [
            (
                407,
                true,
                "proxy authentication failed: check the proxy user and password",
            ),
            (
                401,
                true,
                "proxy authentication failed: check the proxy user and password",
            ),
            (
                407,
                false,
                "the proxy requires authentication: give a user and password in the proxy URL",
            ),
            (
                401,
                false,
                "the proxy requires authentication: give a user and password in the proxy URL",
            ),
            (
                403,
                true,
                "forbidden by the proxy: is CONNECT to this host and port allowed?",
            ),
            (
                403,
                false,
                "forbidden by the proxy: is CONNECT to this host and port allowed?",
            ),
            (502, false, "the proxy could not reach the TSB"),
            (504, true, "the proxy could not reach the TSB"),
            (503, false, "the proxy is unavailable"),
            (400, true, "the proxy refused the request"),
            (405, false, "the proxy refused the request"),
            (499, false, "the proxy refused the request"),
            (500, true, "the proxy failed"),
            (302, false, "the proxy failed"),
        ] {
            assert_eq!(refusal_hint(status, sent), hint, "{status} {sent}");
        }
    }

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse(
            "http://alice:s%3Acret@proxy.corp:3128",
            "pkcs11.proxy",
            None,
        )
        .unwrap();
        assert_eq!(p.to_string(), "http://proxy.corp:3128");
        assert_eq!(
            p.authorization().unwrap().expose(),
            format!("Basic {}", STANDARD.encode("alice:s:cret"))
        );
        let route = Route::Proxy(Box::new(p));
        let shown = format!("{route} {route:?}");
        assert!(
            !shown.contains("s:cret") && !shown.contains("s%3Acret"),
            "{shown}"
        );
        assert_eq!(
            route.to_string(),
            "through the HTTP proxy http://proxy.corp:3128 (from pkcs11.proxy; user and \
             password set, not shown)"
        );
        let user_only = Proxy::parse("http://carol@proxy.corp:3128", "https_proxy", None).unwrap();
        assert_eq!(
            Route::Proxy(Box::new(user_only)).to_string(),
            "through the HTTP proxy http://proxy.corp:3128 (from https_proxy; user set, no password)"
        );
        let anonymous = Proxy::parse("http://proxy.corp:3128", "HTTPS_PROXY", None).unwrap();
        assert_eq!(
            Route::Proxy(Box::new(anonymous)).to_string(),
            "through the HTTP proxy http://proxy.corp:3128 (from HTTPS_PROXY; no proxy authentication)"
        );
        assert_eq!(
            Route::Direct("no proxy set").to_string(),
            "direct (no proxy set)"
        );
        // No scheme: http://, curl's default port 1080; explicit :80 stays.
        let p = Proxy::parse("proxy.corp", "HTTPS_PROXY", None).unwrap();
        assert_eq!(p.to_string(), "http://proxy.corp:1080");
        assert!(p.authorization().is_none());
        assert_eq!(
            Proxy::parse("http://proxy.corp:80/", "HTTPS_PROXY", None)
                .unwrap()
                .endpoint
                .port,
            80
        );
        assert_eq!(
            Proxy::parse("http://[::1]:3128", "HTTPS_PROXY", None)
                .unwrap()
                .to_string(),
            "http://[::1]:3128"
        );
        // No port, or an empty one: 1080 too (the colons of an IPv6 literal are no port).
        for (url, shown) in [
            ("http://[::1]", "http://[::1]:1080"),
            ("http://[fd00::7]/", "http://[fd00::7]:1080"),
            ("http://proxy.corp:", "http://proxy.corp:1080"),
            ("http://u:p@proxy.corp:/", "http://proxy.corp:1080"),
        ] {
            let p = Proxy::parse(url, "HTTPS_PROXY", None).unwrap();
            assert_eq!(p.to_string(), shown, "{url}");
        }
        // The password from pkcs11.proxyPassword for a user without one.
        let pw = Secret::new("from-file".into());
        let p = Proxy::parse("http://bob@proxy:3128", "pkcs11.proxy", Some(&pw)).unwrap();
        assert_eq!(
            p.authorization().unwrap().expose(),
            format!("Basic {}", STANDARD.encode("bob:from-file"))
        );
        assert!(Proxy::parse("http://bob:x@proxy:3128", "pkcs11.proxy", Some(&pw)).is_err());
        // Refused: TLS to the proxy, SOCKS, a path, control characters (never a header
        // injection: the host is refused, credentials travel base64-encoded).
        for bad in [
            "https://proxy:3128",
            "socks5://proxy:1080",
            "http://proxy:3128/path",
            "http://proxy\r\nX-Evil: 1:3128",
            "http://pro\u{0}xy:3128",
            "http://proxy%0d%0aX:3128",
            "http://proxy:3128\n",
            "http://",
        ] {
            let e = Proxy::parse(bad, "pkcs11.proxy", None);
            assert!(e.is_err(), "{bad:?}");
        }
        let p = Proxy::parse(
            "http://u%0d%0aX-Evil:%0d%0a@proxy:3128",
            "pkcs11.proxy",
            None,
        )
        .unwrap();
        assert!(!p.authorization().unwrap().expose().contains('\n'));
    }

    #[test]
    fn routes() {
        let env = ProxyEnv::from_lookup(|n| match n {
            "HTTPS_PROXY" => Some("http://upper:3128".into()),
            "https_proxy" => Some("http://lower:3128".into()),
            "NO_PROXY" => Some(".direct.example".into()),
            _ => None,
        });
        let tsb = ep("https://tsb.example");
        let r = route_for(&tsb, &ProxySetting::Environment, None, None, &env).unwrap();
        assert_eq!(r.proxy().unwrap().to_string(), "http://lower:3128");
        assert_eq!(r.proxy().unwrap().source, "https_proxy");
        let direct = ep("https://a.direct.example");
        let r = route_for(&direct, &ProxySetting::Environment, None, None, &env).unwrap();
        assert_eq!(r.to_string(), "direct (NO_PROXY lists it)");
        // pkcs11.noProxy overrides NO_PROXY.
        let r = route_for(&direct, &ProxySetting::Environment, Some(""), None, &env).unwrap();
        assert!(r.proxy().is_some(), "{r}");
        let r = route_for(
            &tsb,
            &ProxySetting::Environment,
            Some("tsb.example"),
            None,
            &env,
        );
        assert_eq!(r.unwrap().to_string(), "direct (pkcs11.noProxy lists it)");
        // "none" and the explicit URL override the environment.
        let r = route_for(&tsb, &ProxySetting::None, None, None, &env).unwrap();
        assert!(matches!(r, Route::Direct(_)));
        let set = ProxySetting::Url(Secret::new("http://cfg:8080".into()));
        let r = route_for(&tsb, &set, None, None, &env).unwrap();
        assert_eq!(r.proxy().unwrap().to_string(), "http://cfg:8080");
        // Plain http:// is never proxied.
        let r = route_for(&ep("http://127.0.0.1:8080"), &set, None, None, &env).unwrap();
        assert!(matches!(r, Route::Direct(_)));
        // Empty variables are unset; a bad variable is an error naming it, not its value.
        let env = ProxyEnv::from_lookup(|n| (n == "HTTPS_PROXY").then(|| "".into()));
        assert!(
            route_for(&tsb, &ProxySetting::Environment, None, None, &env)
                .unwrap()
                .proxy()
                .is_none()
        );
        let env =
            ProxyEnv::from_lookup(|n| (n == "HTTPS_PROXY").then(|| "socks5://u:pw@h:1".into()));
        let e = route_for(&tsb, &ProxySetting::Environment, None, None, &env).unwrap_err();
        assert!(e.starts_with("HTTPS_PROXY:") && !e.contains("pw"), "{e}");
    }

    /// `ProxyEnv::from_process` reads the process's variables. Checked in a child process (this
    /// test binary running only `from_process_in_a_child`), as a test may not change its own
    /// environment while other threads read it (src/layering.rs).
    #[test]
    fn the_process_environment_is_read() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tsb::proxy::tests::from_process_in_a_child",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("HTTPS_PROXY", "http://from-env:3128")
            .env("no_proxy", ".bypass.example")
            .env_remove("https_proxy")
            .env_remove("NO_PROXY")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    const CHILD: &str = "TSB_PKCS11_TEST_PROXY_CHILD";

    /// Run by `the_process_environment_is_read` in a child; does nothing in the test run itself.
    #[test]
    fn from_process_in_a_child() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let env = ProxyEnv::from_process();
        assert_eq!(
            env.https_proxy,
            Some(("HTTPS_PROXY", "http://from-env:3128".to_string()))
        );
        assert_eq!(env.no_proxy.as_deref(), Some(".bypass.example"));
    }

    /// pkcs11.proxyPassword is for a proxy user without a password. A pkcs11.proxy URL with a
    /// password beside it is a conflict in one file, refused; an environment proxy's URL with
    /// a password is the environment's own setting: its password is used, not refused.
    #[test]
    fn a_url_password_beside_proxy_password() {
        let pw = Secret::new("from-file".into());
        let tsb = ep("https://tsb.example");
        let env = ProxyEnv::from_lookup(|n| {
            (n == "HTTPS_PROXY").then(|| "http://eve:env-pw@h:3128".into())
        });
        let r = route_for(&tsb, &ProxySetting::Environment, None, Some(&pw), &env).unwrap();
        assert_eq!(
            r.proxy().unwrap().authorization().unwrap().expose(),
            format!("Basic {}", STANDARD.encode("eve:env-pw"))
        );
        // The same environment URL with a user and no password takes pkcs11.proxyPassword.
        let env =
            ProxyEnv::from_lookup(|n| (n == "HTTPS_PROXY").then(|| "http://eve@h:3128".into()));
        let r = route_for(&tsb, &ProxySetting::Environment, None, Some(&pw), &env).unwrap();
        assert_eq!(
            r.proxy().unwrap().authorization().unwrap().expose(),
            format!("Basic {}", STANDARD.encode("eve:from-file"))
        );
        // pkcs11.proxy with a password and pkcs11.proxyPassword: refused, naming the setting
        // and not the password.
        let set = ProxySetting::Url(Secret::new("http://eve:url-pw@h:3128".into()));
        let e = route_for(&tsb, &set, None, Some(&pw), &env).unwrap_err();
        assert!(
            e.starts_with("pkcs11.proxy:")
                && e.contains("pkcs11.proxyPassword")
                && !e.contains("pw@"),
            "{e}"
        );
        // Without pkcs11.proxyPassword the pkcs11.proxy URL's password is used.
        let r = route_for(&tsb, &set, None, None, &env).unwrap();
        assert_eq!(
            r.proxy().unwrap().authorization().unwrap().expose(),
            format!("Basic {}", STANDARD.encode("eve:url-pw"))
        );
    }
}
