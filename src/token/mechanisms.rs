//! Mechanisms (PKCS#11 v2.40 Current Mechanisms §2.1 RSA, §2.3 ECDSA; v3.0 §2.3.14 EdDSA; v3.2
//! "ML-DSA", "SLH-DSA" and "HSS" mechanism sections, values from the OASIS 3.2 pkcs11t.h) and their mapping to TSB `signatureAlgorithm` strings
//! (TSB contract, "signatureAlgorithm strings" and "Post-quantum keys").

use cryptoki_sys::*;

use crate::crypto::{parse_digest_info, HashAlg, PublicKey, Scheme, SignedData};
use crate::error::{Error, Result};

/// The TSB payload limit (64 KiB). Hash-and-sign input above it is hashed locally.
pub const PAYLOAD_LIMIT: usize = 64 * 1024;

/// Mechanisms this token offers, for `C_GetMechanismList`.
pub const SUPPORTED: &[CK_MECHANISM_TYPE] = &[
    CKM_RSA_PKCS,
    CKM_SHA1_RSA_PKCS,
    CKM_SHA224_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS,
    CKM_RSA_PKCS_PSS,
    CKM_SHA224_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
    CKM_ECDSA,
    CKM_ECDSA_SHA1,
    CKM_ECDSA_SHA224,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA384,
    CKM_ECDSA_SHA512,
    CKM_EDDSA,
    CKM_ML_DSA,
    CKM_SLH_DSA,
    CKM_HSS,
];

/// A mechanism as the application passed it, with its parameters decoded by the FFI layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mechanism {
    pub mechanism: CK_MECHANISM_TYPE,
    pub params: MechParams,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MechParams {
    None,
    /// `CK_RSA_PKCS_PSS_PARAMS`.
    Pss {
        hash_alg: CK_MECHANISM_TYPE,
        mgf: CK_RSA_PKCS_MGF_TYPE,
        salt_len: CK_ULONG,
    },
    /// `CK_EDDSA_PARAMS`.
    EdDsa {
        prehash: bool,
        context: Vec<u8>,
    },
    /// `CK_SIGN_ADDITIONAL_CONTEXT` (PKCS#11 v3.2, `CKM_ML_DSA` and `CKM_SLH_DSA`).
    SignContext {
        hedge: CK_HEDGE_TYPE,
        context: Vec<u8>,
    },
    /// Parameters the mechanism does not take, or of the wrong size.
    Invalid(&'static str),
}

impl Mechanism {
    pub fn new(mechanism: CK_MECHANISM_TYPE) -> Mechanism {
        Mechanism {
            mechanism,
            params: MechParams::None,
        }
    }
}

/// `C_GetMechanismInfo`: key sizes in bits and flags.
pub(crate) fn mechanism_info(mechanism: CK_MECHANISM_TYPE) -> Option<CK_MECHANISM_INFO> {
    if !SUPPORTED.contains(&mechanism) {
        return None;
    }
    let (min, max, extra) = match key_type_of(mechanism) {
        CKK_RSA => (1024, 16384, 0),
        // PKCS#11 v3.2 gives no key size unit for these; the module reports the security
        // strength in bits of its smallest and largest parameter sets (ML-DSA-44..87,
        // SLH-DSA-*-128..256), and for HSS the tree heights (5..25) the module verifies.
        CKK_ML_DSA | CKK_SLH_DSA => (128, 256, 0),
        CKK_HSS => (5, 25, 0),
        CKK_EC => (
            256,
            521,
            CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS | CKF_EC_OID,
        ),
        _ => (256, 256, 0),
    };
    Some(CK_MECHANISM_INFO {
        ulMinKeySize: min,
        ulMaxKeySize: max,
        flags: CKF_HW | CKF_SIGN | CKF_VERIFY | extra,
    })
}

/// The key type a mechanism works with.
pub(crate) fn key_type_of(mechanism: CK_MECHANISM_TYPE) -> CK_KEY_TYPE {
    match mechanism {
        CKM_ECDSA | CKM_ECDSA_SHA1 | CKM_ECDSA_SHA224 | CKM_ECDSA_SHA256 | CKM_ECDSA_SHA384
        | CKM_ECDSA_SHA512 => CKK_EC,
        CKM_EDDSA => CKK_EC_EDWARDS,
        CKM_ML_DSA => CKK_ML_DSA,
        CKM_SLH_DSA => CKK_SLH_DSA,
        CKM_HSS => CKK_HSS,
        _ => CKK_RSA,
    }
}

/// The mechanisms usable with a key of this type (`CKA_ALLOWED_MECHANISMS`).
pub(crate) fn allowed_for(key_type: CK_KEY_TYPE) -> Vec<CK_MECHANISM_TYPE> {
    SUPPORTED
        .iter()
        .copied()
        .filter(|m| key_type_of(*m) == key_type)
        .collect()
}

/// How one signature is computed: what the input is, and which TSB algorithm signs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// `CKM_RSA_PKCS`: a DigestInfo (signed with `NONESHAxxx_WITH_RSA`) or other raw input
    /// within k-11 bytes (`NONE_WITH_RSA`).
    RsaPkcsRaw,
    /// `CKM_SHAxxx_RSA_PKCS`.
    RsaPkcs(HashAlg),
    /// `CKM_RSA_PKCS_PSS`: the input is a digest.
    RsaPssDigest(HashAlg),
    /// `CKM_SHAxxx_RSA_PKCS_PSS`.
    RsaPss(HashAlg),
    /// `CKM_ECDSA`: the input is a digest.
    EcdsaDigest,
    /// `CKM_ECDSA_SHAxxx`.
    Ecdsa(HashAlg),
    /// `CKM_EDDSA` (Ed25519, pure).
    EdDsa,
    /// `CKM_ML_DSA` (pure), with the context of `CK_SIGN_ADDITIONAL_CONTEXT`.
    MlDsa(SignContext),
    /// `CKM_SLH_DSA` (pure), with the context of `CK_SIGN_ADDITIONAL_CONTEXT`.
    SlhDsa(SignContext),
    /// `CKM_HSS`.
    Hss,
}

