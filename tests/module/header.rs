//! The checked-in C header `include/tsb_pkcs11.h` must be what cbindgen makes of the module's
//! entry points (module/src/ffi, settings in module/cbindgen.toml), so C users of the repository
//! get the current one. The header is generated here rather than by a build script of the
//! module, so building the module (the demo, a package) does not compile cbindgen.
//! `scripts/header.sh` runs this test and copies the header it generated over the checked-in one.

use std::path::Path;

#[test]
fn checked_in_header_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let module = root.join("module");
    let config = cbindgen::Config::from_file(module.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&module)
        .with_config(config)
        .generate()
        .expect("cbindgen reads module/src");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    // scripts/header.sh copies it from here.
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("tsb_pkcs11.h"),
        &generated,
    )
    .expect("write the generated header");
    for f in [
        "C_GetFunctionList",
        "C_GetInterface",
        "C_Initialize",
        "C_Sign",
        "C_SignFinal",
    ] {
        assert!(generated.contains(&format!("CK_RV {f}(")), "{f} declared");
    }
    let checked_in = std::fs::read_to_string(root.join("include/tsb_pkcs11.h"))
        .expect("include/tsb_pkcs11.h exists");
    assert!(
        generated == checked_in,
        "include/tsb_pkcs11.h is stale: run scripts/header.sh and commit it"
    );
}
