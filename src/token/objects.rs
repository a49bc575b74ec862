//! Token objects (PKCS#11 v2.40 §4): for every TSB key that can sign, a private key and a public
//! key object, plus certificates. Handles are derived from a per-label index that is assigned
//! once and never reused, so they stay the same across key-list refreshes.
//!
//! An index is bound to one key identity ([`KeyIdentity`]: the public key and the TSB's key id)
//! for its lifetime. When a refresh finds another key behind a label (deleted and created again
//! on the TSB, or another node of a failover answering with other keys), the label's index is
//! dropped — its handles become invalid — and the key gets a new index, so a handle never names
//! a key other than the one the application read through it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::crypto::{Certificate, PreparedKey, PublicKey};
use crate::error::{Error, Result};
use crate::logging::Net;
use crate::tsb::{KeyAttributes, Policy};

/// How long the TSB keeps an approval request for a key alive, from the key's `ruleUse` policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestLifetime {
    /// The key's policy is not known (a key that gained approval rules after it was listed).
    Unknown,
    /// A way to approve without a timeout: the request never expires on the TSB.
    Unlimited,
    /// The request expires this long after it was filed.
    Expires(Duration),
}

impl RequestLifetime {
    /// The lifetime of requests under `policy`: the `ruleUse` tokens with groups are OR'ed, and
    /// the TSB expires a request only when every one of them has timed out, so the longest
    /// timeout counts, and a token without one (`timeout` 0) makes the request live until a
    /// decision. Tokens without groups are always satisfied (such a key signs synchronously).
    pub(crate) fn of(policy: Option<&Policy>) -> RequestLifetime {
        let Some(rule) = policy.and_then(|p| p.rule_use.as_ref()) else {
            return RequestLifetime::Unknown;
        };
        let mut longest: Option<u64> = None;
        for token in rule.tokens.iter().filter(|t| !t.groups.is_empty()) {
            if token.timeout == 0 {
                return RequestLifetime::Unlimited;
            }
            longest = Some(longest.unwrap_or(0).max(token.timeout));
        }
        match longest {
            Some(secs) => RequestLifetime::Expires(Duration::from_secs(secs)),
            None => RequestLifetime::Unknown,
        }
    }
}

/// Who a key is: the SHA-256 of its public key (the DER SubjectPublicKeyInfo, as
/// `CKA_PUBLIC_KEY_INFO` shows it) and the TSB's key id when it has one. Handles are bound to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyIdentity {
    spki_sha256: [u8; 32],
    tsb_id: Option<String>,
}

impl KeyIdentity {
    pub(crate) fn of(public: &PublicKey, tsb_id: Option<&str>) -> KeyIdentity {
        KeyIdentity {
            spki_sha256: Sha256::digest(public.spki_der()).into(),
            tsb_id: tsb_id
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }
    }

    /// A short form for log lines: the first 8 bytes of the public key's SHA-256 in hex, and
    /// the TSB id (sanitised) when there is one.
    pub(crate) fn short(&self) -> String {
        let hash = hex::encode(&self.spki_sha256[..8]);
        match &self.tsb_id {
            Some(id) => format!("sha256:{hash}… id {}", Net(id)),
            None => format!("sha256:{hash}…"),
        }
    }
}

/// A key's usage flags as its objects report them (`CKA_DECRYPT`, ...): the TSB's attributes,
/// stored as asked at generation although the token itself only signs. The public-key flags
/// the TSB does not report mirror their private counterparts (`encrypt` ↔ `decrypt`, `wrap`
/// ↔ `unwrap`; `verify` is true).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyUsage {
    pub(crate) decrypt: bool,
    pub(crate) unwrap: bool,
    pub(crate) derive: bool,
    pub(crate) encrypt: bool,
    pub(crate) verify: bool,
    pub(crate) wrap: bool,
    /// `CKA_SENSITIVE` and `CKA_EXTRACTABLE` of the private key, as the TSB reports them.
    pub(crate) sensitive: bool,
    pub(crate) extractable: bool,
}

