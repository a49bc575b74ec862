//! The README's main job: drives `libtsb_pkcs11.so` through PKCS#11 like any application would,
//! and says what happens in plain words. Run by `scripts/demo.sh` against the TSB simulator.
//!
//! Usage: `demo <path-to-libtsb_pkcs11.so>` with `TSB_PKCS11_CONFIG` pointing at a config.

use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

/// `CKA_VENDOR_DEFINED | 0x5453_0001`: the key needs approvals (see README, "Objects").
const CKA_TSB_NEEDS_APPROVAL: u64 = 0x8000_0000 | 0x5453_0001;

/// Post-quantum key types (PKCS#11 3.2 §2.3) and the SLH-DSA parameter sets in `CKP_SLH_DSA_*`
/// order (1 = SHA2-128s ... 12 = SHAKE-256f).
const CKK_HSS: u64 = 0x46;
const CKK_ML_DSA: u64 = 0x4a;
const CKK_SLH_DSA: u64 = 0x4b;
const SLH_DSA_SETS: [&str; 12] = [
    "SHA2-128s",
    "SHAKE-128s",
    "SHA2-128f",
    "SHAKE-128f",
    "SHA2-192s",
    "SHAKE-192s",
    "SHA2-192f",
    "SHAKE-192f",
    "SHA2-256s",
    "SHAKE-256s",
    "SHA2-256f",
    "SHAKE-256f",
];

fn label_of(s: &Session, h: ObjectHandle) -> String {
    match s
        .get_attributes(h, &[AttributeType::Label])
        .ok()
        .and_then(|a| a.into_iter().next())
    {
        Some(Attribute::Label(l)) => String::from_utf8_lossy(&l).into_owned(),
        _ => "?".into(),
    }
}

fn describe(s: &Session, h: ObjectHandle) -> String {
    let attrs = s
        .get_attributes(
            h,
            &[
                AttributeType::KeyType,
                AttributeType::ModulusBits,
                AttributeType::EcParams,
                AttributeType::ParameterSet,
            ],
        )
        .unwrap_or_default();
    let mut kind = String::new();
    let mut key_type = 0u64;
    for a in attrs {
        match a {
            Attribute::KeyType(t) => {
                key_type = u64::from(t);
                kind = match key_type {
                    CKK_HSS => "HSS/LMS".into(),
                    _ => format!("{t}"),
                }
            }
            Attribute::ParameterSet(p) => {
                let set = usize::from(cryptoki::types::Ulong::from(p));
                kind = match key_type {
                    CKK_ML_DSA => {
                        match ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"].get(set.wrapping_sub(1)) {
                            Some(name) => (*name).into(),
                            None => "ML-DSA".into(),
                        }
                    }
                    CKK_SLH_DSA => match SLH_DSA_SETS.get(set.wrapping_sub(1)) {
                        Some(name) => format!("SLH-DSA-{name}"),
                        None => "SLH-DSA".into(),
                    },
                    _ => kind,
                }
            }
            Attribute::ModulusBits(b) => kind = format!("RSA-{}", u64::from(b)),
            Attribute::EcParams(p) => {
                kind = match p.as_slice() {
                    [0x06, 0x08, .., 0x07] => "EC P-256".into(),
                    [0x06, 0x05, .., 0x22] => "EC P-384".into(),
                    [0x06, 0x05, .., 0x23] => "EC P-521".into(),
                    [0x06, 0x03, 0x2b, 0x65, 0x70] => "Ed25519".into(),
                    _ => "EC".into(),
                }
            }
            _ => {}
        }
    }
    let needs = s
        .get_attributes(h, &[AttributeType::VendorDefined(CKA_TSB_NEEDS_APPROVAL)])
        .ok()
        .and_then(|a| a.into_iter().next())
        .map(|a| matches!(a, Attribute::VendorDefined((_, v)) if v == vec![1]))
        .unwrap_or(false);
    if needs {
        format!("{kind}, needs approvals")
    } else {
        kind
    }
}

fn sign_and_check(
    s: &Session,
    label: &str,
    mech: &Mechanism,
    data: &[u8],
) -> cryptoki::error::Result<()> {
    let private = s.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    let public = s.find_objects(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    let (Some(private), Some(public)) = (private.first(), public.first()) else {
        println!("  key '{label}' is not on the token");
        return Ok(());
    };
    let started = Instant::now();
    let sig = s.sign(mech, *private, data)?;
    let ms = started.elapsed().as_millis();
    s.verify(mech, *public, data, &sig)?;
    println!(
        "  signed {} bytes with '{label}' ({}) in {ms} ms: {}-byte signature {}..., verified with the public key",
        data.len(),
        mech.mechanism_type(),
        sig.len(),
        sig.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let module = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/libtsb_pkcs11.so".into());
    println!("Loading the PKCS#11 module {module}");
    let p = Pkcs11::new(&module)?;
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let info = p.get_library_info()?;
    println!(
        "  library: {} {}",
        info.library_description(),
        info.library_version()
    );
    let slot = p.get_slots_with_token()?[0];
    let token = p.get_token_info(slot)?;
    println!(
        "  token '{}' by {} (serial {})",
        token.label(),
        token.manufacturer_id(),
        token.serial_number()
    );
    let s = p.open_ro_session(slot)?;

    println!("\nKeys on the token (one request lists them, then one per key):");
    let mut keys: Vec<(String, String)> = s
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])?
        .into_iter()
        .map(|h| (label_of(&s, h), describe(&s, h)))
        .collect();
    keys.sort();
    for (label, kind) in &keys {
        println!("  {label:<16} {kind}");
    }

    let message = b"Hello from tsb-pkcs11";
    println!("\nSigning without approvals (POST /v1/synchronousSign):");
    sign_and_check(&s, "ec-p256", &Mechanism::EcdsaSha256, message)?;
    let pss = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32u64.into(),
    };
    sign_and_check(&s, "rsa-2048", &Mechanism::Sha256RsaPkcsPss(pss), message)?;
    sign_and_check(
        &s,
        "ed25519",
        &Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
            cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
        )),
        message,
    )?;

    println!(
        "\nSigning with a Smart Key Attributes key (POST /v1/sign, then waiting for approval):"
    );
    println!("  C_Sign files an approval request and waits; an approver (here: alice, via");
    println!("  `tsb-sim approve <id> --as alice`) approves, the TSB executes, C_Sign returns.");
    sign_and_check(&s, "ska-ec-p256", &Mechanism::EcdsaSha256, message)?;

    drop(s);
    p.finalize()?;
    println!(
        "\nDone: every signature came from the TSB and verified against the key's public key."
    );
    Ok(())
}
