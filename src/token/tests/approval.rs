//! Approval requests (TSB contract, "Signing"; docs/approvals.md): every final state of a
//! request gives its own return value, a key that gains a policy switches to a request, and the
//! wait works without helper threads (`CKF_LIBRARY_CANT_CREATE_OS_THREADS`).

use std::sync::Arc;

use cryptoki_sys::*;
use serde_json::{json, Value};

use super::fake::FakeTsb;
use super::{ecdsa_sha256, openssl_verifies, private_key, session, signature, wait_for};
use crate::config::Config;
use crate::token::Token;
use crate::tsb::RequestState;

fn token(fake: &Arc<FakeTsb>, threads: bool, pkcs11: Value) -> Arc<Token> {
    let mut settings = json!({"pollIntervalMs": 10, "pollIntervalMaxMs": 20});
    for (k, v) in pkcs11.as_object().unwrap() {
        settings[k] = v.clone();
    }
    let config = json!({"restApi": "http://127.0.0.1:9", "pkcs11": settings});
    let config = Config::from_json_str(&config.to_string(), "core-test").unwrap();
    Arc::new(Token::with_backend(config, threads, fake.factory()).unwrap())
}

/// Signs with key `ska` on another thread and, once the request is filed, applies `decide`
/// to its id; returns the C_Sign result.
fn sign_and_decide(
    fake: &Arc<FakeTsb>,
    token: &Arc<Token>,
    decide: impl FnOnce(&str),
) -> crate::error::Result<Vec<u8>> {
    let s = session(token);
    let key = private_key(token, s, "ska");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let before = fake.request_ids().len();
    let signing = {
        let token = token.clone();
        std::thread::spawn(move || token.sign(s, b"approve me", Some(64)))
    };
    let id = wait_for("the approval request", || {
        let ids = fake.request_ids();
        (ids.len() > before).then(|| {
            let mut ids = ids;
            ids.sort_by_key(|i| i[4..].parse::<u32>().unwrap());
            ids.pop().unwrap()
        })
    });
    decide(&id);
    signing.join().unwrap().map(signature)
}

/// Each final state of a request ends C_Sign with its own return value (docs/errors.md).
#[test]
fn final_request_states_give_their_return_values() {
    for threads in [true, false] {
        let fake = FakeTsb::new();
        let signer = fake.add_key("ska", true);
        let token = token(&fake, threads, json!({}));
        let sig = sign_and_decide(&fake, &token, |id| fake.approve(id)).unwrap();
        assert!(openssl_verifies(&signer, b"approve me", &sig));
        for (state, rv) in [
            (RequestState::Rejected, CKR_FUNCTION_REJECTED),
            (RequestState::Expired, CKR_FUNCTION_CANCELED),
            (RequestState::Cancelled, CKR_FUNCTION_CANCELED),
            (RequestState::Failed, CKR_DEVICE_ERROR),
        ] {
            let err = sign_and_decide(&fake, &token, |id| {
                fake.set_request_state(id, RequestState::Approved);
                fake.set_request_state(id, state.clone());
            })
            .unwrap_err();
            assert_eq!(err.code(), rv, "{state:?}, threads {threads}");
        }
        // A request the TSB forgot (651).
        let err = sign_and_decide(&fake, &token, |id| fake.forget_request(id)).unwrap_err();
        assert_eq!(err.code(), CKR_FUNCTION_CANCELED);
        assert_eq!(fake.count("sign ska"), 0);
    }
}

/// No decision within `approvalTimeoutSecs`: CKR_FUNCTION_CANCELED, and the request is
/// cancelled on the TSB.
#[test]
fn approval_timeout_cancels_the_request() {
    let fake = FakeTsb::new();
    fake.add_key("ska", true);
    let token = token(&fake, true, json!({"approvalTimeoutSecs": 1}));
    let err = sign_and_decide(&fake, &token, |_| {}).unwrap_err();
    assert_eq!(err.code(), CKR_FUNCTION_CANCELED);
    let id = fake.request_ids().pop().unwrap();
    assert_eq!(fake.request_state(&id), Some(RequestState::Cancelled));
    assert!(fake.calls().contains(&format!("cancel {id}")));
}

