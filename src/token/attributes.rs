//! Attribute values of token objects (PKCS#11 v2.40 §4.4 storage, §4.6 certificates, §4.8 public
//! keys, §4.9 private keys; v3.0 §2.3.8 for Edwards keys; v3.2 for ML-DSA and SLH-DSA keys
//! (`CKA_PARAMETER_SET`, `CKA_VALUE`) and v3.1/v3.2 for HSS keys (`CKA_HSS_*`)).
//!
//! Vendor-defined attributes (`CKA_VENDOR_DEFINED | 0x5453_0000 + n`, "TS"):
//! - [`CKA_TSB_NEEDS_APPROVAL`] (`CK_BBOOL`): the key has a Smart Key Attributes use policy, so
//!   `C_Sign` files an approval request and waits for it.
//! - [`CKA_TSB_BLOCKED`] (`CK_BBOOL`): the key is blocked on the HSM and cannot sign.

use cryptoki_sys::*;

use super::mechanisms::allowed_for;
use super::objects::{CertSource, KeyPart, ObjectRef};
use crate::crypto::pqc::{MlDsaSet, SlhDsaSet};
use crate::crypto::PublicKey;

pub(crate) const CKA_TSB_NEEDS_APPROVAL: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x5453_0001;
pub(crate) const CKA_TSB_BLOCKED: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x5453_0002;

/// The answer for one attribute of a `C_GetAttributeValue` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrValue {
    Bytes(Vec<u8>),
    /// Exists but may not be revealed (`CKR_ATTRIBUTE_SENSITIVE`).
    Sensitive,
    /// Not an attribute of this object (`CKR_ATTRIBUTE_TYPE_INVALID`).
    Invalid,
}

fn ulong(v: CK_ULONG) -> AttrValue {
    AttrValue::Bytes(v.to_ne_bytes().to_vec())
}

fn boolean(v: bool) -> AttrValue {
    AttrValue::Bytes(vec![if v { CK_TRUE } else { CK_FALSE }])
}

fn bytes(v: &[u8]) -> AttrValue {
    AttrValue::Bytes(v.to_vec())
}

fn ulongs(v: &[CK_ULONG]) -> AttrValue {
    AttrValue::Bytes(v.iter().flat_map(|x| x.to_ne_bytes()).collect())
}

/// Attributes common to storage objects (§4.4).
fn storage(
    attr: CK_ATTRIBUTE_TYPE,
    class: CK_OBJECT_CLASS,
    label: &str,
    private: bool,
) -> Option<AttrValue> {
    Some(match attr {
        CKA_CLASS => ulong(class),
        CKA_TOKEN => boolean(true),
        CKA_PRIVATE => boolean(private),
        CKA_MODIFIABLE | CKA_COPYABLE | CKA_DESTROYABLE => boolean(false),
        CKA_LABEL => bytes(label.as_bytes()),
        _ => return None,
    })
}

/// Public key material, shared by the private and public key objects.
fn key_material(attr: CK_ATTRIBUTE_TYPE, public: &PublicKey) -> Option<AttrValue> {
    match (attr, public) {
        (CKA_MODULUS, PublicKey::Rsa { modulus, .. }) => Some(bytes(modulus)),
        (CKA_MODULUS_BITS, PublicKey::Rsa { bits, .. }) => Some(ulong(*bits as CK_ULONG)),
        (CKA_PUBLIC_EXPONENT, PublicKey::Rsa { exponent, .. }) => Some(bytes(exponent)),
        (CKA_EC_PARAMS, PublicKey::Ec { .. } | PublicKey::Ed25519 { .. }) => {
            public.ec_params_der().map(AttrValue::Bytes)
        }
        (CKA_EC_POINT, PublicKey::Ec { .. } | PublicKey::Ed25519 { .. }) => {
            public.ec_point_der().map(AttrValue::Bytes)
        }
        (CKA_PUBLIC_KEY_INFO, _) => Some(AttrValue::Bytes(public.spki_der())),
        (CKA_PARAMETER_SET, PublicKey::MlDsa { set, .. }) => {
            Some(ulong(ml_dsa_parameter_set(*set)))
        }
        (CKA_PARAMETER_SET, PublicKey::SlhDsa { set, .. }) => {
            Some(ulong(slh_dsa_parameter_set(*set)))
        }
        // The HSS key's shape, on both objects: L, and the top level's LMS / LM-OTS types as
        // the public key names them (RFC 8554 type codes, which CK_LMS_TYPE / CK_LMOTS_TYPE use).
        (CKA_HSS_LEVELS, PublicKey::Hss(h)) => Some(ulong(h.level_count() as CK_ULONG)),
        (CKA_HSS_LMS_TYPE, PublicKey::Hss(h)) => Some(ulong(h.levels[0].0 as CK_ULONG)),
        (CKA_HSS_LMOTS_TYPE, PublicKey::Hss(h)) => Some(ulong(h.levels[0].1 as CK_ULONG)),
        _ => None,
    }
}

