//! Test harness: an in-process TSB simulator, a module configuration pointing at it, and the
//! built `libtsb_pkcs11.so` loaded through the `cryptoki` crate (and raw, for return codes the
//! crate hides). Each harness loads its own copy of the .so, so tests with different
//! configurations run side by side in one process without sharing module state.
//!
//! The module's variables are set once, before `main` ([`set_env_before_main!`]); a harness
//! points them at its configuration and its copy's own log file around its `C_Initialize`
//! (docs/testing.md, "The test support crate").
//!
//! `netsec`: log-reading harnesses and `C_Initialize` in child processes (network, TLS,
//! configuration and secret tests).
//! `pki`: the one certificate builder of the tests.

mod built;
pub mod netsec;
pub mod pki;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use cryptoki_sys::*;
use openssl::pkey::{PKey, Public};
use parking_lot::{ReentrantMutex, ReentrantMutexGuard};
use tsb_sim::{SimConfig, Simulator};

/// The one lock of the process under which a test points the module at its configuration and
/// calls the `C_Initialize` that reads it (see [`process_env`]): the module reads
/// `TSB_PKCS11_CONFIG`, `TSB_PKCS11_LOG` and `TSB_PKCS11_LOG_FILE` there. Every family of a test
/// binary takes this same lock (tests/module runs many families in one process). It is
/// reentrant, so a test that holds it can create a [`Harness`], which takes it again. The
/// process environment itself is never changed once `main` runs: child processes get their
/// settings with `Command::env`.
pub fn env_lock() -> ReentrantMutexGuard<'static, ()> {
    let _ = process_env();
    ENV.lock()
}

/// The libtest name of the test `name` of the module at `module_path` (`module_path!()`): the
/// module path without the crate, so `hostile::abort_child` in the grouped binary tests/module
/// and `abort_child` in a binary of its own. For re-running a test in a child process with
/// `--exact`.
pub fn test_path(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_string(),
    }
}

/// Serialises publishing a configuration + the `C_Initialize` that reads it + claiming the log
/// file that `C_Initialize` created.
static ENV: ReentrantMutex<()> = ReentrantMutex::new(());
static COPIES: AtomicUsize = AtomicUsize::new(0);

/// The variable that says how the test process got its module environment: `managed` (set by
/// [`set_env_before_main`]) or `explicit` (a parent test process chose every variable for this
/// child with `Command::env`; nothing is set before `main`).
pub const TEST_ENV: &str = "TSB_PKCS11_TEST_ENV";

/// The log level every module copy of a managed test process logs at (`TSB_PKCS11_LOG`): the
/// most any test reads. [`log_at`] shows what a module at a lower level would have logged.
pub const PROCESS_LOG_LEVEL: &str = "debug";

