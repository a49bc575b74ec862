//! Logging setup: `env_logger` to stderr (never stdout: Notation plugins and ssh-agent speak over
//! stdout), or to a file. Level from `TSB_PKCS11_LOG` (`error`, `warn` (default), `info`, `debug`,
//! `trace`, or any env_logger filter); `TSB_PKCS11_LOG_FILE` sends the lines to a file instead
//! (created with mode 0600; a symlink or a file of another user is refused, with one line on
//! stderr, and the lines go to stderr).
//!
//! rustls is capped at `info` whatever the filter says (its debug and trace lines describe every
//! handshake). So is `ureq`, the HTTP client the module used before its own (src/tsb/http.rs),
//! whose debug lines echoed request headers, `X-API-KEY` included: it is no longer linked, and a
//! filter written for it (`ureq=trace`) still shows nothing more.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::Path;

use parking_lot::RwLock;

/// Libraries whose log output is capped at `info` (`ureq`: see the module documentation).
const CAPPED: &[&str] = &["ureq", "rustls"];

/// The log target of the two lines every approval wait writes (request filed, wait ended): the
/// default filter lets them through, so a user whose `C_Sign` waits for approvers sees why, with
/// no other `info` line (docs/approvals.md, "Log lines").
pub const WAIT_TARGET: &str = "tsb_pkcs11::wait";

/// The filter when `TSB_PKCS11_LOG` is not set: warnings, errors and the approval-wait lines.
const DEFAULT_FILTER: &str = "warn,tsb_pkcs11::wait=info";

/// Installs the logger once per process; later calls (a second `C_Initialize`, or another Rust
/// library that owns the global logger) are harmless no-ops.
pub fn init() {
    let filter = std::env::var("TSB_PKCS11_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_string());
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters(&without_capped(&filter))
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr);
    for module in CAPPED {
        builder.filter_module(module, log::LevelFilter::Info);
    }
    if let Ok(path) = std::env::var("TSB_PKCS11_LOG_FILE") {
        match open_log_file(Path::new(&path)) {
            Ok(file) => {
                builder.target(env_logger::Target::Pipe(Box::new(file)));
            }
            Err(e) => eprintln!("tsb-pkcs11: cannot use log file {path}: {e}; logging to stderr"),
        }
    }
    repeat::install(builder.build());
}

/// Opens (or creates, mode 0600) the log file for appending. A symlink is not followed and a
/// file owned by another user is refused: either would let someone else choose which file the
/// module (perhaps running as root) writes to, or read what it logs.
fn open_log_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(std::io::Error::new(
                e.kind(),
                "it is a symbolic link (not followed)",
            ))
        }
        Err(e) => return Err(e),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let owner = file.metadata()?.uid();
        let me = crate::os::effective_uid();
        if owner != me {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("it is owned by another user (uid {owner}, not {me})"),
            ));
        }
    }
    Ok(file)
}

/// The filter without directives for the capped libraries or their submodules (a directive for
/// `ureq::unit` is more specific than the cap on `ureq` and would win over it).
fn without_capped(filter: &str) -> String {
    let (directives, regex) = match filter.split_once('/') {
        Some((d, r)) => (d, Some(r)),
        None => (filter, None),
    };
    let kept: Vec<&str> = directives
        .split(',')
        .filter(|d| {
            let name = d.split('=').next().unwrap_or("").trim();
            !CAPPED
                .iter()
                .any(|c| name == *c || name.starts_with(&format!("{c}::")))
        })
        .collect();
    let mut out = kept.join(",");
    if let Some(r) = regex {
        out.push('/');
        out.push_str(r);
    }
    out
}

/// The most characters of one piece of network text a log line shows.
pub(crate) const MAX_LOGGED_CHARS: usize = 200;

/// Secrets of the configuration and of logins (process-wide), never shown in a log line.
static SECRETS: RwLock<Vec<String>> = parking_lot::const_rwlock(Vec::new());

