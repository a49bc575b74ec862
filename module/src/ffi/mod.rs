//! The C ABI: `extern "C"` entry points (PKCS#11 v2.40, v3.0 and v3.2). Each one checks its pointers,
//! converts arguments to Rust types, calls the [`Token`] core inside `catch_unwind`, and maps
//! the result to a `CK_RV`. Nothing else lives here, except `os.rs`: the few `libc` calls other
//! layers need (this is the only folder with `unsafe`).
//!
//! Every entry point but `C_Initialize`, `C_GetFunctionList`, `C_GetInterfaceList` and
//! `C_GetInterface` answers `CKR_CRYPTOKI_NOT_INITIALIZED` before `C_Initialize` (and after
//! `C_Finalize`) whatever its arguments: that check comes first (PKCS#11 v3.0 §5.1.1).
//!
//! Nothing is allocated from a length the caller gives without a bound checked first
//! (`convert.rs`: template counts and values, mechanism parameters, PINs; the token bounds
//! data to sign), so a length larger than its buffer fails with a return value instead of
//! aborting the host process on a failed allocation.
//!
//! Safety contract of every entry point: the caller follows PKCS#11 (pointers are NULL or valid
//! for the lengths given). Each `unsafe` block states the part of that contract it relies on.
#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn)]

pub(crate) mod convert;
mod digest;
mod general;
mod keygen;
mod legacy;
mod objects;
mod sessions;
mod signing;
mod slots;
mod unsupported;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cryptoki_sys::*;
use parking_lot::RwLock;

use crate::error::{rv_name, Error, Result};
use crate::token::Token;

pub(crate) use digest::*;
pub(crate) use general::*;
pub(crate) use keygen::*;
pub(crate) use legacy::*;
pub(crate) use objects::*;
pub(crate) use sessions::*;
pub(crate) use signing::*;
pub(crate) use slots::*;
pub(crate) use unsupported::*;

/// The initialised module: its token (none when no configuration file exists at all, see
/// `C_Initialize`), and the process that initialised it.
struct Instance {
    token: Option<Arc<Token>>,
    pid: u32,
}

static STATE: RwLock<Option<Instance>> = parking_lot::const_rwlock(None);

/// The token, or `CKR_CRYPTOKI_NOT_INITIALIZED`; `CKR_SLOT_ID_INVALID` when the module runs
/// without a configuration and so has no slot. The lock is held only to clone the `Arc`: a
/// slow call never blocks `C_Finalize` or other calls.
fn token() -> Result<Arc<Token>> {
    initialised()?.ok_or_else(|| Error::rv(CKR_SLOT_ID_INVALID))
}

/// `CKR_CRYPTOKI_NOT_INITIALIZED`, or the token (`None`: no configuration, no slot).
fn initialised() -> Result<Option<Arc<Token>>> {
    STATE
        .read()
        .as_ref()
        .map(|i| i.token.clone())
        .ok_or_else(|| Error::rv(CKR_CRYPTOKI_NOT_INITIALIZED))
}

/// Runs an entry point's body: panics are caught (never unwound into C), errors become their
/// `CK_RV`, and the result is logged at trace level.
fn guard(name: &str, body: impl FnOnce() -> Result<()>) -> CK_RV {
    let rv = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => {
            // The message may quote the TSB (network text): shown sanitised.
            log::debug!("{name}: {}", crate::logging::Net(&e.to_string()));
            e.code()
        }
        Err(_) => {
            log::error!("{name}: internal error (panic caught at the C boundary)");
            CKR_GENERAL_ERROR
        }
    };
    log::trace!("{name} -> {}", rv_name(rv));
    rv
}

