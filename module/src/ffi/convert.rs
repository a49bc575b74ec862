//! Pointer checks and conversions between C arguments and Rust types. Every raw pointer the
//! module reads or writes goes through these few functions.

use std::mem::size_of;

use cryptoki_sys::*;

use crate::error::{Error, Result};
use crate::token::attributes::fixed_len;
use crate::token::{MechParams, Mechanism};

fn bad(why: &'static str) -> Error {
    Error::new(CKR_ARGUMENTS_BAD, why)
}

/// The most attributes a template may have. Larger counts are refused before the array is
/// read: no object has that many attributes, and a count near `CK_ULONG::MAX` would not even
/// make a valid slice.
pub(crate) const MAX_TEMPLATE: usize = 4096;

/// The longest value of a variable-length attribute (`CKA_LABEL`, `CKA_ID`, `CKA_EC_PARAMS`,
/// ...) a template may give, except `CKA_VALUE`: a TSB label or key identifier is far shorter.
pub(crate) const MAX_ATTRIBUTE_VALUE: usize = 64 * 1024;

/// The longest `CKA_VALUE` (the DER of a certificate `C_CreateObject` stores).
pub(crate) const MAX_CERTIFICATE_VALUE: usize = 1024 * 1024;

/// The most value bytes one template may give in all.
pub(crate) const MAX_TEMPLATE_BYTES: usize = 4 * 1024 * 1024;

/// The longest PIN `C_Login` reads (the `ulMaxPinLen` of `CK_TOKEN_INFO`).
pub(crate) const MAX_PIN_LEN: usize = 4096;

/// The longest `CK_EDDSA_PARAMS` context: RFC 8032 §5.1 allows at most 255 bytes; the same
/// bound holds for `CK_SIGN_ADDITIONAL_CONTEXT` (FIPS 204 §5.2, FIPS 205 §10.2).
pub(crate) const MAX_EDDSA_CONTEXT: usize = 255;

/// A length from C as `usize`.
pub(crate) fn len(n: CK_ULONG) -> Result<usize> {
    usize::try_from(n).map_err(|_| bad("length out of range"))
}

/// The longest value a template may give for attribute type `t` (fixed-size types are
/// checked by [`check_fixed_lengths`]).
pub(crate) fn max_value_len(t: CK_ATTRIBUTE_TYPE) -> usize {
    match t {
        CKA_VALUE => MAX_CERTIFICATE_VALUE,
        _ => MAX_ATTRIBUTE_VALUE,
    }
}

/// Borrows `len` bytes at `p`. NULL is allowed only with length 0; a length no slice can
/// have (above `isize::MAX`) is `CKR_ARGUMENTS_BAD`. Nothing is copied: callers that allocate
/// from the length bound it first.
///
/// # Safety
/// `p` must be NULL or point to `len` readable bytes that stay valid for `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const CK_BYTE, n: CK_ULONG) -> Result<&'a [u8]> {
    let n = len(n)?;
    if p.is_null() {
        return if n == 0 {
            Ok(&[])
        } else {
            Err(bad("NULL data pointer"))
        };
    }
    if isize::try_from(n).is_err() {
        return Err(bad("length out of range"));
    }
    // SAFETY: non-NULL, and the caller guarantees `n` readable bytes (PKCS#11 buffer convention).
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A mutable reference to an output argument; NULL gives `CKR_ARGUMENTS_BAD`.
///
/// # Safety
/// `p` must be NULL or valid and writable for `'a`.
pub(crate) unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T> {
    // SAFETY: the caller guarantees validity when non-NULL.
    unsafe { p.as_mut() }.ok_or_else(|| bad("NULL output pointer"))
}

