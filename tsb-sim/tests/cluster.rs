//! Cluster mode: several listeners over one simulator state, with per-listener faults.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tsb_sim::{Curve, KeySpec, NodeFault, PolicySpec, SimConfig, Simulator};

const BIN: &str = env!("CARGO_BIN_EXE_tsb-sim");

fn config() -> SimConfig {
    SimConfig {
        time_scale: 0.01,
        approved_execution_delay_ms: 20,
        keys: vec![
            KeySpec::ec("ec", Curve::P256),
            KeySpec::ed25519("ska").with_policy(PolicySpec::single_group(1, &["alice"])),
        ],
        ..SimConfig::default()
    }
}

fn cluster(n: usize) -> (Simulator, Vec<Http>) {
    let sim = Simulator::start_cluster(config(), n).expect("cluster starts");
    let https = sim.urls().iter().map(|u| Http::new(u)).collect();
    (sim, https)
}

/// A fresh client (no pooled connection) to `url`: its error, if the request fails.
fn fresh_get(url: &str, path: &str) -> Result<u16, String> {
    Http::new(url)
        .try_send("GET", path, None)
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

#[test]
fn listeners_share_keys_and_requests() {
    let (sim, http) = cluster(3);
    let urls = sim.urls();
    assert_eq!(urls.len(), 3);
    assert_eq!(urls[0], sim.url());
    assert!(urls[0] != urls[1] && urls[1] != urls[2] && urls[0] != urls[2]);

    // A key created through one node is there on the others.
    let r = http[1].post("/v1/key", &json!({"label": "made-on-1", "algorithm": "ED"}));
    assert_eq!(r.status, 201);
    let spki = unb64(
        http[2].get("/v1/key/made-on-1/attributes").json()["json"]["publicKey"]
            .as_str()
            .unwrap(),
    );
    let sig = sign_sync(&http[0], "made-on-1", "EDDSA", b"m");
    assert!(verify(&spki, "EDDSA", b"m", &sig, false));

    // A sign request filed on node 0 is seen, approved and collected on node 2.
    let id = sign_async(&http[0], &sign_body("ska", "EDDSA", b"x"));
    assert_eq!(
        http[2].get(&format!("/v1/request/{id}")).json()["status"],
        "PENDING"
    );
    sim.approve(&id, "alice").unwrap();
    let v = wait_terminal(&http[2], &id, Duration::from_secs(10));
    assert_eq!(v["status"], "EXECUTED");
    let spki = sim.public_key_der("ska").unwrap();
    assert!(verify(
        &spki,
        "EDDSA",
        b"x",
        &unb64(v["result"].as_str().unwrap()),
        false
    ));

    let counts: Vec<u64> = (0..3).map(|i| sim.listener_requests(i)).collect();
    assert_eq!(&counts[..2], [2, 1], "per listener: {counts:?}");
    assert!(
        counts[2] >= 3,
        "attributes, request status (polled): {counts:?}"
    );
    let infos = sim.listeners();
    assert_eq!(infos.iter().map(|l| l.connections).sum::<u64>(), 3);
    assert_eq!(sim.connections_accepted(), 3);
    sim.reset_counters();
    assert!(sim
        .listeners()
        .iter()
        .all(|l| l.requests == 0 && l.connections == 0));
}

#[test]
fn a_node_goes_down_and_comes_back() {
    let (sim, http) = cluster(2);
    let url0 = sim.urls()[0].clone();
    assert_eq!(http[0].get("/v1/versionInfo").status, 200);

    sim.set_listener_fault(0, NodeFault::Down).unwrap();
    let e = fresh_get(&url0, "/v1/versionInfo").expect_err("node 0 is down");
    assert!(e.to_lowercase().contains("refused"), "{e}");
    // Its open keep-alive connection was closed too.
    assert!(http[0].try_send("GET", "/v1/versionInfo", None).is_err());
    // The other node serves the same keys meanwhile.
    let sig = sign_sync(&http[1], "ec", "SHA256_WITH_ECDSA", b"m");
    assert!(verify(
        &sim.public_key_der("ec").unwrap(),
        "SHA256_WITH_ECDSA",
        b"m",
        &sig,
        false
    ));
    assert_eq!(sim.listeners()[0].fault, NodeFault::Down);

    sim.set_listener_fault(0, NodeFault::None).unwrap();
    assert_eq!(sim.urls()[0], url0, "same port after the revival");
    assert_eq!(fresh_get(&url0, "/v1/versionInfo"), Ok(200));
    sign_sync(&Http::new(&url0), "ec", "SHA256_WITH_ECDSA", b"again");

    // Down and up again in quick succession.
    for _ in 0..3 {
        sim.set_listener_fault(0, NodeFault::Down).unwrap();
        assert!(fresh_get(&url0, "/v1/versionInfo").is_err());
        sim.set_listener_fault(0, NodeFault::None).unwrap();
        assert_eq!(fresh_get(&url0, "/v1/versionInfo"), Ok(200));
    }
}

#[test]
fn hang_unavailable_and_slow_nodes() {
    let (sim, http) = cluster(3);
    // Unavailable: 503 with a TSB error body, nothing processed.
    sim.set_listener_fault(1, NodeFault::Unavailable).unwrap();
    let r = http[1].post(
        "/v1/synchronousSign",
        &sign_body("ec", "SHA256_WITH_ECDSA", b"m"),
    );
    assert_eq!((r.status, r.error_code()), (503, 701));
    assert!(sim.requests().is_empty());
    assert_eq!(http[0].get("/v1/versionInfo").status, 200);

    // Slow: every request waits at least the latency.
    sim.set_listener_fault(1, NodeFault::Slow { latency_ms: 300 })
        .unwrap();
    let t = Instant::now();
    assert_eq!(http[1].get("/v1/versionInfo").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Hang: the request is received and never answered; clearing the fault closes it.
    sim.set_listener_fault(2, NodeFault::Hang).unwrap();
    let before = sim.listener_requests(2);
    let url2 = sim.urls()[2].clone();
    let waiter = std::thread::spawn(move || fresh_get(&url2, "/v1/versionInfo"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.listener_requests(2) == before {
        assert!(Instant::now() < deadline, "the request reached node 2");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(http[0].get("/v1/versionInfo").status, 200, "others serve");
    // The control interface of the hanging node still answers.
    assert_eq!(http[2].get("/sim/listeners").status, 200);
    sim.set_listener_fault(2, NodeFault::None).unwrap();
    let hung = waiter.join().unwrap();
    assert!(hung.is_err(), "never answered: {hung:?}");
    assert_eq!(fresh_get(&sim.urls()[2], "/v1/versionInfo"), Ok(200));
}

#[test]
fn control_interface_and_cli() {
    let (sim, http) = cluster(2);
    let r = http[0].post(
        "/sim/listeners/1",
        &json!({"fault": "slow", "latencyMs": 5}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["fault"], "slow");
    assert_eq!(sim.listeners()[1].fault, NodeFault::Slow { latency_ms: 5 });
    let list = http[0].get("/sim/listeners").json();
    assert_eq!(list[1]["latencyMs"], 5);
    assert_eq!(list[1]["url"], sim.urls()[1].as_str());
    assert_eq!(
        http[0]
            .post("/sim/listeners/1", &json!({"fault": "sideways"}))
            .status,
        400
    );
    assert_eq!(
        http[0]
            .post("/sim/listeners/7", &json!({"fault": "down"}))
            .status,
        404
    );

    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("TSB_SIM_URL", sim.url())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = run(&["listener", "1", "down"]);
    assert!(out.contains("down"), "{out}");
    assert!(fresh_get(&sim.urls()[1], "/v1/versionInfo").is_err());
    run(&["listener", "1", "none"]);
    assert_eq!(fresh_get(&sim.urls()[1], "/v1/versionInfo"), Ok(200));
    let out = run(&["listeners"]);
    assert!(
        out.contains(&sim.urls()[1]) && out.contains("none"),
        "{out}"
    );
}

#[test]
fn binary_listens_on_every_listen_option() {
    let config = std::env::temp_dir().join(format!("tsb-sim-cluster-{}.toml", std::process::id()));
    std::fs::write(&config, "").unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut urls = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        urls.push(
            line.trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("{line:?}"))
                .to_string(),
        );
    }
    assert_ne!(urls[0], urls[1]);
    let r = Http::new(&urls[0]).post("/v1/key", &json!({"label": "shared", "algorithm": "ED"}));
    assert_eq!(r.status, 201);
    assert_eq!(
        Http::new(&urls[1]).get("/v1/key/shared/attributes").status,
        200
    );
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(&config).unwrap();
}
