//! Issue #4 "Approvals inside C_Sign": keys with Smart Key Attributes approval rules sign
//! through `POST /v1/sign` and a wait for approvals inside `C_Sign`, against the simulator.
//!
//! Every test checks what the simulator saw (its request list and endpoint counters), and every
//! signature is verified with OpenSSL against the public key the simulator holds. Raw PKCS#11
//! calls (through the module's function lists) are used wherever a return code, a `Notify`
//! callback or another thread matters.
//!
//! Simulator time is compressed: `timeScale` 0.01 makes a policy's 60 s timelock/timeout take
//! 600 ms, and an APPROVED request executes 50 ms later (`approvedExecutionDelayMs`).

use tsb_pkcs11_test_support as common;

// The module's variables, set once before main (tests/support: set_env_before_main).
tsb_pkcs11_test_support::set_env_before_main!();

use std::ffi::c_void;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::verify::{self, Hash};
use common::Harness;
use cryptoki_sys::*;
use serde_json::{json, Value};
use tsb_sim::{Curve, Fault, KeySpec, PolicySpec, SignRecord, SimConfig};

type Fns = &'static CK_FUNCTION_LIST;

const SKA_EC: &str = "ska-ec-p256";
const SKA_RSA: &str = "ska-rsa-2048";
const SKA_QUORUM: &str = "ska-quorum";
const SKA_TIMELOCK: &str = "ska-timelock";
const SKA_EXPIRING: &str = "ska-expiring";
const PLAIN_EC: &str = "ec-p256";
const BLOCKED: &str = "blocked-ec-p256";

const POST_SIGN: &str = "POST /v1/sign";
const POST_SYNC: &str = "POST /v1/synchronousSign";
const GET_REQUEST: &str = "GET /v1/request";
const DELETE_REQUEST: &str = "DELETE /v1/request";

// ---------------------------------------------------------------------------------------
// Harness: the demo keys with compressed time, one log file per module copy.

/// The throughput test runs alone (write); every other test takes a read guard.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

/// The demo configuration with compressed time and one more key, `ska-expiring` (quorum 1 of
/// alice/bob, timeout 60 s × 0.01 = 600 ms). `ska-timelock`'s 60 s timelock becomes 600 ms.
fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::demo();
    cfg.time_scale = 0.01;
    cfg.approved_execution_delay_ms = 50;
    cfg.keys.push(
        KeySpec::ec(SKA_EXPIRING, Curve::P256)
            .with_policy(PolicySpec::single_group(1, &["alice", "bob"]).with_timeout(60)),
    );
    cfg
}

struct H {
    h: Harness,
}

impl std::ops::Deref for H {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

impl H {
    fn f(&self) -> Fns {
        self.h.raw.f
    }

    /// The module's log so far (level info).
    fn log_text(&self) -> String {
        self.h.log_text(Some("info"))
    }
}

/// A harness with the module settings `pkcs11` and the demo keys (compressed time).
fn harness(pkcs11: Value) -> H {
    harness_with(
        sim_config(),
        |url| json!({"restApi": url, "pkcs11": pkcs11}),
    )
}

fn harness_with(cfg: SimConfig, make: impl FnOnce(&str) -> Value) -> H {
    H {
        h: Harness::with_config(cfg, make),
    }
}

// ---------------------------------------------------------------------------------------
// Raw PKCS#11 helpers.

fn open_session(h: &H, notify: CK_NOTIFY, application: *mut c_void) -> CK_SESSION_HANDLE {
    let mut s: CK_SESSION_HANDLE = 0;
    // SAFETY: valid out pointer; the callback (if any) is a static fn.
    let rv = unsafe {
        (h.f().C_OpenSession.unwrap())(h.slot.id(), CKF_SERIAL_SESSION, application, notify, &mut s)
    };
    assert_eq!(rv, CKR_OK, "C_OpenSession");
    s
}

fn session(h: &H) -> CK_SESSION_HANDLE {
    open_session(h, None, std::ptr::null_mut())
}

/// The private keys labelled `label` (C_FindObjects with CKA_CLASS and CKA_LABEL).
fn find_keys(h: &H, s: CK_SESSION_HANDLE, label: &str) -> Vec<CK_OBJECT_HANDLE> {
    common::raw_find_private_keys(h.f(), s, label).expect("C_FindObjects*")
}

fn find_key(h: &H, s: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
    let found = find_keys(h, s, label);
    assert_eq!(found.len(), 1, "exactly one private key labelled {label}");
    found[0]
}

fn sign_init(
    f: Fns,
    s: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let mut mech = CK_MECHANISM {
        mechanism,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    // SAFETY: valid mechanism for the duration of the call.
    unsafe { (f.C_SignInit.unwrap())(s, &mut mech, key) }
}

/// `C_Sign` with an output buffer of `capacity` bytes, or a size query with `None`.
/// Returns the return value, the reported length and the bytes written.
fn c_sign(
    f: Fns,
    s: CK_SESSION_HANDLE,
    data: &[u8],
    capacity: Option<usize>,
) -> (CK_RV, usize, Vec<u8>) {
    let mut buf = vec![0u8; capacity.unwrap_or(0)];
    let mut len = capacity.unwrap_or(0) as CK_ULONG;
    let out = if capacity.is_some() {
        buf.as_mut_ptr()
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: `data` and `buf` outlive the call; `len` is the capacity of `buf`.
    let rv = unsafe {
        (f.C_Sign.unwrap())(
            s,
            data.as_ptr() as *mut u8,
            data.len() as CK_ULONG,
            out,
            &mut len,
        )
    };
    let n = len as usize;
    if rv == CKR_OK && capacity.is_some() {
        buf.truncate(n);
    } else {
        buf.clear();
    }
    (rv, n, buf)
}

fn c_sign_update(f: Fns, s: CK_SESSION_HANDLE, part: &[u8]) -> CK_RV {
    // SAFETY: `part` outlives the call.
    unsafe { (f.C_SignUpdate.unwrap())(s, part.as_ptr() as *mut u8, part.len() as CK_ULONG) }
}

fn c_sign_final(f: Fns, s: CK_SESSION_HANDLE, capacity: Option<usize>) -> (CK_RV, usize, Vec<u8>) {
    let mut buf = vec![0u8; capacity.unwrap_or(0)];
    let mut len = capacity.unwrap_or(0) as CK_ULONG;
    let out = if capacity.is_some() {
        buf.as_mut_ptr()
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: `buf` outlives the call; `len` is its capacity.
    let rv = unsafe { (f.C_SignFinal.unwrap())(s, out, &mut len) };
    let n = len as usize;
    if rv == CKR_OK && capacity.is_some() {
        buf.truncate(n);
    } else {
        buf.clear();
    }
    (rv, n, buf)
}

/// How a `C_Sign` running on another thread ended.
struct Done {
    rv: CK_RV,
    signature: Vec<u8>,
    at: Instant,
    wall: SystemTime,
}

/// `C_Sign` (buffer of 1024 bytes, enough for any key) on a thread of its own; `C_SignInit`
/// must have succeeded.
fn spawn_sign(f: Fns, s: CK_SESSION_HANDLE, data: Vec<u8>) -> JoinHandle<Done> {
    std::thread::spawn(move || {
        let (rv, _, signature) = c_sign(f, s, &data, Some(1024));
        Done {
            rv,
            signature,
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    })
}

/// `C_SignInit` + [`spawn_sign`].
fn start_sign(
    h: &H,
    s: CK_SESSION_HANDLE,
    label: &str,
    mechanism: CK_MECHANISM_TYPE,
    data: &[u8],
) -> JoinHandle<Done> {
    let key = find_key(h, s, label);
    assert_eq!(
        sign_init(h.f(), s, mechanism, key),
        CKR_OK,
        "C_SignInit {label}"
    );
    spawn_sign(h.f(), s, data.to_vec())
}

fn join(t: JoinHandle<Done>) -> Done {
    t.join().expect("signing thread")
}

// ---------------------------------------------------------------------------------------
// Simulator helpers.

/// The approval requests (`POST /v1/sign`) filed for `label`, oldest first.
fn approval_requests(h: &H, label: &str) -> Vec<SignRecord> {
    h.sim
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == POST_SIGN && r.key == label)
        .collect()
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the `n`-th (from 0) approval request for `label`.
fn wait_request(h: &H, label: &str, n: usize) -> SignRecord {
    wait_until(
        &format!("approval request #{n} for {label}"),
        Duration::from_secs(20),
        || approval_requests(h, label).get(n).cloned(),
    )
}

fn id_of(r: &SignRecord) -> String {
    r.id.clone().expect("an approval request has an id")
}

fn status(h: &H, id: &str) -> String {
    h.sim.request_status(id).expect("request known")
}

/// Waits until the module's log contains `needle`.
fn wait_log(h: &H, needle: &str) {
    wait_until(
        &format!("log line containing {needle:?}"),
        Duration::from_secs(10),
        || h.log_text().contains(needle).then_some(()),
    )
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn since(wall: SystemTime, earlier: SystemTime) -> Duration {
    wall.duration_since(earlier).unwrap_or_default()
}

fn message(tag: &str) -> Vec<u8> {
    format!("tsb-pkcs11 approval test: {tag}").into_bytes()
}

fn assert_ecdsa(h: &H, label: &str, msg: &[u8], sig: &[u8]) {
    assert_eq!(sig.len(), 64, "P-256 r||s");
    assert!(
        verify::ecdsa(&h.sim_public_key(label), Hash::Sha256, msg, sig),
        "ECDSA-SHA256 signature of {label} verifies with OpenSSL"
    );
}

// ---------------------------------------------------------------------------------------
// 1. Routing by policy.

/// Plain keys use `/v1/synchronousSign`, SKA keys `/v1/sign` (also a key that gained a policy
/// since the module cached it).
#[test]
fn keys_are_routed_by_policy() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 100}));
    let f = h.f();
    let s = session(&h);
    let msg = message("routing");

    let plain = find_key(&h, s, PLAIN_EC);
    assert_eq!(sign_init(f, s, CKM_ECDSA_SHA256, plain), CKR_OK);
    let (rv, _, sig) = c_sign(f, s, &msg, Some(256));
    assert_eq!(rv, CKR_OK);
    assert_ecdsa(&h, PLAIN_EC, &msg, &sig);
    let records = h.sim.requests();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].endpoint, POST_SYNC);
    assert_eq!(records[0].id, None);

    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let r = wait_request(&h, SKA_EC, 0);
    h.sim.approve(&id_of(&r), "bob").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_OK);
    assert_ecdsa(&h, SKA_EC, &msg, &done.signature);

    assert_eq!(h.sim.counter(POST_SYNC), 1);
    assert_eq!(h.sim.counter(POST_SIGN), 1);

    // A plain key that gains an approval policy on the TSB while the module has it cached:
    // the TSB refuses the synchronous call (401 missing approval) and the module files one
    // approval request instead.
    let mut spec = SimConfig::demo()
        .keys
        .into_iter()
        .find(|k| k.label == PLAIN_EC)
        .unwrap();
    spec.policy = Some(PolicySpec::single_group(1, &["erin"]));
    h.sim.add_key(spec).unwrap();
    assert_eq!(sign_init(f, s, CKM_ECDSA_SHA256, plain), CKR_OK);
    let t = spawn_sign(f, s, msg.clone());
    let r = wait_request(&h, PLAIN_EC, 0);
    assert_eq!(r.payload, msg);
    h.sim.approve(&id_of(&r), "erin").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_OK);
    assert_ecdsa(&h, PLAIN_EC, &msg, &done.signature);
    assert_eq!(h.sim.counter(POST_SYNC), 2, "the refused synchronous call");
    assert_eq!(h.sim.counter(POST_SIGN), 2, "one approval request for it");
    assert_eq!(h.sim.counter(DELETE_REQUEST), 0);
}

