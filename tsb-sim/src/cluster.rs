//! Cluster mode: one simulator state served on several listeners ("nodes"), each with its own
//! run-time fault (down, hang, 503, slow) and its own request and connection counts. This
//! module holds the nodes' state; `server::serve_node` serves them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// The run-time fault of one listener. JSON: `{"fault": "none"}`, `{"fault": "down"}`,
/// `{"fault": "hang"}`, `{"fault": "unavailable"}`, `{"fault": "slow", "latencyMs": 200}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "camelCase", deny_unknown_fields)]
pub enum NodeFault {
    /// Serves normally.
    #[default]
    None,
    /// The listening socket is closed (connections are refused) and the node's open connections
    /// are closed; a request that still arrives on one before it is closed is dropped
    /// unanswered. Reviving binds the same port again.
    Down,
    /// Connections are accepted (TLS handshakes complete) and `/v1/` requests are read but never
    /// answered until the fault changes (then the connection is closed).
    Hang,
    /// Every `/v1/` request is answered 503 with a TSB error body (errorCode 701), unprocessed.
    Unavailable,
    /// Every `/v1/` request waits `latencyMs` before it is processed.
    Slow {
        #[serde(rename = "latencyMs")]
        latency_ms: u64,
    },
}

/// One listener of the cluster.
pub(crate) struct Node {
    pub(crate) index: usize,
    pub(crate) url: String,
    /// Bound addresses: the main one, and `[::1]` of the same port for TLS on 127.0.0.1.
    addrs: Vec<SocketAddr>,
    fault: tokio::sync::watch::Sender<NodeFault>,
    requests: AtomicU64,
    connections: AtomicU64,
    /// Whether the node's sockets are listening (false while down).
    listening: Mutex<bool>,
    listening_changed: Condvar,
}

/// Counts and fault of one listener, as `Simulator::listeners` and `GET /sim/listeners` show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerInfo {
    pub index: usize,
    pub url: String,
    #[serde(flatten)]
    pub fault: NodeFault,
    /// `/v1/` requests received (including those answered by a fault).
    pub requests: u64,
    /// TCP connections accepted.
    pub connections: u64,
}

impl Node {
    pub(crate) fn new(index: usize, url: String, addrs: Vec<SocketAddr>) -> Node {
        Node {
            index,
            url,
            addrs,
            fault: tokio::sync::watch::Sender::new(NodeFault::None),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            listening: Mutex::new(true),
            listening_changed: Condvar::new(),
        }
    }

    /// The main bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// All bound addresses.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Keeps the node down (rebinding failed) without waiting for its sockets.
    pub(crate) fn stay_down(&self) {
        self.fault.send_replace(NodeFault::Down);
    }

    pub(crate) fn fault(&self) -> NodeFault {
        *self.fault.borrow()
    }
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<NodeFault> {
        self.fault.subscribe()
    }
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn reset_counts(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
    }

    pub(crate) fn info(&self) -> ListenerInfo {
        ListenerInfo {
            index: self.index,
            url: self.url.clone(),
            fault: self.fault(),
            requests: self.requests.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
        }
    }

    /// Sets the fault; for `Down` and for leaving `Down`, returns once the sockets are closed /
    /// listening again (at most 10 s). Blocks the calling thread: not for async workers.
    pub(crate) fn set_fault(&self, fault: NodeFault) -> Result<(), SimError> {
        self.fault.send_replace(fault);
        let want_listening = fault != NodeFault::Down;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut listening = self.listening.lock();
        while *listening != want_listening {
            if self
                .listening_changed
                .wait_until(&mut listening, deadline)
                .timed_out()
            {
                return Err(SimError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "listener {} did not {} within 10 s",
                        self.index,
                        if want_listening {
                            "listen again"
                        } else {
                            "close"
                        }
                    ),
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn set_listening(&self, value: bool) {
        *self.listening.lock() = value;
        self.listening_changed.notify_all();
    }
}
