//! tsb-pkcs11's core: PKCS#11 semantics over keys held in Securosys Primus HSMs / CloudHSM,
//! reached through the Transaction Security Broker (TSB) REST API. Two crates sit on top of it:
//! the PKCS#11 module `tsb_pkcs11` (`module/`, the `extern "C"` entry points of
//! libtsb_pkcs11.so) and the `tsb-pkcs11` command (`command/`). This crate has no C interface
//! and no command line.
//!
//! Layers, top to bottom (`layering.rs` checks them):
//! - `token`: PKCS#11 semantics (slot, token, sessions, objects, sign/verify operations,
//!   approval waits) on plain Rust types; tests drive it directly.
//! - `error`, `journal`: the one error type (it carries its `CK_RV`) and the one table that
//!   maps TSB and transport failures to it; the journal of approval requests.
//! - `tsb`: the TSB REST client (HTTP and JSON, nothing of PKCS#11).
//! - `config`: the configuration file.
//! - `logging`: log lines and the sanitiser.
//! - `os`, `crypto`: process facts; pure functions (key parsing, DER, hashes, local
//!   verification).
//!
//! The modules are `pub` for the two crates above; inside them, items stay `pub(crate)` unless
//! the module or the command uses them, so the compiler still reports dead code. `fuzzing`
//! (only with `--cfg fuzzing`) is the fuzz targets' door.

pub mod config;
pub mod crypto;
pub mod error;
pub mod journal;
mod layering;
pub mod logging;
pub mod os;
pub mod token;
pub mod tsb;

/// Wrappers of crate-private parsers for the fuzz targets in `fuzz/` (`cargo fuzz` sets
/// `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzzing;

pub use error::Error;
