//! The connect path of a new connection: name resolution bounded by the deadline, TCP connect
//! (each address in turn), and through a proxy the CONNECT tunnel (`proxy.rs`). TLS follows in
//! `http.rs`. Every step waits at most `connectTimeoutMs` and never past the call's deadline.
//!
//! Name resolution: the system resolver (`getaddrinfo`, which honours nsswitch, /etc/hosts and
//! the system's DNS settings) blocks and has no timeout of its own. It therefore runs on a
//! short-lived thread while the caller waits at most until its deadline; a lookup that outlives
//! its caller finishes on its own and is dropped. Such stray lookups are bounded
//! ([`MAX_STRAY_LOOKUPS`] per client): beyond that a new connection fails at once instead of
//! starting another thread. IP literals need no lookup and start no thread. When the
//! application forbade threads (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`) the lookup runs on the
//! caller's thread, bounded only by the resolver's own timeouts (resolv.conf `timeout`/`attempts`).

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::endpoint::Endpoint;
use super::proxy::{self, Route};
use super::wire::{is_timeout, Failure};

/// The most lookups per client that may still be running after their callers gave up.
pub(crate) const MAX_STRAY_LOOKUPS: usize = 4;

/// A name resolver (the system's; the tests inject slow ones).
pub(crate) trait Resolve: Send + Sync + fmt::Debug {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// `getaddrinfo` through std.
#[derive(Debug)]
pub(crate) struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Name resolution for one client: the resolver, whether it may run on a thread of its own,
/// and the count of lookups still running after their callers gave up.
#[derive(Debug)]
pub(crate) struct Dns {
    resolver: Arc<dyn Resolve>,
    threads: bool,
    stray: Arc<AtomicUsize>,
}

impl Dns {
    pub(crate) fn new(resolver: Arc<dyn Resolve>, threads: bool) -> Dns {
        Dns {
            resolver,
            threads,
            stray: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn system(threads: bool) -> Dns {
        Dns::new(Arc::new(SystemResolver), threads)
    }

    /// The addresses of `host` (an IP literal is its own), before `deadline`.
    pub(crate) fn lookup(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, Failure> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let failed = |e: io::Error| Failure::NotSent(format!("DNS lookup of {host} failed: {e}"));
        let addrs = if !self.threads {
            self.resolver.resolve(host, port).map_err(failed)?
        } else {
            self.lookup_on_thread(host, port, deadline)?
                .map_err(failed)?
        };
        if addrs.is_empty() {
            return Err(Failure::NotSent(format!(
                "DNS lookup of {host} failed: no address"
            )));
        }
        Ok(addrs)
    }

    fn lookup_on_thread(
        &self,
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<io::Result<Vec<SocketAddr>>, Failure> {
        let stray = self.stray.load(Ordering::Relaxed);
        if stray >= MAX_STRAY_LOOKUPS {
            return Err(Failure::NotSent(format!(
                "DNS lookup of {host} not started: {stray} earlier lookups still have no answer"
            )));
        }
        let slot = Arc::new(Slot::default());
        let spawned = {
            let (slot, resolver, name) = (slot.clone(), self.resolver.clone(), host.to_string());
            let stray = self.stray.clone();
            std::thread::Builder::new()
                .name("tsb-pkcs11-dns".into())
                .spawn(move || {
                    let r = resolver.resolve(&name, port);
                    let mut s = slot.state.lock();
                    if s.abandoned {
                        stray.fetch_sub(1, Ordering::Relaxed);
                    } else {
                        s.result = Some(r);
                        slot.ready.notify_one();
                    }
                })
        };
        if spawned.is_err() {
            // No thread to be had: resolve here.
            return Ok(self.resolver.resolve(host, port));
        }
        let mut s = slot.state.lock();
        loop {
            if let Some(r) = s.result.take() {
                return Ok(r);
            }
            if slot.ready.wait_until(&mut s, deadline).timed_out() {
                if let Some(r) = s.result.take() {
                    return Ok(r);
                }
                s.abandoned = true;
                self.stray.fetch_add(1, Ordering::Relaxed);
                return Err(Failure::NotSent(format!(
                    "DNS lookup of {host} timed out (no answer within connectTimeoutMs or the \
                     call's requestTimeoutMs)"
                )));
            }
        }
    }

    /// The lookups still running after their callers gave up.
    #[cfg(test)]
    pub(crate) fn stray(&self) -> usize {
        self.stray.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<io::Result<Vec<SocketAddr>>>,
    abandoned: bool,
}

/// A TCP connection to `target` (directly or through the route's proxy, with the tunnel
/// open), made before `deadline`; each step waits at most `connect_timeout`. `opened` counts
/// connect attempts.
pub(crate) fn open(
    target: &Endpoint,
    route: &Route,
    dns: &Dns,
    connect_timeout: Duration,
    deadline: Instant,
    opened: &AtomicU64,
) -> Result<TcpStream, Failure> {
    let step_deadline = || deadline.min(Instant::now() + connect_timeout);
    let hop = route.proxy().map_or(target, |p| &p.endpoint);
    let addrs = dns.lookup(&hop.host, hop.port, step_deadline())?;
    opened.fetch_add(1, Ordering::Relaxed);
    let via = match route.proxy() {
        Some(p) => format!(" to the proxy {p}"),
        None => String::new(),
    };
    let mut tcp = match connect_tcp(&addrs, connect_timeout, deadline) {
        Ok((t, _)) => t,
        Err(mut tried) => {
            return Err(match tried.pop() {
                Some((_, e)) if is_timeout(&e) => {
                    Failure::NotSent(format!("connect{via} timed out: {e}"))
                }
                Some((_, e)) => Failure::NotSent(format!("connection{via} failed: {e}")),
                None => Failure::NotSent("connect timed out: requestTimeoutMs used up".into()),
            })
        }
    };
    if let Some(p) = route.proxy() {
        proxy::open_tunnel(&mut tcp, p, target, step_deadline())?;
    }
    Ok(tcp)
}

/// A TCP connection (no delay) to the first of `addrs` that accepts one, each try bounded by
/// `connect_timeout` and the deadline; else the error of each address tried (none when the
/// deadline was up before the first). `tsb-pkcs11 doctor` reports each of them.
pub(crate) fn connect_tcp(
    addrs: &[SocketAddr],
    connect_timeout: Duration,
    deadline: Instant,
) -> Result<(TcpStream, SocketAddr), Vec<(SocketAddr, io::Error)>> {
    let mut tried = Vec::new();
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, connect_timeout.min(left)) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                super::idle::keepalive(&s);
                return Ok((s, *addr));
            }
            Err(e) => tried.push((*addr, e)),
        }
    }
    Err(tried)
}
