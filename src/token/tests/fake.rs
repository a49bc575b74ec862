//! An in-memory TSB for the core tests: real P-256 keys and signatures, approval requests whose
//! state the test drives, a log of every call, and switchable failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::pkey::{Id, PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::RsaPssSaltlen;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use parking_lot::Mutex;
use serde_json::json;

use crate::config::{Config, Secret};
use crate::token::{Backend, BackendFactory};
use crate::tsb::{
    KeyAttributes, NewKey, NewKeyType, NewKeyUsage, RequestState, RequestStatus, SignRequest,
    TsbError, TsbErrorKind,
};

/// The private key behind a fake TSB key.
enum Signer {
    P256(SigningKey),
    /// An RSA or Ed25519 key, signed with OpenSSL.
    OpenSsl(PKey<Private>),
    /// Post-quantum keys, signed with the RustCrypto crates and `hbs-lms` (the tests check the
    /// module's answers with each crate's own verifier, and through the clients with the
    /// independent Python verifiers).
    MlDsa65(Box<ml_dsa::SigningKey<ml_dsa::MlDsa65>>),
    Slh128f(Box<slh_dsa::SigningKey<slh_dsa::Sha2_128f>>),
    Lms(Box<hbs_lms::SigningKey<hbs_lms::Sha256_256>>, Vec<u8>),
}

struct FakeKey {
    signer: Signer,
    needs_approval: bool,
    blocked: bool,
    /// The key's password: every call about the key must give it (620 otherwise).
    password: Option<String>,
    /// An LMS key's one-time signatures left (`remainingSignatures`).
    remaining: Option<u64>,
}

struct FakeRequest {
    state: RequestState,
    key: String,
    algorithm: String,
    payload: Vec<u8>,
    meta_data: Option<Vec<u8>>,
    /// `approvedBy`, `notYetApprovedBy` and `rejectedBy` as the status answers them.
    approvers: Approvers,
}

/// The approver lists of a request's status: (approved by, not yet approved by, rejected by).
type Approvers = (Vec<String>, Vec<String>, Vec<String>);

