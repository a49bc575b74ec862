//! Entry points this module does not implement: each answers `CKR_FUNCTION_NOT_SUPPORTED`
//! once the module is initialised (a signing token: no secret-key generation, encryption or
//! message-based API; the only objects it creates are certificates, see `objects.rs`).
//! `C_GetObjectSize` is one of them: objects live on the TSB and take no token memory this
//! module could report (PKCS#11 v3.0 §5.7.4 allows `CK_UNAVAILABLE_INFORMATION`; the module
//! answers the same `CKR_FUNCTION_NOT_SUPPORTED` for every object instead).

use std::os::raw::c_void;

use cryptoki_sys::*;

use super::{guard, initialised};
use crate::error::Error;

/// Each stub answers `CKR_CRYPTOKI_NOT_INITIALIZED` before `C_Initialize` (and after
/// `C_Finalize`), like every other function but `C_Initialize`, `C_GetFunctionList`,
/// `C_GetInterfaceList` and `C_GetInterface` (PKCS#11 v3.0 §5.1.1 and §5.4); otherwise
/// `CKR_FUNCTION_NOT_SUPPORTED`. No argument is looked at.
macro_rules! not_supported {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            $(let _ = $arg;)*
            guard(stringify!($name), || {
                initialised()?;
                Err(Error::rv(CKR_FUNCTION_NOT_SUPPORTED))
            })
        }
    )*};
}

