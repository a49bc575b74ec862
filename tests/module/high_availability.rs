//! Issue #13, high availability: the built module over a simulator cluster (several listeners
//! serving one state, each with its own fault), with `restApi` an array of the nodes' URLs.
//!
//! What the tests show:
//! - a node down at start costs nothing but one WARN line; signatures work;
//! - a node that dies (refusing connections, or hanging) while 8 threads sign synchronously:
//!   no signature fails, every one verifies with OpenSSL, none is returned twice;
//! - a node that dies during an approval wait: the signature still arrives, and exactly one
//!   approval request was filed (the simulator counts across its listeners);
//! - `POST /v1/sign` on a node that hangs after receiving it: `CKR_DEVICE_ERROR`, still
//!   exactly one request, one error line naming the node;
//! - every node down: `CKR_DEVICE_ERROR` with one message naming each node, within the deadline;
//! - `spread` spreads over the nodes, `failover` keeps to the first while it is up and comes
//!   back to it once it answers again.
//!
//! Back-offs and timeouts are short (`nodeDownBackoffMs` 300, `requestTimeoutMs` 3000), so
//! the whole file runs in seconds.

use tsb_pkcs11_test_support as common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::verify::{self, Hash};
use common::{raw_sign, Harness};
use cryptoki::mechanism::Mechanism;
use cryptoki_sys::*;
use serde_json::{json, Value};
use tsb_sim::{NodeFault, SimConfig};

/// The per-call deadline of these tests.
const TIMEOUT_MS: u64 = 3000;
/// The first back-off of a node marked down.
const BACKOFF_MS: u64 = 300;

/// A harness over a cluster, its module copy's log read at `level`.
struct Ha {
    h: Harness,
    level: &'static str,
}

impl std::ops::Deref for Ha {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

impl Ha {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.h
            .log_text(Some(self.level))
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    fn counts(&self) -> Vec<u64> {
        (0..self.sim.urls().len())
            .map(|i| self.sim.listener_requests(i))
            .collect()
    }

