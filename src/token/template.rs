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

/// The PKCS#11 name of an attribute that refusals name (creation, key generation and
/// `C_SetAttributeValue` templates), else its number.
pub(super) fn attribute_name(t: CK_ATTRIBUTE_TYPE) -> String {
    let name = match t {
        CKA_LABEL => "CKA_LABEL",
        CKA_ID => "CKA_ID",
        CKA_TOKEN => "CKA_TOKEN",
        CKA_PRIVATE => "CKA_PRIVATE",
        CKA_SUBJECT => "CKA_SUBJECT",
        CKA_VALUE => "CKA_VALUE",
        CKA_SIGN => "CKA_SIGN",
        CKA_VERIFY => "CKA_VERIFY",
        CKA_DECRYPT => "CKA_DECRYPT",
        CKA_SENSITIVE => "CKA_SENSITIVE",
        CKA_EXTRACTABLE => "CKA_EXTRACTABLE",
        CKA_SIGN_RECOVER => "CKA_SIGN_RECOVER",
        CKA_VERIFY_RECOVER => "CKA_VERIFY_RECOVER",
        CKA_WRAP_WITH_TRUSTED => "CKA_WRAP_WITH_TRUSTED",
        CKA_ALWAYS_AUTHENTICATE => "CKA_ALWAYS_AUTHENTICATE",
        CKA_TRUSTED => "CKA_TRUSTED",
        CKA_COPYABLE => "CKA_COPYABLE",
        CKA_START_DATE => "CKA_START_DATE",
        CKA_END_DATE => "CKA_END_DATE",
        CKA_PARAMETER_SET => "CKA_PARAMETER_SET",
        CKA_HSS_LEVELS => "CKA_HSS_LEVELS",
        CKA_HSS_LMS_TYPES => "CKA_HSS_LMS_TYPES",
        CKA_HSS_LMOTS_TYPES => "CKA_HSS_LMOTS_TYPES",
        CKA_HSS_LMS_TYPE => "CKA_HSS_LMS_TYPE",
        CKA_HSS_LMOTS_TYPE => "CKA_HSS_LMOTS_TYPE",
        _ => return format!("attribute {t:#x}"),
    };
    name.to_string()
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
