//! The journal of approval requests and `tsb-pkcs11 requests`: an application (OpenSC's
//! `pkcs11-tool`, in its own process) killed while it waits for approvals leaves a PENDING
//! request that `requests` lists and `requests cancel` cancels on the TSB; an approved request
//! is journalled with its outcome.

use tsb_pkcs11_test_support as common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{built_module, start_sim, write_private};
use serde_json::{json, Value};
use tsb_sim::SimConfig;

fn tool_available() -> bool {
    let ok = Command::new("pkcs11-tool").arg("--help").output().is_ok();
    if !ok {
        eprintln!("!!! pkcs11-tool not installed (Debian package opensc): SKIPPED — scripts/test.sh installs it");
    }
    ok
}

struct Setup {
    sim: tsb_sim::Simulator,
    dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        Setup::with(json!({}))
    }

    /// `pkcs11` settings merged into the module configuration.
    fn with(pkcs11: Value) -> Setup {
        let mut cfg = SimConfig::fast_test();
        cfg.keys.retain(|k| k.label == "ska-ec-p256");
        let sim = start_sim(cfg);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let mut settings = json!({ "pollIntervalMs": 20, "pollIntervalMaxMs": 50 });
        for (k, v) in pkcs11.as_object().unwrap() {
            settings[k] = v.clone();
        }
        write_private(
            &config,
            json!({ "restApi": sim.url(), "pkcs11": settings })
                .to_string()
                .as_bytes(),
        );
        let state = dir.path().join("state");
        Setup {
            sim,
            dir,
            config,
            state,
        }
    }

    fn journal(&self) -> PathBuf {
        self.state.join("tsb-pkcs11").join("requests.jsonl")
    }

    fn journal_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.journal())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a journal line is JSON"))
            .collect()
    }

    /// Waits (up to a generous deadline) until the journal holds `n` lines.
    fn wait_for_lines(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lines = self.journal_lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "journal has {lines:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `pkcs11-tool` signing with ska-ec-p256 (its CKA_ID is its label: no TSB id).
    fn signer(&self, input: &Path, output: &Path) -> Child {
        Command::new("pkcs11-tool")
            .arg("--module")
            .arg(built_module())
            .args(["--sign", "--id", &hex(b"ska-ec-p256"), "-m", "ECDSA-SHA256"])
            .arg("-i")
            .arg(input)
            .arg("-o")
            .arg(output)
            .env("TSB_PKCS11_CONFIG", &self.config)
            .env("XDG_STATE_HOME", &self.state)
            .env_remove("TSB_PKCS11_LOG")
            .env_remove("TSB_PKCS11_LOG_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pkcs11-tool")
    }

    fn cli(&self, args: &[&str]) -> (Output, Value) {
        let out = Command::new(common::built_command())
            .args(["--json", "-c", self.config.to_str().unwrap()])
            .args(args)
            .env("XDG_STATE_HOME", &self.state)
            .env_remove("TSB_PKCS11_LOG")
            .env_remove("TSB_PKCS11_LOG_FILE")
            .output()
            .expect("run tsb-pkcs11");
        let doc = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        (out, doc)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_killed_application_leaves_a_pending_request_that_requests_lists_and_cancel_removes() {
    if !tool_available() {
        return;
    }
    let s = Setup::new();
    let input = s.dir.path().join("data");
    std::fs::write(&input, b"signed by an application that gets killed").unwrap();
    let mut child = s.signer(&input, &s.dir.path().join("sig"));
    let filed = s.wait_for_lines(1);
    assert_eq!(filed[0]["event"], "filed");
    assert_eq!(filed[0]["key"], "ska-ec-p256");
    assert_eq!(filed[0]["algorithm"], "SHA256_WITH_ECDSA");
    assert_eq!(filed[0]["process"], "pkcs11-tool");
    assert_eq!(filed[0]["pid"], child.id());
    let id = filed[0]["id"].as_str().unwrap().to_string();
    // Killed while waiting: no outcome line, the request stays PENDING on the TSB.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s.journal_lines().len(), 1);
    let on_tsb = |id: &str| {
        s.sim
            .requests()
            .into_iter()
            .find(|r| r.id.as_deref() == Some(id))
            .expect("the simulator has the request")
            .status
    };
    assert_eq!(on_tsb(&id), "PENDING");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.journal()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let (out, doc) = s.cli(&["requests"]);
    assert!(out.status.success());
    let reqs = doc["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 1, "{doc:#}");
    assert_eq!(reqs[0]["id"], id.as_str());
    assert_eq!(reqs[0]["tsbStatus"], "PENDING");
    assert_eq!(reqs[0]["processRunning"], false);
    assert_eq!(reqs[0]["waitingFor"], json!(["alice", "bob"]));

    let (out, doc) = s.cli(&["requests", "cancel", &id]);
    assert!(out.status.success(), "{doc:#}");
    assert_eq!(doc["status"], "CANCELLED");
    assert_eq!(on_tsb(&id), "CANCELLED");
    // Gone from the open requests; `--all` still shows it with the journal's outcome.
    let (_, doc) = s.cli(&["requests"]);
    assert_eq!(doc["requests"], json!([]), "{doc:#}");
    let (_, doc) = s.cli(&["requests", "--all"]);
    assert_eq!(doc["requests"][0]["journalStatus"], "CANCELLED");
}

#[test]
fn an_approved_request_is_journalled_with_its_outcome() {
    if !tool_available() {
        return;
    }
    let s = Setup::new();
    let input = s.dir.path().join("data");
    let msg = b"signed after alice approved";
    std::fs::write(&input, msg).unwrap();
    let sig_path = s.dir.path().join("sig");
    let child = s.signer(&input, &sig_path);
    let filed = s.wait_for_lines(1);
    let id = filed[0]["id"].as_str().unwrap().to_string();
    s.sim.approve(&id, "alice").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = s.wait_for_lines(2);
    assert_eq!(lines[1]["event"], "outcome");
    assert_eq!(lines[1]["id"], id.as_str());
    assert_eq!(lines[1]["status"], "EXECUTED");
    // The signature (raw r||s from pkcs11-tool), checked by OpenSSL.
    let sig = std::fs::read(&sig_path).unwrap();
    let key =
        openssl::pkey::PKey::public_key_from_der(&s.sim.public_key_der("ska-ec-p256").unwrap())
            .unwrap();
    assert!(common::verify::ecdsa(
        &key,
        common::verify::Hash::Sha256,
        msg,
        &sig
    ));
    // Nothing open.
    let (_, doc) = s.cli(&["requests"]);
    assert_eq!(doc["requests"], json!([]));
}

#[test]
fn the_journal_goes_where_request_journal_says_or_nowhere() {
    if !tool_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("elsewhere").join("journal.jsonl");
    for setting in [json!(file), json!(false)] {
        let s = Setup::with(json!({ "requestJournal": setting }));
        let input = s.dir.path().join("data");
        std::fs::write(&input, b"journal setting").unwrap();
        let child = s.signer(&input, &s.dir.path().join("sig"));
        // Approve the request as soon as the simulator has it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let id = loop {
            if let Some(id) = s.sim.requests().into_iter().find_map(|r| r.id) {
                break id;
            }
            assert!(Instant::now() < deadline, "no request filed");
            std::thread::sleep(Duration::from_millis(20));
        };
        s.sim.approve(&id, "alice").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Never in the default place.
        assert!(!s.journal().exists());
        if setting == json!(false) {
            let out = Command::new(common::built_command())
                .args(["-c", s.config.to_str().unwrap(), "requests"])
                .env("XDG_STATE_HOME", &s.state)
                .env_remove("TSB_PKCS11_LOG")
                .env_remove("TSB_PKCS11_LOG_FILE")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1));
            assert!(String::from_utf8_lossy(&out.stderr).contains("journal is off"));
        } else {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 2, "{text}");
            assert_eq!(lines[0]["id"], id.as_str());
            assert_eq!(lines[1]["status"], "EXECUTED");
        }
    }
}

