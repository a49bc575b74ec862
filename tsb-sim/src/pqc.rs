//! Post-quantum keys of the simulated HSM: ML-DSA (FIPS 204, crate `ml-dsa`), SLH-DSA (FIPS 205,
//! crate `slh-dsa`) and LMS as a one-level HSS key (RFC 8554, crate `hbs-lms`). The contract is
//! docs/tsb-api.md, "Post-quantum keys (ML-DSA, SLH-DSA, LMS)": public keys as DER
//! SubjectPublicKeyInfo around the raw key, signatures raw, pure signing of the message with an
//! optional FIPS 204/205 context, hedged; LMS keys count their one-time keys down and refuse to
//! sign when none is left (500 / 701).

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use der::asn1::{BitString, ObjectIdentifier};
use der::Encode;
use parking_lot::Mutex;
use rand::rngs::OsRng;
use rand::RngCore;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use tsb_sim_pqc::{MlDsa, SlhDsa};

use crate::config::{KeyAlgorithm, KeySpec};
use crate::error::{ApiError, SimError};

/// The family of a post-quantum key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    MlDsa,
    SlhDsa,
    Lms,
}

/// The family of `alg`, `None` for classical keys.
pub fn family(alg: KeyAlgorithm) -> Option<Family> {
    use KeyAlgorithm::*;
    match alg {
        MlDsa44 | MlDsa65 | MlDsa87 => Some(Family::MlDsa),
        SlhDsaSha2_128s | SlhDsaSha2_128f | SlhDsaSha2_192s | SlhDsaSha2_192f | SlhDsaSha2_256s
        | SlhDsaSha2_256f | SlhDsaShake128s | SlhDsaShake128f | SlhDsaShake192s
        | SlhDsaShake192f | SlhDsaShake256s | SlhDsaShake256f => Some(Family::SlhDsa),
        Lms => Some(Family::Lms),
        Rsa | Ec | Ed | Aes => None,
    }
}

/// The OID of a post-quantum key type: NIST's for ML-DSA (2.16.840.1.101.3.4.3.17-19) and
/// SLH-DSA (.20-.31), `id-alg-hss-lms-hashsig` (RFC 8708) for LMS.
pub fn oid(alg: KeyAlgorithm) -> Option<&'static str> {
    use KeyAlgorithm::*;
    Some(match alg {
        MlDsa44 => "2.16.840.1.101.3.4.3.17",
        MlDsa65 => "2.16.840.1.101.3.4.3.18",
        MlDsa87 => "2.16.840.1.101.3.4.3.19",
        SlhDsaSha2_128s => "2.16.840.1.101.3.4.3.20",
        SlhDsaSha2_128f => "2.16.840.1.101.3.4.3.21",
        SlhDsaSha2_192s => "2.16.840.1.101.3.4.3.22",
        SlhDsaSha2_192f => "2.16.840.1.101.3.4.3.23",
        SlhDsaSha2_256s => "2.16.840.1.101.3.4.3.24",
        SlhDsaSha2_256f => "2.16.840.1.101.3.4.3.25",
        SlhDsaShake128s => "2.16.840.1.101.3.4.3.26",
        SlhDsaShake128f => "2.16.840.1.101.3.4.3.27",
        SlhDsaShake192s => "2.16.840.1.101.3.4.3.28",
        SlhDsaShake192f => "2.16.840.1.101.3.4.3.29",
        SlhDsaShake256s => "2.16.840.1.101.3.4.3.30",
        SlhDsaShake256f => "2.16.840.1.101.3.4.3.31",
        Lms => "1.2.840.113549.1.9.16.3.17",
        Rsa | Ec | Ed | Aes => return None,
    })
}

/// The post-quantum key type of an `algorithmOid`.
pub fn algorithm_of_oid(oid_text: &str) -> Option<KeyAlgorithm> {
    KeyAlgorithm::POST_QUANTUM
        .into_iter()
        .find(|a| oid(*a) == Some(oid_text))
}

/// `json.algorithm` of the attributes answer: the creation name, except `HSS-LMS` for LMS keys
/// (as Securosys' Go client's tests and Vault plugin read it).
pub fn attributes_name(alg: KeyAlgorithm) -> &'static str {
    match alg {
        KeyAlgorithm::Lms => "HSS-LMS",
        other => other.as_str(),
    }
}

/// The `tsb-sim-pqc` parameter set of an ML-DSA key type.
fn ml_set(alg: KeyAlgorithm) -> Option<MlDsa> {
    match alg {
        KeyAlgorithm::MlDsa44 => Some(MlDsa::P44),
        KeyAlgorithm::MlDsa65 => Some(MlDsa::P65),
        KeyAlgorithm::MlDsa87 => Some(MlDsa::P87),
        _ => None,
    }
}