#[derive(Default)]
pub(super) struct FakeTsb {
    keys: Mutex<BTreeMap<String, FakeKey>>,
    requests: Mutex<HashMap<String, FakeRequest>>,
    calls: Mutex<Vec<String>>,
    /// The certificate stored for each key label.
    certificates: Mutex<HashMap<String, Vec<u8>>>,
    /// The JWT `check_bearer` accepts.
    pub(super) good_jwt: Mutex<Option<String>>,
    /// The JWT set at login.
    pub(super) login_bearer: Mutex<Option<String>>,
    /// When set, every key attribute request fails with this (HTTP status, TSB code).
    pub(super) attributes_error: Mutex<Option<(u16, i64)>>,
    /// Key attribute requests for these labels fail with this (HTTP status, TSB code if any).
    pub(super) label_errors: Mutex<HashMap<String, (u16, Option<i64>)>>,
    /// Answer ECDSA signatures as fixed-width r‖s instead of DER (newer TSBs can).
    pub(super) raw_ecdsa: std::sync::atomic::AtomicBool,
    /// The TSB `id` of each key label (`null` for the others).
    pub(super) key_ids: Mutex<HashMap<String, String>>,
    /// When set, every `DELETE /v1/request/{id}` fails with this (HTTP status, TSB code).
    pub(super) cancel_error: Mutex<Option<(u16, i64)>>,
    /// When set, every key deletion fails with this (HTTP status, TSB code).
    pub(super) delete_error: Mutex<Option<(u16, i64)>>,
    /// While true, a key deletion does not answer (a hanging TSB, for at most 10 s); it goes on
    /// when cleared.
    pub(super) delete_hangs: std::sync::atomic::AtomicBool,
    /// When set, rewrites every synchronous signature before it is answered (a broken or
    /// hostile TSB).
    pub(super) tamper: Mutex<Option<Tamper>>,
    /// The usage flags keys were created with (`decrypt`, `unwrap`, `derive`; all false for
    /// the others; `encrypt`, `verify`, `wrap` reported where they were sent).
    pub(super) key_usage: Mutex<HashMap<String, NewKeyUsage>>,
    /// Knows the post-quantum algorithms only by their newer names (`ML_DSA`, `SLH_DSA`): the
    /// documented `DILITHIUM` / `SPHINCS_PLUS` get 400/600.
    pub(super) newer_pqc_names_only: std::sync::atomic::AtomicBool,
    /// Refuses the `context` field (an older TSB) with 400/621.
    pub(super) no_context_field: std::sync::atomic::AtomicBool,
    /// Sends the public keys of post-quantum keys raw (base64 of the key) instead of as SPKI.
    pub(super) raw_pqc_public_keys: std::sync::atomic::AtomicBool,
    /// The `signatureAlgorithm` and `context` of every sign request, in order.
    pub(super) sign_requests: Mutex<Vec<(String, Option<Vec<u8>>)>>,
    /// While true, a `GET /v1/request/{id}` does not answer (for at most 10 s); it goes on
    /// when cleared, recording `polled {id}`.
    pub(super) poll_hangs: std::sync::atomic::AtomicBool,
    /// While true, a `DELETE /v1/request/{id}` does not answer (a hanging TSB, for at most
    /// 10 s); it goes on when cleared.
    pub(super) cancel_hangs: std::sync::atomic::AtomicBool,
    /// When set, every key creation fails with this (HTTP status, TSB code).
    pub(super) create_error: Mutex<Option<(u16, i64)>>,
    /// A key attribute request for this label panics (a bug in a fetch worker).
    pub(super) attributes_panic: Mutex<Option<String>>,
    /// When set, every synchronous signature fails with this (HTTP status, TSB code) after
    /// the request is recorded.
    pub(super) sign_error: Mutex<Option<(u16, i64)>>,
    /// When set, every certificate import of an existing key fails with this (HTTP status,
    /// TSB code).
    pub(super) import_error: Mutex<Option<(u16, i64)>>,
    /// When set, every credential check of `C_Login` (`check_bearer`,
    /// `check_operation_api_key`) fails with this (HTTP status, TSB code): a TSB that cannot
    /// judge the PIN.
    pub(super) login_error: Mutex<Option<(u16, i64)>>,
    /// Run once by the next certificate import before it answers (something the application
    /// does in another thread meanwhile).
    pub(super) import_hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// The thread of every key attribute request, in order.
    pub(super) attribute_threads: Mutex<Vec<std::thread::ThreadId>>,
    /// When set, every certificate deletion fails with this (HTTP status, TSB code).
    pub(super) delete_certificate_error: Mutex<Option<(u16, i64)>>,
    /// Run once by the next synchronous sign when it reaches the TSB (something the
    /// application does in another thread meanwhile).
    pub(super) sign_hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// While true, an LMS key's signature is answered as the bare LMS signature of its one
    /// tree (RFC 8554 §5.4), without the HSS wrapping (§6.2: `Nspk` = 0).
    pub(super) bare_lms: std::sync::atomic::AtomicBool,
    /// Failures the next polls of a request answer with, one each, first in first out
    /// (HTTP status, TSB code): a TSB with a passing fault.
    pub(super) poll_errors: Mutex<std::collections::VecDeque<(u16, i64)>>,
}

/// Runs `f` on a thread with a 64 MiB stack (hbs-lms's key generation and signing need it).
fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no panic")
}

/// Rewrites a signature before the fake answers it.
pub(super) type Tamper = Box<dyn Fn(Vec<u8>) -> Vec<u8> + Send>;

pub(super) fn tsb_error(status: u16, code: i64) -> TsbError {
    TsbError::new(
        "fake",
        TsbErrorKind::Http {
            status,
            code: Some(code),
            reason: None,
            message: None,
        },
    )
}

impl FakeTsb {
    pub(super) fn new() -> Arc<FakeTsb> {
        Arc::new(FakeTsb::default())
    }

    /// A factory handing the token this fake (also after a "fork").
    pub(super) fn factory(self: &Arc<FakeTsb>) -> BackendFactory {
        let fake = self.clone();
        Box::new(move |_config: &Config| Ok(fake.clone() as Arc<dyn Backend>))
    }

    pub(super) fn add_key(&self, label: &str, needs_approval: bool) -> SigningKey {
        // A key derived from the label: deterministic, and different per label.
        let secret = <sha2::Sha256 as sha2::Digest>::digest(label.as_bytes());
        let signer = SigningKey::from_bytes(&secret).expect("a valid P-256 scalar");
        self.insert(label, Signer::P256(signer.clone()), needs_approval);
        signer
    }

    /// Adds a password-protected P-256 key: its attributes, signatures, approval requests and
    /// deletion need `password` (TSB error 620 without it or with another one).
    pub(super) fn add_password_key(
        &self,
        label: &str,
        password: &str,
        needs_approval: bool,
    ) -> SigningKey {
        let signer = self.add_key(label, needs_approval);
        if let Some(k) = self.keys.lock().get_mut(label) {
            k.password = Some(password.to_string());
        }
        signer
    }

