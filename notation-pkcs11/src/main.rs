//! `notation-pkcs11`: a Notation signing plugin (contract 1.0, `SIGNATURE_GENERATOR.RAW`)
//! for keys on any PKCS#11 token.
//!
//! Notation runs `notation-pkcs11 <command>` with a JSON request on stdin; the plugin
//! answers with one JSON response on stdout and exit code 0, or with a JSON error on stderr
//! and exit code 1 (`specs/plugin-extensibility.md`, "Plugin contract").

mod chain;
mod commands;
mod keyspec;
mod pkcs11;
mod protocol;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, OnceLock};

use protocol::PluginError;

/// Largest request accepted on stdin (Notation limits each channel to 64 MiB).
const MAX_REQUEST: u64 = 64 << 20;

/// Environment variable naming a file that receives everything written to stdout and
/// stderr while the plugin runs (module logs included), so that stderr carries only the
/// JSON error: Notation parses the whole of stderr as that error.
const LOG_ENV: &str = "NOTATION_PKCS11_LOG";

const USAGE: &str = "usage: notation-pkcs11 <get-plugin-metadata|describe-key|generate-signature> \
                     with the JSON request on stdin";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if matches!(
        args.get(1).map(String::as_str),
        Some("version" | "--version")
    ) && args.len() == 2
    {
        let m = commands::metadata();
        println!("{} - {}\nVersion: {}", m.name, m.description, m.version);
        return;
    }

    // Keep stdout for the response alone, whatever the PKCS#11 module prints.
    let log = std::env::var_os(LOG_ENV).filter(|v| !v.is_empty());
    let stdout = match reserve_stdout(log.as_deref().map(std::path::Path::new)) {
        Ok(f) => f,
        Err(e) => fail(PluginError::error(format!(
            "cannot redirect stdout{}: {e}",
            match &log {
                Some(l) => format!(" to {LOG_ENV} '{}'", l.to_string_lossy()),
                None => String::new(),
            }
        ))),
    };

    let result = match args.as_slice() {
        [_, cmd] if commands::is_command(cmd) => {
            read_request().and_then(|input| run_catching_panics(cmd, &input))
        }
        [_, cmd] => Err(PluginError::validation(format!(
            "unknown command '{cmd}'; {USAGE}"
        ))),
        _ => Err(PluginError::validation(format!(
            "expected exactly one argument, the command; {USAGE}"
        ))),
    };

    match result {
        Ok(response) => {
            let mut out = stdout;
            if let Err(e) = out.write_all(response.as_bytes()).and_then(|_| out.flush()) {
                fail(PluginError::error(format!(
                    "cannot write the response: {e}"
                )));
            }
        }
        Err(e) => fail(e),
    }
}

/// Reads the whole request from stdin.
fn read_request() -> Result<Vec<u8>, PluginError> {
    let mut input = Vec::new();
    io::stdin()
        .take(MAX_REQUEST + 1)
        .read_to_end(&mut input)
        .map_err(|e| PluginError::error(format!("cannot read the request from stdin: {e}")))?;
    if input.len() as u64 > MAX_REQUEST {
        return Err(PluginError::validation("the request is larger than 64 MiB"));
    }
    Ok(input)
}

/// Message of the last panic, captured by the panic hook (which prints nothing, so that
/// stderr carries only the JSON error).
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// Runs the command; a panic becomes an `ERROR` response instead of a bare crash.
fn run_catching_panics(command: &str, input: &[u8]) -> Result<String, PluginError> {
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut m) = PANIC_MESSAGE.lock() {
            *m = Some(info.to_string());
        }
    }));
    std::panic::catch_unwind(|| commands::run(command, input)).unwrap_or_else(|_| {
        let msg = PANIC_MESSAGE
            .lock()
            .ok()
            .and_then(|mut m| m.take())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(PluginError::error(format!("internal error: {msg}")))
    })
}

/// Where error responses go when stderr was redirected to the `NOTATION_PKCS11_LOG` file:
/// a duplicate of the original stderr.
static ERROR_CHANNEL: OnceLock<File> = OnceLock::new();

/// Writes the error response to stderr and exits with code 1 ("Plugin contract").
fn fail(e: PluginError) -> ! {
    let line = format!("{}\n", e.to_json());
    match ERROR_CHANNEL.get() {
        Some(mut f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let mut err = io::stderr().lock();
            let _ = err.write_all(line.as_bytes());
            let _ = err.flush();
        }
    }
    std::process::exit(1);
}

/// Duplicates stdout to a new close-on-exec descriptor reserved for the response, then
/// points descriptor 1 at stderr, so that anything else written to stdout (by a PKCS#11
/// module, its libraries, or the processes they start) goes to stderr. "Plugin contract"
/// asks plugins to keep such output away from stdout.
///
/// With `log` (from `NOTATION_PKCS11_LOG`), descriptors 1 and 2 both go to that file
/// (appended, created with mode 0600) and error responses go to a duplicate of the
/// original stderr, which then carries nothing else.
fn reserve_stdout(log: Option<&std::path::Path>) -> io::Result<File> {
    let log_file = match log {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?,
        ),
        None => None,
    };
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) and dup2 only operate on the process's descriptor
    // table; they take no pointers. Descriptors 1 and 2 are the standard streams, and no
    // Rust object in this process owns them (std's stdout/stderr handles only borrow them,
    // and nothing has been written through them yet). Each descriptor returned by fcntl is
    // new and owned by nobody else, so handing it to `File` gives `File` sole ownership.
    // `log_file` stays alive (and open) across the dup2 calls that copy its descriptor.
    unsafe {
        let saved = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        let out = File::from_raw_fd(saved);
        match &log_file {
            None => {
                if libc::dup2(2, 1) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Some(f) => {
                let saved_err = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
                if saved_err < 0 {
                    return Err(io::Error::last_os_error());
                }
                let errors = File::from_raw_fd(saved_err);
                if libc::dup2(f.as_raw_fd(), 1) < 0 || libc::dup2(f.as_raw_fd(), 2) < 0 {
                    return Err(io::Error::last_os_error());
                }
                let _ = ERROR_CHANNEL.set(errors);
            }
        }
        Ok(out)
    }
}
