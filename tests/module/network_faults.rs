//! Issue #6 part 4, "hostile network": the built module against a simulator that injects
//! faults (latency, 5xx with TSB error bodies, 502 HTML from a proxy, malformed JSON, a
//! connection dropped mid-response, a TSB that never answers, a wrong signature) and against a
//! TSB that is down.
//!
//! What every test checks:
//! - the failure becomes the documented `CK_RV` (`CKR_DEVICE_ERROR` for all of these), within
//!   the configured timeout (`requestTimeoutMs` 1000 here; elapsed time is measured);
//! - idempotent reads (key attributes, key list, request polls) are retried with backoff: the
//!   simulator's endpoint counters show each attempt;
//! - a synchronous sign (`POST /v1/synchronousSign`) reaches the simulator exactly once when
//!   the request may have reached it (5xx, HTML, dropped connection, malformed answer, hang),
//!   and an approval request (`POST /v1/sign`) is never filed twice;
//! - a wrong signature is never returned: the module verifies every signature;
//! - the next call works once the fault is cleared.
//!
//! Timings are printed with `--nocapture` ("timing: ...").

use tsb_pkcs11_test_support as common;
use tsb_pkcs11_test_support::netsec;

use std::time::Duration;

use common::verify::{self, Hash};
use common::Harness;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::*;
use netsec::{assert_rv, logged, report, rv_of, timed, Logged};
use tsb_sim::{Curve, Fault, KeySpec, SimConfig};

use cryptoki::error::RvError;

const POST_ATTRS: &str = "POST /v1/key/attributes";
const GET_KEYS: &str = "GET /v1/key";
const POST_SYNC: &str = "POST /v1/synchronousSign";
const POST_SIGN: &str = "POST /v1/sign";
const GET_REQUEST: &str = "GET /v1/request";
const GET_CERT: &str = "GET /v1/certificate";

/// The per-request deadline configured for these tests.
const TIMEOUT_MS: u64 = 1000;

/// The module with small timeouts, no caching (every object search asks the TSB), the default
/// retry count (2) and fast approval polling.
///
/// A retry is made only while a whole connect timeout is left after its backoff (100 ms, then
/// 300 ms): with 250 ms, two failed attempts may take 350 ms together and the third is still
/// made. (With 500 ms they had to fit in 100 ms, which a loaded machine does not always give:
/// the retry counts failed there.)
fn harness_with(cfg: SimConfig) -> Logged {
    logged(cfg, "debug", |url| {
        serde_json::json!({
            "restApi": url,
            "pkcs11": {
                "requestTimeoutMs": TIMEOUT_MS,
                "connectTimeoutMs": 250,
                "cacheTtlSecs": 0,
                "pollIntervalMs": 50,
                "pollIntervalMaxMs": 100,
                "approvalTimeoutSecs": 20
            }
        })
    })
}

fn harness() -> Logged {
    harness_with(SimConfig::fast_test())
}

/// A simulator whose approval keys are approved 150 ms after each request is filed.
fn auto_approving() -> SimConfig {
    let mut cfg = SimConfig::fast_test();
    cfg.auto_approve_after_ms = Some(150);
    cfg.approved_execution_delay_ms = 50;
    cfg
}

/// Finds a private key by label (one `POST /v1/key/attributes` with caching off).
fn find_key(s: &Session, label: &str) -> cryptoki::error::Result<Vec<ObjectHandle>> {
    s.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
}

fn key(h: &Harness, s: &Session, label: &str) -> ObjectHandle {
    h.private_key(s, label)
}

/// Signs "msg" with ECDSA-SHA256 and verifies the result with OpenSSL.
fn sign_ec_ok(h: &Harness, s: &Session, label: &str) {
    let k = key(h, s, label);
    let sig = s
        .sign(&Mechanism::EcdsaSha256, k, b"msg")
        .expect("sign works");
    assert!(verify::ecdsa(
        &h.sim_public_key(label),
        Hash::Sha256,
        b"msg",
        &sig
    ));
}

