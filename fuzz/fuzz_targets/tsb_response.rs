//! TSB responses (`tsb::models`): key attributes, key lists and request status from any JSON.
//! No panic; the public key of accepted attributes goes through `PublicKey::from_spki` as the
//! token does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsb_pkcs11::fuzzing::{key_attributes, key_list, request_status, PublicKey};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(a) = key_attributes(&v) {
        let _ = (a.needs_approval(), a.blocked());
        if let Some(pk) = &a.public_key {
            let _ = PublicKey::from_spki(pk);
        }
    }
    if let Ok(list) = key_list(&v) {
        let _ = list.len();
    }
    if let Ok(s) = request_status(&v, "fuzz") {
        let _ = s.state.is_terminal();
    }
});
