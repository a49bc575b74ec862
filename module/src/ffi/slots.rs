//! Slot and token management (PKCS#11 v2.40 §5.5).

use cryptoki_sys::*;

use super::convert::{len, out, padded, MAX_PIN_LEN};
use super::general::version;
use super::{guard, initialised, token};
use crate::error::Error;
use crate::token::{MANUFACTURER, MODEL, SLOT_ID};

/// `C_GetSlotList`: one slot, always with its token present; none without a configuration.
#[no_mangle]
pub unsafe extern "C" fn C_GetSlotList(
    token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    log::trace!("C_GetSlotList(token_present={token_present}, list={list:?})");
    guard("C_GetSlotList", || {
        let slots: CK_ULONG = if initialised()?.is_some() { 1 } else { 0 };
        // SAFETY: `count` is a writable CK_ULONG (or NULL, refused).
        let count = unsafe { out(count) }?;
        if slots == 0 {
            *count = 0;
            return Ok(());
        }
        if list.is_null() {
            *count = 1;
            return Ok(());
        }
        if len(*count)? < 1 {
            *count = 1;
            return Err(Error::buffer_too_small(1));
        }
        // SAFETY: `list` holds at least one CK_SLOT_ID (checked `*count >= 1`).
        unsafe { list.write(SLOT_ID) };
        *count = 1;
        Ok(())
    })
}

/// `C_GetSlotInfo`.
#[no_mangle]
pub unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    log::trace!("C_GetSlotInfo(slot={slot})");
    guard("C_GetSlotInfo", || {
        let t = token()?;
        let flags = t.slot_info(slot)?;
        // SAFETY: writable CK_SLOT_INFO (or NULL, refused).
        let info = unsafe { out(info) }?;
        *info = CK_SLOT_INFO {
            slotDescription: padded(&t.slot_description()),
            manufacturerID: padded(MANUFACTURER),
            flags,
            hardwareVersion: version(),
            firmwareVersion: version(),
        };
        Ok(())
    })
}

/// `C_GetTokenInfo`: label from the config, a serial derived from the TSB URL.
#[no_mangle]
pub unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    log::trace!("C_GetTokenInfo(slot={slot})");
    guard("C_GetTokenInfo", || {
        let t = token()?;
        let (flags, sessions, rw) = t.token_info(slot)?;
        // SAFETY: writable CK_TOKEN_INFO (or NULL, refused).
        let info = unsafe { out(info) }?;
        *info = CK_TOKEN_INFO {
            label: padded(t.token_label()),
            manufacturerID: padded(MANUFACTURER),
            model: padded(MODEL),
            serialNumber: padded(t.serial()),
            flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: sessions as CK_ULONG,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: rw as CK_ULONG,
            ulMaxPinLen: MAX_PIN_LEN as CK_ULONG,
            ulMinPinLen: 0,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: version(),
            firmwareVersion: version(),
            utcTime: [b' '; 16],
        };
        Ok(())
    })
}

/// `C_GetMechanismList`.
#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    log::trace!("C_GetMechanismList(slot={slot}, list={list:?})");
    guard("C_GetMechanismList", || {
        let mechs = token()?.mechanism_list(slot)?;
        // SAFETY: writable CK_ULONG (or NULL, refused).
        let count = unsafe { out(count) }?;
        let capacity = len(*count)?;
        *count = mechs.len() as CK_ULONG;
        if list.is_null() {
            return Ok(());
        }
        if capacity < mechs.len() {
            return Err(Error::buffer_too_small(mechs.len()));
        }
        // SAFETY: `list` has room for `capacity >= mechs.len()` entries.
        unsafe { std::ptr::copy_nonoverlapping(mechs.as_ptr(), list, mechs.len()) };
        Ok(())
    })
}

/// `C_GetMechanismInfo`.
#[no_mangle]
pub unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mechanism: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    log::trace!("C_GetMechanismInfo(slot={slot}, mechanism=0x{mechanism:x})");
    guard("C_GetMechanismInfo", || {
        let mi = token()?.mechanism_info(slot, mechanism)?;
        // SAFETY: writable CK_MECHANISM_INFO (or NULL, refused).
        *unsafe { out(info) }? = mi;
        Ok(())
    })
}
