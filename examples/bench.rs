//! Benchmark: signing through the module (loaded with `dlopen`) side by side with the floor, a
//! direct keep-alive HTTP client on the same simulator with the same key and payload, in one
//! run. Absolute times on shared machines are noise; the ratios are the result.
//!
//! ```text
//! cargo build --release -p tsb-pkcs11 && cargo run --release -p tsb-pkcs11-core --example bench -- [options]
//!   --secs S            measured seconds per case (default 1.0; warm-up a quarter of it)
//!   --threads 1,4,16,64 thread counts (one session each)
//!   --rtt 0,10          emulated round trips in ms (a delaying loopback proxy; 0 = direct)
//!   --transport http,tls
//!   --algs ec,ed,rsa    P-256 ECDSA, Ed25519, RSA-2048 PSS
//!   --keys 10,1000,5000,10000   key counts for the start-up and listing cases (empty: skip)
//!   --memory 1000,100000   signatures after which resident memory is read (empty: skip)
//!   --failover 8        threads of the failover case (2 nodes, node 1 killed; empty: skip;
//!                       skipped with --calls)
//!   --json FILE         also write every figure as JSON
//!   --no-verify         load the module with `verifySignatures: false` (to see what the local
//!                       check of every signature costs)
//!   --calls N           instead of timing, make exactly N signatures per thread and case, no
//!                       warm-up (for instruction counts under callgrind, see the docs)
//! ```
//!
//! The simulator runs in a child process (this program, `--sim-child`), so the CPU time and
//! resident memory measured here are the module's and the benchmark's own.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use base64::Engine;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass};
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Options

