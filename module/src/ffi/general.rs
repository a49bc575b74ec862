//! General-purpose functions (PKCS#11 v2.40 §5.4) and the v3.0 interface functions (§5.4 of
//! v3.0: `C_GetInterfaceList`, `C_GetInterface`).

use std::os::raw::c_void;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use cryptoki_sys::*;

use super::convert::{out, padded};
use super::{guard, Instance, FUNCTION_LIST, FUNCTION_LIST_3_0, FUNCTION_LIST_3_2, STATE};
use crate::config::{Config, CONFIG_ENV};
use crate::error::Error;
use crate::token::{Token, MANUFACTURER};

/// Keeps this library mapped after the host's `dlclose()` (glibc `RTLD_NODELETE`).
///
/// Once initialised, the module holds process-wide state outside `STATE` that is never freed:
/// the global logger and the statics the libraries it links fill once (with the HTTP client
/// the module used before its own, ureq, they cost about 16 kB per
/// dlopen/C_Initialize/C_Finalize/dlclose cycle, `tests/unload.rs`). Were the image unmapped
/// and loaded again, each cycle would leak them, and a thread still returning from a call that
/// `C_Finalize` interrupted would run unmapped code.
/// Pinning makes a later `dlopen()` of the same file return this image, where
/// `C_Finalize` has already reset `STATE`.
fn pin_in_memory() {
    static PINNED: std::sync::Once = std::sync::Once::new();
    PINNED.call_once(|| {
        // SAFETY: Dl_info is plain data (pointers and an address); all-zero is a valid value.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: dladdr only reads the address (a function of this library) and fills `info`.
        let found = unsafe { libc::dladdr(C_Initialize as *const c_void, &mut info) } != 0;
        if !found || info.dli_fname.is_null() {
            return;
        }
        // SAFETY: `dli_fname` is the NUL-terminated path this library was loaded from;
        // RTLD_NOLOAD only promotes the flags of the already loaded image, and the extra
        // reference is dropped at once (RTLD_NODELETE stays).
        unsafe {
            let handle = libc::dlopen(
                info.dli_fname,
                libc::RTLD_LAZY | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
            );
            if !handle.is_null() {
                libc::dlclose(handle);
            }
        }
    });
}

/// `C_Initialize`: reads the configuration (no network I/O) and builds the token.
#[no_mangle]
pub unsafe extern "C" fn C_Initialize(init_args: *mut c_void) -> CK_RV {
    guard("C_Initialize", || {
        crate::logging::init();
        log::trace!("C_Initialize(args={init_args:?})");
        pin_in_memory();
        // SAFETY: the argument is NULL or a CK_C_INITIALIZE_ARGS (PKCS#11 v2.40 §5.4).
        let args = unsafe { (init_args as *const CK_C_INITIALIZE_ARGS).as_ref() };
        let mut may_spawn_threads = true;
        if let Some(a) = args {
            if !a.pReserved.is_null() {
                return Err(Error::new(CKR_ARGUMENTS_BAD, "pReserved must be NULL"));
            }
            let fns = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if fns.iter().any(|f| *f) && !fns.iter().all(|f| *f) {
                return Err(Error::new(
                    CKR_ARGUMENTS_BAD,
                    "mutex functions must be all given or all NULL",
                ));
            }
            if fns[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::new(
                    CKR_CANT_LOCK,
                    "only OS locking is supported (set CKF_OS_LOCKING_OK)",
                ));
            }
            may_spawn_threads = a.flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS == 0;
        }
        let pid = std::process::id();
        let mut state = STATE.write();
        if let Some(instance) = state.as_ref() {
            if instance.pid == pid {
                return Err(Error::rv(CKR_CRYPTOKI_ALREADY_INITIALIZED));
            }
            // A forked child initialising again: the parent's state is not ours to tear down.
            std::mem::forget(state.take());
        }
        if no_configuration() {
            // Registered with p11-kit, the module is loaded by every p11-kit application, most
            // of which have nothing to do with a TSB: without any configuration it offers no
            // slot and stays silent (C_GetSlotList returns 0 slots, PKCS#11 v3.0 §5.5).
            log::debug!(
                "no configuration file ({CONFIG_ENV} unset, none of {}): no slot",
                Config::search_paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            *state = Some(Instance { token: None, pid });
            return Ok(());
        }
        let config = Config::load().map_err(|e| {
            log::error!("{e}");
            Error::new(CKR_GENERAL_ERROR, e.to_string())
        })?;
        let token = Token::new(config, may_spawn_threads)
            .inspect_err(|e| log::error!("{}", e.message()))?;
        log::info!(
            "initialised: TSB {} (token '{}')",
            token.config().rest_api(),
            token.token_label()
        );
        *state = Some(Instance {
            token: Some(std::sync::Arc::new(token)),
            pid,
        });
        Ok(())
    })
}