impl KeyUsage {
    fn of(flags: &crate::tsb::models::KeyFlags) -> KeyUsage {
        KeyUsage {
            decrypt: flags.decrypt,
            unwrap: flags.unwrap,
            derive: flags.derive,
            encrypt: flags.encrypt.unwrap_or(flags.decrypt),
            verify: flags.verify.unwrap_or(true),
            wrap: flags.wrap.unwrap_or(flags.unwrap),
            sensitive: flags.sensitive,
            extractable: flags.extractable,
        }
    }
}

/// A TSB key as the token shows it.
#[derive(Debug)]
pub struct KeyObject {
    pub(crate) label: String,
    /// `CKA_ID`: see [`key_id`]. The same on the key's private, public and certificate objects.
    pub id: Vec<u8>,
    pub(crate) key_type: CK_KEY_TYPE,
    pub public: PublicKey,
    /// What the key's handles are bound to (see [`KeyIdentity`]).
    pub(crate) identity: KeyIdentity,
    pub needs_approval: bool,
    pub blocked: bool,
    pub(crate) always_sensitive: bool,
    pub(crate) never_extractable: bool,
    /// `CKA_DECRYPT`, `CKA_UNWRAP`, `CKA_DERIVE`, `CKA_ENCRYPT`, `CKA_VERIFY`, `CKA_WRAP`.
    pub(crate) usage: KeyUsage,
    /// Who must approve, in words, for log lines.
    pub approvers: String,
    /// How long the TSB keeps an approval request for this key alive (from its policy).
    pub(crate) request_lifetime: RequestLifetime,
    /// Index-derived base of the object handles; [`ObjectStore::store_key`] sets the final one.
    pub(crate) base: CK_OBJECT_HANDLE,
    /// `CKA_DESTROYABLE`: the TSB attribute `destroyable`, cleared by the token unless
    /// `pkcs11.allowKeyDeletion` lets `C_DestroyObject` delete keys.
    pub(crate) destroyable: bool,
    /// `public` as parsed for verification, made at the first signature.
    pub(crate) prepared: OnceLock<PreparedKey>,
    /// `CKA_HSS_KEYS_REMAINING` of an LMS key: the TSB's `remainingSignatures` when it reports it.
    pub(crate) remaining_signatures: Option<u64>,
}

impl KeyObject {
    /// The public key parsed for verification (once per key object).
    pub(crate) fn prepared(&self) -> &PreparedKey {
        self.prepared.get_or_init(|| PreparedKey::new(&self.public))
    }
}

/// A certificate object: a key's own certificate, or an authority certificate of a chain.
#[derive(Debug)]
pub(crate) struct CertObject {
    pub(crate) handle: CK_OBJECT_HANDLE,
    pub(crate) label: String,
    pub(crate) id: Vec<u8>,
    pub(crate) cert: Certificate,
    /// `CKA_CERTIFICATE_CATEGORY`: 1 token user, 2 authority.
    pub(crate) category: CK_ULONG,
    pub(crate) source: CertSource,
}

/// Where a certificate object comes from, which decides whether `C_DestroyObject` may remove
/// it (`CKA_DESTROYABLE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CertSource {
    /// The key's certificate stored on the TSB (`GET /v1/certificate/{label}`): destroyable.
    Tsb,
    /// The leaf of the key's chain in `pkcs11.certificates`: read-only.
    ConfigLeaf,
    /// An authority certificate of a chain in `pkcs11.certificates`: read-only.
    ConfigAuthority,
}

/// Which of a key's objects a handle names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyPart {
    Private,
    Public,
}

#[derive(Clone, Debug)]
pub(crate) enum ObjectRef {
    Key(Arc<KeyObject>, KeyPart),
    Certificate(Arc<CertObject>),
}

impl ObjectRef {
    pub(crate) fn handle(&self) -> CK_OBJECT_HANDLE {
        match self {
            ObjectRef::Key(k, KeyPart::Private) => k.base | PRIVATE,
            ObjectRef::Key(k, KeyPart::Public) => k.base | PUBLIC,
            ObjectRef::Certificate(c) => c.handle,
        }
    }

    pub(crate) fn class(&self) -> CK_OBJECT_CLASS {
        match self {
            ObjectRef::Key(_, KeyPart::Private) => CKO_PRIVATE_KEY,
            ObjectRef::Key(_, KeyPart::Public) => CKO_PUBLIC_KEY,
            ObjectRef::Certificate(_) => CKO_CERTIFICATE,
        }
    }
}

