//! `fork()` after loading the module (issue #6, part 1): nginx-style workers, and a child that
//! initialises again. The module keeps the parent's HTTP client out of the child (a new pid
//! builds a fresh HTTP client (src/tsb/http.rs); the parent's pooled keep-alive sockets are never used or closed
//! there), and owns no threads, so a child needs nothing that did not survive `fork()`.
//!
//! Child processes do only PKCS#11 calls through the raw function list, OpenSSL verification
//! with keys parsed before the fork, and report by exit code through `libc::_exit` (no Rust
//! runtime teardown, no test harness code). The parent waits with a deadline and kills
//! children that do not finish: a hang fails the test instead of stalling it.
//!
//! Every test holds `SERIAL` for its whole body, so no other test thread of this binary is in
//! the module, in `std::env` or in the dynamic loader when a test forks.

use tsb_pkcs11_test_support as common;

// The module's variables, set once before main (tests/support: set_env_before_main).
tsb_pkcs11_test_support::set_env_before_main!();

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::verify::{self, Hash};
use common::{raw_sign, Harness};
use cryptoki::object::ObjectClass;
use cryptoki_sys::*;
use openssl::pkey::{PKey, Public};
use tsb_sim::{SimConfig, TlsConfig};

static SERIAL: Mutex<()> = Mutex::new(());

/// How long a child may take before it is killed and the test fails.
const CHILD_DEADLINE: Duration = Duration::from_secs(30);

/// Signatures each worker makes after its first one (the leak check spans them).
const WORKER_SIGNS: usize = 10;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Exit codes of the child processes: 0 is success, each failure its own code.
mod code {
    pub const OK: i32 = 0;
    pub const OPEN_SESSION: i32 = 10;
    pub const FIND: i32 = 11;
    pub const SIGN_EC: i32 = 12;
    pub const VERIFY_EC: i32 = 13;
    pub const SIGN_RSA: i32 = 14;
    pub const VERIFY_RSA: i32 = 15;
    pub const FD_LEAK: i32 = 16;
    pub const THREADS: i32 = 17;
    pub const CLOSE_SESSION: i32 = 18;
    pub const INITIALIZE: i32 = 20;
    pub const ALREADY_INITIALIZED: i32 = 21;
    pub const FINALIZE: i32 = 22;
    pub const REINITIALIZE: i32 = 23;
    pub const PANIC: i32 = 99;

    pub fn name(c: i32) -> &'static str {
        match c {
            OK => "ok",
            OPEN_SESSION => "C_OpenSession failed",
            FIND => "key not found",
            SIGN_EC => "ECDSA sign failed",
            VERIFY_EC => "ECDSA signature does not verify",
            SIGN_RSA => "RSA sign failed",
            VERIFY_RSA => "RSA signature does not verify",
            FD_LEAK => "file descriptors grew while signing",
            THREADS => "the child has more than one thread",
            CLOSE_SESSION => "C_CloseSession failed",
            INITIALIZE => "C_Initialize in the child failed",
            ALREADY_INITIALIZED => "second C_Initialize was not CKR_CRYPTOKI_ALREADY_INITIALIZED",
            FINALIZE => "C_Finalize in the child failed",
            REINITIALIZE => "C_Initialize after C_Finalize failed",
            PANIC => "panic in the child",
            _ => "unknown",
        }
    }
}

/// Public keys (parsed in the parent, before any fork) and what a child signs.
struct Keys {
    ec: PKey<Public>,
    rsa: PKey<Public>,
}

