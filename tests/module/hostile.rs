//! Issue 19: the built module against a hostile TSB (tsb-sim's hostile fault kinds and key
//! actions, see tsb-sim/README.md "Hostile mode"). Every client-facing family — sign (single-
//! and multi-part), approval wait, failover, key generation, the request journal and the CLI —
//! runs against answers a TSB, a proxy or an attacker in the path could send, and the same
//! invariants are asserted everywhere:
//!
//! 1. every signature returned with CKR_OK verifies (OpenSSL) under the public key the handle
//!    named when the application read it (CKA_PUBLIC_KEY_INFO, read right after C_FindObjects
//!    or C_GenerateKeyPair), and that key is the key behind the handle's label on the TSB;
//! 2. no TSB answer serves two requests: no identical signature for different data;
//! 3. no call outlives its deadline (`requestTimeoutMs`, or the approval wait, plus a margin);
//! 4. nothing aborts the host (the abort checks run in a child process);
//! 5. no secret (the JWT) in the journal, the module's log or the CLI's output, and no raw
//!    control character on the CLI's output.
//!
//! Timeouts are small (`requestTimeoutMs` 1500), so the file runs in seconds; each test has its
//! own simulator and module copy, so they run in parallel.

use tsb_pkcs11_test_support as common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::verify::{self, Hash};
use common::Harness;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use openssl::pkey::{PKey, Public};
use serde_json::{json, Value};
use tsb_sim::{Fault, NodeFault, SimConfig};

/// The bearer token (a JWT) the module sends; it must never leak.
const JWT: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJob3N0aWxlLXRlc3QifQ.aG9zdGlsZS1qd3Qtc2lnbmF0dXJl";
/// `pkcs11.requestTimeoutMs` of these tests.
const TIMEOUT_MS: u64 = 1500;
/// `pkcs11.approvalTimeoutSecs` of these tests.
const APPROVAL_SECS: u64 = 3;
/// What a call may take beyond its deadline (scheduling on a loaded 2-core machine).
const MARGIN: Duration = Duration::from_millis(1500);

/// A module copy over a (hostile) simulator, logging at debug to its own file, with its own
/// journal.
struct Hostile {
    h: Harness,
    log: PathBuf,
    journal: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Hostile {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.h
    }
}

/// The simulator of these tests: the fast test keys behind [`JWT`]; approval keys are
/// approved 100 ms after each request is filed.
fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::fast_test();
    cfg.auth.bearer_token = Some(JWT.to_string());
    cfg.approved_execution_delay_ms = 20;
    cfg.auto_approve_after_ms = Some(100);
    cfg
}

/// The module's `pkcs11` settings: small timeouts, plus `extra`.
fn settings(journal: &Path, extra: Value) -> Value {
    let mut s = json!({
        "requestTimeoutMs": TIMEOUT_MS,
        "connectTimeoutMs": 300,
        "pollIntervalMs": 20,
        "pollIntervalMaxMs": 50,
        "approvalTimeoutSecs": APPROVAL_SECS,
        "nodeDownBackoffMs": 300,
        "nodeDownBackoffMaxMs": 1000,
        "requestJournal": journal,
    });
    for (k, v) in extra.as_object().expect("settings object") {
        s[k] = v.clone();
    }
    s
}

fn start_with(sim: tsb_sim::Simulator, extra: Value) -> Hostile {
    start_nodes(sim, &[], extra)
}

/// The module over `sim`'s listeners followed by `more` nodes (other simulators).
fn start_nodes(sim: tsb_sim::Simulator, more: &[String], extra: Value) -> Hostile {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("requests.jsonl");
    let pkcs11 = settings(&journal, extra);
    let h = Harness::over(sim, |sim| {
        let mut urls = sim.urls();
        urls.extend(more.iter().cloned());
        let rest: Value = if urls.len() == 1 {
            json!(urls[0])
        } else {
            json!(urls)
        };
        json!({ "restApi": rest, "token": JWT, "pkcs11": pkcs11 })
    });
    // The copy's own log, at the test process's level: debug (common::PROCESS_LOG_LEVEL).
    let log = h.log.clone();
    Hostile {
        h,
        log,
        journal,
        _dir: dir,
    }
}

/// One simulator node, the module with `extra` settings.
fn start(extra: Value) -> Hostile {
    start_with(common::start_sim(sim_config()), extra)
}

impl Drop for Hostile {
    /// A failing test shows the end of the module's log (lines cut at 300 characters).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- the module's log, last lines:");
            for l in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{}", l.chars().take(300).collect::<String>().escape_debug());
            }
        }
    }
}

impl Hostile {
    /// The journal, the current file and the rotated one.
    fn journal_text(&self) -> String {
        [
            PathBuf::from(format!("{}.1", self.journal.display())),
            self.journal.clone(),
        ]
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect()
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Invariant 5 for the module's own files: the JWT is in neither the log nor the journal.
    fn assert_no_secret_in_files(&self) {
        let log = self.log_text();
        assert!(!log.contains(JWT), "the JWT is in the module's log");
        assert!(!log.contains(&JWT[40..]), "part of the JWT is in the log");
        let journal = self.journal_text();
        assert!(!journal.contains(JWT), "the JWT is in the journal");
        assert!(
            !journal.contains(&JWT[40..]),
            "part of the JWT is in the journal"
        );
    }

    /// `tsb-pkcs11 ARGS -c CONFIG`: stdout and stderr, checked for invariant 5 (no JWT, no raw
    /// control character but line ends) and returned; the command has a deadline too.
    fn cli(&self, args: &[&str]) -> (String, String) {
        self.run_cli(args, is_raw_control)
    }

    /// `tsb-pkcs11 --json ARGS`: exact JSON (it escapes C0 controls itself and may carry other
    /// characters as they are), no JWT; the document is returned.
    fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (out, _) = self.run_cli(&all, |c| c.is_control() && c != '\n');
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON from {args:?}: {e}"))
    }

