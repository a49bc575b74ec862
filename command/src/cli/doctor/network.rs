//! The network steps of every TSB node, made the way the module makes a new connection (the
//! client's [`Probe`]): name resolution (`dns`), TCP connect (`tcp`), then TLS (`tls.rs`).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use super::report::{Report, Status};
use crate::config::Config;
use crate::tsb::{Probe, TsbClient};

/// DNS, TCP and TLS of every TSB node (`restApi`); false when no node passed (later steps
/// would only repeat the failure).
pub(super) fn check_network(config: &Config, client: &TsbClient, r: &mut Report) -> bool {
    let mut any = false;
    let mut failed_checks = Vec::new();
    for i in 0..client.node_count() {
        let first = r.checks.len();
        let ok = check_node(config, &client.probe(i), r);
        if !ok {
            failed_checks.extend(first..r.checks.len());
        }
        any |= ok;
    }
    // A node the module can do without (another one is reachable) is a warning, not a failure.
    if any {
        for i in failed_checks {
            if r.checks[i].status == Status::Fail {
                r.checks[i].status = Status::Warn;
            }
        }
    }
    any
}

/// DNS, TCP and TLS of one node; false when a step failed.
fn check_node(config: &Config, probe: &Probe<'_>, r: &mut Report) -> bool {
    let timeout = config.pkcs11.request_timeout;
    let host = probe.host();
    r.add("proxy", Status::Info, probe.route().to_string());
    let addrs = match probe.resolve(Instant::now() + timeout) {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => {
            r.fail(
                "dns",
                format!("{host}: no address"),
                Some("check the host name in restApi".into()),
            );
            return false;
        }
        Err(message) => {
            let fix = if probe.route().proxy().is_some() {
                "check the proxy's host name (pkcs11.proxy or HTTPS_PROXY), and this host's DNS \
                 (/etc/resolv.conf)"
            } else {
                "check the host name in restApi, and this host's DNS (/etc/resolv.conf)"
            };
            r.fail("dns", message, Some(fix.into()));
            return false;
        }
    };
    r.ok(
        "dns",
        format!(
            "{host} -> {}",
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let mut connected = match probe.connect(&addrs, Instant::now() + timeout) {
        Ok(c) => c,
        Err(tried) => {
            let (message, fix) = tcp_failure(config, probe, &tried);
            r.fail("tcp", message, Some(fix));
            return false;
        }
    };
    r.ok("tcp", format!("connected to {}", connected.addr));
    if let Some(p) = probe.route().proxy() {
        match probe.tunnel(&mut connected, Instant::now() + timeout) {
            Ok(()) => {
                r.ok("proxy", format!("the proxy {p} opened a tunnel to the TSB"));
            }
            Err(message) => {
                r.fail(
                    "proxy",
                    message,
                    Some(
                        "check pkcs11.proxy / HTTPS_PROXY (host, port, user and password) and \
                         that the proxy allows CONNECT to the TSB's port; set NO_PROXY or \
                         \"proxy\": \"none\" if the TSB is reached directly"
                            .into(),
                    ),
                );
                return false;
            }
        }
    }
    if !probe.is_tls() {
        r.add(
            "tls",
            Status::Info,
            "plain http:// (no TLS): credentials and data travel unencrypted",
        );
        return true;
    }
    super::tls::check_tls(config, probe, connected, r)
}

/// Why no address took the connection, and the fix.
fn tcp_failure(
    config: &Config,
    probe: &Probe<'_>,
    tried: &[(SocketAddr, io::Error)],
) -> (String, String) {
    let port = probe.port();
    let connect = config
        .pkcs11
        .connect_timeout
        .min(config.pkcs11.request_timeout);
    let message = if tried.is_empty() {
        "no address tried: requestTimeoutMs used up".to_string()
    } else {
        tried
            .iter()
            .map(|(a, e)| format!("{a}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let refused = tried
        .iter()
        .any(|(_, e)| e.kind() == io::ErrorKind::ConnectionRefused);
    let fix = if refused {
        format!("nothing listens on port {port}: check the port in restApi and that the TSB runs")
    } else {
        format!(
            "check firewalls and routes to {}:{port} (connectTimeoutMs {})",
            probe.host(),
            connect.as_millis()
        )
    };
    (message, fix)
}