struct Opts {
    secs: f64,
    threads: Vec<usize>,
    rtts: Vec<u64>,
    transports: Vec<bool>,
    algs: Vec<Alg>,
    keys: Vec<usize>,
    memory: Vec<usize>,
    failover: Vec<usize>,
    json: Option<PathBuf>,
    verify: bool,
    calls: Option<u64>,
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn opts() -> Opts {
    let mut o = Opts {
        secs: 1.0,
        threads: vec![1, 4, 16, 64],
        rtts: vec![0, 10],
        transports: vec![false, true],
        algs: vec![Alg::Ec, Alg::Ed, Alg::Rsa],
        keys: vec![10, 1000, 5000, 10000],
        memory: vec![1000, 100_000],
        failover: vec![8],
        json: None,
        verify: true,
        calls: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--secs" => o.secs = v.parse().expect("--secs"),
            "--threads" => o.threads = list(&v),
            "--rtt" => o.rtts = list(&v),
            "--transport" => o.transports = v.split(',').map(|t| t.trim() == "tls").collect(),
            "--algs" => o.algs = v.split(',').filter_map(Alg::parse).collect(),
            "--keys" => o.keys = list(&v),
            "--memory" => o.memory = list(&v),
            "--failover" => o.failover = list(&v),
            "--json" => o.json = Some(v.into()),
            "--no-verify" => {
                o.verify = false;
                i += 1;
                continue;
            }
            "--calls" => o.calls = Some(v.parse().expect("--calls")),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Alg {
    Ec,
    Ed,
    Rsa,
}

impl Alg {
    fn parse(s: &str) -> Option<Alg> {
        match s.trim() {
            "ec" => Some(Alg::Ec),
            "ed" => Some(Alg::Ed),
            "rsa" => Some(Alg::Rsa),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Alg::Ec => "P-256 ECDSA",
            Alg::Ed => "Ed25519",
            Alg::Rsa => "RSA-2048 PSS",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Alg::Ec => "ec-p256",
            Alg::Ed => "ed25519",
            Alg::Rsa => "rsa-2048",
        }
    }
    /// The TSB algorithm the module sends for the mechanism below.
    fn tsb_algorithm(self) -> &'static str {
        match self {
            Alg::Ec => "SHA256_WITH_ECDSA",
            Alg::Ed => "EDDSA",
            Alg::Rsa => "SHA256_WITH_RSA_PSS",
        }
    }
    fn mechanism(self) -> Mechanism<'static> {
        match self {
            Alg::Ec => Mechanism::EcdsaSha256,
            Alg::Ed => Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
            )),
            Alg::Rsa => Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                hash_alg: MechanismType::SHA256,
                mgf: PkcsMgfType::MGF1_SHA256,
                s_len: 32.into(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The simulator in a child process

struct Sim {
    child: Child,
    url: String,
    /// Every listener's URL (cluster mode), the first is `url`.
    urls: Vec<String>,
    control: String,
    ca: Option<PathBuf>,
}

impl Sim {
    fn start(dir: &Path, tls: bool, extra_keys: usize) -> Sim {
        Sim::cluster(dir, tls, extra_keys, 1)
    }

    /// A simulator with `listeners` listeners ("TSB nodes") over one state.
    fn cluster(dir: &Path, tls: bool, extra_keys: usize, listeners: usize) -> Sim {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--sim-child",
                dir.to_str().unwrap(),
                if tls { "1" } else { "0" },
                &extra_keys.to_string(),
                &listeners.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("simulator child");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let urls: Vec<String> = lines
            .next()
            .unwrap()
            .unwrap()
            .split(' ')
            .map(str::to_string)
            .collect();
        let control = lines.next().unwrap().unwrap();
        Sim {
            child,
            url: urls[0].clone(),
            urls,
            control,
            ca: tls.then(|| dir.join("ca.pem")),
        }
    }

    fn requests(&self) -> u64 {
        let v: BTreeMap<String, u64> = ureq::get(&format!("{}/sim/counters", self.control))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        v.iter()
            .filter(|(k, _)| k.contains("/v1/"))
            .map(|(_, n)| n)
            .sum()
    }

    fn reset_counters(&self) {
        ureq::delete(&format!("{}/sim/counters", self.control))
            .call()
            .unwrap();
    }

    /// Sets the fault of listener `index` (`{"fault": "down"}`, ...); returns once in effect.
    fn set_listener(&self, index: usize, fault: Value) {
        ureq::post(&format!("{}/sim/listeners/{index}", self.control))
            .send_json(fault)
            .unwrap();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn sim_child(dir: &str, tls: bool, extra_keys: usize, listeners: usize) {
    let mut cfg = tsb_sim::SimConfig::fast_test();
    cfg.control_listen = Some("127.0.0.1:0".into());
    for i in 0..extra_keys {
        cfg.keys
            .push(tsb_sim::KeySpec::ed25519(&format!("k-{i:05}")));
    }
    if tls {
        cfg.tls = Some(tsb_sim::TlsConfig {
            ca_cert_path: Some(Path::new(dir).join("ca.pem")),
            ..tsb_sim::TlsConfig::default()
        });
    }
    let sim = tsb_sim::Simulator::start_cluster(cfg, listeners).expect("simulator");
    let mut out = std::io::stdout();
    writeln!(out, "{}", sim.urls().join(" ")).unwrap();
    writeln!(out, "{}", sim.control_url().unwrap()).unwrap();
    out.flush().unwrap();
    // Runs until the parent closes stdin (or dies).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

// ---------------------------------------------------------------------------------------
// A loopback proxy that delays each direction by half the round trip and counts connections

struct Proxy {
    port: u16,
    accepted: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: String, rtt: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::Relaxed);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    rtt / 2,
                );
                pump(server, client, rtt / 2);
            }
        });
        Proxy { port, accepted }
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(std::net::Shutdown::Read);
    });
    std::thread::spawn(move || {
        for (at, chunk) in rx {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

// ---------------------------------------------------------------------------------------
// Measurement

#[derive(Clone, Debug, Default)]
struct Stats {
    p50_us: f64,
    p99_us: f64,
    per_sec: f64,
    ops: u64,
    /// CPU time of this process (the client, and the proxy when there is one) per call, µs.
    cpu_us: f64,
}

/// The measured time of a case is cut into this many slices, taken by the floor and the module
/// in turn.
const SLICES: u32 = 4;

type Work = Arc<dyn Fn(usize) + Send + Sync>;

/// Runs the floor `d` and the module `m` on `threads` threads each, in turn: a warm-up of
/// `secs / 4` each, then [`SLICES`] slices of `secs / SLICES` each, so that a change of the
/// machine's load during a case falls on both alike. With `calls`, exactly that many calls per
/// thread for each, all measured, no warm-up. `conns` reads the proxy's connection counter;
/// the connections each side opened (warm-up included) come back with its figures.
fn run_pair(
    threads: usize,
    secs: f64,
    calls: Option<u64>,
    d: Work,
    m: Work,
    conns: &dyn Fn() -> Option<u64>,
) -> [(Stats, Option<u64>); 2] {
    let works = [d, m];
    let mut lat: [Vec<u32>; 2] = Default::default();
    let mut ops = [0u64; 2];
    let mut opened: [Option<u64>; 2] = [conns().map(|_| 0); 2];
    let mut measured = [Duration::ZERO; 2];
    let mut cpu_used = [Duration::ZERO; 2];
    let mut window = |side: usize, warm: Duration, measure: Duration| {
        let c0 = conns();
        let started = Instant::now();
        let cpu0 = cpu();
        let (l, n) = match calls {
            Some(n) => run_calls(threads, n, works[side].clone()),
            None => run_window(threads, warm, measure, works[side].clone()),
        };
        measured[side] += if calls.is_some() {
            started.elapsed()
        } else {
            measure
        };
        cpu_used[side] += cpu() - cpu0;
        lat[side].extend(l);
        ops[side] += n;
        if let (Some(a), Some(b), Some(o)) = (c0, conns(), opened[side].as_mut()) {
            *o += b - a;
        }
    };
    if calls.is_some() {
        window(0, Duration::ZERO, Duration::ZERO);
        window(1, Duration::ZERO, Duration::ZERO);
    } else {
        let warm = Duration::from_secs_f64(secs / 4.0);
        let slice = Duration::from_secs_f64(secs / SLICES as f64);
        for side in 0..2 {
            window(side, warm, Duration::ZERO);
        }
        for _ in 0..SLICES {
            for side in 0..2 {
                window(side, Duration::ZERO, slice);
            }
        }
    }
    let [ld, lm] = lat;
    let with_cpu = |mut st: Stats, side: usize| {
        st.cpu_us = cpu_used[side].as_secs_f64() * 1e6 / ops[side].max(1) as f64;
        st
    };
    [
        (with_cpu(stats(ld, measured[0], ops[0]), 0), opened[0]),
        (with_cpu(stats(lm, measured[1], ops[1]), 1), opened[1]),
    ]
}

/// Runs `work(thread)` on `threads` threads: a warm-up of `warm`, then `measure` measured.
/// Returns the latencies (µs) of the calls started in the measured time and the number of
/// calls made.
fn run_window(threads: usize, warm: Duration, measure: Duration, work: Work) -> (Vec<u32>, u64) {
    let start = Instant::now() + Duration::from_millis(20);
    let (t0, t1) = (start + warm, start + warm + measure);
    let total = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (work, total) = (work.clone(), total.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(4096);
                while Instant::now() < start {
                    std::thread::sleep(Duration::from_millis(1));
                }
                loop {
                    let s = Instant::now();
                    if s >= t1 {
                        break;
                    }
                    work(i);
                    total.fetch_add(1, Ordering::Relaxed);
                    if s >= t0 {
                        lat.push(s.elapsed().as_micros() as u32);
                    }
                }
                lat
            })
        })
        .collect();
    let lat: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    (lat, total.load(Ordering::Relaxed))
}

