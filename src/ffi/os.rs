//! The few operating-system calls outside the PKCS#11 entry points that only `libc` offers
//! (the crate allows `unsafe` in `src/ffi` alone).

/// The effective user id of the process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail (POSIX).
    unsafe { libc::geteuid() }
}