/// Sets the module's variables once, before `main`, while the process has one thread (an
/// `.init_array` entry, run by the dynamic loader before `main`; setting the environment later,
/// when other threads may read it, is undefined behaviour in C, and `unsafe` in Rust 2024).
/// This is the one place of the tests that sets the environment (`src/layering.rs` checks it):
/// - `TSB_PKCS11_CONFIG`: `<dir>/current/config.json`, where `current` is a symbolic link that
///   [`publish_config`] points at a harness's folder before its `C_Initialize`;
/// - `TSB_PKCS11_LOG_FILE`: `<dir>/module.log`, which the first `C_Initialize` of a module copy
///   creates and opens; [`claim_log`] then renames it into the harness's folder, so each copy
///   logs to a file of its own;
/// - `TSB_PKCS11_LOG`: [`PROCESS_LOG_LEVEL`].
///
/// `<dir>` is `tsb-pkcs11-test-<pid>` in the temporary folder (folders of processes that no
/// longer run are removed). A child started with `TSB_PKCS11_TEST_ENV=explicit` keeps what
/// its parent gave it.
pub extern "C" fn set_env_before_main() {
    if std::env::var_os(TEST_ENV).is_some_and(|v| v == "explicit") {
        return;
    }
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(PROCESS_DIR_PREFIX))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = tmp.join(format!("{PROCESS_DIR_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    }
    std::env::set_var("TSB_PKCS11_CONFIG", dir.join("current").join("config.json"));
    std::env::set_var("TSB_PKCS11_LOG_FILE", dir.join("module.log"));
    std::env::set_var("TSB_PKCS11_LOG", PROCESS_LOG_LEVEL);
    std::env::set_var(TEST_ENV, "managed");
}

const PROCESS_DIR_PREFIX: &str = "tsb-pkcs11-test-";

/// Makes [`set_env_before_main`] an initialiser of the test executable (an `.init_array`
/// entry: run by the dynamic loader before `main`, so before any thread of the test harness
/// exists). Written once at the root of each test binary whose harnesses load the module in
/// the test process; a binary without it gets no environment ([`process_env`] panics).
#[macro_export]
macro_rules! set_env_before_main {
    () => {
        #[used]
        #[link_section = ".init_array"]
        static TSB_PKCS11_SET_ENV_BEFORE_MAIN: extern "C" fn() = $crate::set_env_before_main;
    };
}

/// Where the module of a managed test process finds its configuration and writes its log.
pub struct ProcessEnv {
    /// `TSB_PKCS11_CONFIG`.
    pub config: PathBuf,
    /// `TSB_PKCS11_LOG_FILE` (None: the parent of an explicit child chose none).
    pub log: Option<PathBuf>,
    /// True when this process set them before `main` (false: a parent chose them).
    pub managed: bool,
}

/// What [`set_env_before_main`] (or the parent process) set. Panics when the initialiser did
/// not run and no parent chose a configuration.
pub fn process_env() -> &'static ProcessEnv {
    static PROCESS: OnceLock<ProcessEnv> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let managed = std::env::var_os(TEST_ENV).is_some_and(|v| v == "managed");
        let config = std::env::var_os("TSB_PKCS11_CONFIG")
            .filter(|_| std::env::var_os(TEST_ENV).is_some())
            .map(PathBuf::from)
            .expect(
                "no module environment: this test binary needs \
                 tsb_pkcs11_test_support::set_env_before_main!() (or a parent that sets \
                 TSB_PKCS11_TEST_ENV=explicit and TSB_PKCS11_CONFIG)",
            );
        let log = std::env::var_os("TSB_PKCS11_LOG_FILE").map(PathBuf::from);
        ProcessEnv {
            config,
            log,
            managed,
        }
    })
}

/// Points `TSB_PKCS11_CONFIG` at `config` (a file named `config.json`): the symbolic link
/// `current` of the process's folder is replaced, atomically, by one to `config`'s folder, so
/// relative paths in the file stay relative to its own folder. Only under [`env_lock`], which
/// the caller holds until its `C_Initialize` returned.
pub fn publish_config(config: &Path) {
    let env = process_env();
    assert_eq!(
        config.file_name().and_then(|n| n.to_str()),
        env.config.file_name().and_then(|n| n.to_str()),
        "a published configuration is named like TSB_PKCS11_CONFIG's file"
    );
    let link = env.config.parent().expect("TSB_PKCS11_CONFIG has a folder");
    let folder = config.parent().expect("the configuration has a folder");
    let folder = std::path::absolute(folder).expect("absolute path");
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&folder, &tmp).expect("symlink to the configuration's folder");
    std::fs::rename(&tmp, link).expect("replace the configuration link");
}

/// Runs `init` (a `C_Initialize`) with `config` published; a log file that it opened (the first
/// `C_Initialize` of a module copy in a managed process) becomes `log`. Takes [`env_lock`].
pub fn initialize_with_config<T>(config: &Path, log: &Path, init: impl FnOnce() -> T) -> T {
    let _in_use = ConfigInUse::new(config, log);
    init()
}

/// While it lives: [`env_lock`] is held, `TSB_PKCS11_CONFIG` names `config`
/// ([`publish_config`]), and the log file a module copy opens is moved to `log` when it ends:
/// for a test that calls `C_Initialize` itself.
pub struct ConfigInUse {
    _g: ReentrantMutexGuard<'static, ()>,
    log: PathBuf,
}

impl ConfigInUse {
    pub fn new(config: &Path, log: &Path) -> ConfigInUse {
        let g = env_lock();
        publish_config(config);
        if let Some(shared) = shared_log() {
            let _ = std::fs::remove_file(shared);
        }
        ConfigInUse {
            _g: g,
            log: log.to_path_buf(),
        }
    }
}

