//! Key management through PKCS#11: `C_GenerateKeyPair` creates a signing key on the TSB
//! (`POST /v1/key`), `C_DestroyObject` on a key deletes it (`DELETE /v1/key/{label}`) when
//! the configuration allows it. PKCS#11 v3.0 §5.14 (C_GenerateKeyPair), §5.7 (C_DestroyObject),
//! §2.1.4 (CKM_RSA_PKCS_KEY_PAIR_GEN), §2.3.7 (CKM_EC_KEY_PAIR_GEN), §2.3.9
//! (CKM_EC_EDWARDS_KEY_PAIR_GEN); v3.2 `CKM_ML_DSA_KEY_PAIR_GEN`, `CKM_SLH_DSA_KEY_PAIR_GEN`
//! (`CKA_PARAMETER_SET`) and v3.1 `CKM_HSS_KEY_PAIR_GEN` (`CKA_HSS_*`).
//! docs/objects-and-mechanisms.md describes the rules.

use cryptoki_sys::*;

use super::mechanisms::{MechParams, Mechanism};
use super::objects::{key_from_attributes, tsb_id_of, KeyObject, KeyPart, ObjectRef, Skipped};
use super::state::Token;
use super::template::{attribute_name, bool_of, inconsistent, ulong_of, value_invalid};
use crate::config::PolicySpec;
use crate::error::{map_tsb_error, Error, Result};
use crate::logging::Net;
use crate::tsb::{NewKey, NewKeyType, NewKeyUsage, TsbReason};

/// Vendor attribute naming a policy profile of `pkcs11.policyProfiles` (UTF-8).
pub(crate) const CKA_TSB_POLICY_PROFILE: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x5453_0003;

/// The key-pair generation mechanisms.
pub(crate) const KEYGEN_MECHANISMS: [CK_MECHANISM_TYPE; 6] = [
    CKM_RSA_PKCS_KEY_PAIR_GEN,
    CKM_EC_KEY_PAIR_GEN,
    CKM_EC_EDWARDS_KEY_PAIR_GEN,
    CKM_ML_DSA_KEY_PAIR_GEN,
    CKM_SLH_DSA_KEY_PAIR_GEN,
    CKM_HSS_KEY_PAIR_GEN,
];

/// The HSS key the TSB creates for `"algorithm": "LMS"` (it takes no LMS parameters; Securosys'
/// PQC tutorial shows L = 1, LMS_SHA256_M32_H5, LMOTS_SHA256_N32_W1: docs/tsb-api.md). A
/// template may name exactly these; other values are refused, never dropped.
const TSB_HSS_LEVELS: CK_ULONG = 1;
const TSB_LMS_TYPE: CK_ULONG = 5;
const TSB_LMOTS_TYPE: CK_ULONG = 1;

/// `C_GetMechanismInfo` of a generation mechanism: key sizes in bits and flags.
pub(crate) fn keygen_mechanism_info(mechanism: CK_MECHANISM_TYPE) -> Option<CK_MECHANISM_INFO> {
    let (min, max, extra) = match mechanism {
        CKM_RSA_PKCS_KEY_PAIR_GEN => (2048, 4096, 0),
        CKM_EC_KEY_PAIR_GEN => (
            256,
            521,
            CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS | CKF_EC_OID,
        ),
        CKM_EC_EDWARDS_KEY_PAIR_GEN => (256, 256, CKF_EC_NAMEDCURVE | CKF_EC_OID),
        // Security strength in bits of the sets (as for signing, mechanisms.rs); HSS: the tree
        // height of the key the TSB creates.
        CKM_ML_DSA_KEY_PAIR_GEN | CKM_SLH_DSA_KEY_PAIR_GEN => (128, 256, 0),
        CKM_HSS_KEY_PAIR_GEN => (5, 5, 0),
        _ => return None,
    };
    Some(CK_MECHANISM_INFO {
        ulMinKeySize: min,
        ulMaxKeySize: max,
        flags: CKF_HW | CKF_GENERATE_KEY_PAIR | extra,
    })
}