/// A blocked key signs nothing and files no approval request: a key blocked on the TSB after
/// the module cached it is refused by the TSB (614 → CKR_KEY_FUNCTION_NOT_PERMITTED, no request
/// recorded); once the module knows it is blocked, C_SignInit refuses it without a network call.
/// (Blocked keys are not listed, so the handle is taken before the key is blocked.)
#[test]
fn blocked_keys_give_key_function_not_permitted_and_file_nothing() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "cacheTtlSecs": 0}));
    let f = h.f();
    let s = session(&h);
    let msg = message("blocked");
    assert_eq!(
        find_keys(&h, s, BLOCKED).len(),
        0,
        "the demo's blocked key is not listed"
    );

    let key = find_key(&h, s, SKA_EC);
    let mut spec = SimConfig::demo()
        .keys
        .into_iter()
        .find(|k| k.label == SKA_EC)
        .unwrap();
    spec.blocked = true;
    h.sim.add_key(spec).unwrap();

    // The module does not know yet: the TSB refuses the request.
    assert_eq!(sign_init(f, s, CKM_ECDSA_SHA256, key), CKR_OK);
    let (rv, _, _) = c_sign(f, s, &msg, Some(64));
    assert_eq!(
        rv, CKR_KEY_FUNCTION_NOT_PERMITTED,
        "TSB 614 for a blocked key"
    );
    assert_eq!(h.sim.counter(POST_SIGN), 1, "one refused POST /v1/sign");

    // After a refresh (C_FindObjects, cacheTtlSecs 0) the module knows: nothing is sent.
    assert_eq!(
        find_keys(&h, s, SKA_EC).len(),
        0,
        "a blocked key is not listed"
    );
    assert_eq!(
        sign_init(f, s, CKM_ECDSA_SHA256, key),
        CKR_KEY_FUNCTION_NOT_PERMITTED,
        "C_SignInit with a handle taken before the key was blocked"
    );
    assert_eq!(
        c_sign(f, s, &msg, Some(64)).0,
        CKR_OPERATION_NOT_INITIALIZED
    );

    assert_eq!(h.sim.counter(POST_SIGN), 1, "nothing more sent");
    assert!(
        h.sim.requests().is_empty(),
        "no approval request filed: {:?}",
        h.sim.requests()
    );
    assert_eq!(h.sim.counter(GET_REQUEST), 0);
}

// ---------------------------------------------------------------------------------------
// 2. The wait: approval after a delay, backoff, promptness, log lines, metaData.

