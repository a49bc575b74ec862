//! Waiting for Smart Key Attributes approvals inside `C_Sign` (TSB `POST /v1/sign`, then
//! `GET /v1/request/{id}` until a terminal status; `DELETE /v1/request/{id}` when the caller
//! gives up).
//!
//! Polling starts after `pollIntervalMs` and backs off by half again each time up to
//! `pollIntervalMaxMs`; a change of status (e.g. to `APPROVED`) resets the interval, so the
//! signature is picked up promptly once the TSB's timer job executes the request.

use std::time::{Duration, Instant};

use cryptoki_sys::*;

use super::session::{CancelReason, Session};
use crate::config::ModuleSettings;
use crate::error::{map_tsb_error, CredentialContext, Error, Result};
use crate::tsb::{RequestState, RequestStatus, TsbClient};

/// Waits for request `id` to reach a terminal status; returns the signature on `EXECUTED`.
/// Every way out other than `EXECUTED`, `REJECTED`, `EXPIRED`, `CANCELLED` or `FAILED`
/// cancels the request on the TSB, so no approver approves a request nobody waits for.
pub fn wait(
    client: &TsbClient,
    id: &str,
    label: &str,
    settings: &ModuleSettings,
    session: &Session,
) -> Result<Vec<u8>> {
    let started = Instant::now();
    let deadline = started + settings.approval_timeout;
    let mut interval = settings.poll_interval;
    let mut last: Option<(RequestState, Vec<String>, Vec<String>)> = None;
    let give_up = |why: Error| -> Error {
        match client.cancel_request(id) {
            Ok(()) => log::info!("approval request {id} (key '{label}') cancelled on the TSB"),
            Err(e) => log::warn!("approval request {id}: cancelling on the TSB failed: {e}"),
        }
        why
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            log::warn!(
                "approval request {id} (key '{label}'): no decision within {}s; giving up",
                settings.approval_timeout.as_secs()
            );
            return Err(give_up(Error::new(
                CKR_FUNCTION_CANCELED,
                format!("approval request {id} timed out"),
            )));
        }
        let nap = interval.min(deadline - now);
        if let Some(reason) = session.cancel.sleep(nap) {
            log::info!("approval request {id} (key '{label}'): {reason:?}; giving up");
            return Err(give_up(reason.error()));
        }
        if let Some(surrender) = session.surrender.as_ref() {
            if surrender() {
                log::info!("approval request {id} (key '{label}'): the application cancelled");
                return Err(give_up(CancelReason::Cancelled.error()));
            }
        }
        let status = match client.request_status(id) {
            Ok(s) => s,
            Err(e) if e.tsb_code() == Some(651) => {
                return Err(map_tsb_error(&e, CredentialContext::Configured));
            }
            Err(e) => {
                log::warn!("approval request {id}: poll failed ({e}); retrying");
                interval = next_interval(interval, settings);
                continue;
            }
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
                        status.rejected_by.join(", ")
                    ),
                ))
            }
            RequestState::Expired | RequestState::Cancelled => {
                return Err(Error::new(
                    CKR_FUNCTION_CANCELED,
                    format!("approval request {id} is {:?}", status.state),
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
            s.rejected_by.join(", ")
        ),
        RequestState::Expired | RequestState::Cancelled | RequestState::Failed => log::info!(
            "approval request {id} (key '{label}') {} after {secs:.1}s: approved by [{}], \
             not approved by [{}]",
            state_name(&s.state),
            s.approved_by.join(", "),
            s.not_yet_approved_by.join(", ")
        ),
        _ => log::info!(
            "approval request {id} (key '{label}') {}: approved by [{}], waiting for [{}]",
            state_name(&s.state),
            s.approved_by.join(", "),
            s.not_yet_approved_by.join(", ")
        ),
    }
}
