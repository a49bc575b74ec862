//! What crosses the wire between the module and a TSB node, below the connection pool: an
//! HTTP response, and the ways an exchange fails. `connect.rs`, `proxy.rs`, `framing.rs` and
//! `http.rs` all speak these, so they live below them (no file cycle).

use std::io;

/// A response: the status and the body, at most `max_body` bytes.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The body was longer than `max_body` (the rest is not read).
    pub truncated: bool,
    /// Reading the body failed after the head arrived (the body holds what was read).
    pub body_error: Option<Failure>,
}

/// How an exchange failed.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Nothing was sent: DNS, connect, TLS handshake.
    NotSent(String),
    /// A reused connection was closed or reset before any byte of a response arrived
    /// (while the request was written, or after).
    Stale(String),
    /// A read or write timed out after the connection was made.
    Timeout(String),
    /// The connection failed after the request was (partly) sent, or the response is not
    /// HTTP.
    Transport(String),
}

impl Failure {
    /// What happened, in words.
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::NotSent(m)
            | Failure::Stale(m)
            | Failure::Timeout(m)
            | Failure::Transport(m) => m,
        }
    }
}

/// A read or write that ran into its deadline (the socket timeout).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}