    /// 620 (`res.error.key.password.mismatch`) unless `given` is the key's password; keys
    /// without a password ignore a given one (as the TSB does).
    fn check_password(&self, label: &str, given: Option<&Secret>) -> Result<(), TsbError> {
        match self.keys.lock().get(label).and_then(|k| k.password.clone()) {
            Some(pw) if given.map(Secret::expose) != Some(pw.as_str()) => Err(tsb_error(400, 620)),
            _ => Ok(()),
        }
    }

    /// Puts another P-256 key (derived from `seed`) behind `label`, as a key deleted and
    /// created again on the TSB behind the token's back.
    pub(super) fn replace_key(&self, label: &str, seed: &str) -> SigningKey {
        let secret = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
        let signer = SigningKey::from_bytes(&secret).expect("a valid P-256 scalar");
        self.insert(label, Signer::P256(signer.clone()), false);
        signer
    }

    /// Adds an RSA or Ed25519 key (signed with OpenSSL).
    pub(super) fn add_openssl_key(&self, label: &str, key: &PKey<Private>) {
        self.insert(label, Signer::OpenSsl(key.clone()), false);
    }

    fn insert(&self, label: &str, signer: Signer, needs_approval: bool) {
        let remaining = matches!(signer, Signer::Lms(..)).then_some(32);
        self.keys.lock().insert(
            label.to_string(),
            FakeKey {
                signer,
                needs_approval,
                blocked: false,
                password: None,
                remaining,
            },
        );
    }

    /// Adds an ML-DSA-65 key (derived from the label); returns its raw public key.
    pub(super) fn add_ml_dsa(&self, label: &str, needs_approval: bool) -> Vec<u8> {
        let seed = <sha2::Sha256 as sha2::Digest>::digest(label.as_bytes());
        let seed = ml_dsa::Seed::try_from(&seed[..]).expect("32 bytes");
        let sk = ml_dsa::SigningKey::<ml_dsa::MlDsa65>::from_seed(&seed);
        let pk = ml_dsa::Keypair::verifying_key(&sk).encode().to_vec();
        self.insert(label, Signer::MlDsa65(Box::new(sk)), needs_approval);
        pk
    }

    /// Adds an SLH-DSA-SHA2-128f key (derived from the label); returns its raw public key.
    pub(super) fn add_slh_dsa(&self, label: &str) -> Vec<u8> {
        let seed = <sha2::Sha256 as sha2::Digest>::digest(label.as_bytes());
        let sk = slh_dsa::SigningKey::<slh_dsa::Sha2_128f>::slh_keygen_internal(
            &seed[..16],
            &seed[16..],
            &seed[..16],
        );
        let pk = AsRef::<slh_dsa::VerifyingKey<_>>::as_ref(&sk).to_vec();
        self.insert(label, Signer::Slh128f(Box::new(sk)), false);
        pk
    }

    /// Adds an LMS key (HSS L = 1, LMS_SHA256_M32_H5, LMOTS_SHA256_N32_W8: 32 signatures);
    /// returns its HSS public key.
    pub(super) fn add_lms(&self, label: &str) -> Vec<u8> {
        use hbs_lms::{HssParameter, LmotsAlgorithm, LmsAlgorithm, Sha256_256};
        let mut seed = hbs_lms::Seed::<Sha256_256>::default();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(label.as_bytes());
        seed.as_mut_slice().copy_from_slice(&digest);
        let params = [HssParameter::<Sha256_256>::new(
            LmotsAlgorithm::LmotsW8,
            LmsAlgorithm::LmsH5,
        )];
        // hbs-lms keeps large arrays on the stack: its work runs on a thread with room.
        let (sk, vk) = on_big_stack(move || {
            hbs_lms::keygen::<Sha256_256>(&params, &seed, None).expect("LMS keygen")
        });
        let pk = vk.as_slice().to_vec();
        self.insert(label, Signer::Lms(Box::new(sk), pk.clone()), false);
        pk
    }

    /// Sets an LMS key's remaining signatures.
    pub(super) fn set_remaining(&self, label: &str, n: u64) {
        if let Some(k) = self.keys.lock().get_mut(label) {
            k.remaining = Some(n);
        }
    }