/// `C_Finalize`: ends all sessions; threads waiting in `C_Sign` return promptly.
#[no_mangle]
pub extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    log::trace!("C_Finalize(reserved={reserved:?})");
    guard("C_Finalize", || {
        if !reserved.is_null() {
            return Err(Error::new(CKR_ARGUMENTS_BAD, "pReserved must be NULL"));
        }
        let instance = STATE
            .write()
            .take()
            .ok_or_else(|| Error::rv(CKR_CRYPTOKI_NOT_INITIALIZED))?;
        if let Some(token) = instance.token {
            token.finalize();
        }
        // Report repeated log lines held back by the rate limit (src/logging.rs).
        log::logger().flush();
        Ok(())
    })
}

/// True when `TSB_PKCS11_CONFIG` is unset (or empty) and no file of the search path exists
/// (a dangling symbolic link counts as existing, so it is reported as an error). An explicit
/// `TSB_PKCS11_CONFIG` naming a missing file is an error, not this case.
fn no_configuration() -> bool {
    std::env::var_os(CONFIG_ENV).is_none_or(|v| v.is_empty())
        && Config::search_paths()
            .iter()
            .all(|p| std::fs::symlink_metadata(p).is_err())
}

pub(super) fn version() -> CK_VERSION {
    let v = |s: &str| s.parse::<u8>().unwrap_or(0);
    CK_VERSION {
        major: v(env!("CARGO_PKG_VERSION_MAJOR")),
        minor: v(env!("CARGO_PKG_VERSION_MINOR")),
    }
}

/// `C_GetInfo`.
#[no_mangle]
pub unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    log::trace!("C_GetInfo(info={info:?})");
    guard("C_GetInfo", || {
        super::initialised()?;
        // SAFETY: the caller passes a writable CK_INFO (or NULL, refused).
        let info = unsafe { out(info) }?;
        *info = CK_INFO {
            cryptokiVersion: CK_VERSION { major: 3, minor: 0 },
            manufacturerID: padded(MANUFACTURER),
            flags: 0,
            libraryDescription: padded("tsb-pkcs11: Securosys TSB keys"),
            libraryVersion: version(),
        };
        Ok(())
    })
}

/// `C_GetFunctionList`: the v2.40 list. No network I/O, no initialisation needed.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard("C_GetFunctionList", || {
        // SAFETY: the caller passes a writable pointer slot (or NULL, refused).
        let list = unsafe { out(list) }?;
        *list = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST;
        Ok(())
    })
}

/// The interfaces this module offers, all named "PKCS 11" with these flags: 3.2 (index 0), 3.0
/// (index 1, the default: what `C_GetInterface` gives without a version, so applications
/// written for 3.0 see the list they were tested with) and 2.40 (index 2). `C_GetInterfaceList`
/// and `C_GetInterface` take their values from here, never from [`INTERFACES`].
const INTERFACE_COUNT: usize = 3;
/// The index of the interface `C_GetInterface` gives when no version is asked for.
const DEFAULT_INTERFACE: usize = 1;
const INTERFACE_FLAGS: CK_FLAGS = CKF_INTERFACE_FORK_SAFE;
static INTERFACE_NAME: &[u8] = b"PKCS 11\0";

/// The `CK_INTERFACE` values of interface `i`.
fn interface(i: usize) -> CK_INTERFACE {
    let list = match i {
        0 => &FUNCTION_LIST_3_2 as *const CK_FUNCTION_LIST_3_2 as *mut c_void,
        1 => &FUNCTION_LIST_3_0 as *const CK_FUNCTION_LIST_3_0 as *mut c_void,
        _ => &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut c_void,
    };
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: list,
        flags: INTERFACE_FLAGS,
    }
}

/// One `CK_INTERFACE` as `C_GetInterface` hands it out: in **writable** memory, with the
/// layout of `CK_INTERFACE`, each field an atomic.
///
/// Callers may write into the structure they get: OpenSC's `pkcs11-spy` replaces its
/// `pFunctionList` by its own tracing list, which crashed (SIGSEGV) while the table was an
/// immutable static in read-only memory. `C_GetInterface` stores the module's values again
/// before it returns a pointer, so a list another library wrote there (and may have unloaded
/// since) is never handed to the next caller. The fields are atomics so the module's own
/// stores are sound while other threads read the structure; the module never reads it.
#[repr(C)]
struct SharedInterface {
    name: AtomicPtr<CK_UTF8CHAR>,
    list: AtomicPtr<c_void>,
    flags: AtomicUsize,
}

