//! Shared simulator state: keys, the sign-request log with its approval machines, endpoint
//! counters and faults.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{KeySpec, SimConfig};
use crate::error::{ApiError, SimError};
use crate::faults::FaultRegistry;
use crate::keys::SimKey;
use crate::policy::{Machine, PolicyError, Status};

/// Maximum number of sign requests kept; older ones are forgotten.
const MAX_RECORDS: usize = 100_000;

/// One sign request as seen by the simulator (sync and async), returned by
/// [`crate::Simulator::requests`] and `GET /sim/requests`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignRecord {
    /// `signRequestId` of `/v1/sign`; `None` for `/v1/synchronousSign`.
    pub id: Option<String>,
    /// `signKeyName`.
    pub key: String,
    /// `signatureAlgorithm` as sent.
    pub algorithm: String,
    /// `"POST /v1/synchronousSign"` or `"POST /v1/sign"`.
    pub endpoint: String,
    /// Decoded `payload`.
    #[serde(serialize_with = "ser_b64")]
    pub payload: Vec<u8>,
    /// `metaData` decoded from base64 and parsed as JSON (a JSON string if it is not JSON).
    pub meta_data: Option<Value>,
    /// `metaData` exactly as sent (base64).
    pub meta_data_raw: Option<String>,
    /// `metaDataSignature` as sent.
    pub meta_data_signature: Option<String>,
    /// `signatureType` as sent.
    pub signature_type: Option<String>,
    /// PENDING, APPROVED, EXECUTED, REJECTED, EXPIRED, CANCELLED or FAILED.
    pub status: String,
    pub approved_by: Vec<String>,
    pub not_yet_approved_by: Vec<String>,
    pub rejected_by: Vec<String>,
    #[serde(serialize_with = "ser_time")]
    pub created_at: SystemTime,
    #[serde(serialize_with = "ser_opt_time")]
    pub executed_at: Option<SystemTime>,
}

fn ser_b64<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&B64.encode(v))
}
fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::util::rfc3339(*t))
}
fn ser_opt_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&crate::util::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// A logged sign request.
pub struct Entry {
    pub id: Option<String>,
    pub key: String,
    pub algorithm: String,
    pub signature_type: Option<String>,
    pub endpoint: &'static str,
    pub payload: Vec<u8>,
    pub meta_raw: Option<String>,
    pub meta: Option<Value>,
    pub meta_sig: Option<String>,
    pub created_wall: SystemTime,
    pub machine: Machine,
    /// Computed when the request was accepted, revealed once EXECUTED.
    pub signature: Vec<u8>,
}

impl Entry {
    fn wall(&self, at: Instant) -> SystemTime {
        self.created_wall + at.saturating_duration_since(self.machine.created())
    }

    fn record(&self) -> SignRecord {
        SignRecord {
            id: self.id.clone(),
            key: self.key.clone(),
            algorithm: self.algorithm.clone(),
            endpoint: self.endpoint.to_string(),
            payload: self.payload.clone(),
            meta_data: self.meta.clone(),
            meta_data_raw: self.meta_raw.clone(),
            meta_data_signature: self.meta_sig.clone(),
            signature_type: self.signature_type.clone(),
            status: self.machine.status().as_str().to_string(),
            approved_by: self.machine.approved_by().to_vec(),
            not_yet_approved_by: self.machine.not_yet_approved_by(),
            rejected_by: self.machine.rejected_by().to_vec(),
            created_at: self.created_wall,
            executed_at: self.machine.executed_at().map(|t| self.wall(t)),
        }
    }

    /// The `GET /v1/request/{id}` body.
    pub fn status_json(&self) -> Value {
        let executed = self.machine.status() == Status::Executed;
        json!({
            "id": self.id,
            "status": self.machine.status().as_str(),
            "executionTime": self.machine.executed_at().map(|t| crate::util::rfc3339(self.wall(t))),
            "approvedBy": self.machine.approved_by(),
            "notYetApprovedBy": self.machine.not_yet_approved_by(),
            "rejectedBy": self.machine.rejected_by(),
            "result": if executed { Some(B64.encode(&self.signature)) } else { None },
        })
    }
}

