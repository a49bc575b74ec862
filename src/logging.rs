//! Logging setup: `env_logger` to stderr (never stdout: Notation plugins and ssh-agent speak over
//! stdout), or to a file. Level from `TSB_PKCS11_LOG` (`error`, `warn` (default), `info`, `debug`,
//! `trace`, or any env_logger filter); `TSB_PKCS11_LOG_FILE` sends the lines to a file instead.

use std::fs::OpenOptions;

/// Installs the logger once per process; later calls (a second `C_Initialize`, or another Rust
/// library that owns the global logger) are harmless no-ops.
pub fn init() {
    let filter = std::env::var("TSB_PKCS11_LOG").unwrap_or_else(|_| "warn".to_string());
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters(&filter)
        // ureq's debug lines echo request headers, X-API-KEY included: never let them through.
        .filter_module("ureq", log::LevelFilter::Info)
        .filter_module("rustls", log::LevelFilter::Info)
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr);
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