/// A context string of ML-DSA / SLH-DSA (FIPS 204 §5.2, FIPS 205 §10.2: at most 255 bytes),
/// kept inline so a [`Plan`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignContext {
    len: u8,
    bytes: [u8; 255],
}

impl SignContext {
    pub(crate) const EMPTY: SignContext = SignContext {
        len: 0,
        bytes: [0; 255],
    };

    fn new(context: &[u8]) -> Option<SignContext> {
        let len = u8::try_from(context.len()).ok()?;
        let mut bytes = [0; 255];
        bytes[..context.len()].copy_from_slice(context);
        Some(SignContext { len, bytes })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for SignContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignContext({} bytes)", self.len)
    }
}

/// The data a plan signs, after buffering: the message, or (for hash-and-sign input over
/// 64 KiB) its digest computed locally.
pub enum Input<'a> {
    Message(&'a [u8]),
    Digest(Vec<u8>),
}

/// One TSB sign call: algorithm string and payload, plus what local verification needs.
pub struct Prepared {
    pub algorithm: String,
    pub payload: Vec<u8>,
    pub scheme: Scheme,
    /// True when `payload` is a digest rather than the message.
    pub payload_is_digest: bool,
    /// The ML-DSA / SLH-DSA context (sent as `context`); `None` for the empty context.
    pub context: Option<Vec<u8>>,
}

impl Prepared {
    pub fn signed_data(&self) -> SignedData<'_> {
        if let Some(ctx) = &self.context {
            return SignedData::MessageInContext(&self.payload, ctx);
        }
        if self.payload_is_digest {
            SignedData::Digest(&self.payload)
        } else {
            SignedData::Message(&self.payload)
        }
    }
}