#[derive(Default)]
struct RequestLog {
    entries: Vec<Entry>,
    by_id: HashMap<String, usize>,
}

impl RequestLog {
    fn push(&mut self, entry: Entry) {
        if self.entries.len() >= MAX_RECORDS {
            self.entries.drain(..MAX_RECORDS / 2);
            self.by_id = self
                .entries
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.id.clone().map(|id| (id, i)))
                .collect();
        }
        if let Some(id) = &entry.id {
            self.by_id.insert(id.clone(), self.entries.len());
        }
        self.entries.push(entry);
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        let idx = *self.by_id.get(id)?;
        self.entries.get_mut(idx)
    }
}

/// Everything the handlers share.
pub struct Shared {
    pub cfg: SimConfig,
    pub keys: RwLock<Vec<Arc<SimKey>>>,
    requests: Mutex<RequestLog>,
    counters: Mutex<BTreeMap<String, u64>>,
    /// The `Host` header values of the `/v1/` requests received (`""`: none), each once.
    host_headers: Mutex<std::collections::BTreeSet<String>>,
    pub faults: FaultRegistry,
    /// What hostile faults remember (`replayAnswer`).
    pub(crate) hostile: crate::faults::AnswerMemory,
    /// Round-trip emulation and the connection counter.
    pub(crate) net: crate::network::NetState,
    /// The listeners (set once they are bound).
    pub(crate) nodes: std::sync::OnceLock<Vec<Arc<crate::cluster::Node>>>,
    /// When set, `POST /v1/sign` answers this `signRequestId` instead of a fresh UUID (tests of
    /// how clients cope with odd ids: newlines, megabytes, secrets).
    pub request_id_override: Mutex<Option<String>>,
    pub key_cache_dir: Option<PathBuf>,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    pub fn new(
        cfg: SimConfig,
        keys: Vec<Arc<SimKey>>,
        key_cache_dir: Option<PathBuf>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Shared {
        Shared {
            net: crate::network::NetState::new(cfg.rtt_ms),
            nodes: std::sync::OnceLock::new(),
            cfg,
            keys: RwLock::new(keys),
            requests: Mutex::new(RequestLog::default()),
            counters: Mutex::new(BTreeMap::new()),
            host_headers: Mutex::new(std::collections::BTreeSet::new()),
            faults: FaultRegistry::default(),
            hostile: crate::faults::AnswerMemory::default(),
            request_id_override: Mutex::new(None),
            key_cache_dir,
            shutdown,
        }
    }

    /// The key labelled `label` (650 if none).
    pub fn key(&self, label: &str) -> Result<Arc<SimKey>, ApiError> {
        self.keys
            .read()
            .iter()
            .find(|k| k.label() == label)
            .cloned()
            .ok_or_else(|| ApiError::no_key(label))
    }

    pub fn labels(&self) -> Vec<String> {
        self.keys
            .read()
            .iter()
            .map(|k| k.label().to_string())
            .collect()
    }

    /// Adds (or replaces) a key; generation happens on the calling thread.
    pub fn add_key(&self, spec: KeySpec) -> Result<(), SimError> {
        spec.validate()?;
        let key = crate::certs::build_key(spec, self.key_cache_dir.as_deref())?;
        let mut keys = self.keys.write();
        if let Some(pos) = keys.iter().position(|k| k.label() == key.label()) {
            keys[pos] = Arc::new(key);
        } else {
            keys.push(Arc::new(key));
        }
        Ok(())
    }

    /// Adds a key created by `POST /v1/key`; refuses a label in use (608), checked under the
    /// write lock so concurrent creations of one label cannot both succeed.
    pub fn insert_new_key(&self, key: SimKey) -> Result<(), ApiError> {
        let mut keys = self.keys.write();
        if keys.iter().any(|k| k.label() == key.label()) {
            return Err(ApiError::key_exists(key.label()));
        }
        keys.push(Arc::new(key));
        Ok(())
    }

    /// Removes a key; returns whether it existed.
    pub fn remove_key(&self, label: &str) -> bool {
        let mut keys = self.keys.write();
        let before = keys.len();
        keys.retain(|k| k.label() != label);
        keys.len() != before
    }

    pub fn count(&self, endpoint: &str) {
        *self
            .counters
            .lock()
            .entry(endpoint.to_string())
            .or_insert(0) += 1;
    }
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters.lock().clone()
    }
    pub fn record_host_header(&self, host: &str) {
        let mut hosts = self.host_headers.lock();
        if !hosts.contains(host) {
            hosts.insert(host.to_string());
        }
    }
    pub fn host_headers(&self) -> Vec<String> {
        self.host_headers.lock().iter().cloned().collect()
    }
    pub fn reset_counters(&self) {
        self.counters.lock().clear();
    }