/// The curve of `CKA_EC_PARAMS`: a DER OBJECT IDENTIFIER (namedCurve), or for Edwards keys
/// the PrintableString "edwards25519" (PKCS#11 v3.0 §2.3.3).
fn curve_of(mechanism: CK_MECHANISM_TYPE, params: &[u8]) -> Result<NewKeyType> {
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
    const K256: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";
    let well_formed = matches!(params, [0x06 | 0x13, len, rest @ ..] if *len as usize == rest.len() && !rest.is_empty());
    if !well_formed {
        return Err(value_invalid(
            "CKA_EC_PARAMS is not a DER OBJECT IDENTIFIER or PrintableString",
        ));
    }
    let edwards = mechanism == CKM_EC_EDWARDS_KEY_PAIR_GEN;
    match params {
        p if !edwards && p == P256 => Ok(NewKeyType::Ec("1.2.840.10045.3.1.7")),
        p if !edwards && p == P384 => Ok(NewKeyType::Ec("1.3.132.0.34")),
        p if !edwards && p == P521 => Ok(NewKeyType::Ec("1.3.132.0.35")),
        p if !edwards && p == K256 => Ok(NewKeyType::Ec("1.3.132.0.10")),
        p if edwards && (p == ED25519 || p == ED25519_NAME) => Ok(NewKeyType::Ed25519),
        _ => Err(Error::new(
            CKR_CURVE_NOT_SUPPORTED,
            if edwards {
                "CKA_EC_PARAMS: only Ed25519 (OID 1.3.101.112 or \"edwards25519\") keys can be generated"
            } else {
                "CKA_EC_PARAMS: only P-256, P-384, P-521 and secp256k1 keys can be generated"
            },
        )),
    }
}

/// A checked generation request.
#[derive(Debug)]
struct KeyGenRequest {
    /// `CKA_LABEL`: the TSB label of a token key (`None`: a generated one); a session key's
    /// shown label (may be empty).
    label: Option<String>,
    /// `CKA_ID`, sent as the TSB key's `id` (lowercase hex, [`tsb_id_of`]); `None` when absent
    /// or empty.
    id: Option<Vec<u8>>,
    /// `CKA_TOKEN` (default false, PKCS#11 v3.0 §4.4): false makes a session key pair, a
    /// temporary TSB key (session_keys.rs).
    token: bool,
    key_type: NewKeyType,
    destroyable: bool,
    modifiable: bool,
    usage: NewKeyUsage,
    profile: Option<String>,
}

