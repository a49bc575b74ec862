//! `tsb-sim` binary: `serve` (default) and control-interface client commands.
#![forbid(unsafe_code)]

mod cli;

fn main() {
    std::process::exit(cli::run());
}