impl Drop for ConfigInUse {
    fn drop(&mut self) {
        if let Some(shared) = shared_log() {
            claim_log(shared, &self.log);
        }
    }
}

/// `TSB_PKCS11_LOG_FILE` of a managed process (None in an explicit child).
fn shared_log() -> Option<&'static Path> {
    let env = process_env();
    env.log.as_deref().filter(|_| env.managed)
}

/// Renames the shared log file (just created by a module copy, which keeps it open) to `log`.
fn claim_log(shared: &Path, log: &Path) {
    match std::fs::rename(shared, log) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if !std::thread::panicking() => {
            // Another file system: the module keeps writing to the shared file's inode.
            panic!(
                "cannot move the module's log file to {}: {e}",
                log.display()
            )
        }
        Err(_) => {}
    }
}

/// The lines of `text` (a module's log at [`PROCESS_LOG_LEVEL`]) that a module logging at
/// `level` (`TSB_PKCS11_LOG`: `error`, `warn`, `info`, `debug`, `trace`; None: the module's
/// default, warnings and the approval-wait lines) would have written. A line without the
/// `[<time> <LEVEL> <target>]` prefix continues the one before it.
pub fn log_at(text: &str, level: Option<&str>) -> String {
    let rank = |l: &str| match l {
        "ERROR" | "error" => Some(1),
        "WARN" | "warn" => Some(2),
        "INFO" | "info" => Some(3),
        "DEBUG" | "debug" => Some(4),
        "TRACE" | "trace" => Some(5),
        _ => None,
    };
    let wanted = level.map(|l| rank(l).unwrap_or_else(|| panic!("log_at: unknown level {l:?}")));
    let mut out = String::new();
    let mut keep = false;
    for line in text.split_inclusive('\n') {
        let mut head = line
            .strip_prefix('[')
            .and_then(|l| l.split_once(']'))
            .map(|(h, _)| h.split_whitespace());
        if let Some((_time, Some(r), target)) = head
            .as_mut()
            .map(|h| (h.next(), h.next().and_then(rank), h.next().unwrap_or("")))
        {
            keep = match wanted {
                Some(w) => r <= w,
                None => {
                    r <= 2
                        || (r == 3
                            && (target == "tsb_pkcs11::wait"
                                || target.starts_with("tsb_pkcs11::wait::")))
                }
            };
        }
        if keep {
            out.push_str(line);
        }
    }
    out
}

/// The built libtsb_pkcs11.so (see `built`).
pub fn built_module() -> PathBuf {
    built::module()
}

/// The built `tsb-pkcs11` command (see `built`).
pub fn built_command() -> PathBuf {
    built::command()
}

/// What a harness copies: the built module without its debug sections (`strip --strip-debug`,
/// binutils; the code is the same), made once next to it and again when the module is rebuilt.
/// Every harness loads a copy of its own, and a copy stays mapped until the process exits (the
/// module cannot be unloaded once its threads used thread-local storage), so its file's disk
/// space is only given back then: tests/module loads ~200 copies in one process, 14 MB each
/// stripped instead of 124 MB (a debug build). Falls back to the built module if `strip` fails.
pub fn module_for_copies() -> PathBuf {
    static STRIPPED: OnceLock<PathBuf> = OnceLock::new();
    STRIPPED
        .get_or_init(|| {
            let built = built_module();
            let stripped = built.with_extension("stripped-for-tests.so");
            let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            if mtime(&stripped).is_some() && mtime(&stripped) >= mtime(&built) {
                return stripped;
            }
            // Written under a name of its own, then renamed: test processes (and their child
            // processes) may do this at the same time.
            let tmp = built.with_extension(format!("stripped-{}.tmp", std::process::id()));
            let ok = std::process::Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&tmp)
                .arg(&built)
                .status()
                .is_ok_and(|s| s.success())
                && std::fs::rename(&tmp, &stripped).is_ok();
            if ok {
                stripped
            } else {
                let _ = std::fs::remove_file(&tmp);
                built
            }
        })
        .clone()
}

fn sim_state_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    target.join("tsb-sim-state")
}