/// `C_SignInit` + `C_Sign` through the raw function list into a buffer pre-filled with 0xA5:
/// returns the return value and the buffer as the module left it.
fn raw_sign_into_buffer(
    h: &Harness,
    s: &Session,
    mechanism: CK_MECHANISM_TYPE,
    k: ObjectHandle,
    data: &[u8],
    len: usize,
) -> (CK_RV, Vec<u8>) {
    let mut mech = CK_MECHANISM {
        mechanism,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut buf = vec![0xA5u8; len];
    let mut out_len = len as CK_ULONG;
    // SAFETY: valid pointers for the duration of the calls.
    let rv = unsafe {
        let rv = (h.raw.f.C_SignInit.unwrap())(s.handle(), &mut mech, k.handle());
        assert_eq!(rv, CKR_OK);
        (h.raw.f.C_Sign.unwrap())(
            s.handle(),
            data.as_ptr() as *mut u8,
            data.len() as CK_ULONG,
            buf.as_mut_ptr(),
            &mut out_len,
        )
    };
    (rv, buf)
}

// ---------------------------------------------------------------------------------------
// Latency

#[test]
fn latency_below_the_timeout_only_slows_calls_down() {
    let h = harness();
    let s = h.session();
    h.sim.inject(Fault::latency("*", 300));
    let (found, took) = timed(|| find_key(&s, "ec-p256").unwrap());
    report("find with 300 ms latency", took);
    assert_eq!(found.len(), 1);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let (_, took) = timed(|| sign_ec_ok(&h, &s, "ec-p256"));
    report("find + sign with 300 ms latency", took);
    assert_eq!(h.sim.counter(POST_SYNC), 1, "nothing is retried");
}

#[test]
fn latency_beyond_the_timeout_fails_the_sign_once_within_the_timeout() {
    let h = harness();
    let s = h.session();
    let k = key(&h, &s, "ec-p256");
    h.sim.inject(Fault::latency(POST_SYNC, 2500));
    let (r, took) = timed(|| s.sign(&Mechanism::EcdsaSha256, k, b"late"));
    report("sign, 2500 ms latency, 1000 ms timeout", took);
    assert_rv(r, RvError::DeviceError);
    assert!(took < Duration::from_millis(2000), "{took:?}");
    assert!(took >= Duration::from_millis(TIMEOUT_MS - 50), "{took:?}");
    assert_eq!(
        h.sim.counter(POST_SYNC),
        1,
        "a sign that may have reached the TSB is never sent again"
    );
    h.sim.clear_faults();
    sign_ec_ok(&h, &s, "ec-p256");
}

// ---------------------------------------------------------------------------------------
// 5xx with TSB error bodies

#[test]
fn server_errors_on_reads_are_retried_with_backoff() {
    let h = harness();
    let s = h.session();
    // Two failures, then the TSB answers: the search succeeds on the third attempt.
    h.sim.inject(
        Fault::status(POST_ATTRS, 503)
            .with_error(701, "HSM busy")
            .times(2),
    );
    let (found, took) = timed(|| find_key(&s, "ec-p384").unwrap());
    report("find after two 503s (retried)", took);
    assert_eq!(found.len(), 1);
    assert_eq!(h.sim.counter(POST_ATTRS), 3, "two retries");
    // Backoff 100 ms then 300 ms.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(TIMEOUT_MS), "{took:?}");

    // A TSB that keeps failing: 1 + 2 retries, then CKR_DEVICE_ERROR.
    h.sim.reset_counters();
    h.sim
        .inject(Fault::status(POST_ATTRS, 500).with_error(701, "HSM down"));
    let (r, took) = timed(|| find_key(&s, "ec-p384"));
    report("find with 500 on every attempt", took);
    assert_rv(r, RvError::DeviceError);
    assert_eq!(h.sim.counter(POST_ATTRS), 3);
    assert!(took < Duration::from_millis(TIMEOUT_MS + 500), "{took:?}");
    let warn = h.lines_with("HTTP 500, TSB 701 res.error.in.hsm");
    assert!(
        !warn.is_empty(),
        "the TSB's reason is logged:\n{}",
        h.log_text()
    );
    assert!(
        h.log_text().contains("CKR_DEVICE_ERROR"),
        "the mapping is logged"
    );

    h.sim.clear_faults();
    assert_eq!(find_key(&s, "ec-p384").unwrap().len(), 1);
}

#[test]
fn key_list_is_retried() {
    let h = harness();
    let s = h.session();
    h.sim
        .inject(Fault::status(GET_KEYS, 502).times(1).with_error(701, "x"));
    h.sim.inject(Fault::drop_connection(GET_KEYS).times(1));
    let (all, took) = timed(|| {
        s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .unwrap()
    });
    report("full key list after a 502 and a dropped connection", took);
    assert!(all.len() > 5, "{}", all.len());
    assert_eq!(h.sim.counter("GET /v1/key"), 3);
}

#[test]
fn certificate_reads_are_retried() {
    let mut cfg = SimConfig::fast_test();
    cfg.keys
        .push(KeySpec::ec("ec-cert", Curve::P256).with_self_signed_certificate("retry test"));
    let h = harness_with(cfg);
    let s = h.session();
    h.sim.inject(Fault::status(GET_CERT, 503).times(1));
    h.sim.inject(Fault::drop_connection(GET_CERT).times(1));
    let (certs, took) = timed(|| {
        s.find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Label(b"ec-cert".to_vec()),
        ])
        .unwrap()
    });
    report("certificate after a 503 and a dropped connection", took);
    assert_eq!(certs.len(), 1, "the certificate object is there");
    assert_eq!(h.sim.counter(GET_CERT), 3);
    let der = h.sim.certificate_der("ec-cert").unwrap();
    let value = h.attr_bytes(&s, certs[0], cryptoki::object::AttributeType::Value);
    assert_eq!(value, der);
}

