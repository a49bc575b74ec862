//! The core crate's door for the fuzz targets in `fuzz/`: thin wrappers that hand the
//! crate-private parsers (TSB responses in `tsb::models`, the HTTP reader) to the fuzzers, and
//! re-exports of the pure functions they drive. Compiled only with `--cfg fuzzing`, which
//! `cargo fuzz` sets; every other module is `pub(crate)`. The module crate's door
//! (`tsb_pkcs11::fuzzing`, for `ffi::convert`) re-exports this one.

use cryptoki_sys::*;
use serde_json::Value;

pub use crate::crypto::cert::Certificate;
pub use crate::crypto::der_sig::ecdsa_der_to_raw;
pub use crate::crypto::hash::{digest_info, parse_digest_info, HashAlg};
pub use crate::crypto::keys::{Curve, PublicKey};
pub use crate::crypto::verify::{verify, Scheme, SignedData};
pub use crate::crypto::{encoding, CryptoError};
pub use crate::error::{Error, Result};
pub use crate::token::mechanisms::{
    single_part, DataSink, Mechanism, Plan, PAYLOAD_LIMIT, SUPPORTED,
};
use crate::tsb::{KeyAttributes, RequestStatus};

/// The HTTP/1.1 response reader of the TSB client (`tsb::http`): the responses it reads from
/// `bytes` as from one kept-alive connection (status line, headers, sized, chunked or
/// read-to-the-end bodies of at most `max_body` bytes), each with the bytes it used.
pub fn http_responses(bytes: &[u8], max_body: usize) -> Vec<(HttpParsed, usize)> {
    crate::tsb::parse_http_responses(bytes, max_body)
}

/// One response read by [`http_responses`]: `Ok((status, body, truncated, body_error, keep))`
/// (`keep`: the connection could serve another request), or `Err((bytes seen, message))`.
pub type HttpParsed = crate::tsb::HttpParsed;

/// `GET /v1/key/{label}/attributes`.
pub fn key_attributes(v: &Value) -> std::result::Result<KeyAttributes, String> {
    crate::tsb::models::parse_key_attributes(v)
}

/// `GET /v1/key`.
pub fn key_list(v: &Value) -> std::result::Result<Vec<String>, String> {
    crate::tsb::models::parse_key_list(v)
}

/// `GET /v1/request/{id}`.
pub fn request_status(v: &Value, id: &str) -> std::result::Result<RequestStatus, String> {
    crate::tsb::models::parse_request_status(v, id)
}

/// The size a fixed-size attribute's value must have (`token::attributes::fixed_len`), so the
/// template target knows when `CKR_ATTRIBUTE_VALUE_INVALID` is the right answer.
pub fn fixed_len(attr: CK_ATTRIBUTE_TYPE) -> Option<usize> {
    crate::token::attributes::fixed_len(attr)
}