fn hash_of(mechanism: CK_MECHANISM_TYPE) -> Option<HashAlg> {
    Some(match mechanism {
        CKM_SHA_1 | CKM_SHA1_RSA_PKCS | CKM_ECDSA_SHA1 => HashAlg::Sha1,
        CKM_SHA224 | CKM_SHA224_RSA_PKCS | CKM_SHA224_RSA_PKCS_PSS | CKM_ECDSA_SHA224 => {
            HashAlg::Sha224
        }
        CKM_SHA256 | CKM_SHA256_RSA_PKCS | CKM_SHA256_RSA_PKCS_PSS | CKM_ECDSA_SHA256 => {
            HashAlg::Sha256
        }
        CKM_SHA384 | CKM_SHA384_RSA_PKCS | CKM_SHA384_RSA_PKCS_PSS | CKM_ECDSA_SHA384 => {
            HashAlg::Sha384
        }
        CKM_SHA512 | CKM_SHA512_RSA_PKCS | CKM_SHA512_RSA_PKCS_PSS | CKM_ECDSA_SHA512 => {
            HashAlg::Sha512
        }
        _ => return None,
    })
}

fn mgf_of(hash: HashAlg) -> CK_RSA_PKCS_MGF_TYPE {
    match hash {
        HashAlg::Sha1 => CKG_MGF1_SHA1,
        HashAlg::Sha224 => CKG_MGF1_SHA224,
        HashAlg::Sha256 => CKG_MGF1_SHA256,
        HashAlg::Sha384 => CKG_MGF1_SHA384,
        HashAlg::Sha512 => CKG_MGF1_SHA512,
    }
}

/// The TSB `signatureAlgorithm` of ML-DSA keys (pure ML-DSA, FIPS 204; docs/tsb-api.md).
pub(crate) const TSB_ML_DSA: &str = "DILITHIUM";
/// The TSB `signatureAlgorithm` of SLH-DSA keys (pure SLH-DSA, FIPS 205).
pub(crate) const TSB_SLH_DSA: &str = "SPHINCS_PLUS";
/// The TSB `signatureAlgorithm` of LMS/HSS keys (RFC 8554).
pub(crate) const TSB_LMS: &str = "LMS";

/// Checks the optional `CK_SIGN_ADDITIONAL_CONTEXT` of `CKM_ML_DSA` / `CKM_SLH_DSA` (PKCS#11
/// v3.2: no parameter, or a hedging choice and a context of 0..=255 bytes). The TSB signs pure
/// ML-DSA/SLH-DSA with the context it is sent (`context`, docs/tsb-api.md) and chooses the
/// randomness itself (hedged), so `CKH_HEDGE_PREFERRED` and `CKH_HEDGE_REQUIRED` are honoured and
/// `CKH_DETERMINISTIC_REQUIRED` is refused with `CKR_MECHANISM_PARAM_INVALID`: a choice the TSB
/// cannot honour is never dropped silently. (A TSB that refuses the `context` field gives
/// `CKR_MECHANISM_PARAM_INVALID` at `C_Sign`, see signing.rs.)
fn check_sign_context(params: &MechParams) -> Result<SignContext> {
    match params {
        MechParams::None => Ok(SignContext::EMPTY),
        MechParams::SignContext { hedge, context } => {
            match *hedge {
                CKH_HEDGE_PREFERRED | CKH_HEDGE_REQUIRED => {}
                CKH_DETERMINISTIC_REQUIRED => {
                    return Err(param_invalid(
                        "the TSB signs hedged: CKH_DETERMINISTIC_REQUIRED cannot be honoured",
                    ))
                }
                _ => return Err(param_invalid("unknown hedgeVariant")),
            }
            SignContext::new(context)
                .ok_or_else(|| param_invalid("the signature context is longer than 255 bytes"))
        }
        _ => Err(param_invalid(
            "this mechanism takes CK_SIGN_ADDITIONAL_CONTEXT or no parameter",
        )),
    }
}

fn param_invalid(why: impl Into<String>) -> Error {
    Error::new(CKR_MECHANISM_PARAM_INVALID, why.into())
}

