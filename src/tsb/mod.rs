//! The client of the Securosys Transaction Security Broker (TSB) REST API.
//!
//! This layer knows HTTP and JSON and nothing of PKCS#11: callers map [`TsbError`] to their
//! own error codes. See `docs/tsb-api.md` for the contract.
//!
//! Files: `client.rs` (requests, authentication with JWT and API keys per role with
//! rollover, retries, failover between nodes), `nodes.rs` (the nodes of a TSB cluster: health,
//! back-off, the order a call tries them in), `http.rs` (HTTP/1.1 over kept-alive TCP/TLS connections), `tls.rs`
//! (rustls: system roots + `caPath`, mTLS, certificate pin), `models.rs` (request and response
//! types), `policy.rs` (strict key policies for new keys), `error.rs` (the error type).
//!
//! The client owns no threads and no global sockets, so a fresh [`TsbClient`] works in a
//! child after `fork()`.

mod client;
mod error;
mod http;
pub mod models;
mod nodes;
mod tls;

#[cfg(test)]
mod tests;

/// For `tsb-pkcs11 doctor`, which checks each step of a connection the way the client makes it.
pub use client::encode_segment;
pub use client::{KeyAttestation, NewKey, NewKeyType, NewKeyUsage};
pub use client::{SignatureCheck, TsbClient};
pub use error::{TsbError, TsbErrorKind, TsbReason};
pub use models::{KeyAttributes, Policy, RequestState, RequestStatus, SignRequest};
pub use tls::{client_config, describe_tls_error};

/// The HTTP response reader, for the fuzz target.
#[cfg(fuzzing)]
pub(crate) use http::{parse_responses as parse_http_responses, Parsed as HttpParsed};
