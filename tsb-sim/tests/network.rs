//! Network emulation (`rttMs`) and the connection counter. Only lower bounds of durations are
//! asserted (a sleep never ends early), so a slow machine cannot make these tests fail.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tsb_sim::{KeySpec, SimConfig, TlsConfig};

const RTT: Duration = Duration::from_millis(150);

fn config() -> SimConfig {
    SimConfig {
        rtt_ms: RTT.as_millis() as u64,
        keys: vec![KeySpec::ed25519("ed")],
        ..SimConfig::default()
    }
}

fn timed(http: &Http, path: &str) -> Duration {
    let t = Instant::now();
    assert_eq!(http.get(path).status, 200);
    t.elapsed()
}

#[test]
fn new_connections_cost_two_round_trips_reused_ones_one() {
    let sim = start(config());
    let http = Http::new(&sim.url());
    assert_eq!(sim.connections_accepted(), 0);
    let first = timed(&http, "/v1/versionInfo");
    assert!(first >= 2 * RTT, "new connection: {first:?}");
    let second = timed(&http, "/v1/versionInfo");
    assert!(second >= RTT, "kept-alive connection: {second:?}");
    // A signature with a body is one flight too.
    let t = Instant::now();
    sign_sync(&http, "ed", "EDDSA", b"m");
    assert!(t.elapsed() >= RTT);
    assert_eq!(
        sim.connections_accepted(),
        1,
        "ureq kept the connection alive"
    );
    // Another client opens another connection.
    let other = Http::new(&sim.url());
    assert!(timed(&other, "/v1/key") >= 2 * RTT);
    assert_eq!(sim.connections_accepted(), 2);
    sim.reset_counters();
    assert_eq!(sim.connections_accepted(), 0);
}

#[test]
fn tls_handshakes_cost_their_round_trips() {
    let mut cfg = config();
    cfg.tls = Some(TlsConfig::default());
    let sim = start(cfg);
    let pem = std::fs::read(sim.ca_cert_pem_path().unwrap()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    for (version, round_trips) in [
        (&rustls::version::TLS13, 3u32),
        (&rustls::version::TLS12, 4u32),
    ] {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .tls_config(Arc::new(config))
            .build();
        let http = Http::with_agent(agent, &sim.url());
        let first = timed(&http, "/v1/versionInfo");
        assert!(first >= round_trips * RTT, "{version:?}: {first:?}");
        assert!(timed(&http, "/v1/versionInfo") >= RTT);
    }
    assert_eq!(sim.connections_accepted(), 2);
}

#[test]
fn rtt_changes_at_run_time() {
    let sim = start(SimConfig {
        keys: vec![],
        ..SimConfig::default()
    });
    let http = Http::new(&sim.url());
    assert_eq!(sim.rtt(), Duration::ZERO);
    http.get("/v1/versionInfo");
    sim.set_rtt(RTT);
    assert!(
        timed(&http, "/v1/versionInfo") >= RTT,
        "applies to open connections"
    );
    // Over the control interface.
    let v = http.get("/sim/network").json();
    assert_eq!(v, json!({"rttMs": 150, "connectionsAccepted": 1}));
    let v = http.post("/sim/network", &json!({"rttMs": 300})).json();
    assert_eq!(v["rttMs"], 300);
    assert_eq!(sim.rtt(), Duration::from_millis(300));
    assert_eq!(http.post("/sim/network", &json!({"rtt": 1})).status, 400);
    // The CLI shows and changes it.
    let out = Command::new(env!("CARGO_BIN_EXE_tsb-sim"))
        .args(["network", "--rtt-ms", "0", "--url", &sim.url()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rtt 0 ms"),
        "{out:?}"
    );
    assert_eq!(sim.rtt(), Duration::ZERO);
    let out = Command::new(env!("CARGO_BIN_EXE_tsb-sim"))
        .args(["counters", "--url", &sim.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.ends_with("connections accepted"))
        .unwrap_or_else(|| panic!("{text}"));
    let n: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
    // This test's client, `network`, and the two calls of `counters` (one connection each).
    assert_eq!(n, 4, "{text}");
    assert_eq!(n, sim.connections_accepted());
}
