//! Post-quantum key generation and signing for the TSB simulator, as functions of bytes: ML-DSA
//! (FIPS 204, crate `ml-dsa`), SLH-DSA (FIPS 205, crate `slh-dsa`) and LMS as a one-level HSS
//! key (RFC 8554, crate `hbs-lms`). The simulator chooses keys, randomness and formats
//! (tsb-sim/src/pqc.rs); this crate only instantiates the crates' generic code for each
//! parameter set, so that it can be compiled optimised on its own.
//!
//! The lattice and hash-tree code keeps big arrays on the stack: callers run these functions on
//! a thread with a large stack.

/// An ML-DSA parameter set (FIPS 204 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlDsa {
    P44,
    P65,
    P87,
}

/// An SLH-DSA parameter set (FIPS 205 §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlhDsa {
    Sha2_128s,
    Sha2_128f,
    Sha2_192s,
    Sha2_192f,
    Sha2_256s,
    Sha2_256f,
    Shake128s,
    Shake128f,
    Shake192s,
    Shake192f,
    Shake256s,
    Shake256f,
}

impl SlhDsa {
    /// n of the parameter set (FIPS 205 Table 2): bytes of each seed, half the public key.
    pub fn n(self) -> usize {
        use SlhDsa::*;
        match self {
            Sha2_128s | Sha2_128f | Shake128s | Shake128f => 16,
            Sha2_192s | Sha2_192f | Shake192s | Shake192f => 24,
            Sha2_256s | Sha2_256f | Shake256s | Shake256f => 32,
        }
    }
}

/// Runs `$body` with `$P` bound to the `ml-dsa` parameter type of `$set`.
macro_rules! with_ml {
    ($set:expr, $P:ident => $body:expr) => {
        match $set {
            MlDsa::P44 => {
                type $P = ml_dsa::MlDsa44;
                $body
            }
            MlDsa::P65 => {
                type $P = ml_dsa::MlDsa65;
                $body
            }
            MlDsa::P87 => {
                type $P = ml_dsa::MlDsa87;
                $body
            }
        }
    };
}

/// Runs `$body` with `$P` bound to the `slh-dsa` parameter type of `$set`.
macro_rules! with_slh {
    ($set:expr, $P:ident => $body:expr) => {
        match $set {
            SlhDsa::Sha2_128s => {
                type $P = slh_dsa::Sha2_128s;
                $body
            }
            SlhDsa::Sha2_128f => {
                type $P = slh_dsa::Sha2_128f;
                $body
            }
            SlhDsa::Sha2_192s => {
                type $P = slh_dsa::Sha2_192s;
                $body
            }
            SlhDsa::Sha2_192f => {
                type $P = slh_dsa::Sha2_192f;
                $body
            }
            SlhDsa::Sha2_256s => {
                type $P = slh_dsa::Sha2_256s;
                $body
            }
            SlhDsa::Sha2_256f => {
                type $P = slh_dsa::Sha2_256f;
                $body
            }
            SlhDsa::Shake128s => {
                type $P = slh_dsa::Shake128s;
                $body
            }
            SlhDsa::Shake128f => {
                type $P = slh_dsa::Shake128f;
                $body
            }
            SlhDsa::Shake192s => {
                type $P = slh_dsa::Shake192s;
                $body
            }
            SlhDsa::Shake192f => {
                type $P = slh_dsa::Shake192f;
                $body
            }
            SlhDsa::Shake256s => {
                type $P = slh_dsa::Shake256s;
                $body
            }
            SlhDsa::Shake256f => {
                type $P = slh_dsa::Shake256f;
                $body
            }
        }
    };
}

/// The encoded public key (ρ‖t1) of the ML-DSA key with seed ξ.
pub fn ml_dsa_public(set: MlDsa, seed: &[u8; 32]) -> Vec<u8> {
    with_ml!(set, P => {
        use ml_dsa::Keypair;
        let sk = ml_dsa::SigningKey::<P>::from_seed(&(*seed).into());
        sk.verifying_key().encode().to_vec()
    })
}