/// Checks `CK_RSA_PKCS_PSS_PARAMS`: MGF1 with the signature's hash and a salt as long as the
/// hash are what the TSB produces (TSB contract, "RSA-PSS"); anything else is refused.
fn check_pss(params: &MechParams, expected_hash: Option<HashAlg>) -> Result<HashAlg> {
    let MechParams::Pss {
        hash_alg,
        mgf,
        salt_len,
    } = params
    else {
        return Err(param_invalid("RSA-PSS needs CK_RSA_PKCS_PSS_PARAMS"));
    };
    let hash = hash_of(*hash_alg)
        .filter(|h| *h != HashAlg::Sha1)
        .ok_or_else(|| param_invalid("PSS hashAlg must be CKM_SHA224/256/384/512"))?;
    if let Some(e) = expected_hash {
        if e != hash {
            return Err(param_invalid(
                "PSS hashAlg must match the mechanism's own hash",
            ));
        }
    }
    if *mgf != mgf_of(hash) {
        return Err(param_invalid("PSS mgf must be MGF1 with the same hash"));
    }
    if *salt_len as usize != hash.output_len() {
        return Err(param_invalid("PSS sLen must equal the hash length"));
    }
    Ok(hash)
}

impl Plan {
    /// Validates a mechanism and its parameters against a key type (`C_SignInit`/`C_VerifyInit`).
    pub fn new(mech: &Mechanism, key_type: CK_KEY_TYPE) -> Result<Plan> {
        if !SUPPORTED.contains(&mech.mechanism) {
            return Err(Error::new(
                CKR_MECHANISM_INVALID,
                format!("mechanism 0x{:x} is not supported", mech.mechanism),
            ));
        }
        if key_type_of(mech.mechanism) != key_type {
            return Err(Error::new(
                CKR_KEY_TYPE_INCONSISTENT,
                "the mechanism does not fit the key type",
            ));
        }
        if let MechParams::Invalid(why) = &mech.params {
            return Err(param_invalid(*why));
        }
        let no_params = || -> Result<()> {
            match &mech.params {
                MechParams::None => Ok(()),
                _ => Err(param_invalid("this mechanism takes no parameters")),
            }
        };
        let plan = match mech.mechanism {
            CKM_RSA_PKCS => {
                no_params()?;
                Plan::RsaPkcsRaw
            }
            CKM_RSA_PKCS_PSS => Plan::RsaPssDigest(check_pss(&mech.params, None)?),
            CKM_SHA224_RSA_PKCS_PSS
            | CKM_SHA256_RSA_PKCS_PSS
            | CKM_SHA384_RSA_PKCS_PSS
            | CKM_SHA512_RSA_PKCS_PSS => {
                Plan::RsaPss(check_pss(&mech.params, hash_of(mech.mechanism))?)
            }
            CKM_ECDSA => {
                no_params()?;
                Plan::EcdsaDigest
            }
            CKM_EDDSA => {
                match &mech.params {
                    MechParams::None => {}
                    MechParams::EdDsa { prehash, context } if !prehash && context.is_empty() => {}
                    _ => {
                        return Err(param_invalid(
                            "only pure Ed25519 (no prehash, no context) is supported",
                        ))
                    }
                }
                Plan::EdDsa
            }
            CKM_ML_DSA => Plan::MlDsa(check_sign_context(&mech.params)?),
            CKM_SLH_DSA => Plan::SlhDsa(check_sign_context(&mech.params)?),
            CKM_HSS => {
                no_params()?;
                Plan::Hss
            }
            m if key_type == CKK_EC => {
                no_params()?;
                Plan::Ecdsa(hash_of(m).expect("ECDSA hash mechanism"))
            }
            m => {
                no_params()?;
                Plan::RsaPkcs(hash_of(m).expect("RSA hash mechanism"))
            }
        };
        Ok(plan)
    }

    /// The hash a hash-and-sign plan applies locally when the message exceeds 64 KiB.
    pub(crate) fn local_hash(&self) -> Option<HashAlg> {
        match self {
            Plan::RsaPkcs(h) | Plan::RsaPss(h) | Plan::Ecdsa(h) => Some(*h),
            _ => None,
        }
    }