    /// A post-quantum signature (`None`: not a post-quantum key), as the TSB contract has them
    /// (docs/tsb-api.md "Post-quantum keys"): documented and newer algorithm names, a context
    /// for ML-DSA and SLH-DSA, an exhausted LMS key answering 500/701.
    fn pqc_signature(
        &self,
        label: &str,
        algorithm: &str,
        payload: &[u8],
        context: &[u8],
    ) -> Option<Result<Vec<u8>, TsbError>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut keys = self.keys.lock();
        let key = keys.get_mut(label)?;
        let refused = |code| Some(Err(tsb_error(400, code)));
        let newer_only = self.newer_pqc_names_only.load(Relaxed);
        let name_ok = |documented: &str, newer: &str| {
            algorithm == newer || (!newer_only && algorithm == documented)
        };
        match &mut key.signer {
            Signer::MlDsa65(sk) => {
                if !name_ok("DILITHIUM", "ML_DSA") {
                    return refused(600);
                }
                let sig = sk
                    .expanded_key()
                    .sign_deterministic(payload, context)
                    .expect("ML-DSA signs");
                Some(Ok(sig.encode().to_vec()))
            }
            Signer::Slh128f(sk) => {
                if !name_ok("SPHINCS_PLUS", "SLH_DSA") {
                    return refused(600);
                }
                let sig = sk
                    .try_sign_with_context(payload, context, None)
                    .expect("SLH-DSA signs");
                Some(Ok(sig.to_vec()))
            }
            Signer::Lms(sk, _) => {
                if algorithm != "LMS" || !context.is_empty() {
                    return refused(600);
                }
                if key.remaining == Some(0) {
                    return Some(Err(TsbError::new(
                        "fake",
                        TsbErrorKind::Http {
                            status: 500,
                            code: Some(701),
                            reason: Some("res.error.in.hsm".into()),
                            message: Some("LMS key exhausted: no one-time signatures left".into()),
                        },
                    )));
                }
                let (signed, sig) = {
                    let mut owned = sk.clone();
                    let payload = payload.to_vec();
                    on_big_stack(move || {
                        let sig = hbs_lms::signature::SignerMut::try_sign(owned.as_mut(), &payload)
                            .expect("LMS signs");
                        (owned, sig)
                    })
                };
                *sk = signed;
                key.remaining = key.remaining.map(|n| n - 1);
                let sig = sig.as_ref();
                if self.bare_lms.load(std::sync::atomic::Ordering::SeqCst) {
                    assert_eq!(sig[..4], [0, 0, 0, 0], "an HSS signature of one level");
                    return Some(Ok(sig[4..].to_vec()));
                }
                Some(Ok(sig.to_vec()))
            }
            _ if matches!(
                algorithm,
                "DILITHIUM" | "ML_DSA" | "SPHINCS_PLUS" | "SLH_DSA" | "LMS"
            ) =>
            {
                refused(607)
            }
            _ => None,
        }
    }

    /// Blocks or unblocks a key on the HSM (`keyStatus.blocked`).
    pub(super) fn set_blocked(&self, label: &str, blocked: bool) {
        if let Some(k) = self.keys.lock().get_mut(label) {
            k.blocked = blocked;
        }
    }

    /// The `metaData` JSON sent with an approval request.
    pub(super) fn request_metadata(&self, id: &str) -> Option<serde_json::Value> {
        let requests = self.requests.lock();
        let meta = requests.get(id)?.meta_data.as_ref()?;
        Some(serde_json::from_slice(meta).expect("metaData is JSON"))
    }

    /// The labels of the keys the TSB holds.
    pub(super) fn labels(&self) -> Vec<String> {
        self.keys.lock().keys().cloned().collect()
    }

    pub(super) fn remove_key(&self, label: &str) {
        self.keys.lock().remove(label);
    }

    /// Removes a key's certificate on the TSB without the token knowing.
    pub(super) fn delete_certificate_behind_the_tokens_back(&self, label: &str) {
        self.certificates.lock().remove(label);
    }

    /// The calls made so far, as `name label-or-id`.
    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }

    pub(super) fn count(&self, prefix: &str) -> usize {
        self.calls
            .lock()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    fn record(&self, call: String) {
        self.calls.lock().push(call);
    }

    /// Executes an approval request: its result becomes the key's signature of the payload.
    pub(super) fn approve(&self, id: &str) {
        self.set_request_state(id, RequestState::Executed);
    }

    /// Moves an approval request to `state`.
    pub(super) fn set_request_state(&self, id: &str, state: RequestState) {
        if let Some(r) = self.requests.lock().get_mut(id) {
            r.state = state;
        }
    }

    /// Moves an approval request to `state` with these approver lists, at once.
    pub(super) fn set_request_status(
        &self,
        id: &str,
        state: RequestState,
        approved_by: &[&str],
        waiting_for: &[&str],
        rejected_by: &[&str],
    ) {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if let Some(r) = self.requests.lock().get_mut(id) {
            r.state = state;
            r.approvers = (names(approved_by), names(waiting_for), names(rejected_by));
        }
    }

    /// Forgets an approval request (the TSB answers 651 for it from now on).
    pub(super) fn forget_request(&self, id: &str) {
        self.requests.lock().remove(id);
    }

    /// Gives a key a use policy (or takes it away) on the TSB.
    pub(super) fn set_needs_approval(&self, label: &str, needs: bool) {
        if let Some(k) = self.keys.lock().get_mut(label) {
            k.needs_approval = needs;
        }
    }

    pub(super) fn request_state(&self, id: &str) -> Option<RequestState> {
        self.requests.lock().get(id).map(|r| r.state.clone())
    }

    pub(super) fn request_ids(&self) -> Vec<String> {
        self.requests.lock().keys().cloned().collect()
    }

    /// The signature the TSB's `algorithm` makes of `payload` (ECDSA as DER). `NONE…`
    /// algorithms sign the payload as a digest (`NONE_WITH_RSA`: as it is), the others hash it
    /// first; an algorithm that does not fit the key is refused as the TSB does.
    fn signature(&self, label: &str, algorithm: &str, payload: &[u8]) -> Result<Vec<u8>, TsbError> {
        let keys = self.keys.lock();
        let key = keys.get(label).ok_or_else(|| tsb_error(404, 650))?;
        let refused = || tsb_error(400, 600);
        if algorithm == "EDDSA" {
            return match &key.signer {
                Signer::OpenSsl(k) if k.id() == Id::ED25519 => {
                    let mut signer = openssl::sign::Signer::new_without_digest(k).unwrap();
                    Ok(signer.sign_oneshot_to_vec(payload).unwrap())
                }
                _ => Err(refused()),
            };
        }
        let (hash, scheme) = algorithm.split_once("_WITH_").ok_or_else(refused)?;
        let (prehashed, hash) = match hash.strip_prefix("NONE") {
            Some(h) => (true, h),
            None => (false, hash),
        };
        let md = match hash {
            "" => None,
            "SHA1" => Some(MessageDigest::sha1()),
            "SHA224" => Some(MessageDigest::sha224()),
            "SHA256" => Some(MessageDigest::sha256()),
            "SHA384" => Some(MessageDigest::sha384()),
            "SHA512" => Some(MessageDigest::sha512()),
            _ => return Err(refused()),
        };
        let digest = |m: MessageDigest| -> Vec<u8> {
            if prehashed {
                payload.to_vec()
            } else {
                openssl::hash::hash(m, payload).unwrap().to_vec()
            }
        };
        match (&key.signer, scheme) {
            (Signer::P256(k), "ECDSA") => {
                let d = match md {
                    Some(m) => digest(m),
                    None if prehashed => payload.to_vec(),
                    None => return Err(refused()),
                };
                let sig: p256::ecdsa::Signature = k.sign_prehash(&d).map_err(|_| refused())?;
                if self.raw_ecdsa.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(sig.to_bytes().to_vec());
                }
                Ok(DerSignature::from(sig).as_bytes().to_vec())
            }
            (Signer::OpenSsl(k), "RSA" | "RSA_PSS") if k.id() == Id::RSA => {
                let mut ctx = PkeyCtx::new(k).unwrap();
                ctx.sign_init().unwrap();
                if scheme == "RSA_PSS" {
                    let m = md.ok_or_else(refused)?;
                    ctx.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                    ctx.set_signature_md(Md::from_nid(m.type_()).unwrap())
                        .unwrap();
                    ctx.set_rsa_mgf1_md(Md::from_nid(m.type_()).unwrap())
                        .unwrap();
                    ctx.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                        .unwrap();
                    let d = digest(m);
                    let mut sig = vec![];
                    ctx.sign_to_vec(&d, &mut sig).map_err(|_| refused())?;
                    return Ok(sig);
                }
                ctx.set_rsa_padding(Padding::PKCS1).unwrap();
                let d = match md {
                    Some(m) => {
                        ctx.set_signature_md(Md::from_nid(m.type_()).unwrap())
                            .unwrap();
                        digest(m)
                    }
                    None => payload.to_vec(),
                };
                let mut sig = vec![];
                ctx.sign_to_vec(&d, &mut sig).map_err(|_| refused())?;
                Ok(sig)
            }
            _ => Err(refused()),
        }
    }
}

