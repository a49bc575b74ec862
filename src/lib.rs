//! tsb-pkcs11: a PKCS#11 module that signs with keys held in Securosys Primus HSMs / CloudHSM
//! through the Transaction Security Broker (TSB) REST API.
//!
//! Layers, top to bottom:
//! - [`ffi`]: the `extern "C"` entry points (pointer checks, `catch_unwind`, conversion, `CK_RV`).
//! - [`token`]: PKCS#11 semantics (slot, token, sessions, objects, sign/verify operations,
//!   approval waits) on plain Rust types; tests drive it directly.
//! - [`tsb`]: the TSB REST client (HTTP and JSON, nothing of PKCS#11).
//! - [`crypto`]: pure functions (key parsing, DER, hashes, local verification).
//! - [`config`]: the configuration file.
//! - [`cli`]: the `tsb-pkcs11` command (`src/bin/tsb-pkcs11.rs` calls it).
//!
//! [`error`] holds the one error type (it carries its `CK_RV`) and the one table that maps TSB
//! and transport failures to it.

pub mod cli;
pub mod config;
pub mod crypto;
pub mod error;
pub mod ffi;
mod journal;
pub mod logging;
pub mod token;
pub mod tsb;

/// Wrappers of crate-private parsers for the fuzz targets in `fuzz/` (`cargo fuzz` sets
/// `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzzing;

pub use error::{Error, Result};
