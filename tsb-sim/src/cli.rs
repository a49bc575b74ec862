//! Command line: `tsb-sim [serve] --listen ADDR --config FILE`, and the control-interface
//! clients `requests`, `approve`, `reject`, `fail`, `counters`, `faults`, `demo-config`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tsb_sim::{SimConfig, Simulator};

/// `println!` to stdout that ends the program quietly (exit code 0) when stdout is a closed pipe,
/// e.g. `tsb-sim requests | head`, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        emit(format_args!("{}\n", format_args!($($arg)*)))
    };
}

fn emit(args: std::fmt::Arguments<'_>) {
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("tsb-sim: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

fn out_raw(text: &str) {
    emit(format_args!("{text}"))
}

#[derive(Parser, Debug)]
#[command(
    name = "tsb-sim",
    version,
    about = "Simulator of the Securosys TSB REST API",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args, Debug, Clone, Default)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or `listen` of the config file]; repeat
    /// for a cluster: every listener serves the same keys and requests
    #[arg(long)]
    listen: Vec<String>,
    /// TOML configuration file [default: the built-in demo configuration]
    #[arg(long)]
    config: Option<PathBuf>,
    /// State directory (key cache, TLS files); overrides `stateDir` and TSB_SIM_STATE_DIR
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Emulated network round-trip time in ms: one per new connection and per client flight
    /// (overrides `rttMs`)
    #[arg(long)]
    rtt_ms: Option<u64>,
}