    fn run_cli(&self, args: &[&str], forbidden: fn(char) -> bool) -> (String, String) {
        let child = Command::new(common::built_command())
            .arg("-c")
            .arg(&self.h.config_path)
            .args(args)
            .env_remove("TSB_PKCS11_LOG")
            .env_remove("TSB_PKCS11_LOG_FILE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run tsb-pkcs11");
        let pid = child.id();
        // The output is read while the command runs (it may be larger than a pipe holds).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        let limit = Duration::from_secs(30);
        let out = match rx.recv_timeout(limit) {
            Ok(out) => out.expect("tsb-pkcs11 output"),
            Err(_) => {
                // SAFETY: kill(2) of our own child process.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                panic!("tsb-pkcs11 {args:?} still runs after {limit:?}");
            }
        };
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains(JWT), "the JWT on the CLI's {name}");
            assert!(
                !text.contains(&JWT[40..]),
                "part of the JWT on the CLI's {name}"
            );
            if let Some(c) = text.chars().find(|c| forbidden(*c)) {
                let at = text.find(c).unwrap();
                panic!(
                    "raw control character {:?} on the CLI's {name} ({args:?}): {:?}",
                    c,
                    &text[at.saturating_sub(40)..(at + 40).min(text.len())]
                );
            }
        }
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A character a terminal acts on: C0/C1 controls (but line feed and tab), DEL, and the
/// bidirectional overrides and isolates.
fn is_raw_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

// ---------------------------------------------------------------------------------------------
// Invariants 1-3

/// A private key handle and the public key it named when the application read it.
struct Named {
    handle: ObjectHandle,
    label: String,
    spki: Vec<u8>,
    key: PKey<Public>,
}

/// The public key (SPKI) a key handle names now.
fn spki_of(s: &Session, handle: ObjectHandle) -> Vec<u8> {
    match s
        .get_attributes(handle, &[AttributeType::PublicKeyInfo])
        .expect("CKA_PUBLIC_KEY_INFO")
        .pop()
    {
        Some(Attribute::PublicKeyInfo(v)) => v,
        other => panic!("CKA_PUBLIC_KEY_INFO: {other:?}"),
    }
}

/// The label a handle names now.
fn label_of(s: &Session, handle: ObjectHandle) -> String {
    match s
        .get_attributes(handle, &[AttributeType::Label])
        .expect("CKA_LABEL")
        .pop()
    {
        Some(Attribute::Label(v)) => String::from_utf8_lossy(&v).into_owned(),
        other => panic!("CKA_LABEL: {other:?}"),
    }
}

/// Reads what a handle names, and checks (invariant 1) that it is the key behind its label
/// on the TSB right now.
fn named(h: &Harness, s: &Session, handle: ObjectHandle) -> Named {
    let label = label_of(s, handle);
    let spki = spki_of(s, handle);
    assert_eq!(
        Some(&spki),
        h.sim.public_key_der(&label).as_ref(),
        "the handle labelled {:?} names another key than the TSB's",
        label
            .escape_debug()
            .to_string()
            .chars()
            .take(60)
            .collect::<String>()
    );
    let key = PKey::public_key_from_der(&spki).expect("OpenSSL parses the SPKI");
    Named {
        handle,
        label,
        spki,
        key,
    }
}

/// C_FindObjects for the private key labelled `label`, read at once.
fn find(h: &Harness, s: &Session, label: &str) -> Named {
    let found = within(TIMEOUT_MS, "C_FindObjects", || {
        s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
    });
    match found.as_deref() {
        Ok([handle]) => named(h, s, *handle),
        other => panic!(
            "C_FindObjects for the private key {label:?}, which the TSB has: {other:?} \
             (an answer meant for another request?)"
        ),
    }
}

/// The mechanisms the tests sign with.
#[derive(Clone, Copy, Debug)]
enum Mech {
    /// CKM_ECDSA_SHA256 (multi-part possible).
    EcdsaSha256,
    /// CKM_ECDSA over a SHA-256 digest.
    Ecdsa,
    /// CKM_EDDSA (Ed25519).
    Eddsa,
    /// CKM_SHA256_RSA_PKCS (multi-part possible).
    RsaSha256,
}

impl Mech {
    fn mechanism(self) -> Mechanism<'static> {
        match self {
            Mech::EcdsaSha256 => Mechanism::EcdsaSha256,
            Mech::Ecdsa => Mechanism::Ecdsa,
            Mech::Eddsa => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            Mech::RsaSha256 => Mechanism::Sha256RsaPkcs,
        }
    }

    /// What the application passes for `msg` (CKM_ECDSA takes the digest).
    fn input(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Mech::Ecdsa => Hash::Sha256.digest(msg),
            _ => msg.to_vec(),
        }
    }

    /// OpenSSL's verdict on `sig` over `msg` under `key`.
    fn verifies(self, key: &PKey<Public>, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Mech::EcdsaSha256 | Mech::Ecdsa => verify::ecdsa(key, Hash::Sha256, msg, sig),
            Mech::Eddsa => verify::ed25519(key, msg, sig),
            Mech::RsaSha256 => verify::rsa_pkcs1(key, Hash::Sha256, msg, sig),
        }
    }
}

/// The signatures a test saw: signature → (label, message).
#[derive(Default)]
struct Ledger(Mutex<HashMap<Vec<u8>, Signed>>);

/// What a signature was returned for: the key's label and the message.
type Signed = (String, Vec<u8>);

