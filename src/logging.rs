//! Logging setup: `env_logger` to stderr (never stdout: Notation plugins and ssh-agent speak over
//! stdout), or to a file. Level from `TSB_PKCS11_LOG` (`error`, `warn` (default), `info`, `debug`,
//! `trace`, or any env_logger filter); `TSB_PKCS11_LOG_FILE` sends the lines to a file instead.
//!
//! The HTTP and TLS libraries are capped at `info` whatever the filter says: ureq's debug lines
//! echo request headers, `X-API-KEY` included.

use std::fs::OpenOptions;

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
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => {
                builder.target(env_logger::Target::Pipe(Box::new(file)));
            }
            Err(e) => eprintln!("tsb-pkcs11: cannot open log file {path}: {e}; logging to stderr"),
        }
    }
    let _ = builder.try_init();
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