#[test]
fn status_503_on_a_synchronous_sign_is_not_retried() {
    let h = harness();
    let s = h.session();
    let k = key(&h, &s, "ec-p256");
    h.sim
        .inject(Fault::status(POST_SYNC, 503).with_error(701, "Service temporarily unavailable"));
    let (r, took) = timed(|| s.sign(&Mechanism::EcdsaSha256, k, b"x"));
    report("sign with 503", took);
    assert_rv(r, RvError::DeviceError);
    assert_eq!(h.sim.counter(POST_SYNC), 1, "exactly one request");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(
        !h.lines_with("POST /v1/synchronousSign: HTTP 503, TSB 701")
            .is_empty(),
        "{}",
        h.log_text()
    );
    h.sim.clear_faults();
    sign_ec_ok(&h, &s, "ec-p256");
    assert_eq!(h.sim.counter(POST_SYNC), 2);
}

/// After a refused sign the simulator (like many servers) closes the keep-alive connection
/// because it did not read the request body. A sign made right after may be sent on that dying
/// pooled connection: it is closed before any answer, and the sign is sent once more on a new
/// connection (a synchronous sign has no state at the TSB). Each sign reaches the TSB once.
#[test]
fn a_sign_right_after_a_refused_sign_works() {
    let h = harness();
    let s = h.session();
    let k = key(&h, &s, "ed25519");
    // A body the server has not read by the time it answers.
    let data = vec![0x5a; 64 * 1024];
    let mut failures = 0;
    for _ in 0..40 {
        h.sim.inject(Fault::status(POST_SYNC, 500).times(1));
        assert_rv(s.sign(&eddsa(), k, &data), RvError::DeviceError);
        if s.sign(&eddsa(), k, &data).is_err() {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 0,
        "signs failed on a connection the TSB had closed"
    );
    assert_eq!(h.sim.counter(POST_SYNC), 80, "each sign sent exactly once");
}

// ---------------------------------------------------------------------------------------
// HTML from a proxy, malformed JSON

#[test]
fn html_bad_gateway_from_a_proxy() {
    let h = harness();
    let s = h.session();
    h.sim.inject(Fault::html_bad_gateway(POST_ATTRS));
    let (r, took) = timed(|| find_key(&s, "ec-p256"));
    report("find with 502 HTML on every attempt", took);
    assert_rv(r, RvError::DeviceError);
    assert_eq!(h.sim.counter(POST_ATTRS), 3, "retried like any 5xx");
    assert!(
        !h.lines_with("HTTP 502").is_empty(),
        "the status is logged:\n{}",
        h.log_text()
    );
    h.sim.clear_faults();
    let k = key(&h, &s, "ec-p256");

    h.sim.inject(Fault::html_bad_gateway(POST_SYNC));
    let (r, took) = timed(|| s.sign(&Mechanism::EcdsaSha256, k, b"x"));
    report("sign with 502 HTML", took);
    assert_rv(r, RvError::DeviceError);
    assert_eq!(h.sim.counter(POST_SYNC), 1);
    h.sim.clear_faults();
    sign_ec_ok(&h, &s, "ec-p256");
}

#[test]
fn malformed_json() {
    let h = harness();
    let s = h.session();
    // A truncated attributes answer once: retried, then found.
    h.sim.inject(Fault::malformed_json(POST_ATTRS).times(1));
    let (found, took) = timed(|| find_key(&s, "ed25519").unwrap());
    report("find after one malformed answer", took);
    assert_eq!(found.len(), 1);
    assert_eq!(h.sim.counter(POST_ATTRS), 2);

    // Always malformed: CKR_DEVICE_ERROR after 3 attempts.
    h.sim.inject(Fault::malformed_json(POST_ATTRS));
    let (r, took) = timed(|| find_key(&s, "ed25519"));
    report("find with malformed JSON on every attempt", took);
    assert_rv(r, RvError::DeviceError);
    assert_eq!(h.sim.counter(POST_ATTRS), 2 + 3);
    h.sim.clear_faults();
    let k = key(&h, &s, "ed25519");

    // A sign answered with truncated JSON was processed by the TSB: not sent again.
    h.sim.inject(Fault::malformed_json(POST_SYNC));
    let (r, took) = timed(|| {
        s.sign(
            &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            k,
            b"x",
        )
    });
    report("sign with a malformed answer", took);
    assert_rv(r, RvError::DeviceError);
    assert_eq!(h.sim.counter(POST_SYNC), 1);
    assert!(
        !h.lines_with("not valid JSON").is_empty(),
        "{}",
        h.log_text()
    );
    h.sim.clear_faults();
    let sig = s
        .sign(
            &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            k,
            b"x",
        )
        .unwrap();
    assert!(verify::ed25519(&h.sim_public_key("ed25519"), b"x", &sig));
}

// ---------------------------------------------------------------------------------------
// Connections dropped mid-response

#[test]
fn dropped_connection_on_a_read_is_retried() {
    let h = harness();
    let s = h.session();
    h.sim.inject(Fault::drop_connection(POST_ATTRS).times(2));
    let (found, took) = timed(|| find_key(&s, "rsa-2048").unwrap());
    report("find after two dropped connections", took);
    assert_eq!(found.len(), 1);
    assert_eq!(h.sim.counter(POST_ATTRS), 3);
}

#[test]
fn dropped_connection_on_a_synchronous_sign_is_not_retried() {
    let h = harness();
    let s = h.session();
    let k = key(&h, &s, "rsa-2048");
    h.sim.inject(Fault::drop_connection(POST_SYNC));
    let (r, took) = timed(|| s.sign(&Mechanism::Sha256RsaPkcs, k, b"dropped"));
    report("sign with the connection dropped mid-response", took);
    assert_rv(r, RvError::DeviceError);
    assert_eq!(
        h.sim.counter(POST_SYNC),
        1,
        "the TSB may have signed: exactly one request"
    );
    assert_eq!(h.sim.requests().len(), 1, "the simulator processed it once");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert!(
        !h.lines_with("POST /v1/synchronousSign: transport error")
            .is_empty(),
        "{}",
        h.log_text()
    );
    h.sim.clear_faults();
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, k, b"dropped")
        .expect("works again");
    assert!(verify::rsa_pkcs1(
        &h.sim_public_key("rsa-2048"),
        Hash::Sha256,
        b"dropped",
        &sig
    ));
}

