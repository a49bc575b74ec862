//! The journal of approval requests: one JSON line per request the module files and per
//! outcome, so `tsb-pkcs11 requests` can show (and cancel) what this host's applications left
//! behind, e.g. a request of an application killed while it waited for approvals.
//!
//! The file is `$XDG_STATE_HOME/tsb-pkcs11/requests.jsonl` (default
//! `~/.local/state/tsb-pkcs11/requests.jsonl`) or the path of `pkcs11.requestJournal`; it is
//! created with mode 0600 (its folder 0700), opened with `O_NOFOLLOW`, refused when another user
//! owns it, and rotated to `requests.jsonl.1` once it would pass [`MAX_BYTES`]. A line holds the
//! request id, key label, algorithm, time, process, TSB URL and status: never a secret or the
//! data signed; every field passes the log sanitiser when written ([`Entry::sanitized`]).
//! Writing it never fails a signature: a failure is logged once per process.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::{ModuleSettings, RequestJournal};

/// Size at which the journal is rotated (the previous file becomes `<name>.1`).
pub(crate) const MAX_BYTES: u64 = 1024 * 1024;

/// The largest journal file read back (the current file and `.1` are each at most
/// [`MAX_BYTES`] plus one line).
const MAX_READ: u64 = 2 * MAX_BYTES;

/// Where the journal goes (`pkcs11.requestJournal`: `true` (default), `false`, or a path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    Off,
    Default,
    Path(PathBuf),
}

/// The configured journal setting.
pub fn setting(settings: &ModuleSettings) -> Setting {
    match &settings.request_journal {
        RequestJournal::Off => Setting::Off,
        RequestJournal::Default => Setting::Default,
        RequestJournal::File(p) => Setting::Path(p.clone()),
    }
}

/// The journal file for a setting, or `None` when it is off (or no home folder is known).
pub fn path(setting: &Setting) -> Option<PathBuf> {
    match setting {
        Setting::Off => None,
        Setting::Path(p) => Some(p.clone()),
        Setting::Default => {
            default_path(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
        }
    }
}

fn default_path(
    xdg_state: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let base = match xdg_state.map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(x) => x,
        None => PathBuf::from(home.filter(|h| !h.is_empty())?)
            .join(".local")
            .join("state"),
    };
    Some(base.join("tsb-pkcs11").join("requests.jsonl"))
}

/// The rotated file of a journal.
pub(crate) fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// The outcome status of a request the module gave up on whose `DELETE /v1/request/{id}` the
/// TSB did not confirm (it failed, or did not answer within the time allowed): the request
/// may still be pending on the TSB, so `tsb-pkcs11 requests` keeps showing it.
pub const CANCEL_UNCONFIRMED: &str = "CANCEL_UNCONFIRMED";

/// What a line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The module filed an approval request (`POST /v1/sign`).
    Filed,
    /// The request reached a final status, or the module (or `tsb-pkcs11 requests cancel`)
    /// gave up on it.
    Outcome,
    /// A temporary TSB key of a session key pair (`CKA_TOKEN` false) that the module could not
    /// delete, or not in time (`C_Finalize`): `id` and `key` are its TSB label, `reason` says
    /// why. It must be deleted by hand (docs/objects-and-mechanisms.md).
    #[serde(rename = "keyNotDeleted")]
    KeyNotDeleted,
}

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub time: String,
    pub event: Event,
    /// The TSB's request id.
    pub id: String,
    /// The key label.
    pub key: String,
    /// The TSB `signatureAlgorithm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// The TSB base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tsb: Option<String>,
    pub pid: u32,
    pub process: String,
    /// For outcomes: the request's final status (`EXECUTED`, `REJECTED`, `EXPIRED`,
    /// `CANCELLED`, `FAILED`, or `GONE` when the TSB no longer knows it), or
    /// [`CANCEL_UNCONFIRMED`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// For outcomes: why, in words (e.g. "timed out after 600 s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

