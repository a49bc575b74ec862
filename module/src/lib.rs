//! libtsb_pkcs11.so: the PKCS#11 module. Its only code is the C interface (`ffi`: the
//! `extern "C"` entry points, pointer checks, `catch_unwind`, `CK_RV`) over the core crate
//! `tsb_pkcs11_core`, whose modules `ffi` uses are re-exported here so that its files name them
//! as `crate::token`, `crate::config`, ... The `tsb-pkcs11` command is another crate
//! (`command/`), not linked into the module.

mod ffi;

/// The fuzz targets' door to the C argument decoding of `ffi::convert` (only with
/// `--cfg fuzzing`, which `cargo fuzz` sets), beside the core crate's own door, re-exported.
#[cfg(fuzzing)]
pub mod fuzzing;

pub(crate) use tsb_pkcs11_core::{config, error, logging, token};
