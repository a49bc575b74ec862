//! Generates the C header of the `extern "C"` entry points with cbindgen into `OUT_DIR`
//! (a build never writes into the source tree, so `cargo package` works). The header is also
//! checked in as `include/tsb_pkcs11.h`; `tests/module/header.rs` fails when that copy differs from the
//! generated one (`scripts/header.sh` refreshes it).

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
            let out = std::env::var("OUT_DIR").expect("OUT_DIR");
            bindings.write_to_file(format!("{out}/tsb_pkcs11.h"));
        }
        // A syntax error elsewhere is reported by rustc itself; don't mask it here.
        Err(e) => println!("cargo:warning=cbindgen could not generate the header: {e}"),
    }
}
