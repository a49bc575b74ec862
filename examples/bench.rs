//! Benchmark: signing through the module versus a direct keep-alive HTTP call to the same TSB
//! (the in-process simulator), measured side by side in one run. Prints numbers and ratios;
//! absolute times on shared machines are noise, the ratios are the result.
//!
//! `cargo run --release --example bench [-- SECONDS_PER_CASE]` (default 3 s per case).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};

fn module_copy(dir: &Path, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let so = profile.join("libtsb_pkcs11.so");
    let copy = dir.join(format!("libtsb_pkcs11-{name}.so"));
    std::fs::copy(&so, &copy).expect("build the module first: cargo build --release");
    copy
}

/// Runs `work` on `threads` threads for `secs`; returns operations per second.
fn run(threads: usize, secs: f64, work: impl Fn() + Send + Sync + 'static) -> f64 {
    let work = Arc::new(work);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (work, stop, count) = (work.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    work();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let sim = tsb_sim::Simulator::start(tsb_sim::SimConfig::demo()).expect("simulator");
    let url = sim.url();
    let dir = tempfile::tempdir().unwrap();
    let message = b"benchmark payload: a short message to sign".to_vec();

    // Direct: one keep-alive ureq agent per thread, the same JSON request the module sends.
    let body = serde_json::to_string(&serde_json::json!({
        "signRequest": {
            "payload": base64::engine::general_purpose::STANDARD.encode(&message),
            "payloadType": "UNSPECIFIED",
            "signKeyName": "ec-p256",
            "signatureAlgorithm": "SHA256_WITH_ECDSA"
        },
        "requestSignature": null
    }))
    .expect("JSON");
    let endpoint = format!("{url}/v1/synchronousSign");
    let direct = |threads| {
        let (endpoint, body) = (endpoint.clone(), body.clone());
        let agents: Arc<Vec<ureq::Agent>> = Arc::new((0..64).map(|_| ureq::Agent::new()).collect());
        let next = Arc::new(AtomicU64::new(0));
        thread_local!(static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) });
        run(threads, secs, move || {
            let i = SLOT.with(|s| {
                s.get().unwrap_or_else(|| {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize % 64;
                    s.set(Some(i));
                    i
                })
            });
            let r = agents[i]
                .post(&endpoint)
                .set("Content-Type", "application/json")
                .send_string(&body)
                .expect("direct sign");
            assert_eq!(r.status(), 200);
            let _ = r.into_string();
        })
    };

    // Through the module: C_SignInit + C_Sign (size query + sign), DER -> r||s, local verification.
    let module = |verify: bool, name: &str| {
        let config = dir.path().join(format!("{name}.json"));
        std::fs::write(
            &config,
            serde_json::to_vec(&serde_json::json!({
                "restApi": url, "pkcs11": { "verifySignatures": verify }
            }))
            .unwrap(),
        )
        .unwrap();
        std::env::set_var("TSB_PKCS11_CONFIG", &config);
        let p = Pkcs11::new(module_copy(dir.path(), name)).unwrap();
        p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        p
    };
    let through = |p: &Pkcs11, threads| {
        let slot = p.get_slots_with_token().unwrap()[0];
        let sessions: Arc<Vec<_>> = Arc::new(
            (0..threads)
                .map(|_| {
                    let s = p.open_ro_session(slot).unwrap();
                    let key = s
                        .find_objects(&[
                            Attribute::Class(ObjectClass::PRIVATE_KEY),
                            Attribute::Label(b"ec-p256".to_vec()),
                        ])
                        .unwrap()[0];
                    (parking_lot::Mutex::new(s), key)
                })
                .collect(),
        );
        let next = Arc::new(AtomicU64::new(0));
        let message = message.clone();
        thread_local!(static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) });
        run(threads, secs, move || {
            let i = SLOT.with(|s| {
                s.get().unwrap_or_else(|| {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    s.set(Some(i));
                    i
                })
            });
            let (s, key) = &sessions[i];
            let sig = s
                .lock()
                .sign(&Mechanism::EcdsaSha256, *key, &message)
                .expect("sign");
            assert_eq!(sig.len(), 64);
        })
    };
    let verified = module(true, "verify");
    let unverified = module(false, "noverify");

    println!("ECDSA P-256 signatures per second against the in-process TSB simulator ({secs} s per case)");
    println!(
        "{:<10} {:>14} {:>16} {:>18} {:>10} {:>10}",
        "threads", "direct HTTP", "module", "module (no check)", "ratio", "ratio nc"
    );
    for threads in [1usize, 4, 8] {
        let d = direct(threads);
        let m = through(&verified, threads);
        let n = through(&unverified, threads);
        println!(
            "{threads:<10} {d:>14.0} {m:>16.0} {n:>18.0} {:>10.2} {:>10.2}",
            m / d,
            n / d
        );
    }
    println!("ratio = module / direct (1.00 = no overhead); 'no check' = verifySignatures false");
}