// ---------------------------------------------------------------------------------------
// A TSB that accepts the connection and never answers

#[test]
fn hanging_sign_fails_within_the_timeout_and_is_not_retried() {
    let h = harness();
    let s = h.session();
    let k = key(&h, &s, "ec-p256");
    h.sim.inject(Fault::hang(POST_SYNC));
    let (r, took) = timed(|| s.sign(&Mechanism::EcdsaSha256, k, b"hang"));
    report("sign against a hanging TSB (requestTimeoutMs 1000)", took);
    assert_rv(r, RvError::DeviceError);
    assert!(took >= Duration::from_millis(TIMEOUT_MS - 50), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    assert_eq!(h.sim.counter(POST_SYNC), 1);
    assert!(
        !h.lines_with("timed out").is_empty(),
        "a timeout is logged:\n{}",
        h.log_text()
    );
    h.sim.clear_faults();
    sign_ec_ok(&h, &s, "ec-p256");
}

#[test]
fn hanging_read_fails_within_the_timeout() {
    let h = harness();
    let s = h.session();
    h.sim.inject(Fault::hang(POST_ATTRS));
    let (r, took) = timed(|| find_key(&s, "ec-p521"));
    report("find against a hanging TSB (requestTimeoutMs 1000)", took);
    assert_rv(r, RvError::DeviceError);
    assert!(took >= Duration::from_millis(TIMEOUT_MS - 50), "{took:?}");
    assert!(
        took < Duration::from_millis(TIMEOUT_MS + 500),
        "requestTimeoutMs bounds the whole call, retries included: {took:?}"
    );
    h.sim.clear_faults();
    let (found, took) = timed(|| find_key(&s, "ec-p521").unwrap());
    report("find after the hang cleared", took);
    assert_eq!(found.len(), 1);
}

#[test]
fn a_slow_first_attempt_leaves_time_for_a_retry_only_within_the_deadline() {
    let h = harness();
    let s = h.session();
    // First attempt: 200 ms then a 503; the retry (after 100 ms backoff) succeeds.
    h.sim
        .inject(Fault::status(POST_ATTRS, 503).with_latency(200).times(1));
    let (found, took) = timed(|| find_key(&s, "ec-p256").unwrap());
    report("find: slow 503, then success", took);
    assert_eq!(found.len(), 1);
    assert_eq!(h.sim.counter(POST_ATTRS), 2);
    // First attempt 800 ms then 503: not enough time is left for a useful retry.
    h.sim.reset_counters();
    h.sim
        .inject(Fault::status(POST_ATTRS, 503).with_latency(800));
    let (r, took) = timed(|| find_key(&s, "ec-p256"));
    report("find: 800 ms then 503, deadline 1000 ms", took);
    assert_rv(r, RvError::DeviceError);
    assert!(took < Duration::from_millis(TIMEOUT_MS + 300), "{took:?}");
}

// ---------------------------------------------------------------------------------------
// Wrong signatures are never returned

#[test]
fn bad_signatures_are_never_returned() {
    let h = harness();
    let s = h.session();
    let cases: [(&str, CK_MECHANISM_TYPE, usize); 3] = [
        ("ec-p256", CKM_ECDSA_SHA256, 64),
        ("rsa-2048", CKM_SHA256_RSA_PKCS, 256),
        ("ed25519", CKM_EDDSA, 64),
    ];
    for (label, mech, len) in cases {
        let k = key(&h, &s, label);
        // Wrong on the kept-alive connection (possibly another request's late answer): sent
        // once more on a new connection; wrong there too: CKR_DEVICE_ERROR.
        h.sim.inject(Fault::bad_signature(POST_SYNC).times(2));
        let ((rv, buf), took) = timed(|| raw_sign_into_buffer(&h, &s, mech, k, b"tampered", len));
        report(&format!("sign with a wrong signature ({label})"), took);
        assert_eq!(rv, CKR_DEVICE_ERROR, "{label}");
        assert!(
            buf.iter().all(|b| *b == 0xA5),
            "{label}: the caller's buffer is untouched"
        );
        assert_eq!(
            h.sim.counter(POST_SYNC),
            2,
            "sent once more on a new connection, not more"
        );
        // The fault is used up: the next signature is right.
        let sig = common::raw_sign(&h.raw, s.handle(), mech, &mut [], k.handle(), b"tampered")
            .expect("works again");
        let pk = h.sim_public_key(label);
        let ok = match label {
            "ec-p256" => verify::ecdsa(&pk, Hash::Sha256, b"tampered", &sig),
            "rsa-2048" => verify::rsa_pkcs1(&pk, Hash::Sha256, b"tampered", &sig),
            _ => verify::ed25519(&pk, b"tampered", &sig),
        };
        assert!(ok, "{label}");
        h.sim.reset_counters();
        h.sim.clear_faults();
    }
    assert_eq!(
        h.lines_with("; not returned").len(),
        3,
        "one error line per refused sign:\n{}",
        h.log_text()
    );
    assert_eq!(
        h.lines_with("sent once more on a new connection").len(),
        3,
        "one warning per answer refused on a kept-alive connection:\n{}",
        h.log_text()
    );
}

#[test]
fn bad_signature_from_an_approval_request_is_not_returned() {
    let h = harness_with(auto_approving());
    let s = h.session();
    let k = key(&h, &s, "ska-ec-p256");
    h.sim.inject(Fault::bad_signature(GET_REQUEST));
    let (r, took) = timed(|| s.sign(&Mechanism::EcdsaSha256, k, b"approved but tampered"));
    report("approval sign with a wrong result", took);
    assert_rv(r, RvError::DeviceError);
    assert_eq!(h.sim.counter(POST_SIGN), 1, "filed once");
    h.sim.clear_faults();
    sign_ec_ok(&h, &s, "ska-ec-p256");
    assert_eq!(h.sim.counter(POST_SIGN), 2);
}

// ---------------------------------------------------------------------------------------
// Approval requests are never filed twice

#[test]
fn failing_polls_keep_waiting_for_the_same_approval_request() {
    let h = harness_with(auto_approving());
    let s = h.session();
    let k = key(&h, &s, "ska-rsa-2048");
    h.sim.inject(Fault::status(GET_REQUEST, 503).times(2));
    h.sim.inject(Fault::drop_connection(GET_REQUEST).times(1));
    h.sim.inject(Fault::html_bad_gateway(GET_REQUEST).times(1));
    h.sim.inject(Fault::malformed_json(GET_REQUEST).times(1));
    let (sig, took) = timed(|| {
        s.sign(&Mechanism::Sha256RsaPkcsPss(pss256()), k, b"approve me")
            .expect("the approval wait survives failing polls")
    });
    report("approval sign with 5 failing polls", took);
    assert!(verify::rsa_pss(
        &h.sim_public_key("ska-rsa-2048"),
        Hash::Sha256,
        b"approve me",
        &sig
    ));
    assert_eq!(h.sim.counter(POST_SIGN), 1, "one approval request");
    assert_eq!(h.sim.requests().len(), 1);
    assert!(h.sim.counter(GET_REQUEST) >= 4);
}

#[test]
fn hanging_poll_times_out_and_the_wait_goes_on() {
    let h = harness_with(auto_approving());
    let s = h.session();
    let k = key(&h, &s, "ska-ec-p256");
    h.sim.inject(Fault::hang(GET_REQUEST).times(1));
    let (_, took) = timed(|| sign_ec_ok(&h, &s, "ska-ec-p256"));
    report("approval sign with one hanging poll", took);
    assert!(took >= Duration::from_millis(TIMEOUT_MS - 50), "{took:?}");
    assert!(took < Duration::from_millis(TIMEOUT_MS + 2000), "{took:?}");
    assert_eq!(h.sim.counter(POST_SIGN), 1);
    let _ = k;
}

#[test]
fn approval_request_is_never_filed_twice() {
    let h = harness_with(auto_approving());
    let s = h.session();
    let k = key(&h, &s, "ska-ec-p256");
    for (name, fault) in [
        ("503", Fault::status(POST_SIGN, 503)),
        ("dropped connection", Fault::drop_connection(POST_SIGN)),
        ("malformed JSON", Fault::malformed_json(POST_SIGN)),
        ("HTML 502", Fault::html_bad_gateway(POST_SIGN)),
        ("hang", Fault::hang(POST_SIGN)),
    ] {
        h.sim.reset_counters();
        h.sim.inject(fault);
        let (r, took) = timed(|| s.sign(&Mechanism::EcdsaSha256, k, b"once"));
        report(&format!("approval sign, POST /v1/sign {name}"), took);
        assert_rv(r, RvError::DeviceError);
        assert_eq!(h.sim.counter(POST_SIGN), 1, "{name}: filed at most once");
        assert_eq!(h.sim.counter(POST_SYNC), 0, "{name}");
        assert!(
            took < Duration::from_millis(TIMEOUT_MS + 500),
            "{name}: {took:?}"
        );
        h.sim.clear_faults();
    }
    sign_ec_ok(&h, &s, "ska-ec-p256");
}

// ---------------------------------------------------------------------------------------
// A TSB that is down

#[test]
fn tsb_down_gives_device_error_quickly() {
    let h = harness();
    let s = h.session();
    let k = key(&h, &s, "ec-p256");
    let Logged { h, .. } = h;
    let Harness { sim, .. } = h;
    drop(sim); // connection refused from now on
    let (r, took) = timed(|| s.sign(&Mechanism::EcdsaSha256, k, b"down"));
    report("sign, TSB down (connection refused, 2 retries)", took);
    assert_rv(r, RvError::DeviceError);
    assert!(took < Duration::from_millis(1000), "{took:?}");
    let (r, took) = timed(|| find_key(&s, "ec-p384"));
    report("find, TSB down (connection refused, 2 retries)", took);
    assert_rv(r, RvError::DeviceError);
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[test]
fn tsb_down_from_the_start() {
    let dead = {
        let sim = common::start_sim(tsb_sim::SimConfig::default());
        sim.url()
    };
    let h = logged(
        SimConfig::default(),
        "warn",
        |_| serde_json::json!({ "restApi": dead, "pkcs11": { "requestTimeoutMs": TIMEOUT_MS } }),
    );
    let s = h.session();
    let (r, took) = timed(|| s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]));
    report("key list, TSB never up", took);
    let e = r.unwrap_err();
    assert_eq!(rv_of(&e), Some(RvError::DeviceError), "{e:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
    let lines = h.lines_with("connection failed");
    assert!(!lines.is_empty(), "{}", h.log_text());
}

// ---------------------------------------------------------------------------------------
// A TSB that does not accept connections (connect timeout)

/// A loopback listener that never accepts: its accept queue (backlog 0) is filled first, so
/// the kernel drops further SYNs and a connect waits until the client gives up.
struct Blackhole {
    fd: i32,
    port: u16,
    _queued: Vec<std::net::TcpStream>,
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        // SAFETY: our own socket.
        unsafe { libc::close(self.fd) };
    }
}

