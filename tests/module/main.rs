//! The module's integration tests: one test binary with a module per family (each file was a
//! test binary of its own; linking ~20 binaries against the simulator, OpenSSL and cryptoki
//! cost more than running their tests). Test names are `<family>::<test>`:
//! `cargo test --test module hostile::` runs one family.
//!
//! One process runs every family, so what is process-wide is shared, and each family keeps to
//! these rules (docs/testing.md, "One process, many families"):
//! - The environment: the module reads `TSB_PKCS11_CONFIG`, `TSB_PKCS11_LOG` and
//!   `TSB_PKCS11_LOG_FILE` at `C_Initialize`. They are set once, before `main`, while the
//!   process has one thread (`tsb_pkcs11_test_support::set_env_before_main`), and never
//!   changed afterwards (setting the environment while other threads may read it is undefined
//!   behaviour): a harness points the configuration link at its own file and renames the log
//!   file its copy opened, under `tsb_pkcs11_test_support::env_lock()`, around the
//!   `C_Initialize` that reads them. A test whose subject is the environment runs its
//!   `C_Initialize` in a child process (`netsec::ModuleCopy`, [`module_init_child`]).
//! - Child processes (pkcs11-tool, the command, Python, Java, this binary) get their settings
//!   with `Command::env` and never inherit the test process's log variables
//!   (`Command::env_remove`, `tsb_pkcs11_test_support::child_env`).
//! - Module state is not shared: each harness loads its own copy of the .so (a copy without
//!   debug sections, `tsb_pkcs11_test_support::module_for_copies`: copies stay mapped until the
//!   process exits).
//! - The current directory is never changed; no test installs signal handlers.
//!
//! Families that stay separate binaries, because they need a process of their own:
//! - `tests/fork.rs` forks the process and counts its threads and file descriptors.
//! - `tests/unload.rs` counts the threads, file descriptors, memory and mappings of the process
//!   around `dlclose`.
//! - `tests/no_config.rs` runs the module in child processes with their own `HOME` and
//!   `XDG_CONFIG_HOME` and no `TSB_PKCS11_CONFIG` (the module's configuration search path).
//! - `tests/approvals.rs` counts the process's poll threads and runs a throughput test alone.
//!
//! `hostile::abort_child` and `secrets::scenarios_child_process` re-run this binary with
//! `--exact <family>::<test>` (`tsb_pkcs11_test_support::test_path`).

// The module's variables, set once before main (tests/support: set_env_before_main).
tsb_pkcs11_test_support::set_env_before_main!();

mod bad_input;
mod certificates;
mod cli_doctor;
mod cli_requests;
mod concurrency;
mod config_files;
mod conformance;
mod digest;
mod header;
mod high_availability;
mod hostile;
mod keygen;
mod log_sanitising;
mod login;
mod mechanisms;
mod network_faults;
mod pkcs11_tool;
mod secrets;
mod semantics;
mod tls;

/// The child process of `netsec::ModuleCopy::initialize` (a no-op otherwise): one
/// `C_Initialize` in an environment the parent test chose.
#[test]
fn module_init_child() {
    tsb_pkcs11_test_support::netsec::init_child();
}