/// Copies `s` into a blank-padded fixed field (CK_UTF8CHAR arrays are not NUL-terminated),
/// cutting at a character boundary.
pub(crate) fn padded<const N: usize>(s: &str) -> [CK_UTF8CHAR; N] {
    let mut out = [b' '; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

/// Reads a `CK_MECHANISM` and decodes the parameters of the mechanisms that take some.
///
/// # Safety
/// `p` must be NULL or point to a valid `CK_MECHANISM` whose parameter pointer is NULL or
/// points to `ulParameterLen` readable bytes.
pub(crate) unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Mechanism> {
    // SAFETY: caller guarantee; NULL is handled.
    let m = unsafe { p.as_ref() }.ok_or_else(|| bad("NULL mechanism"))?;
    let plen = len(m.ulParameterLen)?;
    if m.pParameter.is_null() || plen == 0 {
        if m.pParameter.is_null() && plen != 0 {
            return Err(bad("NULL mechanism parameter with a length"));
        }
        return Ok(Mechanism::new(m.mechanism));
    }
    let params = match m.mechanism {
        CKM_RSA_PKCS_PSS
        | CKM_SHA1_RSA_PKCS_PSS
        | CKM_SHA224_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS
        | CKM_SHA512_RSA_PKCS_PSS => {
            if plen != size_of::<CK_RSA_PKCS_PSS_PARAMS>() {
                MechParams::Invalid("CK_RSA_PKCS_PSS_PARAMS has the wrong size")
            } else {
                // SAFETY: the parameter has exactly the struct's size; read_unaligned copes
                // with any alignment.
                let pss = unsafe {
                    std::ptr::read_unaligned(m.pParameter as *const CK_RSA_PKCS_PSS_PARAMS)
                };
                MechParams::Pss {
                    hash_alg: pss.hashAlg,
                    mgf: pss.mgf,
                    salt_len: pss.sLen,
                }
            }
        }
        CKM_EDDSA => {
            if plen != size_of::<CK_EDDSA_PARAMS>() {
                MechParams::Invalid("CK_EDDSA_PARAMS has the wrong size")
            } else {
                // SAFETY: exact size checked; unaligned read.
                let ed =
                    unsafe { std::ptr::read_unaligned(m.pParameter as *const CK_EDDSA_PARAMS) };
                if !ed.pContextData.is_null() && len(ed.ulContextDataLen)? > MAX_EDDSA_CONTEXT {
                    // Refused before the context is read or copied (a NULL context with a
                    // length is CKR_ARGUMENTS_BAD below).
                    MechParams::Invalid("the EdDSA context is longer than 255 bytes")
                } else {
                    // SAFETY: the context pointer/length pair follows the buffer convention.
                    let context = unsafe { bytes(ed.pContextData, ed.ulContextDataLen) }?.to_vec();
                    MechParams::EdDsa {
                        prehash: ed.phFlag != 0,
                        context,
                    }
                }
            }
        }
        CKM_ML_DSA | CKM_SLH_DSA => {
            if plen != size_of::<CK_SIGN_ADDITIONAL_CONTEXT>() {
                MechParams::Invalid("CK_SIGN_ADDITIONAL_CONTEXT has the wrong size")
            } else {
                // SAFETY: exact size checked; unaligned read.
                let c = unsafe {
                    std::ptr::read_unaligned(m.pParameter as *const CK_SIGN_ADDITIONAL_CONTEXT)
                };
                // FIPS 204 §5.2 / FIPS 205 §10.2: a context of at most 255 bytes; refused
                // before it is read or copied.
                if !c.pContext.is_null() && len(c.ulContextLen)? > MAX_EDDSA_CONTEXT {
                    MechParams::Invalid("the signature context is longer than 255 bytes")
                } else {
                    // SAFETY: the context pointer/length pair follows the buffer convention.
                    let context = unsafe { bytes(c.pContext, c.ulContextLen) }?.to_vec();
                    MechParams::SignContext {
                        hedge: c.hedgeVariant,
                        context,
                    }
                }
            }
        }
        _ => MechParams::Invalid("this mechanism takes no parameters"),
    };
    Ok(Mechanism {
        mechanism: m.mechanism,
        params,
    })
}

/// Borrows a template's `CK_ATTRIBUTE` array (types, value pointers and lengths) without
/// reading any value.
///
/// # Safety
/// `p` must be NULL (with `count` 0) or point to `count` valid `CK_ATTRIBUTE`s.
pub(crate) unsafe fn attribute_array<'a>(
    p: *const CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<&'a [CK_ATTRIBUTE]> {
    let count = len(count)?;
    if p.is_null() {
        return if count == 0 {
            Ok(&[])
        } else {
            Err(bad("NULL template"))
        };
    }
    if count > MAX_TEMPLATE {
        return Err(bad("template too long"));
    }
    // SAFETY: caller guarantee of `count` attributes.
    Ok(unsafe { std::slice::from_raw_parts(p, count) })
}

/// Checks the length of every fixed-size attribute (`CK_BBOOL`, `CK_ULONG`, ...) before any
/// value is read: a wrong `ulValueLen` is `CKR_ATTRIBUTE_VALUE_INVALID`, so a length larger
/// than the caller's buffer is never trusted for these (PKCS#11 v2.40 §4: the attribute's type
/// fixes its size).
pub(crate) fn check_fixed_lengths(attrs: &[CK_ATTRIBUTE]) -> Result<()> {
    for a in attrs {
        if let Some(n) = fixed_len(a.type_) {
            if a.ulValueLen != n as CK_ULONG {
                return Err(Error::new(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    format!(
                        "attribute {:#x} has {} bytes; its type has {n}",
                        a.type_, a.ulValueLen
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Bounds every variable-length value of a template before any value is read or copied: one
/// value longer than [`max_value_len`] is `CKR_ATTRIBUTE_VALUE_INVALID` (PKCS#11 v3.0 §5.1.6:
/// an invalid value for a particular attribute; no value of that length is valid for this
/// token), and more than [`MAX_TEMPLATE_BYTES`] in all is `CKR_ARGUMENTS_BAD`. A NULL value
/// with a length is left to [`bytes`] (`CKR_ARGUMENTS_BAD`): nothing is read for it.
pub(crate) fn check_value_lengths(attrs: &[CK_ATTRIBUTE]) -> Result<()> {
    let mut total: usize = 0;
    for a in attrs.iter().filter(|a| !a.pValue.is_null()) {
        let max = max_value_len(a.type_);
        if a.ulValueLen > max as CK_ULONG {
            return Err(Error::new(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!(
                    "attribute {:#x} has {} bytes; at most {max} are accepted",
                    a.type_, a.ulValueLen
                ),
            ));
        }
        total += a.ulValueLen as usize;
    }
    if total > MAX_TEMPLATE_BYTES {
        return Err(bad("the template's values exceed 4 MiB in all"));
    }
    Ok(())
}

/// Copies the values of the fixed-size attributes only (after [`check_fixed_lengths`]).
///
/// # Safety
/// Each value pointer is NULL or readable for its `ulValueLen` bytes.
pub(crate) unsafe fn fixed_values(
    attrs: &[CK_ATTRIBUTE],
) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    check_fixed_lengths(attrs)?;
    attrs
        .iter()
        .filter(|a| fixed_len(a.type_).is_some())
        .map(|a| {
            // SAFETY: value pointer/length pair per the buffer convention; the length is the
            // type's own small size (checked above).
            let v = unsafe { bytes(a.pValue as *const CK_BYTE, a.ulValueLen) }?;
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

/// Copies every value of a template (after [`check_fixed_lengths`] and
/// [`check_value_lengths`]: nothing is allocated from an unchecked length).
///
/// # Safety
/// Each value pointer is NULL or readable for its `ulValueLen` bytes.
pub(crate) unsafe fn values(attrs: &[CK_ATTRIBUTE]) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    check_fixed_lengths(attrs)?;
    check_value_lengths(attrs)?;
    attrs
        .iter()
        .map(|a| {
            // SAFETY: value pointer/length pair per the buffer convention.
            let v = unsafe { bytes(a.pValue as *const CK_BYTE, a.ulValueLen) }?;
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

/// Reads a search template into (type, value) pairs; fixed-size attributes of the wrong
/// length are refused before any value is read.
///
/// # Safety
/// `p` must be NULL (with `count` 0) or point to `count` valid `CK_ATTRIBUTE`s whose values
/// are NULL or readable for `ulValueLen` bytes.
pub(crate) unsafe fn template(
    p: *const CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { values(attribute_array(p, count)?) }
}

/// An object-creation template: an attribute given more than once counts once when the values
/// agree; conflicting values give `CKR_TEMPLATE_INCONSISTENT` (PKCS#11 v2.40 §4.1.1: a
/// repeated attribute either acts as if given once or fails so).
pub(crate) fn without_repeats(
    all: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>,
) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    let mut out: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = Vec::with_capacity(all.len());
    for (t, v) in all {
        match out.iter().find(|(seen, _)| *seen == t) {
            None => out.push((t, v)),
            Some((_, earlier)) if *earlier == v => {}
            Some(_) => {
                return Err(Error::new(
                    CKR_TEMPLATE_INCONSISTENT,
                    format!("attribute {t:#x} is given twice with different values"),
                ))
            }
        }
    }
    Ok(out)
}