    fn fault(&self, node: usize, fault: NodeFault) {
        self.sim
            .set_listener_fault(node, fault)
            .expect("listener fault set");
    }
}

/// The module's `pkcs11` settings for a cluster with `strategy`.
fn settings(strategy: &str, timeout_ms: u64) -> Value {
    json!({
        "nodeStrategy": strategy,
        "requestTimeoutMs": timeout_ms,
        "connectTimeoutMs": 500,
        "nodeDownBackoffMs": BACKOFF_MS,
        "nodeDownBackoffMaxMs": 1000,
        "pollIntervalMs": 50,
        "pollIntervalMaxMs": 100,
        "approvalTimeoutSecs": 20
    })
}

fn cluster_with(
    cfg: SimConfig,
    nodes: usize,
    pkcs11: Value,
    before_init: impl FnOnce(&tsb_sim::Simulator),
) -> Ha {
    let sim = common::start_cluster(cfg, nodes);
    before_init(&sim);
    let h = Harness::over(
        sim,
        |sim| json!({ "restApi": sim.urls(), "pkcs11": pkcs11 }),
    );
    Ha { h, level: "debug" }
}

fn cluster(nodes: usize, strategy: &str) -> Ha {
    cluster_with(
        SimConfig::fast_test(),
        nodes,
        settings(strategy, TIMEOUT_MS),
        |_| {},
    )
}

/// A simulator whose approval keys are approved `ms` after each request is filed.
fn auto_approving(ms: u64) -> SimConfig {
    let mut cfg = SimConfig::fast_test();
    cfg.auto_approve_after_ms = Some(ms);
    cfg.approved_execution_delay_ms = 50;
    cfg
}

/// Signs `msg` with ECDSA-SHA256 on `label` in a new session; the signature is verified with
/// OpenSSL.
fn sign_ec(h: &Harness, label: &str, msg: &[u8]) -> Vec<u8> {
    let s = h.session();
    let k = h.private_key(&s, label);
    let sig = s.sign(&Mechanism::EcdsaSha256, k, msg).expect("sign works");
    assert!(verify::ecdsa(
        &h.sim_public_key(label),
        Hash::Sha256,
        msg,
        &sig
    ));
    sig
}

fn open_session(h: &Harness) -> CK_SESSION_HANDLE {
    let mut s: CK_SESSION_HANDLE = 0;
    // SAFETY: valid out pointer, no callback.
    let rv = unsafe {
        (h.raw.f.C_OpenSession.unwrap())(0, CKF_SERIAL_SESSION, std::ptr::null_mut(), None, &mut s)
    };
    assert_eq!(rv, CKR_OK);
    s
}

fn find_key(h: &Harness, s: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
    let found = common::raw_find_private_keys(h.raw.f, s, label).expect("C_FindObjects*");
    assert_eq!(found.len(), 1, "{label}");
    found[0]
}

#[test]
fn a_node_down_at_start_costs_one_warning() {
    let h = cluster_with(
        SimConfig::fast_test(),
        2,
        settings("failover", TIMEOUT_MS),
        |sim| sim.set_listener_fault(0, NodeFault::Down).unwrap(),
    );
    let url0 = h.sim.urls()[0].clone();
    for i in 0..10 {
        sign_ec(&h, "ec-p256", format!("down at start {i}").as_bytes());
    }
    assert_eq!(h.sim.listener_requests(0), 0, "node 0 refuses connections");
    assert!(h.sim.listener_requests(1) >= 10);
    let warned = h.lines_with(&format!("TSB node {url0} is down"));
    assert_eq!(warned.len(), 1, "one WARN line: {warned:#?}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(h.lines_with("TSB call failed").is_empty(), "no call failed");
}

/// 8 threads sign with ECDSA (distinct messages) until stopped; `fault` hits node 0 while they
/// run. Returns (message, signature) of every signature; panics on a failed one.
fn sign_while_node_dies(h: &Ha, fault: NodeFault) -> Vec<(String, Vec<u8>)> {
    const THREADS: usize = 8;
    let stop = AtomicBool::new(false);
    let signed = Mutex::new(Vec::new());
    let failed = Mutex::new(Vec::new());
    // Sessions and keys before the threads start.
    let sessions: Vec<(CK_SESSION_HANDLE, CK_OBJECT_HANDLE)> = (0..THREADS)
        .map(|_| {
            let s = open_session(h);
            (s, find_key(h, s, "ec-p256"))
        })
        .collect();
    std::thread::scope(|scope| {
        for (t, &(s, k)) in sessions.iter().enumerate() {
            let (stop, signed, failed) = (&stop, &signed, &failed);
            let raw = &h.raw;
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let msg = format!("thread {t} #{i}");
                    match raw_sign(raw, s, CKM_ECDSA_SHA256, &mut [], k, msg.as_bytes()) {
                        Ok(sig) => signed.lock().unwrap().push((msg, sig)),
                        Err(rv) => failed.lock().unwrap().push((msg, rv)),
                    }
                    i += 1;
                }
            });
        }
        // Both nodes serve until enough signatures went through, then node 0 dies.
        let until = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while signed.lock().unwrap().len() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        until(40);
        assert!(h.sim.listener_requests(0) > 0 && h.sim.listener_requests(1) > 0);
        h.fault(0, fault);
        let at_death = signed.lock().unwrap().len();
        // Long enough for in-flight calls to time out on a hanging node and for a probe.
        std::thread::sleep(Duration::from_millis(TIMEOUT_MS / 2 + 2 * BACKOFF_MS));
        until(at_death + 80);
        stop.store(true, Ordering::Relaxed);
    });
    let failed = failed.into_inner().unwrap();
    assert!(failed.is_empty(), "failed signatures: {failed:?}");
    signed.into_inner().unwrap()
}

fn check_signatures(h: &Ha, signed: &[(String, Vec<u8>)]) {
    let key = h.sim_public_key("ec-p256");
    let mut seen = HashSet::new();
    for (msg, sig) in signed {
        assert!(
            verify::ecdsa(&key, Hash::Sha256, msg.as_bytes(), sig),
            "{msg}: signature does not verify"
        );
        assert!(
            seen.insert(sig.clone()),
            "{msg}: a signature returned twice"
        );
    }
    let msgs: HashSet<&String> = signed.iter().map(|(m, _)| m).collect();
    assert_eq!(msgs.len(), signed.len(), "one signature per message");
}

#[test]
fn a_node_that_goes_down_under_8_signing_threads_loses_no_signature() {
    let h = cluster(2, "spread");
    let signed = sign_while_node_dies(&h, NodeFault::Down);
    check_signatures(&h, &signed);
    let url0 = h.sim.urls()[0].clone();
    assert_eq!(
        h.lines_with(&format!("TSB node {url0} is down")).len(),
        1,
        "one WARN line for the outage"
    );
    // Node 1 took over: it answered the signatures made after the death.
    let before = h.sim.listener_requests(1);
    sign_ec(&h, "ec-p256", b"after");
    assert!(h.sim.listener_requests(1) > before);
}

#[test]
fn a_node_that_hangs_under_8_signing_threads_loses_no_signature() {
    let h = cluster(2, "spread");
    let signed = sign_while_node_dies(&h, NodeFault::Hang);
    check_signatures(&h, &signed);
    let url0 = h.sim.urls()[0].clone();
    let warned = h.lines_with(&format!("TSB node {url0} is down"));
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(warned[0].contains("timed out"), "{}", warned[0]);
    h.fault(0, NodeFault::None);
}

