//! `tsb-pkcs11 config init`: a starting configuration, or a Securosys Notation plugin
//! `config.json` taken over and checked.
//!
//! JSON has no comments, and the parser warns about unknown fields (a `"_comment"` field would
//! warn at every `C_Initialize`), so the explanation goes into a companion file,
//! `config-notes.txt`, next to the configuration.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::{json, Map, Value};

use super::common::{Global, Out};
use crate::config::Config;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Auth {
    /// A JWT (`token`, read from an environment variable).
    Token,
    /// An mTLS client certificate (`certpath`, `keypath`).
    Cert,
    /// Neither (API keys may be added).
    None,
}

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// The TSB's base URL, e.g. https://tsb.example.com:8080.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// How the module authenticates to the TSB.
    #[arg(long, value_enum, default_value = "token")]
    auth: Auth,
    /// The environment variable that will hold the JWT (authType TOKEN): the file then holds
    /// no secret.
    #[arg(long, value_name = "NAME", default_value = "TSB_JWT")]
    token_env: String,
    /// The client certificate (PEM) for authType CERT.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM) for authType CERT.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) of the TSB's server certificate, when not in the system store.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Take over this Securosys Notation plugin config.json (checked; relative paths made
    /// absolute) instead of writing a new configuration.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["url", "cert", "key"])]
    from_notation: Option<PathBuf>,
    /// Where to write (default: $XDG_CONFIG_HOME/tsb-pkcs11/config.json, else
    /// ~/.config/tsb-pkcs11/config.json).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

const NOTES: &str = "\
Notes on config.json (written by `tsb-pkcs11 config init`; JSON has no comments).
Reference: docs/configuration.md of tsb-pkcs11.