    /// The longest input a plan without a local hash accepts.
    pub(crate) fn max_input(&self, key: &PublicKey) -> usize {
        match self {
            Plan::RsaPkcsRaw => key.signature_len().saturating_sub(11),
            Plan::RsaPssDigest(h) => h.output_len(),
            Plan::EcdsaDigest => 1024,
            _ => PAYLOAD_LIMIT,
        }
    }

    /// Turns the buffered input into the TSB algorithm, payload and verification scheme.
    pub fn prepare(&self, input: Input<'_>, key: &PublicKey) -> Result<Prepared> {
        let data_len_range = |why: &str| Error::new(CKR_DATA_LEN_RANGE, why.to_string());
        let message = |alg: String, data: &[u8], scheme: Scheme| Prepared {
            algorithm: alg,
            payload: data.to_vec(),
            scheme,
            payload_is_digest: false,
            context: None,
        };
        let digest = |alg: String, d: Vec<u8>, scheme: Scheme| Prepared {
            algorithm: alg,
            payload: d,
            scheme,
            payload_is_digest: true,
            context: None,
        };
        Ok(match (self, input) {
            (Plan::RsaPkcsRaw, Input::Message(data)) => {
                if data.is_empty() || data.len() > self.max_input(key) {
                    return Err(data_len_range("CKM_RSA_PKCS input must be 1..=k-11 bytes"));
                }
                match parse_digest_info(data) {
                    Some((h, d)) => digest(
                        format!("NONE{}_WITH_RSA", h.name()),
                        d.to_vec(),
                        Scheme::RsaPkcs1v15(h),
                    ),
                    None => message("NONE_WITH_RSA".into(), data, Scheme::RsaPkcs1v15Raw),
                }
            }
            (Plan::RsaPssDigest(h), Input::Message(d)) => {
                if d.len() != h.output_len() {
                    return Err(data_len_range(
                        "CKM_RSA_PKCS_PSS input must be a digest of the PSS hash",
                    ));
                }
                digest(
                    format!("NONE{}_WITH_RSA_PSS", h.name()),
                    d.to_vec(),
                    Scheme::RsaPss(*h),
                )
            }
            (Plan::EcdsaDigest, Input::Message(d)) => {
                if d.is_empty() || d.len() > self.max_input(key) {
                    return Err(data_len_range("CKM_ECDSA input must be a digest"));
                }
                digest(
                    "NONE_WITH_ECDSA".into(),
                    d.to_vec(),
                    Scheme::Ecdsa(HashAlg::Sha256),
                )
            }
            (Plan::EdDsa, Input::Message(m)) => {
                if m.len() > PAYLOAD_LIMIT {
                    return Err(data_len_range("Ed25519 input is limited to 64 KiB"));
                }
                message("EDDSA".into(), m, Scheme::Ed25519)
            }
            (Plan::MlDsa(_) | Plan::SlhDsa(_) | Plan::Hss, Input::Message(m)) => {
                // Pure signatures: the TSB signs the message itself, which it takes up to
                // 64 KiB; there is no local pre-hash that would give the same signature.
                if m.len() > PAYLOAD_LIMIT {
                    return Err(data_len_range(
                        "post-quantum signature input is limited to 64 KiB",
                    ));
                }
                let (alg, scheme, ctx) = match self {
                    Plan::MlDsa(c) => (TSB_ML_DSA, Scheme::MlDsa, c.as_bytes()),
                    Plan::SlhDsa(c) => (TSB_SLH_DSA, Scheme::SlhDsa, c.as_bytes()),
                    _ => (TSB_LMS, Scheme::Hss, &[][..]),
                };
                Prepared {
                    context: (!ctx.is_empty()).then(|| ctx.to_vec()),
                    ..message(alg.into(), m, scheme)
                }
            }
            (Plan::RsaPkcs(h), Input::Message(m)) => {
                message(format!("{}_WITH_RSA", h.name()), m, Scheme::RsaPkcs1v15(*h))
            }
            (Plan::RsaPkcs(h), Input::Digest(d)) => digest(
                format!("NONE{}_WITH_RSA", h.name()),
                d,
                Scheme::RsaPkcs1v15(*h),
            ),
            (Plan::RsaPss(h), Input::Message(m)) => {
                message(format!("{}_WITH_RSA_PSS", h.name()), m, Scheme::RsaPss(*h))
            }
            (Plan::RsaPss(h), Input::Digest(d)) => digest(
                format!("NONE{}_WITH_RSA_PSS", h.name()),
                d,
                Scheme::RsaPss(*h),
            ),
            (Plan::Ecdsa(h), Input::Message(m)) => {
                message(format!("{}_WITH_ECDSA", h.name()), m, Scheme::Ecdsa(*h))
            }
            (Plan::Ecdsa(h), Input::Digest(d)) => {
                digest("NONE_WITH_ECDSA".into(), d, Scheme::Ecdsa(*h))
            }
            (_, Input::Digest(_)) => {
                return Err(Error::new(
                    CKR_GENERAL_ERROR,
                    "internal: digest input for a plan without local hash",
                ))
            }
        })
    }
}