impl Entry {
    fn new(event: Event, id: &str, key: &str) -> Entry {
        Entry {
            time: crate::os::rfc3339_now(),
            event,
            id: id.to_string(),
            key: key.to_string(),
            algorithm: None,
            tsb: None,
            pid: std::process::id(),
            process: crate::os::process_name(),
            status: None,
            reason: None,
        }
    }
}

impl Entry {
    /// The entry as it is written: every text field passed through the log sanitiser
    /// (`logging::sanitize`: control and bidirectional characters escaped, at most 200
    /// characters, registered secrets replaced by `<redacted>`), so a line stays one short line
    /// whatever the TSB answered (a 2 MB request id cannot push the history out through
    /// rotation, an echoed JWT is not kept).
    fn sanitized(&self) -> Entry {
        let clean = |s: &str| crate::logging::sanitize(s);
        let clean_opt = |s: &Option<String>| s.as_deref().map(clean);
        Entry {
            time: clean(&self.time),
            event: self.event,
            id: clean(&self.id),
            key: clean(&self.key),
            algorithm: clean_opt(&self.algorithm),
            tsb: clean_opt(&self.tsb),
            pid: self.pid,
            process: clean(&self.process),
            status: clean_opt(&self.status),
            reason: clean_opt(&self.reason),
        }
    }
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Records a filed request (never fails; see the module documentation).
pub(crate) fn filed(setting: &Setting, tsb: &str, id: &str, key: &str, algorithm: &str) {
    let mut e = Entry::new(Event::Filed, id, key);
    e.algorithm = Some(algorithm.to_string());
    e.tsb = Some(tsb.to_string());
    record(setting, &e);
}

/// Records the outcome of a request (never fails).
pub fn outcome(setting: &Setting, id: &str, key: &str, status: &str, reason: Option<&str>) {
    let mut e = Entry::new(Event::Outcome, id, key);
    e.status = Some(status.to_string());
    e.reason = reason.map(str::to_string);
    record(setting, &e);
}

/// Records a temporary session key the module could not delete (never fails).
pub(crate) fn key_not_deleted(setting: &Setting, tsb: &str, label: &str, reason: &str) {
    let mut e = Entry::new(Event::KeyNotDeleted, label, label);
    e.tsb = Some(tsb.to_string());
    e.reason = Some(reason.to_string());
    record(setting, &e);
}

/// Appends `entry`; a failure is logged once per process and otherwise ignored.
pub(crate) fn record(setting: &Setting, entry: &Entry) {
    record_with(setting, entry, &WARNED)
}

/// [`record`], with the flag that says a failure was already logged.
fn record_with(setting: &Setting, entry: &Entry, warned: &AtomicBool) {
    let Some(path) = path(setting) else {
        if *setting == Setting::Default && !warned.swap(true, Ordering::Relaxed) {
            log::warn!("request journal: neither XDG_STATE_HOME nor HOME is set; not written");
        }
        return;
    };
    if let Err(e) = append(&path, entry) {
        if !warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "request journal {}: {e}; approval requests are not recorded \
                 (pkcs11.requestJournal: false turns the journal off)",
                path.display()
            );
        }
    }
}

/// Appends one line to the journal at `path`, rotating it first when it would pass
/// [`MAX_BYTES`].
pub(crate) fn append(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&entry.sanitized()).map_err(std::io::Error::other)?;
    line.push(b'\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = open_append(path)?;
    let size = file.metadata()?.len();
    if size > 0 && size + line.len() as u64 > MAX_BYTES {
        std::fs::rename(path, rotated(path))?;
        file = open_append(path)?;
    }
    file.write_all(&line)
}

/// Opens (creating with mode 0600) for appending, without following a symbolic link, and
/// refuses a file that is not a regular file or that another user owns.
fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    check_owned_regular(&file.metadata()?)?;
    Ok(file)
}