/// An approval 4 s after filing: few polls thanks to the backoff (first poll after
/// pollIntervalMs, then ×1.5 up to pollIntervalMaxMs), the signature comes back within one
/// poll interval of EXECUTED and verifies; the request carried the message and the metaData;
/// the log says when the request was filed, how it progressed and how it ended.
#[test]
fn approval_after_a_delay_few_polls_prompt_result() {
    let _x = shared();
    const POLL_MS: u64 = 200;
    const POLL_MAX_MS: u64 = 1000;
    const WAIT: Duration = Duration::from_secs(4);
    let h = harness(json!({"pollIntervalMs": POLL_MS, "pollIntervalMaxMs": POLL_MAX_MS}));
    let s = session(&h);
    let msg = message("approval after a delay");
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let r = wait_request(&h, SKA_EC, 0);
    let id = id_of(&r);

    // The first poll comes after pollIntervalMs, not at once.
    let age = since(SystemTime::now(), r.created_at);
    if age < Duration::from_millis(POLL_MS * 3 / 4) {
        assert_eq!(
            h.sim.counter(GET_REQUEST),
            0,
            "no poll {} ms after filing (pollIntervalMs {POLL_MS})",
            ms(age)
        );
    } else {
        eprintln!(
            "note: request seen {} ms after filing; first-poll check skipped",
            ms(age)
        );
    }

    // What the approvers see: the message itself, the algorithm and the metaData.
    assert_eq!(r.payload, msg, "hash-and-sign sends the message itself");
    assert_eq!(r.algorithm, "SHA256_WITH_ECDSA");
    assert_eq!(r.status, "PENDING");
    assert_eq!(r.not_yet_approved_by, vec!["alice", "bob"]);
    let meta = r.meta_data.clone().expect("metaData");
    for field in ["time", "app", "host", "operation"] {
        assert!(meta.get(field).is_some(), "metaData has {field}: {meta}");
    }
    assert_eq!(
        r.meta_data_signature, None,
        "no applicationKeyPair configured"
    );

    let deadline = r.created_at + WAIT;
    std::thread::sleep(since(deadline, SystemTime::now()));
    assert!(
        !t.is_finished(),
        "C_Sign waits while the request is PENDING"
    );
    assert_eq!(status(&h, &id), "PENDING");
    let polls = h.sim.counter(GET_REQUEST);
    let fixed = WAIT.as_millis() as u64 / POLL_MS;
    eprintln!(
        "polls during a {} s wait: {polls} (a fixed {POLL_MS} ms interval would make {fixed})",
        WAIT.as_secs()
    );
    // 200, 300, 450, 675, 1000, 1000 ms: 6 polls in 4 s.
    assert!(
        (3..=9).contains(&polls),
        "{polls} polls in {} s with backoff {POLL_MS}..{POLL_MAX_MS} ms",
        WAIT.as_secs()
    );

    h.sim.approve(&id, "alice").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_OK, "C_Sign after approval");
    assert_ecdsa(&h, SKA_EC, &msg, &done.signature);
    let rec = h.sim.requests().into_iter().find(|x| x.id == r.id).unwrap();
    assert_eq!(rec.status, "EXECUTED");
    let executed = rec.executed_at.expect("executed_at");
    let lag = since(done.wall, executed);
    eprintln!("C_Sign returned {} ms after EXECUTED", ms(lag));
    assert!(
        lag <= Duration::from_millis(POLL_MAX_MS + 300),
        "returned {} ms after EXECUTED, more than one poll interval ({POLL_MAX_MS} ms)",
        ms(lag)
    );
    assert_eq!(h.sim.counter(POST_SIGN), 1);
    assert_eq!(h.sim.counter(DELETE_REQUEST), 0);

    let log = h.log_text();
    let filed = format!("approval request {id} filed for key '{SKA_EC}'");
    assert!(log.contains(&filed), "filed line in:\n{log}");
    assert!(
        log.contains("approvers: 1 of alice, bob"),
        "filed line names the outstanding approvals:\n{log}"
    );
    assert!(
        log.contains(&format!("approval request {id} (key '{SKA_EC}') EXECUTED")),
        "end line in:\n{log}"
    );
}

/// A 2-of-3 quorum in group A plus group B (dave): the wait goes on through each partial
/// approval (each logged), and ends with a verified signature once both groups are satisfied.
#[test]
fn quorum_two_of_three_and_a_second_group() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 100}));
    let s = session(&h);
    let msg = message("quorum");
    let t = start_sign(&h, s, SKA_QUORUM, CKM_ECDSA_SHA256, &msg);
    let id = id_of(&wait_request(&h, SKA_QUORUM, 0));
    wait_log(&h, "waiting for [alice, bob, carol, dave]");

    h.sim.approve(&id, "alice").unwrap();
    wait_log(&h, "approved by [alice], waiting for [bob, carol, dave]");
    h.sim.approve(&id, "dave").unwrap();
    wait_log(&h, "approved by [alice, dave], waiting for [bob, carol]");
    assert!(!t.is_finished(), "group A needs a second approval");
    assert_eq!(status(&h, &id), "PENDING");

    h.sim.approve(&id, "carol").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_OK);
    assert_ecdsa(&h, SKA_QUORUM, &msg, &done.signature);
    let rec = &approval_requests(&h, SKA_QUORUM)[0];
    assert_eq!(rec.status, "EXECUTED");
    assert_eq!(rec.approved_by, vec!["alice", "dave", "carol"]);
    assert_eq!(h.sim.counter(POST_SIGN), 1);
    let log = h.log_text();
    assert!(
        log.contains("A: 2 of alice, bob, carol; B: 1 of dave"),
        "filed line shows both groups:\n{log}"
    );
}

/// A time-lock: approved at once, the request stays APPROVED (the module keeps waiting) until
/// the timelock (60 s × 0.01) has passed, then executes.
#[test]
fn timelock_keeps_an_approved_request_waiting() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 100}));
    let s = session(&h);
    let msg = message("timelock");
    let t = start_sign(&h, s, SKA_TIMELOCK, CKM_ECDSA_SHA256, &msg);
    let r = wait_request(&h, SKA_TIMELOCK, 0);
    let id = id_of(&r);
    h.sim.approve(&id, "alice").unwrap();
    wait_log(&h, "APPROVED by [alice]: quorum reached");
    assert!(
        !t.is_finished(),
        "APPROVED is not terminal: C_Sign keeps waiting"
    );
    assert_eq!(status(&h, &id), "APPROVED");
    let done = join(t);
    assert_eq!(done.rv, CKR_OK);
    assert_ecdsa(&h, SKA_TIMELOCK, &msg, &done.signature);
    let waited = since(done.wall, r.created_at);
    eprintln!("time-locked signature after {} ms", ms(waited));
    assert!(
        waited >= Duration::from_millis(600),
        "not before the 600 ms timelock: {} ms",
        ms(waited)
    );
    assert_eq!(h.sim.counter(POST_SIGN), 1);
}

/// REJECTED → CKR_FUNCTION_REJECTED, EXPIRED and CANCELLED (by someone else) →
/// CKR_FUNCTION_CANCELED, FAILED → CKR_DEVICE_ERROR. One request each; the module deletes
/// nothing (the requests are already final).
#[test]
fn terminal_outcomes_map_to_return_values() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 100}));
    let s = session(&h);
    let msg = message("outcomes");

    // REJECTED
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    h.sim.reject(&id, "bob").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_FUNCTION_REJECTED, "rejected");
    assert_eq!(status(&h, &id), "REJECTED");
    wait_log(
        &h,
        &format!("approval request {id} (key '{SKA_EC}') REJECTED by bob"),
    );

    // EXPIRED (timeout 600 ms)
    let t = start_sign(&h, s, SKA_EXPIRING, CKM_ECDSA_SHA256, &msg);
    let r = wait_request(&h, SKA_EXPIRING, 0);
    let done = join(t);
    assert_eq!(done.rv, CKR_FUNCTION_CANCELED, "expired");
    assert_eq!(status(&h, &id_of(&r)), "EXPIRED");
    assert!(since(done.wall, r.created_at) >= Duration::from_millis(600));

    // FAILED
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let id = id_of(&wait_request(&h, SKA_EC, 1));
    h.sim.fail(&id).expect("a pending request can fail");
    let done = join(t);
    assert_eq!(done.rv, CKR_DEVICE_ERROR, "failed");
    assert_eq!(status(&h, &id), "FAILED");

    assert_eq!(h.sim.counter(DELETE_REQUEST), 0, "nothing to cancel");

    // CANCELLED by another client (DELETE /v1/request/{id} from outside the module)
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let id = id_of(&wait_request(&h, SKA_EC, 2));
    ureq::delete(&format!("{}/v1/request/{id}", h.sim.url()))
        .call()
        .expect("DELETE");
    let done = join(t);
    assert_eq!(done.rv, CKR_FUNCTION_CANCELED, "cancelled on the TSB");
    assert_eq!(status(&h, &id), "CANCELLED");
    assert_eq!(h.sim.counter(DELETE_REQUEST), 1, "only ours");

    assert_eq!(h.sim.counter(POST_SIGN), 4, "one request per C_Sign");
    // Each ended operation is over: C_Sign needs a new C_SignInit.
    assert_eq!(
        c_sign(h.f(), s, &msg, Some(256)).0,
        CKR_OPERATION_NOT_INITIALIZED
    );
}

