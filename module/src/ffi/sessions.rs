//! Session management (PKCS#11 v2.40 §5.6, v3.0 `C_SessionCancel`) and login (§5.7).

use std::os::raw::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cryptoki_sys::*;

use super::convert::{bytes, out, MAX_PIN_LEN};
use super::{guard, initialised, token};
use crate::error::Error;
use crate::token::session::Surrender;

/// The application's `Notify` callback with its context pointer.
struct Notify {
    callback: unsafe extern "C" fn(CK_SESSION_HANDLE, CK_NOTIFICATION, *mut c_void) -> CK_RV,
    application: usize,
    session: Arc<AtomicU64>,
}

impl Notify {
    fn surrender(&self) -> bool {
        let session = self.session.load(Ordering::Acquire);
        // SAFETY: the application gave this callback and context to C_OpenSession for exactly
        // this use (PKCS#11 v2.40 §5.16: CKN_SURRENDER during a long operation).
        let rv =
            unsafe { (self.callback)(session, CKN_SURRENDER, self.application as *mut c_void) };
        rv == CKR_CANCEL
    }
}

/// `C_OpenSession`. Read-only sessions only: the token is write-protected.
#[no_mangle]
pub unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    application: *mut c_void,
    notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    log::trace!(
        "C_OpenSession(slot={slot}, flags=0x{flags:x}, notify={})",
        notify.is_some()
    );
    guard("C_OpenSession", || {
        let t = token()?;
        // SAFETY: writable CK_SESSION_HANDLE (or NULL, refused).
        let out_handle = unsafe { out(session) }?;
        let cell = Arc::new(AtomicU64::new(0));
        let surrender: Option<Surrender> = notify.map(|callback| {
            let n = Notify {
                callback,
                application: application as usize,
                session: cell.clone(),
            };
            Box::new(move || n.surrender()) as Surrender
        });
        let h = t.open_session(slot, flags, surrender)?;
        cell.store(h, Ordering::Release);
        *out_handle = h;
        log::trace!("C_OpenSession: session {h}");
        Ok(())
    })
}

/// `C_CloseSession`: a thread waiting in the session returns `CKR_SESSION_CLOSED` promptly.
#[no_mangle]
pub extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    log::trace!("C_CloseSession(session={session})");
    guard("C_CloseSession", || token()?.close_session(session))
}

/// `C_CloseAllSessions`.
#[no_mangle]
pub extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    log::trace!("C_CloseAllSessions(slot={slot})");
    guard("C_CloseAllSessions", || token()?.close_all_sessions(slot))
}

/// `C_GetSessionInfo`.
#[no_mangle]
pub unsafe extern "C" fn C_GetSessionInfo(
    session: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    log::trace!("C_GetSessionInfo(session={session})");
    guard("C_GetSessionInfo", || {
        let (state, flags) = token()?.session_info(session)?;
        // SAFETY: writable CK_SESSION_INFO (or NULL, refused).
        *unsafe { out(info) }? = CK_SESSION_INFO {
            slotID: crate::token::SLOT_ID,
            state,
            flags,
            ulDeviceError: 0,
        };
        Ok(())
    })
}

/// `C_SessionCancel` (PKCS#11 3.0 §5.6.6).
#[no_mangle]
pub extern "C" fn C_SessionCancel(session: CK_SESSION_HANDLE, flags: CK_FLAGS) -> CK_RV {
    log::trace!("C_SessionCancel(session={session}, flags=0x{flags:x})");
    guard("C_SessionCancel", || {
        token()?.session_cancel(session, flags)
    })
}

/// `C_Login`. The PIN is never logged.
#[no_mangle]
pub unsafe extern "C" fn C_Login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    log::trace!("C_Login(session={session}, user={user}, pin=<redacted>)");
    guard("C_Login", || {
        initialised()?;
        // SAFETY: the PIN buffer holds `pin_len` bytes (NULL only with length 0).
        let pin = unsafe { bytes(pin, pin_len) }?;
        // A PIN longer than CK_TOKEN_INFO.ulMaxPinLen is refused before it is copied.
        if pin.len() > MAX_PIN_LEN {
            return Err(Error::new(
                CKR_ARGUMENTS_BAD,
                "the PIN is longer than ulMaxPinLen (4096 bytes)",
            ));
        }
        token()?.login(session, user, pin)
    })
}

/// `C_Logout`.
#[no_mangle]
pub extern "C" fn C_Logout(session: CK_SESSION_HANDLE) -> CK_RV {
    log::trace!("C_Logout(session={session})");
    guard("C_Logout", || token()?.logout(session))
}
