//! Message digesting entry points (PKCS#11 v2.40 §5.10), computed locally.

use cryptoki_sys::*;

use super::convert::{bytes, mechanism};
use super::signing::{capacity, deliver};
use super::{guard, initialised, token};
use crate::error::Result;
use crate::token::{DigestOutput, SignOutput};

fn as_output(r: Result<DigestOutput>) -> Result<SignOutput> {
    r.map(|d| match d {
        DigestOutput::Length(n) => SignOutput::Length(n),
        DigestOutput::Digest(v) => SignOutput::Signature(v),
    })
}

/// `C_DigestInit`.
#[no_mangle]
pub unsafe extern "C" fn C_DigestInit(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
) -> CK_RV {
    log::trace!("C_DigestInit(session={session})");
    guard("C_DigestInit", || {
        initialised()?;
        // SAFETY: `mech` is a valid CK_MECHANISM (or NULL, refused).
        let m = unsafe { mechanism(mech) }?;
        token()?.digest_init(session, &m)
    })
}

/// `C_Digest`: a NULL output pointer asks for the length; the operation stays active then and
/// after `CKR_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn C_Digest(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    log::trace!("C_Digest(session={session}, data_len={data_len}, digest={digest:?})");
    guard("C_Digest", || {
        let t = token()?;
        // SAFETY: `data` holds `data_len` bytes; `digest`/`digest_len` follow the output
        // convention.
        let args =
            unsafe { bytes(data, data_len).and_then(|d| Ok((d, capacity(digest, digest_len)?))) };
        // Bad arguments end the operation like any other error (§5.2).
        let (data, cap) = args.inspect_err(|_| t.end_digest(session))?;
        let result = as_output(t.digest(session, data, cap));
        // SAFETY: as above.
        unsafe { deliver(result, digest, digest_len) }
    })
}

/// `C_DigestUpdate`.
#[no_mangle]
pub unsafe extern "C" fn C_DigestUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
) -> CK_RV {
    log::trace!("C_DigestUpdate(session={session}, part_len={part_len})");
    guard("C_DigestUpdate", || {
        let t = token()?;
        // SAFETY: `part` holds `part_len` bytes.
        let part = unsafe { bytes(part, part_len) }.inspect_err(|_| t.end_digest(session))?;
        t.digest_update(session, part)
    })
}

/// `C_DigestKey`: `CKR_KEY_INDIGESTIBLE` for this token's keys.
#[no_mangle]
pub extern "C" fn C_DigestKey(session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> CK_RV {
    log::trace!("C_DigestKey(session={session}, key={key})");
    guard("C_DigestKey", || token()?.digest_key(session, key))
}

/// `C_DigestFinal`.
#[no_mangle]
pub unsafe extern "C" fn C_DigestFinal(
    session: CK_SESSION_HANDLE,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    log::trace!("C_DigestFinal(session={session}, digest={digest:?})");
    guard("C_DigestFinal", || {
        let t = token()?;
        // SAFETY: output convention.
        let cap = unsafe { capacity(digest, digest_len) }.inspect_err(|_| t.end_digest(session))?;
        let result = as_output(t.digest_final(session, cap));
        // SAFETY: output convention.
        unsafe { deliver(result, digest, digest_len) }
    })
}