/// approvalTimeoutSecs: when the deadline passes, the module cancels the request on the TSB
/// (DELETE) and returns CKR_FUNCTION_CANCELED.
#[test]
fn deadline_cancels_the_request_on_the_tsb() {
    let _x = shared();
    let h =
        harness(json!({"pollIntervalMs": 100, "pollIntervalMaxMs": 200, "approvalTimeoutSecs": 1}));
    let s = session(&h);
    let started = Instant::now();
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &message("deadline"));
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    let done = join(t);
    let took = done.at - started;
    eprintln!("deadline of 1 s: C_Sign returned after {} ms", ms(took));
    assert_eq!(done.rv, CKR_FUNCTION_CANCELED);
    assert!(took >= Duration::from_secs(1), "{} ms", ms(took));
    assert!(took < Duration::from_millis(2500), "{} ms", ms(took));
    assert_eq!(
        h.sim.counter(DELETE_REQUEST),
        1,
        "the request is cancelled on the TSB"
    );
    assert_eq!(status(&h, &id), "CANCELLED");
    assert_eq!(h.sim.counter(POST_SIGN), 1);
    let log = h.log_text();
    assert!(log.contains("no decision within 1s"), "{log}");
    assert!(
        log.contains("for up to 1s (approvalTimeoutSecs)"),
        "the configured deadline wins over the policy:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "approval request {id} (key '{SKA_EC}') cancelled on the TSB"
        )),
        "{log}"
    );
}

/// approvalTimeoutSecs not set: the wait lasts as long as the TSB keeps the request alive, i.e.
/// the key policy's timeout (plus a grace of 10 s and one poll, so the module sees the TSB's
/// EXPIRED and cancels nothing), or, for a policy without a timeout, up to the 24 h cap. The
/// filed line says how long and why.
#[test]
fn unset_timeout_follows_the_key_policy() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 100}));
    let s = session(&h);
    let msg = message("policy timeout");

    // ska-expiring: policy timeout 60 s (600 ms on the compressed simulator clock).
    let t = start_sign(&h, s, SKA_EXPIRING, CKM_ECDSA_SHA256, &msg);
    let id = id_of(&wait_request(&h, SKA_EXPIRING, 0));
    let done = join(t);
    assert_eq!(done.rv, CKR_FUNCTION_CANCELED, "expired on the TSB");
    assert_eq!(status(&h, &id), "EXPIRED");
    assert_eq!(h.sim.counter(DELETE_REQUEST), 0, "the TSB expired it");
    let log = h.log_text();
    assert!(
        log.contains(&format!(
            "approval request {id} filed for key '{SKA_EXPIRING}'"
        )) && log.contains("for up to 70s (the key policy's timeout of 60s)"),
        "60 s + 10 s grace + one 100 ms poll:\n{log}"
    );

    // ska-ec-p256: no timeout in its policy: the 24 h cap, then approved as usual.
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    wait_log(
        &h,
        &format!("approval request {id} filed for key '{SKA_EC}'"),
    );
    assert!(
        h.log_text()
            .contains("for up to 86400s (the cap; the key's policy sets no timeout)"),
        "{}",
        h.log_text()
    );
    h.sim.approve(&id, "bob").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_OK);
    assert_ecdsa(&h, SKA_EC, &msg, &done.signature);
    assert_eq!(h.sim.counter(POST_SIGN), 2, "one request per C_Sign");
}

// ---------------------------------------------------------------------------------------
// 3. Cancellation.

static NOTIFY_CALLS: AtomicUsize = AtomicUsize::new(0);
static NOTIFY_SESSION: AtomicU64 = AtomicU64::new(0);
static NOTIFY_BAD: AtomicUsize = AtomicUsize::new(0);
const NOTIFY_CANCEL_AT: usize = 3;
const NOTIFY_APP: usize = 0x5eed;

/// The application's callback: counts CKN_SURRENDER calls and cancels at the third.
extern "C" fn notify_cancel_at_third(
    session: CK_SESSION_HANDLE,
    event: CK_NOTIFICATION,
    application: *mut c_void,
) -> CK_RV {
    if event != CKN_SURRENDER || application as usize != NOTIFY_APP {
        NOTIFY_BAD.fetch_add(1, Ordering::SeqCst);
    }
    NOTIFY_SESSION.store(session, Ordering::SeqCst);
    let n = NOTIFY_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    if n >= NOTIFY_CANCEL_AT {
        CKR_CANCEL
    } else {
        CKR_OK
    }
}

/// The Notify callback is called with CKN_SURRENDER (and the application's pointer) before
/// each poll; CKR_CANCEL from it ends C_Sign with CKR_FUNCTION_CANCELED and cancels the
/// request on the TSB.
#[test]
fn notify_callback_cancels_the_wait() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 50}));
    let s = open_session(&h, Some(notify_cancel_at_third), NOTIFY_APP as *mut c_void);
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &message("notify"));
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    let done = join(t);
    assert_eq!(done.rv, CKR_FUNCTION_CANCELED);
    assert_eq!(NOTIFY_CALLS.load(Ordering::SeqCst), NOTIFY_CANCEL_AT);
    assert_eq!(
        NOTIFY_BAD.load(Ordering::SeqCst),
        0,
        "CKN_SURRENDER with pApplication"
    );
    assert_eq!(
        NOTIFY_SESSION.load(Ordering::SeqCst),
        s,
        "called for the waiting session"
    );
    assert_eq!(
        h.sim.counter(GET_REQUEST),
        (NOTIFY_CANCEL_AT - 1) as u64,
        "one CKN_SURRENDER per poll; the cancelling one comes before its poll"
    );
    assert_eq!(h.sim.counter(DELETE_REQUEST), 1);
    assert_eq!(status(&h, &id), "CANCELLED");
    assert_eq!(h.sim.counter(POST_SIGN), 1);
}

/// The function list the re-entrant callback below calls into (set before the session opens).
static REENTRANT_FNS: std::sync::atomic::AtomicPtr<CK_FUNCTION_LIST> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
static REENTRANT_CALLS: AtomicUsize = AtomicUsize::new(0);
/// What the calls made from inside the callback returned, in order, for the first callback.
static REENTRANT_RVS: Mutex<Vec<CK_RV>> = Mutex::new(Vec::new());

/// A `Notify` callback that uses its own session while `C_Sign` waits in it: a search
/// (C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal), C_GetSessionInfo, and a second
/// C_SignInit (which must say CKR_OPERATION_ACTIVE). Records the return values once.
extern "C" fn notify_reentrant(
    session: CK_SESSION_HANDLE,
    _event: CK_NOTIFICATION,
    _application: *mut c_void,
) -> CK_RV {
    let n = REENTRANT_CALLS.fetch_add(1, Ordering::SeqCst);
    if n > 0 {
        return CKR_OK;
    }
    // SAFETY: the test stored a valid function list before opening the session.
    let f = unsafe { &*REENTRANT_FNS.load(Ordering::SeqCst) };
    let mut rvs = Vec::new();
    rvs.push(match common::raw_find_private_keys(f, session, PLAIN_EC) {
        Ok(found) if found.len() == 1 => CKR_OK,
        Ok(_) => CKR_GENERAL_ERROR,
        Err(rv) => rv,
    });
    let mut info = CK_SESSION_INFO::default();
    // SAFETY: valid out pointer.
    rvs.push(unsafe { (f.C_GetSessionInfo.unwrap())(session, &mut info) });
    rvs.push(sign_init(f, session, CKM_ECDSA_SHA256, 1));
    let mut len: CK_ULONG = 0;
    let data = *b"x";
    // SAFETY: valid buffers (a size query).
    rvs.push(unsafe {
        (f.C_Sign.unwrap())(
            session,
            data.as_ptr() as *mut u8,
            1,
            std::ptr::null_mut(),
            &mut len,
        )
    });
    *REENTRANT_RVS.lock().unwrap() = rvs;
    CKR_OK
}