fn check_owned_regular(meta: &std::fs::Metadata) -> std::io::Result<()> {
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let me = crate::os::effective_uid();
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    Ok(())
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub struct Contents {
    /// Entries of `<name>.1` then of the current file, in order.
    pub entries: Vec<Entry>,
    /// Lines that are not journal entries.
    pub bad_lines: usize,
}

/// Reads the journal (and its rotated file). A missing file reads as empty.
pub fn read(path: &Path) -> std::io::Result<Contents> {
    let mut out = Contents::default();
    for p in [rotated(path), path.to_path_buf()] {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", p.display()),
                ))
            }
        };
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other(format!(
                "{}: not a regular file",
                p.display()
            )));
        }
        let mut text = String::new();
        file.take(MAX_READ).read_to_string(&mut text)?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Entry>(line) {
                Ok(e) => out.entries.push(e),
                Err(_) => out.bad_lines += 1,
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        let mut e = Entry::new(Event::Filed, id, "ska-ec-p256");
        e.algorithm = Some("SHA256_WITH_ECDSA".into());
        e
    }

    #[test]
    fn default_path_follows_xdg_then_home() {
        assert_eq!(
            default_path(Some("/x/state".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/state/tsb-pkcs11/requests.jsonl"))
        );
        // A relative XDG_STATE_HOME is ignored (XDG Base Directory spec).
        assert_eq!(
            default_path(Some("rel".into()), Some("/home/u".into())),
            Some(PathBuf::from(
                "/home/u/.local/state/tsb-pkcs11/requests.jsonl"
            ))
        );
        assert_eq!(default_path(None, None), None);
    }

    #[test]
    fn append_and_read_back_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/tsb-pkcs11/requests.jsonl");
        append(&path, &entry("a")).unwrap();
        append(&path, &entry("b")).unwrap();
        let c = read(&path).unwrap();
        let ids: Vec<&str> = c.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(c.bad_lines, 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn rotates_at_the_size_limit_and_keeps_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        assert_eq!(MAX_BYTES, 1024 * 1024, "rotated at 1 MiB (docs)");
        let one = serde_json::to_vec(&entry("x")).unwrap().len() as u64 + 1;
        let n = MAX_BYTES / one + 1;
        for i in 0..n {
            append(&path, &entry(&format!("{i:08}"))).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= MAX_BYTES);
        assert!(std::fs::metadata(rotated(&path)).unwrap().len() <= MAX_BYTES);
        // Once more around: the oldest lines are gone, the newest kept, nothing beyond `.1`.
        for i in n..2 * n {
            append(&path, &entry(&format!("{i:08}"))).unwrap();
        }
        let c = read(&path).unwrap();
        assert_eq!(c.entries.last().unwrap().id, format!("{:08}", 2 * n - 1));
        assert!(c.entries.first().unwrap().id != "00000000");
        assert!(!dir.path().join("requests.jsonl.2").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= MAX_BYTES);
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        let path = dir.path().join("requests.jsonl");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(append(&path, &entry("a")).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }

    /// Every field goes through the log sanitiser at the write point (issue #19 item 10): a
    /// 2 MB request id no longer rotates the history away, control characters cannot forge a
    /// line, and a registered secret (the login JWT echoed back) is not stored.
    #[test]
    fn fields_are_sanitised_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        for i in 0..6 {
            append(&path, &entry(&format!("req-{i}"))).unwrap();
        }
        let huge = format!("big-{}", "x".repeat(2 * 1024 * 1024));
        append(&path, &entry(&huge)).unwrap();
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqb3VybmFsIn0.am91cm5hbC1zZWNyZXQ";
        crate::logging::register_secrets([jwt]);
        let mut hostile = entry(&format!("leak-{jwt}"));
        hostile.key = "label\u{1b}[31m\r\u{202e}\nFAKE".into();
        hostile.process = "proc\nname".into();
        hostile.reason = Some(format!("TSB said {jwt}"));
        append(&path, &hostile).unwrap();
        assert!(!rotated(&path).exists(), "no rotation");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() < 8 * 1024, "{} bytes", text.len());
        assert!(!text.contains(jwt), "{text}");
        // No control or bidirectional character but the line breaks between entries.
        let unsafe_chars = text.chars().filter(|c| crate::logging::is_unsafe_char(*c));
        assert!(unsafe_chars.clone().all(|c| c == '\n'), "{text:?}");
        assert_eq!(unsafe_chars.count(), 8);
        let c = read(&path).unwrap();
        assert_eq!(c.entries.len(), 8, "all six earlier entries kept");
        assert_eq!(c.entries[0].id, "req-0");
        let big = &c.entries[6].id;
        assert!(
            big.starts_with("big-xxx") && big.contains("more characters]"),
            "{big}"
        );
        let h = &c.entries[7];
        assert_eq!(h.id, "leak-<redacted>");
        assert_eq!(h.key, "label\\u{1b}[31m\\r\\u{202e}\\nFAKE");
        assert_eq!(h.process, "proc\\nname");
        assert_eq!(h.reason.as_deref(), Some("TSB said <redacted>"));
    }

    #[test]
    fn bad_lines_are_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        append(&path, &entry("a")).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json\n").unwrap();
        append(&path, &entry("b")).unwrap();
        let c = read(&path).unwrap();
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.bad_lines, 1);
    }

    #[test]
    fn record_writes_the_configured_file_and_nothing_when_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j/requests.jsonl");
        let on = Setting::Path(path.clone());
        filed(&on, "https://tsb", "r-1", "ska", "SHA256_WITH_ECDSA");
        outcome(&on, "r-1", "ska", "EXECUTED", Some("approved"));
        key_not_deleted(&on, "https://tsb", "tmp-key", "timed out");
        record(&Setting::Off, &entry("never"));
        let c = read(&path).unwrap();
        assert_eq!(c.entries.len(), 3, "{:?}", c.entries);
        let (f, o, k) = (&c.entries[0], &c.entries[1], &c.entries[2]);
        assert_eq!(
            (f.event, f.id.as_str(), f.key.as_str()),
            (Event::Filed, "r-1", "ska")
        );
        assert_eq!(f.algorithm.as_deref(), Some("SHA256_WITH_ECDSA"));
        assert_eq!(f.tsb.as_deref(), Some("https://tsb"));
        assert_eq!((f.status.as_deref(), f.reason.as_deref()), (None, None));
        assert_eq!(f.pid, std::process::id());
        assert_eq!(f.process, crate::os::process_name());
        assert_eq!((o.event, o.id.as_str()), (Event::Outcome, "r-1"));
        assert_eq!(o.status.as_deref(), Some("EXECUTED"));
        assert_eq!(o.reason.as_deref(), Some("approved"));
        assert_eq!((o.algorithm.as_deref(), o.tsb.as_deref()), (None, None));
        assert_eq!(
            (k.event, k.id.as_str(), k.key.as_str()),
            (Event::KeyNotDeleted, "tmp-key", "tmp-key")
        );
        assert_eq!(k.tsb.as_deref(), Some("https://tsb"));
        assert_eq!(k.reason.as_deref(), Some("timed out"));
        // The rotated file of a journal is `<name>.1`, next to it.
        assert_eq!(rotated(&path), dir.path().join("j/requests.jsonl.1"));
    }

    #[test]
    fn a_failure_is_logged_once_and_off_is_no_failure() {
        let logging = crate::tsb::tests::log_capture::install();
        let warned = AtomicBool::new(false);
        record_with(&Setting::Off, &entry("off"), &warned);
        assert!(
            !warned.load(Ordering::Relaxed),
            "a journal turned off is not a failure"
        );
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be: the append fails.
        let folder = dir.path().join("journal-logged-once.jsonl");
        std::fs::create_dir(&folder).unwrap();
        let bad = Setting::Path(folder.clone());
        let needle = format!("request journal {}", folder.display());
        let logged = || {
            let lines = crate::tsb::tests::log_capture::LINES.lock().unwrap();
            lines.iter().filter(|l| l.contains(&needle)).count()
        };
        record_with(&bad, &entry("a"), &warned);
        assert!(warned.load(Ordering::Relaxed));
        if logging {
            assert_eq!(logged(), 1, "the first failure is logged");
        }
        record_with(&bad, &entry("b"), &warned);
        record_with(&bad, &entry("c"), &warned);
        if logging {
            assert_eq!(logged(), 1, "and only the first");
        }
    }

    #[test]
    fn a_journal_is_read_up_to_twice_the_rotation_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let mut line = serde_json::to_vec(&entry("big")).unwrap();
        line.push(b'\n');
        // A file over the rotation size (written by hand or by another tool): read whole.
        let n = (MAX_BYTES as usize * 3 / 2) / line.len();
        std::fs::write(&path, line.repeat(n)).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > MAX_BYTES + line.len() as u64);
        let c = read(&path).unwrap();
        assert_eq!((c.entries.len(), c.bad_lines), (n, 0));
        // Beyond MAX_READ the rest is not read (at most one cut line counts as bad).
        let m = (MAX_READ as usize + 10 * line.len()) / line.len();
        std::fs::write(&path, line.repeat(m)).unwrap();
        let c = read(&path).unwrap();
        assert_eq!(c.entries.len(), MAX_READ as usize / line.len());
    }

    #[test]
    fn setting_follows_the_configuration() {
        let mut s = crate::config::ModuleSettings::default();
        assert_eq!(setting(&s), Setting::Default);
        s.request_journal = RequestJournal::Off;
        assert_eq!(setting(&s), Setting::Off);
        assert_eq!(path(&Setting::Off), None);
        s.request_journal = RequestJournal::File("/j/r.jsonl".into());
        assert_eq!(setting(&s), Setting::Path("/j/r.jsonl".into()));
        assert_eq!(path(&setting(&s)), Some(PathBuf::from("/j/r.jsonl")));
        // An empty HOME is no home.
        assert_eq!(default_path(None, Some("".into())), None);
        assert_eq!(
            default_path(None, Some("/home/u".into())),
            Some(PathBuf::from(
                "/home/u/.local/state/tsb-pkcs11/requests.jsonl"
            ))
        );
    }

    #[test]
    fn rotation_happens_only_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let e = entry("exact");
        let line = serde_json::to_vec(&e.sanitized()).unwrap().len() as u64 + 1;
        // A file that the line fills up to exactly MAX_BYTES: appended, not rotated.
        std::fs::write(&path, vec![b'\n'; (MAX_BYTES - line) as usize]).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        append(&path, &e).unwrap();
        assert!(!rotated(&path).exists());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAX_BYTES);
        // One more line would pass the limit: the file moves to `.1` first.
        append(&path, &entry("next")).unwrap();
        assert_eq!(std::fs::metadata(rotated(&path)).unwrap().len(), MAX_BYTES);
        let c = read(&path).unwrap();
        let ids: Vec<&str> = c.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["exact", "next"]);
        assert_eq!(c.bad_lines, 0, "blank lines are skipped");
    }

    #[test]
    fn what_is_not_our_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the journal should be.
        let folder = dir.path().join("requests.jsonl");
        std::fs::create_dir(&folder).unwrap();
        assert!(append(&folder, &entry("a")).is_err());
        let e = read(&folder).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // A missing journal reads as empty.
        let c = read(&dir.path().join("none.jsonl")).unwrap();
        assert!(c.entries.is_empty());
        // A file another user owns (only root can make one).
        if crate::os::effective_uid() == 0 {
            let theirs = dir.path().join("theirs.jsonl");
            std::fs::write(&theirs, b"").unwrap();
            std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
            let e = append(&theirs, &entry("a")).unwrap_err().to_string();
            assert!(e.contains("owned by uid 4242"), "{e}");
            assert_eq!(std::fs::read(&theirs).unwrap(), b"");
        }
    }
}
