//! The fuzz targets' door into the module (only with `--cfg fuzzing`, which `cargo fuzz` sets):
//! the C argument decoding of `ffi::convert` (mechanism parameters, templates whose lengths may
//! lie), beside everything of the core crate's own door (`tsb_pkcs11_core::fuzzing`: crypto
//! parsers, TSB responses, the HTTP reader), re-exported so the targets use one path.

use std::mem::size_of;

use cryptoki_sys::*;

pub use tsb_pkcs11_core::fuzzing::*;

/// Decodes a `CK_MECHANISM` as `C_SignInit` does. `parameter` is the parameter block as the
/// application would pass it (copied to an 8-byte aligned buffer), or a NULL pointer with
/// `parameter.len()` as its length when `null_parameter` is set. A fuzzer cannot make valid
/// pointers, so a `CKM_EDDSA` block of `CK_EDDSA_PARAMS`'s size, and a `CKM_ML_DSA` or
/// `CKM_SLH_DSA` block of `CK_SIGN_ADDITIONAL_CONTEXT`'s size, get their context pointer and
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
    if matches!(mechanism, CKM_ML_DSA | CKM_SLH_DSA)
        && parameter.len() == size_of::<CK_SIGN_ADDITIONAL_CONTEXT>()
    {
        let p = block.as_mut_ptr().cast::<CK_SIGN_ADDITIONAL_CONTEXT>();
        // SAFETY: `block` holds one aligned CK_SIGN_ADDITIONAL_CONTEXT; `context` outlives the
        // decoding.
        unsafe {
            (*p).pContext = context.as_ptr() as *mut CK_BYTE;
            (*p).ulContextLen = context.len() as CK_ULONG;
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
    // an EdDSA or sign-context block's context pointer is valid for its length.
    unsafe { crate::ffi::convert::mechanism(&m) }
}

/// A decoded template: (type, value) pairs.
pub type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

/// The most attributes a template may have (`ffi::convert::MAX_TEMPLATE`).
pub const MAX_TEMPLATE: usize = crate::ffi::convert::MAX_TEMPLATE;

/// The most value bytes one template may give in all (`ffi::convert::MAX_TEMPLATE_BYTES`).
pub const MAX_TEMPLATE_BYTES: usize = crate::ffi::convert::MAX_TEMPLATE_BYTES;

/// The longest value the reader accepts for an attribute type (`ffi::convert::max_value_len`).
pub fn max_value_len(attr: CK_ATTRIBUTE_TYPE) -> usize {
    crate::ffi::convert::max_value_len(attr)
}

/// One attribute of a template a fuzzer builds: its value (`None`: a NULL pointer) and the
/// length the attribute claims (`None`: the value's own length, or `null_len` for NULL).
#[derive(Clone, Debug)]
pub struct Attr {
    pub type_: CK_ATTRIBUTE_TYPE,
    pub value: Option<Vec<u8>>,
    pub claimed: Option<CK_ULONG>,
}

/// What [`template`] handed to the reader for one attribute: the length it claimed and the
/// bytes behind its pointer (`None`: NULL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    pub type_: CK_ATTRIBUTE_TYPE,
    pub claimed: CK_ULONG,
    pub buffer: Option<Vec<u8>>,
}

/// Room the padded buffers may take in all (see [`template`]).
const PAD_BUDGET: usize = 2 * MAX_TEMPLATE_BYTES;

/// Reads a template whose lengths may lie, exactly as `C_FindObjectsInit` (first result) and
/// `C_CreateObject` (second) read it, through `ffi::convert`'s bounded reader.
///
/// A claimed length longer than the value stands: when it is within the reader's bound
/// (`max_value_len`) the buffer is zero-padded to it (an accepted length must be readable
/// memory), and when it is above the bound the short buffer is passed as it is, so a reader
/// that read before refusing would overflow it (AddressSanitizer reports that). Padding stops
/// at a budget; past it a claim is cut to the value's length. `count` is the template's
/// `ulCount`: above [`MAX_TEMPLATE`] it is passed as it is (with the shorter array: it must be
/// refused before the array is read), otherwise the array's own length is used. Returns the
/// two readings, the count and the attributes as passed.
pub fn template(
    attrs: &[Attr],
    null_len: CK_ULONG,
    count: CK_ULONG,
) -> (Result<Template>, Result<Template>, CK_ULONG, Vec<Passed>) {
    let mut budget = PAD_BUDGET;
    let passed: Vec<Passed> = attrs
        .iter()
        .map(|a| match &a.value {
            None => Passed {
                type_: a.type_,
                claimed: a.claimed.unwrap_or(null_len),
                buffer: None,
            },
            Some(v) => {
                let claimed = a.claimed.unwrap_or(v.len() as CK_ULONG);
                let want = usize::try_from(claimed).unwrap_or(usize::MAX);
                let (claimed, buffer) = if want <= v.len() {
                    (claimed, v.clone())
                } else if want <= max_value_len(a.type_) {
                    if want - v.len() <= budget {
                        budget -= want - v.len();
                        let mut b = v.clone();
                        b.resize(want, 0);
                        (claimed, b)
                    } else {
                        (v.len() as CK_ULONG, v.clone())
                    }
                } else {
                    (claimed, v.clone())
                };
                Passed {
                    type_: a.type_,
                    claimed,
                    buffer: Some(buffer),
                }
            }
        })
        .collect();
    let mut buffers: Vec<Option<Vec<u8>>> = passed.iter().map(|p| p.buffer.clone()).collect();
    let c: Vec<CK_ATTRIBUTE> = passed
        .iter()
        .zip(buffers.iter_mut())
        .map(|(p, b)| CK_ATTRIBUTE {
            type_: p.type_,
            pValue: match b {
                // A zero-length buffer still gets a non-NULL pointer (a dangling one, never
                // read: the reader reads at most the claimed length, 0 here, or refuses).
                Some(b) => b.as_mut_ptr().cast(),
                None => std::ptr::null_mut(),
            },
            ulValueLen: p.claimed,
        })
        .collect();
    let count = if usize::try_from(count).is_ok_and(|n| n > MAX_TEMPLATE) {
        count
    } else {
        c.len() as CK_ULONG
    };
    let p = c.as_ptr();
    // SAFETY: `c` holds `c.len()` attributes; a larger `count` (above MAX_TEMPLATE) is refused
    // before the array is read. Each value is NULL, or readable for its claimed length when
    // that length is within the reader's bound; a longer claim is refused before any read.
    let (search, create) = unsafe {
        (
            crate::ffi::convert::template(p, count),
            crate::ffi::convert::template(p, count).and_then(crate::ffi::convert::without_repeats),
        )
    };
    (search, create, count, passed)
}
