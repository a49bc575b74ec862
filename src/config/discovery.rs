//! Finding the configuration file, deciding whether it can be trusted, and reading every file
//! the module is told to read.
//!
//! Every such file (the configuration, `file:` secrets, `caPath`, `certpath`/`keypath`,
//! `pkcs11.certificates`) goes through [`read_regular_file`](super::reader::read_regular_file): it
//! must be a regular file of at most [`MAX_FILE_SIZE`](super::reader::MAX_FILE_SIZE) bytes. A FIFO would block `C_Initialize` forever, `/dev/zero` would be
//! read until memory runs out, and a huge file would abort the host application.
//!
//! The configuration file itself must moreover be safe from other users, like OpenSSH's
//! `StrictModes`: owned by the running user or root, not writable by group or others, in folders
//! that others cannot write (a world-writable folder is accepted only with the sticky bit and
//! owned by root or the running user, like `/tmp`).

use std::io;
use std::path::{Path, PathBuf};

use super::reader::{open_regular, read_opened};
use super::settings::{Config, ConfigError, CONFIG_ENV};

/// The file name of the system-wide configuration.
const SYSTEM_CONFIG: &str = "/etc/tsb-pkcs11/config.json";

/// The search order, from the values of `TSB_PKCS11_CONFIG`, `XDG_CONFIG_HOME` and `HOME`.
pub(super) fn search_paths_from(
    config_env: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = config_env.filter(|p| !p.is_empty()) {
        paths.push(PathBuf::from(p));
    }
    if let Some(xdg) = xdg.filter(|p| !p.is_empty()) {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            paths.push(xdg.join("tsb-pkcs11").join("config.json"));
        }
    }
    if let Some(home) = home.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(home)
            .join(".config")
            .join("tsb-pkcs11")
            .join("config.json");
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    paths.push(PathBuf::from(SYSTEM_CONFIG));
    paths
}

/// Loads the first existing file of `paths`.
pub(super) fn load_first(paths: &[PathBuf]) -> Result<Config, ConfigError> {
    for path in paths {
        if path.exists() {
            return Config::from_file(path);
        }
    }
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(ConfigError {
        file: "<none>".to_string(),
        field: None,
        message: format!(
            "no configuration file found (looked in {}); set {CONFIG_ENV} to its path",
            list.join(", ")
        ),
    })
}

/// The configuration file's text, read once it is known to be safe from other users.
pub(super) struct ConfigText {
    pub(super) text: String,
    /// The file's permission bits (`None` off Unix).
    pub(super) mode: Option<u32>,
}

/// Opens, checks and reads the configuration file. Errors are whole-file messages.
pub(super) fn read_config_file(path: &Path) -> Result<ConfigText, String> {
    let (file, meta) = match open_regular(path) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err("not a regular file".to_string())
        }
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let file_name = path.display().to_string();
    let mode = unix::check_file(&meta, &file_name)?;
    unix::check_folders(path)?;
    let bytes = read_opened(file, &meta).map_err(|e| format!("cannot read: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "cannot read: not valid UTF-8".to_string())?;
    Ok(ConfigText { text, mode })
}

#[cfg(all(test, unix))]
pub(super) use unix::check_folders_as;

#[cfg(unix)]
mod unix {
    use std::fs::Metadata;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    const STICKY: u32 = 0o1000;

    /// The owner and mode of the configuration file itself: owned by the running user or root,
    /// not writable by group or others.
    pub(super) fn check_file(meta: &Metadata, file: &str) -> Result<Option<u32>, String> {
        let mode = meta.permissions().mode();
        let me = crate::os::effective_uid();
        let owner = meta.uid();
        if owner != me && owner != 0 {
            return Err(format!(
                "refusing a file owned by another user (uid {owner}): another user could change \
                 it; make it yours (uid {me}) or root's: chown {me} {file}"
            ));
        }
        if mode & 0o022 != 0 {
            return Err(format!(
                "refusing a file writable by group or others (mode {:04o}); run: chmod go-w {}",
                mode & 0o7777,
                file
            ));
        }
        Ok(Some(mode))
    }

    /// Every folder above the file (as named, and as resolved through symlinks) must not be
    /// writable by others, unless it has the sticky bit and is owned by root or the running
    /// user (then others cannot replace a file they do not own).
    pub(super) fn check_folders(path: &Path) -> Result<(), String> {
        check_folders_as(path, crate::os::effective_uid())
    }

    /// [`check_folders`] for the user `me`.
    pub(in crate::config) fn check_folders_as(path: &Path, me: u32) -> Result<(), String> {
        let mut chains: Vec<PathBuf> = Vec::new();
        if let Ok(abs) = std::path::absolute(path) {
            chains.push(abs);
        }
        if let Ok(real) = std::fs::canonicalize(path) {
            chains.push(real);
        }
        for chain in &chains {
            for dir in chain.ancestors().skip(1) {
                if dir.as_os_str().is_empty() {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(dir) else {
                    continue;
                };
                let mode = meta.permissions().mode();
                if mode & 0o002 == 0 {
                    continue;
                }
                let owner = meta.uid();
                if mode & STICKY != 0 && (owner == 0 || owner == me) {
                    continue;
                }
                return Err(format!(
                    "refusing a file in folder {} which others can write (mode {:04o}, owner \
                     uid {owner}): another user could replace the file; run: chmod o-w {} (or \
                     move the file)",
                    dir.display(),
                    mode & 0o7777,
                    dir.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(not(unix))]
mod unix {
    use std::fs::Metadata;
    use std::path::Path;

    pub(super) fn check_file(_meta: &Metadata, _file: &str) -> Result<Option<u32>, String> {
        Ok(None)
    }

    pub(super) fn check_folders(_path: &Path) -> Result<(), String> {
        Ok(())
    }
}