/// The `tsb-sim-pqc` parameter set of an SLH-DSA key type.
fn slh_set(alg: KeyAlgorithm) -> Option<SlhDsa> {
    use KeyAlgorithm::*;
    Some(match alg {
        SlhDsaSha2_128s => SlhDsa::Sha2_128s,
        SlhDsaSha2_128f => SlhDsa::Sha2_128f,
        SlhDsaSha2_192s => SlhDsa::Sha2_192s,
        SlhDsaSha2_192f => SlhDsa::Sha2_192f,
        SlhDsaSha2_256s => SlhDsa::Sha2_256s,
        SlhDsaSha2_256f => SlhDsa::Sha2_256f,
        SlhDsaShake128s => SlhDsa::Shake128s,
        SlhDsaShake128f => SlhDsa::Shake128f,
        SlhDsaShake192s => SlhDsa::Shake192s,
        SlhDsaShake192f => SlhDsa::Shake192f,
        SlhDsaShake256s => SlhDsa::Shake256s,
        SlhDsaShake256f => SlhDsa::Shake256f,
        _ => return None,
    })
}

fn not_a(alg: KeyAlgorithm, family: &str) -> String {
    format!("{} is not an {family} key", alg.as_str())
}

/// The private half of an LMS key, with its one-time key counter.
pub struct LmsKey {
    /// The one-time keys used (u64, big-endian), then `hbs-lms`' private key. The simulator
    /// keeps its own counter: `hbs-lms` wipes its key (counter included) after the last leaf.
    secret: Mutex<Vec<u8>>,
    /// One-time keys of the tree (2^height).
    total: u64,
    /// Where the private key (with its counter) is written after every signature, if anywhere.
    state_path: Mutex<Option<PathBuf>>,
}

impl LmsKey {
    fn used(secret: &[u8]) -> u64 {
        secret
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(u64::MAX)
    }

    /// One-time keys left.
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(Self::used(&self.secret.lock()))
    }
}

/// Private key material of a post-quantum key. `Debug` never shows secrets.
pub enum PqcKey {
    MlDsa {
        alg: KeyAlgorithm,
        /// The FIPS 204 seed ξ.
        seed: [u8; 32],
        public: Vec<u8>,
    },
    SlhDsa {
        alg: KeyAlgorithm,
        /// SK.seed ‖ SK.prf ‖ PK.seed ‖ PK.root.
        secret: Vec<u8>,
        public: Vec<u8>,
    },
    Lms {
        key: LmsKey,
        public: Vec<u8>,
    },
}

impl std::fmt::Debug for PqcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PqcKey({})", self.algorithm().as_str())
    }
}

/// The first line of the simulator's own cache format of post-quantum private keys (PKCS#8 forms
/// of these keys are not settled; the cache is the simulator's business only).
const CACHE_HEADER: &str = "tsb-sim post-quantum private key";

/// Runs `f` on a thread with a large stack: the lattice and hash-tree code keeps big arrays on
/// the stack, more than a test thread or a runtime worker has (2 MiB).
fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("tsb-sim-pqc".into())
            .stack_size(64 << 20)
            .spawn_scoped(scope, f)
            .expect("a thread for post-quantum key operations")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn key_err(e: impl std::fmt::Display) -> SimError {
    SimError::Key(e.to_string())
}

