//! The token's state ([`Token`], its login, its client, its temporary keys): the type the
//! files of `token` add their PKCS#11 functions to.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use cryptoki_sys::*;
use parking_lot::Mutex;

use super::backend::{Backend, BackendFactory};
use super::objects::ObjectStore;
use super::session::SessionTable;
use crate::config::{Config, Secret};

/// The longest `C_Finalize` takes, whatever the TSB does (hangs, is slow, refuses): waiting for
/// the deletion of temporary keys and for helper threads (an approval request's cancellation,
/// a poll) ends by then. What is unfinished is logged and journalled; its thread ends on its
/// own within `requestTimeoutMs` and touches no state a later `C_Initialize` uses.
pub(crate) const FINALIZE_BOUND: Duration = Duration::from_secs(2);

/// Login state (PKCS#11 v2.40 §6.7: login is per token, shared by all sessions). A JWT or
/// API key given as the PIN (`pinIs: token` / `apiKey`) is kept by the client only, which
/// sends it (`Backend::set_login_bearer`, `set_login_operation_key`).
#[derive(Default)]
pub(super) struct Login {
    pub(super) logged_in: bool,
    /// With `pinIs: keyPassword`, the PIN is the password of keys without a configured one.
    pub(super) key_password: Option<Secret>,
}

/// The HTTP client of the current process. A child after `fork()` must not touch its parent's
/// connections, so a change of pid builds a fresh client (and leaks the parent's copy).
pub(super) struct ClientCell {
    pub(super) pid: u32,
    pub(super) client: Arc<dyn Backend>,
}

pub struct Token {
    pub(super) config: Arc<Config>,
    pub(super) client: Mutex<ClientCell>,
    /// Builds the backend of a process (the TSB client; a fake in the core tests).
    pub(super) factory: BackendFactory,
    pub(super) objects: ObjectStore,
    pub(super) sessions: SessionTable,
    /// Temporary TSB keys of session key pairs (`CKA_TOKEN` false), see session_keys.rs.
    pub(super) session_keys: SessionKeys,
    pub(super) login: Mutex<Login>,
    pub(super) serial: String,
    /// False when the application forbade creating threads (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`).
    pub(super) may_spawn_threads: bool,
    /// The last `C_Login` as user failed with a wrong PIN (`CKF_USER_PIN_COUNT_LOW`).
    pub(super) pin_failed: AtomicBool,
}

/// A temporary key this process created.
#[derive(Clone, Debug)]
pub(super) struct SessionKey {
    /// The session that created it: closing it deletes the key.
    pub(super) session: CK_SESSION_HANDLE,
    /// The application's `CKA_LABEL` (shown as the objects' `CKA_LABEL`).
    pub(super) app_label: String,
    /// The application destroyed the public key object (the key stays for the private one).
    pub(super) public_hidden: bool,
}

/// The temporary keys of this process, by TSB label.
#[derive(Default)]
pub(crate) struct SessionKeys {
    pub(super) keys: Mutex<HashMap<String, SessionKey>>,
}

impl SessionKeys {
    pub(super) fn insert(&self, label: &str, session: CK_SESSION_HANDLE, app_label: &str) {
        self.keys.lock().insert(
            label.to_string(),
            SessionKey {
                session,
                app_label: app_label.to_string(),
                public_hidden: false,
            },
        );
    }

    /// True when this process created the temporary key `label` (and has not deleted it).
    pub(crate) fn is_own(&self, label: &str) -> bool {
        self.keys.lock().contains_key(label)
    }

    /// The TSB labels of all own temporary keys.
    pub(crate) fn labels(&self) -> Vec<String> {
        self.keys.lock().keys().cloned().collect()
    }

    /// The TSB labels of the own temporary keys the application labelled `app_label`.
    pub(crate) fn with_app_label(&self, app_label: &[u8]) -> Vec<String> {
        self.keys
            .lock()
            .iter()
            .filter(|(_, k)| k.app_label.as_bytes() == app_label)
            .map(|(l, _)| l.clone())
            .collect()
    }

    pub(super) fn forget(&self, label: &str) {
        self.keys.lock().remove(label);
    }

    /// Takes the keys of `session` out of the table (they are about to be deleted).
    pub(super) fn take_session(&self, session: CK_SESSION_HANDLE) -> Vec<String> {
        let mut keys = self.keys.lock();
        let labels: Vec<String> = keys
            .iter()
            .filter(|(_, k)| k.session == session)
            .map(|(l, _)| l.clone())
            .collect();
        for l in &labels {
            keys.remove(l);
        }
        labels
    }

    pub(super) fn take_all(&self) -> Vec<String> {
        self.keys.lock().drain().map(|(l, _)| l).collect()
    }
}