impl Ledger {
    /// Invariants 1 and 2 for one CKR_OK signature.
    fn check(&self, k: &Named, mech: Mech, msg: &[u8], sig: &[u8]) {
        assert!(
            mech.verifies(&k.key, msg, sig),
            "CKR_OK with a signature that does not verify under the key the handle {:?} named \
             when it was read ({mech:?}, message {:?})",
            k.label.escape_debug().to_string(),
            String::from_utf8_lossy(msg)
        );
        let mut seen = self.0.lock().unwrap();
        if let Some((label, earlier)) = seen.get(sig) {
            assert!(
                label == &k.label && earlier == msg,
                "one signature returned for two requests: {:?} and {:?}",
                String::from_utf8_lossy(earlier),
                String::from_utf8_lossy(msg)
            );
        }
        seen.insert(sig.to_vec(), (k.label.clone(), msg.to_vec()));
    }
}

/// Runs `f`, which must end within `deadline_ms` + [`MARGIN`] (invariant 3).
fn within<T>(deadline_ms: u64, what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let v = f();
    let took = started.elapsed();
    let limit = Duration::from_millis(deadline_ms) + MARGIN;
    assert!(
        took <= limit,
        "{what} took {} ms, the deadline is {deadline_ms} ms",
        took.as_millis()
    );
    v
}