impl PqcKey {
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            PqcKey::MlDsa { alg, .. } | PqcKey::SlhDsa { alg, .. } => *alg,
            PqcKey::Lms { .. } => KeyAlgorithm::Lms,
        }
    }

    /// A fresh key of `spec`'s type.
    pub fn generate(spec: &KeySpec) -> Result<PqcKey, SimError> {
        on_big_stack(|| Self::generate_here(spec))
    }

    fn generate_here(spec: &KeySpec) -> Result<PqcKey, SimError> {
        match family(spec.algorithm) {
            Some(Family::MlDsa) => {
                let mut seed = [0u8; 32];
                OsRng.fill_bytes(&mut seed);
                Self::ml_dsa_from_seed_here(spec.algorithm, seed)
            }
            Some(Family::SlhDsa) => {
                let alg = spec.algorithm;
                let set = slh_set(alg).ok_or_else(|| SimError::Key(not_a(alg, "SLH-DSA")))?;
                let n = set.n();
                let mut seeds = vec![0u8; 3 * n];
                OsRng.fill_bytes(&mut seeds);
                let (secret, public) = tsb_sim_pqc::slh_dsa_keygen(
                    set,
                    &seeds[..n],
                    &seeds[n..2 * n],
                    &seeds[2 * n..],
                );
                Ok(PqcKey::SlhDsa {
                    alg,
                    secret,
                    public,
                })
            }
            Some(Family::Lms) => {
                let mut seed = [0u8; 32];
                OsRng.fill_bytes(&mut seed);
                let (sk, public) = tsb_sim_pqc::lms_keygen(
                    spec.effective_lms_height(),
                    spec.effective_lmots_w(),
                    &seed,
                )
                .map_err(SimError::Key)?;
                Ok(PqcKey::Lms {
                    key: LmsKey {
                        secret: Mutex::new([&[0u8; 8][..], &sk].concat()),
                        total: 1u64 << spec.effective_lms_height(),
                        state_path: Mutex::new(None),
                    },
                    public,
                })
            }
            None => Err(SimError::Key(format!(
                "{} is not a post-quantum key type",
                spec.algorithm.as_str()
            ))),
        }
    }

    fn ml_dsa_from_seed(alg: KeyAlgorithm, seed: [u8; 32]) -> Result<PqcKey, SimError> {
        on_big_stack(|| Self::ml_dsa_from_seed_here(alg, seed))
    }

    fn ml_dsa_from_seed_here(alg: KeyAlgorithm, seed: [u8; 32]) -> Result<PqcKey, SimError> {
        let set = ml_set(alg).ok_or_else(|| SimError::Key(not_a(alg, "ML-DSA")))?;
        let public = tsb_sim_pqc::ml_dsa_public(set, &seed);
        Ok(PqcKey::MlDsa { alg, seed, public })
    }

    /// The raw public key (ML-DSA ρ‖t1, SLH-DSA PK.seed‖PK.root, LMS the HSS public key).
    pub fn raw_public(&self) -> &[u8] {
        match self {
            PqcKey::MlDsa { public, .. }
            | PqcKey::SlhDsa { public, .. }
            | PqcKey::Lms { public, .. } => public,
        }
    }

    /// DER SubjectPublicKeyInfo: the OID without parameters, the raw key in the BIT STRING.
    pub fn public_key_der(&self) -> Result<Vec<u8>, SimError> {
        let oid_text = oid(self.algorithm()).ok_or_else(|| key_err("no OID"))?;
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new(oid_text).map_err(key_err)?,
                parameters: None,
            },
            subject_public_key: BitString::from_bytes(self.raw_public()).map_err(key_err)?,
        };
        spki.to_der().map_err(key_err)
    }

    /// LMS one-time keys left (`None` for other keys).
    pub fn remaining_signatures(&self) -> Option<u64> {
        match self {
            PqcKey::Lms { key, .. } => Some(key.remaining()),
            _ => None,
        }
    }

    /// Remembers where an LMS key's state is kept (written after every signature).
    pub fn set_state_path(&self, path: PathBuf) {
        if let PqcKey::Lms { key, .. } = self {
            *key.state_path.lock() = Some(path);
        }
    }

    /// The simulator's cache text of the private key (and the LMS counter).
    pub fn to_cache_text(&self) -> String {
        let secret = match self {
            PqcKey::MlDsa { seed, .. } => seed.to_vec(),
            PqcKey::SlhDsa { secret, .. } => secret.clone(),
            PqcKey::Lms { key, .. } => key.secret.lock().clone(),
        };
        cache_text(self.algorithm(), &secret, self.raw_public())
    }

    /// Reads [`PqcKey::to_cache_text`] back; the key type must be `spec`'s.
    pub fn from_cache_text(spec: &KeySpec, text: &str) -> Result<PqcKey, SimError> {
        let mut lines = text.lines();
        if lines.next() != Some(CACHE_HEADER) {
            return Err(key_err("not a tsb-sim post-quantum key file"));
        }
        let alg = lines.next().and_then(KeyAlgorithm::from_tsb_name);
        if alg != Some(spec.algorithm) {
            return Err(key_err(format!(
                "key file holds a {:?} key, expected {}",
                alg,
                spec.algorithm.as_str()
            )));
        }
        let mut next_b64 = || {
            lines
                .next()
                .and_then(|l| B64.decode(l.trim()).ok())
                .ok_or_else(|| key_err("damaged key file"))
        };
        let secret = next_b64()?;
        let public = next_b64()?;
        let key = match family(spec.algorithm) {
            Some(Family::MlDsa) => {
                let seed = <[u8; 32]>::try_from(secret.as_slice()).map_err(key_err)?;
                Self::ml_dsa_from_seed(spec.algorithm, seed)?
            }
            Some(Family::SlhDsa) => PqcKey::SlhDsa {
                alg: spec.algorithm,
                secret,
                public: public.clone(),
            },
            Some(Family::Lms) => {
                let total = 1u64 << spec.effective_lms_height();
                if public.len() != LMS_PUBLIC_LEN || LmsKey::used(&secret) == u64::MAX {
                    return Err(key_err("damaged LMS key file"));
                }
                // The parameters in the file must be the configured ones.
                let lms_type = u32::from_be_bytes([public[4], public[5], public[6], public[7]]);
                let lmots_type = u32::from_be_bytes([public[8], public[9], public[10], public[11]]);
                if lms_type != lms_type_code(spec.effective_lms_height())
                    || lmots_type != lmots_type_code(spec.effective_lmots_w())
                {
                    return Err(key_err("LMS key file has other parameters"));
                }
                PqcKey::Lms {
                    key: LmsKey {
                        secret: Mutex::new(secret),
                        total,
                        state_path: Mutex::new(None),
                    },
                    public: public.clone(),
                }
            }
            None => return Err(key_err("not a post-quantum key type")),
        };
        if key.raw_public() != public.as_slice() {
            return Err(key_err(
                "key file: public key does not match the private key",
            ));
        }
        Ok(key)
    }

    /// Signs `message` (pure; `context` as in FIPS 204/205, empty for LMS). ML-DSA signs hedged,
    /// SLH-DSA with a random `opt_rand`. An exhausted LMS key: 701.
    pub fn sign(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>, ApiError> {
        on_big_stack(|| self.sign_here(message, context))
    }

    fn sign_here(&self, message: &[u8], context: &[u8]) -> Result<Vec<u8>, ApiError> {
        if context.len() > 255 {
            return Err(ApiError::validation(
                "context must be at most 255 bytes (FIPS 204/205)",
            ));
        }
        match self {
            PqcKey::MlDsa { alg, seed, .. } => {
                let set = ml_set(*alg).ok_or_else(|| ApiError::hsm(not_a(*alg, "ML-DSA")))?;
                let mut rnd = [0u8; 32];
                OsRng.fill_bytes(&mut rnd);
                // FIPS 204 Algorithm 2: M' = 0 ‖ |ctx| ‖ ctx ‖ M.
                let prefix = [0u8, context.len() as u8];
                Ok(tsb_sim_pqc::ml_dsa_sign(
                    set,
                    seed,
                    &[&prefix, context, message],
                    &rnd,
                ))
            }
            PqcKey::SlhDsa { alg, secret, .. } => {
                let set = slh_set(*alg).ok_or_else(|| ApiError::hsm(not_a(*alg, "SLH-DSA")))?;
                let mut opt_rand = vec![0u8; set.n()];
                OsRng.fill_bytes(&mut opt_rand);
                tsb_sim_pqc::slh_dsa_sign(set, secret, message, context, &opt_rand)
                    .map_err(ApiError::hsm)
            }
            PqcKey::Lms { key, .. } => {
                if !context.is_empty() {
                    return Err(ApiError::validation("LMS signatures take no context"));
                }
                let mut secret = key.secret.lock();
                if LmsKey::used(&secret) >= key.total {
                    return Err(ApiError::hsm(
                        "LMS key exhausted: no one-time signatures left",
                    ));
                }
                let used = LmsKey::used(&secret);
                let (sig, updated) =
                    tsb_sim_pqc::lms_sign(message, &secret[8..]).map_err(ApiError::hsm)?;
                *secret = [&(used + 1).to_be_bytes()[..], &updated].concat();
                // The new state is on disk before the signature leaves the HSM: a restarted
                // simulator never uses a one-time key twice.
                if let Some(path) = key.state_path.lock().as_ref() {
                    let text = cache_text(KeyAlgorithm::Lms, &secret, self.raw_public());
                    crate::util::write_private_file(path, &text).map_err(|e| {
                        ApiError::hsm(format!("cannot store the LMS key state: {e}"))
                    })?;
                }
                Ok(sig)
            }
        }
    }
}