/// A key that gained a use policy after its attributes were cached: the synchronous sign is
/// refused (401 missing approval) and the token files a request instead.
#[test]
fn a_key_that_gains_a_policy_switches_to_a_request() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("ska", false);
    let token = token(&fake, true, json!({"cacheTtlSecs": 600}));
    let s = session(&token);
    let key = private_key(&token, s, "ska");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let sig = signature(token.sign(s, b"approve me", Some(64)).unwrap());
    assert!(openssl_verifies(&signer, b"approve me", &sig));
    fake.set_needs_approval("ska", true);
    let sig = sign_and_decide(&fake, &token, |id| fake.approve(id)).unwrap();
    assert!(openssl_verifies(&signer, b"approve me", &sig));
    assert_eq!(fake.count("sign ska"), 2, "one refused synchronous sign");
    assert_eq!(fake.count("file ska"), 1);
}

/// A poll the TSB fails for a passing reason (503, an HSM error) is retried: only "request not
/// found" ends the wait. The request is then approved and the signature verifies.
#[test]
fn a_failed_poll_is_retried() {
    let fake = FakeTsb::new();
    let signer = fake.add_key("ska", true);
    let token = token(&fake, true, json!({}));
    fake.poll_errors.lock().extend([(503, 0), (500, 701)]);
    let sig = sign_and_decide(&fake, &token, |id| fake.approve(id)).unwrap();
    assert!(openssl_verifies(&signer, b"approve me", &sig));
    assert!(
        fake.poll_errors.lock().is_empty(),
        "both failures were polled"
    );
}

/// Closing the session from another thread ends a waiting C_Sign with CKR_SESSION_CLOSED
/// (§5.6 C_CloseSession) and cancels the request.
#[test]
fn closing_the_session_ends_the_wait() {
    for threads in [true, false] {
        closing_the_session_ends_the_wait_with(threads);
    }
}

fn closing_the_session_ends_the_wait_with(threads: bool) {
    let fake = FakeTsb::new();
    fake.add_key("ska", true);
    // The timeout only bounds a broken wait: its error (CKR_FUNCTION_CANCELED) is not the
    // one expected here.
    let token = token(&fake, threads, json!({"approvalTimeoutSecs": 20}));
    let s = session(&token);
    let key = private_key(&token, s, "ska");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let signing = {
        let token = token.clone();
        std::thread::spawn(move || token.sign(s, b"x", Some(64)))
    };
    let id = wait_for("the approval request", || fake.request_ids().pop());
    // While the signature runs, the session answers at once (§5.1.6).
    wait_for("the signing mark", || {
        (token.sign_update(s, b"y").err()?.code() == CKR_OPERATION_ACTIVE).then_some(())
    });
    assert_eq!(
        token.sign_init(s, &ecdsa_sha256(), key).unwrap_err().code(),
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(
        token.sign(s, b"x", Some(64)).unwrap_err().code(),
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(
        token.sign_final(s, Some(64)).unwrap_err().code(),
        CKR_OPERATION_ACTIVE
    );
    token.close_session(s).unwrap();
    assert_eq!(
        signing.join().unwrap().unwrap_err().code(),
        CKR_SESSION_CLOSED
    );
    assert_eq!(fake.request_state(&id), Some(RequestState::Cancelled));
}

/// The journal records `CANCELLED` only when the TSB confirmed the `DELETE` of a request given
/// up on; a refused one is `CANCEL_UNCONFIRMED` (the request may still be pending), with and
/// without helper threads.
#[test]
fn the_journal_says_whether_the_tsb_confirmed_a_cancellation() {
    for threads in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("requests.jsonl");
        let fake = FakeTsb::new();
        fake.add_key("ska", true);
        let token = token(&fake, threads, json!({"requestJournal": journal}));
        for refused in [false, true] {
            *fake.cancel_error.lock() = refused.then_some((500, 701));
            let s = session(&token);
            let key = private_key(&token, s, "ska");
            token.sign_init(s, &ecdsa_sha256(), key).unwrap();
            let before = fake.request_ids().len();
            let signing = {
                let token = token.clone();
                std::thread::spawn(move || token.sign(s, b"x", Some(64)))
            };
            wait_for("the approval request", || {
                (fake.request_ids().len() > before).then_some(())
            });
            token.close_session(s).unwrap();
            assert_eq!(
                signing.join().unwrap().unwrap_err().code(),
                CKR_SESSION_CLOSED
            );
        }
        let outcomes: Vec<String> = crate::journal::read(&journal)
            .unwrap()
            .entries
            .into_iter()
            .filter(|e| e.event == crate::journal::Event::Outcome)
            .map(|e| e.status.unwrap())
            .collect();
        assert_eq!(
            outcomes,
            ["CANCELLED", crate::journal::CANCEL_UNCONFIRMED],
            "threads {threads}"
        );
    }
}

/// With helper threads, a cancellation the TSB does not answer holds up the waiting `C_Sign`
/// for at most `CANCEL_WAIT`: it returns, the journal says `CANCEL_UNCONFIRMED`, the
/// cancellation carries on in the background and journals the TSB's late confirmation, and
/// `C_Finalize` waits for it.
#[test]
fn an_unanswered_cancellation_carries_on_in_the_background() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("requests.jsonl");
    let fake = FakeTsb::new();
    fake.add_key("ska", true);
    let token = token(&fake, true, json!({"requestJournal": journal}));
    let outcomes = || -> Vec<String> {
        crate::journal::read(&journal)
            .unwrap()
            .entries
            .into_iter()
            .filter(|e| e.event == crate::journal::Event::Outcome)
            .map(|e| e.status.unwrap())
            .collect()
    };
    fake.cancel_hangs.store(true, Relaxed);
    let s = session(&token);
    let key = private_key(&token, s, "ska");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let signing = {
        let token = token.clone();
        std::thread::spawn(move || token.sign(s, b"x", Some(64)))
    };
    wait_for("the approval request", || {
        (!fake.request_ids().is_empty()).then_some(())
    });
    token.close_session(s).unwrap();
    assert_eq!(
        signing.join().unwrap().unwrap_err().code(),
        CKR_SESSION_CLOSED
    );
    assert_eq!(outcomes(), [crate::journal::CANCEL_UNCONFIRMED]);
    fake.cancel_hangs.store(false, Relaxed);
    token.finalize();
    assert_eq!(
        outcomes(),
        [crate::journal::CANCEL_UNCONFIRMED, "CANCELLED"],
        "the late confirmation, written before C_Finalize returned"
    );
}