/// The PKCS#11 return value of a failed call.
fn rv(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Signs `msg` in one part (C_Sign), within `deadline_ms`; a CKR_OK signature is checked.
fn sign(
    s: &Session,
    k: &Named,
    mech: Mech,
    msg: &[u8],
    ledger: &Ledger,
    deadline_ms: u64,
) -> Result<Vec<u8>, RvError> {
    let r = within(deadline_ms, "C_Sign", || {
        s.sign(&mech.mechanism(), k.handle, &mech.input(msg))
    });
    match r {
        Ok(sig) => {
            ledger.check(k, mech, msg, &sig);
            Ok(sig)
        }
        Err(e) => Err(rv(&e).unwrap_or_else(|| panic!("C_Sign: {e}"))),
    }
}

/// Signs `msg` in two parts (C_SignUpdate twice, C_SignFinal); a CKR_OK signature is checked.
fn sign_parts(
    s: &Session,
    k: &Named,
    mech: Mech,
    msg: &[u8],
    ledger: &Ledger,
) -> Result<Vec<u8>, RvError> {
    let r = within(TIMEOUT_MS, "C_SignInit/Update/Final", || {
        s.sign_init(&mech.mechanism(), k.handle)?;
        let (a, b) = msg.split_at(msg.len() / 2);
        s.sign_update(a)?;
        s.sign_update(b)?;
        s.sign_final()
    });
    match r {
        Ok(sig) => {
            ledger.check(k, mech, msg, &sig);
            Ok(sig)
        }
        Err(e) => Err(rv(&e).unwrap_or_else(|| panic!("multi-part sign: {e}"))),
    }
}

/// A workload over synchronous keys: for each message, a single-part and a multi-part sign
/// with each of `keys`; returns how many signatures came back.
fn workload(h: &Harness, keys: &[(&str, Mech)], rounds: usize, ledger: &Ledger) -> usize {
    let s = h.session();
    let named: Vec<(Named, Mech)> = keys.iter().map(|(l, m)| (find(h, &s, l), *m)).collect();
    let mut ok = 0;
    for round in 0..rounds {
        for (k, mech) in &named {
            let msg = format!("round {round} with {} ({mech:?}), single part", k.label);
            ok += usize::from(sign(&s, k, *mech, msg.as_bytes(), ledger, TIMEOUT_MS).is_ok());
            if matches!(mech, Mech::EcdsaSha256 | Mech::RsaSha256) {
                let msg = format!("round {round} with {} ({mech:?}), in parts", k.label);
                ok += usize::from(sign_parts(&s, k, *mech, msg.as_bytes(), ledger).is_ok());
            }
        }
    }
    ok
}

const SYNC_KEYS: [(&str, Mech); 4] = [
    ("ec-p256", Mech::EcdsaSha256),
    ("ec-p384", Mech::Ecdsa),
    ("ed25519", Mech::Eddsa),
    ("rsa-2048", Mech::RsaSha256),
];

// ---------------------------------------------------------------------------------------------
// Sign

/// An extra complete HTTP response after every answer (a copy of it) must never be read as the
/// answer to the next request on a kept-alive connection.
#[test]
fn extra_responses_never_answer_the_next_request() {
    let h = start(json!({}));
    h.sim.inject(Fault::extra_response("*", None));
    let ledger = Ledger::default();
    workload(&h, &SYNC_KEYS, 3, &ledger);
    h.sim.clear_faults();
    // And the module recovers: every family works once the TSB behaves.
    assert_eq!(workload(&h, &SYNC_KEYS, 1, &ledger), 6);
    h.assert_no_secret_in_files();
}

/// The same without the module's own check of signatures (`verifySignatures: false`): an
/// extra response carrying a valid signature of other data by the right key, or a copy of
/// the previous answer, must still never become the answer to the next sign.
#[test]
fn extra_responses_never_answer_the_next_request_without_verification() {
    let h = start(json!({ "verifySignatures": false }));
    let ledger = Ledger::default();
    let forged = {
        let s = h.session();
        let k = find(&h, &s, "ec-p256");
        let other = Ledger::default();
        sign(&s, &k, Mech::EcdsaSha256, b"forged", &other, TIMEOUT_MS).expect("sign")
    };
    h.sim.inject(Fault::extra_response(
        "POST /v1/synchronousSign",
        Some(json!({ "signature": openssl::base64::encode_block(&forged) })),
    ));
    workload(&h, &SYNC_KEYS[..1], 4, &ledger);
    h.sim.clear_faults();
    h.sim.inject(Fault::extra_response("*", None));
    workload(&h, &SYNC_KEYS, 2, &ledger);
}

/// A TSB (or a caching proxy) that answers every sign with the first answer it gave: the
/// module must not hand that signature out for other data.
#[test]
fn a_replayed_answer_never_serves_two_requests() {
    let h = start(json!({}));
    let ledger = Ledger::default();
    h.sim
        .inject(Fault::replay_answer("POST /v1/synchronousSign"));
    workload(&h, &SYNC_KEYS[..2], 2, &ledger);
    h.sim.clear_faults();
    assert_eq!(workload(&h, &SYNC_KEYS[..2], 1, &ledger), 3);
}

/// Replayed key attributes: the answer for one label served for another must never make a
/// handle name another key than the one behind its label.
#[test]
fn replayed_key_attributes_never_name_another_key() {
    let h = start(json!({ "cacheTtlSecs": 0 }));
    h.sim
        .add_key(tsb_sim::KeySpec::ec("ec-p256-b", tsb_sim::Curve::P256))
        .unwrap();
    h.sim
        .inject(Fault::replay_answer("POST /v1/key/attributes"));
    let ledger = Ledger::default();
    let s = h.session();
    for label in ["ec-p256", "ec-p256-b"] {
        // Either the key is not found (the module saw the wrong label), or it is the right key.
        let found = within(TIMEOUT_MS, "C_FindObjects", || {
            s.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
        });
        for handle in found.unwrap_or_default() {
            let k = named(&h, &s, handle);
            let _ = sign(
                &s,
                &k,
                Mech::EcdsaSha256,
                label.as_bytes(),
                &ledger,
                TIMEOUT_MS,
            );
        }
    }
}

/// Valid signatures by another key of the TSB, or by the right key over other data, are never
/// returned — synchronous signs (single- and multi-part, four key types) and approval
/// requests alike.
#[test]
fn signatures_by_another_key_or_of_other_data_are_never_returned() {
    let h = start(json!({}));
    let ledger = Ledger::default();
    let s = h.session();
    let keys: Vec<(Named, Mech)> = SYNC_KEYS
        .iter()
        .map(|(l, m)| (find(&h, &s, l), *m))
        .collect();
    for (name, fault) in [
        ("wrong key", Fault::wrong_key_signature("*", None)),
        ("other data", Fault::other_data_signature("*")),
    ] {
        h.sim.inject(fault);
        for (k, mech) in &keys {
            let msg = format!("{name}: {}", k.label);
            let r = sign(&s, k, *mech, msg.as_bytes(), &ledger, TIMEOUT_MS);
            assert!(r.is_err(), "{name} signature returned for {}", k.label);
            if matches!(mech, Mech::EcdsaSha256 | Mech::RsaSha256) {
                let r = sign_parts(&s, k, *mech, msg.as_bytes(), &ledger);
                assert!(
                    r.is_err(),
                    "{name} signature returned in parts for {}",
                    k.label
                );
            }
        }
        // An approval request executed with such a signature.
        let ska = find(&h, &s, "ska-ec-p256");
        let r = sign(
            &s,
            &ska,
            Mech::EcdsaSha256,
            name.as_bytes(),
            &ledger,
            APPROVAL_SECS * 1000,
        );
        assert!(r.is_err(), "{name} signature returned after approval");
        h.sim.clear_faults();
    }
    assert_eq!(workload(&h, &SYNC_KEYS, 1, &ledger), 6);
}

// ---------------------------------------------------------------------------------------------
// A key swapped behind its label

/// The key behind a label is replaced (new key material, new id) after the application read
/// the handle: the handle must never return a signature by the new key (it does not verify
/// under the key the application holds); a new search names the new key.
#[test]
fn a_handle_never_signs_with_a_key_swapped_behind_its_label() {
    let h = start(json!({ "cacheTtlSecs": 0 }));
    let ledger = Ledger::default();
    let s = h.session();
    let old = find(&h, &s, "ec-p256");
    sign(
        &s,
        &old,
        Mech::EcdsaSha256,
        b"before the swap",
        &ledger,
        TIMEOUT_MS,
    )
    .expect("sign");
    let swap = h.sim.swap_key("ec-p256").expect("swap");
    assert_ne!(swap.public_key_der, old.spki);
    // An operation initialised before the module learns of the swap.
    let early = s.sign_init(&Mech::EcdsaSha256.mechanism(), old.handle);
    // A new search learns of it and finds the key behind the label now.
    let new = find(&h, &s, "ec-p256");
    assert_eq!(new.spki, swap.public_key_der);
    if early.is_ok() {
        let r = within(TIMEOUT_MS, "C_Sign", || {
            s.sign_update(b"initialised before")
        });
        let r = r.and_then(|_| s.sign_final());
        if let Ok(sig) = r {
            ledger.check(&old, Mech::EcdsaSha256, b"initialised before", &sig);
        }
    }
    // The old handle never signs with the new key, and never shows it.
    let r = sign(
        &s,
        &old,
        Mech::EcdsaSha256,
        b"after the swap",
        &ledger,
        TIMEOUT_MS,
    );
    assert!(r.is_err(), "the old handle signed with the new key");
    let r = sign_parts(
        &s,
        &old,
        Mech::EcdsaSha256,
        b"after the swap, in parts",
        &ledger,
    );
    assert!(
        r.is_err(),
        "the old handle signed in parts with the new key"
    );
    if let Ok(attrs) = s.get_attributes(old.handle, &[AttributeType::PublicKeyInfo]) {
        if let Some(Attribute::PublicKeyInfo(now)) = attrs.into_iter().next() {
            assert_eq!(now, old.spki, "the old handle now names another key");
        }
    }
    sign(
        &s,
        &new,
        Mech::EcdsaSha256,
        b"with the new key",
        &ledger,
        TIMEOUT_MS,
    )
    .expect("the new key signs");
}

/// Failover to a node that has another key under the same label (two simulators whose
/// `ec-p256` differ): a handle read on the first node never signs with the second node's key.
#[test]
fn failover_to_a_node_with_another_key_never_signs_for_the_old_handle() {
    let second = common::start_sim(sim_config());
    let other = second.swap_key("ec-p256").expect("swap on node 2");
    let h = start_nodes(
        common::start_sim(sim_config()),
        &second.urls(),
        json!({ "nodeStrategy": "failover", "cacheTtlSecs": 0 }),
    );
    let ledger = Ledger::default();
    let s = h.session();
    let old = find(&h, &s, "ec-p256");
    assert_ne!(old.spki, other.public_key_der);
    sign(
        &s,
        &old,
        Mech::EcdsaSha256,
        b"on node 1",
        &ledger,
        TIMEOUT_MS,
    )
    .expect("node 1 signs");
    h.sim.set_listener_fault(0, NodeFault::Down).unwrap();
    for msg in [&b"on node 2"[..], b"on node 2 again"] {
        let _ = sign(&s, &old, Mech::EcdsaSha256, msg, &ledger, TIMEOUT_MS * 2);
        let _ = sign_parts(&s, &old, Mech::EcdsaSha256, msg, &ledger);
    }
    // A new search on node 2 names node 2's key (checked by `named` against node 1's
    // simulator, so compare by hand).
    let handles = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ec-p256".to_vec()),
        ])
        .unwrap_or_default();
    for handle in handles {
        let spki = spki_of(&s, handle);
        let key = PKey::public_key_from_der(&spki).unwrap();
        let k = Named {
            handle,
            label: "ec-p256".into(),
            spki,
            key,
        };
        if k.spki == other.public_key_der {
            assert_ne!(handle, old.handle, "node 2's key under node 1's handle");
        }
        let _ = sign(
            &s,
            &k,
            Mech::EcdsaSha256,
            b"new handle",
            &ledger,
            TIMEOUT_MS * 2,
        );
    }
}