/// Buffers multi-part input: up to 64 KiB as the message itself; beyond that, hash-and-sign
/// plans switch to hashing locally, and the others refuse with `CKR_DATA_LEN_RANGE`.
pub struct DataSink {
    plan: Plan,
    limit: usize,
    buffer: Vec<u8>,
    hasher: Option<crate::crypto::Hasher>,
}

impl DataSink {
    pub fn new(plan: Plan, key: &PublicKey) -> DataSink {
        let limit = if plan.local_hash().is_some() {
            PAYLOAD_LIMIT
        } else {
            plan.max_input(key)
        };
        DataSink {
            plan,
            limit,
            buffer: Vec::new(),
            hasher: None,
        }
    }

    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
            return Ok(());
        }
        if self.buffer.len() + data.len() <= self.limit {
            self.buffer.extend_from_slice(data);
            return Ok(());
        }
        match self.plan.local_hash() {
            Some(alg) => {
                let mut h = crate::crypto::Hasher::new(alg);
                h.update(&self.buffer);
                h.update(data);
                self.buffer = Vec::new();
                self.hasher = Some(h);
                Ok(())
            }
            None => Err(Error::new(
                CKR_DATA_LEN_RANGE,
                "input too long for this mechanism",
            )),
        }
    }

    /// The buffered message, or the local digest when the input grew past 64 KiB.
    pub fn finish(&mut self) -> InputOwned {
        match self.hasher.take() {
            Some(h) => InputOwned::Digest(h.finalize()),
            None => InputOwned::Message(std::mem::take(&mut self.buffer)),
        }
    }
}

/// An owned [`Input`].
pub enum InputOwned {
    Message(Vec<u8>),
    Digest(Vec<u8>),
}

impl InputOwned {
    pub fn as_input(&self) -> Input<'_> {
        match self {
            InputOwned::Message(m) => Input::Message(m),
            InputOwned::Digest(d) => Input::Digest(d.clone()),
        }
    }
}

/// Single-part input: a hash-and-sign message over 64 KiB is hashed locally. Input over
/// 64 KiB for a mechanism without a local hash (raw RSA, `CKM_ECDSA`, EdDSA: all take at most
/// 64 KiB, see [`Plan::max_input`]) is `CKR_DATA_LEN_RANGE` before anything is copied, so a
/// caller's length never sizes an allocation.
pub fn single_part(plan: Plan, data: &[u8]) -> Result<InputOwned> {
    match plan.local_hash() {
        Some(h) if data.len() > PAYLOAD_LIMIT => Ok(InputOwned::Digest(h.digest(data))),
        None if data.len() > PAYLOAD_LIMIT => Err(Error::new(
            CKR_DATA_LEN_RANGE,
            "input too long for this mechanism",
        )),
        _ => Ok(InputOwned::Message(data.to_vec())),
    }
}