/// The simulator's state directory (its key cache): the configuration's, else
/// target/tsb-sim-state, given in the configuration rather than through the environment.
fn with_state_dir(mut cfg: SimConfig) -> SimConfig {
    if cfg.state_dir.is_none() {
        cfg.state_dir = Some(sim_state_dir());
    }
    cfg
}

/// Starts a simulator (keys cached under target/tsb-sim-state so RSA-4096 is generated once).
pub fn start_sim(cfg: SimConfig) -> Simulator {
    Simulator::start(with_state_dir(cfg)).expect("simulator starts")
}

/// Starts a simulator cluster: `n` listeners ("TSB nodes") over one state.
pub fn start_cluster(cfg: SimConfig, n: usize) -> Simulator {
    Simulator::start_cluster(with_state_dir(cfg), n).expect("simulator cluster starts")
}

/// The raw PKCS#11 function list of a loaded module, for calls whose exact return codes the
/// `cryptoki` crate does not expose (size queries, CKR_BUFFER_TOO_SMALL, bad arguments).
pub struct Raw {
    _lib: libloading::Library,
    pub f: &'static CK_FUNCTION_LIST,
    pub f3: &'static CK_FUNCTION_LIST_3_0,
}

impl Raw {
    pub fn load(path: &Path) -> Raw {
        // SAFETY: loading our own module; its initialisers have no side effects.
        let lib = unsafe { libloading::Library::new(path) }.expect("dlopen");
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        let mut iface: *mut CK_INTERFACE = std::ptr::null_mut();
        // SAFETY: symbols with the PKCS#11 signatures.
        unsafe {
            let gfl: libloading::Symbol<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
                lib.get(b"C_GetFunctionList").expect("C_GetFunctionList");
            assert_eq!(gfl(&mut list), CKR_OK);
            let gi: libloading::Symbol<
                unsafe extern "C" fn(
                    *mut u8,
                    *mut CK_VERSION,
                    *mut *mut CK_INTERFACE,
                    CK_FLAGS,
                ) -> CK_RV,
            > = lib.get(b"C_GetInterface").expect("C_GetInterface");
            assert_eq!(
                gi(std::ptr::null_mut(), std::ptr::null_mut(), &mut iface, 0),
                CKR_OK
            );
        }
        // SAFETY: the module's function lists are statics that live as long as the library,
        // which `Raw` keeps loaded.
        let (f, f3) = unsafe {
            (
                &*list,
                &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_0),
            )
        };
        Raw { _lib: lib, f, f3 }
    }
}

pub struct Harness {
    pub sim: Simulator,
    pub pkcs11: Pkcs11,
    pub raw: Raw,
    pub slot: Slot,
    pub config_path: PathBuf,
    pub module_path: PathBuf,
    /// The module copy's own log file, at [`PROCESS_LOG_LEVEL`] (see [`Harness::log_text`]).
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Default for Harness {
    /// The demo simulator and default module settings.
    fn default() -> Harness {
        Harness::with(SimConfig::demo(), serde_json::json!({}))
    }
}

impl Harness {
    /// The simulator's demo keys, the module with default settings.
    pub fn new() -> Harness {
        Harness::default()
    }

    /// `pkcs11_settings` is merged into the config's `pkcs11` object; `top` keys beside it.
    pub fn with(cfg: SimConfig, pkcs11_settings: serde_json::Value) -> Harness {
        Harness::with_config(
            cfg,
            |url| serde_json::json!({ "restApi": url, "pkcs11": pkcs11_settings }),
        )
    }

    /// Full control of the module configuration, given the simulator URL.
    pub fn with_config(cfg: SimConfig, make: impl FnOnce(&str) -> serde_json::Value) -> Harness {
        let sim = start_sim(cfg);
        Harness::over(sim, |sim| make(&sim.url()))
    }

    /// The module over a simulator cluster of `n` nodes; `make` gets the nodes' URLs.
    pub fn cluster(
        cfg: SimConfig,
        n: usize,
        make: impl FnOnce(&[String]) -> serde_json::Value,
    ) -> Harness {
        let sim = start_cluster(cfg, n);
        Harness::over(sim, |sim| make(&sim.urls()))
    }