/// The session's lock is not held while C_Sign waits for approvals: the application's Notify
/// callback can use the same session (before, C_FindObjectsInit from inside it hung forever),
/// another thread's calls on the session answer at once, and the signature still arrives.
#[test]
fn notify_callback_may_use_the_waiting_session() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 50}));
    REENTRANT_FNS.store(
        h.f() as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST,
        Ordering::SeqCst,
    );
    let s = open_session(&h, Some(notify_reentrant), std::ptr::null_mut());
    let msg = message("re-entrant notify");
    let key = find_key(&h, s, SKA_EC);
    assert_eq!(sign_init(h.f(), s, CKM_ECDSA_SHA256, key), CKR_OK);
    let (tx, rx) = std::sync::mpsc::channel();
    let f = h.f();
    let data = msg.clone();
    std::thread::spawn(move || {
        let _ = tx.send(c_sign(f, s, &data, Some(1024)));
    });
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    wait_until("the Notify callback", Duration::from_secs(10), || {
        (!REENTRANT_RVS.lock().unwrap().is_empty()).then_some(())
    });
    // Another thread, while the signature waits: answers at once.
    let started = Instant::now();
    let mut info = CK_SESSION_INFO::default();
    // SAFETY: valid out pointer.
    assert_eq!(
        unsafe { (f.C_GetSessionInfo.unwrap())(s, &mut info) },
        CKR_OK
    );
    assert_eq!(find_keys(&h, s, PLAIN_EC).len(), 1);
    assert_eq!(sign_init(f, s, CKM_ECDSA_SHA256, key), CKR_OPERATION_ACTIVE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no wait for the signer"
    );
    h.sim.approve(&id, "alice").unwrap();
    let (rv, _, sig) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("C_Sign returns (no deadlock in the Notify callback)");
    assert_eq!(rv, CKR_OK);
    assert_ecdsa(&h, SKA_EC, &msg, &sig);
    assert_eq!(
        *REENTRANT_RVS.lock().unwrap(),
        vec![CKR_OK, CKR_OK, CKR_OPERATION_ACTIVE, CKR_OPERATION_ACTIVE],
        "search, C_GetSessionInfo, C_SignInit, C_Sign from inside Notify"
    );
    assert_eq!(h.sim.counter(POST_SIGN), 1, "one approval request");
    // The session is usable again.
    let plain = find_key(&h, s, PLAIN_EC);
    assert_eq!(sign_init(f, s, CKM_ECDSA_SHA256, plain), CKR_OK);
    let (rv, _, sig) = c_sign(f, s, &msg, Some(1024));
    assert_eq!(rv, CKR_OK);
    assert_ecdsa(&h, PLAIN_EC, &msg, &sig);
}

#[derive(Clone, Copy, Debug)]
enum Interrupt {
    SessionCancel,
    CloseSession,
    CloseAllSessions,
    Finalize,
}

/// Starts an approval wait with pollIntervalMs 2000, interrupts it from another thread during
/// its first sleep, and checks that C_Sign returns `expected` within 300 ms, the request is
/// cancelled on the TSB, and no poll was made.
fn interrupt_wait(how: Interrupt, expected: CK_RV) {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 2000}));
    let s = session(&h);
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &message("interrupt"));
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished());
    let f3 = h.raw.f3;
    let slot = h.slot.id();
    let other = std::thread::spawn(move || {
        let at = Instant::now();
        // SAFETY: plain calls on a live module.
        let rv = unsafe {
            match how {
                Interrupt::SessionCancel => (f3.C_SessionCancel.unwrap())(s, CKF_SIGN),
                Interrupt::CloseSession => (f3.C_CloseSession.unwrap())(s),
                Interrupt::CloseAllSessions => (f3.C_CloseAllSessions.unwrap())(slot),
                Interrupt::Finalize => (f3.C_Finalize.unwrap())(std::ptr::null_mut()),
            }
        };
        (rv, at)
    });
    let (rv, at) = other.join().unwrap();
    assert_eq!(rv, CKR_OK, "{how:?}");
    let done = join(t);
    let took = done.at.saturating_duration_since(at);
    eprintln!("{how:?}: the waiting C_Sign returned after {} ms", ms(took));
    assert_eq!(done.rv, expected, "{how:?}");
    assert!(
        took < Duration::from_millis(300),
        "{how:?}: C_Sign returned {} ms later (pollIntervalMs 2000)",
        ms(took)
    );
    assert_eq!(
        h.sim.counter(DELETE_REQUEST),
        1,
        "{how:?} cancels on the TSB"
    );
    assert_eq!(status(&h, &id), "CANCELLED");
    assert_eq!(
        h.sim.counter(GET_REQUEST),
        0,
        "interrupted before the first poll"
    );
    assert_eq!(h.sim.counter(POST_SIGN), 1);
    if let Interrupt::SessionCancel = how {
        // The session lives on; its signing operation is over.
        assert_eq!(
            c_sign(h.f(), s, b"x", Some(256)).0,
            CKR_OPERATION_NOT_INITIALIZED
        );
    }
}

#[test]
fn session_cancel_from_another_thread_ends_the_wait_promptly() {
    interrupt_wait(Interrupt::SessionCancel, CKR_FUNCTION_CANCELED);
}

#[test]
fn close_session_from_another_thread_ends_the_wait_promptly() {
    interrupt_wait(Interrupt::CloseSession, CKR_SESSION_CLOSED);
}

#[test]
fn close_all_sessions_from_another_thread_ends_the_wait_promptly() {
    interrupt_wait(Interrupt::CloseAllSessions, CKR_SESSION_CLOSED);
}

#[test]
fn finalize_from_another_thread_ends_the_wait_promptly() {
    interrupt_wait(Interrupt::Finalize, CKR_CRYPTOKI_NOT_INITIALIZED);
}

/// A poll that hangs (the TSB or a proxy never answers) does not delay a cancellation:
/// C_SessionCancel ends the wait within 300 ms although the poll's own timeout
/// (requestTimeoutMs) is 20 s, and the request is cancelled on the TSB.
#[test]
fn session_cancel_is_prompt_while_a_poll_hangs() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "requestTimeoutMs": 20000}));
    h.sim.inject(Fault::hang(GET_REQUEST));
    let s = session(&h);
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &message("hanging poll"));
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    wait_until("a poll in flight", Duration::from_secs(10), || {
        (h.sim.counter(GET_REQUEST) >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        poll_threads() >= 1,
        "the hanging poll runs on a helper thread"
    );
    let at = Instant::now();
    // SAFETY: plain call on a live session.
    assert_eq!(
        unsafe { (h.raw.f3.C_SessionCancel.unwrap())(s, CKF_SIGN) },
        CKR_OK
    );
    let done = join(t);
    let took = done.at.saturating_duration_since(at);
    h.sim.clear_faults();
    eprintln!(
        "C_SessionCancel during a hanging poll: C_Sign returned after {} ms",
        ms(took)
    );
    assert_eq!(done.rv, CKR_FUNCTION_CANCELED);
    assert!(took < Duration::from_millis(300), "{} ms", ms(took));
    assert_eq!(h.sim.counter(DELETE_REQUEST), 1);
    assert_eq!(status(&h, &id), "CANCELLED");
}

/// The deadline holds even when the TSB stops answering (polls and the DELETE hang): C_Sign
/// returns CKR_FUNCTION_CANCELED about a second after approvalTimeoutSecs, not after the
/// requests' own timeouts (20 s each, with retries); the DELETE was sent.
#[test]
fn deadline_holds_while_the_tsb_hangs() {
    let _x = shared();
    let h = harness(json!({
        "pollIntervalMs": 50, "approvalTimeoutSecs": 1, "requestTimeoutMs": 20000
    }));
    let s = session(&h);
    let started = Instant::now();
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &message("hanging TSB"));
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    h.sim.inject(Fault::hang("* /v1/request"));
    let done = join(t);
    let took = done.at - started;
    let deletes = h.sim.counter(DELETE_REQUEST);
    h.sim.clear_faults();
    eprintln!(
        "deadline 1 s with a hanging TSB: C_Sign returned after {} ms",
        ms(took)
    );
    assert_eq!(done.rv, CKR_FUNCTION_CANCELED);
    assert!(took >= Duration::from_secs(1), "{} ms", ms(took));
    assert!(took < Duration::from_millis(3500), "{} ms", ms(took));
    assert!(deletes >= 1, "the DELETE was sent");
    assert_eq!(
        status(&h, &id),
        "PENDING",
        "the hanging TSB never processed it"
    );
}