#[test]
fn a_node_that_dies_during_an_approval_wait_loses_no_signature() {
    let h = cluster_with(
        auto_approving(1200),
        2,
        settings("failover", TIMEOUT_MS),
        |_| {},
    );
    let s = open_session(&h);
    let k = find_key(&h, s, "ska-ec-p256");
    h.sim.reset_counters();
    let signer = std::thread::scope(|scope| {
        let raw = &h.raw;
        let signer =
            scope.spawn(move || raw_sign(raw, s, CKM_ECDSA_SHA256, &mut [], k, b"approve me"));
        // The request is filed on node 0 (failover), then node 0 dies while the module polls.
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.sim.requests().iter().all(|r| r.id.is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(h.sim.listener_requests(1), 0, "failover: all on node 0");
        h.fault(0, NodeFault::Down);
        signer.join().unwrap()
    });
    let sig = signer.expect("the signature arrives");
    assert!(verify::ecdsa(
        &h.sim_public_key("ska-ec-p256"),
        Hash::Sha256,
        b"approve me",
        &sig
    ));
    assert_eq!(
        h.sim.counter("POST /v1/sign"),
        1,
        "exactly one request filed"
    );
    assert_eq!(h.sim.requests().len(), 1);
    assert!(h.sim.listener_requests(1) > 0, "the polls moved to node 1");
}

#[test]
fn an_approval_request_refused_by_a_node_goes_to_the_next() {
    let h = cluster_with(auto_approving(100), 2, settings("failover", 1500), |_| {});
    let s = open_session(&h);
    // Found on node 0 (failover): the module holds node 0 for up.
    let k = find_key(&h, s, "ska-ec-p256");
    h.fault(0, NodeFault::Down);
    h.sim.reset_counters();
    let sig = raw_sign(&h.raw, s, CKM_ECDSA_SHA256, &mut [], k, b"refused").expect("signed");
    assert!(verify::ecdsa(
        &h.sim_public_key("ska-ec-p256"),
        Hash::Sha256,
        b"refused",
        &sig
    ));
    assert_eq!(h.sim.counter("POST /v1/sign"), 1, "filed once, on node 1");
    assert_eq!(h.sim.requests().len(), 1);
}

#[test]
fn an_approval_request_on_a_node_that_hangs_fails_and_is_not_filed_again() {
    let h = cluster_with(auto_approving(100), 2, settings("failover", 1500), |_| {});
    let url0 = h.sim.urls()[0].clone();
    let s = open_session(&h);
    let k = find_key(&h, s, "ska-ec-p256");
    // Node 0 reads the request and never answers: it may have filed it.
    h.fault(0, NodeFault::Hang);
    h.sim.reset_counters();
    let started = Instant::now();
    let r = raw_sign(&h.raw, s, CKM_ECDSA_SHA256, &mut [], k, b"hung");
    let took = started.elapsed();
    assert_eq!(r, Err(CKR_DEVICE_ERROR));
    assert_eq!(
        h.sim.counter("POST /v1/sign"),
        1,
        "exactly one request reached the cluster"
    );
    assert_eq!(h.sim.listener_requests(1), 0, "nothing went to node 1");
    assert!(took < Duration::from_millis(1500 + 1500), "{took:?}");
    let lines = h.lines_with("not sent to another node");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(&url0), "{}", lines[0]);
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    h.fault(0, NodeFault::None);
}

#[test]
fn every_node_down_fails_clearly_within_the_deadline() {
    let h = cluster(3, "failover");
    let s = open_session(&h);
    let k = find_key(&h, s, "ec-p256");
    for i in 0..3 {
        h.fault(i, NodeFault::Down);
    }
    let started = Instant::now();
    let r = raw_sign(&h.raw, s, CKM_ECDSA_SHA256, &mut [], k, b"nobody home");
    let took = started.elapsed();
    assert_eq!(r, Err(CKR_DEVICE_ERROR));
    assert!(
        took < Duration::from_millis(TIMEOUT_MS + 2000),
        "returned after {took:?}"
    );
    let lines = h.lines_with("every TSB node failed: ");
    assert_eq!(lines.len(), 1, "one clear error: {lines:#?}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    for url in h.sim.urls() {
        assert!(lines[0].contains(&url), "{url} in {}", lines[0]);
    }
    // The nodes come back: the next call notices.
    for i in 0..3 {
        h.fault(i, NodeFault::None);
    }
    sign_ec(&h, "ec-p256", b"back");
}

