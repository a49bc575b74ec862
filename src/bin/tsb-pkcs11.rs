//! The `tsb-pkcs11` command; everything is in the library (`tsb_pkcs11::cli`).

fn main() {
    std::process::exit(tsb_pkcs11::cli::main_with_args(
        std::env::args_os().collect(),
    ));
}
