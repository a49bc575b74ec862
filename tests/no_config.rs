//! Registered with p11-kit, the module is loaded by every p11-kit application. With no
//! configuration anywhere (no `TSB_PKCS11_CONFIG`, no file in the search path) `C_Initialize`
//! succeeds and the module offers no slot (PKCS#11 v3.0 §5.5 `C_GetSlotList` with 0 slots) and
//! logs nothing at the default level; an explicit `TSB_PKCS11_CONFIG` naming a missing file
//! still fails `C_Initialize`.
//!
//! The module's configuration search reads the process environment (`TSB_PKCS11_CONFIG`,
//! `HOME`, `XDG_CONFIG_HOME`), which a test process must not change while it has threads: the
//! test re-runs this binary twice with an environment it chooses (`Command::env_clear`), once
//! without `TSB_PKCS11_CONFIG` and once with one naming a missing file.

use tsb_pkcs11_test_support as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{built_module, Raw};
use cryptoki_sys::*;

/// Set in the child processes: which case they run (`none` or `missing`).
const CASE: &str = "TSB_NO_CONFIG_CASE";

#[test]
fn without_any_configuration_there_is_no_slot_and_an_explicit_missing_file_still_fails() {
    match std::env::var(CASE).as_deref() {
        Ok("none") => return no_configuration_then_a_user_file(),
        Ok("missing") => return explicit_missing_file(),
        _ => {}
    }
    if std::path::Path::new("/etc/tsb-pkcs11/config.json").exists() {
        eprintln!("!!! /etc/tsb-pkcs11/config.json exists on this machine: the no-configuration case cannot be set up: SKIPPED");
        return;
    }
    for case in ["none", "missing"] {
        let home = tempfile::tempdir().unwrap();
        let name = common::test_path(
            module_path!(),
            "without_any_configuration_there_is_no_slot_and_an_explicit_missing_file_still_fails",
        );
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env_clear()
            .env(common::TEST_ENV, "explicit")
            // The module this process built (the child runs no cargo: it has no PATH).
            .env("TSB_PKCS11_MODULE", built_module())
            .env(CASE, case)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("TSB_PKCS11_LOG_FILE", home.path().join("module.log"));
        if case == "missing" {
            cmd.env("TSB_PKCS11_CONFIG", home.path().join("missing.json"));
        }
        let out = cmd.output().expect("re-run this test binary");
        assert!(
            out.status.success(),
            "case {case}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The child ran the case (libtest ran exactly one test).
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "case {case}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
}

fn log_file() -> PathBuf {
    PathBuf::from(std::env::var_os("TSB_PKCS11_LOG_FILE").expect("TSB_PKCS11_LOG_FILE"))
}

fn load(dir: &Path) -> Raw {
    let module = dir.join("libtsb_pkcs11-noconfig.so");
    std::fs::copy(built_module(), &module).unwrap();
    Raw::load(&module)
}

/// In the child, `TSB_PKCS11_CONFIG` naming a missing file: an error, as before.
fn explicit_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let raw = load(dir.path());
    // SAFETY: NULL initialisation arguments are allowed.
    let rv = unsafe { raw.f.C_Initialize.unwrap()(std::ptr::null_mut()) };
    assert_eq!(rv, CKR_GENERAL_ERROR);
    let logged = std::fs::read_to_string(log_file()).unwrap_or_default();
    assert!(logged.contains("missing.json"), "{logged}");
}

/// In the child, no `TSB_PKCS11_CONFIG` and no file of the search path: no slot and nothing
/// logged; then a user configuration file appears, and `C_Initialize` reads it (one slot).
fn no_configuration_then_a_user_file() {
    assert!(std::env::var_os("TSB_PKCS11_CONFIG").is_none());
    let home = home();
    let log = log_file();
    let dir = tempfile::tempdir().unwrap();
    let raw = load(dir.path());
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

        // A user configuration file appears: C_Initialize reads it (one slot).
        let user = home.join("config").join("tsb-pkcs11");
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