/// `n` calls of `work(thread)` on each of `threads` threads.
fn run_calls(threads: usize, n: u64, work: Work) -> (Vec<u32>, u64) {
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let work = work.clone();
            std::thread::spawn(move || {
                (0..n)
                    .map(|_| {
                        let s = Instant::now();
                        work(i);
                        s.elapsed().as_micros() as u32
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let lat: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let ops = lat.len() as u64;
    (lat, ops)
}

fn stats(mut lat: Vec<u32>, measure: Duration, ops: u64) -> Stats {
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    Stats {
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        per_sec: lat.len() as f64 / measure.as_secs_f64(),
        ops,
        cpu_us: 0.0,
    }
}

fn tls_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

const MESSAGE: &[u8] = b"benchmark payload: a short message to sign";

/// The floor: one keep-alive ureq agent per thread posting the module's JSON request; the
/// signature is decoded from the answer.
fn direct(url: &str, ca: Option<&Path>, alg: Alg, threads: usize) -> Work {
    let body = json!({
        "signRequest": {
            "payload": base64::engine::general_purpose::STANDARD.encode(MESSAGE),
            "payloadType": "UNSPECIFIED",
            "signKeyName": alg.label(),
            "signatureAlgorithm": alg.tsb_algorithm()
        }
    })
    .to_string();
    let endpoint = format!("{url}/v1/synchronousSign");
    let agents: Vec<ureq::Agent> = (0..threads)
        .map(|_| {
            let mut b = ureq::AgentBuilder::new().max_idle_connections_per_host(1);
            if let Some(ca) = ca {
                b = b.tls_config(tls_config(ca));
            }
            b.build()
        })
        .collect();
    Arc::new(move |i| {
        let r = agents[i]
            .post(&endpoint)
            .set("Content-Type", "application/json")
            .send_string(&body)
            .expect("direct sign");
        let v: Value = r.into_json().unwrap();
        let sig = base64::engine::general_purpose::STANDARD
            .decode(v["signature"].as_str().unwrap())
            .unwrap();
        assert!(!sig.is_empty());
    })
}

fn module_copy(dir: &Path, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let so = profile.join("libtsb_pkcs11.so");
    let copy = dir.join(format!("libtsb_pkcs11-{name}.so"));
    std::fs::copy(&so, &copy).expect("build the module first: cargo build --release");
    copy
}

/// The file `TSB_PKCS11_CONFIG` names (in the bench's folder; set once in `main`).
const CONFIG: &str = "config.json";

/// Makes `config` the configuration the next `C_Initialize` reads: copied over the file
/// `TSB_PKCS11_CONFIG` names (written beside it, then renamed).
fn use_config(dir: &Path, config: &Path) {
    let tmp = dir.join("config.json.new");
    std::fs::copy(config, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(CONFIG)).unwrap();
}

fn load_module(dir: &Path, name: &str, url: &str, ca: Option<&Path>, verify: bool) -> Pkcs11 {
    let config = dir.join(format!("{name}.json"));
    let mut c = json!({ "restApi": url,
                        "pkcs11": { "requestTimeoutMs": 30000, "verifySignatures": verify } });
    if let Some(ca) = ca {
        c["caPath"] = json!(ca);
    }
    std::fs::write(&config, serde_json::to_vec(&c).unwrap()).unwrap();
    use_config(dir, &config);
    let p = Pkcs11::new(module_copy(dir, name)).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    p
}

/// One session per thread, each with the handle of the private key labelled `label`.
fn sessions_with_key(
    p: &Pkcs11,
    label: &str,
    threads: usize,
) -> Vec<(cryptoki::session::Session, cryptoki::object::ObjectHandle)> {
    let slot = p.get_slots_with_token().unwrap()[0];
    (0..threads)
        .map(|_| {
            let s = p.open_ro_session(slot).unwrap();
            let key = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .unwrap()[0];
            (s, key)
        })
        .collect()
}

/// Through the module: one session per thread, `C_SignInit` + `C_Sign` (with the size query).
fn through(p: &Pkcs11, alg: Alg, threads: usize) -> Work {
    let sessions: Vec<_> = sessions_with_key(p, alg.label(), threads)
        .into_iter()
        .map(|(s, key)| (parking_lot::Mutex::new(s), key))
        .collect();
    Arc::new(move |i| {
        let (s, key) = &sessions[i];
        let sig = s
            .lock()
            .sign(&alg.mechanism(), *key, MESSAGE)
            .expect("sign");
        assert!(!sig.is_empty());
    })
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) of this process.
fn cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

// ---------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--sim-child") {
        let listeners = args.get(5).and_then(|n| n.parse().ok()).unwrap_or(1);
        sim_child(
            &args[2],
            args[3] == "1",
            args[4].parse().unwrap(),
            listeners,
        );
        return;
    }
    let o = opts();
    let dir = tempfile::tempdir().unwrap();
    // The module's configuration is always this file, which `use_config` replaces before each
    // C_Initialize. Set here, before the process has a second thread: setting the environment
    // while other threads may read it is undefined behaviour.
    std::env::set_var("TSB_PKCS11_CONFIG", dir.path().join(CONFIG));
    let mut report = json!({
        "machine": machine(),
        "secsPerCase": o.secs,
        "verifySignatures": o.verify,
        "signing": [],
    });
    println!("machine: {}", report["machine"].as_str().unwrap());
    println!(
        "signing: direct keep-alive HTTP client (floor) vs the module through dlopen; {}; \
         verifySignatures {}",
        match o.calls {
            Some(n) => format!("{n} calls per thread and case"),
            None => format!("{} s per case", o.secs),
        },
        o.verify
    );
    println!(
        "{:<13} {:<5} {:>4} {:>3} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>5} {:>5} | {:>7} {:>7} | {:>6} {:>6}",
        "algorithm", "tls", "rtt", "thr", "d p50", "d p99", "d sig/s", "m p50", "m p99", "m sig/s",
        "p50 x", "tput x", "d c/1k", "m c/1k", "d cpu", "m cpu"
    );
    for &tls in &o.transports {
        let sim_dir = dir.path().join(if tls { "sim-tls" } else { "sim" });
        std::fs::create_dir_all(&sim_dir).unwrap();
        let sim = Sim::start(&sim_dir, tls, 0);
        for &rtt in &o.rtts {
            let proxy = (rtt > 0).then(|| {
                let upstream = sim.url.split("://").nth(1).unwrap().to_string();
                Proxy::start(upstream, Duration::from_millis(rtt))
            });
            let url = match &proxy {
                Some(p) => format!(
                    "{}://127.0.0.1:{}",
                    if tls { "https" } else { "http" },
                    p.port
                ),
                None => sim.url.clone(),
            };
            let name = format!("{}-{rtt}", if tls { "tls" } else { "http" });
            let p = load_module(dir.path(), &name, &url, sim.ca.as_deref(), o.verify);
            for &alg in &o.algs {
                for &threads in &o.threads {
                    let conns = || proxy.as_ref().map(|p| p.accepted.load(Ordering::Relaxed));
                    let [(d, d_opened), (m, m_opened)] = run_pair(
                        threads,
                        o.secs,
                        o.calls,
                        direct(&url, sim.ca.as_deref(), alg, threads),
                        through(&p, alg, threads),
                        &conns,
                    );
                    let per_k = |opened: Option<u64>, ops: u64| {
                        opened.map(|n| n as f64 * 1000.0 / ops.max(1) as f64)
                    };
                    let (dc, mc) = (per_k(d_opened, d.ops), per_k(m_opened, m.ops));
                    let show = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.2}"));
                    println!(
                        "{:<13} {:<5} {:>4} {:>3} | {:>8.0} {:>8.0} {:>8.0} | {:>8.0} {:>8.0} {:>8.0} | {:>5.2} {:>5.2} | {:>7} {:>7} | {:>6.0} {:>6.0}",
                        alg.name(), tls, rtt, threads, d.p50_us, d.p99_us, d.per_sec,
                        m.p50_us, m.p99_us, m.per_sec, m.p50_us / d.p50_us, m.per_sec / d.per_sec,
                        show(dc), show(mc), d.cpu_us, m.cpu_us
                    );
                    report["signing"].as_array_mut().unwrap().push(json!({
                        "algorithm": alg.name(), "tls": tls, "rttMs": rtt, "threads": threads,
                        "direct": {"p50Us": d.p50_us, "p99Us": d.p99_us, "perSec": d.per_sec,
                                   "ops": d.ops, "connectionsPer1000": dc, "cpuUsPerSig": d.cpu_us},
                        "module": {"p50Us": m.p50_us, "p99Us": m.p99_us, "perSec": m.per_sec,
                                   "ops": m.ops, "connectionsPer1000": mc, "cpuUsPerSig": m.cpu_us,
                                   "connections": m_opened},
                        "p50Ratio": m.p50_us / d.p50_us, "throughputRatio": m.per_sec / d.per_sec,
                    }));
                }
            }
        }
    }
    if !o.keys.is_empty() {
        println!();
        println!(
            "keys (plain http, 0 ms): C_Initialize to the first signature, and a full listing"
        );
        println!(
            "{:>6} | {:>10} {:>9} | {:>10} {:>9} {:>10}",
            "keys", "first ms", "requests", "list ms", "requests", "list CPU ms"
        );
        let mut rows = Vec::new();
        for &n in &o.keys {
            let row = keys_case(dir.path(), n);
            println!(
                "{:>6} | {:>10.1} {:>9} | {:>10.1} {:>9} {:>10.1}",
                n,
                row["firstMs"].as_f64().unwrap_or(0.0),
                row["firstRequests"],
                row["listMs"].as_f64().unwrap_or(0.0),
                row["listRequests"],
                row["listCpuMs"].as_f64().unwrap_or(0.0)
            );
            rows.push(row);
        }
        report["keys"] = json!(rows);
    }
    if !o.memory.is_empty() {
        println!();
        let rows = memory_case(dir.path(), &o.memory);
        for r in &rows {
            println!(
                "resident memory after {:>7} signatures: {:>8} KiB",
                r["signatures"], r["rssKiB"]
            );
        }
        report["memory"] = json!(rows);
    }
    // Not with --calls: the instruction counts of C_Sign must be the signing cases' alone.
    if !o.failover.is_empty() && o.calls.is_none() {
        println!();
        println!(
            "failover (plain http, 0 ms; 2 nodes, failover, requestTimeoutMs {FAILOVER_TIMEOUT_MS}, \
             nodeDownBackoffMs 1000): P-256 signatures started in the second before node 1 died \
             (and ended before), in flight when it died, started in the second after, and in \
             the fourth second after"
        );
        println!(
            "{:<5} {:>3} {:<8} | {:>6} {:>8} {:>8} {:>8} {:>6}",
            "fault", "thr", "started", "sigs", "p50 ms", "p99 ms", "max ms", "errors"
        );
        let mut rows = Vec::new();
        for &threads in &o.failover {
            for fault in ["down", "hang"] {
                let row = failover_case(dir.path(), threads, fault);
                for (second, w) in [
                    ("before", &row["before"]),
                    ("at death", &row["inFlight"]),
                    ("after", &row["after"]),
                    ("4th s", &row["fourthSecondAfter"]),
                ] {
                    println!(
                        "{:<5} {:>3} {:<8} | {:>6} {:>8.1} {:>8.1} {:>8.1} {:>6}",
                        fault,
                        threads,
                        second,
                        w["signatures"].as_u64().unwrap_or(0),
                        w["p50Ms"].as_f64().unwrap_or(0.0),
                        w["p99Ms"].as_f64().unwrap_or(0.0),
                        w["maxMs"].as_f64().unwrap_or(0.0),
                        w["errors"].as_u64().unwrap_or(0)
                    );
                }
                rows.push(row);
            }
        }
        report["failover"] = json!(rows);
    }
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    }
    println!();
    println!("p50 x = module p50 / direct p50; tput x = module sig/s / direct sig/s; c/1k = connections opened per 1,000 signatures (through the proxy, rtt > 0); cpu = CPU µs of this process per signature (client, and the proxy when rtt > 0; the simulator runs in a child process)");
}