impl Keys {
    fn of(h: &Harness) -> Keys {
        Keys {
            ec: h.sim_public_key("ec-p256"),
            rsa: h.sim_public_key("rsa-2048"),
        }
    }
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// Opens a read-only session through the raw function list.
fn open_session(f: &CK_FUNCTION_LIST) -> Result<CK_SESSION_HANDLE, i32> {
    let mut s: CK_SESSION_HANDLE = 0;
    // SAFETY: valid out pointer; no callback.
    let rv = unsafe {
        (f.C_OpenSession.unwrap())(0, CKF_SERIAL_SESSION, std::ptr::null_mut(), None, &mut s)
    };
    if rv == CKR_OK {
        Ok(s)
    } else {
        Err(code::OPEN_SESSION)
    }
}

/// Finds the one private key labelled `label` (C_FindObjects* through the raw list).
fn find_private_key(f: &CK_FUNCTION_LIST, s: CK_SESSION_HANDLE, label: &str) -> Result<u64, i32> {
    match common::raw_find_private_keys(f, s, label) {
        Ok(found) if found.len() == 1 => Ok(found[0]),
        _ => Err(code::FIND),
    }
}

/// One ECDSA-P256 and one RSA-2048 signature in a new session, both checked with OpenSSL.
fn sign_both(h: &Harness, keys: &Keys, msg: &[u8]) -> Result<(), i32> {
    let f = h.raw.f;
    let s = open_session(f)?;
    let ec = find_private_key(f, s, "ec-p256")?;
    let rsa = find_private_key(f, s, "rsa-2048")?;
    let sig = raw_sign(&h.raw, s, CKM_ECDSA_SHA256, &mut [], ec, msg).map_err(|_| code::SIGN_EC)?;
    if !verify::ecdsa(&keys.ec, Hash::Sha256, msg, &sig) {
        return Err(code::VERIFY_EC);
    }
    let sig =
        raw_sign(&h.raw, s, CKM_SHA256_RSA_PKCS, &mut [], rsa, msg).map_err(|_| code::SIGN_RSA)?;
    if !verify::rsa_pkcs1(&keys.rsa, Hash::Sha256, msg, &sig) {
        return Err(code::VERIFY_RSA);
    }
    // SAFETY: a plain handle argument.
    if unsafe { (f.C_CloseSession.unwrap())(s) } != CKR_OK {
        return Err(code::CLOSE_SESSION);
    }
    Ok(())
}

/// An nginx worker: signs with the inherited (initialised) module, then signs more and checks
/// that neither file descriptors nor threads were added by the repeated signing.
fn worker(h: &Harness, keys: &Keys, n: usize) -> Result<(), i32> {
    let msg = format!("worker {n} pid {}", std::process::id());
    // The first signature builds this process' own HTTP client and connection.
    sign_both(h, keys, msg.as_bytes())?;
    let fds = count_dir("/proc/self/fd");
    for i in 0..WORKER_SIGNS {
        sign_both(h, keys, format!("{msg} #{i}").as_bytes())?;
    }
    // Keep-alive: the worker's connections are reused, so the count stays put (slack for
    // one reconnect).
    if count_dir("/proc/self/fd") > fds + 1 {
        return Err(code::FD_LEAK);
    }
    if count_dir("/proc/self/task") != 1 {
        return Err(code::THREADS);
    }
    Ok(())
}

/// A child that initialises the module again (the module treats a new pid as not
/// initialised), signs, finalises, and does it all once more.
fn reinitializing_child(h: &Harness, keys: &Keys, finalize_first: bool) -> Result<(), i32> {
    let f = h.raw.f;
    // SAFETY: NULL arguments are allowed for C_Initialize and C_Finalize.
    unsafe {
        if finalize_first && (f.C_Finalize.unwrap())(std::ptr::null_mut()) != CKR_OK {
            return Err(code::FINALIZE);
        }
        if (f.C_Initialize.unwrap())(std::ptr::null_mut()) != CKR_OK {
            return Err(code::INITIALIZE);
        }
        if (f.C_Initialize.unwrap())(std::ptr::null_mut()) != CKR_CRYPTOKI_ALREADY_INITIALIZED {
            return Err(code::ALREADY_INITIALIZED);
        }
    }
    sign_both(h, keys, b"child after C_Initialize")?;
    // SAFETY: as above.
    unsafe {
        if (f.C_Finalize.unwrap())(std::ptr::null_mut()) != CKR_OK {
            return Err(code::FINALIZE);
        }
        if (f.C_Initialize.unwrap())(std::ptr::null_mut()) != CKR_OK {
            return Err(code::REINITIALIZE);
        }
    }
    sign_both(h, keys, b"child after a second C_Initialize")?;
    // SAFETY: as above.
    if unsafe { (f.C_Finalize.unwrap())(std::ptr::null_mut()) } != CKR_OK {
        return Err(code::FINALIZE);
    }
    if count_dir("/proc/self/task") != 1 {
        return Err(code::THREADS);
    }
    Ok(())
}

/// Forks a child that runs `body` and exits with its code; never returns in the child.
fn spawn(body: impl FnOnce() -> Result<(), i32>) -> libc::pid_t {
    // SAFETY: fork() in a test that holds SERIAL (no other test thread is in the module or in
    // std::env); the child only runs `body` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let c = match result {
            Ok(Ok(())) => code::OK,
            Ok(Err(c)) => c,
            Err(_) => code::PANIC,
        };
        // SAFETY: ends the child at once, without running the parent's destructors or atexit
        // handlers (the simulator, temporary directories and the test harness are the
        // parent's).
        unsafe { libc::_exit(c) };
    }
    pid
}

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Exit(i32),
    Signal(i32),
    /// Killed by the parent at the deadline.
    Hung,
}

