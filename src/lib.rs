//! tsb-pkcs11: a PKCS#11 module that signs with keys held in Securosys Primus HSMs / CloudHSM
//! through the Transaction Security Broker (TSB) REST API.
//!
//! Layers, top to bottom:
//! - `ffi`: the `extern "C"` entry points (pointer checks, `catch_unwind`, conversion, `CK_RV`).
//! - `token`: PKCS#11 semantics (slot, token, sessions, objects, sign/verify operations,
//!   approval waits) on plain Rust types; tests drive it directly.
//! - `tsb`: the TSB REST client (HTTP and JSON, nothing of PKCS#11).
//! - `crypto`: pure functions (key parsing, DER, hashes, local verification).
//! - `config`: the configuration file.
//! - `cli`: the `tsb-pkcs11` command (`src/bin/tsb-pkcs11.rs` calls it).
//!
//! `error` holds the one error type (it carries its `CK_RV`) and the one table that maps TSB
//! and transport failures to it.
//!
//! Every module is `pub(crate)`, so the compiler reports dead code. The crate's Rust interface
//! is only what its own users need: `main_with_args` for the `tsb-pkcs11` binary, and the
//! `fuzzing` module (only with `--cfg fuzzing`) for the fuzz targets. Tests in `tests/` use the
//! built module through the PKCS#11 C interface and the binary through its command line.

pub(crate) mod cli;
pub(crate) mod config;
pub(crate) mod crypto;
pub(crate) mod error;
pub(crate) mod ffi;
mod journal;
mod layering;
pub(crate) mod logging;
mod os;
pub(crate) mod token;
pub(crate) mod tsb;

/// Wrappers of crate-private parsers for the fuzz targets in `fuzz/` (`cargo fuzz` sets
/// `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzzing;

/// The `tsb-pkcs11` command (`src/bin/tsb-pkcs11.rs`): runs it with `args` (`argv`, program
/// name first) and returns the exit status.
#[doc(hidden)]
pub use cli::main_with_args;
pub(crate) use error::Error;
