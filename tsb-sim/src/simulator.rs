//! [`Simulator`]: an in-process TSB on its own tokio runtime.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{ListenerInfo, Node, NodeFault};
use crate::config::{KeyAlgorithm, KeySpec, SimConfig};
use crate::error::SimError;
use crate::faults::Fault;
use crate::keys::SimKey;
use crate::state::{Shared, SignRecord};

/// A running simulator. Dropping it stops the server and joins its threads.
pub struct Simulator {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    shutdown: tokio::sync::watch::Sender<bool>,
    url: String,
    control_url: Option<String>,
    addr: SocketAddr,
    nodes: Vec<Arc<Node>>,
    ca_cert_path: Option<PathBuf>,
    client_cert_paths: Option<(PathBuf, PathBuf)>,
    temp_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator").field("url", &self.url).finish()
    }
}

/// Builds all keys, generating in parallel (RSA generation is slow).
fn build_keys(specs: &[KeySpec], cache_dir: Option<&Path>) -> Result<Vec<Arc<SimKey>>, SimError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4)
        .min(specs.len().max(1));
    // Slow (RSA) keys first so they overlap.
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by_key(|&i| {
        std::cmp::Reverse(if specs[i].algorithm == KeyAlgorithm::Rsa {
            specs[i].effective_size()
        } else {
            0
        })
    });
    let next = AtomicUsize::new(0);
    let results: parking_lot::Mutex<Vec<Option<Result<SimKey, SimError>>>> =
        parking_lot::Mutex::new((0..specs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let Some(&i) = order.get(n) else { break };
                let r = crate::certs::build_key(specs[i].clone(), cache_dir);
                results.lock()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(SimError::Key("key generation did not run".into()))))
        .map(|r| r.map(Arc::new))
        .collect()
}

fn make_temp_dir() -> Result<PathBuf, SimError> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tsb-sim-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        uuid::Uuid::new_v4().simple()
    ));
    crate::util::create_private_dir(&dir)?;
    Ok(dir)
}

fn parse_addr(s: &str) -> Result<SocketAddr, SimError> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| SimError::Config(format!("listen address '{s}': {e}")))?
        .next()
        .ok_or_else(|| SimError::Config(format!("listen address '{s}' does not resolve")))
}

impl Simulator {
    /// Generates/loads the keys, sets up TLS if configured, and starts listening on
    /// `cfg.listen` (default `127.0.0.1:0`) and on every `cfg.extraListen` address.
    pub fn start(cfg: SimConfig) -> Result<Simulator, SimError> {
        Simulator::start_cluster(cfg, 1)
    }

    /// Like [`Simulator::start`], with at least `listeners` listeners ("nodes") serving the same
    /// keys and requests: `listen`, then `extraListen`, then free ports on `listen`'s address.
    /// Each can fail on its own ([`Simulator::set_listener_fault`]).
    pub fn start_cluster(cfg: SimConfig, listeners: usize) -> Result<Simulator, SimError> {
        cfg.validate()?;
        let state_dir = cfg.effective_state_dir();
        let key_cache_dir = cfg.cache_keys.then(|| match &state_dir {
            Some(d) => d.join("keys"),
            None => std::env::temp_dir().join("tsb-sim-keycache"),
        });
        let keys = build_keys(&cfg.keys, key_cache_dir.as_deref())?;

        let mut temp_dir = None;
        let tls = match cfg.tls.as_ref().filter(|t| t.enabled) {
            None => None,
            Some(t) => {
                let dir = match &state_dir {
                    Some(d) => d.join("tls"),
                    None => {
                        let d = make_temp_dir()?;
                        temp_dir = Some(d.clone());
                        d
                    }
                };
                crate::util::create_private_dir(&dir)?;
                Some(crate::certs::build_tls(t, &dir)?)
            }
        };

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tsb-sim")
            .enable_all()
            .build()?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared::new(cfg.clone(), keys, key_cache_dir, shutdown_rx));
        let app = crate::server::app(shared.clone());