/// With helper threads, a poll runs on its own thread: C_SessionCancel (v3.0 §5.6) ends the
/// approval wait while a poll the TSB has not answered is still outstanding, and C_Finalize
/// waits for that poll.
#[test]
fn cancelling_does_not_wait_for_an_unanswered_poll() {
    use std::sync::atomic::Ordering::Relaxed;
    let fake = FakeTsb::new();
    fake.add_key("ska", true);
    let token = token(&fake, true, json!({}));
    fake.poll_hangs.store(true, Relaxed);
    let s = session(&token);
    let key = private_key(&token, s, "ska");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let signing = {
        let token = token.clone();
        std::thread::spawn(move || token.sign(s, b"x", Some(64)))
    };
    wait_for("the first poll", || (fake.count("poll ") > 0).then_some(()));
    token.session_cancel(s, CKF_SIGN).unwrap();
    assert_eq!(
        signing.join().unwrap().unwrap_err().code(),
        CKR_FUNCTION_CANCELED
    );
    assert_eq!(fake.count("polled "), 0, "the poll is still outstanding");
    fake.poll_hangs.store(false, Relaxed);
    token.finalize();
    assert_eq!(fake.count("polled "), 1, "C_Finalize waited for the poll");
}

/// Starts `C_Sign` with key `ska` in session `s` on another thread and returns the thread and
/// the id of the approval request it filed.
fn start_waiting_sign(
    fake: &Arc<FakeTsb>,
    token: &Arc<Token>,
    s: CK_SESSION_HANDLE,
) -> (
    std::thread::JoinHandle<crate::error::Result<crate::token::SignOutput>>,
    String,
) {
    let key = private_key(token, s, "ska");
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    let before = fake.request_ids();
    let signing = {
        let token = token.clone();
        std::thread::spawn(move || token.sign(s, b"wait for me", Some(64)))
    };
    let id = wait_for("the approval request", || {
        fake.request_ids().into_iter().find(|i| !before.contains(i))
    });
    // The signature is at the TSB (the session answers CKR_OPERATION_ACTIVE, §5.1.6).
    wait_for("the signing mark", || {
        (token.sign_update(s, b"y").err()?.code() == CKR_OPERATION_ACTIVE).then_some(())
    });
    (signing, id)
}

