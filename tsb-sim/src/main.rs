//! `tsb-sim` binary: `serve` (default) and control-interface client commands.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