fn blackhole() -> Blackhole {
    // SAFETY: plain socket calls on a socket this function owns.
    let (fd, port) = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut blen = len;
        libc::getsockname(fd, &mut bound as *mut _ as *mut libc::sockaddr, &mut blen);
        (fd, u16::from_be(bound.sin_port))
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut queued = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Blackhole {
                    fd,
                    port,
                    _queued: queued,
                }
            }
            Err(e) => panic!("filling the accept queue: {e}"),
        }
    }
    panic!("the kernel kept accepting connections into a full queue");
}

#[test]
fn connect_timeout_is_bounded_and_retried_within_the_deadline() {
    let hole = blackhole();
    let url = format!("http://127.0.0.1:{}", hole.port);
    let h = logged(SimConfig::default(), "debug", |_| {
        serde_json::json!({
            "restApi": url,
            "pkcs11": { "connectTimeoutMs": 300, "requestTimeoutMs": TIMEOUT_MS }
        })
    });
    let s = h.session();
    let (r, took) = timed(|| find_key(&s, "ec-p256"));
    report("find, TSB not accepting (connectTimeoutMs 300)", took);
    assert_rv(r, RvError::DeviceError);
    let attempts = h.lines_with("connect timed out");
    assert!(
        took >= Duration::from_millis(2 * 300),
        "a connect timeout, then a retry: {took:?}"
    );
    assert!(took < Duration::from_millis(TIMEOUT_MS + 300), "{took:?}");
    assert!(!attempts.is_empty(), "{}", h.log_text());
}