/// `requests --all` escapes what it prints from the journal and the TSB (issue #19 item 11):
/// a journal line with a hostile label and process name (written by an older version, or by
/// hand) cannot drive the terminal or forge a line; `--json` keeps the exact text.
#[test]
fn hostile_journal_text_is_escaped_in_text_and_exact_in_json() {
    const HOSTILE: &str = "evil\u{1b}[31m\rOK\u{202e}txt.exe\nFAKE LINE";
    let s = Setup::new();
    let journal = s.journal();
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    let line = |event: &str, status: Option<&str>| {
        let mut v = json!({
            "time": "2026-01-01T00:00:00Z", "event": event, "id": "req-hostile",
            "key": HOSTILE, "pid": 1, "process": HOSTILE,
        });
        if let Some(st) = status {
            v["status"] = json!(st);
        }
        v.to_string()
    };
    let text = format!(
        "{}\n{}\n",
        line("filed", None),
        line("outcome", Some("EXECUTED"))
    );
    write_private(&journal, text.as_bytes());
    let out = Command::new(common::built_command())
        .args(["-c", s.config.to_str().unwrap(), "requests", "--all"])
        .env("XDG_STATE_HOME", &s.state)
        .env_remove("TSB_PKCS11_LOG")
        .env_remove("TSB_PKCS11_LOG_FILE")
        .output()
        .expect("run tsb-pkcs11");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let raw: Vec<char> = shown
        .chars()
        .filter(|c| {
            (c.is_control() && *c != '\n')
                || ('\u{202a}'..='\u{202e}').contains(c)
                || ('\u{2066}'..='\u{2069}').contains(c)
                || matches!(*c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
        })
        .collect();
    assert!(raw.is_empty(), "{raw:?}\n{shown}");
    assert!(
        shown.contains("key 'evil\\u{1b}[31m\\rOK\\u{202e}txt.exe\\nFAKE LINE'"),
        "{shown}"
    );
    assert!(
        !shown.lines().any(|l| l.starts_with("FAKE LINE")),
        "{shown}"
    );
    let (_, doc) = s.cli(&["requests", "--all"]);
    assert_eq!(doc["requests"][0]["key"], HOSTILE, "{doc:#}");
    assert_eq!(doc["requests"][0]["process"], HOSTILE, "{doc:#}");
}

/// The PKCS#11 module and the command are separate crates (docs/architecture.md): every process
/// that loads libtsb_pkcs11.so maps it, so it must not carry the command's code or clap. The
/// markers (clap's sources and the command's files, named in panic locations and symbols) are
/// shown to be in the command binary first, so the check can see them.
#[test]
fn the_module_contains_no_command_code() {
    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }
    let module = std::fs::read(built_module()).expect("read the module");
    let command = std::fs::read(common::built_command()).expect("read the command");
    for marker in ["clap_builder", "cli/doctor/", "cli/mod.rs"] {
        assert!(contains(&command, marker), "{marker} is in the command");
        assert!(
            !contains(&module, marker),
            "libtsb_pkcs11.so contains {marker}: the module links command code"
        );
    }
}