/// Adds secrets that [`Net`] redacts from now on. Values shorter than 4 characters are not
/// worth hiding (they would only garble the text) and are ignored.
pub(crate) fn register_secrets<'a>(secrets: impl IntoIterator<Item = &'a str>) {
    let mut all = SECRETS.write();
    for s in secrets {
        if s.len() >= 4 && !all.iter().any(|k| k == s) {
            all.push(s.to_string());
        }
    }
}

/// Text that came from the TSB or the network (labels, request ids, approver names,
/// statuses, messages), shown safely in a log line: the registered secrets become
/// `<redacted>`, control characters are escaped (`\n`, `\u{1b}`: a value cannot forge a log
/// line), and at most [`MAX_LOGGED_CHARS`] characters are shown, with a marker saying how
/// many more there were. Every log site that prints network text wraps it in `Net`.
pub struct Net<'a>(pub &'a str);

impl fmt::Display for Net<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sanitize(self.0))
    }
}

/// A list of network texts, comma-separated, each as [`Net`] shows it; at most
/// [`MAX_LOGGED_CHARS`] characters in all.
pub(crate) struct NetList<'a>(pub(crate) &'a [String]);

impl fmt::Display for NetList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined: Vec<String> = self.0.iter().map(|s| sanitize(s)).collect();
        f.write_str(&cap(&joined.join(", ")))
    }
}

/// See [`Net`]. Only a window of the text is examined, so a huge value costs little.
pub fn sanitize(text: &str) -> String {
    let secrets = SECRETS.read();
    let longest = secrets.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    // Enough to redact any secret that starts within the part shown.
    let window: String = text.chars().take(MAX_LOGGED_CHARS + longest + 1).collect();
    let beyond = text.chars().count() - window.chars().count();
    let mut redacted = window;
    for s in secrets.iter() {
        if redacted.contains(s.as_str()) {
            redacted = redacted.replace(s.as_str(), "<redacted>");
        }
    }
    drop(secrets);
    let mut out = String::new();
    let mut chars = redacted.chars();
    for c in chars.by_ref().take(MAX_LOGGED_CHARS) {
        push_escaped(&mut out, c);
    }
    let more = chars.count() + beyond;
    if more > 0 {
        out.push_str(&format!("…[{more} more characters]"));
    }
    out
}

/// True for a character that can change how a terminal or a log viewer shows the text around
/// it: C0 and C1 controls and DEL (ESC sequences, CR, forged line breaks), the Unicode line
/// and paragraph separators (U+2028, U+2029), and the bidirectional marks, embeddings,
/// overrides and isolates (U+200E, U+200F, U+202A–U+202E, U+2066–U+2069: "Trojan Source").
pub(crate) fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    if is_unsafe_char(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// `text` with every [`is_unsafe_char`] escaped (`\n`, `\r`, `\u{1b}`, `\u{202e}`), nothing
/// cut or redacted: for human-readable output of the command-line tool, where a label must be
/// shown whole but must not drive the terminal. [`sanitize`] (log lines, the request journal)
/// escapes the same characters.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// The shortest registered secret [`looks_like_secret`] looks for: a short one (a 4-digit PIN)
/// would turn up in random request ids by chance; wherever text is kept it is redacted anyway.
const LONG_SECRET: usize = 16;

/// True when `text` holds a registered secret of at least [`LONG_SECRET`] characters (a token,
/// an API key; see [`register_secrets`]) or something shaped like a JSON Web Token (`eyJ…`
/// base64url, then two more `.`-separated parts): network text that looks like a credential
/// is refused where it would be kept (a request id).
pub(crate) fn looks_like_secret(text: &str) -> bool {
    let secrets = SECRETS.read();
    let mut long = secrets.iter().filter(|s| s.len() >= LONG_SECRET);
    if long.any(|s| text.contains(s.as_str())) {
        return true;
    }
    drop(secrets);
    let b64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices("eyJ").any(|(i, _)| {
        let run: String = text[i..]
            .chars()
            .take_while(|c| b64url(*c) || *c == '.')
            .collect();
        let parts: Vec<&str> = run.split('.').collect();
        parts.len() >= 3 && parts[..2].iter().all(|p| p.len() >= 4)
    })
}

/// Cuts already sanitised text to [`MAX_LOGGED_CHARS`] characters, with a marker.
fn cap(text: &str) -> String {
    let total = text.chars().count();
    if total <= MAX_LOGGED_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_LOGGED_CHARS).collect();
    out.push_str(&format!("…[{} more characters]", total - MAX_LOGGED_CHARS));
    out
}

