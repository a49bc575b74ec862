//! Waiting for Smart Key Attributes approvals inside `C_Sign` (TSB `POST /v1/sign`, then
//! `GET /v1/request/{id}` until a terminal status; `DELETE /v1/request/{id}` when the caller
//! gives up).
//!
//! Polling starts after `pollIntervalMs` and backs off by half again each time up to
//! `pollIntervalMaxMs`; a change of status (e.g. to `APPROVED`) resets the interval, so the
//! signature is picked up promptly once the TSB's timer job executes the request.
//!
//! A cancellation (`C_SessionCancel`, `C_CloseSession`, `C_Finalize`, the `Notify` callback)
//! and the deadline end the wait promptly even while a poll is in flight: unless the
//! application forbade threads (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`), each poll runs on a
//! short-lived helper thread that the waiting thread can walk away from, and the `DELETE` of a
//! request given up on is awaited for at most [`CANCEL_WAIT`] (it carries on in the background
//! when the TSB is slow to answer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use parking_lot::{Condvar, Mutex};

use super::session::{CancelReason, Session};
use super::Backend;
use crate::config::ModuleSettings;
use crate::error::{map_tsb_error, CredentialContext, Error, Result};
use crate::logging::{sanitize, Net, NetList};
use crate::tsb::{RequestState, RequestStatus, TsbError, TsbReason};

/// How long giving up waits for the TSB to confirm the `DELETE` of the request.
pub const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// Helper threads still running (a poll or a cancellation the waiting thread walked away from).
/// `C_Finalize` waits for them, so no thread runs module code after it returns (a host may
/// `dlclose` the module next).
static BACKGROUND: (Mutex<usize>, Condvar) = (parking_lot::const_mutex(0), Condvar::new());

/// Counts a helper thread from its spawn to its end.
struct Background;

impl Background {
    fn start() -> Background {
        *BACKGROUND.0.lock() += 1;
        Background
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let mut n = BACKGROUND.0.lock();
        *n = n.saturating_sub(1);
        BACKGROUND.1.notify_all();
    }
}

/// Spawns a helper thread that is counted until it ends.
fn spawn_counted(name: &str, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let token = Background::start();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _counted = token;
            job()
        })
        .map(|_| ())
}

/// Waits until no helper thread runs, at most `limit`; returns how many still run.
pub fn wait_for_background(limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut n = BACKGROUND.0.lock();
    while *n > 0 {
        if BACKGROUND.1.wait_until(&mut n, deadline).timed_out() {
            break;
        }
    }
    *n
}

