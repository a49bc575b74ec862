//! Sessions (PKCS#11 v2.40 §5.6): a table of handles to per-session state. Each session has
//! its own lock, so a slow or waiting operation in one session never blocks another, and a
//! cancellation signal that other threads can raise without taking that lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use parking_lot::{Condvar, Mutex, RwLock};

use super::operations::{DigestOp, FindOp, SignOp, VerifyOp};
use crate::error::{Error, Result};

/// Why a waiting operation was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CancelReason {
    /// `C_SessionCancel` (PKCS#11 3.0 §5.6) or the application's `Notify` callback.
    Cancelled,
    /// `C_CloseSession` / `C_CloseAllSessions` from another thread.
    SessionClosed,
    /// `C_Finalize` from another thread.
    Finalized,
}

impl CancelReason {
    /// The return value of the interrupted call.
    pub(crate) fn error(self) -> Error {
        match self {
            CancelReason::Cancelled => {
                Error::new(CKR_FUNCTION_CANCELED, "the operation was cancelled")
            }
            CancelReason::SessionClosed => Error::new(
                CKR_SESSION_CLOSED,
                "the session was closed during the operation",
            ),
            CancelReason::Finalized => Error::new(
                CKR_CRYPTOKI_NOT_INITIALIZED,
                "C_Finalize was called during the operation",
            ),
        }
    }
}

/// A cancellation signal with a prompt wake-up for sleepers.
#[derive(Default)]
pub(crate) struct Cancel {
    reason: Mutex<Option<CancelReason>>,
    wake: Condvar,
}

impl Cancel {
    /// Raises the signal. A session that is closed or finalized stays so.
    pub(crate) fn trigger(&self, reason: CancelReason) {
        let mut r = self.reason.lock();
        if !matches!(
            *r,
            Some(CancelReason::SessionClosed | CancelReason::Finalized)
        ) {
            *r = Some(reason);
        }
        self.wake.notify_all();
    }

    pub(crate) fn check(&self) -> Option<CancelReason> {
        *self.reason.lock()
    }

    /// Clears a `C_SessionCancel` left over from an earlier operation (a new operation starts).
    pub(crate) fn reset(&self) {
        let mut r = self.reason.lock();
        if *r == Some(CancelReason::Cancelled) {
            *r = None;
        }
    }

    /// Wakes the sleepers without raising the signal: a helper thread has finished the work
    /// a [`Cancel::wait_for`] waits for.
    pub(crate) fn poke(&self) {
        let _r = self.reason.lock();
        self.wake.notify_all();
    }

    /// Waits until `done()` holds (`Ok(true)`), `deadline` passes (`Ok(false)`) or the signal is
    /// raised (`Err(reason)`, which wins over `done`). Whoever makes `done()` true must call
    /// [`Cancel::poke`] afterwards.
    pub(crate) fn wait_for(
        &self,
        deadline: Instant,
        done: impl Fn() -> bool,
    ) -> std::result::Result<bool, CancelReason> {
        let mut r = self.reason.lock();
        loop {
            if let Some(reason) = *r {
                return Err(reason);
            }
            if done() {
                return Ok(true);
            }
            if self.wake.wait_until(&mut r, deadline).timed_out() {
                return match *r {
                    Some(reason) => Err(reason),
                    None => Ok(done()),
                };
            }
        }
    }

    /// Sleeps up to `duration`, returning early with the reason when the signal is raised.
    pub(crate) fn sleep(&self, duration: Duration) -> Option<CancelReason> {
        let deadline = Instant::now() + duration;
        let mut r = self.reason.lock();
        while r.is_none() {
            if self.wake.wait_until(&mut r, deadline).timed_out() {
                break;
            }
        }
        *r
    }
}

/// The application's `Notify` callback (`C_OpenSession`), asked with `CKN_SURRENDER` at each
/// poll of a long wait; returns true when the application wants to cancel (`CKR_CANCEL`).
pub type Surrender = Box<dyn Fn() -> bool + Send + Sync>;

/// The active operations of a session (one of each kind at a time, PKCS#11 v2.40 §5.2).
#[derive(Default)]
pub(crate) struct Operations {
    pub(crate) find: Option<FindOp>,
    pub(crate) digest: Option<DigestOp>,
    pub(crate) sign: Option<SignOp>,
    pub(crate) verify: Option<VerifyOp>,
    /// A `C_Sign` / `C_SignFinal` of this session is at the TSB (possibly waiting for
    /// approvals). Its operation has been taken out and this lock released, so other calls on
    /// the session (and the application's `Notify` callback) answer at once; signing calls get
    /// `CKR_OPERATION_ACTIVE` until it returns.
    pub(crate) signing: bool,
}

/// Marks a session as signing while alive (see [`Operations::signing`]); the mark goes when
/// the signature call ends, however it ends. Created with the session's lock held (the
/// caller sets the flag), dropped without it.
pub(crate) struct Signing<'a>(&'a Session);

impl<'a> Signing<'a> {
    pub(crate) fn start(session: &'a Session, ops: &mut Operations) -> Signing<'a> {
        ops.signing = true;
        Signing(session)
    }
}

impl Drop for Signing<'_> {
    fn drop(&mut self) {
        self.0.ops.lock().signing = false;
    }
}

pub(crate) struct Session {
    pub(crate) read_write: bool,
    pub(crate) cancel: Cancel,
    pub(crate) surrender: Option<Surrender>,
    pub(crate) ops: Mutex<Operations>,
}

/// The last session handle given out in this process. Process-wide and never reset, so a
/// handle is never reused, not even across `C_Finalize` + `C_Initialize`: a stale handle an
/// application kept gives `CKR_SESSION_HANDLE_INVALID` instead of acting on another session.
static LAST_HANDLE: AtomicU64 = AtomicU64::new(0);

/// All open sessions. The table lock is held only to look up, insert or remove a handle.
#[derive(Default)]
pub(crate) struct SessionTable {
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<Session>>>,
}

impl SessionTable {
    pub(crate) fn open(&self, read_write: bool, surrender: Option<Surrender>) -> CK_SESSION_HANDLE {
        let handle = LAST_HANDLE.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(Session {
            read_write,
            cancel: Cancel::default(),
            surrender,
            ops: Mutex::new(Operations::default()),
        });
        self.sessions.write().insert(handle, session);
        handle
    }

    pub(crate) fn get(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Session>> {
        self.sessions
            .read()
            .get(&handle)
            .cloned()
            .ok_or_else(|| Error::rv(CKR_SESSION_HANDLE_INVALID))
    }

    /// Removes a session; a thread still waiting in it is woken and ends with `CKR_SESSION_CLOSED`.
    pub(crate) fn close(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let session = self
            .sessions
            .write()
            .remove(&handle)
            .ok_or_else(|| Error::rv(CKR_SESSION_HANDLE_INVALID))?;
        session.cancel.trigger(CancelReason::SessionClosed);
        Ok(())
    }

    pub(crate) fn close_all(&self, reason: CancelReason) {
        let all: Vec<_> = self.sessions.write().drain().map(|(_, s)| s).collect();
        for s in all {
            s.cancel.trigger(reason);
        }
    }

    /// True when a read-only session is open (`C_Login` as SO refuses then, §5.6).
    pub(crate) fn any_read_only(&self) -> bool {
        self.sessions.read().values().any(|s| !s.read_write)
    }

    pub(crate) fn count(&self) -> (usize, usize) {
        let map = self.sessions.read();
        let rw = map.values().filter(|s| s.read_write).count();
        (map.len(), rw)
    }
}
