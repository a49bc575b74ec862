//! Fixed public keys (SubjectPublicKeyInfo DER made with OpenSSL) for the targets that need a
//! key of each type.

use cryptoki_sys::*;
use tsb_pkcs11::fuzzing::PublicKey;

pub const SPKIS: [(CK_KEY_TYPE, &[u8]); 5] = [
    (CKK_RSA, include_bytes!("../keys/rsa2048.spki.der")),
    (CKK_EC, include_bytes!("../keys/ec-P-256.spki.der")),
    (CKK_EC, include_bytes!("../keys/ec-P-384.spki.der")),
    (CKK_EC, include_bytes!("../keys/ec-P-521.spki.der")),
    (CKK_EC_EDWARDS, include_bytes!("../keys/ed25519.spki.der")),
];

/// The keys, parsed once.
pub fn keys() -> &'static [(CK_KEY_TYPE, PublicKey)] {
    static KEYS: std::sync::OnceLock<Vec<(CK_KEY_TYPE, PublicKey)>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        SPKIS
            .iter()
            .map(|(t, der)| (*t, PublicKey::from_spki(der).expect("fixed key parses")))
            .collect()
    })
}
