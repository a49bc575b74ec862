//! The words the files of the client share: [`TsbClient`] (its methods are in `client.rs` and
//! its children), one request ([`Call`]) and the path segments of a URL.

use std::fmt;
#[cfg(test)]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
#[cfg(test)]
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;

use super::retry::Retry;
use crate::config::Secret;
use crate::tsb::error::{TsbError, TsbErrorKind};
use crate::tsb::nodes::{Form, Nodes};

/// Percent-encodes one path segment: everything but the RFC 3986 §2.3 unreserved characters
/// `A-Z a-z 0-9 - . _ ~` (so `/` too).
pub fn encode_segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// One request to make.
pub(super) struct Call<'a> {
    pub(super) method: &'static str,
    /// The endpoint without ids, for errors and logs.
    pub(super) endpoint: &'static str,
    /// The path with its (encoded) ids.
    pub(super) path: String,
    pub(super) body: Option<Vec<u8>>,
    pub(super) retry: Retry,
    /// Non-2xx statuses handed to the parser instead of becoming errors.
    pub(super) accept: &'static [u16],
    /// A bearer token to use instead of the login / configured one.
    pub(super) bearer: Option<&'a Secret>,
    /// The single API key to use instead of the role's keys (no rollover).
    pub(super) api_key: Option<&'a Secret>,
    /// Further secrets (e.g. a key password) to keep out of error messages.
    pub(super) secrets: Vec<&'a str>,
    /// For a call the TSB offers in two forms: this call's form ...
    pub(super) form: Option<Form>,
    /// ... and the other form, sent to a node that does not know this one (`client/forms.rs`).
    pub(super) fallback: Option<Box<Call<'a>>>,
}

impl<'a> Call<'a> {
    pub(super) fn new(
        method: &'static str,
        endpoint: &'static str,
        path: String,
        retry: Retry,
    ) -> Self {
        Call {
            method,
            endpoint,
            path,
            body: None,
            retry,
            accept: &[],
            bearer: None,
            api_key: None,
            secrets: Vec::new(),
            form: None,
            fallback: None,
        }
    }

    /// This call in `form`, with `other` as the fallback (see `client/forms.rs`).
    pub(super) fn with_fallback(mut self, form: Form, other: Option<Call<'a>>) -> Self {
        self.form = Some(form);
        self.fallback = other.map(Box::new);
        self
    }

    pub(super) fn json_body(mut self, body: &Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }
}

/// The client of one TSB. `Send + Sync`; share it through an `Arc`. It owns no threads.
pub struct TsbClient {
    /// The TSB nodes (one unless `restApi` is an array), each with its kept-alive connections:
    /// reads, idempotent requests, synchronous signs. Requests that must never be sent twice
    /// (approval requests, certificate and key changes) go on a new connection each: a pooled
    /// connection the TSB is closing could swallow one with no way to tell whether it arrived.
    pub(super) nodes: Nodes,
    /// Connections opened (TCP connects attempted).
    #[cfg(test)]
    pub(super) opened: Arc<AtomicU64>,
    pub(super) token: Option<Secret>,
    /// Indexed by [`Role::index`].
    pub(super) api_keys: [Vec<Secret>; 3],
    /// The index of the key of each role that worked last.
    pub(super) key_index: [AtomicUsize; 3],
    pub(super) login_bearer: RwLock<Option<Secret>>,
    pub(super) login_operation_key: RwLock<Option<Secret>>,
    pub(super) retries: u32,
    pub(super) backoff_base: Duration,
    /// `requestTimeoutMs`: the deadline of one call, retries included.
    pub(super) request_timeout: Duration,
    /// `connectTimeoutMs`, at most `requestTimeoutMs`.
    pub(super) connect_timeout: Duration,
}

impl fmt::Debug for TsbClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsbClient")
            .field("nodes", &self.node_urls())
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// A path segment for a label or id; `.`, `..` and empty are refused (URL normalisation
/// would change the path).
pub(super) fn segment(value: &str, endpoint: &str) -> Result<String, TsbError> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(TsbError::new(
            endpoint,
            TsbErrorKind::Config(format!("\"{value}\" cannot be used in a URL path")),
        ));
    }
    Ok(encode_segment(value))
}