/// `CKA_PARAMETER_SET` of an ML-DSA key (`CKP_ML_DSA_*`, PKCS#11 v3.2 pkcs11t.h).
pub(crate) fn ml_dsa_parameter_set(set: MlDsaSet) -> CK_ULONG {
    match set {
        MlDsaSet::MlDsa44 => CKP_ML_DSA_44,
        MlDsaSet::MlDsa65 => CKP_ML_DSA_65,
        MlDsaSet::MlDsa87 => CKP_ML_DSA_87,
    }
}

/// `CKA_PARAMETER_SET` of an SLH-DSA key (`CKP_SLH_DSA_*`, PKCS#11 v3.2 pkcs11t.h: 1..=12 in
/// the order of [`SlhDsaSet::ALL`]).
pub(crate) fn slh_dsa_parameter_set(set: SlhDsaSet) -> CK_ULONG {
    const SETS: [CK_ULONG; 12] = [
        CKP_SLH_DSA_SHA2_128S,
        CKP_SLH_DSA_SHAKE_128S,
        CKP_SLH_DSA_SHA2_128F,
        CKP_SLH_DSA_SHAKE_128F,
        CKP_SLH_DSA_SHA2_192S,
        CKP_SLH_DSA_SHAKE_192S,
        CKP_SLH_DSA_SHA2_192F,
        CKP_SLH_DSA_SHAKE_192F,
        CKP_SLH_DSA_SHA2_256S,
        CKP_SLH_DSA_SHAKE_256S,
        CKP_SLH_DSA_SHA2_256F,
        CKP_SLH_DSA_SHAKE_256F,
    ];
    SETS[set.index()]
}