/// Waits for all children, killing those still running at the deadline.
fn wait_all(pids: &[libc::pid_t]) -> Vec<End> {
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut ends: Vec<Option<End>> = pids.iter().map(|_| None).collect();
    loop {
        for (i, &pid) in pids.iter().enumerate() {
            if ends[i].is_some() {
                continue;
            }
            let mut status = 0;
            // SAFETY: waiting for our own child, non-blocking.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                ends[i] = Some(if libc::WIFEXITED(status) {
                    End::Exit(libc::WEXITSTATUS(status))
                } else {
                    End::Signal(libc::WTERMSIG(status))
                });
            }
        }
        if ends.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= deadline {
            for (i, &pid) in pids.iter().enumerate() {
                if ends[i].is_none() {
                    let mut status = 0;
                    // SAFETY: killing and reaping our own child.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, &mut status, 0);
                    }
                    ends[i] = Some(End::Hung);
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ends.into_iter().map(Option::unwrap).collect()
}

fn assert_all_ok(ends: &[End]) {
    let described: Vec<String> = ends
        .iter()
        .map(|e| match e {
            End::Exit(c) => format!("exit {c} ({})", code::name(*c)),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(
        ends.iter().all(|e| *e == End::Exit(code::OK)),
        "children: {described:?}"
    );
}

/// The parent signs with its own (cryptoki) session: used before the fork, so the parent's
/// agent holds pooled keep-alive connections, and after, to show the children did not disturb
/// them.
fn parent_signs(h: &Harness, keys: &Keys, msg: &[u8]) {
    let s = h.session();
    let key = h.private_key(&s, "ec-p256");
    let sig = s
        .sign(&cryptoki::mechanism::Mechanism::EcdsaSha256, key, msg)
        .expect("parent signs");
    assert!(verify::ecdsa(&keys.ec, Hash::Sha256, msg, &sig));
    let rsa = h.private_key(&s, "rsa-2048");
    let sig = s
        .sign(&cryptoki::mechanism::Mechanism::Sha256RsaPkcs, rsa, msg)
        .expect("parent signs RSA");
    assert!(verify::rsa_pkcs1(&keys.rsa, Hash::Sha256, msg, &sig));
    // The key objects are cached in the parent: children inherit them.
    let all = s
        .find_objects(&[cryptoki::object::Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert!(!all.is_empty());
}

fn nginx_style(h: &Harness) {
    let keys = Keys::of(h);
    parent_signs(h, &keys, b"parent before fork");
    h.sim.reset_counters();
    let pids: Vec<_> = (0..4).map(|n| spawn(|| worker(h, &keys, n))).collect();
    let ends = wait_all(&pids);
    assert_all_ok(&ends);
    assert_eq!(
        h.sim.counter("POST /v1/synchronousSign"),
        4 * 2 * (1 + WORKER_SIGNS as u64),
        "every worker signature went to the TSB"
    );
    // The parent's own pooled connections still work after the children used theirs.
    parent_signs(h, &keys, b"parent after the workers");
}

/// Plain HTTP: four workers forked after the parent signed.
#[test]
fn nginx_style_workers_sign_after_fork() {
    let _g = serial();
    let h = Harness::new();
    nginx_style(&h);
}

/// The same over TLS (rustls: fresh config, session cache and connections in each child).
#[test]
fn nginx_style_workers_sign_after_fork_over_tls() {
    let _g = serial();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("ca.pem");
    let cfg = SimConfig {
        tls: Some(TlsConfig {
            ca_cert_path: Some(ca.clone()),
            ..TlsConfig::default()
        }),
        ..SimConfig::demo()
    };
    let h = Harness::with_config(cfg, |url| {
        assert!(url.starts_with("https://"), "{url}");
        serde_json::json!({ "restApi": url, "caPath": ca })
    });
    nginx_style(&h);
}

/// Several TSB nodes (`restApi` an array, `spread`): the parent used both; node 0 goes down
/// before the fork. Each worker builds its own node set (fresh health, fresh pools), fails
/// over to node 1 and signs; the parent's pools are untouched; once node 0 is back, the
/// children of a second fork use both nodes again.
#[test]
fn nginx_style_workers_sign_after_fork_over_two_nodes() {
    let _g = serial();
    let h = Harness::cluster(SimConfig::demo(), 2, |urls| {
        serde_json::json!({
            "restApi": urls,
            "pkcs11": { "nodeStrategy": "spread", "nodeDownBackoffMs": 200, "requestTimeoutMs": 5000 }
        })
    });
    let keys = Keys::of(&h);
    parent_signs(&h, &keys, b"parent before fork");
    assert!(h.sim.listener_requests(0) > 0 && h.sim.listener_requests(1) > 0);
    h.sim
        .set_listener_fault(0, tsb_sim::NodeFault::Down)
        .unwrap();
    nginx_style(&h);
    h.sim
        .set_listener_fault(0, tsb_sim::NodeFault::None)
        .unwrap();
    h.sim.reset_counters();
    let pids: Vec<_> = (0..2).map(|n| spawn(|| worker(&h, &keys, n))).collect();
    assert_all_ok(&wait_all(&pids));
    assert!(
        h.sim.listener_requests(0) > 0 && h.sim.listener_requests(1) > 0,
        "fresh children spread over both nodes: {:?}",
        h.sim.listeners()
    );
}

/// A child that calls C_Initialize again: it succeeds (new pid), the child signs, finalises,
/// initialises and signs once more; the parent's module state is untouched.
#[test]
fn child_initializes_again_and_signs() {
    let _g = serial();
    let h = Harness::new();
    let keys = Keys::of(&h);
    parent_signs(&h, &keys, b"parent before fork");
    // The child's C_Initialize reads TSB_PKCS11_CONFIG: set while it is forked.
    let pid = h.with_config_env(|| spawn(|| reinitializing_child(&h, &keys, false)));
    assert_all_ok(&wait_all(&[pid]));
    parent_signs(&h, &keys, b"parent after the child");
}

/// A child that finalises the inherited module first (some hosts do), then initialises.
#[test]
fn child_finalizes_inherited_module_then_initializes() {
    let _g = serial();
    let h = Harness::new();
    let keys = Keys::of(&h);
    parent_signs(&h, &keys, b"parent before fork");
    let pid = h.with_config_env(|| spawn(|| reinitializing_child(&h, &keys, true)));
    assert_all_ok(&wait_all(&[pid]));
    parent_signs(&h, &keys, b"parent after the child");
}

/// Children of a module that was loaded and initialised but never used for a network call,
/// and grandchildren (a worker forking again): each level builds its own client.
#[test]
fn fork_before_first_use_and_grandchildren() {
    let _g = serial();
    let h = Harness::new();
    let keys = Keys::of(&h);
    let pid = spawn(|| {
        sign_both(&h, &keys, b"child")?;
        let grandchild = spawn(|| worker(&h, &keys, 9));
        match wait_all(&[grandchild]).as_slice() {
            [End::Exit(0)] => sign_both(&h, &keys, b"child after grandchild"),
            [End::Exit(c)] => Err(*c),
            _ => Err(code::PANIC),
        }
    });
    assert_all_ok(&wait_all(&[pid]));
    parent_signs(&h, &keys, b"parent after the children");
}

/// A multi-threaded parent that forks while its own threads are signing (their TSB answers
/// take 100 ms, so signatures are in flight at each fork): children use new sessions (one
/// initialises again) and sign. The module holds its locks only for moments, never across
/// network I/O except a session's own operation lock, so a child that keeps off the parent's
/// sessions finds none of them held. (The parent's threads verify only after the children
/// ended: a lock inside OpenSSL held at fork time would be the test's problem, not the
/// module's.)
#[test]
fn fork_while_other_threads_sign() {
    let _g = serial();
    let h = Harness::new();
    let keys = Keys::of(&h);
    h.sim
        .inject(tsb_sim::Fault::latency("POST /v1/synchronousSign", 100));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let signed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (h, stop, signed) = (&h, &stop, &signed);
            scope.spawn(move || {
                let f = h.raw.f;
                let s = open_session(f).expect("session");
                let key = find_private_key(f, s, "ec-p256").expect("key");
                let mut mine = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let msg = format!("parent thread {t} #{i}");
                    let sig = raw_sign(&h.raw, s, CKM_ECDSA_SHA256, &mut [], key, msg.as_bytes())
                        .expect("parent thread signs");
                    mine.push((msg, sig));
                    i += 1;
                }
                signed.lock().unwrap().extend(mine);
            });
        }
        std::thread::sleep(Duration::from_millis(150));
        let mut pids = Vec::new();
        for n in 0..4 {
            pids.push(spawn(|| worker(&h, &keys, n)));
            std::thread::sleep(Duration::from_millis(37));
        }
        pids.push(h.with_config_env(|| spawn(|| reinitializing_child(&h, &keys, false))));
        let ends = wait_all(&pids);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_all_ok(&ends);
    });
    let signed = signed.into_inner().unwrap();
    assert!(!signed.is_empty());
    for (msg, sig) in &signed {
        assert!(
            verify::ecdsa(&keys.ec, Hash::Sha256, msg.as_bytes(), sig),
            "{msg}"
        );
    }
    h.sim.clear_faults();
}
