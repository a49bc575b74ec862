//! The files the configuration names (CA, client certificate and key, certificates of keys)
//! exist and are readable; the private key is not readable by others.

use std::path::Path;

use super::report::Report;
use crate::cli::mode_and_owner;
use crate::config::Config;

/// The files the configuration names exist and are readable.
pub(super) fn check_files(c: &Config, config_path: &Path, r: &mut Report) {
    let mut files: Vec<(String, &Path)> = Vec::new();
    if let Some(p) = &c.ca_path {
        files.push(("caPath".into(), p));
    }
    if let Some(p) = &c.client_cert {
        files.push(("certpath".into(), p));
    }
    if let Some(p) = &c.client_key {
        files.push(("keypath".into(), p));
    }
    for (label, p) in &c.pkcs11.certificates {
        files.push((format!("pkcs11.certificates.{label}"), p));
    }
    for (field, p) in files {
        match std::fs::File::open(p) {
            Ok(_) => {}
            Err(e) => r.fail(
                "config",
                format!("{field}: {}: {e}", p.display()),
                Some(format!(
                    "correct {field} in {} (relative paths are relative to it)",
                    config_path.display()
                )),
            ),
        }
        if field == "keypath" {
            if let Some((mode, _)) = mode_and_owner(p) {
                if mode & 0o044 != 0 {
                    r.warn(
                        "config",
                        format!(
                            "keypath {}: the private key is readable by others (mode {mode:04o})",
                            p.display()
                        ),
                        Some(format!("chmod 600 {}", p.display())),
                    );
                }
            }
        }
    }
}