        let mut listen: Vec<String> = vec![cfg
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:0".to_string())];
        listen.extend(cfg.extra_listen.iter().cloned());
        let first_ip = parse_addr(&listen[0])?.ip();
        while listen.len() < listeners.max(1) {
            listen.push(SocketAddr::new(first_ip, 0).to_string());
        }
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config.clone()));

        let control_url;
        let mut nodes = Vec::new();
        {
            let _guard = runtime.enter();
            for (index, spec) in listen.iter().enumerate() {
                let addr = parse_addr(spec)?;
                let std_listener = std::net::TcpListener::bind(addr)
                    .map_err(|e| SimError::Config(format!("cannot listen on {addr}: {e}")))?;
                std_listener.set_nonblocking(true)?;
                let local = std_listener.local_addr()?;
                let mut addrs = vec![local];
                let mut sockets = vec![tokio::net::TcpListener::from_std(std_listener)?];
                // "localhost" may resolve to ::1 first: serve the same port there too.
                if acceptor.is_some() && local.ip() == IpAddr::from([127, 0, 0, 1]) {
                    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), local.port());
                    if let Ok(l6) = std::net::TcpListener::bind(v6) {
                        l6.set_nonblocking(true)?;
                        sockets.push(tokio::net::TcpListener::from_std(l6)?);
                        addrs.push(v6);
                    }
                }
                let url = format!(
                    "{}://{}",
                    if tls.is_some() { "https" } else { "http" },
                    host_port(local, tls.is_some())
                );
                let node = Arc::new(Node::new(index, url, addrs));
                runtime.spawn(crate::server::serve_node(
                    node.clone(),
                    sockets,
                    acceptor.clone(),
                    shared.clone(),
                    app.clone(),
                ));
                nodes.push(node);
            }
            control_url = match &cfg.control_listen {
                None => None,
                Some(c) => {
                    let caddr = parse_addr(c)?;
                    let cl = std::net::TcpListener::bind(caddr)
                        .map_err(|e| SimError::Config(format!("cannot listen on {caddr}: {e}")))?;
                    cl.set_nonblocking(true)?;
                    let clocal = cl.local_addr()?;
                    let cl = tokio::net::TcpListener::from_std(cl)?;
                    runtime.spawn(crate::server::serve(
                        cl,
                        None,
                        shared.clone(),
                        app.clone(),
                        true,
                        None,
                    ));
                    Some(format!("http://{}", host_port(clocal, false)))
                }
            };
        }

        for n in &nodes {
            log::info!("listening on {}", n.url);
        }
        let _ = shared.nodes.set(nodes.clone());
        Ok(Simulator {
            runtime: Some(runtime),
            shared,
            shutdown: shutdown_tx,
            url: nodes[0].url.clone(),
            control_url,
            addr: nodes[0].addr(),
            nodes,
            ca_cert_path: tls.as_ref().map(|t| t.ca_cert_path.clone()),
            client_cert_paths: tls.and_then(|t| t.client_cert_paths),
            temp_dir,
        })
    }

    /// Base URL without trailing slash or `/v1`: `http://127.0.0.1:PORT`, or
    /// `https://localhost:PORT` with TLS.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Plain-HTTP URL of the control-only listener (`controlListen`), if configured.
    pub fn control_url(&self) -> Option<String> {
        self.control_url.clone()
    }

    /// The socket address the main listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM file of the CA that issued the server certificate (TLS only).
    pub fn ca_cert_pem_path(&self) -> Option<PathBuf> {
        self.ca_cert_path.clone()
    }

    /// (certificate PEM, PKCS#8 key PEM) of a client certificate the server accepts (mTLS with
    /// a generated client CA only).
    pub fn client_cert_paths(&self) -> Option<(PathBuf, PathBuf)> {
        self.client_cert_paths.clone()
    }

    /// Every sign request (sync and async) accepted so far, oldest first.
    pub fn requests(&self) -> Vec<SignRecord> {
        self.shared.records()
    }

    /// Approves request `request_id` as `approver` (must be an approver of the key's policy).
    pub fn approve(&self, request_id: &str, approver: &str) -> Result<(), SimError> {
        self.shared.approve(request_id, approver)
    }

    /// Rejects request `request_id` as `approver`: the request becomes REJECTED.
    pub fn reject(&self, request_id: &str, approver: &str) -> Result<(), SimError> {
        self.shared.reject(request_id, approver)
    }

    /// Makes a PENDING/APPROVED request FAILED.
    pub fn fail(&self, request_id: &str) -> Result<(), SimError> {
        self.shared.fail(request_id)
    }

    /// Current status (`PENDING`, `APPROVED`, `EXECUTED`, ...) of an async request.
    pub fn request_status(&self, request_id: &str) -> Option<String> {
        self.shared.record(request_id).map(|r| r.status)
    }

    /// Number of requests to an endpoint, e.g. `counter("POST /v1/sign")`.
    pub fn counter(&self, endpoint: &str) -> u64 {
        self.shared.counters().get(endpoint).copied().unwrap_or(0)
    }

    /// The distinct `Host` header values of the `/v1/` requests received so far, sorted (`""`
    /// for a request without one): a client must send the URL's authority, port and IPv6
    /// brackets included (RFC 9112 §3.2, RFC 3986 §3.2.2).
    pub fn host_headers(&self) -> Vec<String> {
        self.shared.host_headers()
    }

    /// All endpoint counters.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.shared.counters()
    }

    /// Resets the endpoint counters, the connection counter and the listeners' counts.
    pub fn reset_counters(&self) {
        self.shared.reset_counters();
        self.shared.net.reset_connections();
        self.nodes.iter().for_each(|n| n.reset_counts());
    }

    /// URLs of all listeners, in order (the first is [`Simulator::url`]).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// Fault and counts of every listener.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.nodes.iter().map(|n| n.info()).collect()
    }

    /// `/v1/` requests received by listener `index` (0 if there is none).
    pub fn listener_requests(&self, index: usize) -> u64 {
        self.nodes.get(index).map_or(0, |n| n.info().requests)
    }

    /// Switches the fault of listener `index`. Returns once the change is in effect: after
    /// `Down` the port refuses connections, after leaving `Down` it accepts them again.
    /// Blocks the calling thread for that moment (do not call it from a single-threaded async
    /// runtime's only thread while awaiting the simulator).
    pub fn set_listener_fault(&self, index: usize, fault: NodeFault) -> Result<(), SimError> {
        self.nodes
            .get(index)
            .ok_or_else(|| SimError::NotFound(format!("listener {index}")))?
            .set_fault(fault)
    }

    /// TCP connections accepted so far by the `/v1/` listeners (not `controlListen`).
    pub fn connections_accepted(&self) -> u64 {
        self.shared.net.connections()
    }

    /// The emulated round-trip time (`rttMs`).
    pub fn rtt(&self) -> Duration {
        self.shared.net.rtt()
    }

    /// Changes the emulated round-trip time; applies to the next client flight of every
    /// connection (millisecond resolution; zero turns emulation off).
    pub fn set_rtt(&self, rtt: Duration) {
        self.shared.net.set_rtt(rtt)
    }

    /// Adds a fault (see [`Fault`]). Invalid faults are logged and ignored.
    pub fn inject(&self, fault: Fault) {
        match fault.validate() {
            Ok(()) => self.shared.faults.add(fault),
            Err(e) => log::error!("ignoring invalid fault {fault:?}: {e}"),
        }
    }

    /// Makes `POST /v1/sign` answer `id` as the `signRequestId` of every new request (`None`:
    /// fresh UUIDs again). For tests of clients facing odd ids.
    pub fn override_request_ids(&self, id: Option<String>) {
        *self.shared.request_id_override.lock() = id;
    }

    /// Replaces the key behind `label` by a new key of the same type and policy (fresh key
    /// material, a new id, no certificate), as a hostile or re-keyed TSB would.
    pub fn swap_key(&self, label: &str) -> Result<crate::hostile::KeySwap, SimError> {
        crate::hostile::swap_key(&self.shared, label)
    }

    /// Adds EC keys with hostile labels and ids ([`crate::hostile_key_specs`]); returns their
    /// labels.
    pub fn add_hostile_keys(&self) -> Result<Vec<String>, SimError> {
        crate::hostile::add_hostile_keys(&self.shared)
    }

    /// Removes all faults and releases hanging requests.
    pub fn clear_faults(&self) {
        self.shared.faults.clear()
    }

    /// The DER SubjectPublicKeyInfo of a key.
    pub fn public_key_der(&self, label: &str) -> Option<Vec<u8>> {
        self.shared
            .key(label)
            .ok()
            .and_then(|k| k.public_der.clone())
    }

    /// The `json` object of a key's attributes response (`id`, `attributes`, ...), as tests
    /// check what a creation request stored.
    pub fn key_attributes_json(&self, label: &str) -> Option<serde_json::Value> {
        self.shared.key(label).ok().map(|k| k.attributes_json())
    }

    /// The DER certificate stored for a key.
    pub fn certificate_der(&self, label: &str) -> Option<Vec<u8>> {
        self.shared
            .key(label)
            .ok()
            .and_then(|k| k.certificate.lock().clone())
    }

    /// Current key labels, in `GET /v1/key` order.
    pub fn key_labels(&self) -> Vec<String> {
        self.shared.labels()
    }

    /// Removes a key (no-op if absent).
    pub fn remove_key(&self, label: &str) {
        self.shared.remove_key(label);
    }

    /// Adds a key, or replaces the key with the same label.
    pub fn add_key(&self, spec: KeySpec) -> Result<(), SimError> {
        self.shared.add_key(spec)
    }

    /// Blocks until SIGINT/SIGTERM (for the binary).
    pub fn wait_for_shutdown_signal(&self) {
        if let Some(rt) = &self.runtime {
            rt.block_on(async {
                #[cfg(unix)]
                {
                    use tokio::signal::unix::{signal, SignalKind};
                    match signal(SignalKind::terminate()) {
                        Ok(mut term) => {
                            tokio::select! {
                                _ = tokio::signal::ctrl_c() => {}
                                _ = term.recv() => {}
                            }
                        }
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                }
                #[cfg(not(unix))]
                {
                    let _ = tokio::signal::ctrl_c().await;
                }
            });
        }
    }
}

fn host_port(addr: SocketAddr, tls: bool) -> String {
    let ip = addr.ip();
    let host = if ip.is_unspecified() || (tls && ip.is_loopback()) {
        if tls {
            "localhost".to_string()
        } else {
            "127.0.0.1".to_string()
        }
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("{host}:{}", addr.port())
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.shared.faults.clear();
        if let Some(rt) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(5));
            }
        }
        if let Some(dir) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
