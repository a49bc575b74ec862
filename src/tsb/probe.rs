//! The steps of a connection to one TSB node, one at a time, for `tsb-pkcs11 doctor`: name
//! resolution, TCP connect, the proxy tunnel (when the node is reached through a proxy), TLS
//! handshake, one request. Each step calls the function the module's own connections are made
//! with (`connect.rs`: [`Dns::lookup`](super::connect::Dns::lookup),
//! [`connect::connect_tcp`], [`proxy::open_tunnel`]; `http.rs`: [`http::open`], the request
//! writer and response reader of `Pool::send_once`), so what doctor reports is what a signature
//! meets; there is no second network stack. A step returns the facts doctor shows, or the error as it came (a TLS alert
//! inside an `io::Error`), for doctor to explain.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::nodes::Node;
use super::proxy::{self, Route};
use super::{connect, http};

/// The steps of one node's connection (see [`super::TsbClient::probe`]).
pub struct Probe<'c> {
    node: &'c Node,
}

/// A TCP connection made, not used yet.
pub struct Connected {
    tcp: TcpStream,
    /// The address that accepted the connection.
    pub addr: SocketAddr,
}

/// A connection ready for a request: plain, or after its TLS handshake.
pub struct Opened {
    conn: http::Conn,
    /// The TLS session's facts (`None`: plain http://).
    pub tls: Option<TlsFacts>,
}

/// What a completed TLS handshake established.
#[derive(Debug)]
pub struct TlsFacts {
    /// `TLSv1_3`, `TLSv1_2`.
    pub protocol: String,
    /// The server's end-entity certificate, as verified (absent only if the server sent none).
    pub certificate: Option<ServerCertificate>,
}

/// The server certificate's facts doctor shows.
#[derive(Debug)]
pub struct ServerCertificate {
    /// The subject, e.g. `CN=tsb.example`; `None` when the certificate cannot be read here.
    pub subject: Option<String>,
    /// The end of its validity (Unix time).
    pub not_after_unix: Option<i64>,
    /// The SHA-256 of its DER: what `pkcs11.serverCertSha256` pins.
    pub sha256: [u8; 32],
}

impl<'c> Probe<'c> {
    pub(super) fn new(node: &'c Node) -> Probe<'c> {
        Probe { node }
    }

    /// How the node is reached: directly or through which proxy.
    pub fn route(&self) -> &Route {
        self.node.pool.origin().route()
    }

    /// The host the first hop goes to (the proxy when there is one, else the TSB): a name, or
    /// an IP literal (IPv6 without brackets).
    pub fn host(&self) -> &str {
        match self.route().proxy() {
            Some(p) => &p.endpoint.host,
            None => &self.node.pool.origin().endpoint().host,
        }
    }

    /// The port of the first hop (see [`Probe::host`]).
    pub fn port(&self) -> u16 {
        match self.route().proxy() {
            Some(p) => p.endpoint.port,
            None => self.node.pool.origin().endpoint().port,
        }
    }

    /// Whether the node is reached over TLS (https://).
    pub fn is_tls(&self) -> bool {
        self.node.pool.origin().is_tls()
    }

    /// The addresses of the first hop, as a new connection resolves them (the module's
    /// resolver, bounded by `deadline`); else why not.
    pub fn resolve(&self, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
        self.node
            .pool
            .origin()
            .dns()
            .lookup(self.host(), self.port(), deadline)
            .map_err(|f| f.message().to_string())
    }

    /// A TCP connection to the first of `addrs` that accepts one, each try bounded by
    /// `connectTimeoutMs` and `deadline`, as a new connection of the module is made; else the
    /// error of each address tried.
    pub fn connect(
        &self,
        addrs: &[SocketAddr],
        deadline: Instant,
    ) -> Result<Connected, Vec<(SocketAddr, io::Error)>> {
        connect::connect_tcp(addrs, self.node.pool.connect_timeout(), deadline)
            .map(|(tcp, addr)| Connected { tcp, addr })
    }

    /// Through a proxy: the CONNECT tunnel to the TSB over `c`, as the module opens it (`Ok`
    /// at once when the node is reached directly); else the proxy's refusal.
    pub fn tunnel(&self, c: &mut Connected, deadline: Instant) -> Result<(), String> {
        match self.route().proxy() {
            None => Ok(()),
            Some(p) => {
                proxy::open_tunnel(&mut c.tcp, p, self.node.pool.origin().endpoint(), deadline)
                    .map_err(|f| f.message().to_string())
            }
        }
    }

    /// The connection over `c`: for https://, a complete TLS handshake with the module's TLS
    /// configuration (roots and `caPath`, host name, `serverCertSha256`, client certificate),
    /// every read and write bounded by `deadline`.
    pub fn open(&self, c: Connected, deadline: Instant) -> io::Result<Opened> {
        let conn = http::open(self.node.pool.origin(), c.tcp, deadline)?;
        let tls = conn.tls().map(|t| TlsFacts {
            protocol: t
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            certificate: t
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|der| server_certificate(der.as_ref())),
        });
        Ok(Opened { conn, tls })
    }

    /// `GET path` (below the base URL) over `o`, without credentials, and its status: any HTTP
    /// answer shows that the connection works (a TLS 1.3 server refuses a missing client
    /// certificate only after the handshake, at the first read).
    pub fn request(&self, o: Opened, path: &str) -> io::Result<u16> {
        let req = http::Request {
            method: "GET",
            path,
            headers: &[],
            body: None,
        };
        self.node.pool.send_once(o.conn, &req).map(|r| r.status)
    }
}

fn server_certificate(der: &[u8]) -> ServerCertificate {
    let parsed = crate::crypto::Certificate::from_der(der).ok();
    ServerCertificate {
        subject: parsed.as_ref().map(|c| c.subject_text.clone()),
        not_after_unix: parsed.as_ref().map(|c| c.not_after_unix),
        sha256: Sha256::digest(der).into(),
    }
}