#[cfg(test)]
mod tests {
    use super::{
        escape, is_unsafe_char, looks_like_secret, register_secrets, sanitize, without_capped,
        NetList, MAX_LOGGED_CHARS,
    };

    #[test]
    fn network_text_is_escaped_capped_and_redacted() {
        assert_eq!(sanitize("req-1"), "req-1");
        assert_eq!(
            sanitize("id\n[ERROR] forged line\r\u{1b}[31m"),
            "id\\n[ERROR] forged line\\r\\u{1b}[31m"
        );
        let huge = "x".repeat(2 * 1024 * 1024);
        let shown = sanitize(&huge);
        assert!(shown.len() < MAX_LOGGED_CHARS + 40, "{}", shown.len());
        assert!(shown.ends_with(&format!(
            "…[{} more characters]",
            huge.len() - MAX_LOGGED_CHARS
        )));
        register_secrets(["unit-test-secret-value"]);
        let with_secret = format!("{}unit-test-secret-value tail", "y".repeat(190));
        let shown = sanitize(&with_secret);
        assert!(!shown.contains("unit-test"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(sanitize("ab\u{7f}"), "ab\\u{7f}");
        let names = vec!["alice".to_string(), "bob\nINFO fake".to_string()];
        assert_eq!(NetList(&names).to_string(), "alice, bob\\nINFO fake");
        // Bidirectional overrides and Unicode line breaks are escaped too.
        assert_eq!(
            sanitize("a\u{202e}b\u{2028}c\u{2066}d\u{200f}"),
            "a\\u{202e}b\\u{2028}c\\u{2066}d\\u{200f}"
        );
    }

    #[test]
    fn escape_keeps_everything_but_unsafe_characters() {
        let hostile = "red\u{1b}[31m\rCR\u{202e}txt.exe\nFAKE LINE\u{85}\u{7f}";
        let shown = escape(hostile);
        assert_eq!(
            shown,
            "red\\u{1b}[31m\\rCR\\u{202e}txt.exe\\nFAKE LINE\\u{85}\\u{7f}"
        );
        assert!(!shown.chars().any(is_unsafe_char));
        let long = "é".repeat(5000);
        assert_eq!(escape(&long), long, "nothing cut");
        for c in [
            '\u{0}', '\u{9f}', '\u{2029}', '\u{200e}', '\u{202a}', '\u{2069}',
        ] {
            assert!(is_unsafe_char(c), "{c:?}");
        }
        for c in ['a', ' ', 'é', '\u{2030}', '\u{2065}', '\u{202f}', '\u{a0}'] {
            assert!(!is_unsafe_char(c), "{c:?}");
        }
    }

    #[test]
    fn secrets_and_tokens_are_recognised() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
        assert!(looks_like_secret(jwt));
        assert!(looks_like_secret(&format!("leak-{jwt}-end")));
        assert!(!looks_like_secret("9a0f3c2e-5b1d-4c8e-9f7a-0123456789ab"));
        assert!(!looks_like_secret("eyJust-a-label"));
        assert!(!looks_like_secret("eyJ.a.b"));
        register_secrets(["looks-like-secret-unit-test", "q7Zr"]);
        assert!(looks_like_secret("x-looks-like-secret-unit-test-y"));
        // A short secret (a PIN) may occur in a random id: redacted where kept, not refused.
        assert!(!looks_like_secret("9a0f3c2e-q7Zr"));
        assert_eq!(sanitize("9a0f3c2e-q7Zr"), "9a0f3c2e-<redacted>");
    }

    #[test]
    fn capped_directives_are_dropped() {
        assert_eq!(without_capped("trace"), "trace");
        assert_eq!(
            without_capped("warn,tsb_pkcs11=debug"),
            "warn,tsb_pkcs11=debug"
        );
        assert_eq!(
            without_capped("trace,ureq=trace,ureq::unit=debug,rustls::client=trace,ureqx=info"),
            "trace,ureqx=info"
        );
        assert_eq!(without_capped("ureq::unit"), "");
        assert_eq!(without_capped("debug,ureq=trace/TSB"), "debug/TSB");
    }
}

/// Rate limiting of repeated identical `error`/`warn` lines: a host that calls the module in a
/// loop while it cannot work (nginx workers that cannot read the configuration fail every TLS
/// handshake, each with a new `C_Initialize`) logs the first occurrence, then at most one line
/// per [`repeat::REPEAT_INTERVAL`] carrying "(repeated N times)"; `C_Finalize` (a log flush)
/// reports what was held back.
mod repeat {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// At most one line per interval for each distinct `error`/`warn` message.
    pub(crate) const REPEAT_INTERVAL: Duration = Duration::from_secs(10);
    /// Distinct messages remembered; beyond this, entries idle for an interval are forgotten.
    const MAX_TRACKED: usize = 256;