#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// Simulator URL [default: env TSB_SIM_URL or http://127.0.0.1:8080]
    #[arg(long)]
    url: Option<String>,
    /// CA certificate (PEM) to trust for an https URL [default: env TSB_SIM_CA]
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the simulator (the default command)
    Serve(ServeArgs),
    /// List sign requests (sync and async)
    Requests {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending sign request
    Approve {
        request_id: String,
        /// Approver name (must be in the key's policy)
        #[arg(long = "as")]
        approver: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reject a pending sign request
    Reject {
        request_id: String,
        /// Approver name (must be in the key's policy)
        #[arg(long = "as")]
        approver: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a pending/approved sign request FAILED
    Fail {
        request_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show (or reset) the per-endpoint request counters
    Counters {
        /// Reset the counters
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show (or change) the network emulation: round-trip time, connections accepted
    Network {
        /// New round-trip time in milliseconds (0 = off)
        #[arg(long)]
        rtt_ms: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the listeners (cluster nodes) with their fault and request/connection counts
    Listeners {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the fault of one listener: none, down, hang, unavailable (503) or slow
    Listener {
        /// Listener index (0 = the first --listen)
        index: usize,
        /// none | down | hang | unavailable | slow
        fault: String,
        /// Latency of `slow`, in milliseconds
        #[arg(long)]
        latency_ms: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage injected faults
    Faults {
        #[command(subcommand)]
        action: FaultAction,
    },
    /// Replace the key behind a label by a new key (new key material and id; hostile mode)
    SwapKey {
        label: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the demo configuration (demo.toml)
    DemoConfig,
}

#[derive(Subcommand, Debug)]
enum FaultAction {
    /// List active faults
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a fault, e.g. '{"endpoint":"POST /v1/synchronousSign","kind":"status5xx","status":503,"count":2}'
    Add {
        /// Fault JSON (an object or an array of objects)
        json: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove all faults
    Clear {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs the CLI; returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Requests { client, json }) => requests(&client, json),
        Some(Command::Approve {
            request_id,
            approver,
            client,
        }) => decide(&client, &request_id, "approve", Some(&approver)),
        Some(Command::Reject {
            request_id,
            approver,
            client,
        }) => decide(&client, &request_id, "reject", Some(&approver)),
        Some(Command::Fail { request_id, client }) => decide(&client, &request_id, "fail", None),
        Some(Command::Counters { reset, client }) => counters(&client, reset),
        Some(Command::Network { rtt_ms, client }) => network(&client, rtt_ms),
        Some(Command::Listeners { client }) => listeners(&client),
        Some(Command::Listener {
            index,
            fault,
            latency_ms,
            client,
        }) => listener(&client, index, &fault, latency_ms),
        Some(Command::Faults { action }) => faults(action),
        Some(Command::SwapKey { label, client }) => swap_key(&client, &label),
        Some(Command::DemoConfig) => {
            out_raw(tsb_sim::DEMO_TOML);
            Ok(())
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tsb-sim: {e}");
            1
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("tsb_sim=info"))
        .format(|buf, record| writeln!(buf, "{} {}", tsb_sim_time(), record.args()))
        .init();
    let mut cfg = match &args.config {
        Some(path) => SimConfig::from_file(path).map_err(|e| e.to_string())?,
        None => SimConfig::demo(),
    };
    let mut listen = args.listen.into_iter();
    match listen.next() {
        Some(first) => {
            cfg.listen = Some(first);
            cfg.extra_listen = listen.collect();
        }
        None => {
            cfg.listen = Some(
                cfg.listen
                    .take()
                    .unwrap_or_else(|| "127.0.0.1:8080".to_string()),
            )
        }
    }
    if let Some(dir) = args.state_dir {
        cfg.state_dir = Some(dir);
    }
    if let Some(rtt) = args.rtt_ms {
        cfg.rtt_ms = rtt;
    }
    let started = std::time::Instant::now();
    let sim = Simulator::start(cfg).map_err(|e| e.to_string())?;
    eprintln!(
        "tsb-sim: {} keys ready in {:.1}s",
        sim.key_labels().len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(ca) = sim.ca_cert_pem_path() {
        eprintln!("tsb-sim: CA certificate: {}", ca.display());
    }
    if let Some((cert, key)) = sim.client_cert_paths() {
        eprintln!(
            "tsb-sim: client certificate: {} key: {}",
            cert.display(),
            key.display()
        );
    }
    if let Some(c) = sim.control_url() {
        eprintln!("tsb-sim: control interface on {c}/sim/");
    }
    for url in sim.urls() {
        out!("listening on {url}");
    }
    let _ = std::io::stdout().flush();
    sim.wait_for_shutdown_signal();
    eprintln!("tsb-sim: shutting down");
    Ok(())
}

fn tsb_sim_time() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60,
        now.subsec_millis()
    )
}

fn agent(client: &ClientArgs) -> Result<(ureq::Agent, String), String> {
    let url = client
        .url
        .clone()
        .or_else(|| std::env::var("TSB_SIM_URL").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    let base = url
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_string();
    let mut builder = ureq::AgentBuilder::new().timeout(Duration::from_secs(30));
    let ca = client
        .ca
        .clone()
        .or_else(|| std::env::var_os("TSB_SIM_CA").map(PathBuf::from));
    if let Some(ca) = ca {
        let pem = std::fs::read(&ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        builder = builder.tls_config(Arc::new(config));
    }
    Ok((builder.build(), base))
}

fn call(
    client: &ClientArgs,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Option<Value>, String> {
    let (agent, base) = agent(client)?;
    let url = format!("{base}{path}");
    let req = agent.request(method, &url);
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    match result {
        Ok(resp) => {
            let text = resp.into_string().map_err(|e| e.to_string())?;
            if text.trim().is_empty() {
                Ok(None)
            } else {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| format!("unexpected answer from {url}: {e}"))
            }
        }
        Err(ureq::Error::Status(code, resp)) => {
            let text = resp.into_string().unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(text);
            Err(format!("{method} {url}: HTTP {code}: {msg}"))
        }
        Err(e) => Err(format!("{method} {url}: {e}")),
    }
}

fn requests(client: &ClientArgs, json: bool) -> Result<(), String> {
    let v = call(client, "GET", "/sim/requests", None)?.unwrap_or(Value::Array(vec![]));
    if json {
        out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let list = |r: &Value, f: &str| -> String {
        r.get(f)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".to_string())
    };
    let s = |r: &Value, f: &str| -> String {
        r.get(f).and_then(Value::as_str).unwrap_or("-").to_string()
    };
    out!(
        "{:<36}  {:<18} {:<24} {:<9} {:<14} {:<14} {:<14} CREATED",
        "ID",
        "KEY",
        "ALGORITHM",
        "STATUS",
        "APPROVED",
        "WAITING FOR",
        "REJECTED"
    );
    for r in v.as_array().into_iter().flatten() {
        let id = match r.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => "(synchronous)".to_string(),
        };
        out!(
            "{:<36}  {:<18} {:<24} {:<9} {:<14} {:<14} {:<14} {}",
            id,
            s(r, "key"),
            s(r, "algorithm"),
            s(r, "status"),
            list(r, "approvedBy"),
            list(r, "notYetApprovedBy"),
            list(r, "rejectedBy"),
            s(r, "createdAt"),
        );
        if let Some(meta) = r.get("metaData").filter(|m| !m.is_null()) {
            out!("{:<38}metaData: {meta}", "");
        }
    }
    Ok(())
}

fn decide(
    client: &ClientArgs,
    id: &str,
    action: &str,
    approver: Option<&str>,
) -> Result<(), String> {
    let body = approver.map(|a| serde_json::json!({ "approver": a }).to_string());
    let v = call(
        client,
        "POST",
        &format!("/sim/requests/{id}/{action}"),
        body.as_deref(),
    )?
    .unwrap_or(Value::Null);
    out!(
        "request {id}: {}",
        v.get("status").and_then(Value::as_str).unwrap_or("?")
    );
    Ok(())
}

fn counters(client: &ClientArgs, reset: bool) -> Result<(), String> {
    if reset {
        call(client, "DELETE", "/sim/counters", None)?;
        out!("counters reset");
        return Ok(());
    }
    let v = call(client, "GET", "/sim/counters", None)?.unwrap_or(Value::Null);
    for (k, n) in v.as_object().into_iter().flatten() {
        out!("{n:>8}  {k}");
    }
    let net = call(client, "GET", "/sim/network", None)?.unwrap_or(Value::Null);
    if let Some(n) = net.get("connectionsAccepted").and_then(Value::as_u64) {
        out!("{n:>8}  connections accepted");
    }
    Ok(())
}

fn print_listener(l: &Value) {
    let fault = l.get("fault").and_then(Value::as_str).unwrap_or("?");
    let fault = match l.get("latencyMs").and_then(Value::as_u64) {
        Some(ms) => format!("{fault} {ms}ms"),
        None => fault.to_string(),
    };
    out!(
        "{:>3}  {:<32} {:<14} {:>8} {:>8}",
        l.get("index").and_then(Value::as_u64).unwrap_or(0),
        l.get("url").and_then(Value::as_str).unwrap_or("-"),
        fault,
        l.get("requests").and_then(Value::as_u64).unwrap_or(0),
        l.get("connections").and_then(Value::as_u64).unwrap_or(0),
    );
}

fn listeners(client: &ClientArgs) -> Result<(), String> {
    let v = call(client, "GET", "/sim/listeners", None)?.unwrap_or(Value::Null);
    out!(
        "{:>3}  {:<32} {:<14} {:>8} {:>8}",
        "#",
        "URL",
        "FAULT",
        "REQUESTS",
        "CONNS"
    );
    v.as_array().into_iter().flatten().for_each(print_listener);
    Ok(())
}

fn listener(
    client: &ClientArgs,
    index: usize,
    fault: &str,
    latency_ms: Option<u64>,
) -> Result<(), String> {
    let mut body = serde_json::json!({ "fault": fault });
    if let Some(ms) = latency_ms {
        body["latencyMs"] = ms.into();
    }
    let v = call(
        client,
        "POST",
        &format!("/sim/listeners/{index}"),
        Some(&body.to_string()),
    )?
    .unwrap_or(Value::Null);
    print_listener(&v);
    Ok(())
}

fn network(client: &ClientArgs, rtt_ms: Option<u64>) -> Result<(), String> {
    let v = match rtt_ms {
        Some(ms) => {
            let body = serde_json::json!({ "rttMs": ms }).to_string();
            call(client, "POST", "/sim/network", Some(&body))?
        }
        None => call(client, "GET", "/sim/network", None)?,
    }
    .unwrap_or(Value::Null);
    out!(
        "rtt {} ms, {} connections accepted",
        v.get("rttMs").and_then(Value::as_u64).unwrap_or(0),
        v.get("connectionsAccepted")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    );
    Ok(())
}

fn swap_key(client: &ClientArgs, label: &str) -> Result<(), String> {
    let path = format!("/sim/hostile/swap/{}", pct_label(label));
    let v = call(client, "POST", &path, Some("{}"))?.unwrap_or(Value::Null);
    out!(
        "key {} swapped: new id {}",
        v.get("label")
            .and_then(Value::as_str)
            .unwrap_or(label)
            .escape_debug(),
        v.get("id").and_then(Value::as_str).unwrap_or("?")
    );
    Ok(())
}

/// Percent-encodes a label for a URL path (unreserved characters and `/` stay).
fn pct_label(label: &str) -> String {
    label
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn faults(action: FaultAction) -> Result<(), String> {
    match action {
        FaultAction::List { client } => {
            let v = call(&client, "GET", "/sim/faults", None)?.unwrap_or(Value::Null);
            out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        FaultAction::Add { json, client } => {
            let v = call(&client, "POST", "/sim/faults", Some(&json))?.unwrap_or(Value::Null);
            out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        FaultAction::Clear { client } => {
            call(&client, "DELETE", "/sim/faults", None)?;
            out!("faults cleared");
        }
    }
    Ok(())
}