#[test]
fn spread_spreads_over_every_node() {
    let h = cluster(3, "spread");
    sign_ec(&h, "ec-p256", b"warm up");
    h.sim.reset_counters();
    let s = open_session(&h);
    let k = find_key(&h, s, "ec-p256");
    let key = h.sim_public_key("ec-p256");
    for i in 0..30 {
        let msg = format!("spread {i}");
        let sig = raw_sign(&h.raw, s, CKM_ECDSA_SHA256, &mut [], k, msg.as_bytes()).unwrap();
        assert!(verify::ecdsa(&key, Hash::Sha256, msg.as_bytes(), &sig));
    }
    let counts = h.counts();
    let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(min > 0, "every node is used: {counts:?}");
    assert!(max <= 2 * min, "roughly even: {counts:?}");
}

#[test]
fn failover_keeps_to_the_first_node_and_comes_back_to_it() {
    let h = cluster(2, "failover");
    let url0 = h.sim.urls()[0].clone();
    for i in 0..10 {
        sign_ec(&h, "ec-p256", format!("failover {i}").as_bytes());
    }
    assert_eq!(h.counts()[1], 0, "node 1 gets nothing while node 0 is up");
    h.fault(0, NodeFault::Down);
    sign_ec(&h, "ec-p256", b"node 0 down");
    h.fault(0, NodeFault::None);
    // Node 0 is tried again once its back-off has passed (the next call after that).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    loop {
        h.sim.reset_counters();
        sign_ec(
            &h,
            "ec-p256",
            format!("until node 0 answers {i}").as_bytes(),
        );
        i += 1;
        if h.counts()[0] > 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    h.sim.reset_counters();
    for i in 0..5 {
        sign_ec(&h, "ec-p256", format!("back on node 0 {i}").as_bytes());
    }
    assert_eq!(h.counts()[1], 0, "back on node 0: {:?}", h.counts());
    assert!(h.counts()[0] >= 5);
    let back = h.lines_with(&format!("TSB node {url0} answers again"));
    assert_eq!(back.len(), 1, "{back:#?}");
}

/// Issue 19 item 2: two TSBs that are not one cluster, each with its own key under the same
/// label. After node 1 goes down and calls move to node 2, a sign under the handle read from
/// node 1 never returns a signature of node 2's key (CKR_KEY_HANDLE_INVALID: the signature is
/// checked against the key the handle named, and the key is read again); the old handle is
/// invalid from then on, the key of node 2 gets a new handle whose signatures verify under it,
/// and one WARN line names the change.
#[test]
fn a_failover_to_a_node_with_another_key_gives_new_handles() {
    let keys = tempfile::tempdir().expect("tempdir");
    let node = || {
        let mut cfg = SimConfig::fast_test();
        cfg.keys = vec![common::fresh_p256_key("ha-key", keys.path())];
        common::start_sim(cfg)
    };
    let second = node();
    let second_url = second.url();
    let h = Harness::over(node(), |first| {
        json!({
            "restApi": [first.url(), second_url],
            "pkcs11": settings("failover", TIMEOUT_MS)
        })
    });
    let h = Ha { h, level: "info" };
    let s = h.session();
    let old = h.private_key(&s, "ha-key");
    let read = common::public_key_info(&s, old);
    assert!(read.public_eq(&h.sim_public_key("ha-key")), "node 1's key");
    let sig = s.sign(&Mechanism::EcdsaSha256, old, b"before").unwrap();
    assert!(verify::ecdsa(&read, Hash::Sha256, b"before", &sig));

    h.fault(0, NodeFault::Down);
    for attempt in 0..2 {
        let r = raw_sign(
            &h.raw,
            s.handle(),
            CKM_ECDSA_SHA256,
            &mut [],
            old.handle(),
            b"after",
        );
        if let Ok(sig) = &r {
            assert!(
                verify::ecdsa(&read, Hash::Sha256, b"after", sig),
                "attempt {attempt}: a CKR_OK signature under the old handle verifies under the key read"
            );
        }
        assert_eq!(r.unwrap_err(), CKR_KEY_HANDLE_INVALID, "attempt {attempt}");
    }
    let rv = s
        .get_attributes(old, &[cryptoki::object::AttributeType::Label])
        .unwrap_err();
    assert!(format!("{rv:?}").contains("ObjectHandleInvalid"), "{rv}");

    let node2 = openssl::pkey::PKey::public_key_from_der(
        &second.public_key_der("ha-key").expect("node 2 has the key"),
    )
    .unwrap();
    assert!(!node2.public_eq(&read), "another key on node 2");
    let new = h.private_key(&s, "ha-key");
    assert_ne!(new, old, "handles are never reused");
    assert!(common::public_key_info(&s, new).public_eq(&node2));
    let sig = s.sign(&Mechanism::EcdsaSha256, new, b"after").unwrap();
    assert!(verify::ecdsa(&node2, Hash::Sha256, b"after", &sig));
    assert!(!verify::ecdsa(&read, Hash::Sha256, b"after", &sig));
    let warned = h.lines_with("the key behind label 'ha-key' changed");
    assert_eq!(warned.len(), 1, "one WARN line: {warned:#?}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
}