/// Cancelling during an approval wait, with and without helper threads: C_SessionCancel
/// (PKCS#11 3.0 §5.6) ends the wait only for `CKF_SIGN` and only in its own session, with
/// CKR_FUNCTION_CANCELED, and the session can sign again; C_CloseAllSessions (§5.6) ends it with
/// CKR_SESSION_CLOSED; C_Finalize (§5.4) with CKR_CRYPTOKI_NOT_INITIALIZED. Each ended wait
/// cancels its request on the TSB, so nobody approves a signature no one waits for.
#[test]
fn cancelling_during_an_approval_wait() {
    for threads in [true, false] {
        let fake = FakeTsb::new();
        let signer = fake.add_key("ska", true);
        let token = token(&fake, threads, json!({"approvalTimeoutSecs": 20}));

        // Other flags, or another session's CKF_SIGN, leave the wait alone: it still returns
        // the approved signature.
        let s = session(&token);
        let other = session(&token);
        let (signing, id) = start_waiting_sign(&fake, &token, s);
        token
            .session_cancel(s, CKF_VERIFY | CKF_FIND_OBJECTS | CKF_DIGEST | CKF_DECRYPT)
            .unwrap();
        token.session_cancel(other, CKF_SIGN).unwrap();
        fake.approve(&id);
        let sig = signature(signing.join().unwrap().unwrap());
        assert!(
            openssl_verifies(&signer, b"wait for me", &sig),
            "threads {threads}"
        );
        assert_eq!(fake.request_state(&id), Some(RequestState::Executed));

        // CKF_SIGN in the waiting session: CKR_FUNCTION_CANCELED, the request cancelled, and
        // the session free for a new signature.
        let (signing, id) = start_waiting_sign(&fake, &token, s);
        token.session_cancel(s, CKF_SIGN).unwrap();
        let err = signing.join().unwrap().unwrap_err();
        assert_eq!(err.code(), CKR_FUNCTION_CANCELED, "threads {threads}");
        assert_eq!(fake.request_state(&id), Some(RequestState::Cancelled));
        assert!(fake.calls().contains(&format!("cancel {id}")));
        let (signing, id) = start_waiting_sign(&fake, &token, s);
        fake.approve(&id);
        let sig = signature(signing.join().unwrap().unwrap());
        assert!(openssl_verifies(&signer, b"wait for me", &sig));

        // C_CloseAllSessions from another thread.
        let (signing, id) = start_waiting_sign(&fake, &token, s);
        token.close_all_sessions(0).unwrap();
        let err = signing.join().unwrap().unwrap_err();
        assert_eq!(err.code(), CKR_SESSION_CLOSED, "threads {threads}");
        assert_eq!(fake.request_state(&id), Some(RequestState::Cancelled));
        assert!(fake.calls().contains(&format!("cancel {id}")));

        // C_Finalize from another thread.
        let s = session(&token);
        let (signing, id) = start_waiting_sign(&fake, &token, s);
        token.finalize();
        let err = signing.join().unwrap().unwrap_err();
        assert_eq!(
            err.code(),
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "threads {threads}"
        );
        assert_eq!(fake.request_state(&id), Some(RequestState::Cancelled));
        assert!(fake.calls().contains(&format!("cancel {id}")));
    }
}

