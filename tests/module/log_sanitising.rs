//! Network text in log lines (issue 10, item 13): request ids, labels, approver names and
//! messages from the TSB are escaped, capped and stripped of secrets before they are logged.
//! The simulator answers odd `signRequestId`s (`Simulator::override_request_ids`).

use tsb_pkcs11_test_support as common;

use std::time::Duration;

use common::Harness;
use cryptoki_sys::*;
use serde_json::json;
use tsb_sim::SimConfig;

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsb2ctdGVzdCJ9.c2VjcmV0LXNpZ25hdHVyZQ";
const SKA_EC: &str = "ska-ec-p256";

struct Logged {
    h: Harness,
    dir: tempfile::TempDir,
}

/// The demo keys behind a JWT (configured as `token`); its log is read at info.
fn harness(approval_timeout_secs: u64) -> Logged {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("requests.jsonl");
    let mut cfg = SimConfig::demo();
    cfg.auth.bearer_token = Some(JWT.to_string());
    cfg.time_scale = 0.01;
    cfg.approved_execution_delay_ms = 20;
    let h = Harness::with_config(cfg, |url| {
        json!({
            "restApi": url,
            "token": JWT,
            "pkcs11": {
                "pollIntervalMs": 20,
                "pollIntervalMaxMs": 50,
                "approvalTimeoutSecs": approval_timeout_secs,
                "requestJournal": journal
            }
        })
    });
    Logged { h, dir }
}

impl Logged {
    /// What the module logged, at `info`.
    fn text(&self) -> String {
        self.h.log_text(Some("info"))
    }

    /// The request journal (empty when nothing was recorded).
    fn journal(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl")).unwrap_or_default()
    }

    /// C_SignInit + C_Sign with the SKA key on a thread; returns its return value.
    fn start_sign(&self) -> std::sync::mpsc::Receiver<CK_RV> {
        let f = self.h.raw.f;
        let mut s = 0;
        // SAFETY: valid out pointer.
        let rv = unsafe {
            (f.C_OpenSession.unwrap())(0, CKF_SERIAL_SESSION, std::ptr::null_mut(), None, &mut s)
        };
        assert_eq!(rv, CKR_OK);
        let key = common::raw_find_private_keys(f, s, SKA_EC).unwrap()[0];
        let mut mech = CK_MECHANISM {
            mechanism: CKM_ECDSA_SHA256,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: valid mechanism.
        assert_eq!(
            unsafe { (f.C_SignInit.unwrap())(s, &mut mech, key) },
            CKR_OK
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let data = *b"log test";
            let mut sig = [0u8; 256];
            let mut len: CK_ULONG = 256;
            // SAFETY: valid buffers for the call.
            let rv = unsafe {
                (f.C_Sign.unwrap())(s, data.as_ptr() as *mut u8, 8, sig.as_mut_ptr(), &mut len)
            };
            let _ = tx.send(rv);
        });
        rx
    }
}

// An absurd request id (control characters, too long, a credential) is refused where the
// answer of POST /v1/sign is parsed (issue #19 item 10): C_Sign fails with CKR_DEVICE_ERROR, a
// log line says why without quoting the id, and nothing reaches the request journal.

#[test]
fn a_request_id_with_a_newline_cannot_forge_a_log_line() {
    let l = harness(30);
    let forged = "FORGED tsb_pkcs11] approval granted by root";
    let id = format!("req-1\n[2026-01-01T00:00:00.000Z ERROR {forged}");
    l.h.sim.override_request_ids(Some(id.clone()));
    let rx = l.start_sign();
    let rv = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("C_Sign returns");
    assert_eq!(rv, CKR_DEVICE_ERROR, "the id is refused");
    let text = l.text();
    assert!(
        text.contains("control or bidirectional"),
        "the reason:\n{text}"
    );
    assert!(!text.contains("FORGED"), "the id is not quoted:\n{text}");
    for line in text.lines() {
        assert!(
            !line.starts_with("[2026-01-01T00:00:00.000Z"),
            "forged line: {line}\n{text}"
        );
    }
    assert!(!l.journal().contains("FORGED"), "{}", l.journal());
}

#[test]
fn a_huge_request_id_writes_little_log() {
    let l = harness(1);
    let id = format!("big-{}", "x".repeat(2 * 1024 * 1024));
    l.h.sim.override_request_ids(Some(id));
    let rx = l.start_sign();
    let rv = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("C_Sign returns");
    assert_eq!(rv, CKR_DEVICE_ERROR);
    let text = l.text();
    assert!(text.contains("2097156 characters (at most 128)"), "{text}");
    // The whole file, at the test process's level (debug).
    let size = std::fs::metadata(&l.h.log).unwrap().len();
    assert!(size < 64 * 1024, "log of {size} bytes");
    assert!(!l.journal().contains("big-"), "not journalled");
}

#[test]
fn a_request_id_carrying_the_jwt_does_not_log_it() {
    let l = harness(1);
    let id = format!("leak-{JWT}-end");
    l.h.sim.override_request_ids(Some(id));
    let rx = l.start_sign();
    let rv = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("C_Sign returns");
    assert_eq!(rv, CKR_DEVICE_ERROR);
    let text = l.text();
    assert!(
        text.contains("looks like a credential"),
        "rv {rv:#x}:\n{text}"
    );
    assert!(!text.contains(JWT), "{text}");
    assert!(!text.contains(&JWT[..20]), "{text}");
    let journal = l.journal();
    assert!(!journal.contains(&JWT[..20]), "{journal}");
}

/// The module copies of this process log at debug (`common::PROCESS_LOG_LEVEL`); `log_at`
/// shows the lines a module at a lower level would have written, a line without the
/// `[time LEVEL target]` prefix going with the one before it.
#[test]
fn log_at_keeps_what_a_module_at_that_level_would_log() {
    let text = "\
[2026-12-07T23:12:26.700Z DEBUG tsb_pkcs11::tsb::http] connect\n\
[2026-12-07T23:12:26.701Z INFO  tsb_pkcs11::ffi::general] initialised\n\
[2026-12-07T23:12:26.702Z INFO  tsb_pkcs11::wait] request filed\n\
[2026-12-07T23:12:26.703Z WARN  tsb_pkcs11::tsb] slow\n\
continued\n\
[2026-12-07T23:12:26.704Z ERROR tsb_pkcs11::ffi::general] broken\n\
[2026-12-07T23:12:26.705Z DEBUG tsb_pkcs11::token] detail\n\
more detail\n";
    let levels = |l: Option<&str>| -> Vec<String> {
        common::log_at(text, l)
            .lines()
            .map(|line| line.rsplit(' ').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        levels(Some("debug")),
        text.lines()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        levels(Some("info")),
        ["initialised", "filed", "slow", "continued", "broken"]
    );
    assert_eq!(levels(Some("warn")), ["slow", "continued", "broken"]);
    assert_eq!(levels(Some("error")), ["broken"]);
    // The module's default: warnings, errors and the approval-wait lines.
    assert_eq!(levels(None), ["filed", "slow", "continued", "broken"]);
}
