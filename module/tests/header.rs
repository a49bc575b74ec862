//! build.rs generates the C header into `OUT_DIR` (cbindgen); the checked-in copy
//! `include/tsb_pkcs11.h` must be identical, so C users of the repository get the current one.
//! `scripts/header.sh` copies the generated header over the checked-in one.

#[test]
fn checked_in_header_is_current() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/tsb_pkcs11.h"));
    let root = env!("CARGO_MANIFEST_DIR");
    let checked_in =
        std::fs::read_to_string(std::path::Path::new(root).join("../include/tsb_pkcs11.h"))
            .expect("include/tsb_pkcs11.h exists");
    for f in [
        "C_GetFunctionList",
        "C_GetInterface",
        "C_Initialize",
        "C_Sign",
        "C_SignFinal",
    ] {
        assert!(generated.contains(&format!("CK_RV {f}(")), "{f} declared");
    }
    assert!(
        generated == checked_in,
        "include/tsb_pkcs11.h is stale: run scripts/header.sh and commit it"
    );
}
