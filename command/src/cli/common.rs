//! What the subcommands share: the global options ([`Global`]), where output goes ([`Out`]),
//! the captured warnings, and finding and loading the configuration.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{Config, ConfigError, CONFIG_ENV};

#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// Configuration file (default: as the module finds it: $TSB_PKCS11_CONFIG, then
    /// $XDG_CONFIG_HOME/tsb-pkcs11/config.json, ~/.config/tsb-pkcs11/config.json,
    /// /etc/tsb-pkcs11/config.json).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub(super) config: Option<PathBuf>,
    /// One JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// The module's log lines (debug level) on stderr.
    #[arg(long, short = 'v', global = true)]
    pub(super) verbose: bool,
}

/// Where output goes: stdout, text or JSON.
pub(crate) struct Out {
    pub(crate) json: bool,
}

impl Out {
    pub(super) fn new(json: bool) -> Out {
        Out { json }
    }

    /// A line of text (text mode only). Everything the human-readable output shows goes
    /// through here, and the line is escaped as a whole (`logging::escape`: C0/C1 controls,
    /// DEL, U+2028/2029 and the bidirectional marks and overrides become `\u{..}` / `\n`): a
    /// key label, request id or TSB message can neither colour nor rewrite the terminal, nor
    /// forge a line. A line never holds a line break of its own (an empty line is `line("")`).
    /// JSON output ([`Out::json_doc`]) keeps the exact text.
    pub(crate) fn line(&self, text: &str) {
        if !self.json {
            let mut o = std::io::stdout().lock();
            // A closed pipe (`| head`) ends the output quietly.
            let _ = writeln!(o, "{}", crate::logging::escape(text));
        }
    }

    /// The JSON document (JSON mode).
    pub(crate) fn json_doc<T: Serialize>(&self, value: &T) {
        let mut o = std::io::stdout().lock();
        let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
        let _ = writeln!(o, "{text}");
    }
}

/// Collects the library's warnings (so each check can show its own), and echoes log lines to
/// stderr with `--verbose`. Secrets never reach the log (see `crate::logging`).
pub(super) struct Capture {
    verbose: bool,
}

static CAPTURED: Mutex<Vec<String>> = parking_lot::const_mutex(Vec::new());

impl Capture {
    pub(super) fn install(verbose: bool) {
        // Info, for the approval-wait lines (`logging::WAIT_TARGET`), which are always shown:
        // a command waiting for approvers says which request and who must approve.
        let level = if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        };
        if log::set_boxed_logger(Box::new(Capture { verbose })).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for Capture {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        let ours = meta.target().starts_with("tsb_pkcs11");
        // Only the command's and the module's own lines below info: other libraries' debug
        // lines (rustls's handshakes) are never shown.
        ours || meta.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if record.level() <= log::Level::Warn && record.target().starts_with("tsb_pkcs11") {
            CAPTURED.lock().push(record.args().to_string());
        }
        if self.verbose {
            let text = crate::logging::escape(&record.args().to_string());
            eprintln!("[{} {}] {text}", record.level(), record.target());
        } else if record.target() == crate::logging::WAIT_TARGET {
            let text = crate::logging::escape(&record.args().to_string());
            eprintln!("tsb-pkcs11: {text}");
        }
    }

    fn flush(&self) {}
}

/// The warnings logged since the last call.
pub(crate) fn take_warnings() -> Vec<String> {
    std::mem::take(&mut *CAPTURED.lock())
}

/// The configuration file the module would read, and how it was chosen.
#[derive(Debug, Serialize)]
pub(crate) struct Found {
    /// The file, if one exists (or was named).
    pub(crate) path: Option<PathBuf>,
    /// How: `--config`, `$TSB_PKCS11_CONFIG`, `search path`.
    pub(crate) how: &'static str,
    /// The search path with whether each file exists.
    pub(crate) searched: Vec<(PathBuf, bool)>,
}

impl Found {
    /// The search path for messages: `a, b, c`.
    pub(crate) fn searched_list(&self) -> String {
        self.searched
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Finds the configuration file as `C_Initialize` does (`--config` overrides).
pub(crate) fn find_config(global: &Global) -> Found {
    let searched: Vec<(PathBuf, bool)> = Config::search_paths()
        .into_iter()
        .map(|p| {
            let exists = std::fs::symlink_metadata(&p).is_ok();
            (p, exists)
        })
        .collect();
    if let Some(p) = &global.config {
        return Found {
            path: Some(p.clone()),
            how: "--config",
            searched,
        };
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Found {
            path: Some(PathBuf::from(p)),
            how: "$TSB_PKCS11_CONFIG",
            searched,
        };
    }
    let path = searched.iter().find(|(_, e)| *e).map(|(p, _)| p.clone());
    Found {
        path,
        how: "search path",
        searched,
    }
}

/// Loads the configuration for commands other than `doctor` (which reports each step).
pub(crate) fn load_config(global: &Global) -> Result<Config, String> {
    let found = find_config(global);
    let Some(path) = &found.path else {
        return Err(format!(
            "no configuration file (looked in {}); run `tsb-pkcs11 config init` or set {CONFIG_ENV}",
            found.searched_list()
        ));
    };
    Config::from_file(path).map_err(|e| describe_config_error(&e))
}

/// A configuration error with its likely fix.
pub(crate) fn describe_config_error(e: &ConfigError) -> String {
    format!(
        "{e}{}",
        config_fix(e)
            .map(|f| format!("; fix: {f}"))
            .unwrap_or_default()
    )
}

/// The likely fix of a configuration error.
pub(crate) fn config_fix(e: &ConfigError) -> Option<String> {
    let m = e.message.as_str();
    if m.contains("chmod") || m.contains("chown") {
        return Some("run the command the message names".into());
    }
    if m.contains("not a regular file") {
        return Some(format!(
            "point {CONFIG_ENV} (or --config) at the JSON file itself, not a folder or device"
        ));
    }
    if m.contains("cannot read") && m.contains("ermission denied") {
        return Some(format!(
            "make {} readable by the user the application runs as (chmod 600 and chown to that user)",
            e.file
        ));
    }
    if m.contains("cannot read") || m.contains("No such file") {
        return Some(format!(
            "create it with `tsb-pkcs11 config init`, or point {CONFIG_ENV} at the right file"
        ));
    }
    match e.field.as_deref() {
        Some(f) if m.contains("env:") || m.contains("environment") => Some(format!(
            "export the environment variable that {f} names, in the environment of the application"
        )),
        Some(f) if m.contains("file:") => Some(format!(
            "create the file that {f} names, readable by the application's user"
        )),
        Some(f) => Some(format!("correct {f} (see docs/configuration.md)")),
        None if m.contains("JSON") || m.contains("json") => {
            Some("fix the JSON syntax at the position given".to_string())
        }
        None => None,
    }
}

/// File mode and owner of a path (`None` when it cannot be read).
pub(crate) fn mode_and_owner(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.mode() & 0o7777, m.uid()))
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