/// Builds a function list: the PKCS#11 v2.40 functions every list has, then `$extra`.
macro_rules! function_list {
    ($list:ident, $major:literal, $minor:literal $(, $extra:ident)* $(,)?) => {
        $list {
            version: CK_VERSION {
                major: $major,
                minor: $minor,
            },
            C_Initialize: Some(C_Initialize),
            C_Finalize: Some(C_Finalize),
            C_GetInfo: Some(C_GetInfo),
            C_GetFunctionList: Some(C_GetFunctionList),
            C_GetSlotList: Some(C_GetSlotList),
            C_GetSlotInfo: Some(C_GetSlotInfo),
            C_GetTokenInfo: Some(C_GetTokenInfo),
            C_GetMechanismList: Some(C_GetMechanismList),
            C_GetMechanismInfo: Some(C_GetMechanismInfo),
            C_InitToken: Some(C_InitToken),
            C_InitPIN: Some(C_InitPIN),
            C_SetPIN: Some(C_SetPIN),
            C_OpenSession: Some(C_OpenSession),
            C_CloseSession: Some(C_CloseSession),
            C_CloseAllSessions: Some(C_CloseAllSessions),
            C_GetSessionInfo: Some(C_GetSessionInfo),
            C_GetOperationState: Some(C_GetOperationState),
            C_SetOperationState: Some(C_SetOperationState),
            C_Login: Some(C_Login),
            C_Logout: Some(C_Logout),
            C_CreateObject: Some(C_CreateObject),
            C_CopyObject: Some(C_CopyObject),
            C_DestroyObject: Some(C_DestroyObject),
            C_GetObjectSize: Some(C_GetObjectSize),
            C_GetAttributeValue: Some(C_GetAttributeValue),
            C_SetAttributeValue: Some(C_SetAttributeValue),
            C_FindObjectsInit: Some(C_FindObjectsInit),
            C_FindObjects: Some(C_FindObjects),
            C_FindObjectsFinal: Some(C_FindObjectsFinal),
            C_EncryptInit: Some(C_EncryptInit),
            C_Encrypt: Some(C_Encrypt),
            C_EncryptUpdate: Some(C_EncryptUpdate),
            C_EncryptFinal: Some(C_EncryptFinal),
            C_DecryptInit: Some(C_DecryptInit),
            C_Decrypt: Some(C_Decrypt),
            C_DecryptUpdate: Some(C_DecryptUpdate),
            C_DecryptFinal: Some(C_DecryptFinal),
            C_DigestInit: Some(C_DigestInit),
            C_Digest: Some(C_Digest),
            C_DigestUpdate: Some(C_DigestUpdate),
            C_DigestKey: Some(C_DigestKey),
            C_DigestFinal: Some(C_DigestFinal),
            C_SignInit: Some(C_SignInit),
            C_Sign: Some(C_Sign),
            C_SignUpdate: Some(C_SignUpdate),
            C_SignFinal: Some(C_SignFinal),
            C_SignRecoverInit: Some(C_SignRecoverInit),
            C_SignRecover: Some(C_SignRecover),
            C_VerifyInit: Some(C_VerifyInit),
            C_Verify: Some(C_Verify),
            C_VerifyUpdate: Some(C_VerifyUpdate),
            C_VerifyFinal: Some(C_VerifyFinal),
            C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
            C_VerifyRecover: Some(C_VerifyRecover),
            C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
            C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
            C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
            C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
            C_GenerateKey: Some(C_GenerateKey),
            C_GenerateKeyPair: Some(C_GenerateKeyPair),
            C_WrapKey: Some(C_WrapKey),
            C_UnwrapKey: Some(C_UnwrapKey),
            C_DeriveKey: Some(C_DeriveKey),
            C_SeedRandom: Some(C_SeedRandom),
            C_GenerateRandom: Some(C_GenerateRandom),
            C_GetFunctionStatus: Some(C_GetFunctionStatus),
            C_CancelFunction: Some(C_CancelFunction),
            C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
            $($extra: Some($extra),)*
        }
    };
}

/// The PKCS#11 v2.40 function list (`C_GetFunctionList`).
pub(crate) static FUNCTION_LIST: CK_FUNCTION_LIST = function_list!(CK_FUNCTION_LIST, 2, 40);

/// The functions of the PKCS#11 v3.0 list beyond v2.40, in the order of `CK_FUNCTION_LIST_3_0`;
/// `$more` follow them.
macro_rules! function_list_3 {
    ($list:ident, $minor:literal $(, $more:ident)* $(,)?) => {
        function_list!(
            $list,
            3,
            $minor,
            C_GetInterfaceList,
            C_GetInterface,
            C_LoginUser,
            C_SessionCancel,
            C_MessageEncryptInit,
            C_EncryptMessage,
            C_EncryptMessageBegin,
            C_EncryptMessageNext,
            C_MessageEncryptFinal,
            C_MessageDecryptInit,
            C_DecryptMessage,
            C_DecryptMessageBegin,
            C_DecryptMessageNext,
            C_MessageDecryptFinal,
            C_MessageSignInit,
            C_SignMessage,
            C_SignMessageBegin,
            C_SignMessageNext,
            C_MessageSignFinal,
            C_MessageVerifyInit,
            C_VerifyMessage,
            C_VerifyMessageBegin,
            C_VerifyMessageNext,
            C_MessageVerifyFinal,
            $($more,)*
        )
    };
}

/// The PKCS#11 v3.0 function list (`C_GetInterface`).
pub(crate) static FUNCTION_LIST_3_0: CK_FUNCTION_LIST_3_0 =
    function_list_3!(CK_FUNCTION_LIST_3_0, 0);

/// The PKCS#11 v3.2 function list (`C_GetInterface` with version 3.2): the v3.0 list followed
/// by the functions v3.2 adds, in the order of the OASIS header `pkcs11f.h` . None of
/// them is implemented: each answers `CKR_FUNCTION_NOT_SUPPORTED` (`unsupported.rs`).
pub(crate) static FUNCTION_LIST_3_2: CK_FUNCTION_LIST_3_2 = function_list_3!(
    CK_FUNCTION_LIST_3_2,
    2,
    C_EncapsulateKey,
    C_DecapsulateKey,
    C_VerifySignatureInit,
    C_VerifySignature,
    C_VerifySignatureUpdate,
    C_VerifySignatureFinal,
    C_GetSessionValidationFlags,
    C_AsyncComplete,
    C_AsyncGetID,
    C_AsyncJoin,
    C_WrapKeyAuthenticated,
    C_UnwrapKeyAuthenticated,
);