/// The key of an approval key is swapped while the module waits for the approvals: the
/// signature the TSB executes (by the new key) must not be returned for the old handle.
#[test]
fn a_key_swapped_during_an_approval_wait_is_never_returned() {
    let mut cfg = sim_config();
    cfg.auto_approve_after_ms = None;
    let h = start_with(common::start_sim(cfg), json!({ "cacheTtlSecs": 0 }));
    let ledger = Ledger::default();
    let msg = b"approved, then swapped";
    let (old, r) = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let s = h.session();
            let old = find(&h, &s, "ska-ec-p256");
            let r = sign(
                &s,
                &old,
                Mech::EcdsaSha256,
                msg,
                &ledger,
                APPROVAL_SECS * 1000,
            );
            (old, r)
        });
        let id = wait_for_request(&h.sim);
        // The request was filed with the old key; the TSB now holds a new one under the label.
        h.sim.swap_key("ska-ec-p256").expect("swap");
        h.sim.approve(&id, "alice").expect("approve");
        waiter.join().expect("signing thread")
    });
    // The simulator signs the approved request with the key behind the label at execution
    // (the new one); `sign` checked a CKR_OK signature against the key the handle named when
    // it was read, so a returned signature would have failed there.
    if r.is_ok() {
        assert_ne!(h.sim.public_key_der("ska-ec-p256"), Some(old.spki));
    }
}