const PRIVATE: CK_OBJECT_HANDLE = 1;
const PUBLIC: CK_OBJECT_HANDLE = 2;
const CERT: CK_OBJECT_HANDLE = 3;
const SHIFT: u32 = 2;

/// Why a key is not shown (for the debug log).
#[derive(Clone, Debug)]
pub enum Skipped {
    CannotSign(String),
}

#[derive(Clone, Debug)]
enum Entry {
    /// Known by label, attributes not fetched yet.
    Unknown,
    Loaded {
        key: Arc<KeyObject>,
        cert: Option<Arc<CertObject>>,
        at: Instant,
    },
    /// Listed, but it cannot sign (or its attributes could not be read).
    Skipped { at: Instant },
}

/// The handle table: one slot per label that exists on the TSB. A label gets its index when
/// it is first seen to exist; a label that is gone is forgotten (its handles become invalid)
/// and its index is never given out again. Labels that do not exist never get a slot, so the
/// table is bounded by what the TSB holds, whatever the application searches for. An index is
/// bound to the identity of the first key loaded into it; another key behind the label gets a
/// new index.
#[derive(Default)]
struct Inner {
    /// The state of each label's index.
    slots: HashMap<usize, Entry>,
    /// The key identity each index is bound to (from its first load until it is forgotten).
    bound: HashMap<usize, KeyIdentity>,
    by_label: HashMap<String, usize>,
    /// The next index to give out (indices are never reused).
    next: usize,
    list: Option<(Instant, Vec<String>)>,
    chain: Vec<Arc<CertObject>>,
}

impl Inner {
    fn entry(&self, label: &str) -> Option<&Entry> {
        let i = self.by_label.get(label)?;
        self.slots.get(i)
    }

    /// Forgets a label: its handles become invalid.
    fn forget(&mut self, label: &str) -> bool {
        match self.by_label.remove(label) {
            Some(i) => {
                self.bound.remove(&i);
                self.slots.remove(&i).is_some()
            }
            None => false,
        }
    }

    /// Gives a label a new index (never given out before), its state unknown.
    fn allocate(&mut self, label: &str) -> usize {
        let i = self.next;
        self.next += 1;
        self.slots.insert(i, Entry::Unknown);
        self.by_label.insert(label.to_string(), i);
        i
    }
}

/// The handle base of an index.
fn base_of_index(i: usize) -> CK_OBJECT_HANDLE {
    ((i as CK_OBJECT_HANDLE) + 1) << SHIFT
}

/// The object cache. Its lock is never held across network I/O: callers fetch first, then
/// store the result.
pub(crate) struct ObjectStore {
    inner: RwLock<Inner>,
    ttl: Duration,
}

/// Handles of authority certificates from the configured chains live above this value.
const CHAIN_BASE: CK_OBJECT_HANDLE = 0x4000_0000;

impl ObjectStore {
    pub(crate) fn new(ttl: Duration) -> ObjectStore {
        ObjectStore {
            inner: RwLock::new(Inner::default()),
            ttl,
        }
    }

    /// The handle base of a label that exists on the TSB, assigned on first sight and kept
    /// until the label is gone.
    pub(crate) fn base_of(&self, label: &str) -> CK_OBJECT_HANDLE {
        if let Some(i) = self.inner.read().by_label.get(label) {
            return base_of_index(*i);
        }
        let mut inner = self.inner.write();
        let i = match inner.by_label.get(label) {
            Some(i) => *i,
            None => inner.allocate(label),
        };
        base_of_index(i)
    }

    fn index_of(handle: CK_OBJECT_HANDLE) -> Option<usize> {
        (handle >> SHIFT).checked_sub(1).map(|i| i as usize)
    }

    /// How many labels the handle table holds (tests: it stays bounded).
    #[cfg(test)]
    pub(crate) fn table_len(&self) -> usize {
        let inner = self.inner.read();
        debug_assert_eq!(inner.slots.len(), inner.by_label.len());
        debug_assert!(inner.bound.keys().all(|i| inner.slots.contains_key(i)));
        inner.by_label.len()
    }

    /// The cached key list, if fresh.
    pub(crate) fn fresh_list(&self) -> Option<Vec<String>> {
        let inner = self.inner.read();
        match &inner.list {
            Some((at, labels)) if at.elapsed() < self.ttl => Some(labels.clone()),
            _ => None,
        }
    }

