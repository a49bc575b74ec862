//! Session key pairs: `C_GenerateKeyPair` with `CKA_TOKEN` false, the default (PKCS#11 v3.0
//! §4.4). The TSB has no session keys, so the pair is a TEMPORARY TSB key that the module
//! deletes when the object's lifetime ends: at `C_CloseSession` of the session that created
//! it, at `C_CloseAllSessions`, when the application destroys the private key object, and at
//! `C_Finalize` (within [`FINALIZE_BOUND`]). A deletion that fails or does not finish in
//! time is logged at WARN with the TSB label and journalled (`keyNotDeleted`, src/journal.rs).
//!
//! A temporary key's TSB label is [`SESSION_KEY_PREFIX`] followed by 32 random hex digits. Keys
//! with that prefix that this process did not create are never listed (another process's
//! session objects are not this one's, §4.4). The objects show the application's `CKA_LABEL`
//! (empty when it gave none) and `CKA_TOKEN` false, and the module deletes them even where
//! `pkcs11.allowKeyDeletion` is false. docs/objects-and-mechanisms.md describes the rules.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cryptoki_sys::*;
use parking_lot::Mutex;

use super::attributes::{self, AttrValue};
use super::objects::{KeyPart, ObjectRef};
use super::state::{Token, FINALIZE_BOUND};
use crate::error::{map_tsb_error, Error, Result};
use crate::logging::Net;

/// The TSB label prefix of temporary keys (session key pairs).
pub(crate) const SESSION_KEY_PREFIX: &str = "tsb-pkcs11-session-";

/// True for a TSB label of a temporary key (of this or another process).
pub(crate) fn is_session_label(label: &str) -> bool {
    label.starts_with(SESSION_KEY_PREFIX)
}

/// A fresh TSB label for a temporary key: the prefix and 128 random bits in hex.
pub(crate) fn new_session_label() -> Result<String> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::new(CKR_FUNCTION_FAILED, "no random bytes for a key label"))?;
    Ok(format!("{SESSION_KEY_PREFIX}{}", hex::encode(bytes)))
}

/// How many temporary keys `C_Finalize` deletes at once.
const PARALLEL_DELETES: usize = 4;

impl Token {
    /// True when `obj` is the public key object of an own temporary key the application
    /// destroyed: it is gone for the application (`CKR_OBJECT_HANDLE_INVALID`).
    pub(super) fn hidden(&self, obj: &ObjectRef) -> bool {
        match obj {
            ObjectRef::Key(k, KeyPart::Public) => self
                .session_keys
                .keys
                .lock()
                .get(&k.label)
                .is_some_and(|s| s.public_hidden),
            _ => false,
        }
    }

    /// An object by handle, as the application may see it (a destroyed public key object of a
    /// temporary key is gone).
    pub(super) fn object(&self, handle: CK_OBJECT_HANDLE) -> Result<ObjectRef> {
        let obj = self.objects.lookup(handle)?;
        if self.hidden(&obj) {
            return Err(Error::rv(CKR_OBJECT_HANDLE_INVALID));
        }
        Ok(obj)
    }

    /// An attribute of an object: [`attributes::attribute`], with the storage attributes of a
    /// temporary key's objects (§4.4): `CKA_TOKEN` false, the application's `CKA_LABEL`, and
    /// `CKA_DESTROYABLE` true (the module deletes its own temporary keys).
    pub(super) fn attribute(
        &self,
        obj: &ObjectRef,
        attr: CK_ATTRIBUTE_TYPE,
        private_objects: bool,
    ) -> AttrValue {
        if let ObjectRef::Key(k, _) = obj {
            if matches!(attr, CKA_TOKEN | CKA_LABEL | CKA_DESTROYABLE) {
                let app_label = self
                    .session_keys
                    .keys
                    .lock()
                    .get(&k.label)
                    .map(|s| s.app_label.clone());
                if let Some(app_label) = app_label {
                    return AttrValue::Bytes(match attr {
                        CKA_TOKEN => vec![CK_FALSE],
                        CKA_LABEL => app_label.into_bytes(),
                        _ => vec![CK_TRUE],
                    });
                }
            }
        }
        attributes::attribute(obj, attr, private_objects)
    }

    /// Records a temporary key just created on the TSB for `session`. When that session was
    /// closed meanwhile, the key is deleted at once and `CKR_SESSION_CLOSED` returned.
    pub(super) fn register_session_key(
        &self,
        label: &str,
        session: CK_SESSION_HANDLE,
        app_label: &str,
    ) -> Result<()> {
        self.session_keys.insert(label, session, app_label);
        if self.sessions.get(session).is_err() {
            let labels = self.session_keys.take_session(session);
            self.delete_session_keys(labels, None, "its session was closed");
            return Err(Error::new(
                CKR_SESSION_CLOSED,
                "the session was closed during key generation",
            ));
        }
        Ok(())
    }

    /// Deletes a temporary key whose creation could not be completed (no object refers to it).
    pub(super) fn discard_session_key(&self, label: &str) {
        self.session_keys.forget(label);
        self.delete_session_keys(vec![label.to_string()], None, "its creation failed");
    }