/// The id of the first PENDING approval request on the simulator.
fn wait_for_request(sim: &tsb_sim::Simulator) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(id) = sim
            .requests()
            .into_iter()
            .find(|r| r.status == "PENDING")
            .and_then(|r| r.id)
        {
            return id;
        }
        assert!(Instant::now() < end, "no approval request was filed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Approval waits, the journal and `tsb-pkcs11 requests`

/// The TSB echoes the bearer token as the approval request id: the sign works (the id is the
/// TSB's to choose), but the JWT appears neither in the module's log, nor in its journal, nor
/// in the output of `tsb-pkcs11 requests`.
#[test]
fn a_request_id_echoing_the_token_leaks_nowhere() {
    let h = start(json!({}));
    let ledger = Ledger::default();
    let s = h.session();
    let k = find(&h, &s, "ska-ec-p256");
    h.sim.inject(Fault::echo_token().times(1));
    let r = sign(
        &s,
        &k,
        Mech::EcdsaSha256,
        b"id is the token",
        &ledger,
        APPROVAL_SECS * 1000,
    );
    assert_eq!(
        h.sim
            .requests()
            .iter()
            .filter(|r| r.id.as_deref() == Some(JWT))
            .count(),
        1,
        "the simulator filed the request under the token"
    );
    // The TSB may name its requests as it likes, but the module may also refuse an id that
    // looks like a credential: either way nothing may keep or show the token.
    let _ = r;
    h.assert_no_secret_in_files();
    h.cli(&["requests", "--all"]);
    h.cli_json(&["requests", "--all"]);
}

/// A 2 MB approval request id: the wait ends within its deadline, the host survives, and the
/// journal and the log stay small.
#[test]
fn a_huge_request_id_is_bounded() {
    let h = start(json!({}));
    let ledger = Ledger::default();
    let s = h.session();
    let k = find(&h, &s, "ska-ec-p256");
    for i in 0..3 {
        let msg = format!("journalled {i}");
        sign(
            &s,
            &k,
            Mech::EcdsaSha256,
            msg.as_bytes(),
            &ledger,
            APPROVAL_SECS * 1000,
        )
        .expect("an approval sign");
    }
    let before = h.journal_text();
    assert!(
        !before.is_empty(),
        "the journal holds the approval requests"
    );
    h.sim.inject(Fault::huge_request_id(2 << 20).times(1));
    let _ = sign(
        &s,
        &k,
        Mech::EcdsaSha256,
        b"huge id",
        &ledger,
        APPROVAL_SECS * 1000 + TIMEOUT_MS,
    );
    let journal = std::fs::metadata(&h.journal).map(|m| m.len()).unwrap_or(0);
    assert!(journal < 64 * 1024, "journal of {journal} bytes");
    // The history survives (one huge line must not rotate the earlier requests away).
    let lines = |t: &str| t.lines().count();
    assert!(
        lines(&h.journal_text()) >= lines(&before),
        "the journal lost its history: {} lines before, {} after",
        lines(&before),
        lines(&h.journal_text())
    );
    let log = std::fs::metadata(&h.log).map(|m| m.len()).unwrap_or(0);
    assert!(log < 256 * 1024, "log of {log} bytes");
    let (out, _) = h.cli(&["requests"]);
    assert!(
        out.len() < 64 * 1024,
        "requests output of {} bytes",
        out.len()
    );
    h.assert_no_secret_in_files();
}

/// An approval wait times out while the TSB hangs the cancel (`DELETE /v1/request/{id}`, with
/// `requestTimeoutMs` 10 s): C_Finalize still returns within its bound (2 s).
#[test]
fn finalize_is_bounded_while_the_tsb_hangs_a_cancel() {
    let mut cfg = sim_config();
    cfg.auto_approve_after_ms = None;
    let h = start_with(
        common::start_sim(cfg),
        json!({ "requestTimeoutMs": 10_000, "approvalTimeoutSecs": 1 }),
    );
    let ledger = Ledger::default();
    let s = h.session();
    let k = find(&h, &s, "ska-ec-p256");
    h.sim.inject(Fault::hang("DELETE /v1/request"));
    let r = sign(
        &s,
        &k,
        Mech::EcdsaSha256,
        b"never approved",
        &ledger,
        11_000,
    );
    assert!(r.is_err(), "nobody approved");
    drop(s);
    within(2000, "C_Finalize", || h.reinitialize());
}

// ---------------------------------------------------------------------------------------------
// Hostile labels and ids, `tsb-pkcs11 keys`

/// Keys whose labels carry ESC sequences, a CR, U+202E, a newline starting a forged line, or
/// 100,000 characters, and a key with a 1 MiB id: every handle names the key behind its label,
/// signs with it, and `tsb-pkcs11 keys` prints no raw control character.
#[test]
fn hostile_labels_and_ids() {
    let h = start(json!({}));
    let labels = h.sim.add_hostile_keys().expect("hostile keys");
    let ledger = Ledger::default();
    let s = h.session();
    let handles = within(TIMEOUT_MS * 4, "C_FindObjects (all keys)", || {
        s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .expect("find all")
    });
    let mut seen = 0;
    for handle in handles {
        let spki = spki_of(&s, handle);
        if PKey::public_key_from_der(&spki).is_err() {
            // A post-quantum key of the demo (ML-DSA, SLH-DSA, LMS), which this OpenSSL cannot
            // parse: invariant 1 is checked on its SubjectPublicKeyInfo alone.
            let label = label_of(&s, handle);
            assert_eq!(
                Some(&spki),
                h.sim.public_key_der(&label).as_ref(),
                "{label}"
            );
            continue;
        }
        let k = named(&h, &s, handle);
        if labels.contains(&k.label) {
            seen += 1;
            let msg = format!("hostile {}", k.label.len());
            sign(
                &s,
                &k,
                Mech::EcdsaSha256,
                msg.as_bytes(),
                &ledger,
                TIMEOUT_MS,
            )
            .expect("a hostile label signs");
        }
    }
    assert!(
        seen >= labels.len() - 1,
        "{seen} of {} hostile keys",
        labels.len()
    );
    // The module's own log escapes the labels too.
    let log = h.log_text();
    if let Some(c) = log.chars().find(|c| is_raw_control(*c)) {
        panic!("raw control character {c:?} in the module's log");
    }
    assert!(!log.lines().any(|l| l.starts_with("FORGED LINE")));
    let (out, _) = h.cli(&["keys"]);
    assert!(out.contains("FORGED LINE"), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("FORGED LINE")), "{out}");
    h.cli(&["doctor"]);
    // JSON keeps the labels exact.
    let doc = h.cli_json(&["keys"]).to_string();
    for label in labels.iter().filter(|l| !l.starts_with("huge")) {
        let quoted = serde_json::to_string(label).unwrap();
        assert!(
            doc.contains(&quoted[1..quoted.len() - 1]),
            "{label:?} is not in the JSON output"
        );
    }
    h.assert_no_secret_in_files();
}

// ---------------------------------------------------------------------------------------------
// Deadlines