#[test]
fn connect_timeout_longer_than_the_request_deadline_is_cut_to_it() {
    let hole = blackhole();
    let url = format!("http://127.0.0.1:{}", hole.port);
    // connectTimeoutMs keeps its default (5000).
    let h = logged(
        SimConfig::default(),
        "debug",
        |_| serde_json::json!({ "restApi": url, "pkcs11": { "requestTimeoutMs": TIMEOUT_MS } }),
    );
    let s = h.session();
    let (r, took) = timed(|| find_key(&s, "ec-p256"));
    report(
        "find, TSB not accepting (connectTimeoutMs 5000, requestTimeoutMs 1000)",
        took,
    );
    assert_rv(r, RvError::DeviceError);
    assert!(took < Duration::from_millis(TIMEOUT_MS + 300), "{took:?}");
}

fn eddsa() -> Mechanism<'static> {
    Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure))
}

fn pss256() -> cryptoki::mechanism::rsa::PkcsPssParams {
    cryptoki::mechanism::rsa::PkcsPssParams {
        hash_alg: cryptoki::mechanism::MechanismType::SHA256,
        mgf: cryptoki::mechanism::rsa::PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Issue 19: a TSB that answers a synchronous sign twice

/// When the extra answer reaches the module.
#[derive(Clone, Copy, Debug)]
enum Extra {
    /// Right behind the sign's answer, in the same write.
    Immediately,
    /// Held back until the next request on the connection and written in front of its answer
    /// (what Nagle's algorithm makes of two writes on a server that does not set TCP_NODELAY,
    /// or a proxy that is one answer ahead): the module finds it where that request's answer
    /// should be.
    Late,
    /// Held back like `Late`, but written alone as soon as the next request arrives, before
    /// that request is even forwarded: nothing is behind it when the module reads it, so only
    /// the signature's verification can tell it is not the answer (verifySignatures on).
    LateAlone,
}

/// A hostile TSB in front of the simulator: every request is forwarded, and after each
/// synchronous sign's answer it sends one extra, complete answer: a real signature by the same
/// key, of other data (the request's payload with "-other" appended).
fn answering_twice(sim_url: String, extra: Extra) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let sim = sim_url.clone();
            std::thread::spawn(move || answer_twice(stream, &sim, extra));
        }
    });
    url
}