/// Checks both templates against what the TSB can create: a key that signs and never leaves
/// the HSM. Every attribute is honoured or refused, never dropped (§5.14): the usage flags the
/// TSB stores (`decrypt`, `unwrap`, `derive`, `encrypt`, `verify`, `wrap`) are stored as asked,
/// even though this token only signs.
fn parse_templates(
    mechanism: CK_MECHANISM_TYPE,
    public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Result<KeyGenRequest> {
    let key_type = match mechanism {
        CKM_RSA_PKCS_KEY_PAIR_GEN => CKK_RSA,
        CKM_EC_KEY_PAIR_GEN => CKK_EC,
        CKM_ML_DSA_KEY_PAIR_GEN => CKK_ML_DSA,
        CKM_SLH_DSA_KEY_PAIR_GEN => CKK_SLH_DSA,
        CKM_HSS_KEY_PAIR_GEN => CKK_HSS,
        _ => CKK_EC_EDWARDS,
    };
    let pqc = matches!(key_type, CKK_ML_DSA | CKK_SLH_DSA | CKK_HSS);
    let mut parameter_set: Option<CK_ULONG> = None;
    let mut label: Option<String> = None;
    let mut id: Option<Vec<u8>> = None;
    let mut modulus_bits = None;
    let mut ec_params = None;
    let mut destroyable: Option<bool> = None;
    let mut modifiable: Option<bool> = None;
    let mut profile = None;
    let mut token: Option<bool> = None;
    // The usage flags: private decrypt/unwrap, public encrypt/verify/wrap, derive on either.
    let (mut decrypt, mut unwrap, mut encrypt, mut verify, mut wrap) =
        (None, None, None, None, None);
    let mut derive: [Option<bool>; 2] = [None, None];
    let (mut sensitive, mut extractable): (Option<bool>, Option<bool>) = (None, None);
    for (is_private, template) in [(false, public), (true, private)] {
        let class = if is_private {
            CKO_PRIVATE_KEY
        } else {
            CKO_PUBLIC_KEY
        };
        let which = if is_private { "private" } else { "public" };
        for (t, v) in template {
            let t = *t;
            // Attributes that must be `want` if given.
            let require = |want: bool, why: &str| -> Result<()> {
                if bool_of(&attribute_name(t), v)? != want {
                    return Err(inconsistent(format!(
                        "{} {} on the {which} key is not possible: {why}",
                        attribute_name(t),
                        if want { "false" } else { "true" }
                    )));
                }
                Ok(())
            };
            const NOT_STORED: &str = "the TSB cannot store it";
            match t {
                CKA_CLASS => {
                    if ulong_of("CKA_CLASS", v)? != class {
                        return Err(inconsistent(format!(
                            "CKA_CLASS of the {which} key template"
                        )));
                    }
                }
                CKA_KEY_TYPE => {
                    if ulong_of("CKA_KEY_TYPE", v)? != key_type {
                        return Err(inconsistent("CKA_KEY_TYPE does not fit the mechanism"));
                    }
                }
                CKA_TOKEN => {
                    let t = bool_of("CKA_TOKEN", v)?;
                    if token.is_some_and(|e| e != t) {
                        return Err(inconsistent(
                            "the two templates give different CKA_TOKEN values",
                        ));
                    }
                    token = Some(t);
                }
                CKA_LABEL => {
                    let l = std::str::from_utf8(v)
                        .map_err(|_| value_invalid("CKA_LABEL is not UTF-8"))?
                        .to_string();
                    match &label {
                        Some(other) if *other != l => {
                            return Err(inconsistent(
                                "the two templates give different CKA_LABELs",
                            ))
                        }
                        _ => label = Some(l),
                    }
                }
                CKA_ID => match &id {
                    Some(other) if other != v => {
                        return Err(inconsistent("the two templates give different CKA_IDs"))
                    }
                    _ => id = Some(v.clone()),
                },
                CKA_PRIVATE => require(
                    is_private,
                    "private keys are private objects, public keys are not",
                )?,
                CKA_DESTROYABLE => {
                    let d = bool_of("CKA_DESTROYABLE", v)?;
                    if destroyable.is_some_and(|e| e != d) {
                        return Err(inconsistent(
                            "the two templates give different CKA_DESTROYABLE values",
                        ));
                    }
                    destroyable = Some(d);
                }
                CKA_MODIFIABLE => {
                    let m = bool_of("CKA_MODIFIABLE", v)?;
                    if modifiable.is_some_and(|e| e != m) {
                        return Err(inconsistent(
                            "the two templates give different CKA_MODIFIABLE values",
                        ));
                    }
                    modifiable = Some(m);
                }
                CKA_COPYABLE => require(false, "this token does not copy keys")?,
                CKA_START_DATE | CKA_END_DATE if v.is_empty() => {}
                CKA_ALLOWED_MECHANISMS if v.is_empty() => {}
                CKA_DERIVE => derive[usize::from(is_private)] = Some(bool_of("CKA_DERIVE", v)?),
                // Public key.
                CKA_VERIFY if !is_private => verify = Some(bool_of("CKA_VERIFY", v)?),
                CKA_ENCRYPT if !is_private => encrypt = Some(bool_of("CKA_ENCRYPT", v)?),
                CKA_WRAP if !is_private => wrap = Some(bool_of("CKA_WRAP", v)?),
                CKA_VERIFY_RECOVER | CKA_TRUSTED if !is_private => require(false, NOT_STORED)?,
                CKA_MODULUS_BITS if !is_private && key_type == CKK_RSA => {
                    modulus_bits = Some(ulong_of("CKA_MODULUS_BITS", v)?)
                }
                CKA_PUBLIC_EXPONENT if !is_private && key_type == CKK_RSA => {
                    let significant: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
                    if significant != [0x01, 0x00, 0x01] {
                        return Err(value_invalid(
                            "CKA_PUBLIC_EXPONENT must be 65537: the TSB chooses no other",
                        ));
                    }
                }
                CKA_EC_PARAMS if !is_private && matches!(key_type, CKK_EC | CKK_EC_EDWARDS) => {
                    ec_params = Some(v.clone())
                }
                // PKCS#11 v3.2: the parameter set of an ML-DSA / SLH-DSA key, in either
                // template (the same value if in both).
                CKA_PARAMETER_SET if matches!(key_type, CKK_ML_DSA | CKK_SLH_DSA) => {
                    let set = ulong_of("CKA_PARAMETER_SET", v)?;
                    if parameter_set.is_some_and(|e| e != set) {
                        return Err(inconsistent(
                            "the two templates give different CKA_PARAMETER_SET values",
                        ));
                    }
                    parameter_set = Some(set);
                }
                // HSS: the TSB creates one kind of LMS key and takes no parameters; a
                // template may name exactly that one.
                CKA_HSS_LEVELS if key_type == CKK_HSS => {
                    if ulong_of("CKA_HSS_LEVELS", v)? != TSB_HSS_LEVELS {
                        return Err(value_invalid(
                            "CKA_HSS_LEVELS: the TSB creates LMS keys of one level (L = 1)",
                        ));
                    }
                }
                CKA_HSS_LMS_TYPES | CKA_HSS_LMS_TYPE if key_type == CKK_HSS => {
                    if !ulongs_all(v, TSB_LMS_TYPE) {
                        return Err(value_invalid(format!(
                            "{}: the TSB creates LMS keys of type LMS_SHA256_M32_H5 (5) only",
                            attribute_name(t)
                        )));
                    }
                }
                CKA_HSS_LMOTS_TYPES | CKA_HSS_LMOTS_TYPE if key_type == CKK_HSS => {
                    if !ulongs_all(v, TSB_LMOTS_TYPE) {
                        return Err(value_invalid(format!(
                            "{}: the TSB creates LMS keys with LMOTS_SHA256_N32_W1 (1) only",
                            attribute_name(t)
                        )));
                    }
                }
                // Private key.
                CKA_SIGN if is_private => require(
                    true,
                    "this token only creates keys it can sign with (a key that cannot sign is not shown)",
                )?,
                CKA_DECRYPT if is_private => decrypt = Some(bool_of("CKA_DECRYPT", v)?),
                CKA_UNWRAP if is_private => unwrap = Some(bool_of("CKA_UNWRAP", v)?),
                // Stored on the TSB as asked (the defaults: a key that never leaves the HSM).
                CKA_SENSITIVE if is_private => sensitive = Some(bool_of("CKA_SENSITIVE", v)?),
                CKA_EXTRACTABLE if is_private => {
                    extractable = Some(bool_of("CKA_EXTRACTABLE", v)?)
                }
                CKA_SIGN_RECOVER | CKA_WRAP_WITH_TRUSTED | CKA_ALWAYS_AUTHENTICATE
                    if is_private =>
                {
                    require(false, NOT_STORED)?
                }
                CKA_TSB_POLICY_PROFILE if is_private => {
                    let name = std::str::from_utf8(v)
                        .map_err(|_| value_invalid("the policy profile name is not UTF-8"))?;
                    profile = Some(name.to_string());
                }
                CKA_START_DATE | CKA_END_DATE | CKA_ALLOWED_MECHANISMS => {
                    return Err(inconsistent(
                        "CKA_START_DATE, CKA_END_DATE and CKA_ALLOWED_MECHANISMS cannot be set on TSB keys",
                    ))
                }
                other => {
                    return Err(Error::new(
                        CKR_ATTRIBUTE_TYPE_INVALID,
                        format!("{} cannot be given in the {which} key template", attribute_name(other)),
                    ))
                }
            }
        }
    }
    let token = token.unwrap_or(false);
    // A missing or empty label: a token key gets a generated one (generate_key_pair); a
    // session key's TSB label is generated anyway and its CKA_LABEL stays empty (§4.4 default).
    let label = label.filter(|l| !l.is_empty());
    if !token && destroyable == Some(false) {
        return Err(inconsistent(
            "a session key pair (CKA_TOKEN false) is deleted when its session ends: CKA_DESTROYABLE false is not possible",
        ));
    }
    // The TSB stores one `derive` flag for the key pair.
    let derive = match derive {
        [Some(a), Some(b)] if a != b => {
            return Err(inconsistent(
                "CKA_DERIVE differs between the public and the private key: the TSB stores one derive flag for the key pair",
            ))
        }
        [a, b] => a.or(b).unwrap_or(false),
    };
    let decrypt = decrypt.unwrap_or(false);
    let unwrap = unwrap.unwrap_or(false);
    // The public-key flags are sent only where they differ from what the objects would report
    // without them (encrypt = decrypt, wrap = unwrap, verify = true): a TSB before 1.15.1 does
    // not know them.
    let usage = NewKeyUsage {
        decrypt,
        unwrap,
        derive,
        encrypt: encrypt.filter(|e| *e != decrypt),
        verify: verify.filter(|v| !*v),
        wrap: wrap.filter(|w| *w != unwrap),
        sensitive: sensitive.unwrap_or(true),
        extractable: extractable.unwrap_or(false),
    };
    // An empty CKA_ID asks for nothing (python-pkcs11 sends one by default).
    let id = id.filter(|i| !i.is_empty());
    let new_type = match key_type {
        _ if pqc => pqc_key_type(key_type, parameter_set)?,
        CKK_RSA => {
            let bits = modulus_bits.ok_or_else(|| {
                Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_MODULUS_BITS is missing")
            })?;
            match bits {
                2048 | 3072 | 4096 => NewKeyType::Rsa(bits as u32),
                _ => {
                    return Err(value_invalid(format!(
                    "CKA_MODULUS_BITS {bits}: the TSB creates RSA keys of 2048, 3072 or 4096 bits"
                )))
                }
            }
        }
        _ => {
            let params = ec_params
                .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_EC_PARAMS is missing"))?;
            curve_of(mechanism, &params)?
        }
    };
    Ok(KeyGenRequest {
        label,
        id,
        token,
        key_type: new_type,
        destroyable: destroyable.unwrap_or(true),
        modifiable: modifiable.unwrap_or(true),
        usage,
        profile,
    })
}

/// One `CK_ULONG` (or an array of them) whose every element is `want`.
fn ulongs_all(v: &[u8], want: CK_ULONG) -> bool {
    const N: usize = std::mem::size_of::<CK_ULONG>();
    !v.is_empty()
        && v.len().is_multiple_of(N)
        && v.chunks(N)
            .all(|c| CK_ULONG::from_ne_bytes(c.try_into().expect("chunk of CK_ULONG size")) == want)
}

/// The TSB `algorithm` of a post-quantum key: the ML-DSA / SLH-DSA set `CKA_PARAMETER_SET`
/// names (required: `CKR_TEMPLATE_INCOMPLETE` without it; `CKR_PARAMETER_SET_NOT_SUPPORTED`,
/// PKCS#11 v3.2, for a value that is no set of the key type), or `LMS`.
fn pqc_key_type(key_type: CK_KEY_TYPE, parameter_set: Option<CK_ULONG>) -> Result<NewKeyType> {
    use super::attributes::{ml_dsa_parameter_set, slh_dsa_parameter_set};
    use crate::crypto::pqc::{MlDsaSet, SlhDsaSet};
    if key_type == CKK_HSS {
        return Ok(NewKeyType::PostQuantum("LMS"));
    }
    let set = parameter_set
        .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_PARAMETER_SET is missing"))?;
    let name = if key_type == CKK_ML_DSA {
        MlDsaSet::ALL
            .into_iter()
            .find(|s| ml_dsa_parameter_set(*s) == set)
            .map(MlDsaSet::name)
    } else {
        SlhDsaSet::ALL
            .into_iter()
            .find(|s| slh_dsa_parameter_set(*s) == set)
            .map(SlhDsaSet::name)
    };
    name.map(NewKeyType::PostQuantum).ok_or_else(|| {
        Error::new(
            CKR_PARAMETER_SET_NOT_SUPPORTED,
            format!("CKA_PARAMETER_SET {set:#x} is not a parameter set of this key type"),
        )
    })
}

/// The label of a token key generated without `CKA_LABEL`: `key-` and 64 random bits in hex
/// (docs/objects-and-mechanisms.md).
fn generated_label() -> Result<String> {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::new(CKR_FUNCTION_FAILED, "no random bytes for a key label"))?;
    Ok(format!("key-{}", hex::encode(bytes)))
}