/// Answers that hang, drip one byte at a time, or declare a huge length: each call ends within
/// its deadline, the host survives, and the next call works.
#[test]
fn hung_dripped_and_lying_answers_end_within_the_deadline() {
    let h = start(json!({ "cacheTtlSecs": 0 }));
    let ledger = Ledger::default();
    let s = h.session();
    let ec = find(&h, &s, "ec-p256");
    let ska = find(&h, &s, "ska-ec-p256");
    let cases: Vec<(&str, Fault)> = vec![
        ("hang", Fault::hang("POST /v1/synchronousSign").times(1)),
        (
            "drip",
            Fault::drip("POST /v1/synchronousSign", 100).times(1),
        ),
        (
            "lying length",
            Fault::lying_length("POST /v1/synchronousSign", 1 << 62).times(1),
        ),
    ];
    for (name, fault) in cases {
        h.sim.inject(fault);
        let msg = format!("{name} sign");
        let _ = sign(
            &s,
            &ec,
            Mech::EcdsaSha256,
            msg.as_bytes(),
            &ledger,
            TIMEOUT_MS,
        );
        h.sim.clear_faults();
    }
    // Searches (key attributes) and approval waits (filing, polls).
    for fault in [
        Fault::drip("GET /v1/key", 100),
        Fault::lying_length("GET /v1/key", 1 << 62),
    ] {
        h.sim.inject(fault);
        let _ = within(TIMEOUT_MS * 2, "C_FindObjects", || {
            s.find_objects(&[Attribute::Label(b"ec-p384".to_vec())])
        });
        h.sim.clear_faults();
    }
    for fault in [
        Fault::hang("POST /v1/sign"),
        Fault::drip("POST /v1/sign", 100),
        Fault::drip("GET /v1/request", 100),
        Fault::lying_length("GET /v1/request", 1 << 62),
    ] {
        h.sim.inject(fault);
        let _ = sign(
            &s,
            &ska,
            Mech::EcdsaSha256,
            b"approval",
            &ledger,
            APPROVAL_SECS * 1000 + TIMEOUT_MS,
        );
        h.sim.clear_faults();
    }
    sign(
        &s,
        &ec,
        Mech::EcdsaSha256,
        b"afterwards",
        &ledger,
        TIMEOUT_MS,
    )
    .expect("recovers");
}

// ---------------------------------------------------------------------------------------------
// Failover

/// Two nodes; the first hangs, the answers of both carry extra responses and are replayed:
/// signs fail over within the deadline, and every signature is right.
#[test]
fn failover_under_hostile_answers() {
    let sim = common::start_cluster(sim_config(), 2);
    let h = start_with(sim, json!({ "nodeStrategy": "failover" }));
    let ledger = Ledger::default();
    assert_eq!(workload(&h, &SYNC_KEYS[..1], 1, &ledger), 2);
    h.sim.set_listener_fault(0, NodeFault::Hang).unwrap();
    h.sim.inject(Fault::extra_response("*", None));
    workload(&h, &SYNC_KEYS, 2, &ledger);
    h.sim.clear_faults();
    h.sim.set_listener_fault(0, NodeFault::None).unwrap();
    h.sim.set_listener_fault(1, NodeFault::Down).unwrap();
    h.sim.inject(Fault::wrong_key_signature("*", None));
    let s = h.session();
    let k = find(&h, &s, "ec-p256");
    assert!(sign(
        &s,
        &k,
        Mech::EcdsaSha256,
        b"wrong key",
        &ledger,
        TIMEOUT_MS * 2
    )
    .is_err());
    h.sim.clear_faults();
    sign(
        &s,
        &k,
        Mech::EcdsaSha256,
        b"node 0 again",
        &ledger,
        TIMEOUT_MS * 2,
    )
    .expect("node 0 signs");
}

// ---------------------------------------------------------------------------------------------
// Key generation