    /// Hides the public key object of an own temporary key (`C_DestroyObject`, §5.7): the TSB
    /// key stays for the private key object.
    pub(super) fn hide_session_public_key(&self, label: &str) -> bool {
        match self.session_keys.keys.lock().get_mut(label) {
            Some(k) => {
                k.public_hidden = true;
                true
            }
            None => false,
        }
    }

    /// `C_DestroyObject` on the private key object of an own temporary key: deletes it on the
    /// TSB whatever `pkcs11.allowKeyDeletion` says. A failure is returned (the key stays, and is
    /// deleted again when its session closes).
    pub(super) fn destroy_session_key(&self, label: &str) -> Result<()> {
        // A temporary key is created without a password (its label is generated, so none is
        // configured for it).
        match self.client()?.delete_key(label, None) {
            Ok(()) => {}
            Err(e) if e.is_key_not_found() => {
                log::info!("temporary key '{label}' was already deleted: {e}")
            }
            Err(e) => return Err(map_tsb_error(&e, self.credential_context())),
        }
        log::info!("deleted temporary key '{label}' (a session key pair) on the TSB");
        self.session_keys.forget(label);
        self.objects.store_gone(label);
        Ok(())
    }

    /// `C_CloseSession`: deletes the temporary keys the session created.
    pub(super) fn delete_keys_of_session(&self, session: CK_SESSION_HANDLE) {
        let labels = self.session_keys.take_session(session);
        self.delete_session_keys(labels, None, "its session was closed");
    }

    /// `C_CloseAllSessions` (`deadline` None) and `C_Finalize`: deletes every temporary key.
    pub(super) fn delete_all_session_keys(&self, deadline: Option<Instant>, when: &str) {
        let labels = self.session_keys.take_all();
        self.delete_session_keys(labels, deadline, when);
    }

    /// Deletes temporary keys on the TSB; each one not deleted is logged at WARN and journalled.
    /// With a deadline (`C_Finalize`) and threads, up to [`PARALLEL_DELETES`] helper threads
    /// delete them and this call returns by the deadline whatever the TSB does; a deletion still
    /// running then ends on its own (within `requestTimeoutMs`) and touches no token state.
    /// Without threads a deletion is only started before the deadline.
    fn delete_session_keys(&self, labels: Vec<String>, deadline: Option<Instant>, when: &str) {
        if labels.is_empty() {
            return;
        }
        for l in &labels {
            self.objects.store_gone(l);
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                for l in &labels {
                    self.session_key_not_deleted(l, &format!("no TSB client: {}", e.message()));
                }
                return;
            }
        };
        let delete =
            |client: &dyn super::Backend, label: &str| -> std::result::Result<(), String> {
                match client.delete_key(label, None) {
                    Ok(()) => Ok(()),
                    Err(e) if e.is_key_not_found() => Ok(()),
                    Err(e) => Err(Net(&e.to_string()).to_string()),
                }
            };
        let Some(deadline) = deadline.filter(|_| self.may_spawn_threads) else {
            for label in &labels {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    self.session_key_not_deleted(label, &format!("not deleted in time ({when})"));
                    continue;
                }
                match delete(client.as_ref(), label) {
                    Ok(()) => log::info!("deleted temporary key '{label}' on the TSB ({when})"),
                    Err(e) => self.session_key_not_deleted(label, &format!("{when}: {e}")),
                }
            }
            return;
        };
        // C_Finalize: helper threads, so a hanging TSB cannot hold up the caller.
        let queue = Arc::new(Mutex::new(labels.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<(String, std::result::Result<(), String>)>();
        let mut workers = 0;
        for _ in 0..PARALLEL_DELETES.min(labels.len()) {
            let (queue, stop, tx, client) =
                (queue.clone(), stop.clone(), tx.clone(), client.clone());
            let job = move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(label) = queue.lock().pop() else {
                        break;
                    };
                    let result = delete(client.as_ref(), &label);
                    if tx.send((label, result)).is_err() {
                        break;
                    }
                }
            };
            match super::approval::spawn_counted("tsb-pkcs11-delete", job) {
                Ok(()) => workers += 1,
                Err(e) => {
                    log::debug!("cannot start a thread to delete temporary keys: {e}");
                    break;
                }
            }
        }
        drop(tx);
        let mut pending: std::collections::HashSet<String> = labels.into_iter().collect();
        if workers > 0 {
            while !pending.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok((label, result)) => {
                        pending.remove(&label);
                        match result {
                            Ok(()) => {
                                log::info!("deleted temporary key '{label}' on the TSB ({when})")
                            }
                            Err(e) => self.session_key_not_deleted(&label, &format!("{when}: {e}")),
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        let mut left: Vec<String> = pending.into_iter().collect();
        left.sort();
        for label in left {
            self.session_key_not_deleted(
                &label,
                &format!(
                    "{when}: the TSB did not confirm the deletion within the bound of {} ms",
                    FINALIZE_BOUND.as_millis()
                ),
            );
        }
    }

    /// A temporary key left on the TSB: WARN with its TSB label, and a journal line.
    fn session_key_not_deleted(&self, label: &str, reason: &str) {
        log::warn!(
            "temporary key '{label}' (a session key pair) was not deleted on the TSB: {reason}; \
             delete it by hand"
        );
        crate::journal::key_not_deleted(
            &crate::journal::setting(&self.config.pkcs11),
            self.config.rest_api(),
            label,
            reason,
        );
    }
}