    /// Installs `logger` behind the rate limit as the process's logger, unless one is set.
    pub(super) fn install(logger: env_logger::Logger) {
        let max_level = logger.filter();
        let limited = RateLimited {
            inner: logger,
            seen: Mutex::new(HashMap::new()),
        };
        if log::set_boxed_logger(Box::new(limited)).is_ok() {
            log::set_max_level(max_level);
        }
    }

    /// What to do with one `error`/`warn` line.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Repeat {
        /// Log it as it is (first occurrence, or nothing was held back).
        Log,
        /// Log it with "(repeated N times)": N identical lines were held back since the last one.
        LogRepeated(u64),
        /// Hold it back (counted).
        Suppress,
    }

    struct Seen {
        last_logged: Instant,
        suppressed: u64,
    }

    /// A logger that passes `info` and below through and rate-limits identical `error`/`warn` lines.
    struct RateLimited<L> {
        inner: L,
        seen: Mutex<HashMap<String, Seen>>,
    }

    impl<L> RateLimited<L> {
        /// Decides for the line `key` seen at `now` (the clock is a parameter so tests need no sleep).
        fn decide(&self, key: &str, now: Instant) -> Repeat {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = seen.get_mut(key) {
                if now.saturating_duration_since(entry.last_logged) < REPEAT_INTERVAL {
                    entry.suppressed += 1;
                    return Repeat::Suppress;
                }
                let n = std::mem::take(&mut entry.suppressed);
                entry.last_logged = now;
                return if n == 0 {
                    Repeat::Log
                } else {
                    Repeat::LogRepeated(n)
                };
            }
            if seen.len() >= MAX_TRACKED {
                seen.retain(|_, e| {
                    e.suppressed > 0
                        || now.saturating_duration_since(e.last_logged) < REPEAT_INTERVAL
                });
                if seen.len() >= MAX_TRACKED {
                    seen.clear();
                }
            }
            seen.insert(
                key.to_string(),
                Seen {
                    last_logged: now,
                    suppressed: 0,
                },
            );
            Repeat::Log
        }

        /// Lines held back since their last appearance, with their counts (emitted at flush).
        fn take_pending(&self) -> Vec<(String, u64)> {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.iter_mut()
                .filter(|(_, e)| e.suppressed > 0)
                .map(|(k, e)| (k.clone(), std::mem::take(&mut e.suppressed)))
                .collect()
        }
    }

    impl<L: log::Log> log::Log for RateLimited<L> {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            self.inner.enabled(metadata)
        }