    /// The module over a running simulator, configured by `make`.
    pub fn over(sim: Simulator, make: impl FnOnce(&Simulator) -> serde_json::Value) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.json");
        let log = dir.path().join("module.log");
        let mut json = make(&sim);
        // The module's journal of approval requests goes into this harness's folder (not into
        // the home folder, and not through XDG_STATE_HOME of the process environment), unless
        // the test chose it.
        if let Some(config) = json.as_object_mut() {
            if let Some(pkcs11) = config
                .entry("pkcs11")
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
            {
                pkcs11
                    .entry("requestJournal")
                    .or_insert_with(|| dir.path().join("requests.jsonl").to_str().into());
            }
        }
        write_private(&config_path, &serde_json::to_vec_pretty(&json).unwrap());
        let n = COPIES.fetch_add(1, Ordering::Relaxed);
        let module_path = dir.path().join(format!("libtsb_pkcs11-{n}.so"));
        std::fs::copy(module_for_copies(), &module_path).expect("copy module");
        let pkcs11 = Pkcs11::new(&module_path).expect("load module");
        initialize_with_config(&config_path, &log, || {
            pkcs11
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                .expect("C_Initialize")
        });
        let raw = Raw::load(&module_path);
        let slot = pkcs11.get_slots_with_token().expect("slots")[0];
        Harness {
            sim,
            pkcs11,
            raw,
            slot,
            config_path,
            module_path,
            log,
            dir,
        }
    }

    /// Everything this harness's module copy logged so far, as a module logging at `level`
    /// would have written it ([`log_at`]; None: the module's default level). Empty in a child
    /// process whose parent chose the log file.
    pub fn log_text(&self, level: Option<&str>) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        log_at(&String::from_utf8_lossy(&bytes), level)
    }

    /// Runs `f` under [`env_lock`] with `TSB_PKCS11_CONFIG` naming this harness's
    /// configuration: for a module that reads it outside [`Harness::over`], such as a child
    /// process forked inside `f` that calls `C_Initialize` (it goes on naming it until another
    /// harness publishes its own).
    pub fn with_config_env<T>(&self, f: impl FnOnce() -> T) -> T {
        initialize_with_config(&self.config_path, &self.log, f)
    }

    /// `C_Initialize(NULL)` through the raw list with this harness's configuration.
    pub fn initialize_raw(&self) -> CK_RV {
        // SAFETY: NULL arguments are allowed (PKCS#11 v2.40 §5.4).
        self.with_config_env(|| unsafe { (self.raw.f.C_Initialize.unwrap())(std::ptr::null_mut()) })
    }

    /// `C_Finalize` and `C_Initialize` again through the raw list (same configuration).
    pub fn reinitialize(&self) {
        // SAFETY: NULL arguments are allowed for both calls.
        self.with_config_env(|| unsafe {
            assert_eq!(
                (self.raw.f.C_Finalize.unwrap())(std::ptr::null_mut()),
                CKR_OK
            );
            assert_eq!(
                (self.raw.f.C_Initialize.unwrap())(std::ptr::null_mut()),
                CKR_OK
            );
        })
    }

    pub fn session(&self) -> Session {
        self.pkcs11
            .open_ro_session(self.slot)
            .expect("open session")
    }

    pub fn find(&self, s: &Session, label: &str, class: ObjectClass) -> ObjectHandle {
        let found = s
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .expect("find");
        assert_eq!(found.len(), 1, "exactly one {class:?} labelled {label}");
        found[0]
    }

    pub fn private_key(&self, s: &Session, label: &str) -> ObjectHandle {
        self.find(s, label, ObjectClass::PRIVATE_KEY)
    }

    /// The key's public key as the simulator holds it, parsed by OpenSSL (independent of the
    /// module's own parsing).
    pub fn sim_public_key(&self, label: &str) -> PKey<Public> {
        let der = self.sim.public_key_der(label).expect("sim has the key");
        PKey::public_key_from_der(&der).expect("openssl parses SPKI")
    }

    pub fn attr_bytes(&self, s: &Session, h: ObjectHandle, t: AttributeType) -> Vec<u8> {
        let attrs = s.get_attributes(h, &[t]).expect("get attribute");
        match attrs.into_iter().next() {
            Some(Attribute::Id(v))
            | Some(Attribute::Label(v))
            | Some(Attribute::Modulus(v))
            | Some(Attribute::PublicExponent(v))
            | Some(Attribute::EcParams(v))
            | Some(Attribute::EcPoint(v))
            | Some(Attribute::Value(v)) => v,
            other => panic!("unexpected attribute {other:?}"),
        }
    }
}