    /// Stores a fetched key list; keys no longer listed are forgotten (invalid handles).
    pub(crate) fn store_list(&self, labels: Vec<String>) {
        for l in &labels {
            self.base_of(l);
        }
        let mut inner = self.inner.write();
        let listed: std::collections::HashSet<&String> = labels.iter().collect();
        let gone: Vec<String> = inner
            .by_label
            .keys()
            .filter(|l| !listed.contains(l))
            .cloned()
            .collect();
        for label in gone {
            if matches!(inner.entry(&label), Some(Entry::Loaded { .. })) {
                log::info!("key '{}' is no longer on the TSB", Net(&label));
            }
            inner.forget(&label);
        }
        inner.list = Some((Instant::now(), labels));
    }

    /// Forgets the cached list, so the next query fetches it again.
    pub(crate) fn invalidate_list(&self) {
        self.inner.write().list = None;
    }

    /// A key whose attributes were fetched within the cache lifetime: `Some(Some(key))`, or
    /// `Some(None)` when it is known to be skipped or gone; `None` when it must be fetched.
    pub(crate) fn fresh_key(&self, label: &str) -> Option<Option<Arc<KeyObject>>> {
        let inner = self.inner.read();
        match inner.entry(label)? {
            Entry::Loaded { key, at, .. } if at.elapsed() < self.ttl => Some(Some(key.clone())),
            Entry::Skipped { at } if at.elapsed() < self.ttl => Some(None),
            _ => None,
        }
    }

    /// Stores a fetched key under its label and returns it with the handle base it got. The
    /// label keeps its index while the key's identity is the one the index is bound to;
    /// another key behind the label (deleted and created again, or another TSB node's key)
    /// makes the old handles invalid and gets a new index, with one warning. A label forgotten
    /// while the key was fetched gets a new index too: handles are never handed out again.
    pub(crate) fn store_key(
        &self,
        mut key: KeyObject,
        cert: Option<Arc<CertObject>>,
    ) -> Arc<KeyObject> {
        let mut inner = self.inner.write();
        let i = match inner.by_label.get(&key.label).copied() {
            None => inner.allocate(&key.label),
            Some(i) => match inner.bound.get(&i) {
                Some(old) if *old != key.identity => {
                    log::warn!(
                        "the key behind label '{}' changed on the TSB (was {}, now {}): its old \
                         object handles are invalid, the new key gets new handles",
                        Net(&key.label),
                        old.short(),
                        key.identity.short()
                    );
                    inner.forget(&key.label);
                    inner.allocate(&key.label)
                }
                _ => i,
            },
        };
        inner.bound.insert(i, key.identity.clone());
        key.base = base_of_index(i);
        let cert = cert.map(|c| rebased(c, Self::cert_handle(key.base)));
        let key = Arc::new(key);
        inner.slots.insert(
            i,
            Entry::Loaded {
                key: key.clone(),
                cert,
                at: Instant::now(),
            },
        );
        key
    }

    /// Whether `key` (captured by an operation) is still what its handles name: its index has
    /// not been forgotten and is bound to its identity.
    pub(crate) fn still_names(&self, key: &KeyObject) -> bool {
        let inner = self.inner.read();
        match Self::index_of(key.base) {
            Some(i) => inner.slots.contains_key(&i) && inner.bound.get(&i) == Some(&key.identity),
            None => false,
        }
    }

    /// A key that exists but cannot be used here (it keeps its slot: the TSB holds it).
    pub(crate) fn store_skipped(&self, label: &str) {
        let base = self.base_of(label);
        let i = Self::index_of(base).expect("valid base");
        if let Some(entry) = self.inner.write().slots.get_mut(&i) {
            *entry = Entry::Skipped { at: Instant::now() };
        }
    }

    /// Forgets which keys were skipped, so the next search fetches their attributes again:
    /// after a login with `pinIs: keyPassword` a key left out for want of its password can be
    /// opened with the PIN (handles of loaded keys are kept).
    pub(crate) fn forget_skipped(&self) {
        for entry in self.inner.write().slots.values_mut() {
            if matches!(entry, Entry::Skipped { .. }) {
                *entry = Entry::Unknown;
            }
        }
    }