// The C layout of CK_INTERFACE: same size, same field offsets, CK_FLAGS as wide as usize.
const _: () = {
    assert!(std::mem::size_of::<SharedInterface>() == std::mem::size_of::<CK_INTERFACE>());
    assert!(std::mem::align_of::<SharedInterface>() == std::mem::align_of::<CK_INTERFACE>());
    assert!(std::mem::size_of::<CK_FLAGS>() == std::mem::size_of::<usize>());
    assert!(
        std::mem::offset_of!(SharedInterface, name)
            == std::mem::offset_of!(CK_INTERFACE, pInterfaceName)
    );
    assert!(
        std::mem::offset_of!(SharedInterface, list)
            == std::mem::offset_of!(CK_INTERFACE, pFunctionList)
    );
    assert!(
        std::mem::offset_of!(SharedInterface, flags) == std::mem::offset_of!(CK_INTERFACE, flags)
    );
};

impl SharedInterface {
    const fn empty() -> SharedInterface {
        SharedInterface {
            name: AtomicPtr::new(std::ptr::null_mut()),
            list: AtomicPtr::new(std::ptr::null_mut()),
            flags: AtomicUsize::new(0),
        }
    }
}

/// The structures `C_GetInterface` returns pointers to (interior mutability puts them in
/// writable memory). Filled by [`shared_interface`] before each hand-out.
static INTERFACES: [SharedInterface; INTERFACE_COUNT] = [
    SharedInterface::empty(),
    SharedInterface::empty(),
    SharedInterface::empty(),
];

/// Stores the module's values of interface `i` into its shared structure and returns the
/// pointer the caller gets.
fn shared_interface(i: usize) -> *mut CK_INTERFACE {
    let values = interface(i);
    let shared = &INTERFACES[i];
    shared.name.store(values.pInterfaceName, Ordering::Release);
    shared.list.store(values.pFunctionList, Ordering::Release);
    shared.flags.store(values.flags as usize, Ordering::Release);
    shared as *const SharedInterface as *mut CK_INTERFACE
}

/// `C_GetInterfaceList` (PKCS#11 3.0 §5.4.5).
#[no_mangle]
pub unsafe extern "C" fn C_GetInterfaceList(
    list: *mut CK_INTERFACE,
    count: *mut CK_ULONG,
) -> CK_RV {
    log::trace!("C_GetInterfaceList(list={list:?})");
    guard("C_GetInterfaceList", || {
        // SAFETY: `count` is a writable CK_ULONG (or NULL, refused).
        let count = unsafe { out(count) }?;
        let n = INTERFACE_COUNT;
        if list.is_null() {
            *count = n as CK_ULONG;
            return Ok(());
        }
        if (*count as usize) < n {
            *count = n as CK_ULONG;
            return Err(Error::buffer_too_small(n));
        }
        for i in 0..n {
            // SAFETY: `list` has room for `*count >= n` interfaces (caller guarantee).
            unsafe { list.add(i).write(interface(i)) };
        }
        *count = n as CK_ULONG;
        Ok(())
    })
}

/// `C_GetInterface` (PKCS#11 3.0 §5.4.6, 3.2 §5.4.6): by name (NULL or "PKCS 11"), version
/// (3.2, 3.0, 2.x; NULL: the default, 3.0) and flags.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    interface: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    log::trace!("C_GetInterface(name={name:?}, version={version:?}, flags={flags})");
    guard("C_GetInterface", || {
        // SAFETY: `interface` is a writable pointer slot (or NULL, refused).
        let interface = unsafe { out(interface) }?;
        if !name.is_null() {
            // SAFETY: a non-NULL name is a NUL-terminated string (PKCS#11 3.0 §5.4.6).
            let n = unsafe { std::ffi::CStr::from_ptr(name as *const std::os::raw::c_char) };
            if n.to_bytes() != b"PKCS 11" {
                return Err(Error::new(CKR_ARGUMENTS_BAD, "unknown interface name"));
            }
        }
        // SAFETY: a non-NULL version points to a CK_VERSION.
        let wanted = unsafe { version.as_ref() }.map(|v| (v.major, v.minor));
        let index = match wanted {
            Some((3, 2)) => 0,
            None | Some((3, 0)) => DEFAULT_INTERFACE,
            Some((2, _)) => 2,
            Some(_) => {
                return Err(Error::new(
                    CKR_ARGUMENTS_BAD,
                    "unsupported interface version",
                ))
            }
        };
        if flags & !INTERFACE_FLAGS != 0 {
            return Err(Error::new(CKR_ARGUMENTS_BAD, "unsupported interface flags"));
        }
        *interface = shared_interface(index);
        Ok(())
    })
}
