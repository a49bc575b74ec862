//! Reading the values of a creation template (`C_CreateObject`, `C_GenerateKeyPair`): the
//! answers PKCS#11 v3.0 §5.8 / §5.14 give for values that do not fit.

use std::borrow::Cow;

use cryptoki_sys::*;

use crate::error::{Error, Result};

/// `CKR_TEMPLATE_INCONSISTENT`: the template asks for what the token cannot make.
pub(super) fn inconsistent(why: impl Into<Cow<'static, str>>) -> Error {
    Error::new(CKR_TEMPLATE_INCONSISTENT, why)
}

/// `CKR_ATTRIBUTE_VALUE_INVALID`: a value is not what its attribute holds.
pub(super) fn value_invalid(why: impl Into<Cow<'static, str>>) -> Error {
    Error::new(CKR_ATTRIBUTE_VALUE_INVALID, why)
}

/// A `CK_ULONG` attribute value.
pub(super) fn ulong_of(attr: &str, v: &[u8]) -> Result<CK_ULONG> {
    v.try_into()
        .map(CK_ULONG::from_ne_bytes)
        .map_err(|_| value_invalid(format!("{attr} is not a CK_ULONG")))
}

/// A `CK_BBOOL` attribute value.
pub(super) fn bool_of(attr: &str, v: &[u8]) -> Result<bool> {
    match v {
        [b] => Ok(*b != CK_FALSE),
        _ => Err(value_invalid(format!("{attr} is not a CK_BBOOL"))),
    }
}