/// RFC 8554 type codes of the LMS tree heights the simulator makes (SHA-256, m = 32).
fn lms_type_code(height: u8) -> u32 {
    match height {
        5 => 5,
        10 => 6,
        15 => 7,
        20 => 8,
        _ => 9,
    }
}

/// RFC 8554 type codes of LM-OTS (SHA-256, n = 32).
fn lmots_type_code(w: u8) -> u32 {
    match w {
        1 => 1,
        2 => 2,
        4 => 3,
        _ => 4,
    }
}

/// Length of a one-level HSS public key with SHA-256/M32: L, two types, I, T[1].
const LMS_PUBLIC_LEN: usize = 4 + 4 + 4 + 16 + 32;

/// The cache text: a header line, the key type, base64 of the private part, base64 of the
/// raw public key.
fn cache_text(alg: KeyAlgorithm, secret: &[u8], public: &[u8]) -> String {
    format!(
        "{CACHE_HEADER}\n{}\n{}\n{}\n",
        alg.as_str(),
        B64.encode(secret),
        B64.encode(public)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_post_quantum_type_has_a_distinct_oid_and_round_trips_its_name() {
        let mut oids: Vec<&str> = KeyAlgorithm::POST_QUANTUM
            .iter()
            .map(|a| oid(*a).unwrap())
            .collect();
        oids.sort();
        oids.dedup();
        assert_eq!(oids.len(), 16);
        for alg in KeyAlgorithm::POST_QUANTUM {
            assert_eq!(KeyAlgorithm::from_tsb_name(alg.as_str()), Some(alg));
            assert_eq!(algorithm_of_oid(oid(alg).unwrap()), Some(alg));
        }
        assert_eq!(attributes_name(KeyAlgorithm::Lms), "HSS-LMS");
    }

    #[test]
    fn lms_key_counts_down_and_refuses_when_exhausted() {
        let spec = KeySpec::lms("t", 5, 8);
        let key = PqcKey::generate(&spec).unwrap();
        assert_eq!(key.remaining_signatures(), Some(32));
        assert_eq!(key.raw_public().len(), 60);
        assert_eq!(
            &key.raw_public()[..12],
            &[0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 4]
        );
        let mut seen = Vec::new();
        for i in 0..32u32 {
            let sig = key.sign(b"m", b"").unwrap();
            assert_eq!(sig.len(), 1296);
            // Nspk = 0, then q counts up: no one-time key is used twice.
            assert_eq!(&sig[..4], &[0, 0, 0, 0]);
            assert_eq!(&sig[4..8], &i.to_be_bytes());
            seen.push(sig);
            assert_eq!(key.remaining_signatures(), Some(31 - u64::from(i)));
        }
        let err = key.sign(b"m", b"").unwrap_err();
        assert_eq!(err.code, 701);
        assert!(err.message.contains("exhausted"), "{}", err.message);
    }

    #[test]
    fn cache_text_round_trips_with_the_lms_counter() {
        let spec = KeySpec::lms("t", 5, 8);
        let key = PqcKey::generate(&spec).unwrap();
        key.sign(b"a", b"").unwrap();
        key.sign(b"b", b"").unwrap();
        let again = PqcKey::from_cache_text(&spec, &key.to_cache_text()).unwrap();
        assert_eq!(again.remaining_signatures(), Some(30));
        assert_eq!(again.raw_public(), key.raw_public());
        let other = KeySpec::lms("t", 5, 4);
        assert!(PqcKey::from_cache_text(&other, &key.to_cache_text()).is_err());
        let ml = KeySpec::post_quantum("m", KeyAlgorithm::MlDsa44);
        let k = PqcKey::generate(&ml).unwrap();
        let back = PqcKey::from_cache_text(&ml, &k.to_cache_text()).unwrap();
        assert_eq!(back.raw_public(), k.raw_public());
    }

    #[test]
    fn lms_state_is_on_disk_before_the_signature_is_answered() {
        let spec = KeySpec::lms("t", 5, 8);
        let key = PqcKey::generate(&spec).unwrap();
        let dir = std::env::temp_dir().join(format!("tsb-sim-lms-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lms.key");
        key.set_state_path(path.clone());
        for left in [31, 30, 29] {
            key.sign(b"m", b"").unwrap();
            let stored = std::fs::read_to_string(&path).unwrap();
            let again = PqcKey::from_cache_text(&spec, &stored).unwrap();
            assert_eq!(again.remaining_signatures(), Some(left));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn context_longer_than_255_bytes_is_refused() {
        let key = PqcKey::generate(&KeySpec::post_quantum("m", KeyAlgorithm::MlDsa44)).unwrap();
        assert_eq!(key.sign(b"m", &[0u8; 256]).unwrap_err().code, 600);
        assert_eq!(key.sign(b"m", &[0u8; 255]).unwrap().len(), 2420);
    }
}
