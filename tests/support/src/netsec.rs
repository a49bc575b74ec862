//! Helpers shared by `tests/module/network_faults.rs`, `tests/module/tls.rs` and `tests/module/secrets.rs`: harnesses
//! whose module copy logs to its own file, `C_Initialize` of a fresh module copy that is expected
//! to fail, return-value checks and timing.
//!
//! Every module copy of a test process logs to a file of its own (see
//! [`set_env_before_main`](crate::set_env_before_main)); [`Logged`] shows what a module at a
//! given level would have written. A [`ModuleCopy`] calls each `C_Initialize` in a child
//! process (this test binary re-run as [`INIT_CHILD_TEST`]) whose environment the test chooses
//! entirely with `Command::env`: `TSB_PKCS11_CONFIG` naming the very file under test, the log
//! variables, `env:` secrets.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki_sys::*;
use tsb_sim::SimConfig;

use crate::{module_for_copies, Harness, Raw, TEST_ENV};

/// A harness whose module copy's log is read at one level.
pub struct Logged {
    pub h: Harness,
    level: Option<String>,
}

impl Logged {
    /// Everything the module logged so far (at the harness's level).
    pub fn log_text(&self) -> String {
        self.h.log_text(self.level.as_deref())
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

/// `Harness::with_config` (its module copy logs to its own file: [`Harness::log_text`]).
pub fn harness(cfg: SimConfig, make: impl FnOnce(&str) -> serde_json::Value) -> Harness {
    Harness::with_config(cfg, make)
}

impl std::ops::Deref for Logged {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

/// `Harness::with_config`, its log read as a module logging at `level` would have written it.
pub fn logged(cfg: SimConfig, level: &str, make: impl FnOnce(&str) -> serde_json::Value) -> Logged {
    Logged {
        h: Harness::with_config(cfg, make),
        level: Some(level.to_string()),
    }
}

/// What the configuration file of a `C_Initialize` is.
pub enum ConfigFile<'a> {
    /// Written with this mode.
    Bytes(&'a [u8], u32),
    /// `TSB_PKCS11_CONFIG` points to this path (which may not exist).
    Path(&'a Path),
}

/// Where the module logs in the child of a [`ModuleCopy::initialize`].
#[derive(Clone, Copy)]
pub enum LogTo<'a> {
    /// To the copy's own file, at this level (None: the module's default, warn).
    File(Option<&'a str>),
    /// Wherever this process's environment says (`TSB_PKCS11_LOG`, `TSB_PKCS11_LOG_FILE`): for
    /// a child process whose parent chose them (`TSB_PKCS11_TEST_ENV=explicit`), or with the
    /// log variables given in `env`.
    Inherit,
}

/// The name of the test that a [`ModuleCopy`] re-runs its test binary with: a binary that uses
/// [`ModuleCopy`] has a test of this name calling [`init_child`].
pub const INIT_CHILD_TEST: &str = "module_init_child";

/// Set in the child of a [`ModuleCopy::initialize`]: the file it writes its outcome to.
const INIT_CHILD: &str = "TSB_PKCS11_TEST_INIT_CHILD";
/// The module the child loads.
const INIT_MODULE: &str = "TSB_PKCS11_TEST_INIT_MODULE";

/// A folder for the configurations and the log of `C_Initialize` calls of the module, each
/// in a child process that loads the module, calls `C_Initialize(NULL)` and, when it succeeded,
/// `C_Finalize`. All calls of one copy log to the same file.
pub struct ModuleCopy {
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
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
        let log = dir.path().join("module.log");
        ModuleCopy {
            dir,
            log,
            configs: 0,
        }
    }

    /// `C_Initialize` in a child process with `TSB_PKCS11_CONFIG` pointing at `file`, logging
    /// as `log_to` says, and `env` set.
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
        let outcome = self.dir.path().join(format!("outcome-{}", self.configs));
        let mut cmd = Command::new(std::env::current_exe().expect("test exe"));
        cmd.args([
            "--exact",
            INIT_CHILD_TEST,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(TEST_ENV, "explicit")
        .env(INIT_CHILD, &outcome)
        .env(INIT_MODULE, module_for_copies())
        .env("TSB_PKCS11_CONFIG", &config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        match log_to {
            LogTo::File(level) => {
                cmd.env("TSB_PKCS11_LOG_FILE", &self.log);
                match level {
                    Some(level) => cmd.env("TSB_PKCS11_LOG", level),
                    None => cmd.env_remove("TSB_PKCS11_LOG"),
                };
            }
            LogTo::Inherit => {
                let managed = crate::process_env().managed;
                let given = env.iter().any(|(k, _)| k.starts_with("TSB_PKCS11_LOG"));
                assert!(
                    !managed || given,
                    "LogTo::Inherit in a managed test process needs the log variables in env"
                );
                if managed {
                    cmd.env_remove("TSB_PKCS11_LOG")
                        .env_remove("TSB_PKCS11_LOG_FILE");
                }
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let status = cmd.status().expect("re-run the test binary");
        let text = std::fs::read_to_string(&outcome).unwrap_or_default();
        let (rv, micros) = text
            .split_once(' ')
            .and_then(|(rv, us)| Some((rv.parse::<CK_RV>().ok()?, us.trim().parse::<u64>().ok()?)))
            .unwrap_or_else(|| {
                panic!(
                    "the C_Initialize child ({status}) reported nothing: does this test binary \
                     have the test {INIT_CHILD_TEST} calling netsec::init_child?"
                )
            });
        let text = std::fs::read(&self.log).unwrap_or_default();
        let log = String::from_utf8_lossy(&text[(before as usize).min(text.len())..]).to_string();
        InitOutcome {
            rv,
            log,
            elapsed: Duration::from_micros(micros),
        }
    }

    /// Nothing to do: each child finalises the module before it exits.
    pub fn finalize(&mut self) {}
}

/// The child of [`ModuleCopy::initialize`] (a no-op in any other process): loads the module,
/// calls `C_Initialize(NULL)`, then `C_Finalize` when it succeeded, and writes the return value
/// and the microseconds `C_Initialize` took to the file its parent named.
pub fn init_child() {
    let Some(outcome) = std::env::var_os(INIT_CHILD) else {
        return;
    };
    let module = std::env::var_os(INIT_MODULE).expect("the module to load");
    let raw = Raw::load(Path::new(&module));
    let started = Instant::now();
    // SAFETY: NULL arguments are allowed (PKCS#11 v2.40 §5.4).
    let rv = unsafe { (raw.f.C_Initialize.unwrap())(std::ptr::null_mut()) };
    let elapsed = started.elapsed();
    if rv == CKR_OK {
        // SAFETY: the module is initialised.
        unsafe { (raw.f.C_Finalize.unwrap())(std::ptr::null_mut()) };
    }
    std::fs::write(outcome, format!("{rv} {}", elapsed.as_micros())).expect("write outcome");
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
