//! Logging setup: `env_logger` to stderr (never stdout: Notation plugins and ssh-agent speak over
//! stdout), or to a file. Level from `TSB_PKCS11_LOG` (`error`, `warn` (default), `info`, `debug`,
//! `trace`, or any env_logger filter); `TSB_PKCS11_LOG_FILE` sends the lines to a file instead
//! (created with mode 0600; a symlink or a file of another user is refused, with one line on
//! stderr, and the lines go to stderr).
//!
//! The HTTP and TLS libraries are capped at `info` whatever the filter says: ureq's debug lines
//! echo request headers, `X-API-KEY` included.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Libraries whose log output is capped at `info`.
const CAPPED: &[&str] = &["ureq", "rustls"];

/// Installs the logger once per process; later calls (a second `C_Initialize`, or another Rust
/// library that owns the global logger) are harmless no-ops.
pub fn init() {
    let filter = std::env::var("TSB_PKCS11_LOG").unwrap_or_else(|_| "warn".to_string());
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
    let _ = builder.try_init();
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
        let me = crate::ffi::os::effective_uid();
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

#[cfg(test)]
mod tests {
    use super::without_capped;

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