/// C_Finalize returns within its documented bound (2 s) while the `DELETE /v1/request/{id}` of
/// a request given up on hangs (before: about `requestTimeoutMs`, 19 s here), and the journal
/// records the cancellation as not confirmed (`CANCEL_UNCONFIRMED`), not as `CANCELLED`.
#[test]
fn finalize_is_bounded_while_the_cancel_hangs() {
    let _x = shared();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("requests.jsonl");
    let h = harness(json!({
        "pollIntervalMs": 50, "approvalTimeoutSecs": 1, "requestTimeoutMs": 20000,
        "requestJournal": journal
    }));
    let s = session(&h);
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &message("finalize bound"));
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    h.sim.inject(Fault::hang(DELETE_REQUEST));
    let done = join(t);
    assert_eq!(done.rv, CKR_FUNCTION_CANCELED);
    assert!(h.sim.counter(DELETE_REQUEST) >= 1, "the DELETE was sent");
    let started = Instant::now();
    h.reinitialize(); // C_Finalize (then C_Initialize, which makes no TSB call)
    let took = started.elapsed();
    let text = std::fs::read_to_string(&journal).unwrap();
    h.sim.clear_faults();
    eprintln!(
        "C_Finalize with a hanging DELETE /v1/request: {} ms",
        ms(took)
    );
    // A functional bound (FINALIZE_BOUND, 2 s), asserted generously.
    assert!(took < Duration::from_secs(3), "{} ms", ms(took));
    let outcomes: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["id"] == id.as_str() && e["event"] == "outcome")
        .collect();
    assert_eq!(outcomes.len(), 1, "{text}");
    assert_eq!(outcomes[0]["status"], "CANCEL_UNCONFIRMED", "{text}");
    assert_eq!(status(&h, &id), "PENDING", "the TSB never cancelled it");
}

/// Threads of this process that the module started for polls.
fn poll_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tsb-pkcs11-poll")
        .count()
}

/// With CKF_LIBRARY_CANT_CREATE_OS_THREADS the module starts no thread: polls run inline (a
/// cancellation then waits for a hanging poll to time out), and an approval still completes.
#[test]
fn without_threads_the_wait_polls_inline() {
    let _x = exclusive();
    // Poll threads that earlier tests walked away from end once their requests do.
    wait_until("no poll thread left", Duration::from_secs(30), || {
        (poll_threads() == 0).then_some(())
    });
    let h = harness(json!({"pollIntervalMs": 50, "requestTimeoutMs": 800, "retries": 0}));
    let f = h.f();
    h.with_config_env(|| {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_LIBRARY_CANT_CREATE_OS_THREADS | CKF_OS_LOCKING_OK,
            pReserved: std::ptr::null_mut(),
        };
        // SAFETY: plain calls with valid arguments.
        unsafe {
            assert_eq!((f.C_Finalize.unwrap())(std::ptr::null_mut()), CKR_OK);
            assert_eq!(
                (f.C_Initialize.unwrap())((&mut args as *mut CK_C_INITIALIZE_ARGS).cast()),
                CKR_OK
            );
        }
    });
    let s = session(&h);
    let msg = message("no threads");
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    wait_until("two polls", Duration::from_secs(10), || {
        (h.sim.counter(GET_REQUEST) >= 2).then_some(())
    });
    h.sim.approve(&id, "alice").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_OK);
    assert_ecdsa(&h, SKA_EC, &msg, &done.signature);

    // A hanging poll holds up a cancellation until the poll times out (requestTimeoutMs).
    h.sim.inject(Fault::hang(GET_REQUEST));
    let polls = h.sim.counter(GET_REQUEST);
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    wait_request(&h, SKA_EC, 1);
    wait_until("a hanging poll", Duration::from_secs(10), || {
        (h.sim.counter(GET_REQUEST) > polls).then_some(())
    });
    assert_eq!(
        poll_threads(),
        0,
        "the hanging poll runs on the caller's thread"
    );
    let at = Instant::now();
    // SAFETY: plain call on a live session.
    assert_eq!(
        unsafe { (h.raw.f3.C_SessionCancel.unwrap())(s, CKF_SIGN) },
        CKR_OK
    );
    let done = join(t);
    h.sim.clear_faults();
    let took = done.at.saturating_duration_since(at);
    eprintln!(
        "without threads, cancel during a hanging poll took {} ms",
        ms(took)
    );
    assert_eq!(done.rv, CKR_FUNCTION_CANCELED);
    assert!(took < Duration::from_secs(3), "{} ms", ms(took));
    assert_eq!(h.sim.counter(DELETE_REQUEST), 1);
}

/// C_SessionCancel for other operations (find, verify) leaves a waiting C_Sign alone.
#[test]
fn session_cancel_of_other_operations_leaves_the_wait_alone() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 100}));
    let s = session(&h);
    let msg = message("cancel other operations");
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: plain call on a live session.
    let rv = unsafe { (h.raw.f3.C_SessionCancel.unwrap())(s, CKF_FIND_OBJECTS | CKF_VERIFY) };
    assert_eq!(rv, CKR_OK);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished(), "C_Sign still waits");
    assert_eq!(status(&h, &id), "PENDING");
    h.sim.approve(&id, "alice").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_OK);
    assert_ecdsa(&h, SKA_EC, &msg, &done.signature);
    assert_eq!(h.sim.counter(DELETE_REQUEST), 0);
}

// ---------------------------------------------------------------------------------------
// 4. One request per signature.

/// Failed polls (503, an HTML 502 from a proxy, malformed JSON, a dropped connection) are
/// retried within the deadline; the signature arrives after approval and exactly one request
/// was filed.
#[test]
fn transient_poll_failures_are_retried_without_filing_again() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 100}));
    for fault in [
        Fault::status(GET_REQUEST, 503).times(2),
        Fault::html_bad_gateway(GET_REQUEST).times(2),
        Fault::malformed_json(GET_REQUEST).times(2),
        Fault::drop_connection(GET_REQUEST).times(2),
    ] {
        h.sim.inject(fault);
    }
    let s = session(&h);
    let msg = message("transient poll failures");
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    // All eight faulty answers are used up before the approval.
    wait_until("faults used up", Duration::from_secs(20), || {
        (h.sim.counter(GET_REQUEST) >= 9).then_some(())
    });
    assert!(!t.is_finished(), "failed polls do not end the wait");
    h.sim.approve(&id, "alice").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_OK, "signature after the failed polls");
    assert_ecdsa(&h, SKA_EC, &msg, &done.signature);
    assert_eq!(h.sim.counter(POST_SIGN), 1, "exactly one approval request");
    assert_eq!(approval_requests(&h, SKA_EC).len(), 1);
    assert_eq!(h.sim.counter(DELETE_REQUEST), 0);
    let log = h.log_text();
    assert!(
        log.contains(&format!("approval request {id}: poll failed")),
        "{log}"
    );
}