pub fn write_private(path: &Path, data: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .expect("write config");
    f.write_all(data).unwrap();
}

pub mod verify {
    //! Independent verification with OpenSSL (never the module's or the simulator's code).
    use openssl::bn::BigNum;
    use openssl::ecdsa::EcdsaSig;
    use openssl::hash::MessageDigest;
    use openssl::md::Md;
    use openssl::pkey::{PKey, Public};
    use openssl::pkey_ctx::PkeyCtx;
    use openssl::rsa::{Padding, Rsa};
    use openssl::sign::{RsaPssSaltlen, Verifier};

    #[derive(Clone, Copy, Debug)]
    pub enum Hash {
        Sha1,
        Sha224,
        Sha256,
        Sha384,
        Sha512,
    }

    impl Hash {
        fn md(self) -> MessageDigest {
            match self {
                Hash::Sha1 => MessageDigest::sha1(),
                Hash::Sha224 => MessageDigest::sha224(),
                Hash::Sha256 => MessageDigest::sha256(),
                Hash::Sha384 => MessageDigest::sha384(),
                Hash::Sha512 => MessageDigest::sha512(),
            }
        }
        fn md_ref(self) -> &'static openssl::md::MdRef {
            match self {
                Hash::Sha1 => Md::sha1(),
                Hash::Sha224 => Md::sha224(),
                Hash::Sha256 => Md::sha256(),
                Hash::Sha384 => Md::sha384(),
                Hash::Sha512 => Md::sha512(),
            }
        }
        pub fn digest(self, data: &[u8]) -> Vec<u8> {
            openssl::hash::hash(self.md(), data).unwrap().to_vec()
        }
        pub fn output_len(self) -> usize {
            self.md().size()
        }
        /// DER DigestInfo (RFC 8017 §9.2 note 1) built by hand from the OIDs.
        pub fn digest_info(self, digest: &[u8]) -> Vec<u8> {
            let prefix: &[u8] = match self {
                Hash::Sha1 => &[
                    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
                    0x04, 0x14,
                ],
                Hash::Sha224 => &[
                    0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x04, 0x05, 0x00, 0x04, 0x1c,
                ],
                Hash::Sha256 => &[
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ],
                Hash::Sha384 => &[
                    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x02, 0x05, 0x00, 0x04, 0x30,
                ],
                Hash::Sha512 => &[
                    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x03, 0x05, 0x00, 0x04, 0x40,
                ],
            };
            [prefix, digest].concat()
        }
    }

    pub const ALL: [Hash; 5] = [
        Hash::Sha1,
        Hash::Sha224,
        Hash::Sha256,
        Hash::Sha384,
        Hash::Sha512,
    ];

    pub fn rsa_pkcs1(key: &PKey<Public>, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        let mut v = Verifier::new(hash.md(), key).unwrap();
        v.verify_oneshot(sig, msg).unwrap_or(false)
    }

    /// CKM_RSA_PKCS: the signature opens (public decrypt, type-1 padding) to exactly `input`.
    pub fn rsa_pkcs1_raw(key: &PKey<Public>, input: &[u8], sig: &[u8]) -> bool {
        let rsa: Rsa<Public> = key.rsa().unwrap();
        let mut out = vec![0u8; rsa.size() as usize];
        match rsa.public_decrypt(sig, &mut out, Padding::PKCS1) {
            Ok(n) => &out[..n] == input,
            Err(_) => false,
        }
    }

    pub fn rsa_pss(key: &PKey<Public>, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        let mut v = Verifier::new(hash.md(), key).unwrap();
        v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
        v.set_rsa_mgf1_md(hash.md()).unwrap();
        v.verify_oneshot(sig, msg).unwrap_or(false)
    }

    /// RSASSA-PSS over a given digest (CKM_RSA_PKCS_PSS).
    pub fn rsa_pss_digest(key: &PKey<Public>, hash: Hash, digest: &[u8], sig: &[u8]) -> bool {
        let mut ctx = PkeyCtx::new(key).unwrap();
        ctx.verify_init().unwrap();
        ctx.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        ctx.set_signature_md(hash.md_ref()).unwrap();
        ctx.set_rsa_mgf1_md(hash.md_ref()).unwrap();
        ctx.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
            .unwrap();
        ctx.verify(digest, sig).unwrap_or(false)
    }

    /// ECDSA over a digest, with the PKCS#11 r‖s signature (each half the signature length).
    pub fn ecdsa_digest(key: &PKey<Public>, digest: &[u8], sig: &[u8]) -> bool {
        if sig.len() % 2 != 0 {
            return false;
        }
        let (r, s) = sig.split_at(sig.len() / 2);
        let sig = EcdsaSig::from_private_components(
            BigNum::from_slice(r).unwrap(),
            BigNum::from_slice(s).unwrap(),
        )
        .unwrap();
        sig.verify(digest, &key.ec_key().unwrap()).unwrap_or(false)
    }

    pub fn ecdsa(key: &PKey<Public>, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
        ecdsa_digest(key, &hash.digest(msg), sig)
    }

    pub fn ed25519(key: &PKey<Public>, msg: &[u8], sig: &[u8]) -> bool {
        let mut v = Verifier::new_without_digest(key).unwrap();
        v.verify_oneshot(sig, msg).unwrap_or(false)
    }
}

