//! The client of the Securosys Transaction Security Broker (TSB) REST API.
//!
//! This layer knows HTTP and JSON and nothing of PKCS#11: callers map [`TsbError`] to their
//! own error codes. See `docs/tsb-api.md` for the contract.
//!
//! Files: `client.rs` (requests, authentication with JWT and API keys per role with
//! rollover, retries, failover between nodes), `nodes.rs` (the nodes of a TSB cluster: health,
//! back-off, the order a call tries them in), `http.rs` (HTTP/1.1 over kept-alive TCP/TLS connections),
//! `framing.rs` (the strict response reader), `idle.rs` (TCP keepalive, the idle age of pooled
//! connections),
//! `connect.rs` (name resolution bounded by the deadline, TCP connect, the proxy tunnel),
//! `proxy.rs` (HTTP CONNECT proxies, `HTTPS_PROXY`/`NO_PROXY`), `endpoint.rs` (the URL type), `tls.rs`
//! (rustls: system roots + `caPath`, mTLS, certificate pin), `probe.rs` (the steps of a
//! connection one by one, for `tsb-pkcs11 doctor`), `models/` (request and response types),
//! `wire.rs` (a response and the ways an exchange fails), `error.rs` (the error type).
//!
//! The client owns no threads and no global sockets, so a fresh [`TsbClient`] works in a
//! child after `fork()` (a name lookup runs on a short-lived thread of its own, see
//! `connect.rs`; one still running at a fork is not the child's concern: the child's fresh
//! client has its own count of pending lookups).

mod client;
mod connect;
mod endpoint;
mod error;
mod framing;
mod http;
mod idle;
pub mod models;
mod nodes;
mod probe;
mod proxy;
mod tls;
mod wire;

#[cfg(test)]
pub(crate) mod tests;

/// For `tsb-pkcs11 doctor`, which checks each step of a connection the way the client makes it.
pub use client::encode_segment;
pub(crate) use client::NetOptions;
pub use client::{KeyAttestation, NewKey, NewKeyType, NewKeyUsage};
pub use client::{SignatureCheck, TsbClient};
pub use error::{TsbError, TsbErrorKind, TsbReason};
pub use models::{KeyAttributes, KeyList, Policy, RequestState, RequestStatus, SignRequest};
pub use probe::{Connected, Probe, TlsFacts};
pub use tls::describe_tls_error;

/// The HTTP response reader, for the fuzz target.
#[cfg(fuzzing)]
pub(crate) use framing::{parse_responses as parse_http_responses, Parsed as HttpParsed};
