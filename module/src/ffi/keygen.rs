//! Key generation (PKCS#11 v3.0 §5.14): `C_GenerateKeyPair` creates a signing key on the TSB.

use cryptoki_sys::*;

use super::convert::{mechanism, out, template, without_repeats};
use super::{guard, initialised, token};

/// `C_GenerateKeyPair` (§5.14): `CKM_RSA_PKCS_KEY_PAIR_GEN`, `CKM_EC_KEY_PAIR_GEN` and
/// `CKM_EC_EDWARDS_KEY_PAIR_GEN` create the key on the TSB (`POST /v1/key`); the handles of
/// its public and private key objects are returned.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn C_GenerateKeyPair(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    public_template: *mut CK_ATTRIBUTE,
    public_count: CK_ULONG,
    private_template: *mut CK_ATTRIBUTE,
    private_count: CK_ULONG,
    public_key: *mut CK_OBJECT_HANDLE,
    private_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    log::trace!(
        "C_GenerateKeyPair(session={session}, public_count={public_count}, private_count={private_count})"
    );
    guard("C_GenerateKeyPair", || {
        initialised()?;
        // SAFETY: `mech` is a valid CK_MECHANISM (or NULL, refused).
        let m = unsafe { mechanism(mech) }?;
        // SAFETY: writable CK_OBJECT_HANDLEs (or NULL, refused).
        let public_key = unsafe { out(public_key) }?;
        // SAFETY: as above.
        let private_key = unsafe { out(private_key) }?;
        // SAFETY: each template holds its count of attributes (NULL only with count 0).
        let public =
            unsafe { template(public_template, public_count) }.and_then(without_repeats)?;
        // SAFETY: as above.
        let private =
            unsafe { template(private_template, private_count) }.and_then(without_repeats)?;
        let (p, k) = token()?.generate_key_pair(session, &m, &public, &private)?;
        *public_key = p;
        *private_key = k;
        Ok(())
    })
}
