//! The `tsb-pkcs11` command: `doctor`, `keys`, `requests`, `csr`, `attest`, `config init`. It
//! uses the core crate's configuration, TSB client, token and crypto code exactly as the module
//! runs them; `main.rs` only calls [`main_with_args`].
//!
//! Output: people on a terminal get text, scripts `--json` (one JSON document on stdout).
//! Log lines of the library go to stderr only with `--verbose`; warnings are collected and
//! shown with the step that caused them. Exit codes: 0 all well, 1 a problem (a failed
//! check), 2 warnings only (doctor) or a usage error.

mod attest;
mod common;
mod csr;
mod doctor;
mod init;
mod keys;
mod requests;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use common::Capture;
pub(crate) use common::{config_fix, find_config, hex, mode_and_owner, take_warnings, Global, Out};

#[derive(Parser, Debug)]
#[command(
    name = "tsb-pkcs11",
    version,
    about = "Checks and shows what the tsb-pkcs11 PKCS#11 module sees: configuration, TSB, keys, approval requests",
    long_about = None
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Checks the configuration, the network path to the TSB (DNS, TCP, TLS), authentication
    /// per role, and every key; says what is wrong and how to fix it.
    Doctor(doctor::DoctorArgs),
    /// The token's objects: label, CKA_ID, type, approvals, certificate and PKCS#11 URI.
    Keys(keys::KeysArgs),
    /// Approval requests this host's module filed (from its journal), with their status on
    /// the TSB; `requests cancel ID` cancels a leftover.
    Requests(requests::RequestsArgs),
    /// Writes a PKCS#10 certificate request (PEM) signed by the key through the module
    /// (approvals included), checked before it is written.
    Csr(csr::CsrArgs),
    /// Fetches the TSB's attestation of a key, checks its signature against the attestation
    /// key's certificate chain, writes it, and says what it proves.
    Attest(attest::AttestArgs),
    /// The configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Writes a starting configuration (mode 0600) and a companion file explaining it, or
    /// converts and checks a Securosys Notation plugin config.json.
    Init(init::InitArgs),
}

/// Runs the command with `args` (the first one is the program name); returns the exit code.
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    Capture::install(cli.global.verbose);
    let out = Out::new(cli.global.json);
    let result = match cli.command {
        Command::Doctor(a) => doctor::run(&cli.global, &a, &out),
        Command::Keys(a) => keys::run(&cli.global, &a, &out),
        Command::Requests(a) => requests::run(&cli.global, &a, &out),
        Command::Csr(a) => csr::run(&cli.global, &a, &out),
        Command::Attest(a) => attest::run(&cli.global, &a, &out),
        Command::Config {
            command: ConfigCommand::Init(a),
        } => init::run(&cli.global, &a, &out),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            if out.json {
                out.json_doc(&serde_json::json!({ "ok": false, "error": message }));
            } else {
                eprintln!("tsb-pkcs11: {}", crate::logging::escape(&message));
            }
            1
        }
    }
}
