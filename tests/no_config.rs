//! Registered with p11-kit, the module is loaded by every p11-kit application. With no
//! configuration anywhere (no `TSB_PKCS11_CONFIG`, no file in the search path) `C_Initialize`
//! succeeds and the module offers no slot (PKCS#11 v3.0 §5.5 `C_GetSlotList` with 0 slots) and
//! logs nothing at the default level; an explicit `TSB_PKCS11_CONFIG` naming a missing file
//! still fails `C_Initialize`.
//!
//! One test in this binary: it sets the process environment the module reads.

use tsb_pkcs11_test_support as common;

use common::{built_module, Raw};
use cryptoki_sys::*;

#[test]
fn without_any_configuration_there_is_no_slot_and_an_explicit_missing_file_still_fails() {
    if std::path::Path::new("/etc/tsb-pkcs11/config.json").exists() {
        eprintln!("!!! /etc/tsb-pkcs11/config.json exists on this machine: the no-configuration case cannot be set up: SKIPPED");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::env::remove_var("TSB_PKCS11_CONFIG");
    std::env::set_var("HOME", home.path());
    std::env::set_var("XDG_CONFIG_HOME", home.path().join("config"));
    let log = home.path().join("module.log");
    std::env::set_var("TSB_PKCS11_LOG_FILE", &log);
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("libtsb_pkcs11-noconfig.so");
    std::fs::copy(built_module(), &module).unwrap();
    let raw = Raw::load(&module);
    let f = raw.f;
    // SAFETY (whole block): PKCS#11 calls with valid pointers to locals.
    unsafe {
        assert_eq!(f.C_Initialize.unwrap()(std::ptr::null_mut()), CKR_OK);
        let mut n: CK_ULONG = 99;
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_FALSE, std::ptr::null_mut(), &mut n),
            CKR_OK
        );
        assert_eq!(n, 0);
        let mut slots = [0 as CK_SLOT_ID; 4];
        let mut n: CK_ULONG = 4;
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_TRUE, slots.as_mut_ptr(), &mut n),
            CKR_OK
        );
        assert_eq!(n, 0);
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!(f.C_GetInfo.unwrap()(&mut info), CKR_OK);
        let mut session: CK_SESSION_HANDLE = 0;
        assert_eq!(
            f.C_OpenSession.unwrap()(
                0,
                CKF_SERIAL_SESSION,
                std::ptr::null_mut(),
                None,
                &mut session
            ),
            CKR_SLOT_ID_INVALID
        );
        let mut slot_info: CK_SLOT_INFO = std::mem::zeroed();
        assert_eq!(
            f.C_GetSlotInfo.unwrap()(0, &mut slot_info),
            CKR_SLOT_ID_INVALID
        );
        assert_eq!(f.C_Finalize.unwrap()(std::ptr::null_mut()), CKR_OK);
        // Nothing logged at the default level.
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(logged.is_empty(), "{logged}");

        // An explicit TSB_PKCS11_CONFIG that names a missing file is an error, as before.
        std::env::set_var("TSB_PKCS11_CONFIG", home.path().join("missing.json"));
        assert_eq!(
            f.C_Initialize.unwrap()(std::ptr::null_mut()),
            CKR_GENERAL_ERROR
        );
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(logged.contains("missing.json"), "{logged}");

        // A user configuration file appears: C_Initialize reads it (one slot).
        std::env::remove_var("TSB_PKCS11_CONFIG");
        let user = home.path().join("config").join("tsb-pkcs11");
        std::fs::create_dir_all(&user).unwrap();
        common::write_private(
            &user.join("config.json"),
            br#"{"restApi":"http://127.0.0.1:9"}"#,
        );
        assert_eq!(f.C_Initialize.unwrap()(std::ptr::null_mut()), CKR_OK);
        let mut n: CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_FALSE, std::ptr::null_mut(), &mut n),
            CKR_OK
        );
        assert_eq!(n, 1);
        assert_eq!(f.C_Finalize.unwrap()(std::ptr::null_mut()), CKR_OK);
    }
}