    /// A label the TSB does not have (any more): forgotten, never added.
    pub(crate) fn store_gone(&self, label: &str) {
        let mut inner = self.inner.write();
        inner.forget(label);
        if let Some((_, labels)) = inner.list.as_mut() {
            labels.retain(|l| l != label);
        }
    }

    /// Replaces the certificate of a loaded key (after `C_CreateObject` / `C_DestroyObject`), so
    /// the cache agrees with the TSB at once. Returns false when the key is not loaded.
    pub(crate) fn set_cert(&self, label: &str, cert: Option<Arc<CertObject>>) -> bool {
        let mut inner = self.inner.write();
        let Some(i) = inner.by_label.get(label).copied() else {
            return false;
        };
        match inner.slots.get_mut(&i) {
            // A certificate object made for an earlier key of the label is not attached.
            Some(Entry::Loaded { key, .. })
                if cert
                    .as_ref()
                    .is_some_and(|c| c.handle != Self::cert_handle(key.base)) =>
            {
                false
            }
            Some(Entry::Loaded { cert: slot, .. }) => {
                *slot = cert;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn set_chain(&self, chain: Vec<Arc<CertObject>>) {
        self.inner.write().chain = chain;
    }

    pub(crate) fn chain(&self) -> Vec<Arc<CertObject>> {
        self.inner.read().chain.clone()
    }

    pub(crate) fn next_chain_handle(index: usize) -> CK_OBJECT_HANDLE {
        CHAIN_BASE + index as CK_OBJECT_HANDLE
    }

    /// The handle of a key's certificate object.
    pub(crate) fn cert_handle(base: CK_OBJECT_HANDLE) -> CK_OBJECT_HANDLE {
        base | CERT
    }

    /// The objects of a loaded key: private, public and (when it has one) certificate.
    pub(crate) fn objects_of(&self, label: &str) -> Vec<ObjectRef> {
        let inner = self.inner.read();
        let Some(entry) = inner.entry(label) else {
            return Vec::new();
        };
        match entry {
            // A blocked key cannot sign: it is not listed, but a handle taken before it was
            // blocked still resolves, so C_SignInit can say CKR_KEY_FUNCTION_NOT_PERMITTED.
            Entry::Loaded { key, .. } if key.blocked => Vec::new(),
            Entry::Loaded { key, cert, .. } => {
                let mut v = vec![
                    ObjectRef::Key(key.clone(), KeyPart::Private),
                    ObjectRef::Key(key.clone(), KeyPart::Public),
                ];
                if let Some(c) = cert {
                    v.push(ObjectRef::Certificate(c.clone()));
                }
                v
            }
            _ => Vec::new(),
        }
    }

    /// Resolves a handle. A key removed from the TSB, or replaced by another key under its
    /// label, gives `CKR_OBJECT_HANDLE_INVALID`.
    pub(crate) fn lookup(&self, handle: CK_OBJECT_HANDLE) -> Result<ObjectRef> {
        let invalid = || Error::rv(CKR_OBJECT_HANDLE_INVALID);
        let inner = self.inner.read();
        if handle >= CHAIN_BASE {
            return inner
                .chain
                .iter()
                .find(|c| c.handle == handle)
                .map(|c| ObjectRef::Certificate(c.clone()))
                .ok_or_else(invalid);
        }
        let i = Self::index_of(handle).ok_or_else(invalid)?;
        let Some(Entry::Loaded { key, cert, .. }) = inner.slots.get(&i) else {
            return Err(invalid());
        };
        match handle & ((1 << SHIFT) - 1) {
            PRIVATE => Ok(ObjectRef::Key(key.clone(), KeyPart::Private)),
            PUBLIC => Ok(ObjectRef::Key(key.clone(), KeyPart::Public)),
            CERT => cert
                .as_ref()
                .map(|c| ObjectRef::Certificate(c.clone()))
                .ok_or_else(invalid),
            _ => Err(invalid()),
        }
    }
}

/// A certificate object with the handle `handle` (the key it belongs to got a new index).
fn rebased(cert: Arc<CertObject>, handle: CK_OBJECT_HANDLE) -> Arc<CertObject> {
    if cert.handle == handle {
        return cert;
    }
    Arc::new(CertObject {
        handle,
        label: cert.label.clone(),
        id: cert.id.clone(),
        cert: cert.cert.clone(),
        category: cert.category,
        source: cert.source,
    })
}

/// Builds a key object from the TSB's attributes; `Err(reason)` when it cannot sign here.
pub fn key_from_attributes(
    attrs: &KeyAttributes,
    base: CK_OBJECT_HANDLE,
) -> std::result::Result<KeyObject, Skipped> {
    let skip = |why: String| Err(Skipped::CannotSign(why));
    if !attrs.flags.sign {
        return skip("its sign attribute is false".into());
    }
    let Some(pk) = attrs.public_key.as_deref() else {
        return skip(format!(
            "it has no public key (algorithm {})",
            attrs.algorithm
        ));
    };
    let public = match PublicKey::from_tsb(&attrs.algorithm, pk) {
        Ok(p) => p,
        Err(e) => return skip(format!("its public key is not supported: {e}")),
    };
    let key_type = key_type_of(&public);
    if attrs.blocked() {
        log::debug!("key '{}' is left out: it is blocked", Net(&attrs.label));
    }
    let id = key_id(attrs.id.as_deref(), &attrs.label);
    Ok(KeyObject {
        label: attrs.label.clone(),
        id,
        key_type,
        identity: KeyIdentity::of(&public, attrs.id.as_deref()),
        public,
        needs_approval: attrs.needs_approval(),
        blocked: attrs.blocked(),
        always_sensitive: attrs.flags.always_sensitive,
        never_extractable: attrs.flags.never_extractable,
        usage: KeyUsage::of(&attrs.flags),
        approvers: approvers_summary(attrs),
        request_lifetime: RequestLifetime::of(attrs.policy.as_ref()),
        base,
        destroyable: attrs.flags.destroyable,
        prepared: OnceLock::new(),
        remaining_signatures: attrs.remaining_signatures,
    })
}

/// `CKA_KEY_TYPE` of a public key (PKCS#11 v3.2 adds `CKK_ML_DSA`, `CKK_SLH_DSA`; `CKK_HSS` is
/// from v3.1).
pub(crate) fn key_type_of(public: &PublicKey) -> CK_KEY_TYPE {
    match public {
        PublicKey::Rsa { .. } => CKK_RSA,
        PublicKey::Ec { .. } => CKK_EC,
        PublicKey::Ed25519 { .. } => CKK_EC_EDWARDS,
        PublicKey::MlDsa { .. } => CKK_ML_DSA,
        PublicKey::SlhDsa { .. } => CKK_SLH_DSA,
        PublicKey::Hss(_) => CKK_HSS,
    }
}

/// The TSB `id` a new key with this `CKA_ID` gets: the bytes as lowercase hex, which
/// [`key_id`] turns back into the same bytes (`pkcs11-tool --id 01` makes the id `"01"`).
pub(crate) fn tsb_id_of(cka_id: &[u8]) -> String {
    hex::encode(cka_id)
}

/// `CKA_ID` of a key: the TSB's `id` decoded from hex when it is hex (either case, as
/// Securosys' own PKCS#11 provider shows it), the `id`'s UTF-8 bytes otherwise, and the
/// label's bytes when the key has no `id`.
pub(crate) fn key_id(tsb_id: Option<&str>, label: &str) -> Vec<u8> {
    match tsb_id.map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => hex::decode(id).unwrap_or_else(|_| id.as_bytes().to_vec()),
        None => label.as_bytes().to_vec(),
    }
}

/// "group A: 2 of alice, bob, carol; group B: 1 of dave" for log lines.
fn approvers_summary(attrs: &KeyAttributes) -> String {
    let Some(policy) = attrs.policy.as_ref() else {
        return String::new();
    };
    let Some(rule) = policy.rule_use.as_ref() else {
        return String::new();
    };
    let mut tokens = Vec::new();
    for t in &rule.tokens {
        let groups: Vec<String> = t
            .groups
            .iter()
            .map(|g| {
                let names: Vec<&str> = g
                    .approvals
                    .iter()
                    .filter_map(|a| a.name.as_deref())
                    .collect();
                format!("{}: {} of {}", g.name, g.quorum, names.join(", "))
            })
            .collect();
        if !groups.is_empty() {
            tokens.push(groups.join("; "));
        }
    }
    tokens.join(" | or | ")
}
