//! The operating-system facts that the configuration and the log file checks need, from
//! `rustix` (safe wrappers), so that no layer below the FFI needs `unsafe` or reaches up into it.

/// The effective user id of the process.
pub(crate) fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}
