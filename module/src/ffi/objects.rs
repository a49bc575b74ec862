//! Object management, search and attributes (PKCS#11 v2.40 §5.7).

use cryptoki_sys::*;

use super::convert::{
    attribute_array, fixed_values, len, out, template, values, without_repeats, MAX_TEMPLATE,
};
use super::{guard, initialised, token};
use crate::error::Error;
use crate::token::attributes::AttrValue;

/// `C_CreateObject` (§5.7.1): stores an X.509 certificate for one of the token's keys on the
/// TSB (`POST /v1/certificate/import/plain`); other objects give `CKR_TEMPLATE_INCONSISTENT`.
#[no_mangle]
pub unsafe extern "C" fn C_CreateObject(
    session: CK_SESSION_HANDLE,
    templ: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    log::trace!("C_CreateObject(session={session}, count={count})");
    guard("C_CreateObject", || {
        initialised()?;
        // SAFETY: writable CK_OBJECT_HANDLE (or NULL, refused).
        let object = unsafe { out(object) }?;
        // SAFETY: `templ` holds `count` attributes (NULL only with count 0).
        let attrs = unsafe { attribute_array(templ, count) }?;
        // Only the fixed-size values (checked lengths) are read first: the class and the
        // session decide whether the rest is read at all.
        // SAFETY: each value pointer is readable for its `ulValueLen` bytes.
        let fixed = unsafe { fixed_values(attrs) }?;
        // SAFETY: as above; read only once the template may create an object.
        let rest = || unsafe { values(attrs) }.and_then(without_repeats);
        *object = token()?.create_object(session, &fixed, rest)?;
        Ok(())
    })
}

/// `C_DestroyObject` (§5.7.3): removes a key's certificate from the TSB
/// (`DELETE /v1/certificate/{label}`); a key is deleted on the TSB (`DELETE /v1/key/{label}`)
/// only with `pkcs11.allowKeyDeletion`, else `CKR_ACTION_PROHIBITED`.
#[no_mangle]
pub extern "C" fn C_DestroyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> CK_RV {
    log::trace!("C_DestroyObject(session={session}, object={object})");
    guard("C_DestroyObject", || {
        token()?.destroy_object(session, object)
    })
}

/// `C_CopyObject` (§5.7.2): TSB keys and their certificates cannot be copied (`CKA_COPYABLE`
/// false), so this answers `CKR_ACTION_PROHIBITED` for every valid object.
#[no_mangle]
pub unsafe extern "C" fn C_CopyObject(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    templ: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    new_object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    log::trace!("C_CopyObject(session={session}, object={object}, count={count})");
    guard("C_CopyObject", || {
        initialised()?;
        // SAFETY: writable CK_OBJECT_HANDLE (or NULL, refused).
        let new_object = unsafe { out(new_object) }?;
        // SAFETY: `templ` holds `count` attributes (NULL only with count 0); the values are
        // not read: no copy is made whatever they ask.
        unsafe { attribute_array(templ, count) }?;
        *new_object = token()?.copy_object(session, object)?;
        Ok(())
    })
}

/// `C_SetAttributeValue` (§5.7.6): succeeds only when the template changes nothing (every
/// value is the object's current one); otherwise `CKR_ACTION_PROHIBITED`.
#[no_mangle]
pub unsafe extern "C" fn C_SetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    templ: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    log::trace!("C_SetAttributeValue(session={session}, object={object}, count={count})");
    guard("C_SetAttributeValue", || {
        initialised()?;
        // SAFETY: `templ` holds `count` attributes whose values are readable for their
        // lengths (NULL only with count 0).
        let attrs = unsafe { template(templ, count) }?;
        token()?.set_attribute_values(session, object, &attrs)
    })
}