not_supported! {
    C_InitToken(arg1: CK_SLOT_ID, arg2: *mut CK_UTF8CHAR, arg3: CK_ULONG, arg4: *mut CK_UTF8CHAR);
    C_InitPIN(arg1: CK_SESSION_HANDLE, arg2: *mut CK_UTF8CHAR, arg3: CK_ULONG);
    C_SetPIN(arg1: CK_SESSION_HANDLE, arg2: *mut CK_UTF8CHAR, arg3: CK_ULONG, arg4: *mut CK_UTF8CHAR, arg5: CK_ULONG);
    C_GetOperationState(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: *mut CK_ULONG);
    C_SetOperationState(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: CK_OBJECT_HANDLE, arg5: CK_OBJECT_HANDLE);
    C_GetObjectSize(arg1: CK_SESSION_HANDLE, arg2: CK_OBJECT_HANDLE, arg3: *mut CK_ULONG);
    C_EncryptInit(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE);
    C_Encrypt(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_EncryptUpdate(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_EncryptFinal(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: *mut CK_ULONG);
    C_DecryptInit(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE);
    C_Decrypt(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_DecryptUpdate(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_DecryptFinal(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: *mut CK_ULONG);
    C_SignRecoverInit(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE);
    C_SignRecover(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_VerifyRecoverInit(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE);
    C_VerifyRecover(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_DigestEncryptUpdate(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_DecryptDigestUpdate(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_SignEncryptUpdate(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_DecryptVerifyUpdate(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: *mut CK_ULONG);
    C_GenerateKey(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: *mut CK_ATTRIBUTE, arg4: CK_ULONG, arg5: *mut CK_OBJECT_HANDLE);
    C_WrapKey(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE, arg4: CK_OBJECT_HANDLE, arg5: *mut CK_BYTE, arg6: *mut CK_ULONG);
    C_UnwrapKey(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_ATTRIBUTE, arg7: CK_ULONG, arg8: *mut CK_OBJECT_HANDLE);
    C_DeriveKey(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE, arg4: *mut CK_ATTRIBUTE, arg5: CK_ULONG, arg6: *mut CK_OBJECT_HANDLE);
    C_WaitForSlotEvent(arg1: CK_FLAGS, arg2: *mut CK_SLOT_ID, arg3: *mut c_void);
    C_LoginUser(arg1: CK_SESSION_HANDLE, arg2: CK_USER_TYPE, arg3: *mut CK_UTF8CHAR, arg4: CK_ULONG, arg5: *mut CK_UTF8CHAR, arg6: CK_ULONG);
    C_MessageEncryptInit(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE);
    C_EncryptMessage(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: CK_ULONG, arg8: *mut CK_BYTE, arg9: *mut CK_ULONG);
    C_EncryptMessageBegin(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG);
    C_EncryptMessageNext(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: *mut CK_ULONG, arg8: CK_FLAGS);
    C_MessageEncryptFinal(arg1: CK_SESSION_HANDLE);
    C_MessageDecryptInit(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE);
    C_DecryptMessage(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: CK_ULONG, arg8: *mut CK_BYTE, arg9: *mut CK_ULONG);
    C_DecryptMessageBegin(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG);
    C_DecryptMessageNext(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: *mut CK_ULONG, arg8: CK_FLAGS);
    C_MessageDecryptFinal(arg1: CK_SESSION_HANDLE);
    C_MessageSignInit(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE);
    C_SignMessage(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: *mut CK_ULONG);
    C_SignMessageBegin(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG);
    C_SignMessageNext(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: *mut CK_ULONG);
    C_MessageSignFinal(arg1: CK_SESSION_HANDLE);
    C_MessageVerifyInit(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE);
    C_VerifyMessage(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: CK_ULONG);
    C_VerifyMessageBegin(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG);
    C_VerifyMessageNext(arg1: CK_SESSION_HANDLE, arg2: *mut c_void, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: CK_ULONG);
    C_MessageVerifyFinal(arg1: CK_SESSION_HANDLE);
    // PKCS#11 v3.2 (the functions CK_FUNCTION_LIST_3_2 adds to the 3.0 list): key
    // encapsulation, signature-first verification, validation flags, asynchronous operations and
    // authenticated wrapping. This token signs and verifies with the classic API only.
    C_EncapsulateKey(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE, arg4: *mut CK_ATTRIBUTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: *mut CK_ULONG, arg8: *mut CK_OBJECT_HANDLE);
    C_DecapsulateKey(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE, arg4: *mut CK_ATTRIBUTE, arg5: CK_ULONG, arg6: *mut CK_BYTE, arg7: CK_ULONG, arg8: *mut CK_OBJECT_HANDLE);
    C_VerifySignatureInit(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE, arg4: *mut CK_BYTE, arg5: CK_ULONG);
    C_VerifySignature(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG);
    C_VerifySignatureUpdate(arg1: CK_SESSION_HANDLE, arg2: *mut CK_BYTE, arg3: CK_ULONG);
    C_VerifySignatureFinal(arg1: CK_SESSION_HANDLE);
    C_GetSessionValidationFlags(arg1: CK_SESSION_HANDLE, arg2: CK_SESSION_VALIDATION_FLAGS_TYPE, arg3: *mut CK_FLAGS);
    C_AsyncComplete(arg1: CK_SESSION_HANDLE, arg2: *mut CK_UTF8CHAR, arg3: *mut CK_ASYNC_DATA);
    C_AsyncGetID(arg1: CK_SESSION_HANDLE, arg2: *mut CK_UTF8CHAR, arg3: *mut CK_ULONG);
    C_AsyncJoin(arg1: CK_SESSION_HANDLE, arg2: *mut CK_UTF8CHAR, arg3: CK_ULONG, arg4: *mut CK_BYTE, arg5: CK_ULONG);
    C_WrapKeyAuthenticated(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE, arg4: CK_OBJECT_HANDLE, arg5: *mut CK_BYTE, arg6: CK_ULONG, arg7: *mut CK_BYTE, arg8: *mut CK_ULONG);
    C_UnwrapKeyAuthenticated(arg1: CK_SESSION_HANDLE, arg2: *mut CK_MECHANISM, arg3: CK_OBJECT_HANDLE, arg4: *mut CK_BYTE, arg5: CK_ULONG, arg6: *mut CK_ATTRIBUTE, arg7: CK_ULONG, arg8: *mut CK_BYTE, arg9: CK_ULONG, arg10: *mut CK_OBJECT_HANDLE);
}
