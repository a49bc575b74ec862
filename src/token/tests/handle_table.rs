//! The object-handle table stays bounded by what is on the TSB (issue 10 item 15).

use cryptoki_sys::*;
use serde_json::json;

use super::fake::FakeTsb;
use super::{find, session, token_with};

fn by_label(label: &str) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    vec![(CKA_LABEL, label.as_bytes().to_vec())]
}

/// Searching 50,000 labels the TSB does not have adds nothing to the handle table (before,
/// each one took a slot for the token's life).
#[test]
fn searching_missing_labels_does_not_grow_the_handle_table() {
    let fake = FakeTsb::new();
    fake.add_key("kept", false);
    let t = token_with(&fake, json!({"cacheTtlSecs": 0}));
    let s = session(&t);
    assert_eq!(
        find(&t, s, &by_label("kept")).len(),
        2,
        "private and public key"
    );
    assert_eq!(t.objects.table_len(), 1);
    for i in 0..50_000 {
        assert!(find(&t, s, &by_label(&format!("missing-{i}"))).is_empty());
    }
    assert_eq!(t.objects.table_len(), 1, "only the key that exists");
    assert_eq!(find(&t, s, &by_label("kept")).len(), 2);
}

/// A key removed from the TSB is forgotten, found by a search or by a list refresh; its
/// handles become invalid and are never given to another key.
#[test]
fn the_handle_table_forgets_keys_that_are_gone() {
    let fake = FakeTsb::new();
    fake.add_key("kept", false);
    fake.add_key("removed", false);
    let t = token_with(&fake, json!({"cacheTtlSecs": 0}));
    let s = session(&t);
    let old = find(&t, s, &by_label("removed"));
    assert_eq!(old.len(), 2);
    assert_eq!(find(&t, s, &by_label("kept")).len(), 2);
    assert_eq!(t.objects.table_len(), 2);
    fake.remove_key("removed");
    assert!(find(&t, s, &by_label("removed")).is_empty());
    assert_eq!(t.objects.table_len(), 1, "forgotten after a search");
    for h in &old {
        assert_eq!(
            t.attribute_values(s, *h, &[CKA_LABEL]).unwrap_err().code(),
            CKR_OBJECT_HANDLE_INVALID
        );
    }
    // Back on the TSB: new handles, never the old ones.
    fake.add_key("removed", false);
    let again = find(&t, s, &by_label("removed"));
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|h| !old.contains(h)),
        "{again:?} vs {old:?}"
    );
    // A full listing forgets what the TSB no longer lists.
    fake.remove_key("removed");
    assert_eq!(find(&t, s, &[]).len(), 2, "the kept key's two objects");
    assert_eq!(t.objects.table_len(), 1, "forgotten after a list refresh");
}
