//! Configuration hardening through `C_Initialize` of the built module (issue 10, items 9–12),
//! and `pkcs11.tokenSerial` through `C_GetTokenInfo`.
//!
//! - The configuration file must be owned by the running user or root and sit in folders that
//!   others cannot write (unless sticky), like OpenSSH's StrictModes: otherwise `C_Initialize`
//!   fails with `CKR_GENERAL_ERROR` and one log line naming the file and the fix.
//! - Every file the module reads must be a regular file of at most 1 MiB: a FIFO does not hang
//!   `C_Initialize`, `/dev/zero` is not read, an oversized `caPath` is refused.
//! - `TSB_PKCS11_LOG_FILE` is created with mode 0600, a symlink there is not followed and a file
//!   of another user is not written.
//! - Plain `http://` goes only to exactly `localhost` or a loopback IP unless
//!   `pkcs11.allowInsecureHttp` is set.
//!
//! The tests give files to `nobody` (uid 65534) with chown: they run as root (as CI does).

use tsb_pkcs11_test_support::netsec;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use cryptoki_sys::*;
use netsec::{ConfigFile, InitOutcome, LogTo, ModuleCopy};
use serde_json::json;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // The owner of a file we just created is our effective uid.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("probe");
    std::fs::write(&p, b"").unwrap();
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&p).unwrap()) == 0
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// One ERROR line that names `file` and contains each of `what`.
fn expect_refused(out: &InitOutcome, file: &Path, what: &[&str]) {
    assert_eq!(out.rv, CKR_GENERAL_ERROR, "{}", out.log);
    let lines = out.log_lines();
    assert_eq!(lines.len(), 1, "one log line:\n{}", out.log);
    let line = lines[0];
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&file.display().to_string()),
        "names {}: {line}",
        file.display()
    );
    for w in what {
        assert!(line.contains(w), "says {w:?}: {line}");
    }
}

/// `C_Initialize` of a fresh module copy on another thread: a call that blocks fails the test
/// after a minute instead of hanging the suite.
fn initialize_within_a_minute(
    file: ConfigFile<'static>,
    env: Vec<(&'static str, String)>,
) -> InitOutcome {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut m = ModuleCopy::load();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = m.initialize(file, LogTo::File(None), &env);
        let _ = tx.send(out);
        m.finalize();
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("C_Initialize blocked on a FIFO or device")
}

#[test]
fn config_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to give a file to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    write_mode(
        &config,
        &json!({"restApi": "https://localhost:1"}).to_string(),
        0o600,
    );
    let mut m = ModuleCopy::load();
    let out = m.initialize(ConfigFile::Path(&config), LogTo::File(None), &[]);
    assert_eq!(out.rv, CKR_OK, "{}", out.log);
    m.finalize();

    std::os::unix::fs::chown(&config, Some(NOBODY), None).unwrap();
    let out = m.initialize(ConfigFile::Path(&config), LogTo::File(None), &[]);
    expect_refused(
        &out,
        &config,
        &["owned by another user (uid 65534)", "chown 0"],
    );
}

#[test]
fn config_in_a_folder_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let config = shared.join("config.json");
    write_mode(
        &config,
        &json!({"restApi": "https://localhost:1"}).to_string(),
        0o600,
    );
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut m = ModuleCopy::load();
    let out = m.initialize(ConfigFile::Path(&config), LogTo::File(None), &[]);
    expect_refused(
        &out,
        &config,
        &[
            &format!("folder {} which others can write", shared.display()),
            &format!("chmod o-w {}", shared.display()),
        ],
    );
    // With the sticky bit (like /tmp), others cannot replace our file.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = m.initialize(ConfigFile::Path(&config), LogTo::File(None), &[]);
    assert_eq!(out.rv, CKR_OK, "{}", out.log);
    m.finalize();
}

fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(st.success());
}

#[test]
fn a_fifo_as_config_or_secret_file_does_not_hang_c_initialize() {
    let dir = tempfile::tempdir().unwrap();
    let fifo: &'static Path = Box::leak(dir.path().join("fifo").into_boxed_path());
    mkfifo(fifo);
    let out = initialize_within_a_minute(ConfigFile::Path(fifo), vec![]);
    expect_refused(&out, fifo, &["not a regular file"]);

    let text =
        json!({"restApi": "https://localhost:1", "token": format!("file:{}", fifo.display())})
            .to_string();
    let text: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
    let out = initialize_within_a_minute(ConfigFile::Bytes(text, 0o600), vec![]);
    assert_eq!(out.rv, CKR_GENERAL_ERROR, "{}", out.log);
    let lines = out.log_lines();
    assert_eq!(lines.len(), 1, "{}", out.log);
    assert!(
        lines[0].contains(&format!(
            "field \"token\": cannot read secret file {}: not a regular file",
            fifo.display()
        )),
        "{}",
        lines[0]
    );
}