    pub fn log_request(&self, entry: Entry) {
        self.requests.lock().push(entry);
    }

    /// Cancels the open (PENDING or APPROVED) sign requests of key `label`, as a TSB does when
    /// the key is deleted (release notes 1.12.0); returns how many were cancelled.
    pub fn cancel_requests_of(&self, label: &str) -> usize {
        let now = Instant::now();
        let mut log = self.requests.lock();
        log.entries
            .iter_mut()
            .filter(|e| e.key == label)
            .map(|e| e.machine.cancel(now))
            .filter(|cancelled| *cancelled)
            .count()
    }

    /// Runs `f` on request `id` after applying due time-driven transitions.
    pub fn with_request<T>(&self, id: &str, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let mut log = self.requests.lock();
        let entry = log.get_mut(id)?;
        entry.machine.refresh(Instant::now());
        Some(f(entry))
    }

    /// Runs `f` on every sign request (after due time-driven transitions).
    pub(crate) fn update_requests(&self, mut f: impl FnMut(&mut Entry)) {
        let now = Instant::now();
        for e in self.requests.lock().entries.iter_mut() {
            e.machine.refresh(now);
            f(e);
        }
    }

    /// All sign requests, oldest first, with current states.
    pub fn records(&self) -> Vec<SignRecord> {
        let now = Instant::now();
        let mut log = self.requests.lock();
        log.entries
            .iter_mut()
            .map(|e| {
                e.machine.refresh(now);
                e.record()
            })
            .collect()
    }

    pub fn record(&self, id: &str) -> Option<SignRecord> {
        self.with_request(id, |e| e.record())
    }

    fn policy_op(
        &self,
        id: &str,
        op: impl FnOnce(&mut Machine, Instant) -> Result<(), PolicyError>,
    ) -> Result<(), SimError> {
        self.with_request(id, |e| op(&mut e.machine, Instant::now()))
            .ok_or_else(|| SimError::NotFound(format!("sign request '{id}'")))?
            .map_err(|e| match e {
                PolicyError::UnknownApprover { .. } => {
                    SimError::UnknownApprover(format!("request {id}: {e}"))
                }
                PolicyError::WrongState(_) => SimError::Rejected(format!("request {id}: {e}")),
            })
    }

    pub fn approve(&self, id: &str, approver: &str) -> Result<(), SimError> {
        self.policy_op(id, |m, now| m.approve(approver, now))
    }
    pub fn reject(&self, id: &str, approver: &str) -> Result<(), SimError> {
        self.policy_op(id, |m, now| m.reject(approver, now))
    }
    pub fn fail(&self, id: &str) -> Result<(), SimError> {
        self.policy_op(id, |m, now| m.fail(now))
    }
}
