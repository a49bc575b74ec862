//! Helpers shared by `tests/network_faults.rs`, `tests/tls.rs` and `tests/secrets.rs`: harnesses
//! whose module copy logs to its own file, `C_Initialize` of a fresh module copy that is expected
//! to fail, return-value checks and timing.
//!
//! The module reads `TSB_PKCS11_CONFIG`, `TSB_PKCS11_LOG` and `TSB_PKCS11_LOG_FILE` at
//! `C_Initialize`, and each loaded copy of the .so installs its own logger once. Every harness
//! and every module copy of these test files is therefore created under [`ENV_LOCK`], which
//! sets those variables, initialises, and removes them again.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki_sys::*;
use tsb_sim::SimConfig;

use crate::common::{built_module, Harness, Raw};

/// Serialises the module's environment variables + `C_Initialize` within one test binary.
pub static ENV_LOCK: Mutex<()> = Mutex::new(());
static COPIES: AtomicUsize = AtomicUsize::new(0);

pub fn env_lock() -> MutexGuard<'static, ()> {
    ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A harness whose module copy logs at `level` to its own file.
pub struct Logged {
    pub h: Harness,
    pub log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Logged {
    /// Everything the module logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

impl std::ops::Deref for Logged {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

/// `Harness::with_config` with the module logging at `level` to a file of its own.
pub fn logged(cfg: SimConfig, level: &str, make: impl FnOnce(&str) -> serde_json::Value) -> Logged {
    let log_dir = tempfile::tempdir().expect("tempdir");
    let log = log_dir.path().join("module.log");
    let h = {
        let _g = env_lock();
        std::env::set_var("TSB_PKCS11_LOG", level);
        std::env::set_var("TSB_PKCS11_LOG_FILE", &log);
        let h = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Harness::with_config(cfg, make)
        }));
        std::env::remove_var("TSB_PKCS11_LOG");
        std::env::remove_var("TSB_PKCS11_LOG_FILE");
        h.unwrap_or_else(|p| std::panic::resume_unwind(p))
    };
    Logged {
        h,
        log,
        _log_dir: log_dir,
    }
}

/// The outcome of `C_Initialize` of a fresh module copy.
pub struct InitOutcome {
    pub rv: CK_RV,
    pub log: String,
    pub elapsed: Duration,
    /// Keeps the module copy loaded (and finalises it on drop when it initialised).
    pub raw: Raw,
    pub dir: tempfile::TempDir,
}

impl InitOutcome {
    pub fn log_lines(&self) -> Vec<&str> {
        self.log.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

impl Drop for InitOutcome {
    fn drop(&mut self) {
        if self.rv == CKR_OK {
            // SAFETY: the module was initialised by `initialize_with`.
            unsafe { (self.raw.f.C_Finalize.unwrap())(std::ptr::null_mut()) };
        }
    }
}

/// What the configuration file of [`initialize_with`] is.
pub enum ConfigFile<'a> {
    /// Written with this mode.
    Bytes(&'a [u8], u32),
    /// `TSB_PKCS11_CONFIG` points to this path (which may not exist).
    Path(&'a Path),
}

/// Loads a fresh copy of the module and calls `C_Initialize` with `TSB_PKCS11_CONFIG` pointing
/// at the given configuration, logging at `level` (None: the module's default) to a file.
/// Extra environment variables are set for the call only.
pub fn initialize_with(
    file: ConfigFile<'_>,
    level: Option<&str>,
    env: &[(&str, &str)],
) -> InitOutcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = match file {
        ConfigFile::Bytes(bytes, mode) => {
            let p = dir.path().join("config.json");
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        }
        ConfigFile::Path(p) => p.to_path_buf(),
    };
    let n = COPIES.fetch_add(1, Ordering::Relaxed);
    let module = dir.path().join(format!("libtsb_pkcs11-init-{n}.so"));
    std::fs::copy(built_module(), &module).expect("copy module");
    let log = dir.path().join("module.log");
    let raw = Raw::load(&module);
    let (rv, elapsed) = {
        let _g = env_lock();
        std::env::set_var("TSB_PKCS11_CONFIG", &config_path);
        match level {
            Some(l) => std::env::set_var("TSB_PKCS11_LOG", l),
            None => std::env::remove_var("TSB_PKCS11_LOG"),
        }
        std::env::set_var("TSB_PKCS11_LOG_FILE", &log);
        for (k, v) in env {
            std::env::set_var(k, v);
        }
        let started = Instant::now();
        // SAFETY: NULL arguments are allowed (PKCS#11 v2.40 §5.4).
        let rv = unsafe { (raw.f.C_Initialize.unwrap())(std::ptr::null_mut()) };
        let elapsed = started.elapsed();
        for (k, _) in env {
            std::env::remove_var(k);
        }
        std::env::remove_var("TSB_PKCS11_LOG");
        std::env::remove_var("TSB_PKCS11_LOG_FILE");
        std::env::remove_var("TSB_PKCS11_CONFIG");
        (rv, elapsed)
    };
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    InitOutcome {
        rv,
        log,
        elapsed,
        raw,
        dir,
    }
}

/// The PKCS#11 return value of a `cryptoki` error.
pub fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Asserts a result failed with `expected`.
#[track_caller]
pub fn assert_rv<T: std::fmt::Debug>(r: Result<T, CkError>, expected: RvError) {
    match r {
        Ok(v) => panic!("expected {expected:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(rv_of(&e), Some(expected), "{e:?}"),
    }
}

/// Runs `f` and returns its result and how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let v = f();
    (v, started.elapsed())
}

/// Prints a timing for the test report (visible with `--nocapture`).
pub fn report(what: &str, d: Duration) {
    eprintln!("timing: {what}: {} ms", d.as_millis());
}
