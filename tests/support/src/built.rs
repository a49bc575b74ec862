//! The built module and command the integration tests drive. They belong to other packages of
//! the workspace (`module/`: libtsb_pkcs11.so, `command/`: the `tsb-pkcs11` binary), which
//! cargo does not build for the core crate's tests, so the first test of a process that needs
//! them runs `cargo build --workspace --lib --bin tsb-pkcs11` in the test's profile: a no-op
//! when they are fresh, and never a test against a stale module. `--workspace` and not
//! `-p tsb-pkcs11 -p tsb-pkcs11-command`: cargo unifies the features of dependencies over the
//! packages one command builds, so building only these two would compile most dependencies a
//! second time, with other features, after scripts/test.sh's `cargo build --workspace`. `TSB_PKCS11_MODULE` and
//! `TSB_PKCS11_COMMAND` name other builds (scripts/sanitize.sh: instrumented ones) and skip it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// target/<profile> of the running test executable (target/<profile>/deps/<test>).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds the module and the command once per process; returns target/<profile>.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = profile_dir();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .expect("workspace root");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-q", "--workspace", "--lib", "--bin", "tsb-pkcs11"])
            .arg("--target-dir")
            .arg(dir.parent().expect("target dir"))
            .current_dir(workspace);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        // Variables cargo sets for this test process: build scripts that watch them (ring's
        // does) would see a change and rebuild, and the next plain `cargo build` rebuild back.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&k.as_ref())
            {
                build.env_remove(k.as_ref());
            }
        }
        let status = build.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --workspace --lib --bin tsb-pkcs11 failed: {status}"
        );
        dir
    })
}

/// libtsb_pkcs11.so (target/<profile>/, or `TSB_PKCS11_MODULE`).
pub fn module() -> PathBuf {
    match std::env::var_os("TSB_PKCS11_MODULE").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => built().join("libtsb_pkcs11.so"),
    }
}

/// The `tsb-pkcs11` command (target/<profile>/, or `TSB_PKCS11_COMMAND`).
pub fn command() -> PathBuf {
    match std::env::var_os("TSB_PKCS11_COMMAND").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => built().join("tsb-pkcs11"),
    }
}
