//! Generates `include/tsb_pkcs11.h` from the `extern "C"` entry points with cbindgen.
//! The header is checked in; `tests/header.rs` fails when the checked-in copy is stale.

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    // `cargo fuzz` builds the library with `--cfg fuzzing` (src/fuzzing.rs).
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let config =
        cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml")).expect("cbindgen.toml");
    match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(format!("{crate_dir}/include/tsb_pkcs11.h"));
        }
        // A syntax error elsewhere is reported by rustc itself; don't mask it here.
        Err(e) => println!("cargo:warning=cbindgen could not generate the header: {e}"),
    }
}
