//! Helpers shared by `tests/module/network_faults.rs`, `tests/module/tls.rs` and `tests/module/secrets.rs`: harnesses
//! whose module copy logs to its own file, `C_Initialize` of a fresh module copy that is expected
//! to fail, return-value checks and timing.
//!
//! The module reads `TSB_PKCS11_CONFIG`, `TSB_PKCS11_LOG` and `TSB_PKCS11_LOG_FILE` at
//! `C_Initialize`, and each loaded copy of the .so installs its own logger once. Every harness
//! and every module copy of these test files is therefore created under
//! [`env_lock`](crate::env_lock), which sets those variables, initialises, and removes them
//! again.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki_sys::*;
use tsb_sim::SimConfig;

use crate::{env_lock, module_for_copies, EnvGuard, Harness, Raw};

static COPIES: AtomicUsize = AtomicUsize::new(0);

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

/// `Harness::with_config`, logging wherever the process environment says.
pub fn harness(cfg: SimConfig, make: impl FnOnce(&str) -> serde_json::Value) -> Harness {
    Harness::with_config(cfg, make)
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
    let sim = crate::start_sim(cfg);
    let h = Harness::over_with_env(
        sim,
        |sim| make(&sim.url()),
        &[
            ("TSB_PKCS11_LOG", std::ffi::OsStr::new(level)),
            ("TSB_PKCS11_LOG_FILE", log.as_os_str()),
        ],
    );
    Logged {
        h,
        log,
        _log_dir: log_dir,
    }
}

/// What the configuration file of a `C_Initialize` is.
pub enum ConfigFile<'a> {
    /// Written with this mode.
    Bytes(&'a [u8], u32),
    /// `TSB_PKCS11_CONFIG` points to this path (which may not exist).
    Path(&'a Path),
}

/// Where a module copy logs.
#[derive(Clone, Copy)]
pub enum LogTo<'a> {
    /// To the copy's own file, at this level (None: the module's default, warn).
    File(Option<&'a str>),
    /// Wherever the process environment says (`TSB_PKCS11_LOG`, `TSB_PKCS11_LOG_FILE`).
    Inherit,
}

/// A fresh copy of the module, loaded through its raw function list. Its logger is installed
/// by its first `C_Initialize`; later ones reuse it (and its log file).
pub struct ModuleCopy {
    pub raw: Raw,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    initialised: bool,
    configs: usize,
}

/// The outcome of one `C_Initialize`.
pub struct InitOutcome {
    pub rv: CK_RV,
    /// What the module logged during the call (to its own file).
    pub log: String,
    pub elapsed: Duration,
}

impl InitOutcome {
    pub fn log_lines(&self) -> Vec<&str> {
        self.log.lines().filter(|l| !l.trim().is_empty()).collect()
    }
}

impl ModuleCopy {
    pub fn load() -> ModuleCopy {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        let module = dir.path().join(format!("libtsb_pkcs11-init-{n}.so"));
        std::fs::copy(module_for_copies(), &module).expect("copy module");
        let raw = Raw::load(&module);
        let log = dir.path().join("module.log");
        ModuleCopy {
            raw,
            dir,
            log,
            initialised: false,
            configs: 0,
        }
    }

    /// `C_Initialize` with `TSB_PKCS11_CONFIG` pointing at `file`; `env` is set for the call.
    pub fn initialize(
        &mut self,
        file: ConfigFile<'_>,
        log_to: LogTo<'_>,
        env: &[(&str, &str)],
    ) -> InitOutcome {
        self.configs += 1;
        let config_path = match file {
            ConfigFile::Bytes(bytes, mode) => {
                let p = self
                    .dir
                    .path()
                    .join(format!("config-{}.json", self.configs));
                std::fs::write(&p, bytes).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
                p
            }
            ConfigFile::Path(p) => p.to_path_buf(),
        };
        let before = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let (rv, elapsed) = {
            let _g = env_lock();
            let mut vars = EnvGuard(Vec::new());
            vars.set("TSB_PKCS11_CONFIG", Some(config_path.as_os_str()));
            if let LogTo::File(level) = log_to {
                vars.set("TSB_PKCS11_LOG", level.map(std::ffi::OsStr::new));
                vars.set("TSB_PKCS11_LOG_FILE", Some(self.log.as_os_str()));
            }
            for (k, v) in env {
                vars.set(k, Some(std::ffi::OsStr::new(v)));
            }
            let started = Instant::now();
            // SAFETY: NULL arguments are allowed (PKCS#11 v2.40 §5.4).
            let rv = unsafe { (self.raw.f.C_Initialize.unwrap())(std::ptr::null_mut()) };
            (rv, started.elapsed())
        };
        if rv == CKR_OK {
            self.initialised = true;
        }
        let text = std::fs::read(&self.log).unwrap_or_default();
        let log = String::from_utf8_lossy(&text[(before as usize).min(text.len())..]).to_string();
        InitOutcome { rv, log, elapsed }
    }

    pub fn finalize(&mut self) {
        if self.initialised {
            // SAFETY: the module is initialised.
            let rv = unsafe { (self.raw.f.C_Finalize.unwrap())(std::ptr::null_mut()) };
            assert_eq!(rv, CKR_OK);
            self.initialised = false;
        }
    }
}

impl Drop for ModuleCopy {
    fn drop(&mut self) {
        if self.initialised {
            // SAFETY: the module is initialised.
            unsafe { (self.raw.f.C_Finalize.unwrap())(std::ptr::null_mut()) };
        }
    }
}

/// Loads a fresh copy of the module and calls `C_Initialize` once, logging at `level`
/// (None: the module's default) to the copy's own file.
pub fn initialize_with(
    file: ConfigFile<'_>,
    level: Option<&str>,
    env: &[(&str, &str)],
) -> InitOutcome {
    let mut m = ModuleCopy::load();
    m.initialize(file, LogTo::File(level), env)
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