/// The value of one attribute of an object. `private_objects` is true when private keys are
/// private objects (a PIN is required: `pinIs` is not `none`).
pub(crate) fn attribute(
    obj: &ObjectRef,
    attr: CK_ATTRIBUTE_TYPE,
    private_objects: bool,
) -> AttrValue {
    match obj {
        ObjectRef::Key(key, part) => {
            let private = *part == KeyPart::Private;
            let class = if private {
                CKO_PRIVATE_KEY
            } else {
                CKO_PUBLIC_KEY
            };
            // Keys can be deleted (`DELETE /v1/key`) only with pkcs11.allowKeyDeletion, and only
            // through the private key object: the TSB deletes the pair, so the public key object
            // alone cannot be destroyed (a session key pair's can, see session_keys.rs).
            if attr == CKA_DESTROYABLE {
                return boolean(private && key.destroyable);
            }
            if let Some(v) = storage(attr, class, &key.label, private && private_objects) {
                return v;
            }
            if let Some(v) = key_material(attr, &key.public) {
                return v;
            }
            let common = match attr {
                CKA_KEY_TYPE => Some(ulong(key.key_type)),
                CKA_ID => Some(bytes(&key.id)),
                CKA_START_DATE | CKA_END_DATE | CKA_SUBJECT => Some(bytes(&[])),
                // The TSB stores one `derive` flag for the key pair.
                CKA_DERIVE => Some(boolean(key.usage.derive)),
                CKA_LOCAL => Some(boolean(false)),
                CKA_KEY_GEN_MECHANISM => Some(ulong(CK_UNAVAILABLE_INFORMATION)),
                CKA_ALLOWED_MECHANISMS => Some(ulongs(&allowed_for(key.key_type))),
                CKA_TSB_NEEDS_APPROVAL => Some(boolean(key.needs_approval)),
                CKA_TSB_BLOCKED => Some(boolean(key.blocked)),
                _ => None,
            };
            if let Some(v) = common {
                return v;
            }
            if private {
                match attr {
                    CKA_SIGN => boolean(!key.blocked),
                    // Stored on the TSB as asked; the token itself offers no decryption or
                    // unwrapping (docs/objects-and-mechanisms.md).
                    CKA_DECRYPT => boolean(key.usage.decrypt),
                    CKA_UNWRAP => boolean(key.usage.unwrap),
                    CKA_SIGN_RECOVER | CKA_WRAP_WITH_TRUSTED => boolean(false),
                    CKA_SENSITIVE => boolean(key.usage.sensitive),
                    CKA_EXTRACTABLE => boolean(key.usage.extractable),
                    CKA_ALWAYS_SENSITIVE => boolean(key.always_sensitive),
                    CKA_NEVER_EXTRACTABLE => boolean(key.never_extractable),
                    CKA_ALWAYS_AUTHENTICATE => boolean(false),
                    // HSS private key: every level's types, and the signatures left when the
                    // TSB reports them (else the attribute is not available).
                    CKA_HSS_LMS_TYPES | CKA_HSS_LMOTS_TYPES => match &key.public {
                        PublicKey::Hss(h) => ulongs(
                            &h.levels
                                .iter()
                                .map(|&(l, o)| {
                                    (if attr == CKA_HSS_LMS_TYPES { l } else { o }) as CK_ULONG
                                })
                                .collect::<Vec<_>>(),
                        ),
                        _ => AttrValue::Invalid,
                    },
                    CKA_HSS_KEYS_REMAINING => match (&key.public, key.remaining_signatures) {
                        (PublicKey::Hss(_), Some(n)) => {
                            ulong(CK_ULONG::try_from(n).unwrap_or(CK_ULONG::MAX))
                        }
                        _ => AttrValue::Invalid,
                    },
                    CKA_VALUE | CKA_PRIVATE_EXPONENT | CKA_PRIME_1 | CKA_PRIME_2
                    | CKA_EXPONENT_1 | CKA_EXPONENT_2 | CKA_COEFFICIENT => AttrValue::Sensitive,
                    _ => AttrValue::Invalid,
                }
            } else {
                match attr {
                    // The raw public key of a post-quantum key (PKCS#11 v3.2: ML-DSA, SLH-DSA
                    // public key objects; v3.1 HSS public key objects).
                    CKA_VALUE => match key.public.raw_public_key() {
                        Some(v) => bytes(v),
                        None => AttrValue::Invalid,
                    },
                    CKA_VERIFY => boolean(key.usage.verify),
                    CKA_ENCRYPT => boolean(key.usage.encrypt),
                    CKA_WRAP => boolean(key.usage.wrap),
                    CKA_VERIFY_RECOVER | CKA_TRUSTED => boolean(false),
                    _ => AttrValue::Invalid,
                }
            }
        }
        ObjectRef::Certificate(c) => {
            // A key's certificate stored on the TSB can be removed with C_DestroyObject
            // (`DELETE /v1/certificate/{label}`); configured ones cannot.
            if attr == CKA_DESTROYABLE {
                return boolean(c.source == CertSource::Tsb);
            }
            if let Some(v) = storage(attr, CKO_CERTIFICATE, &c.label, false) {
                return v;
            }
            match attr {
                CKA_CERTIFICATE_TYPE => ulong(CKC_X_509),
                CKA_TRUSTED => boolean(false),
                CKA_CERTIFICATE_CATEGORY => ulong(c.category),
                CKA_CHECK_VALUE => bytes(&c.cert.check_value()),
                CKA_START_DATE | CKA_END_DATE | CKA_URL => bytes(&[]),
                CKA_HASH_OF_SUBJECT_PUBLIC_KEY | CKA_HASH_OF_ISSUER_PUBLIC_KEY => bytes(&[]),
                CKA_NAME_HASH_ALGORITHM => ulong(CKM_SHA_1),
                CKA_JAVA_MIDP_SECURITY_DOMAIN => ulong(CK_SECURITY_DOMAIN_UNSPECIFIED),
                CKA_SUBJECT => bytes(&c.cert.subject_der),
                CKA_ISSUER => bytes(&c.cert.issuer_der),
                CKA_SERIAL_NUMBER => bytes(&c.cert.serial_der),
                CKA_ID => bytes(&c.id),
                CKA_VALUE => bytes(&c.cert.der),
                CKA_PUBLIC_KEY_INFO => AttrValue::Bytes(c.cert.public_key.spki_der()),
                _ => AttrValue::Invalid,
            }
        }
    }
}