/// `C_SignInit` + `C_Sign` through the raw function list, with a caller-chosen mechanism
/// parameter blob; returns the signature or the failing return value.
pub fn raw_sign(
    raw: &Raw,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    params: &mut [u8],
    key: CK_OBJECT_HANDLE,
    data: &[u8],
) -> Result<Vec<u8>, CK_RV> {
    let mut mech = CK_MECHANISM {
        mechanism,
        pParameter: if params.is_empty() {
            std::ptr::null_mut()
        } else {
            params.as_mut_ptr().cast()
        },
        ulParameterLen: params.len() as CK_ULONG,
    };
    // SAFETY: valid pointers for the duration of the calls.
    unsafe {
        let rv = (raw.f.C_SignInit.unwrap())(session, &mut mech, key);
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut len: CK_ULONG = 0;
        let rv = (raw.f.C_Sign.unwrap())(
            session,
            data.as_ptr() as *mut u8,
            data.len() as CK_ULONG,
            std::ptr::null_mut(),
            &mut len,
        );
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut sig = vec![0u8; len as usize];
        let rv = (raw.f.C_Sign.unwrap())(
            session,
            data.as_ptr() as *mut u8,
            data.len() as CK_ULONG,
            sig.as_mut_ptr(),
            &mut len,
        );
        if rv != CKR_OK {
            return Err(rv);
        }
        sig.truncate(len as usize);
        Ok(sig)
    }
}

/// A `CK_RSA_PKCS_PSS_PARAMS` as bytes.
pub fn pss_params(hash: CK_MECHANISM_TYPE, mgf: CK_RSA_PKCS_MGF_TYPE, salt: CK_ULONG) -> Vec<u8> {
    let p = CK_RSA_PKCS_PSS_PARAMS {
        hashAlg: hash,
        mgf,
        sLen: salt,
    };
    // SAFETY: plain-old-data struct viewed as bytes.
    unsafe {
        std::slice::from_raw_parts(
            &p as *const _ as *const u8,
            std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>(),
        )
    }
    .to_vec()
}