/// Waits for request `id` to reach a terminal status; returns the signature on `EXECUTED`.
/// Every way out other than `EXECUTED`, `REJECTED`, `EXPIRED`, `CANCELLED` or `FAILED`
/// cancels the request on the TSB, so no approver approves a request nobody waits for.
/// `threads`: whether helper threads may be used (see the module documentation).
pub(crate) fn wait(
    client: &Arc<dyn Backend>,
    id: &str,
    label: &str,
    settings: &ModuleSettings,
    session: &Arc<Session>,
    threads: bool,
) -> Result<Vec<u8>> {
    // The request id and label as log lines and error messages show them (network text).
    let (raw_id, raw_label) = (id, label);
    let (id, label) = (&sanitize(raw_id), &sanitize(raw_label));
    let started = Instant::now();
    let deadline = started + settings.approval_wait();
    // The journal gets the outcome of every way out (see `crate::journal`).
    let journal = crate::journal::setting(settings);
    let outcome = |status: &str, reason: &str| {
        crate::journal::outcome(&journal, raw_id, raw_label, status, Some(reason));
    };
    let mut interval = settings.poll_interval;
    let mut last: Option<(RequestState, Vec<String>, Vec<String>)> = None;
    let give_up = |why: Error| -> Error {
        cancel_on_tsb(client, raw_id, label, threads);
        outcome("CANCELLED", why.message());
        why
    };
    let timed_out = || {
        log::warn!(
            "approval request {id} (key '{label}'): no decision within {}s; giving up",
            settings.approval_wait().as_secs()
        );
        give_up(Error::new(
            CKR_FUNCTION_CANCELED,
            format!("approval request {id} timed out"),
        ))
    };
    let stopped = |reason: CancelReason| {
        log::info!("approval request {id} (key '{label}'): {reason:?}; giving up");
        give_up(reason.error())
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out());
        }
        let nap = interval.min(deadline - now);
        if let Some(reason) = session.cancel.sleep(nap) {
            return Err(stopped(reason));
        }
        if let Some(surrender) = session.surrender.as_ref() {
            if surrender() {
                log::info!("approval request {id} (key '{label}'): the application cancelled");
                return Err(give_up(CancelReason::Cancelled.error()));
            }
        }
        let status = match poll(client, raw_id, session, threads, deadline) {
            Polled::Status(Ok(s)) => s,
            Polled::Status(Err(e)) if e.reason() == Some(TsbReason::RequestNotFound) => {
                outcome("GONE", "the TSB no longer knows the request");
                return Err(map_tsb_error(&e, CredentialContext::Configured));
            }
            Polled::Status(Err(e)) => {
                log::warn!(
                    "approval request {id}: poll failed ({}); retrying",
                    Net(&e.to_string())
                );
                interval = next_interval(interval, settings);
                continue;
            }
            Polled::Stopped(reason) => return Err(stopped(reason)),
            Polled::Deadline => return Err(timed_out()),
        };
        let seen = (
            status.state.clone(),
            status.approved_by.clone(),
            status.not_yet_approved_by.clone(),
        );
        if last.as_ref() != Some(&seen) {
            log_progress(id, label, &status, started.elapsed());
            let state_changed = last.as_ref().map(|l| &l.0) != Some(&status.state);
            last = Some(seen);
            if state_changed {
                interval = settings.poll_interval;
            }
        } else {
            interval = next_interval(interval, settings);
        }
        if status.state.is_terminal() {
            outcome(state_name(&status.state), "final status on the TSB");
        }
        match status.state {
            RequestState::Executed => {
                return status.result.ok_or_else(|| {
                    Error::new(
                        CKR_DEVICE_ERROR,
                        format!("request {id} is EXECUTED but carries no signature"),
                    )
                })
            }
            RequestState::Rejected => {
                return Err(Error::new(
                    CKR_FUNCTION_REJECTED,
                    format!(
                        "approval request {id} was rejected by {}",
                        NetList(&status.rejected_by)
                    ),
                ))
            }
            RequestState::Expired | RequestState::Cancelled => {
                return Err(Error::new(
                    CKR_FUNCTION_CANCELED,
                    format!(
                        "approval request {id} is {}",
                        Net(state_name(&status.state))
                    ),
                ))
            }
            RequestState::Failed => {
                return Err(Error::new(
                    CKR_DEVICE_ERROR,
                    format!("approval request {id} FAILED on the TSB"),
                ))
            }
            RequestState::Pending | RequestState::Approved | RequestState::Other(_) => {}
        }
    }
}

/// The outcome of one poll.
enum Polled {
    Status(std::result::Result<RequestStatus, TsbError>),
    /// The wait was cancelled while the poll was in flight (its answer is dropped).
    Stopped(CancelReason),
    /// The deadline passed while the poll was in flight.
    Deadline,
}

/// `GET /v1/request/{id}` on a helper thread, waiting for its answer, a cancellation or the
/// deadline, whichever comes first. Without threads (or when none can be started), inline.
fn poll(
    client: &Arc<dyn Backend>,
    id: &str,
    session: &Arc<Session>,
    threads: bool,
    deadline: Instant,
) -> Polled {
    if !threads {
        return Polled::Status(client.request_status(id));
    }
    let slot = Arc::new(Mutex::new(None));
    let job = {
        let (client, id, slot, session) = (
            client.clone(),
            id.to_string(),
            slot.clone(),
            session.clone(),
        );
        move || {
            let status = client.request_status(&id);
            *slot.lock() = Some(status);
            session.cancel.poke();
        }
    };
    if let Err(e) = spawn_counted("tsb-pkcs11-poll", job) {
        log::debug!("cannot start a poll thread ({e}); polling inline");
        return Polled::Status(client.request_status(id));
    }
    match session.cancel.wait_for(deadline, || slot.lock().is_some()) {
        Err(reason) => Polled::Stopped(reason),
        Ok(true) => Polled::Status(slot.lock().take().expect("the poll thread answered")),
        Ok(false) => Polled::Deadline,
    }
}

