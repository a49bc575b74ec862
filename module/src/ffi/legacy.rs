//! Functions this token answers with a fixed return value after the usual checks: the legacy
//! parallel-function calls and random numbers (the token has no RNG: `CKF_RNG` is not set).

use cryptoki_sys::*;

use super::{guard, token};
use crate::error::Error;

/// `C_GetFunctionStatus` (PKCS#11 v2.40 §5.16): a legacy function that "should simply return
/// the value CKR_FUNCTION_NOT_PARALLEL" (after the initialisation check, like SoftHSM2).
#[no_mangle]
pub extern "C" fn C_GetFunctionStatus(session: CK_SESSION_HANDLE) -> CK_RV {
    log::trace!("C_GetFunctionStatus(session={session})");
    guard("C_GetFunctionStatus", || {
        token()?;
        Err(Error::rv(CKR_FUNCTION_NOT_PARALLEL))
    })
}

/// `C_CancelFunction` (PKCS#11 v2.40 §5.16): legacy, `CKR_FUNCTION_NOT_PARALLEL`.
#[no_mangle]
pub extern "C" fn C_CancelFunction(session: CK_SESSION_HANDLE) -> CK_RV {
    log::trace!("C_CancelFunction(session={session})");
    guard("C_CancelFunction", || {
        token()?;
        Err(Error::rv(CKR_FUNCTION_NOT_PARALLEL))
    })
}

/// `C_SeedRandom` (PKCS#11 v2.40 §5.15): the session and arguments are checked, then
/// `CKR_RANDOM_NO_RNG` (the token has no random number generator). Nothing is read.
#[no_mangle]
pub extern "C" fn C_SeedRandom(
    session: CK_SESSION_HANDLE,
    seed: *mut CK_BYTE,
    seed_len: CK_ULONG,
) -> CK_RV {
    log::trace!("C_SeedRandom(session={session}, seed_len={seed_len})");
    guard("C_SeedRandom", || {
        token()?.random(session, !seed.is_null() || seed_len == 0)
    })
}

/// `C_GenerateRandom` (PKCS#11 v2.40 §5.15): the session and arguments are checked, then
/// `CKR_RANDOM_NO_RNG`. Nothing is written.
#[no_mangle]
pub extern "C" fn C_GenerateRandom(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
) -> CK_RV {
    log::trace!("C_GenerateRandom(session={session}, len={data_len})");
    guard("C_GenerateRandom", || {
        token()?.random(session, !data.is_null() || data_len == 0)
    })
}