/// The progress and end lines of an approval wait (docs/approvals.md, "With
/// `TSB_PKCS11_LOG=info` a wait also reports its progress"): each change of status or of the
/// approvers, then the end: `EXECUTED after …`, `REJECTED by <who> after …`, `EXPIRED after …:
/// approved by [..], not approved by [..]`.
#[test]
fn an_approval_wait_logs_its_progress_and_its_end() {
    use crate::tsb::tests::log_capture;
    if !log_capture::install() {
        eprintln!("another logger is installed; an_approval_wait_logs_its_progress skipped");
        return;
    }
    // The captured lines of all tests mix: this test's lines name its own key.
    let label = "ska-progress-log";
    let fake = FakeTsb::new();
    fake.add_key(label, true);
    let token = token(&fake, true, json!({}));
    let s = session(&token);
    let key = private_key(&token, s, label);
    let lines_of = |id: &str| -> Vec<String> {
        let of_request = format!("approval request {id} (key '{label}') ");
        log_capture::LINES
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| Some(l.split_once(&of_request)?.1.to_string()))
            .collect()
    };
    let logged = |id: &str, text: &str| {
        wait_for(text, || {
            lines_of(id)
                .iter()
                .any(|l| l.starts_with(text))
                .then_some(())
        })
    };
    let start = || {
        token.sign_init(s, &ecdsa_sha256(), key).unwrap();
        let before = fake.request_ids();
        let signing = {
            let token = token.clone();
            std::thread::spawn(move || token.sign(s, b"log my progress", Some(64)))
        };
        let id = wait_for("the approval request", || {
            fake.request_ids().into_iter().find(|i| !before.contains(i))
        });
        (signing, id)
    };

    // A quorum in progress, then a rejection naming who rejected.
    let (signing, id) = start();
    logged(&id, "PENDING: approved by [], waiting for [alice]");
    fake.set_request_status(
        &id,
        RequestState::Pending,
        &["alice", "dave"],
        &["bob", "carol"],
        &[],
    );
    logged(
        &id,
        "PENDING: approved by [alice, dave], waiting for [bob, carol]",
    );
    fake.set_request_status(&id, RequestState::Rejected, &["alice"], &[], &["bob"]);
    let err = signing.join().unwrap().unwrap_err();
    assert_eq!(err.code(), CKR_FUNCTION_REJECTED);
    logged(&id, "REJECTED by bob after ");
    assert_eq!(lines_of(&id).len(), 3, "{:?}", lines_of(&id));

    // The quorum reached, then executed.
    let (signing, id) = start();
    fake.set_request_status(&id, RequestState::Approved, &["alice"], &[], &[]);
    logged(
        &id,
        "APPROVED by [alice]: quorum reached, waiting for the TSB to execute it",
    );
    fake.approve(&id);
    signing.join().unwrap().unwrap();
    logged(&id, "EXECUTED after ");

    // Expired: who approved and who did not.
    let (signing, id) = start();
    fake.set_request_status(
        &id,
        RequestState::Expired,
        &["carol"],
        &["alice", "bob"],
        &[],
    );
    assert_eq!(
        signing.join().unwrap().unwrap_err().code(),
        CKR_FUNCTION_CANCELED
    );
    let end = lines_of(&id).pop().unwrap();
    assert!(end.starts_with("EXPIRED after "), "{end}");
    assert!(
        end.ends_with("s: approved by [carol], not approved by [alice, bob]"),
        "{end}"
    );
}

/// C_SessionCancel (v3.0 §5.6) while the synchronous sign is at the TSB, which answers that
/// the key now needs approvals: no approval request is filed (nobody is asked to approve a
/// signature no one waits for), and C_Sign ends with CKR_FUNCTION_CANCELED.
#[test]
fn a_cancel_before_the_request_is_filed_files_nothing() {
    let fake = FakeTsb::new();
    fake.add_key("ska", false);
    let token = token(&fake, true, json!({"cacheTtlSecs": 600}));
    let s = session(&token);
    let key = private_key(&token, s, "ska");
    fake.set_needs_approval("ska", true);
    token.sign_init(s, &ecdsa_sha256(), key).unwrap();
    *fake.sign_hook.lock() = Some(Box::new({
        let token = token.clone();
        move || token.session_cancel(s, CKF_SIGN).unwrap()
    }));
    let err = token.sign(s, b"cancelled", Some(64)).unwrap_err();
    assert_eq!(err.code(), CKR_FUNCTION_CANCELED);
    assert!(fake.sign_hook.lock().is_none(), "the hook ran");
    assert_eq!(fake.count("file ska"), 0, "{:?}", fake.calls());
    assert!(fake.request_ids().is_empty());
}

/// C_Finalize warns only about helper threads still running when its bound ends: a finalize
/// that has none to wait for (or whose threads all ended) logs no "still running" line.
#[test]
fn a_finalize_with_nothing_left_running_warns_of_nothing() {
    use crate::tsb::tests::log_capture;
    if !log_capture::install() {
        eprintln!("another logger is installed; a_finalize_with_nothing_left_running skipped");
        return;
    }
    let fake = FakeTsb::new();
    let token = token(&fake, false, json!({}));
    session(&token);
    token.finalize();
    // The captured lines of all tests mix, and helper threads are counted process-wide: a
    // count of 0 is never worth a line, whichever finalize logged it.
    let lines = log_capture::LINES.lock().unwrap().clone();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("C_Finalize: 0 TSB request(s) still running")),
        "{lines:#?}"
    );
}