/// The size every value of a fixed-size attribute must have: `CK_BBOOL` attributes one byte,
/// `CK_ULONG`-typed ones (`CKA_CLASS`, `CKA_KEY_TYPE`, `CKA_CERTIFICATE_TYPE`, ...)
/// `sizeof(CK_ULONG)` (PKCS#11 v2.40 §4: each attribute's data type). `None` for variable
/// lengths. A template value of another length is `CKR_ATTRIBUTE_VALUE_INVALID`, found before
/// any value is copied.
pub fn fixed_len(attr: CK_ATTRIBUTE_TYPE) -> Option<usize> {
    match attr {
        CKA_TOKEN
        | CKA_PRIVATE
        | CKA_MODIFIABLE
        | CKA_COPYABLE
        | CKA_DESTROYABLE
        | CKA_TRUSTED
        | CKA_SENSITIVE
        | CKA_ENCRYPT
        | CKA_DECRYPT
        | CKA_WRAP
        | CKA_UNWRAP
        | CKA_SIGN
        | CKA_SIGN_RECOVER
        | CKA_VERIFY
        | CKA_VERIFY_RECOVER
        | CKA_DERIVE
        | CKA_EXTRACTABLE
        | CKA_LOCAL
        | CKA_NEVER_EXTRACTABLE
        | CKA_ALWAYS_SENSITIVE
        | CKA_ALWAYS_AUTHENTICATE
        | CKA_WRAP_WITH_TRUSTED
        | CKA_RESET_ON_INIT
        | CKA_HAS_RESET
        | CKA_TSB_NEEDS_APPROVAL
        | CKA_TSB_BLOCKED => Some(std::mem::size_of::<CK_BBOOL>()),
        CKA_CLASS
        | CKA_KEY_TYPE
        | CKA_CERTIFICATE_TYPE
        | CKA_CERTIFICATE_CATEGORY
        | CKA_JAVA_MIDP_SECURITY_DOMAIN
        | CKA_NAME_HASH_ALGORITHM
        | CKA_MODULUS_BITS
        | CKA_VALUE_LEN
        | CKA_VALUE_BITS
        | CKA_KEY_GEN_MECHANISM
        | CKA_PRIME_BITS
        | CKA_SUBPRIME_BITS
        | CKA_HW_FEATURE_TYPE
        | CKA_MECHANISM_TYPE
        | CKA_PROFILE_ID
        | CKA_PARAMETER_SET
        | CKA_HSS_LEVELS
        | CKA_HSS_LMS_TYPE
        | CKA_HSS_LMOTS_TYPE
        | CKA_HSS_KEYS_REMAINING => Some(std::mem::size_of::<CK_ULONG>()),
        _ => None,
    }
}

/// True for the object classes PKCS#11 defines (v3.0 §4.2 table 9: `CKO_DATA` ..
/// `CKO_PROFILE`); any other value of `CKA_CLASS` is invalid (`CKR_ATTRIBUTE_VALUE_INVALID`).
pub(crate) fn known_class(class: CK_OBJECT_CLASS) -> bool {
    matches!(
        class,
        CKO_DATA
            | CKO_CERTIFICATE
            | CKO_PUBLIC_KEY
            | CKO_PRIVATE_KEY
            | CKO_SECRET_KEY
            | CKO_HW_FEATURE
            | CKO_DOMAIN_PARAMETERS
            | CKO_MECHANISM
            | CKO_OTP_KEY
            | CKO_PROFILE
    )
}
