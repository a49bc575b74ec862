//! Waiting for Smart Key Attributes approvals inside `C_Sign` (TSB `POST /v1/sign`, then
//! `GET /v1/request/{id}` until a terminal status; `DELETE /v1/request/{id}` when the caller
//! gives up).
//!
//! How long the wait lasts ([`wait_limit`]): `approvalTimeoutSecs` when it is set; otherwise
//! as long as the TSB keeps the request alive, i.e. the key policy's timeout plus a short grace
//! (so the module sees `EXPIRED` from the TSB rather than giving up a moment before), capped
//! at [`MAX_APPROVAL_WAIT`] (24 h) for a policy without a timeout, and
//! [`DEFAULT_APPROVAL_TIMEOUT`] when the key's policy is not known.
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

use super::objects::RequestLifetime;
use super::session::{CancelReason, Session};
use super::Backend;
use crate::config::{ModuleSettings, DEFAULT_APPROVAL_TIMEOUT, MAX_APPROVAL_WAIT};
use crate::error::{map_tsb_error, CredentialContext, Error, Result};
use crate::logging::{sanitize, Net, NetList};
use crate::tsb::{RequestState, RequestStatus, TsbError, TsbReason};

/// How long giving up waits for the TSB to confirm the `DELETE` of the request.
pub(crate) const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// Added to a key policy's timeout when that timeout bounds the wait: the TSB expires a request
/// `timeout` seconds after it created it, and the module should see that `EXPIRED` (one poll,
/// at most `pollIntervalMaxMs` apart, plus this for the TSB's clock and the network).
pub(crate) const POLICY_GRACE: Duration = Duration::from_secs(10);