/// `C_FindObjectsInit`.
#[no_mangle]
pub unsafe extern "C" fn C_FindObjectsInit(
    session: CK_SESSION_HANDLE,
    templ: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    log::trace!("C_FindObjectsInit(session={session}, count={count})");
    guard("C_FindObjectsInit", || {
        initialised()?;
        // SAFETY: `templ` holds `count` attributes (NULL only with count 0).
        let t = unsafe { template(templ, count) }?;
        token()?.find_objects_init(session, &t)
    })
}

/// `C_FindObjects`.
#[no_mangle]
pub unsafe extern "C" fn C_FindObjects(
    session: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    found: *mut CK_ULONG,
) -> CK_RV {
    log::trace!("C_FindObjects(session={session}, max={max})");
    guard("C_FindObjects", || {
        initialised()?;
        // SAFETY: writable CK_ULONG (or NULL, refused).
        let found = unsafe { out(found) }?;
        if objects.is_null() && max > 0 {
            return Err(Error::new(CKR_ARGUMENTS_BAD, "NULL object array"));
        }
        let handles = token()?.find_objects(session, len(max)?)?;
        if !handles.is_empty() {
            // SAFETY: `objects` has room for `max >= handles.len()` handles.
            unsafe { std::ptr::copy_nonoverlapping(handles.as_ptr(), objects, handles.len()) };
        }
        *found = handles.len() as CK_ULONG;
        Ok(())
    })
}

/// `C_FindObjectsFinal`.
#[no_mangle]
pub extern "C" fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) -> CK_RV {
    log::trace!("C_FindObjectsFinal(session={session})");
    guard("C_FindObjectsFinal", || {
        token()?.find_objects_final(session)
    })
}

/// `C_GetAttributeValue` (§5.7.5): every attribute of the template is answered; unknown ones
/// get `CK_UNAVAILABLE_INFORMATION` and `CKR_ATTRIBUTE_TYPE_INVALID`, secret ones
/// `CKR_ATTRIBUTE_SENSITIVE`, short buffers `CKR_BUFFER_TOO_SMALL`.
#[no_mangle]
pub unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    templ: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    log::trace!("C_GetAttributeValue(session={session}, object={object}, count={count})");
    guard("C_GetAttributeValue", || {
        initialised()?;
        let n = len(count)?;
        if templ.is_null() {
            return if n == 0 {
                token()?.attribute_values(session, object, &[]).map(|_| ())
            } else {
                Err(Error::new(CKR_ARGUMENTS_BAD, "NULL template"))
            };
        }
        if n > MAX_TEMPLATE {
            return Err(Error::new(CKR_ARGUMENTS_BAD, "template too long"));
        }
        // SAFETY: `templ` holds `count` attributes, writable (PKCS#11 §5.7.5).
        let attrs = unsafe { std::slice::from_raw_parts_mut(templ, n) };
        let types: Vec<CK_ATTRIBUTE_TYPE> = attrs.iter().map(|a| a.type_).collect();
        let values = token()?.attribute_values(session, object, &types)?;
        let mut rv = CKR_OK;
        for (a, v) in attrs.iter_mut().zip(values) {
            match v {
                AttrValue::Sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = CKR_ATTRIBUTE_SENSITIVE;
                }
                AttrValue::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    if rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL {
                        rv = CKR_ATTRIBUTE_TYPE_INVALID;
                    }
                }
                AttrValue::Bytes(b) => {
                    if a.pValue.is_null() {
                        a.ulValueLen = b.len() as CK_ULONG;
                    } else if len(a.ulValueLen)? >= b.len() {
                        // SAFETY: `pValue` has `ulValueLen >= b.len()` writable bytes.
                        unsafe {
                            std::ptr::copy_nonoverlapping(b.as_ptr(), a.pValue as *mut u8, b.len())
                        };
                        a.ulValueLen = b.len() as CK_ULONG;
                    } else {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        if rv == CKR_OK {
                            rv = CKR_BUFFER_TOO_SMALL;
                        }
                    }
                }
            }
        }
        if rv == CKR_OK {
            Ok(())
        } else {
            Err(Error::rv(rv))
        }
    })
}