/// A size query, then a buffer too small, then the real call: one request, filed only by the
/// real call. The same for multi-part input (C_SignUpdate ×3, C_SignFinal) with RSA.
#[test]
fn size_query_and_short_buffer_file_one_request() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 100}));
    let f = h.f();
    let s = session(&h);

    // Single-part, ECDSA.
    let msg = message("size query");
    let key = find_key(&h, s, SKA_EC);
    assert_eq!(sign_init(f, s, CKM_ECDSA_SHA256, key), CKR_OK);
    let (rv, len, _) = c_sign(f, s, &msg, None);
    assert_eq!((rv, len), (CKR_OK, 64), "size query");
    let (rv, len, _) = c_sign(f, s, &msg, Some(10));
    assert_eq!((rv, len), (CKR_BUFFER_TOO_SMALL, 64), "buffer too small");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        h.sim.counter(POST_SIGN),
        0,
        "nothing filed before the real call"
    );
    let t = spawn_sign(f, s, msg.clone());
    let id = id_of(&wait_request(&h, SKA_EC, 0));
    h.sim.approve(&id, "alice").unwrap();
    let done = join(t);
    assert_eq!(done.rv, CKR_OK);
    assert_ecdsa(&h, SKA_EC, &msg, &done.signature);
    assert_eq!(h.sim.counter(POST_SIGN), 1);

    // Multi-part, RSA PKCS#1 v1.5 with SHA-256.
    let parts: [&[u8]; 3] = [b"multi-part ", b"input for an ", b"approval request"];
    let whole = parts.concat();
    let key = find_key(&h, s, SKA_RSA);
    assert_eq!(sign_init(f, s, CKM_SHA256_RSA_PKCS, key), CKR_OK);
    for p in parts {
        assert_eq!(c_sign_update(f, s, p), CKR_OK);
    }
    let (rv, len, _) = c_sign_final(f, s, None);
    assert_eq!((rv, len), (CKR_OK, 256), "size query");
    let (rv, len, _) = c_sign_final(f, s, Some(255));
    assert_eq!((rv, len), (CKR_BUFFER_TOO_SMALL, 256), "buffer too small");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(h.sim.counter(POST_SIGN), 1, "nothing more filed yet");
    let t = std::thread::spawn(move || c_sign_final(f, s, Some(256)));
    let r = wait_request(&h, SKA_RSA, 0);
    assert_eq!(
        r.payload, whole,
        "the whole message, as approvers should see it"
    );
    assert_eq!(r.algorithm, "SHA256_WITH_RSA");
    h.sim.approve(&id_of(&r), "bob").unwrap();
    let (rv, _, sig) = t.join().unwrap();
    assert_eq!(rv, CKR_OK);
    assert!(
        verify::rsa_pkcs1(&h.sim_public_key(SKA_RSA), Hash::Sha256, &whole, &sig),
        "RSA signature verifies with OpenSSL"
    );
    assert_eq!(h.sim.counter(POST_SIGN), 2, "one request per signature");
    assert_eq!(h.sim.counter(DELETE_REQUEST), 0);
}

/// Hash-and-sign mechanisms send the message itself up to 64 KiB (approvers see the real
/// payload); beyond that the module hashes locally and sends the digest.
#[test]
fn hash_and_sign_sends_the_message_up_to_64_kib() {
    let _x = shared();
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 100}));
    let s = session(&h);
    for (n, len) in [65536usize, 65537].into_iter().enumerate() {
        let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
        let r = wait_request(&h, SKA_EC, n);
        if len <= 65536 {
            assert_eq!(r.algorithm, "SHA256_WITH_ECDSA");
            assert_eq!(r.payload, msg, "{len} bytes: the message itself");
        } else {
            assert_eq!(r.algorithm, "NONE_WITH_ECDSA");
            assert_eq!(
                r.payload,
                Hash::Sha256.digest(&msg),
                "{len} bytes: the digest"
            );
        }
        h.sim.approve(&id_of(&r), "alice").unwrap();
        let done = join(t);
        assert_eq!(done.rv, CKR_OK);
        assert_ecdsa(&h, SKA_EC, &msg, &done.signature);
    }
    assert_eq!(h.sim.counter(POST_SIGN), 2);
}

// ---------------------------------------------------------------------------------------
// 5. metaData and its signature.

/// metaData: time, application (process name), host, the operation, the key and algorithm, and
/// the configuration's own `metaData`; metaDataSignature is RSA PKCS#1 v1.5 SHA-256 over the
/// raw metaData JSON with the configured application key pair (checked with OpenSSL).
#[test]
fn metadata_shows_the_request_and_is_signed_with_the_application_key() {
    let _x = shared();
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let pkey = openssl::pkey::PKey::from_rsa(rsa).unwrap();
    let private_b64 = B64.encode(pkey.private_key_to_pkcs8().unwrap());
    let public_b64 = B64.encode(pkey.public_key_to_der().unwrap());
    let public_for_config = public_b64.clone();
    let h = harness_with(sim_config(), move |url| {
        json!({
            "restApi": url,
            "applicationKeyPair": {"publicKey": public_for_config, "privateKey": private_b64},
            "metaData": {"ticket": "CHG-4242", "team": "release engineering"},
            "pkcs11": {"pollIntervalMs": 50, "pollIntervalMaxMs": 100},
        })
    });
    let s = session(&h);
    let msg = message("metadata");
    let before = SystemTime::now();
    let t = start_sign(&h, s, SKA_EC, CKM_ECDSA_SHA256, &msg);
    let r = wait_request(&h, SKA_EC, 0);
    h.sim.approve(&id_of(&r), "alice").unwrap();
    assert_eq!(join(t).rv, CKR_OK);

    let raw = B64
        .decode(r.meta_data_raw.as_deref().expect("metaData sent"))
        .expect("metaData is base64");
    let meta: Value = serde_json::from_slice(&raw).expect("metaData is a JSON object");
    eprintln!("metaData: {meta}");
    let text = |k: &str| {
        meta.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    // The full executable name (not the 15-character /proc/self/comm).
    let exe = std::env::current_exe().unwrap();
    let exe = exe.file_name().unwrap().to_string_lossy();
    assert_eq!(text("app"), exe, "application = the executable's full name");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(text("host"), host.trim());
    assert!(text("operation").contains("C_Sign"), "{meta}");
    assert_eq!(text("keyLabel"), SKA_EC);
    assert_eq!(text("signatureAlgorithm"), "SHA256_WITH_ECDSA");
    assert_eq!(text("ticket"), "CHG-4242", "the config's metaData");
    assert_eq!(text("team"), "release engineering");
    let time = text("time");
    let sent = parse_utc(&time).unwrap_or_else(|| panic!("time {time:?} is YYYY-MM-DDTHH:MM:SSZ"));
    let now = SystemTime::now();
    assert!(
        sent + Duration::from_secs(2) >= before && sent <= now + Duration::from_secs(2),
        "time {time} is the time of the request"
    );

    let signature = B64
        .decode(
            r.meta_data_signature
                .as_deref()
                .expect("metaDataSignature sent"),
        )
        .unwrap();
    let public =
        openssl::pkey::PKey::public_key_from_der(&B64.decode(&public_b64).unwrap()).unwrap();
    let check = |data: &[u8]| {
        let mut v =
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public).unwrap();
        v.set_rsa_padding(openssl::rsa::Padding::PKCS1).unwrap();
        v.verify_oneshot(&signature, data).unwrap_or(false)
    };
    assert!(
        check(&raw),
        "metaDataSignature verifies over the raw metaData JSON"
    );
    let mut tampered = raw.clone();
    tampered[raw.len() / 2] ^= 1;
    assert!(!check(&tampered), "and only over it");
}

