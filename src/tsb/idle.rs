//! Idle kept-alive connections: TCP keepalive on every connection the client opens, and the
//! maximum idle age after which a pooled connection is closed instead of reused
//! (`pkcs11.connectionMaxIdleMs`). A NAT or load balancer that forgets an idle connection
//! usually says nothing (no FIN, no RST): a request written to it would vanish, and its answer
//! could only time out — a timeout a synchronous sign may not retry (the request may have
//! arrived). Below common idle timeouts (AWS NLB 350 s, Azure LB 4 min, GCP 10 min, many
//! corporate NATs and firewalls 60 s), the default age of 50 s keeps the module from reusing a
//! connection such a box may have dropped.

use std::net::TcpStream;
use std::time::Duration;

/// The default of `pkcs11.connectionMaxIdleMs` (the pool's, until the client sets the
/// configured one).
pub(super) const DEFAULT_MAX_IDLE_AGE: Duration = Duration::from_millis(50_000);

/// Idle time before the first keepalive probe, and between probes. The probes keep a NAT's
/// mapping alive while a connection waits in the pool and let the kernel notice a peer that is
/// gone; the idle age above bounds reuse whatever they find.
const KEEPALIVE_TIME: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Turns TCP keepalive on for a new connection (best effort: a failure only loses the probes).
pub(super) fn keepalive(tcp: &TcpStream) {
    let params = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&params) {
        log::debug!("TCP keepalive not set: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn keepalive_is_set_on_new_connections() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let s = socket2::SockRef::from(&tcp);
        assert!(!s.keepalive().unwrap());
        keepalive(&tcp);
        assert!(s.keepalive().unwrap());
    }
}