/// ML-DSA.Sign_internal (FIPS 204 Algorithm 7) of the message `parts` (concatenated) with the
/// key of seed ξ and the randomness `rnd` (hedged signing when `rnd` is random).
pub fn ml_dsa_sign(set: MlDsa, seed: &[u8; 32], parts: &[&[u8]], rnd: &[u8; 32]) -> Vec<u8> {
    with_ml!(set, P => {
        let sk = ml_dsa::SigningKey::<P>::from_seed(&(*seed).into());
        sk.expanded_key()
            .sign_internal(parts, &(*rnd).into())
            .encode()
            .to_vec()
    })
}

/// slh_keygen_internal (FIPS 205 Algorithm 18): (SK.seed‖SK.prf‖PK.seed‖PK.root, PK.seed‖PK.root).
pub fn slh_dsa_keygen(
    set: SlhDsa,
    sk_seed: &[u8],
    sk_prf: &[u8],
    pk_seed: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    with_slh!(set, P => {
        let sk = slh_dsa::SigningKey::<P>::slh_keygen_internal(sk_seed, sk_prf, pk_seed);
        let vk: &slh_dsa::VerifyingKey<P> = sk.as_ref();
        (sk.to_vec(), vk.to_vec())
    })
}

/// slh_sign (FIPS 205 Algorithm 22, pure) of `message` with `context`, with `opt_rand` as the
/// randomiser. A secret key of the wrong length or a context over 255 bytes is an error.
pub fn slh_dsa_sign(
    set: SlhDsa,
    secret: &[u8],
    message: &[u8],
    context: &[u8],
    opt_rand: &[u8],
) -> Result<Vec<u8>, String> {
    with_slh!(set, P => {
        let sk = slh_dsa::SigningKey::<P>::try_from(secret)
            .map_err(|e| format!("damaged SLH-DSA key: {e}"))?;
        let sig = sk
            .try_sign_with_context(message, context, Some(opt_rand))
            .map_err(|e| format!("SLH-DSA signing failed: {e}"))?;
        Ok(slh_dsa::signature::SignatureEncoding::to_vec(&sig))
    })
}

/// A one-level HSS key with LMS tree `height` (5, 10 or 15) and LM-OTS `w` (1, 2, 4 or 8), from
/// `seed`: (private key, HSS public key).
pub fn lms_keygen(height: u8, w: u8, seed: &[u8; 32]) -> Result<(Vec<u8>, Vec<u8>), String> {
    use hbs_lms::{HssParameter, LmotsAlgorithm, LmsAlgorithm, Sha256_256};
    let lms = match height {
        5 => LmsAlgorithm::LmsH5,
        10 => LmsAlgorithm::LmsH10,
        15 => LmsAlgorithm::LmsH15,
        h => return Err(format!("unsupported LMS height {h}")),
    };
    let lmots = match w {
        1 => LmotsAlgorithm::LmotsW1,
        2 => LmotsAlgorithm::LmotsW2,
        4 => LmotsAlgorithm::LmotsW4,
        8 => LmotsAlgorithm::LmotsW8,
        w => return Err(format!("unsupported LM-OTS w {w}")),
    };
    let mut hss_seed = hbs_lms::Seed::<Sha256_256>::default();
    hss_seed.as_mut_slice().copy_from_slice(seed);
    let (sk, vk) = hbs_lms::keygen::<Sha256_256>(&[HssParameter::new(lmots, lms)], &hss_seed, None)
        .map_err(|_| "LMS key generation failed".to_string())?;
    Ok((sk.as_slice().to_vec(), vk.as_slice().to_vec()))
}

/// Signs `message` with the LMS private key `current`: (signature, the advanced private key).
pub fn lms_sign(message: &[u8], current: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut updated: Option<Vec<u8>> = None;
    let sig = hbs_lms::sign::<hbs_lms::Sha256_256>(
        message,
        current,
        &mut |new_key: &[u8]| {
            updated = Some(new_key.to_vec());
            Ok(())
        },
        None,
    )
    .map_err(|_| "LMS signing failed".to_string())?;
    let updated = updated.ok_or_else(|| "LMS state not advanced".to_string())?;
    Ok((sig.as_ref().to_vec(), updated))
}