impl FakeTsb {
    /// A post-quantum public key as the TSB sends it: a SubjectPublicKeyInfo with the NIST OID
    /// and no parameters (or the raw key, with `raw_pqc_public_keys`).
    fn pqc_public_key(&self, oid: &str, raw: &[u8]) -> Vec<u8> {
        if self
            .raw_pqc_public_keys
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return raw.to_vec();
        }
        use der::Encode;
        spki::SubjectPublicKeyInfoOwned {
            algorithm: spki::AlgorithmIdentifierOwned {
                oid: der::asn1::ObjectIdentifier::new_unwrap(oid),
                parameters: None,
            },
            subject_public_key: der::asn1::BitString::from_bytes(raw).unwrap(),
        }
        .to_der()
        .unwrap()
    }
}

impl Backend for FakeTsb {
    fn list_keys(&self) -> Result<Vec<String>, TsbError> {
        self.record("list".into());
        Ok(self.keys.lock().keys().cloned().collect())
    }

    fn key_attributes(
        &self,
        label: &str,
        password: Option<&Secret>,
    ) -> Result<KeyAttributes, TsbError> {
        self.record(format!("attributes {label}"));
        self.attribute_threads
            .lock()
            .push(std::thread::current().id());
        if self.attributes_panic.lock().as_deref() == Some(label) {
            panic!("fake: attribute request for '{label}' panics");
        }
        if let Some((status, code)) = *self.attributes_error.lock() {
            return Err(tsb_error(status, code));
        }
        if let Some((status, code)) = self.label_errors.lock().get(label).copied() {
            return Err(TsbError::new(
                "fake",
                TsbErrorKind::Http {
                    status,
                    code,
                    reason: None,
                    message: None,
                },
            ));
        }
        self.check_password(label, password)?;
        let keys = self.keys.lock();
        let key = keys.get(label).ok_or_else(|| tsb_error(404, 650))?;
        let (algorithm, curve, spki) = match &key.signer {
            Signer::P256(k) => (
                "EC",
                Some("1.2.840.10045.3.1.7"),
                k.verifying_key()
                    .to_public_key_der()
                    .expect("SPKI")
                    .to_vec(),
            ),
            Signer::OpenSsl(k) if k.id() == Id::RSA => {
                ("RSA", None, k.public_key_to_der().unwrap())
            }
            Signer::OpenSsl(k) => ("ED", None, k.public_key_to_der().unwrap()),
            Signer::MlDsa65(sk) => (
                "ML-DSA-65",
                None,
                self.pqc_public_key(
                    "2.16.840.1.101.3.4.3.18",
                    &ml_dsa::Keypair::verifying_key(sk.as_ref()).encode(),
                ),
            ),
            Signer::Slh128f(sk) => (
                "SLH-DSA-SHA2-128f",
                None,
                self.pqc_public_key(
                    "2.16.840.1.101.3.4.3.21",
                    &AsRef::<slh_dsa::VerifyingKey<_>>::as_ref(sk.as_ref()).to_vec(),
                ),
            ),
            Signer::Lms(_, pk) => (
                "HSS-LMS",
                None,
                self.pqc_public_key("1.2.840.113549.1.9.16.3.17", pk),
            ),
        };
        let policy = if key.needs_approval {
            json!({"ruleUse": {"tokens": [{"name": "t", "timelock": 0, "timeout": 0,
                "groups": [{"name": "g", "quorum": 1,
                    "approvals": [{"type": "public_key", "name": "alice", "value": "AA=="}]}]}]},
                "keyStatus": {"blocked": key.blocked}})
        } else {
            json!({"ruleUse": null, "keyStatus": {"blocked": key.blocked}})
        };
        let usage = self
            .key_usage
            .lock()
            .get(label)
            .copied()
            .unwrap_or_default();
        let mut body = json!({"json": {
            "label": label,
            "id": self.key_ids.lock().get(label),
            "algorithm": algorithm,
            "curveOid": curve,
            "publicKey": base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &spki
            ),
            "attributes": {"sign": true, "decrypt": usage.decrypt, "unwrap": usage.unwrap,
                "derive": usage.derive,
                "sensitive": usage.sensitive, "alwaysSensitive": usage.sensitive,
                "extractable": usage.extractable,
                "neverExtractable": true, "modifiable": false, "copyable": false,
                "destroyable": true},
            "policy": policy,
            "remainingSignatures": key.remaining,
        }});
        // The public-key flags a key was created with (a TSB of 1.15.1 or later keeps them).
        for (name, flag) in [
            ("encrypt", usage.encrypt),
            ("verify", usage.verify),
            ("wrap", usage.wrap),
        ] {
            if let Some(flag) = flag {
                body["json"]["attributes"][name] = json!(flag);
            }
        }
        Ok(crate::tsb::models::parse_key_attributes(&body).expect("fake attributes parse"))
    }

    fn certificate(&self, label: &str) -> Result<Option<Vec<u8>>, TsbError> {
        self.record(format!("certificate {label}"));
        Ok(self.certificates.lock().get(label).cloned())
    }

    /// Stores a certificate for an existing key; anything but a DER SEQUENCE is a 400.
    fn import_certificate(&self, label: &str, der: &[u8]) -> Result<(), TsbError> {
        self.record(format!("import-certificate {label}"));
        let hook = self.import_hook.lock().take();
        if let Some(hook) = hook {
            hook();
        }
        if !self.keys.lock().contains_key(label) {
            return Err(tsb_error(404, 650));
        }
        if let Some((status, code)) = *self.import_error.lock() {
            return Err(tsb_error(status, code));
        }
        if der.first() != Some(&0x30) {
            return Err(tsb_error(400, 600));
        }
        self.certificates.lock().insert(label.into(), der.to_vec());
        Ok(())
    }

    fn delete_certificate(&self, label: &str) -> Result<(), TsbError> {
        self.record(format!("delete-certificate {label}"));
        if let Some((status, code)) = *self.delete_certificate_error.lock() {
            return Err(tsb_error(status, code));
        }
        match self.certificates.lock().remove(label) {
            Some(_) => Ok(()),
            None => Err(tsb_error(404, 650)),
        }
    }

    fn sign_synchronous(
        &self,
        req: &SignRequest,
        check: &crate::tsb::SignatureCheck<'_>,
    ) -> Result<Vec<u8>, TsbError> {
        self.record(format!("sign {}", req.key));
        let hook = self.sign_hook.lock().take();
        if let Some(hook) = hook {
            hook();
        }
        self.check_password(&req.key, req.key_password.as_ref())?;
        if self
            .keys
            .lock()
            .get(&req.key)
            .is_some_and(|k| k.needs_approval)
        {
            return Err(tsb_error(400, 401));
        }
        self.sign_requests
            .lock()
            .push((req.algorithm.clone(), req.context.clone()));
        if let Some((status, code)) = *self.sign_error.lock() {
            return Err(tsb_error(status, code));
        }
        if req.context.is_some()
            && self
                .no_context_field
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(tsb_error(400, 621));
        }
        let ctx = req.context.as_deref().unwrap_or_default();
        let mut sig = match self.pqc_signature(&req.key, &req.algorithm, &req.payload, ctx) {
            Some(sig) => sig?,
            None => self.signature(&req.key, &req.algorithm, &req.payload)?,
        };
        if let Some(tamper) = &*self.tamper.lock() {
            sig = tamper(sig);
        }
        check(&sig, false).map_err(|m| TsbError::new("fake", TsbErrorKind::Refused(m)))
    }

    fn sign_asynchronous(&self, req: &SignRequest) -> Result<String, TsbError> {
        self.record(format!("file {}", req.key));
        self.check_password(&req.key, req.key_password.as_ref())?;
        let mut requests = self.requests.lock();
        let id = format!("req-{}", requests.len() + 1);
        requests.insert(
            id.clone(),
            FakeRequest {
                state: RequestState::Pending,
                key: req.key.clone(),
                algorithm: req.algorithm.clone(),
                payload: req.payload.clone(),
                meta_data: req.meta_data.clone(),
                approvers: (vec![], vec!["alice".into()], vec![]),
            },
        );
        Ok(id)
    }

    fn request_status(&self, id: &str) -> Result<RequestStatus, TsbError> {
        self.record(format!("poll {id}"));
        if let Some((status, code)) = self.poll_errors.lock().pop_front() {
            return Err(tsb_error(status, code));
        }
        if self.poll_hangs.load(std::sync::atomic::Ordering::Relaxed) {
            let hang_until = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.poll_hangs.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < hang_until
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            self.record(format!("polled {id}"));
        }
        let (state, key, algorithm, payload, approvers) = {
            let requests = self.requests.lock();
            let r = requests.get(id).ok_or_else(|| tsb_error(404, 651))?;
            (
                r.state.clone(),
                r.key.clone(),
                r.algorithm.clone(),
                r.payload.clone(),
                r.approvers.clone(),
            )
        };
        let result = match state {
            RequestState::Executed => {
                Some(match self.pqc_signature(&key, &algorithm, &payload, &[]) {
                    Some(sig) => sig?,
                    None => self.signature(&key, &algorithm, &payload)?,
                })
            }
            _ => None,
        };
        let (approved_by, not_yet_approved_by, rejected_by) = approvers;
        Ok(RequestStatus {
            state,
            approved_by,
            not_yet_approved_by,
            rejected_by,
            result,
        })
    }

    fn cancel_request(&self, id: &str) -> Result<(), TsbError> {
        self.record(format!("cancel {id}"));
        let hang_until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.cancel_hangs.load(std::sync::atomic::Ordering::Relaxed)
            && std::time::Instant::now() < hang_until
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Some((status, code)) = *self.cancel_error.lock() {
            return Err(tsb_error(status, code));
        }
        if let Some(r) = self.requests.lock().get_mut(id) {
            r.state = RequestState::Cancelled;
        }
        Ok(())
    }

    fn check_bearer(&self, jwt: &Secret) -> Result<(), TsbError> {
        self.record("check-bearer".into());
        if let Some((status, code)) = *self.login_error.lock() {
            return Err(tsb_error(status, code));
        }
        match self.good_jwt.lock().as_deref() {
            Some(good) if good == jwt.expose() => Ok(()),
            _ => Err(tsb_error(401, 617)),
        }
    }

    fn check_operation_api_key(&self, _key: &Secret) -> Result<(), TsbError> {
        self.record("check-api-key".into());
        if let Some((status, code)) = *self.login_error.lock() {
            return Err(tsb_error(status, code));
        }
        Err(tsb_error(401, 631))
    }

    fn set_login_bearer(&self, jwt: Option<Secret>) {
        *self.login_bearer.lock() = jwt.map(|s| s.expose().to_string());
    }

    fn set_login_operation_key(&self, _key: Option<Secret>) {}

    /// Creates P-256, RSA-2048 and Ed25519 keys; other types are refused (400, 600). A label
    /// in use is 400 with 608 (the TSB catalogue's `res.error.key.already.existing`).
    fn create_key(&self, key: &NewKey<'_>) -> Result<(), TsbError> {
        self.record(format!(
            "create {} {:?} destroyable={} modifiable={}",
            key.label, key.key_type, key.destroyable, key.modifiable
        ));
        self.record(format!(
            "create-usage {} id={:?} {:?}",
            key.label, key.id, key.usage
        ));
        if let Some((status, code)) = *self.create_error.lock() {
            return Err(tsb_error(status, code));
        }
        if self.keys.lock().contains_key(key.label) {
            return Err(tsb_error(400, 608));
        }
        match key.key_type {
            NewKeyType::Ec("1.2.840.10045.3.1.7") => {
                self.add_key(key.label, false);
            }
            NewKeyType::Rsa(2048) => {
                let k = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
                self.add_openssl_key(key.label, &k);
            }
            NewKeyType::Ed25519 => {
                self.add_openssl_key(key.label, &PKey::generate_ed25519().unwrap())
            }
            NewKeyType::PostQuantum("ML-DSA-65") => {
                self.add_ml_dsa(key.label, false);
            }
            NewKeyType::PostQuantum("SLH-DSA-SHA2-128f") => {
                self.add_slh_dsa(key.label);
            }
            NewKeyType::PostQuantum("LMS") => {
                self.add_lms(key.label);
            }
            _ => return Err(tsb_error(400, 600)),
        }
        if let Some(id) = key.id {
            self.key_ids.lock().insert(key.label.into(), id.into());
        }
        self.key_usage.lock().insert(key.label.into(), key.usage);
        Ok(())
    }

    /// Deletes a key; labels starting with `locked` are not destroyable (403, 614).
    fn delete_key(&self, label: &str, password: Option<&Secret>) -> Result<(), TsbError> {
        self.record(format!("delete {label}"));
        // At most 10 s, so a caller that waits for it fails its test instead of hanging it.
        let hang_until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.delete_hangs.load(std::sync::atomic::Ordering::Relaxed)
            && std::time::Instant::now() < hang_until
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Some((status, code)) = *self.delete_error.lock() {
            return Err(tsb_error(status, code));
        }
        if label.starts_with("locked") {
            return Err(tsb_error(403, 614));
        }
        self.check_password(label, password)?;
        match self.keys.lock().remove(label) {
            Some(_) => {
                self.key_usage.lock().remove(label);
                Ok(())
            }
            None => Err(tsb_error(404, 650)),
        }
    }

    fn login_credentials(&self) -> (Option<Secret>, Option<Secret>) {
        (self.login_bearer.lock().clone().map(Secret::new), None)
    }
}
