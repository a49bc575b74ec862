//! Throughput of synchronous P-256 signing (`POST /v1/synchronousSign`, SHA256_WITH_ECDSA) on
//! loopback, with 1 and with 8 concurrent clients (one keep-alive ureq agent each).
//!
//! ```text
//! cargo run --release -p tsb-sim --example throughput [-- --seconds 5 --url http://127.0.0.1:8080]
//! ```
//! Without `--url` an in-process simulator with one `ec-p256` key is started.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tsb_sim::{Curve, KeySpec, SimConfig, Simulator};

fn run(url: &str, clients: usize, seconds: f64) -> (f64, u64) {
    let body = serde_json::json!({
        "signRequest": {
            "payload": base64::engine::general_purpose::STANDARD.encode(b"throughput test payload"),
            "payloadType": "UNSPECIFIED",
            "signKeyName": "ec-p256",
            "signatureAlgorithm": "SHA256_WITH_ECDSA",
        },
        "requestSignature": null,
    })
    .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let endpoint = format!("{url}/v1/synchronousSign");
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done, errors, body, endpoint) = (
                stop.clone(),
                done.clone(),
                errors.clone(),
                body.clone(),
                endpoint.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .max_idle_connections_per_host(1)
                    .build();
                while !stop.load(Ordering::Relaxed) {
                    let ok = agent
                        .post(&endpoint)
                        .set("Content-Type", "application/json")
                        .send_string(&body)
                        .ok()
                        .and_then(|r| r.into_string().ok())
                        .is_some_and(|s| s.contains("\"signature\""));
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Warm-up, then measure.
    std::thread::sleep(Duration::from_millis(500));
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let count = done.load(Ordering::Relaxed) - start_count;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    (count as f64 / elapsed, errors.load(Ordering::Relaxed))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let seconds: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let mut _sim = None;
    let url = match arg("--url") {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let mut cfg = SimConfig::default();
            cfg.keys.push(KeySpec::ec("ec-p256", Curve::P256));
            let sim = Simulator::start(cfg).expect("simulator");
            let url = sim.url();
            _sim = Some(sim);
            url
        }
    };
    println!("synchronous P-256 signing against {url} ({seconds} s per run)");
    for clients in [1, 8] {
        let (rate, errors) = run(&url, clients, seconds);
        println!("{clients} client(s): {rate:.0} requests/s ({errors} errors)");
    }
    if let Some(sim) = &_sim {
        println!(
            "requests recorded by the simulator: {}",
            sim.counter("POST /v1/synchronousSign")
        );
    }
}
