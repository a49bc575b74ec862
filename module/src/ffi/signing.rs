//! Signing (PKCS#11 v2.40 §5.11) and verification (§5.13) entry points.

use cryptoki_sys::*;

use super::convert::{bytes, len, mechanism, out};
use super::{guard, initialised, token};
use crate::error::Result;
use crate::token::SignOutput;

/// Writes a signature or digest (or its length) back under the variable-length output convention; the
/// needed length is reported with `CKR_BUFFER_TOO_SMALL` too.
///
/// # Safety
/// `sig` is NULL or has `*sig_len` writable bytes; `sig_len` is valid.
pub(super) unsafe fn deliver(
    result: Result<SignOutput>,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> Result<()> {
    // SAFETY: caller guarantee on `sig_len`.
    let sig_len = unsafe { out(sig_len) }?;
    match result {
        Ok(SignOutput::Length(n)) => {
            *sig_len = n as CK_ULONG;
            Ok(())
        }
        Ok(SignOutput::Signature(s)) => {
            // SAFETY: the core checked that `*sig_len >= s.len()` before signing.
            unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), sig, s.len()) };
            *sig_len = s.len() as CK_ULONG;
            Ok(())
        }
        Err(e) => {
            if let Some(n) = e.needed() {
                *sig_len = n as CK_ULONG;
            }
            Err(e)
        }
    }
}

/// The capacity of an output buffer: `None` for a size query (NULL buffer).
///
/// # Safety
/// `sig_len` is NULL or valid.
pub(super) unsafe fn capacity(sig: *mut CK_BYTE, sig_len: *mut CK_ULONG) -> Result<Option<usize>> {
    // SAFETY: caller guarantee.
    let n = *unsafe { out(sig_len) }?;
    Ok(if sig.is_null() { None } else { Some(len(n)?) })
}

/// `C_SignInit`.
#[no_mangle]
pub unsafe extern "C" fn C_SignInit(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    log::trace!("C_SignInit(session={session}, key={key})");
    guard("C_SignInit", || {
        initialised()?;
        // SAFETY: `mech` is a valid CK_MECHANISM (or NULL, refused).
        let m = unsafe { mechanism(mech) }?;
        log::trace!("C_SignInit: mechanism 0x{:x} {:?}", m.mechanism, m.params);
        token()?.sign_init(session, &m, key)
    })
}

/// `C_Sign`: a NULL signature pointer asks for the length; the operation stays active then and
/// after `CKR_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn C_Sign(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    log::trace!("C_Sign(session={session}, data_len={data_len}, sig={sig:?})");
    guard("C_Sign", || {
        let t = token()?;
        // SAFETY: `data` holds `data_len` bytes; `sig`/`sig_len` follow the output convention.
        let args = unsafe { bytes(data, data_len).and_then(|d| Ok((d, capacity(sig, sig_len)?))) };
        // Bad arguments end the operation like any other error (PKCS#11 v2.40 §5.11).
        let (data, cap) = args.inspect_err(|_| t.end_sign(session))?;
        let result = t.sign(session, data, cap);
        // SAFETY: as above.
        unsafe { deliver(result, sig, sig_len) }
    })
}

/// `C_SignUpdate`.
#[no_mangle]
pub unsafe extern "C" fn C_SignUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
) -> CK_RV {
    log::trace!("C_SignUpdate(session={session}, part_len={part_len})");
    guard("C_SignUpdate", || {
        let t = token()?;
        // SAFETY: `part` holds `part_len` bytes.
        let part = unsafe { bytes(part, part_len) }.inspect_err(|_| t.end_sign(session))?;
        t.sign_update(session, part)
    })
}

/// `C_SignFinal`.
#[no_mangle]
pub unsafe extern "C" fn C_SignFinal(
    session: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    log::trace!("C_SignFinal(session={session}, sig={sig:?})");
    guard("C_SignFinal", || {
        let t = token()?;
        // SAFETY: output convention.
        let cap = unsafe { capacity(sig, sig_len) }.inspect_err(|_| t.end_sign(session))?;
        let result = t.sign_final(session, cap);
        // SAFETY: output convention.
        unsafe { deliver(result, sig, sig_len) }
    })
}

/// `C_VerifyInit` (local verification with the public key).
#[no_mangle]
pub unsafe extern "C" fn C_VerifyInit(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    log::trace!("C_VerifyInit(session={session}, key={key})");
    guard("C_VerifyInit", || {
        initialised()?;
        // SAFETY: `mech` is a valid CK_MECHANISM (or NULL, refused).
        let m = unsafe { mechanism(mech) }?;
        token()?.verify_init(session, &m, key)
    })
}

/// `C_Verify`.
#[no_mangle]
pub unsafe extern "C" fn C_Verify(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    log::trace!("C_Verify(session={session}, data_len={data_len}, sig_len={sig_len})");
    guard("C_Verify", || {
        let t = token()?;
        // SAFETY: both buffers hold the given lengths.
        let args = unsafe { bytes(data, data_len).and_then(|d| Ok((d, bytes(sig, sig_len)?))) };
        // A call to C_Verify always terminates the operation (PKCS#11 v3.0 §5.15), bad
        // arguments included, as C_Sign's do (§5.13).
        let (data, sig) = args.inspect_err(|_| t.end_verify(session))?;
        t.verify(session, data, sig)
    })
}

/// `C_VerifyUpdate`.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
) -> CK_RV {
    log::trace!("C_VerifyUpdate(session={session}, part_len={part_len})");
    guard("C_VerifyUpdate", || {
        let t = token()?;
        // SAFETY: `part` holds `part_len` bytes.
        // A failing C_VerifyUpdate terminates the operation (v3.0 §5.15).
        let part = unsafe { bytes(part, part_len) }.inspect_err(|_| t.end_verify(session))?;
        t.verify_update(session, part)
    })
}

/// `C_VerifyFinal`.
#[no_mangle]
pub unsafe extern "C" fn C_VerifyFinal(
    session: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    log::trace!("C_VerifyFinal(session={session}, sig_len={sig_len})");
    guard("C_VerifyFinal", || {
        let t = token()?;
        // SAFETY: `sig` holds `sig_len` bytes.
        // A call to C_VerifyFinal always terminates the operation (v3.0 §5.15).
        let sig = unsafe { bytes(sig, sig_len) }.inspect_err(|_| t.end_verify(session))?;
        t.verify_final(session, sig)
    })
}