/// `YYYY-MM-DDTHH:MM:SSZ` → SystemTime.
fn parse_utc(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

// ---------------------------------------------------------------------------------------
// 6. pkcs11-tool with the tsb-sim CLI as the approver.

/// The `tsb-sim` binary next to this test's target directory, built if missing.
fn tsb_sim_cli() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("tsb-sim");
    if !bin.exists() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            // --workspace: the dependencies' features of scripts/test.sh's build (see
            // tests/support/src/built.rs), not a second build of them for tsb-sim alone.
            .args(["build", "-q", "--workspace", "--bin", "tsb-sim"]);
        if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p tsb-sim");
        assert!(status.success(), "cargo build -p tsb-sim");
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// `pkcs11-tool --sign --mechanism ECDSA-SHA256 --label ska-ec-p256` waits inside C_Sign until
/// `tsb-sim approve <id> --as alice` approves; its signature verifies with OpenSSL; its log
/// (stderr, TSB_PKCS11_LOG=info) shows the request filed, its progress and its end.
#[test]
fn pkcs11_tool_waits_for_an_approval_given_with_the_cli() {
    let _x = shared();
    let cli = tsb_sim_cli();
    let h = harness(json!({"pollIntervalMs": 100, "pollIntervalMaxMs": 200}));
    let input = h.dir.path().join("in.bin");
    let output = h.dir.path().join("out.sig");
    let msg = message("pkcs11-tool");
    std::fs::write(&input, &msg).unwrap();
    // pkcs11-tool 0.23 selects the signing key by CKA_ID only (it ignores --label there).
    let id_hex: String = {
        let s = h.session();
        let key = h.private_key(&s, SKA_EC);
        h.attr_bytes(&s, key, cryptoki::object::AttributeType::Id)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let mut child = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&h.module_path)
        .args([
            "--sign",
            "--mechanism",
            "ECDSA-SHA256",
            "--label",
            SKA_EC,
            "--id",
            &id_hex,
        ])
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .env("TSB_PKCS11_CONFIG", &h.config_path)
        // The default log level: the wait must announce itself without TSB_PKCS11_LOG.
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pkcs11-tool");
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let r = wait_until(
        "pkcs11-tool's approval request",
        Duration::from_secs(20),
        || {
            if child.try_wait().unwrap().is_some() {
                return Some(None);
            }
            approval_requests(&h, SKA_EC).first().cloned().map(Some)
        },
    );
    let Some(r) = r else {
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).ok();
        let log = err_reader.join().unwrap();
        panic!("pkcs11-tool ended before filing a request: {out}\n{log}");
    };
    let id = id_of(&r);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "pkcs11-tool waits for the approval"
    );
    assert_eq!(status(&h, &id), "PENDING");

    let approve = Command::new(&cli)
        .args(["approve", &id, "--as", "alice", "--url", &h.sim.url()])
        .output()
        .expect("run tsb-sim approve");
    let said = String::from_utf8_lossy(&approve.stdout);
    assert!(
        approve.status.success(),
        "tsb-sim approve: {said} {}",
        String::from_utf8_lossy(&approve.stderr)
    );
    assert!(said.contains(&format!("request {id}:")), "{said}");

    let end = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            child.kill().ok();
            panic!("pkcs11-tool did not finish after the approval");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).ok();
    let log = err_reader.join().unwrap();
    assert!(exit.success(), "pkcs11-tool failed: {out}\n{log}");
    let sig = std::fs::read(&output).expect("signature written");
    assert_ecdsa(&h, SKA_EC, &msg, &sig);
    assert_eq!(status(&h, &id), "EXECUTED");
    assert_eq!(h.sim.counter(POST_SIGN), 1);
    // At the default level the wait says exactly two things: that it started (with the
    // approvers and how long it waits) and that it ended; the progress lines stay at `info`.
    let module_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("approval request"))
        .collect();
    assert_eq!(
        module_lines.len(),
        2,
        "two lines at the default level:\n{log}"
    );
    assert!(
        module_lines[0].contains(&format!(
            "approval request {id} filed for key '{SKA_EC}' (SHA256_WITH_ECDSA): waiting for \
             approvals ("
        )) && module_lines[0].contains("1 of alice, bob")
            && module_lines[0].contains("for up to"),
        "{log}"
    );
    assert!(
        module_lines[1].contains(&format!(
            "approval request {id} for key '{SKA_EC}' ended after"
        )) && module_lines[1].contains("approved, signature returned"),
        "{log}"
    );
    assert!(
        !log.contains("PENDING: approved by"),
        "no progress lines by default:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// 7. No global lock: other sessions sign at full speed while sessions wait.

/// Eight threads, each with its own session, sign with a plain key as fast as they can for
/// `phase`; returns the number of signatures.
fn burst(h: &H, sessions: &[CK_SESSION_HANDLE], key: CK_OBJECT_HANDLE, phase: Duration) -> usize {
    let f = h.f();
    let end = Instant::now() + phase;
    let threads: Vec<_> = sessions
        .iter()
        .map(|&s| {
            std::thread::spawn(move || {
                let digest = [7u8; 32];
                let mut n = 0;
                while Instant::now() < end {
                    assert_eq!(sign_init(f, s, CKM_ECDSA, key), CKR_OK);
                    let (rv, _, _) = c_sign(f, s, &digest, Some(64));
                    assert_eq!(rv, CKR_OK);
                    n += 1;
                }
                n
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// Signatures by 8 threads with a plain key while 3 other sessions wait for approvals, against
/// the same 8 threads without waiters (alternating phases, two rounds each).
#[test]
fn eight_sessions_sign_at_full_speed_while_others_wait() {
    let _x = exclusive();
    const PHASE: Duration = Duration::from_millis(700);
    let h = harness(json!({"pollIntervalMs": 50, "pollIntervalMaxMs": 50}));
    let signers: Vec<_> = (0..8).map(|_| session(&h)).collect();
    let key = find_key(&h, signers[0], PLAIN_EC);
    let waiter_keys = [SKA_EC, SKA_QUORUM, SKA_RSA];
    let waiters: Vec<_> = waiter_keys
        .iter()
        .map(|&label| (session(&h), label))
        .collect();
    burst(&h, &signers, key, Duration::from_millis(200)); // warm-up

    let (mut baseline, mut with_waiters) = (0, 0);
    for round in 0..2 {
        baseline += burst(&h, &signers, key, PHASE);

        let threads: Vec<_> = waiters
            .iter()
            .map(|&(s, label)| start_sign(&h, s, label, mechanism_for(label), &message("waiter")))
            .collect();
        for &label in &waiter_keys {
            wait_request(&h, label, round);
        }
        with_waiters += burst(&h, &signers, key, PHASE);
        assert!(
            threads.iter().all(|t| !t.is_finished()),
            "the waiters were waiting the whole time"
        );
        for &(s, _) in &waiters {
            // SAFETY: plain call on a live session.
            assert_eq!(
                unsafe { (h.raw.f3.C_SessionCancel.unwrap())(s, CKF_SIGN) },
                CKR_OK
            );
        }
        for t in threads {
            assert_eq!(join(t).rv, CKR_FUNCTION_CANCELED);
        }
    }
    let polls = h.sim.counter(GET_REQUEST);
    eprintln!(
        "8 threads, {} ms: {baseline} signatures without waiters, {with_waiters} while 3 sessions \
         waited for approvals ({:.0}%; {polls} polls by the waiters)",
        2 * PHASE.as_millis(),
        100.0 * with_waiters as f64 / baseline.max(1) as f64
    );
    assert!(baseline > 0);
    assert!(
        with_waiters * 2 >= baseline,
        "throughput with waiters {with_waiters} < 50% of {baseline}"
    );
    assert!(polls > 0, "the waiters were polling");
    assert_eq!(h.sim.counter(POST_SIGN), 6);
}

fn mechanism_for(label: &str) -> CK_MECHANISM_TYPE {
    if label.contains("rsa") {
        CKM_SHA256_RSA_PKCS
    } else {
        CKM_ECDSA_SHA256
    }
}
