//! Concurrency (issue #6, part 1): many threads with their own sessions, threads sharing one
//! session, sessions closed under a signing thread, and object searches and key-list
//! refreshes during signing. Every signature is checked with OpenSSL.
//!
//! The soak's duration is `TSB_PKCS11_SOAK_SECS` (default 10 s; the issue asks for a minute:
//! `TSB_PKCS11_SOAK_SECS=60`). The other tests run a few seconds each.

use tsb_pkcs11_test_support as common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::verify::{self, Hash};
use common::{pss_params, raw_sign, Harness, Raw};
use cryptoki_sys::*;
use openssl::pkey::{PKey, Public};
use tsb_sim::{Curve, Fault, KeySpec, SimConfig};

fn soak_duration() -> Duration {
    let secs = std::env::var("TSB_PKCS11_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(10.0);
    Duration::from_secs_f64(secs)
}

fn open_session(raw: &Raw) -> CK_SESSION_HANDLE {
    let mut s: CK_SESSION_HANDLE = 0;
    // SAFETY: valid out pointer, no callback.
    let rv = unsafe {
        (raw.f.C_OpenSession.unwrap())(0, CKF_SERIAL_SESSION, std::ptr::null_mut(), None, &mut s)
    };
    assert_eq!(rv, CKR_OK, "C_OpenSession");
    s
}

fn close_session(raw: &Raw, s: CK_SESSION_HANDLE) -> CK_RV {
    // SAFETY: a plain handle.
    unsafe { (raw.f.C_CloseSession.unwrap())(s) }
}

/// C_FindObjectsInit / C_FindObjects / C_FindObjectsFinal with a template of
/// (type, value) pairs; returns every handle found or the first failing CK_RV.
fn find(
    raw: &Raw,
    s: CK_SESSION_HANDLE,
    template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Result<Vec<CK_OBJECT_HANDLE>, CK_RV> {
    let mut values: Vec<Vec<u8>> = template.iter().map(|(_, v)| v.clone()).collect();
    let mut attrs: Vec<CK_ATTRIBUTE> = template
        .iter()
        .zip(values.iter_mut())
        .map(|((t, _), v)| CK_ATTRIBUTE {
            type_: *t,
            pValue: v.as_mut_ptr().cast(),
            ulValueLen: v.len() as CK_ULONG,
        })
        .collect();
    let f = raw.f;
    let mut all = Vec::new();
    // SAFETY: the template and output buffers are valid for the calls.
    unsafe {
        let rv = (f.C_FindObjectsInit.unwrap())(s, attrs.as_mut_ptr(), attrs.len() as CK_ULONG);
        if rv != CKR_OK {
            return Err(rv);
        }
        loop {
            let mut batch = [0 as CK_OBJECT_HANDLE; 8];
            let mut n: CK_ULONG = 0;
            let rv = (f.C_FindObjects.unwrap())(s, batch.as_mut_ptr(), 8, &mut n);
            if rv != CKR_OK {
                (f.C_FindObjectsFinal.unwrap())(s);
                return Err(rv);
            }
            all.extend_from_slice(&batch[..n as usize]);
            if n < 8 {
                break;
            }
        }
        let rv = (f.C_FindObjectsFinal.unwrap())(s);
        if rv != CKR_OK {
            return Err(rv);
        }
    }
    Ok(all)
}

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn private_key(raw: &Raw, s: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
    let found = find(
        raw,
        s,
        &[
            (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
            (CKA_LABEL, label.as_bytes().to_vec()),
        ],
    )
    .expect("find");
    assert_eq!(found.len(), 1, "one private key labelled {label}");
    found[0]
}

/// The label of an object (C_GetAttributeValue, length query then value).
fn label_of(raw: &Raw, s: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> Result<String, CK_RV> {
    let f = raw.f;
    let mut a = CK_ATTRIBUTE {
        type_: CKA_LABEL,
        pValue: std::ptr::null_mut(),
        ulValueLen: 0,
    };
    // SAFETY: one attribute, then a buffer of the reported length.
    unsafe {
        let rv = (f.C_GetAttributeValue.unwrap())(s, object, &mut a, 1);
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut buf = vec![0u8; a.ulValueLen as usize];
        a.pValue = buf.as_mut_ptr().cast();
        let rv = (f.C_GetAttributeValue.unwrap())(s, object, &mut a, 1);
        if rv != CKR_OK {
            return Err(rv);
        }
        buf.truncate(a.ulValueLen as usize);
        Ok(String::from_utf8(buf).expect("UTF-8 label"))
    }
}

/// A way to sign and check: key label, mechanism (with parameters) and the OpenSSL check.
#[derive(Clone, Copy)]
enum Kind {
    EcdsaP256,
    RsaPkcs,
    RsaPss,
    EcdsaP384,
    Ed25519,
}

const KINDS: [Kind; 5] = [
    Kind::EcdsaP256,
    Kind::RsaPkcs,
    Kind::RsaPss,
    Kind::EcdsaP384,
    Kind::Ed25519,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::EcdsaP256 => "ec-p256",
            Kind::RsaPkcs | Kind::RsaPss => "rsa-2048",
            Kind::EcdsaP384 => "ec-p384",
            Kind::Ed25519 => "ed25519",
        }
    }

    fn mechanism(self) -> (CK_MECHANISM_TYPE, Vec<u8>) {
        match self {
            Kind::EcdsaP256 | Kind::EcdsaP384 => (CKM_ECDSA_SHA256, Vec::new()),
            Kind::RsaPkcs => (CKM_SHA256_RSA_PKCS, Vec::new()),
            Kind::RsaPss => (
                CKM_SHA256_RSA_PKCS_PSS,
                pss_params(CKM_SHA256, CKG_MGF1_SHA256, 32),
            ),
            Kind::Ed25519 => (CKM_EDDSA, Vec::new()),
        }
    }

    fn check(self, key: &PKey<Public>, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Kind::EcdsaP256 | Kind::EcdsaP384 => verify::ecdsa(key, Hash::Sha256, msg, sig),
            Kind::RsaPkcs => verify::rsa_pkcs1(key, Hash::Sha256, msg, sig),
            Kind::RsaPss => verify::rsa_pss(key, Hash::Sha256, msg, sig),
            Kind::Ed25519 => verify::ed25519(key, msg, sig),
        }
    }
}

/// Public keys by label, parsed by OpenSSL from the simulator's copy.
struct PublicKeys(BTreeMap<&'static str, PKey<Public>>);

impl PublicKeys {
    fn of(h: &Harness) -> PublicKeys {
        PublicKeys(
            KINDS
                .iter()
                .map(|k| (k.label(), h.sim_public_key(k.label())))
                .collect(),
        )
    }

    fn check(&self, kind: Kind, msg: &[u8], sig: &[u8]) -> bool {
        kind.check(&self.0[kind.label()], msg, sig)
    }
}

/// Signs `msg` with `kind` in session `s` and checks the signature; `Err` is the module's
/// CK_RV. A signature that does not verify panics.
fn sign_checked(
    raw: &Raw,
    keys: &PublicKeys,
    s: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
    kind: Kind,
    msg: &[u8],
) -> Result<(), CK_RV> {
    let (mech, mut params) = kind.mechanism();
    let sig = raw_sign(raw, s, mech, &mut params, key, msg)?;
    assert!(
        keys.check(kind, msg, &sig),
        "{} signature does not verify",
        kind.label()
    );
    Ok(())
}

/// 32 threads, each with its own session, sign for `TSB_PKCS11_SOAK_SECS` with five key and
/// mechanism kinds; every signature verifies, no call fails, every thread makes progress.
#[test]
fn soak_32_threads_with_their_own_sessions() {
    const THREADS: usize = 32;
    let h = Harness::new();
    let keys = PublicKeys::of(&h);
    let duration = soak_duration();
    let stop = AtomicBool::new(false);
    let start = Barrier::new(THREADS + 1);
    let counts: Vec<AtomicU64> = (0..THREADS).map(|_| AtomicU64::new(0)).collect();
    let t0 = std::thread::scope(|scope| {
        for (t, count) in counts.iter().enumerate() {
            let (raw, keys, stop, start) = (&h.raw, &keys, &stop, &start);
            scope.spawn(move || {
                let s = open_session(raw);
                let handles: Vec<_> = KINDS
                    .iter()
                    .map(|k| private_key(raw, s, k.label()))
                    .collect();
                start.wait();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let k = (t + i) % KINDS.len();
                    let msg = format!("thread {t} signature {i}");
                    sign_checked(raw, keys, s, handles[k], KINDS[k], msg.as_bytes())
                        .unwrap_or_else(|rv| panic!("thread {t}: {rv:#x}"));
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                assert_eq!(close_session(raw, s), CKR_OK);
            });
        }
        start.wait();
        let t0 = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        t0
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let per_thread: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let total: u64 = per_thread.iter().sum();
    let (min, max) = (
        per_thread.iter().min().unwrap(),
        per_thread.iter().max().unwrap(),
    );
    eprintln!(
        "soak: {THREADS} threads, {elapsed:.1}s: {total} signatures ({:.0}/s), per thread \
         {min}..{max}; TSB sign requests {}",
        total as f64 / elapsed,
        h.sim.counter("POST /v1/synchronousSign")
    );
    assert!(*min > 0, "a thread made no progress: {per_thread:?}");
}

/// Threads sharing one session: the module serialises the session's operation (one active
/// signing operation; C_SignInit of another thread meanwhile gets CKR_OPERATION_ACTIVE), so
/// every signature is made with the key and data of the thread that started the operation.
#[test]
fn threads_sharing_one_session() {
    const THREADS: usize = 8;
    const SIGNS: usize = 15;
    let h = Harness::new();
    let keys = PublicKeys::of(&h);
    let s = open_session(&h.raw);
    let handles: Vec<_> = KINDS
        .iter()
        .map(|k| private_key(&h.raw, s, k.label()))
        .collect();
    let busy = AtomicU64::new(0);
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (raw, keys, handles, busy, start) = (&h.raw, &keys, &handles, &busy, &start);
            scope.spawn(move || {
                start.wait();
                let k = t % KINDS.len();
                let mut done = 0;
                while done < SIGNS {
                    let msg = format!("shared session, thread {t}, signature {done}");
                    match sign_checked(raw, keys, s, handles[k], KINDS[k], msg.as_bytes()) {
                        Ok(()) => done += 1,
                        // Another thread's operation is active: try again.
                        Err(CKR_OPERATION_ACTIVE) => {
                            busy.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                        }
                        Err(rv) => panic!("thread {t}: {rv:#x}"),
                    }
                }
            });
        }
    });
    eprintln!(
        "shared session: {} signatures verified, {} C_SignInit answered CKR_OPERATION_ACTIVE",
        THREADS * SIGNS,
        busy.load(Ordering::Relaxed)
    );
    assert_eq!(
        h.sim.counter("POST /v1/synchronousSign"),
        (THREADS * SIGNS) as u64
    );
    assert_eq!(close_session(&h.raw, s), CKR_OK);
}

/// C_CloseSession on a session another thread is signing in, at varying moments (the TSB
/// answers after 0–150 ms): no crash; the signer gets its (valid) signature, or
/// CKR_SESSION_HANDLE_INVALID / CKR_SESSION_CLOSED. A thread waiting for approvals in the
/// closed session returns CKR_SESSION_CLOSED promptly and its request is cancelled.
#[test]
fn close_session_while_another_thread_signs() {
    const ROUNDS: u64 = 24;
    let h = Harness::new();
    let keys = PublicKeys::of(&h);
    let outcomes: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
    let setup = open_session(&h.raw);
    let ec = private_key(&h.raw, setup, "ec-p256");
    let ska = private_key(&h.raw, setup, "ska-ec-p256");
    for round in 0..ROUNDS {
        let latency = (round * 37) % 150;
        h.sim.clear_faults();
        if latency > 0 {
            h.sim
                .inject(Fault::latency("POST /v1/synchronousSign", latency));
        }
        let s = open_session(&h.raw);
        let signing = Arc::new(Barrier::new(2));
        std::thread::scope(|scope| {
            let (raw, keys, outcomes, go) = (&h.raw, &keys, &outcomes, signing.clone());
            let signer = scope.spawn(move || {
                go.wait();
                for i in 0.. {
                    let msg = format!("round {round} signature {i}");
                    let r = sign_checked(raw, keys, s, ec, Kind::EcdsaP256, msg.as_bytes());
                    let name = match r {
                        Ok(()) => continue,
                        Err(CKR_SESSION_HANDLE_INVALID) => "CKR_SESSION_HANDLE_INVALID",
                        Err(CKR_SESSION_CLOSED) => "CKR_SESSION_CLOSED",
                        Err(rv) => panic!("round {round}: unexpected {rv:#x}"),
                    };
                    *outcomes.lock().unwrap().entry(name.into()).or_default() += 1;
                    *outcomes
                        .lock()
                        .unwrap()
                        .entry("signatures before the close".into())
                        .or_default() += i;
                    return;
                }
            });
            signing.wait();
            std::thread::sleep(Duration::from_millis(latency / 2 + round % 5));
            assert_eq!(close_session(&h.raw, s), CKR_OK);
            signer.join().unwrap();
        });
    }
    h.sim.clear_faults();
    // A thread waiting for approvals.
    let s = open_session(&h.raw);
    let t0 = std::thread::scope(|scope| {
        let raw = &h.raw;
        let waiter =
            scope.spawn(move || raw_sign(raw, s, CKM_ECDSA_SHA256, &mut [], ska, b"approve me"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.sim.requests().iter().all(|r| r.id.is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let t0 = Instant::now();
        assert_eq!(close_session(&h.raw, s), CKR_OK);
        assert_eq!(waiter.join().unwrap(), Err(CKR_SESSION_CLOSED));
        t0
    });
    assert!(t0.elapsed() < Duration::from_secs(3), "woken promptly");
    let id = h.sim.requests().into_iter().find_map(|r| r.id).unwrap();
    assert_eq!(h.sim.request_status(&id).as_deref(), Some("CANCELLED"));
    eprintln!("close during sign: {:?}", outcomes.lock().unwrap());
    // C_CloseAllSessions under eight signing threads.
    let sessions: Vec<_> = (0..8).map(|_| open_session(&h.raw)).collect();
    h.sim.inject(Fault::latency("POST /v1/synchronousSign", 50));
    std::thread::scope(|scope| {
        for &s in &sessions {
            let (raw, keys) = (&h.raw, &keys);
            scope.spawn(move || loop {
                match sign_checked(raw, keys, s, ec, Kind::EcdsaP256, b"close all") {
                    Ok(()) => {}
                    Err(CKR_SESSION_HANDLE_INVALID | CKR_SESSION_CLOSED) => return,
                    Err(rv) => panic!("unexpected {rv:#x}"),
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: a plain slot id.
        assert_eq!(unsafe { (h.raw.f.C_CloseAllSessions.unwrap())(0) }, CKR_OK);
    });
    h.sim.clear_faults();
}

/// C_FindObjects, attribute reads and key-list refreshes (cacheTtlSecs 0, keys added and
/// removed on the TSB meanwhile) on other threads while eight threads sign: all signatures
/// verify, every search finds the keys that stay, and no call fails except for a key that
/// was just removed (CKR_OBJECT_HANDLE_INVALID).
#[test]
fn searches_and_key_list_refreshes_during_signing() {
    const SIGNERS: usize = 8;
    const FINDERS: usize = 4;
    let h = Harness::with(SimConfig::demo(), serde_json::json!({ "cacheTtlSecs": 0 }));
    let keys = PublicKeys::of(&h);
    let stop = AtomicBool::new(false);
    let (signed, searches, churned, vanished) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    std::thread::scope(|scope| {
        for t in 0..SIGNERS {
            let (raw, keys, stop, signed) = (&h.raw, &keys, &stop, &signed);
            scope.spawn(move || {
                let s = open_session(raw);
                let kind = KINDS[t % KINDS.len()];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Look the key up again each time: a refresh must keep its handle.
                    let key = private_key(raw, s, kind.label());
                    let msg = format!("signer {t} #{i}");
                    sign_checked(raw, keys, s, key, kind, msg.as_bytes())
                        .unwrap_or_else(|rv| panic!("signer {t}: {rv:#x}"));
                    signed.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                assert_eq!(close_session(raw, s), CKR_OK);
            });
        }
        for _ in 0..FINDERS {
            let (raw, stop, searches, vanished) = (&h.raw, &stop, &searches, &vanished);
            scope.spawn(move || {
                let s = open_session(raw);
                while !stop.load(Ordering::Relaxed) {
                    let all = find(raw, s, &[(CKA_CLASS, ulong(CKO_PRIVATE_KEY))])
                        .unwrap_or_else(|rv| panic!("search: {rv:#x}"));
                    let mut labels = Vec::new();
                    for o in all {
                        match label_of(raw, s, o) {
                            Ok(l) => labels.push(l),
                            Err(CKR_OBJECT_HANDLE_INVALID) => {
                                vanished.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(rv) => panic!("label: {rv:#x}"),
                        }
                    }
                    for k in KINDS {
                        assert!(
                            labels.iter().any(|l| l == k.label()),
                            "{} missing from {labels:?}",
                            k.label()
                        );
                    }
                    searches.fetch_add(1, Ordering::Relaxed);
                }
                assert_eq!(close_session(raw, s), CKR_OK);
            });
        }
        // Churn: keys appear on and disappear from the TSB.
        let t0 = Instant::now();
        let mut n = 0;
        while t0.elapsed() < Duration::from_secs(4) {
            let label = format!("churn-{n}");
            h.sim
                .add_key(KeySpec::ec(&label, Curve::P256))
                .expect("add key");
            std::thread::sleep(Duration::from_millis(60));
            h.sim.remove_key(&label);
            churned.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "refresh under load: {} signatures, {} full searches, {} keys added and removed, \
         {} handles gone between search and read, {} key-list requests",
        signed.load(Ordering::Relaxed),
        searches.load(Ordering::Relaxed),
        churned.load(Ordering::Relaxed),
        vanished.load(Ordering::Relaxed),
        h.sim.counter("GET /v1/key")
    );
    assert!(signed.load(Ordering::Relaxed) > 0);
    assert!(searches.load(Ordering::Relaxed) > 0);
}