impl Token {
    /// The policy of a new key: the named profile of `pkcs11.policyProfiles`, else
    /// `pkcs11.newKeyPolicy`, else the empty policy (every rule null, not blocked). Never no
    /// policy: a key created without one can never be given one, while a key with the empty
    /// policy signs at once and can gain approvers later (docs/tsb-api.md).
    fn new_key_policy(&self, profile: Option<&str>) -> Result<PolicySpec> {
        let settings = &self.config.pkcs11;
        match profile {
            Some(name) => settings.policy_profiles.get(name).cloned().ok_or_else(|| {
                value_invalid(format!(
                    "no policy profile '{name}' is configured (pkcs11.policyProfiles)"
                ))
            }),
            None => Ok(settings.new_key_policy.clone().unwrap_or_default()),
        }
    }

    /// Whether `C_DestroyObject` may delete keys on the TSB (`pkcs11.allowKeyDeletion`).
    fn key_deletion_allowed(&self) -> bool {
        self.config.pkcs11.allow_key_deletion
    }

    /// `C_GenerateKeyPair` (PKCS#11 v3.0 §5.14): creates the key on the TSB and returns the
    /// handles of its public and private key objects. `CKA_TOKEN` true makes a token key named
    /// by its `CKA_LABEL`, or by a generated label without one (read-write sessions only, §5.14: `CKR_SESSION_READ_ONLY`); false, the
    /// default (§4.4), makes a session key pair: a temporary TSB key with a generated label that
    /// the module deletes when the pair's lifetime ends (session_keys.rs), allowed in read-only
    /// sessions too.
    pub fn generate_key_pair(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
        private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        // Every refusal is one WARN line naming the attribute and the reason (the PKCS#11 return
        // value alone rarely tells a user which attribute of a tutorial's command to change).
        self.generate_key_pair_checked(session, mechanism, public, private)
            .inspect_err(|e| {
                if !e.was_logged() {
                    log::warn!("C_GenerateKeyPair refused: {}", Net(&e.to_string()))
                }
            })
    }