type ProxiedRequest = (String, String, Vec<(String, String)>, Vec<u8>);

fn read_proxied_request(r: &mut impl std::io::BufRead) -> Option<ProxiedRequest> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((method, path, headers, body))
}

/// Forwards one request to the simulator: (status, body).
fn forward(sim: &str, req: &ProxiedRequest, body: &[u8]) -> (u16, Vec<u8>) {
    let (method, path, headers, _) = req;
    let mut call = ureq::request(method, &format!("{sim}{path}"));
    for (n, v) in headers {
        if matches!(n.as_str(), "authorization" | "x-api-key" | "content-type") {
            call = call.set(n, v);
        }
    }
    let resp = match if body.is_empty() && method != "POST" {
        call.call()
    } else {
        call.send_bytes(body)
    } {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("simulator: {e}"),
    };
    let status = resp.status();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut out).unwrap();
    (status, out)
}

fn http_response(status: u16, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn answer_twice(stream: std::net::TcpStream, sim: &str, extra: Extra) {
    use std::io::Write;
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut held: Option<Vec<u8>> = None;
    while let Some(req) = read_proxied_request(&mut reader) {
        let close = req
            .2
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        if let Extra::LateAlone = extra {
            if let Some(stray) = held.take() {
                if out.write_all(&stray).is_err() {
                    return;
                }
            }
        }
        let (status, body) = forward(sim, &req, &req.3);
        let mut bytes = held.take().unwrap_or_default();
        bytes.extend(http_response(status, &body));
        if req.1 == "/v1/synchronousSign" && status == 200 {
            let mut other: serde_json::Value = serde_json::from_slice(&req.3).unwrap();
            let payload = other["signRequest"]["payload"].as_str().unwrap();
            let mut data = openssl::base64::decode_block(payload).unwrap();
            data.extend_from_slice(b"-other");
            other["signRequest"]["payload"] = openssl::base64::encode_block(&data).into();
            let (s2, b2) = forward(sim, &req, other.to_string().as_bytes());
            assert_eq!(s2, 200);
            match extra {
                Extra::Immediately => bytes.extend(http_response(200, &b2)),
                Extra::Late | Extra::LateAlone => held = Some(http_response(200, &b2)),
            }
        }
        if out.write_all(&bytes).is_err() || close {
            return;
        }
    }
}

/// Twenty back-to-back ECDSA signs of different data through a TSB that answers each sign
/// twice: every signature returned verifies (OpenSSL) for the data of its own call, none is
/// returned for two data, and no call fails (a sign whose answer may be another request's is
/// sent once more on a new connection).
fn signs_through_a_tsb_that_answers_twice(verify_signatures: bool, extra: Extra) {
    let h = logged(SimConfig::fast_test(), "warn", |url| {
        serde_json::json!({
            "restApi": answering_twice(url.to_string(), extra),
            "pkcs11": { "requestTimeoutMs": 5000, "verifySignatures": verify_signatures }
        })
    });
    let s = h.session();
    let k = key(&h, &s, "ec-p256");
    let pk = h.sim_public_key("ec-p256");
    let mut returned: std::collections::HashMap<Vec<u8>, String> = Default::default();
    let mut failed = Vec::new();
    for i in 0..20 {
        let data = format!("document {i}");
        match s.sign(&Mechanism::EcdsaSha256, k, data.as_bytes()) {
            Ok(sig) => {
                assert!(
                    verify::ecdsa(&pk, Hash::Sha256, data.as_bytes(), &sig),
                    "{extra:?}, verifySignatures {verify_signatures}: sign {i} returned a \
                     signature of other data"
                );
                if let Some(before) = returned.insert(sig, data.clone()) {
                    panic!("one signature returned for {before:?} and {data:?}");
                }
            }
            Err(e) => failed.push((i, e)),
        }
    }
    assert!(
        failed.is_empty(),
        "{extra:?}, verifySignatures {verify_signatures}: {failed:?}\n{}",
        h.log_text()
    );
    if !matches!(extra, Extra::Immediately) {
        assert!(
            !h.lines_with("sent once more on a new connection")
                .is_empty(),
            "{}",
            h.log_text()
        );
    }
}

#[test]
fn a_tsb_answering_twice_never_makes_a_sign_return_another_signature() {
    for extra in [Extra::Late, Extra::Immediately] {
        signs_through_a_tsb_that_answers_twice(false, extra);
    }
}

#[test]
fn a_tsb_answering_twice_with_verification_causes_no_failures() {
    for extra in [Extra::Late, Extra::LateAlone, Extra::Immediately] {
        signs_through_a_tsb_that_answers_twice(true, extra);
    }
}
