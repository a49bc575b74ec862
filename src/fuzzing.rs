//! The one public door into the crate for the fuzz targets in `fuzz/`: thin wrappers that hand
//! the crate-private parsers (C argument decoding in `ffi::convert`, TSB responses in
//! `tsb::models`) to the fuzzers, and re-exports of the pure functions they drive. Compiled
//! only with `--cfg fuzzing`, which `cargo fuzz` sets; every other module is `pub(crate)`.

use std::mem::size_of;

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

/// Decodes a `CK_MECHANISM` as `C_SignInit` does. `parameter` is the parameter block as the
/// application would pass it (copied to an 8-byte aligned buffer), or a NULL pointer with
/// `parameter.len()` as its length when `null_parameter` is set. A fuzzer cannot make valid
/// pointers, so a `CKM_EDDSA` block of `CK_EDDSA_PARAMS`'s size gets its context pointer and
/// length set to `context`.
pub fn mechanism(
    mechanism: CK_MECHANISM_TYPE,
    parameter: &[u8],
    null_parameter: bool,
    context: &[u8],
) -> Result<Mechanism> {
    let mut block = vec![0u64; parameter.len().div_ceil(8)];
    // SAFETY: `block` has at least `parameter.len()` bytes; u64 storage only adds alignment.
    unsafe {
        std::ptr::copy_nonoverlapping(
            parameter.as_ptr(),
            block.as_mut_ptr().cast::<u8>(),
            parameter.len(),
        )
    };
    if mechanism == CKM_EDDSA && parameter.len() == size_of::<CK_EDDSA_PARAMS>() {
        let p = block.as_mut_ptr().cast::<CK_EDDSA_PARAMS>();
        // SAFETY: `block` holds one aligned CK_EDDSA_PARAMS; `context` outlives the decoding.
        unsafe {
            (*p).pContextData = context.as_ptr() as *mut CK_BYTE;
            (*p).ulContextDataLen = context.len() as CK_ULONG;
        }
    }
    let m = CK_MECHANISM {
        mechanism,
        pParameter: if null_parameter {
            std::ptr::null_mut()
        } else {
            block.as_mut_ptr().cast()
        },
        ulParameterLen: parameter.len() as CK_ULONG,
    };
    // SAFETY: the parameter pointer is NULL or points to `ulParameterLen` readable bytes, and
    // an EdDSA block's context pointer is valid for its length.
    unsafe { crate::ffi::convert::mechanism(&m) }
}

/// A decoded template: (type, value) pairs.
pub type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

/// A template as `C_FindObjectsInit` (first result) and `C_CreateObject` (second) read it.
/// `None` values are NULL pointers whose length is `null_len`.
pub fn template(
    attrs: &[(CK_ATTRIBUTE_TYPE, Option<Vec<u8>>)],
    null_len: CK_ULONG,
) -> (Result<Template>, Result<Template>) {
    let mut values: Vec<Option<Vec<u8>>> = attrs.iter().map(|(_, v)| v.clone()).collect();
    let c: Vec<CK_ATTRIBUTE> = attrs
        .iter()
        .zip(values.iter_mut())
        .map(|((t, _), v)| match v {
            Some(v) => CK_ATTRIBUTE {
                type_: *t,
                pValue: v.as_mut_ptr().cast(),
                ulValueLen: v.len() as CK_ULONG,
            },
            None => CK_ATTRIBUTE {
                type_: *t,
                pValue: std::ptr::null_mut(),
                ulValueLen: null_len,
            },
        })
        .collect();
    let (p, n) = (c.as_ptr(), c.len() as CK_ULONG);
    // SAFETY: `c` holds `n` attributes whose values are NULL or valid for their lengths.
    unsafe {
        (
            crate::ffi::convert::template(p, n),
            crate::ffi::convert::template(p, n).and_then(crate::ffi::convert::without_repeats),
        )
    }
}

/// The HTTP/1.1 response reader of the TSB client (`tsb::http`): the responses it reads from
/// `bytes` as from one kept-alive connection (status line, headers, sized, chunked or
/// read-to-the-end bodies of at most `max_body` bytes), each with the bytes it used.
pub fn http_responses(bytes: &[u8], max_body: usize) -> Vec<(HttpParsed, usize)> {
    crate::tsb::parse_http_responses(bytes, max_body)
}

/// One response read by [`http_responses`]: `Ok((status, body, truncated, body_error, keep))`
/// (`keep`: the connection could serve another request), or `Err((bytes seen, message))`.
pub type HttpParsed =
    std::result::Result<(u16, Vec<u8>, bool, Option<String>, bool), (usize, String)>;

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