#[test]
fn dev_zero_and_oversized_files_are_refused() {
    let text = json!({"restApi": "https://localhost:1", "token": "file:/dev/zero"}).to_string();
    let text: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
    let out = initialize_within_a_minute(ConfigFile::Bytes(text, 0o600), vec![]);
    assert_eq!(out.rv, CKR_GENERAL_ERROR, "{}", out.log);
    assert!(
        out.log
            .contains("cannot read secret file /dev/zero: not a regular file"),
        "{}",
        out.log
    );

    // caPath of 2 MiB (PEM-looking, so only the size is wrong).
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut pem = String::new();
    while pem.len() < 2 * 1024 * 1024 {
        pem.push_str("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    }
    write_mode(&ca, &pem, 0o644);
    let mut m = ModuleCopy::load();
    let text = json!({"restApi": "https://localhost:1", "caPath": ca}).to_string();
    let out = m.initialize(
        ConfigFile::Bytes(text.as_bytes(), 0o600),
        LogTo::File(None),
        &[],
    );
    assert_eq!(out.rv, CKR_GENERAL_ERROR, "{}", out.log);
    assert!(
        out.log.contains(&format!(
            "caPath {}: cannot read: larger than 1 MiB",
            ca.display()
        )),
        "{}",
        out.log
    );

    // A configuration of 600 MB (sparse): refused without reading it.
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(600 * 1024 * 1024)
        .unwrap();
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = m.initialize(ConfigFile::Path(&huge), LogTo::File(None), &[]);
    expect_refused(&out, &huge, &["larger than 1 MiB"]);
}

#[test]
fn plain_http_only_to_exactly_localhost_or_loopback_ips() {
    let mut m = ModuleCopy::load();
    for url in ["http://localhost:1", "http://127.0.0.2:1", "http://[::1]:1"] {
        let text = json!({ "restApi": url }).to_string();
        let out = m.initialize(
            ConfigFile::Bytes(text.as_bytes(), 0o600),
            LogTo::File(None),
            &[],
        );
        assert_eq!(out.rv, CKR_OK, "{url}: {}", out.log);
        m.finalize();
    }
    for url in [
        "http://tsb.localhost:1",
        "http://localhost.:1",
        "http://tsb.example:1",
    ] {
        let text = json!({ "restApi": url }).to_string();
        let out = m.initialize(
            ConfigFile::Bytes(text.as_bytes(), 0o600),
            LogTo::File(None),
            &[],
        );
        assert_eq!(out.rv, CKR_GENERAL_ERROR, "{url}: {}", out.log);
        assert!(
            out.log
                .contains("plain http:// to a non-loopback host is refused"),
            "{url}: {}",
            out.log
        );
        // allowInsecureHttp keeps working: accepted with a warning.
        let text = json!({ "restApi": url, "pkcs11": {"allowInsecureHttp": true} }).to_string();
        let out = m.initialize(
            ConfigFile::Bytes(text.as_bytes(), 0o600),
            LogTo::File(None),
            &[],
        );
        assert_eq!(out.rv, CKR_OK, "{url}: {}", out.log);
        assert!(out.log.contains("WARN"), "{url}: {}", out.log);
        m.finalize();
    }
}

/// A configuration error, so that the module logs one line.
const BROKEN: &[u8] = b"[1]";

#[test]
fn log_file_is_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("new.log");
    let mut m = ModuleCopy::load();
    let out = m.initialize(
        ConfigFile::Bytes(BROKEN, 0o600),
        LogTo::Inherit,
        &[("TSB_PKCS11_LOG_FILE", log.to_str().unwrap())],
    );
    assert_eq!(out.rv, CKR_GENERAL_ERROR);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("expected a JSON object"), "{text}");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

#[test]
fn log_file_symlink_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("victim");
    write_mode(&target, "", 0o644);
    let link = dir.path().join("module.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut m = ModuleCopy::load();
    let out = m.initialize(
        ConfigFile::Bytes(BROKEN, 0o600),
        LogTo::Inherit,
        &[("TSB_PKCS11_LOG_FILE", link.to_str().unwrap())],
    );
    assert_eq!(out.rv, CKR_GENERAL_ERROR);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn log_file_of_another_user_is_not_written() {
    if !is_root() {
        eprintln!("skipped: needs root to give a file to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("module.log");
    write_mode(&log, "", 0o666);
    std::os::unix::fs::chown(&log, Some(NOBODY), None).unwrap();
    let mut m = ModuleCopy::load();
    let out = m.initialize(
        ConfigFile::Bytes(BROKEN, 0o600),
        LogTo::Inherit,
        &[("TSB_PKCS11_LOG_FILE", log.to_str().unwrap())],
    );
    assert_eq!(out.rv, CKR_GENERAL_ERROR);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
}

#[test]
fn token_serial_comes_from_the_config_or_the_first_url() {
    let h = netsec::harness(
        tsb_sim::SimConfig::demo(),
        |url| json!({"restApi": [url, "http://127.0.0.1:9"], "pkcs11": {"tokenSerial": "HSM-PROD-01"}}),
    );
    let info = h.pkcs11.get_token_info(h.slot).unwrap();
    assert_eq!(info.serial_number(), "HSM-PROD-01");
    drop(h);

    let mut url = String::new();
    let h = netsec::harness(tsb_sim::SimConfig::demo(), |u| {
        url = u.to_string();
        json!({"restApi": [format!("{u}/v1/"), "http://127.0.0.1:9"]})
    });
    let info = h.pkcs11.get_token_info(h.slot).unwrap();
    let digest = openssl::sha::sha256(url.trim_end_matches('/').as_bytes());
    let want: String = digest[..8].iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(info.serial_number(), want);
}
