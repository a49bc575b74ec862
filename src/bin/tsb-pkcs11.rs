//! The `tsb-pkcs11` command; everything is in the library (`src/cli`).

fn main() {
    std::process::exit(tsb_pkcs11::main_with_args(std::env::args_os().collect()));
}