/// `DELETE /v1/request/{id}` (`label` already sanitised): waits up to [`CANCEL_WAIT`] for the TSB's answer (with threads;
/// the call carries on in the background after that), or until it ends (without).
fn cancel_on_tsb(client: &Arc<dyn Backend>, id: &str, label: &str, threads: bool) {
    fn cancel(client: &dyn Backend, raw_id: &str, label: &str) {
        let id = sanitize(raw_id);
        match client.cancel_request(raw_id) {
            Ok(()) => log::info!("approval request {id} (key '{label}') cancelled on the TSB"),
            Err(e) => log::warn!(
                "approval request {id}: cancelling on the TSB failed: {}",
                Net(&e.to_string())
            ),
        }
    }
    if !threads {
        return cancel(client.as_ref(), id, label);
    }
    let shown_id = sanitize(id);
    let (tx, rx) = std::sync::mpsc::channel();
    let job = {
        let (client, id, label) = (client.clone(), id.to_string(), label.to_string());
        move || {
            cancel(client.as_ref(), &id, &label);
            let _ = tx.send(());
        }
    };
    match spawn_counted("tsb-pkcs11-cancel", job) {
        Ok(_) => {
            if rx.recv_timeout(CANCEL_WAIT).is_err() {
                log::warn!(
                    "approval request {shown_id} (key '{label}'): the TSB has not confirmed the \
                     cancellation within {} ms; it carries on in the background",
                    CANCEL_WAIT.as_millis()
                );
            }
        }
        Err(e) => {
            log::debug!("cannot start a thread for the cancellation ({e}); cancelling inline");
            cancel(client.as_ref(), id, label);
        }
    }
}

fn next_interval(current: Duration, settings: &ModuleSettings) -> Duration {
    (current + current / 2).min(settings.poll_interval_max.max(settings.poll_interval))
}

/// The TSB's name of a status (`PENDING`, `APPROVED`, ...), as approvers and operators know it.
fn state_name(state: &RequestState) -> &str {
    match state {
        RequestState::Pending => "PENDING",
        RequestState::Approved => "APPROVED",
        RequestState::Executed => "EXECUTED",
        RequestState::Rejected => "REJECTED",
        RequestState::Expired => "EXPIRED",
        RequestState::Cancelled => "CANCELLED",
        RequestState::Failed => "FAILED",
        RequestState::Other(s) => s,
    }
}

fn log_progress(id: &str, label: &str, s: &RequestStatus, elapsed: Duration) {
    let secs = elapsed.as_secs_f32();
    match s.state {
        RequestState::Executed => {
            log::info!("approval request {id} (key '{label}') EXECUTED after {secs:.1}s")
        }
        RequestState::Rejected => log::info!(
            "approval request {id} (key '{label}') REJECTED by {} after {secs:.1}s",
            NetList(&s.rejected_by)
        ),
        RequestState::Expired | RequestState::Cancelled | RequestState::Failed => log::info!(
            "approval request {id} (key '{label}') {} after {secs:.1}s: approved by [{}], \
             not approved by [{}]",
            Net(state_name(&s.state)),
            NetList(&s.approved_by),
            NetList(&s.not_yet_approved_by)
        ),
        RequestState::Approved => log::info!(
            "approval request {id} (key '{label}') APPROVED by [{}]: quorum reached, waiting for \
             the TSB to execute it",
            NetList(&s.approved_by)
        ),
        _ => log::info!(
            "approval request {id} (key '{label}') {}: approved by [{}], waiting for [{}]",
            Net(state_name(&s.state)),
            NetList(&s.approved_by),
            NetList(&s.not_yet_approved_by)
        ),
    }
}