/// How long `C_Sign` waits for a decision on a request with `lifetime`, and why (for the log).
/// `approvalTimeoutSecs` wins when set; otherwise the request's lifetime on the TSB plus
/// [`POLICY_GRACE`] and one poll interval, capped at [`MAX_APPROVAL_WAIT`].
pub(crate) fn wait_limit(
    settings: &ModuleSettings,
    lifetime: RequestLifetime,
) -> (Duration, String) {
    if let Some(configured) = settings.approval_timeout {
        return (configured, "approvalTimeoutSecs".to_string());
    }
    match lifetime {
        RequestLifetime::Unknown => (
            DEFAULT_APPROVAL_TIMEOUT,
            "the default; the key's policy is not known".to_string(),
        ),
        RequestLifetime::Unlimited => (
            MAX_APPROVAL_WAIT,
            "the cap; the key's policy sets no timeout".to_string(),
        ),
        RequestLifetime::Expires(timeout) => {
            let poll = settings.poll_interval_max.max(settings.poll_interval);
            let limit = timeout
                .saturating_add(POLICY_GRACE)
                .saturating_add(poll)
                .min(MAX_APPROVAL_WAIT);
            (
                limit,
                format!("the key policy's timeout of {}s", timeout.as_secs()),
            )
        }
    }
}

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
pub(crate) fn spawn_counted(
    name: &str,
    job: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
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
pub(crate) fn wait_for_background(limit: Duration) -> usize {
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
/// `limit`: how long to wait at most (see [`wait_limit`]). `threads`: whether helper threads
/// may be used (see the module documentation).
pub(crate) fn wait(
    client: &Arc<dyn Backend>,
    id: &str,
    label: &str,
    settings: &ModuleSettings,
    limit: Duration,
    session: &Arc<Session>,
    threads: bool,
) -> Result<Vec<u8>> {
    // The request id and label as log lines and error messages show them (network text).
    let (raw_id, raw_label) = (id, label);
    let (id, label) = (&sanitize(raw_id), &sanitize(raw_label));
    let started = Instant::now();
    let deadline = started + limit;
    // The journal gets the outcome of every way out (see `crate::journal`).
    let journal = crate::journal::setting(settings);
    let outcome = |status: &str, reason: &str| {
        crate::journal::outcome(&journal, raw_id, raw_label, status, Some(reason));
    };
    let mut interval = settings.poll_interval;
    let mut last: Option<(RequestState, Vec<String>, Vec<String>)> = None;
    let give_up = |why: Error| -> Error {
        cancel_on_tsb(client, raw_id, raw_label, threads, &journal, why.message());
        why
    };
    let timed_out = || {
        log::warn!(
            "approval request {id} (key '{label}'): no decision within {}s; giving up",
            limit.as_secs()
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

/// `DELETE /v1/request/{id}` of a request given up on (for key `raw_label`), and its
/// journal outcome: `CANCELLED` when the TSB confirms it, else
/// [`crate::journal::CANCEL_UNCONFIRMED`] (the request may still be pending on the TSB). With
/// threads, the TSB's answer is awaited at most [`CANCEL_WAIT`]; the call carries on in the
/// background after that (no longer than `requestTimeoutMs`) and, if the TSB confirms it late,
/// appends a `CANCELLED` outcome. Without threads the call runs inline to its end.
fn cancel_on_tsb(
    client: &Arc<dyn Backend>,
    id: &str,
    raw_label: &str,
    threads: bool,
    journal: &crate::journal::Setting,
    why: &str,
) {
    let label = &sanitize(raw_label);
    fn cancel(client: &dyn Backend, raw_id: &str, label: &str) -> std::result::Result<(), String> {
        let id = sanitize(raw_id);
        match client.cancel_request(raw_id) {
            Ok(()) => {
                log::info!("approval request {id} (key '{label}') cancelled on the TSB");
                Ok(())
            }
            Err(e) => {
                let e = Net(&e.to_string()).to_string();
                log::warn!("approval request {id}: cancelling on the TSB failed: {e}");
                Err(e)
            }
        }
    }
    let record = |journal: &crate::journal::Setting,
                  id: &str,
                  result: std::result::Result<(), String>,
                  why: &str| {
        let (status, reason) = match result {
            Ok(()) => ("CANCELLED", why.to_string()),
            Err(e) => (
                crate::journal::CANCEL_UNCONFIRMED,
                format!("{why}; the TSB did not confirm the cancellation: {e}"),
            ),
        };
        crate::journal::outcome(journal, id, raw_label, status, Some(&reason));
    };
    if !threads {
        let result = cancel(client.as_ref(), id, label);
        return record(journal, id, result, why);
    }
    let shown_id = sanitize(id);
    let (tx, rx) = std::sync::mpsc::channel();
    // Set (under its lock) once the waiting thread walked away: the helper then journals a
    // late confirmation itself, after the `CANCEL_UNCONFIRMED` line.
    let abandoned = Arc::new(Mutex::new(false));
    let job = {
        let (client, id, label) = (client.clone(), id.to_string(), label.to_string());
        let (journal, why, abandoned) = (journal.clone(), why.to_string(), abandoned.clone());
        let raw_label = raw_label.to_string();
        move || {
            let result = cancel(client.as_ref(), &id, &label);
            let abandoned = abandoned.lock();
            if !*abandoned {
                let _ = tx.send(result);
            } else if result.is_ok() {
                crate::journal::outcome(
                    &journal,
                    &id,
                    &raw_label,
                    "CANCELLED",
                    Some(&format!("{why}; the TSB confirmed the cancellation late")),
                );
            }
        }
    };
    match spawn_counted("tsb-pkcs11-cancel", job) {
        Ok(_) => {
            let result = match rx.recv_timeout(CANCEL_WAIT) {
                Ok(r) => r,
                Err(_) => {
                    let mut gone = abandoned.lock();
                    match rx.try_recv() {
                        Ok(r) => r,
                        Err(_) => {
                            *gone = true;
                            log::warn!(
                                "approval request {shown_id} (key '{label}'): the TSB has not \
                                 confirmed the cancellation within {} ms; it carries on in the \
                                 background",
                                CANCEL_WAIT.as_millis()
                            );
                            // Written under the lock: a late confirmation comes after it.
                            return record(
                                journal,
                                id,
                                Err(format!("no answer within {} ms", CANCEL_WAIT.as_millis())),
                                why,
                            );
                        }
                    }
                }
            };
            record(journal, id, result, why)
        }
        Err(e) => {
            log::debug!("cannot start a thread for the cancellation ({e}); cancelling inline");
            let result = cancel(client.as_ref(), id, label);
            record(journal, id, result, why)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsb::Policy;
    use serde_json::json;

    fn policy(rule_use: serde_json::Value) -> Policy {
        serde_json::from_value(json!({ "ruleUse": rule_use })).expect("a policy")
    }

    fn token(timeout: u64, groups: usize) -> serde_json::Value {
        let groups: Vec<_> = (0..groups)
            .map(|i| {
                json!({"name": format!("g{i}"), "quorum": 1,
                            "approvals": [{"type": "public_key", "name": "alice", "value": "x"}]})
            })
            .collect();
        json!({"name": "t", "timelock": 0, "timeout": timeout, "groups": groups})
    }

    fn settings(configured: Option<u64>) -> ModuleSettings {
        ModuleSettings {
            approval_timeout: configured.map(Duration::from_secs),
            poll_interval: Duration::from_millis(1000),
            poll_interval_max: Duration::from_millis(10_000),
            ..ModuleSettings::default()
        }
    }

    #[test]
    fn lifetime_is_the_longest_timeout_of_the_tokens_with_groups() {
        let one = policy(json!({"tokens": [token(600, 1)]}));
        assert_eq!(
            RequestLifetime::of(Some(&one)),
            RequestLifetime::Expires(Duration::from_secs(600))
        );
        // Tokens are OR'ed: the request lives until the last of them times out.
        let two = policy(json!({"tokens": [token(120, 1), token(3600, 2)]}));
        assert_eq!(
            RequestLifetime::of(Some(&two)),
            RequestLifetime::Expires(Duration::from_secs(3600))
        );
        // A token without groups signs at once; its timeout does not count.
        let free = policy(json!({"tokens": [token(7200, 0), token(60, 1)]}));
        assert_eq!(
            RequestLifetime::of(Some(&free)),
            RequestLifetime::Expires(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_token_without_timeout_makes_the_request_unlimited() {
        let p = policy(json!({"tokens": [token(60, 1), token(0, 1)]}));
        assert_eq!(RequestLifetime::of(Some(&p)), RequestLifetime::Unlimited);
    }

    #[test]
    fn no_policy_or_no_approval_rule_is_unknown() {
        assert_eq!(RequestLifetime::of(None), RequestLifetime::Unknown);
        let empty: Policy = serde_json::from_value(json!({})).unwrap();
        assert_eq!(RequestLifetime::of(Some(&empty)), RequestLifetime::Unknown);
        let no_groups = policy(json!({"tokens": [token(60, 0)]}));
        assert_eq!(
            RequestLifetime::of(Some(&no_groups)),
            RequestLifetime::Unknown
        );
    }

    #[test]
    fn configured_timeout_wins_over_the_policy() {
        for lifetime in [
            RequestLifetime::Unknown,
            RequestLifetime::Unlimited,
            RequestLifetime::Expires(Duration::from_secs(60)),
        ] {
            let (limit, why) = wait_limit(&settings(Some(30)), lifetime);
            assert_eq!(limit, Duration::from_secs(30), "{lifetime:?}");
            assert_eq!(why, "approvalTimeoutSecs");
        }
    }

    /// docs/approvals.md, "Polling": each poll that finds nothing new waits half as long
    /// again, up to `pollIntervalMaxMs`; a cap below `pollIntervalMs` keeps the start.
    #[test]
    fn the_poll_interval_grows_by_half_up_to_its_cap() {
        let ms = Duration::from_millis;
        let s = settings(None);
        let mut interval = s.poll_interval;
        let mut seen = vec![];
        for _ in 0..8 {
            interval = next_interval(interval, &s);
            seen.push(interval.as_millis());
        }
        assert_eq!(seen, [1500, 2250, 3375, 5062, 7593, 10_000, 10_000, 10_000]);
        let low_cap = ModuleSettings {
            poll_interval: ms(500),
            poll_interval_max: ms(200),
            ..ModuleSettings::default()
        };
        assert_eq!(next_interval(ms(500), &low_cap), ms(500));
    }

    /// A helper thread is counted from its spawn to its end, so `C_Finalize`
    /// (`wait_for_background`) waits for it: no thread runs module code after `C_Finalize`
    /// returns (a host may `dlclose` the module next).
    #[test]
    fn helper_threads_are_counted_until_they_end() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        spawn_counted("tsb-pkcs11-test", move || {
            let _ = released.recv();
            let _ = done.send(());
        })
        .expect("thread");
        // Other tests' helpers may run too: at least this one is counted while it runs.
        assert!(wait_for_background(Duration::ZERO) >= 1);
        drop(release);
        finished.recv().expect("the helper ran");
        // Once the helpers have ended the wait returns at once, not at its limit (other tests'
        // helpers end within their fakes' 10 s bounds).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(wait_for_background(Duration::from_secs(600)));
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(0));
    }

    #[test]
    fn unset_timeout_follows_the_policy_capped() {
        let s = settings(None);
        let (limit, why) = wait_limit(&s, RequestLifetime::Expires(Duration::from_secs(60)));
        // 60 s + the grace + one poll at the back-off's cap (10 s).
        assert_eq!(
            limit,
            Duration::from_secs(60) + POLICY_GRACE + Duration::from_secs(10)
        );
        assert!(why.contains("timeout of 60s"), "{why}");
        let (limit, _) = wait_limit(&s, RequestLifetime::Expires(Duration::from_secs(86_400)));
        assert_eq!(
            limit, MAX_APPROVAL_WAIT,
            "a policy timeout of 24 h is capped"
        );
        let (limit, why) = wait_limit(&s, RequestLifetime::Expires(Duration::MAX));
        assert_eq!(limit, MAX_APPROVAL_WAIT, "no overflow");
        assert!(why.contains("timeout"), "{why}");
        let (limit, why) = wait_limit(&s, RequestLifetime::Unlimited);
        assert_eq!(limit, MAX_APPROVAL_WAIT);
        assert!(why.contains("no timeout"), "{why}");
        let (limit, why) = wait_limit(&s, RequestLifetime::Unknown);
        assert_eq!(limit, DEFAULT_APPROVAL_TIMEOUT);
        assert!(why.contains("not known"), "{why}");
    }
}