        fn log(&self, record: &log::Record<'_>) {
            if !self.inner.enabled(record.metadata()) {
                return;
            }
            if record.level() > log::Level::Warn {
                self.inner.log(record);
                return;
            }
            let key = format!(
                "{}\u{0}{}\u{0}{}",
                record.level(),
                record.target(),
                record.args()
            );
            match self.decide(&key, Instant::now()) {
                Repeat::Log => self.inner.log(record),
                Repeat::Suppress => {}
                Repeat::LogRepeated(n) => self.inner.log(
                    &log::Record::builder()
                        .args(format_args!("{} (repeated {n} times)", record.args()))
                        .metadata(record.metadata().clone())
                        .module_path(record.module_path())
                        .file(record.file())
                        .line(record.line())
                        .build(),
                ),
            }
        }

        /// Writes one "(repeated N times)" line for every message held back since it last appeared.
        fn flush(&self) {
            for (key, n) in self.take_pending() {
                let mut parts = key.splitn(3, '\u{0}');
                let (level, target, text) = (parts.next(), parts.next(), parts.next());
                let level = level
                    .and_then(|l| l.parse::<log::Level>().ok())
                    .unwrap_or(log::Level::Warn);
                self.inner.log(
                    &log::Record::builder()
                        .args(format_args!(
                            "{} (repeated {n} times)",
                            text.unwrap_or_default()
                        ))
                        .level(level)
                        .target(target.unwrap_or("tsb_pkcs11"))
                        .build(),
                );
            }
            self.inner.flush();
        }
    }

    #[cfg(test)]
    mod tests {
        use super::{RateLimited, Repeat, MAX_TRACKED, REPEAT_INTERVAL};
        use std::collections::HashMap;
        use std::sync::Mutex;
        use std::time::{Duration, Instant};

        /// Collects what reaches the inner logger.
        #[derive(Default)]
        struct Collect(Mutex<Vec<String>>);
        impl log::Log for Collect {
            fn enabled(&self, _: &log::Metadata<'_>) -> bool {
                true
            }
            fn log(&self, r: &log::Record<'_>) {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("{} {} {}", r.level(), r.target(), r.args()));
            }
            fn flush(&self) {}
        }

        fn limited() -> RateLimited<Collect> {
            RateLimited {
                inner: Collect::default(),
                seen: Mutex::new(HashMap::new()),
            }
        }

        #[test]
        fn repeated_lines_are_counted_once_per_interval() {
            let l = limited();
            let t0 = Instant::now();
            let ms = Duration::from_millis;
            assert_eq!(l.decide("cannot read config", t0), Repeat::Log);
            for i in 1..=999 {
                assert_eq!(l.decide("cannot read config", t0 + ms(i)), Repeat::Suppress);
            }
            // Another line is not held back by the first one.
            assert_eq!(l.decide("other", t0 + ms(5)), Repeat::Log);
            // After the interval: one line with the count of the lines held back.
            let t1 = t0 + REPEAT_INTERVAL + ms(1);
            assert_eq!(l.decide("cannot read config", t1), Repeat::LogRepeated(999));
            assert_eq!(l.decide("cannot read config", t1 + ms(1)), Repeat::Suppress);
            // A line that stopped repeating logs plainly after the interval.
            let t2 = t1 + REPEAT_INTERVAL * 2;
            assert_eq!(l.decide("other", t2), Repeat::Log);
            assert_eq!(l.decide("cannot read config", t2), Repeat::LogRepeated(1));
        }

        #[test]
        fn logger_passes_info_and_reports_held_back_lines_at_flush() {
            use log::Log;
            let l = limited();
            let rec = |level, text: &str| {
                l.log(
                    &log::Record::builder()
                        .args(format_args!("{text}"))
                        .level(level)
                        .target("tsb_pkcs11")
                        .build(),
                )
            };
            for _ in 0..26_000 {
                rec(
                    log::Level::Error,
                    "C_Initialize: cannot read the configuration",
                );
                rec(log::Level::Info, "info line");
            }
            l.flush();
            let lines = l.inner.0.lock().unwrap().clone();
            assert_eq!(
                lines.iter().filter(|s| s.starts_with("INFO")).count(),
                26_000
            );
            let errors: Vec<_> = lines.iter().filter(|s| s.starts_with("ERROR")).collect();
            assert_eq!(
                errors,
                [
                    "ERROR tsb_pkcs11 C_Initialize: cannot read the configuration",
                    "ERROR tsb_pkcs11 C_Initialize: cannot read the configuration (repeated 25999 times)"
                ]
            );
            assert!(l.take_pending().is_empty(), "flush reported everything");
        }

        #[test]
        fn the_interval_boundary_and_warn_lines() {
            let l = limited();
            let t0 = Instant::now();
            assert_eq!(l.decide("w", t0), Repeat::Log);
            assert_eq!(
                l.decide("w", t0 + REPEAT_INTERVAL - Duration::from_nanos(1)),
                Repeat::Suppress
            );
            // Exactly one interval later the line is shown again, with the count.
            assert_eq!(l.decide("w", t0 + REPEAT_INTERVAL), Repeat::LogRepeated(1));
            assert_eq!(l.decide("w", t0 + REPEAT_INTERVAL * 2), Repeat::Log);
        }

        #[test]
        fn warn_lines_are_limited_too_and_flush_keeps_level_and_target() {
            use log::Log;
            let l = limited();
            for _ in 0..3 {
                l.log(
                    &log::Record::builder()
                        .args(format_args!("TSB call failed"))
                        .level(log::Level::Warn)
                        .target("tsb_pkcs11::tsb")
                        .build(),
                );
                l.log(
                    &log::Record::builder()
                        .args(format_args!("debug line"))
                        .level(log::Level::Debug)
                        .target("tsb_pkcs11::tsb")
                        .build(),
                );
            }
            l.flush();
            let lines = l.inner.0.lock().unwrap().clone();
            assert_eq!(
                lines,
                [
                    "WARN tsb_pkcs11::tsb TSB call failed",
                    "DEBUG tsb_pkcs11::tsb debug line",
                    "DEBUG tsb_pkcs11::tsb debug line",
                    "DEBUG tsb_pkcs11::tsb debug line",
                    "WARN tsb_pkcs11::tsb TSB call failed (repeated 2 times)",
                ]
            );
        }

        #[test]
        fn a_full_table_forgets_idle_lines_first() {
            let l = limited();
            let t0 = Instant::now();
            let ms = Duration::from_millis;
            // One line held back (pending), then MAX_TRACKED - 1 idle ones.
            assert_eq!(l.decide("busy", t0), Repeat::Log);
            assert_eq!(l.decide("busy", t0 + ms(1)), Repeat::Suppress);
            for i in 1..MAX_TRACKED {
                assert_eq!(l.decide(&format!("idle {i}"), t0), Repeat::Log);
            }
            assert_eq!(l.seen.lock().unwrap().len(), MAX_TRACKED);
            // A new line after an interval: the idle lines are forgotten, the busy one kept.
            let t1 = t0 + REPEAT_INTERVAL;
            assert_eq!(l.decide("new", t1), Repeat::Log);
            assert_eq!(l.seen.lock().unwrap().len(), 2);
            assert_eq!(l.take_pending(), [("busy".to_string(), 1)]);
            assert_eq!(l.decide("busy", t1 + ms(2)), Repeat::Log);
        }

        #[test]
        fn a_full_table_of_recent_lines_starts_over() {
            let l = limited();
            let t0 = Instant::now();
            for i in 0..MAX_TRACKED {
                assert_eq!(l.decide(&format!("line {i}"), t0), Repeat::Log);
            }
            // Nothing is idle: the table is cleared, so a line seen just now logs again.
            assert_eq!(l.decide("one more", t0), Repeat::Log);
            assert_eq!(l.seen.lock().unwrap().len(), 1);
            assert_eq!(l.decide("line 0", t0), Repeat::Log);
        }
    }
}