restApi      the TSB's base URL (https://host:port; a trailing / or /v1 is fine).
authType     TOKEN (JWT in \"token\"), CERT (mTLS: \"certpath\" + \"keypath\"), NONE.
token        \"env:NAME\" reads the JWT from the environment variable NAME of the
             application using the module; \"file:/path\" reads it from a file. A literal
             JWT works too, but then keep this file mode 0600.
certpath,    PEM client certificate and private key for authType CERT.
keypath
caPath       PEM file with the CA of the TSB's server certificate, if the system store
             does not hold it.
apiKeys      {\"KeyManagementToken\": [..], \"KeyOperationToken\": [..], \"ServiceToken\": [..]}
             when the TSB uses API keys (values may be \"env:NAME\" too).
pkcs11       settings of this module: tokenLabel (the token's name, default TSB), keys
             (allow-list of key labels), pinIs, keyPasswords, approvalTimeoutSecs,
             certificates, requestTimeoutMs, serverCertSha256, requestJournal, ...

Next: `tsb-pkcs11 doctor` checks this file, the network path and every key;
`tsb-pkcs11 keys` lists the keys with their PKCS#11 URIs.
";

/// The default place: the first per-user file of the module's search path.
fn default_output() -> Result<PathBuf, String> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
        if x.is_absolute() {
            return Ok(x.join("tsb-pkcs11").join("config.json"));
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or("HOME is not set: give --output FILE")?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("tsb-pkcs11")
        .join("config.json"))
}

pub(crate) fn run(_global: &Global, args: &InitArgs, out: &Out) -> Result<i32, String> {
    let output = match &args.output {
        Some(o) => o.clone(),
        None => default_output()?,
    };
    if std::fs::symlink_metadata(&output).is_ok() && !args.force {
        return Err(format!(
            "{} exists; give --force to replace it, or --output FILE",
            output.display()
        ));
    }
    let (config, mut notes) = match &args.from_notation {
        Some(src) => from_notation(src)?,
        None => (fresh(args)?, Vec::new()),
    };
    let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())? + "\n";
    write_private(&output, text.as_bytes(), args.force)
        .map_err(|e| format!("{}: {e}", output.display()))?;
    let notes_path = output.with_file_name("config-notes.txt");
    if let Err(e) = std::fs::write(&notes_path, NOTES) {
        notes.push(format!("{}: not written: {e}", notes_path.display()));
    }
    // The module's own parser checks what was written.
    let check = Config::from_file(&output);
    let warnings = super::common::take_warnings();
    // A secret's variable is exported where the application runs, not necessarily here.
    let check = match check {
        Err(e) if e.message.contains("is not set") => {
            notes.push(format!(
                "{}: set it in the environment of the applications that use the module",
                e.message
            ));
            Ok(())
        }
        other => other.map(|_| ()),
    };
    let ok = check.is_ok();
    if out.json {
        out.json_doc(&json!({
            "ok": ok,
            "file": output,
            "notes": notes_path,
            "check": check.as_ref().err().map(|e| e.to_string()),
            "warnings": warnings.iter().chain(notes.iter()).collect::<Vec<_>>(),
        }));
    } else {
        out.line(&format!("wrote {} (mode 0600)", output.display()));
        out.line(&format!("notes on every field: {}", notes_path.display()));
        for n in notes.iter().chain(warnings.iter()) {
            out.line(&format!("note: {n}"));
        }
        match &check {
            Ok(_) => out.line("the module reads it without error; next: tsb-pkcs11 doctor"),
            Err(e) => out.line(&format!("the module refuses it: {e}")),
        }
        if args.url.is_none() && args.from_notation.is_none() {
            out.line("set restApi to your TSB's URL (the file holds a placeholder)");
        }
    }
    Ok(if ok { 0 } else { 1 })
}

fn absolute(p: &Path) -> Result<String, String> {
    std::path::absolute(p)
        .map(|a| a.display().to_string())
        .map_err(|e| format!("{}: {e}", p.display()))
}

fn fresh(args: &InitArgs) -> Result<Value, String> {
    let mut c = Map::new();
    c.insert(
        "restApi".into(),
        json!(args
            .url
            .clone()
            .unwrap_or_else(|| "https://tsb.example.com:8080".into())),
    );
    match args.auth {
        Auth::Token => {
            c.insert("authType".into(), json!("TOKEN"));
            c.insert("token".into(), json!(format!("env:{}", args.token_env)));
        }
        Auth::Cert => {
            let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
                return Err("--auth cert needs --cert FILE and --key FILE".into());
            };
            c.insert("authType".into(), json!("CERT"));
            c.insert("certpath".into(), json!(absolute(cert)?));
            c.insert("keypath".into(), json!(absolute(key)?));
        }
        Auth::None => {
            c.insert("authType".into(), json!("NONE"));
        }
    }
    if let Some(ca) = &args.ca {
        c.insert("caPath".into(), json!(absolute(ca)?));
    }
    c.insert("pkcs11".into(), json!({ "tokenLabel": "TSB" }));
    Ok(Value::Object(c))
}

/// Reads a Notation plugin configuration: the same fields, so it is taken over as it is, with
/// relative paths made absolute (they were relative to the old file) and an empty `pkcs11`.
fn from_notation(src: &Path) -> Result<(Value, Vec<String>), String> {
    let mut text = String::new();
    std::fs::File::open(src)
        .and_then(|f| f.take(1024 * 1024).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", src.display()))?;
    // Checked first as the module would read it in its place.
    Config::from_json_str(&text, &src.display().to_string()).map_err(|e| e.to_string())?;
    let mut v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", src.display()))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| format!("{}: not a JSON object", src.display()))?;
    let base = src.parent().unwrap_or(Path::new("."));
    let mut notes = Vec::new();
    for field in ["certpath", "keypath", "caPath"] {
        if let Some(Value::String(p)) = obj.get(field) {
            let path = Path::new(p);
            if !p.is_empty() && path.is_relative() {
                let abs = absolute(&base.join(path))?;
                notes.push(format!("{field}: relative path made absolute: {abs}"));
                obj.insert(field.into(), json!(abs));
            }
        }
    }
    let literal = |v: &Value| {
        v.as_str()
            .is_some_and(|s| !s.is_empty() && !s.starts_with("env:") && !s.starts_with("file:"))
    };
    let mut secrets = Vec::new();
    if obj.get("token").is_some_and(literal) {
        secrets.push("token".to_string());
    }
    if let Some(Value::Object(keys)) = obj.get("apiKeys") {
        for (role, list) in keys {
            let n = list
                .as_array()
                .map_or(0, |l| l.iter().filter(|k| literal(k)).count());
            if n > 0 {
                secrets.push(format!("apiKeys.{role}"));
            }
        }
    }
    if obj
        .get("applicationKeyPair")
        .and_then(|a| a.get("privateKey"))
        .is_some_and(literal)
    {
        secrets.push("applicationKeyPair.privateKey".into());
    }
    if !secrets.is_empty() {
        notes.push(format!(
            "literal secrets copied ({}); the file is mode 0600, or move them to \"env:NAME\" / \"file:/path\" values",
            secrets.join(", ")
        ));
    }
    obj.entry("pkcs11").or_insert_with(|| json!({}));
    Ok((v, notes))
}

/// Writes `data` to a new file of mode 0600 (folder 0700), never through a symbolic link.
fn write_private(path: &Path, data: &[u8], replace: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if replace {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o.open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}