/// C_Initialize → first signature, and a full listing of the private keys, with `n` keys.
fn keys_case(dir: &Path, n: usize) -> Value {
    let sim_dir = dir.join(format!("sim-keys-{n}"));
    std::fs::create_dir_all(&sim_dir).unwrap();
    let extra = n.saturating_sub(tsb_sim::SimConfig::fast_test().keys.len());
    let sim = Sim::start(&sim_dir, false, extra);
    let name = format!("keys-{n}");
    let config = dir.join(format!("{name}.json"));
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({ "restApi": sim.url, "pkcs11": { "requestTimeoutMs": 30000 } }))
            .unwrap(),
    )
    .unwrap();
    use_config(dir, &config);
    let so = module_copy(dir, &name);
    sim.reset_counters();
    let started = Instant::now();
    let p = Pkcs11::new(&so).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = p.open_ro_session(slot).unwrap();
    let key = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec-p256".to_vec()),
        ])
        .unwrap()[0];
    s.sign(&Mechanism::EcdsaSha256, key, MESSAGE).unwrap();
    let first = started.elapsed();
    let first_requests = sim.requests();
    drop(s);
    // A full listing on a freshly loaded module (nothing cached).
    let p = Pkcs11::new(module_copy(dir, &format!("{name}-list"))).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let s = p.open_ro_session(slot).unwrap();
    sim.reset_counters();
    let cpu0 = cpu();
    let started = Instant::now();
    let all = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    let labels = all.len();
    let list = started.elapsed();
    let list_cpu = cpu() - cpu0;
    let list_requests = sim.requests();
    assert!(labels >= extra, "listed {labels} of {n} keys");
    json!({
        "keys": n, "firstMs": first.as_secs_f64() * 1e3, "firstRequests": first_requests,
        "listMs": list.as_secs_f64() * 1e3, "listRequests": list_requests,
        "listCpuMs": list_cpu.as_secs_f64() * 1e3, "listed": labels,
    })
}