    fn generate_key_pair_checked(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
        private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let s = self.sessions.get(session)?;
        if !KEYGEN_MECHANISMS.contains(&mechanism.mechanism) {
            return Err(Error::new(
                CKR_MECHANISM_INVALID,
                format!(
                    "mechanism {:#x} does not generate key pairs",
                    mechanism.mechanism
                ),
            ));
        }
        if mechanism.params != MechParams::None {
            return Err(Error::new(
                CKR_MECHANISM_PARAM_INVALID,
                "key-pair generation takes no mechanism parameter",
            ));
        }
        let req = parse_templates(mechanism.mechanism, public, private)?;
        if req.token && !s.read_write {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY,
                "token keys (CKA_TOKEN true) can only be generated in a read-write session",
            ));
        }
        if !self.user_may_use_private() {
            return Err(Error::new(
                CKR_USER_NOT_LOGGED_IN,
                "log in to generate a key",
            ));
        }
        // A token key without CKA_LABEL gets a generated label, named in the INFO line below.
        let token_label = match (&req.label, req.token) {
            (Some(l), true) => Some(l.clone()),
            (None, true) => Some(generated_label()?),
            (_, false) => None,
        };
        if let Some(label) = &token_label {
            if let Some(list) = &self.config.pkcs11.keys {
                if !list.contains(label) {
                    return Err(inconsistent(format!(
                        "CKA_LABEL '{label}' is not in pkcs11.keys: the new key would not be visible"
                    )));
                }
            }
        }
        // The TSB's contract (docs/tsb-api.md) lets `DELETE /v1/key` delete a destroyable key
        // whatever its policy, so a policy never keeps a temporary key from being deleted.
        let policy = self.new_key_policy(req.profile.as_deref())?;
        let client = self.client()?;
        let tsb_label = match &token_label {
            Some(l) => l.clone(),
            None => super::session_keys::new_session_label()?,
        };
        let app_label = req.label.clone().unwrap_or_default();
        let tsb_id = req.id.as_deref().map(tsb_id_of);
        let password = self.config.pkcs11.key_passwords.get(&tsb_label).cloned();
        // A label in use is refused before anything is created (the TSB refuses it too). A
        // generated label is 128 random bits: not looked up.
        if req.token {
            match client.key_attributes(&tsb_label, password.as_ref()) {
                Ok(_) => {
                    return Err(inconsistent(format!(
                        "CKA_LABEL: a key labelled '{tsb_label}' already exists",
                    )))
                }
                Err(e) if e.reason() == Some(TsbReason::WrongPassword) => {
                    return Err(inconsistent(format!(
                        "CKA_LABEL: a key labelled '{tsb_label}' already exists",
                    )))
                }
                Err(e) if e.is_key_not_found() => {}
                Err(e) => return Err(map_tsb_error(&e, self.credential_context())),
            }
        }
        let new = NewKey {
            label: &tsb_label,
            id: tsb_id.as_deref(),
            usage: req.usage,
            key_type: req.key_type,
            password: password.as_ref(),
            destroyable: req.destroyable || !req.token,
            modifiable: req.modifiable,
            policy: &policy,
        };
        if let Err(e) = client.create_key(&new) {
            if e.http_status() == Some(400) && e.reason() != Some(TsbReason::KeyExists) {
                return Err(inconsistent(format!(
                    "the TSB refused to create key '{tsb_label}' (usage {:?}, id {:?}): {e}",
                    req.usage, tsb_id
                )));
            }
            return Err(map_tsb_error(&e, self.credential_context()));
        }
        let id_text = tsb_id
            .as_deref()
            .map(|id| format!(", id {id}"))
            .unwrap_or_default();
        if req.token && req.label.is_none() {
            log::info!(
                "created key '{tsb_label}' ({:?}{id_text}) on the TSB; the template had no CKA_LABEL, so the label was generated",
                req.key_type
            );
        } else if req.token {
            log::info!(
                "created key '{tsb_label}' ({:?}{id_text}) on the TSB",
                req.key_type
            );
        } else {
            log::info!(
                "created temporary key '{}' ({:?}{id_text}) on the TSB for a session key pair (CKA_LABEL '{}'); it is deleted when session {session} closes",
                tsb_label,
                req.key_type,
                crate::logging::sanitize(&app_label)
            );
            self.register_session_key(&tsb_label, session, &app_label)?;
        }
        // Read the new key back at once: no cache entry may hide it.
        self.objects.invalidate_list();
        let key = client
            .key_attributes(&tsb_label, password.as_ref())
            .map_err(|e| map_tsb_error(&e, self.credential_context()))
            .and_then(|attrs| {
                let base = self.objects.base_of(&tsb_label);
                key_from_attributes(&attrs, base).map_err(|Skipped::CannotSign(why)| {
                    Error::new(
                        CKR_FUNCTION_FAILED,
                        format!("the new key '{tsb_label}' cannot sign: {why}"),
                    )
                })
            });
        let mut key = match key {
            Ok(k) => k,
            Err(e) => {
                // A temporary key nobody can refer to must not stay behind.
                if !req.token {
                    self.discard_session_key(&tsb_label);
                }
                return Err(e);
            }
        };
        key.destroyable &= self.key_deletion_allowed();
        let key = self.objects.store_key(key, None);
        if !req.token && !self.session_keys.is_own(&tsb_label) {
            // Its session closed meanwhile, which deleted the key: no handle may refer to it.
            self.objects.store_gone(&tsb_label);
            return Err(Error::new(
                CKR_SESSION_CLOSED,
                "the session was closed during key generation",
            ));
        }
        Ok((
            ObjectRef::Key(key.clone(), KeyPart::Public).handle(),
            ObjectRef::Key(key, KeyPart::Private).handle(),
        ))
    }

    /// `C_DestroyObject` on a key object (PKCS#11 v3.0 §5.7): deletes the key on the TSB when
    /// `pkcs11.allowKeyDeletion` is true; both objects of the pair disappear.
    pub(super) fn destroy_key(&self, key: &KeyObject) -> Result<()> {
        if !self.key_deletion_allowed() {
            return Err(Error::new(
                CKR_ACTION_PROHIBITED,
                format!(
                    "key '{}' lives on the HSM; deleting keys needs pkcs11.allowKeyDeletion",
                    key.label
                ),
            ));
        }
        if !self.user_may_use_private() {
            return Err(Error::new(CKR_USER_NOT_LOGGED_IN, "log in to delete a key"));
        }
        match self
            .client()?
            .delete_key(&key.label, self.key_password(&key.label).as_ref())
        {
            Ok(()) => {}
            Err(e) if e.is_key_not_found() => {
                log::info!("key '{}' was already deleted: {e}", key.label)
            }
            Err(e) if e.reason() == Some(TsbReason::OperationForbidden) => {
                return Err(Error::new(
                    CKR_ACTION_PROHIBITED,
                    format!(
                        "the TSB refuses to delete key '{}' (not destroyable): {e}",
                        key.label
                    ),
                ))
            }
            Err(e) => return Err(map_tsb_error(&e, self.credential_context())),
        }
        log::info!("deleted key '{}' on the TSB", key.label);
        self.objects.store_gone(&key.label);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