/// The private keys labelled `label`, through the raw `C_FindObjects*` calls (for tests that must
/// stay off the `cryptoki` crate, e.g. in a forked child).
pub fn raw_find_private_keys(
    f: &CK_FUNCTION_LIST,
    session: CK_SESSION_HANDLE,
    label: &str,
) -> Result<Vec<CK_OBJECT_HANDLE>, CK_RV> {
    let mut class = CKO_PRIVATE_KEY;
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: (&mut class as *mut CK_OBJECT_CLASS).cast(),
            ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_ptr() as *mut _,
            ulValueLen: label.len() as CK_ULONG,
        },
    ];
    let mut found = [0 as CK_OBJECT_HANDLE; 8];
    let mut n: CK_ULONG = 0;
    // SAFETY: the template and output arrays outlive the calls.
    unsafe {
        let rv = (f.C_FindObjectsInit.unwrap())(session, template.as_mut_ptr(), 2);
        if rv != CKR_OK {
            return Err(rv);
        }
        let rv = (f.C_FindObjects.unwrap())(session, found.as_mut_ptr(), 8, &mut n);
        let rv_final = (f.C_FindObjectsFinal.unwrap())(session);
        if rv != CKR_OK {
            return Err(rv);
        }
        if rv_final != CKR_OK {
            return Err(rv_final);
        }
    }
    Ok(found[..n as usize].to_vec())
}

/// `openssl pkeyutl -verify` (the OpenSSL CLI, independent of the module) of `sig` over `input`
/// with the simulator's public key of `label`; `extra` adds options such as `-rawin` or the
/// PSS parameters.
pub fn pkeyutl_verifies(
    h: &Harness,
    label: &str,
    input: &Path,
    sig: &Path,
    extra: &[&str],
) -> bool {
    let key = h.dir.path().join(format!("{label}.pub.der"));
    std::fs::write(&key, h.sim.public_key_der(label).expect("key on the sim")).unwrap();
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    let out = std::process::Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey"])
        .arg(path(&key))
        .args(extra)
        .args(["-in", &path(input), "-sigfile", &path(sig)])
        .output()
        .expect("run openssl");
    String::from_utf8_lossy(&out.stdout).contains("Verified Successfully")
}

/// A P-256 key spec labelled `label` whose private key is freshly generated (written as PKCS#8
/// PEM into `dir`), so it differs from every other key of that label — the simulator otherwise
/// gives a label the same cached key each time.
pub fn fresh_p256_key(label: &str, dir: &Path) -> tsb_sim::KeySpec {
    let group =
        openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("P-256");
    let key = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).expect("EC key")).unwrap();
    let path = dir.join(format!(
        "{label}-{}.pem",
        COPIES.fetch_add(1, Ordering::Relaxed)
    ));
    write_private(&path, &key.private_key_to_pem_pkcs8().expect("PKCS#8"));
    let mut spec = tsb_sim::KeySpec::ec(label, tsb_sim::Curve::P256);
    spec.private_key_file = Some(path);
    spec
}

/// A key object's `CKA_PUBLIC_KEY_INFO` (the DER SubjectPublicKeyInfo the application reads),
/// parsed by OpenSSL.
pub fn public_key_info(s: &Session, h: ObjectHandle) -> PKey<Public> {
    let attrs = s
        .get_attributes(h, &[AttributeType::PublicKeyInfo])
        .expect("CKA_PUBLIC_KEY_INFO");
    match attrs.into_iter().next() {
        Some(Attribute::PublicKeyInfo(der)) => {
            PKey::public_key_from_der(&der).expect("openssl parses SPKI")
        }
        other => panic!("unexpected attribute {other:?}"),
    }
}

/// Removes from a child process's environment what this test process set for its in-process
/// module copies (`TSB_PKCS11_CONFIG`, `TSB_PKCS11_LOG`, `TSB_PKCS11_LOG_FILE`,
/// `TSB_PKCS11_TEST_ENV`): a child gets its settings with `Command::env` (after this call).
pub fn child_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env_remove("TSB_PKCS11_CONFIG")
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .env_remove(TEST_ENV)
}

/// For a child that re-runs a test binary with an environment its parent chooses
/// (`TSB_PKCS11_TEST_ENV=explicit`: nothing is set before its `main`): its harnesses publish
/// their configurations in `dir` (`TSB_PKCS11_CONFIG` is `dir/current/config.json`) and the
/// log variables are removed (set them after this call).
pub fn explicit_child_env<'c>(
    cmd: &'c mut std::process::Command,
    dir: &Path,
) -> &'c mut std::process::Command {
    child_env(cmd)
        .env(TEST_ENV, "explicit")
        .env("TSB_PKCS11_CONFIG", dir.join("current").join("config.json"))
}
