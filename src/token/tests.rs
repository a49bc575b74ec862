//! Token-core tests against an in-process TSB simulator, for state the C API does not show.

use std::time::{Duration, Instant};

use cryptoki_sys::*;
use tsb_sim::{Curve, KeySpec, SimConfig, Simulator};

use super::Token;
use crate::config::Config;

fn token_for(sim: &Simulator) -> Token {
    let mut config = Config::for_url(&sim.url());
    config.pkcs11.cache_ttl = Duration::ZERO;
    Token::new(config, true).expect("token")
}

fn sim() -> Simulator {
    let cfg = SimConfig {
        cache_keys: false,
        keys: vec![
            KeySpec::ec("kept", Curve::P256),
            KeySpec::ec("removed", Curve::P256),
        ],
        ..SimConfig::default()
    };
    Simulator::start(cfg).expect("simulator")
}

fn search(t: &Token, s: CK_SESSION_HANDLE, label: &str) -> Vec<CK_OBJECT_HANDLE> {
    t.find_objects_init(s, &[(CKA_LABEL, label.as_bytes().to_vec())])
        .expect("C_FindObjectsInit");
    let found = t.find_objects(s, 16).expect("C_FindObjects");
    t.find_objects_final(s).expect("C_FindObjectsFinal");
    found
}

/// Searching 50,000 labels the TSB does not have adds nothing to the handle table (before,
/// each one took a slot for the token's life).
#[test]
fn searching_missing_labels_does_not_grow_the_handle_table() {
    let sim = sim();
    let t = token_for(&sim);
    let s = t
        .open_session(super::SLOT_ID, CKF_SERIAL_SESSION, None)
        .unwrap();
    assert_eq!(search(&t, s, "kept").len(), 2, "private and public key");
    assert_eq!(t.objects.table_len(), 1);
    let started = Instant::now();
    for i in 0..50_000 {
        assert!(search(&t, s, &format!("missing-{i}")).is_empty());
    }
    eprintln!("50,000 searches in {:?}", started.elapsed());
    assert_eq!(t.objects.table_len(), 1, "only the key that exists");
    assert_eq!(search(&t, s, "kept").len(), 2);
}

/// A key removed from the TSB is forgotten, found by a search or by a list refresh; its
/// handles become invalid and are never given to another key.
#[test]
fn the_handle_table_forgets_keys_that_are_gone() {
    let sim = sim();
    let t = token_for(&sim);
    let s = t
        .open_session(super::SLOT_ID, CKF_SERIAL_SESSION, None)
        .unwrap();
    let old = search(&t, s, "removed");
    assert_eq!(old.len(), 2);
    assert_eq!(search(&t, s, "kept").len(), 2);
    assert_eq!(t.objects.table_len(), 2);
    sim.remove_key("removed");
    assert!(search(&t, s, "removed").is_empty());
    assert_eq!(t.objects.table_len(), 1, "forgotten after a search");
    for h in &old {
        assert_eq!(
            t.attribute_values(s, *h, &[CKA_LABEL]).unwrap_err().code(),
            CKR_OBJECT_HANDLE_INVALID
        );
    }
    // Back on the TSB: new handles, never the old ones.
    sim.add_key(KeySpec::ec("removed", Curve::P256)).unwrap();
    let again = search(&t, s, "removed");
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|h| !old.contains(h)),
        "{again:?} vs {old:?}"
    );
    // A full listing forgets what the TSB no longer lists.
    sim.remove_key("removed");
    t.find_objects_init(s, &[]).unwrap();
    t.find_objects_final(s).unwrap();
    assert_eq!(t.objects.table_len(), 1, "forgotten after a list refresh");
}
