//! The `tsb-pkcs11` command (`src/cli`) over the core crate `tsb_pkcs11_core`, whose modules are
//! re-exported here so that the command's files name them as `crate::config`, `crate::tsb`, ...
//! The PKCS#11 module (`module/`) does not link this crate: nothing of the command (clap
//! included) is in libtsb_pkcs11.so.

mod cli;

pub(crate) use tsb_pkcs11_core::{config, crypto, error, journal, logging, token, tsb, Error};

fn main() {
    std::process::exit(cli::main_with_args(std::env::args_os().collect()));
}