/// C_GenerateKeyPair while the TSB replays the attributes of another key, or adds extra
/// responses: the generated handles name the key the TSB created (or the call fails), and it
/// signs with that key.
#[test]
fn key_generation_under_hostile_answers() {
    let h = start(json!({}));
    let ledger = Ledger::default();
    let s = h.pkcs11.open_rw_session(h.slot).expect("rw session");
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let generate = |label: &str| {
        within(TIMEOUT_MS * 3, "C_GenerateKeyPair", || {
            s.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::EcParams(p256.clone()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Sign(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
            )
        })
    };
    let faults = [
        ("replayed", Fault::replay_answer("POST /v1/key/attributes")),
        ("extra", Fault::extra_response("*", None)),
    ];
    for (name, fault) in faults {
        // The replay remembers the attributes of ec-p256.
        h.sim.inject(fault);
        let _ = s.find_objects(&[Attribute::Label(b"ec-p256".to_vec())]);
        let label = format!("generated-{name}");
        if let Ok((public, private)) = generate(&label) {
            let k = named(&h, &s, private);
            assert_eq!(k.label, label);
            assert_eq!(spki_of(&s, public), k.spki, "the two handles name one key");
            let _ = sign(
                &s,
                &k,
                Mech::EcdsaSha256,
                label.as_bytes(),
                &ledger,
                TIMEOUT_MS,
            );
        }
        h.sim.clear_faults();
        // Whatever happened, the search finds the key the TSB has under that label.
        if h.sim.public_key_der(&label).is_some() {
            let k = find(&h, &s, &label);
            sign(
                &s,
                &k,
                Mech::EcdsaSha256,
                b"afterwards",
                &ledger,
                TIMEOUT_MS,
            )
            .expect("the generated key signs");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nothing aborts the host

const CHILD: &str = "TSB_PKCS11_HOSTILE_CHILD";

/// Runs the child scenario `scenario` ([`abort_child`]) in a new process of this binary; it must
/// exit 0 within a minute. Its stderr names the call it was in when it died.
fn run_child(scenario: &str) {
    let started = Instant::now();
    let name = common::test_path(module_path!(), "abort_child");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(CHILD, scenario)
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("re-run this test binary");
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the child process ({scenario}) hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        status.success(),
        "the host died ({scenario}): {status:?}\n{tail}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("test {name} ... ok")),
        "the child ran its scenario"
    );
}

/// The host survives hostile answers: answers that declare 2^62 or 2^64-1 bytes, a 2 MB
/// request id, keys with hostile labels and a 1 MiB id (in a child process: an abort or a
/// crash is a failure, not the end of the test run).
#[test]
fn hostile_answers_do_not_abort_the_host() {
    run_child("tsb");
}

/// The host survives lying lengths from the application: a template attribute claiming 1 TiB
/// on a 3-byte buffer in C_FindObjectsInit (CKA_LABEL, CKA_ID), C_CreateObject (CKA_VALUE) and
/// C_GenerateKeyPair (CKA_LABEL) is refused without reading or allocating that much.
#[test]
fn lying_template_lengths_do_not_abort_the_host() {
    run_child("lengths");
}

/// The scenarios of the tests above (does nothing unless run as their child).
#[test]
fn abort_child() {
    match std::env::var(CHILD).as_deref() {
        Ok("tsb") => child_hostile_answers(),
        Ok("lengths") => child_lying_lengths(),
        _ => {}
    }
}

fn child_hostile_answers() {
    let h = start(json!({}));
    let ledger = Ledger::default();
    let s = h.session();
    let ec = find(&h, &s, "ec-p256");
    let ska = find(&h, &s, "ska-ec-p256");
    for fault in [
        Fault::lying_length("POST /v1/synchronousSign", u64::MAX >> 2),
        Fault::lying_length("POST /v1/synchronousSign", u64::MAX),
    ] {
        eprintln!("child: sign with {fault:?}");
        h.sim.inject(fault.times(1));
        let _ = sign(&s, &ec, Mech::EcdsaSha256, b"lying", &ledger, TIMEOUT_MS);
    }
    eprintln!("child: 2 MB request id");
    h.sim.inject(Fault::huge_request_id(2 << 20).times(1));
    let _ = sign(
        &s,
        &ska,
        Mech::EcdsaSha256,
        b"huge id",
        &ledger,
        APPROVAL_SECS * 1000 + TIMEOUT_MS,
    );
    eprintln!("child: hostile labels");
    h.sim.add_hostile_keys().unwrap();
    h.sim
        .inject(Fault::lying_length("GET /v1/key", u64::MAX >> 2).times(1));
    let _ = s.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]);
    let handles = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap_or_default();
    for handle in handles {
        // CKA_ID of 1 MiB and labels of 60,000 characters, read whole and into a buffer that is
        // too small.
        let _ = s.get_attributes(handle, &[AttributeType::Id, AttributeType::Label]);
        let mut small = [0u8; 8];
        let mut template = [cryptoki_sys::CK_ATTRIBUTE {
            type_: cryptoki_sys::CKA_LABEL,
            pValue: small.as_mut_ptr().cast(),
            ulValueLen: small.len() as cryptoki_sys::CK_ULONG,
        }];
        // SAFETY: the template and its buffer outlive the call.
        let _ = unsafe {
            (h.raw.f.C_GetAttributeValue.unwrap())(
                s.handle(),
                handle.handle(),
                template.as_mut_ptr(),
                1,
            )
        };
    }
}

fn child_lying_lengths() {
    use cryptoki_sys::*;
    let h = start(json!({}));
    let f = h.raw.f;
    let s = h.pkcs11.open_rw_session(h.slot).expect("rw session");
    let mut three = [b'a', b'b', b'c'];
    let lying = |t: CK_ATTRIBUTE_TYPE, buf: &mut [u8; 3]| CK_ATTRIBUTE {
        type_: t,
        pValue: buf.as_mut_ptr().cast(),
        ulValueLen: 1 << 40,
    };
    for t in [CKA_LABEL, CKA_ID] {
        eprintln!("child: C_FindObjectsInit, attribute {t:#x} of 1 TiB");
        let mut template = [lying(t, &mut three)];
        // SAFETY: the template is valid; its length lies, which the module must not trust.
        let rv = unsafe { (f.C_FindObjectsInit.unwrap())(s.handle(), template.as_mut_ptr(), 1) };
        if rv == CKR_OK {
            // SAFETY: an active search.
            unsafe { (f.C_FindObjectsFinal.unwrap())(s.handle()) };
        }
    }
    eprintln!("child: C_CreateObject, CKA_VALUE of 1 TiB");
    let mut class: CK_OBJECT_CLASS = CKO_CERTIFICATE;
    let mut cert_type: CK_CERTIFICATE_TYPE = CKC_X_509;
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: (&mut class as *mut CK_OBJECT_CLASS).cast(),
            ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_CERTIFICATE_TYPE,
            pValue: (&mut cert_type as *mut CK_CERTIFICATE_TYPE).cast(),
            ulValueLen: std::mem::size_of::<CK_CERTIFICATE_TYPE>() as CK_ULONG,
        },
        lying(CKA_VALUE, &mut three),
    ];
    let mut object = 0;
    // SAFETY: as above.
    let _ =
        unsafe { (f.C_CreateObject.unwrap())(s.handle(), template.as_mut_ptr(), 3, &mut object) };
    eprintln!("child: C_GenerateKeyPair, CKA_LABEL of 1 TiB");
    let mut params = [0x06u8, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut public = [
        CK_ATTRIBUTE {
            type_: CKA_EC_PARAMS,
            pValue: params.as_mut_ptr().cast(),
            ulValueLen: params.len() as CK_ULONG,
        },
        lying(CKA_LABEL, &mut three),
    ];
    let mut private = [lying(CKA_LABEL, &mut three)];
    let mut mech = CK_MECHANISM {
        mechanism: CKM_EC_KEY_PAIR_GEN,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let (mut pub_h, mut priv_h) = (0, 0);
    // SAFETY: as above.
    let _ = unsafe {
        (f.C_GenerateKeyPair.unwrap())(
            s.handle(),
            &mut mech,
            public.as_mut_ptr(),
            2,
            private.as_mut_ptr(),
            1,
            &mut pub_h,
            &mut priv_h,
        )
    };
    eprintln!("child: done");
}