/// Resident memory of this process after each count of P-256 signatures (one thread).
fn memory_case(dir: &Path, counts: &[usize]) -> Vec<Value> {
    let sim_dir = dir.join("sim-memory");
    std::fs::create_dir_all(&sim_dir).unwrap();
    let sim = Sim::start(&sim_dir, false, 0);
    let p = load_module(dir, "memory", &sim.url, None, true);
    let work = through(&p, Alg::Ec, 1);
    let mut done = 0;
    let mut rows = Vec::new();
    for &n in counts {
        while done < n {
            work(0);
            done += 1;
        }
        rows.push(json!({ "signatures": n, "rssKiB": rss_kib() }));
    }
    rows
}

/// `requestTimeoutMs` of the failover case: a node that hangs costs a call half of it.
const FAILOVER_TIMEOUT_MS: u64 = 5000;

/// Failover: a cluster of 2 nodes, the module with `restApi` [node 1, node 2] (`failover`, so
/// every signature goes to node 1), `threads` threads signing P-256 for a second; then node 1
/// dies (`down`: refuses connections and drops its connections; `hang`: reads requests and
/// never answers) and they sign on for four seconds. Latency and errors of the signatures
/// started in the second before the death, in flight at the death, started in the second after
/// it and in the fourth second after it (every one of them completes).
fn failover_case(dir: &Path, threads: usize, fault: &str) -> Value {
    let sim_dir = dir.join(format!("sim-failover-{fault}-{threads}"));
    std::fs::create_dir_all(&sim_dir).unwrap();
    let sim = Sim::cluster(&sim_dir, false, 0, 2);
    let name = format!("failover-{fault}-{threads}");
    let config = dir.join(format!("{name}.json"));
    std::fs::write(
        &config,
        serde_json::to_vec(&json!({
            "restApi": sim.urls,
            "pkcs11": { "requestTimeoutMs": FAILOVER_TIMEOUT_MS, "nodeStrategy": "failover" }
        }))
        .unwrap(),
    )
    .unwrap();
    use_config(dir, &config);
    let p = Pkcs11::new(module_copy(dir, &name)).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let sessions = sessions_with_key(&p, "ec-p256", threads);
    let second = Duration::from_secs(1);
    // Warm-up, the second before, the death (the moment the fault is in effect), four seconds
    // after; every signature started runs to its end.
    let start = Instant::now() + Duration::from_millis(500);
    let stopping = std::sync::atomic::AtomicBool::new(false);
    let (ops, death): (Vec<(Instant, Duration, bool)>, Instant) = std::thread::scope(|scope| {
        let stopping = &stopping;
        let workers: Vec<_> = sessions
            .into_iter()
            .map(|(s, key)| {
                scope.spawn(move || {
                    let mut ops = Vec::new();
                    while !stopping.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let ok = s.sign(&Mechanism::EcdsaSha256, key, MESSAGE).is_ok();
                        ops.push((t, t.elapsed(), ok));
                    }
                    ops
                })
            })
            .collect();
        std::thread::sleep((start + second).saturating_duration_since(Instant::now()));
        sim.set_listener(0, json!({ "fault": fault }));
        let death = Instant::now();
        std::thread::sleep(4 * second);
        stopping.store(true, Ordering::Relaxed);
        let ops = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        (ops, death)
    });
    // Signatures started in [from, to) that ended within `ended` (relative to the death).
    let window = |from: Instant, to: Instant, ended: &dyn Fn(Instant) -> bool| {
        let inside: Vec<&(Instant, Duration, bool)> = ops
            .iter()
            .filter(|(t, d, _)| *t >= from && *t < to && ended(*t + *d))
            .collect();
        let mut lat: Vec<f64> = inside
            .iter()
            .filter(|(_, _, ok)| *ok)
            .map(|(_, d, _)| d.as_secs_f64() * 1e3)
            .collect();
        let errors = inside.iter().filter(|(_, _, ok)| !*ok).count();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        json!({
            "signatures": lat.len(), "errors": errors,
            "p50Ms": pct(0.5), "p99Ms": pct(0.99), "maxMs": lat.last().copied().unwrap_or(0.0),
        })
    };
    let before = window(death - second, death, &|end| end <= death);
    let in_flight = window(start, death, &|end| end > death);
    let after = window(death, death + second, &|_| true);
    let later = window(death + 3 * second, death + 4 * second, &|_| true);
    sim.set_listener(0, json!({ "fault": "none" }));
    json!({
        "fault": fault, "threads": threads, "requestTimeoutMs": FAILOVER_TIMEOUT_MS,
        "before": before, "inFlight": in_flight, "after": after, "fourthSecondAfter": later,
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs, {model}")
}
