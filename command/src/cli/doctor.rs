//! `tsb-pkcs11 doctor`: each step the module takes, checked in order, each problem with its
//! likely fix. Steps: configuration (file, permissions, fields, secrets), DNS, TCP, TLS (chain,
//! host name, pin, client certificate), authentication per API-key role, `versionInfo`, the key
//! list, every key (shown or left out, and why), fields or values of TSB answers the module
//! does not know, and on request one test signature verified here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Args;
use cryptoki_sys::*;
use serde::Serialize;
use serde_json::{json, Value};

use super::keys::{inspect_key, labels, KeyReport};
use super::{find_config, mode_and_owner, own_uid, take_warnings, Global, Out};
use crate::config::{AuthType, Config, PinIs, Secret};
use crate::crypto::{HashAlg, PublicKey, Scheme, SignedData};
use crate::token::{Mechanism, SignOutput, Token, SLOT_ID};
use crate::tsb::{TsbClient, TsbError, TsbErrorKind};

#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    /// Also make one test signature with this key (through the module's own signing code) and
    /// verify it. A key that needs approvals files a real approval request.
    #[arg(long, value_name = "LABEL")]
    sign: Option<String>,
    /// The environment variable holding the PIN, when `pkcs11.pinIs` is not `none` (the PIN is
    /// never taken as an argument: it would show in the process list).
    #[arg(long, value_name = "NAME")]
    pin_env: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    /// `config`, `dns`, `tcp`, `tls`, `node`, `cluster`, `auth`, `version`, `keys`, `key`,
    /// `unknown`, `sign`.
    step: &'static str,
    status: Status,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    details: Value,
}

#[derive(Default)]
struct Report {
    checks: Vec<Check>,
}

impl Report {
    fn add(
        &mut self,
        step: &'static str,
        status: Status,
        message: impl Into<String>,
    ) -> &mut Check {
        self.checks.push(Check {
            step,
            status,
            message: message.into(),
            fix: None,
            details: Value::Null,
        });
        self.checks.last_mut().expect("just pushed")
    }
    fn ok(&mut self, step: &'static str, message: impl Into<String>) -> &mut Check {
        self.add(step, Status::Ok, message)
    }
    fn fail(&mut self, step: &'static str, message: impl Into<String>, fix: Option<String>) {
        self.add(step, Status::Fail, message).fix = fix;
    }
    fn warn(&mut self, step: &'static str, message: impl Into<String>, fix: Option<String>) {
        self.add(step, Status::Warn, message).fix = fix;
    }
    /// The library's warnings since the last call, as warnings of `step`.
    fn warnings(&mut self, step: &'static str) {
        for w in take_warnings() {
            self.warn(step, w, None);
        }
    }
    fn worst(&self) -> Status {
        if self.checks.iter().any(|c| c.status == Status::Fail) {
            Status::Fail
        } else if self.checks.iter().any(|c| c.status == Status::Warn) {
            Status::Warn
        } else {
            Status::Ok
        }
    }
}

impl Check {
    fn with_details(&mut self, d: Value) -> &mut Check {
        self.details = d;
        self
    }
}

pub(crate) fn run(global: &Global, args: &DoctorArgs, out: &Out) -> Result<i32, String> {
    let mut r = Report::default();
    if let Some(config) = check_config(global, &mut r) {
        check_tsb(&config, args, &mut r);
    }
    let worst = r.worst();
    if out.json {
        out.json_doc(&json!({
            "ok": worst != Status::Fail,
            "result": worst,
            "checks": r.checks,
        }));
    } else {
        for c in &r.checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Info => "info",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.line(&format!("{tag}  {:<8} {}", c.step, c.message));
            if let Some(f) = &c.fix {
                out.line(&format!("      {:<8} fix: {f}", ""));
            }
        }
        out.line("");
        out.line(match worst {
            Status::Fail => "result: problems found (FAIL above)",
            Status::Warn => "result: works, with warnings",
            _ => "result: all checks passed",
        });
    }
    Ok(match worst {
        Status::Fail => 1,
        Status::Warn => 2,
        _ => 0,
    })
}

// ----- configuration -----

fn check_config(global: &Global, r: &mut Report) -> Option<Config> {
    let found = find_config(global);
    let searched: Vec<Value> = found
        .searched
        .iter()
        .map(|(p, e)| json!({ "path": p, "exists": e }))
        .collect();
    let Some(path) = found.path.clone() else {
        r.fail(
            "config",
            format!(
                "no configuration file: none of {} exists (the module then offers no slot)",
                found.searched_list()
            ),
            Some("run `tsb-pkcs11 config init --url https://YOUR-TSB:8080`".into()),
        );
        r.checks
            .last_mut()
            .expect("just added")
            .with_details(json!({ "searched": searched }));
        return None;
    };
    take_warnings();
    let loaded = Config::from_file(&path);
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            r.fail("config", e.to_string(), super::config_fix(&e));
            return None;
        }
    };
    let (mode, owner) = mode_and_owner(&path).unwrap_or((0, 0));
    r.ok(
        "config",
        format!(
            "{} (found by {}; mode {mode:04o}, owner uid {owner})",
            path.display(),
            found.how
        ),
    )
    .with_details(json!({ "file": path, "how": found.how, "searched": searched }));
    if let Some(me) = own_uid() {
        if owner != me && owner != 0 {
            r.warn(
                "config",
                format!("the file belongs to uid {owner}, not to this user (uid {me})"),
                Some(format!("chown {me} {}", path.display())),
            );
        }
    }
    if mode & 0o004 != 0 {
        r.warn(
            "config",
            "the file is readable by every user of this host",
            Some(format!(
                "chmod o-r {} (or keep secrets in \"env:NAME\" / \"file:/path\" values)",
                path.display()
            )),
        );
    }
    r.warnings("config");
    summarise_fields(&config, r);
    check_files(&config, &path, r);
    Some(config)
}

/// One line on what is configured (never a secret value).
fn summarise_fields(c: &Config, r: &mut Report) {
    let auth = match c.auth_type {
        AuthType::Token => "TOKEN (JWT)",
        AuthType::Cert => "CERT (mTLS client certificate)",
        AuthType::None => "NONE",
    };
    let keys = &c.api_keys;
    let s = &c.pkcs11;
    let pin = match s.pin_is {
        PinIs::None => "none",
        PinIs::Token => "token",
        PinIs::ApiKey => "apiKey",
        PinIs::KeyPassword => "keyPassword",
    };
    r.add(
        "config",
        Status::Info,
        format!(
            "restApi {}, authType {auth}, API keys: {} KeyManagement, {} KeyOperation, {} Service; \
             token '{}', pinIs {pin}, {}",
            c.rest_apis.join(" "),
            keys.key_management.len(),
            keys.key_operation.len(),
            keys.service.len(),
            s.token_label,
            match &s.keys {
                Some(l) => format!("keys limited to {}", l.join(", ")),
                None => "every key of the TSB".to_string(),
            }
        ),
    )
    .with_details(json!({
        "restApi": c.rest_apis,
        "authType": auth,
        "token": c.token.is_some(),
        "certpath": c.client_cert,
        "keypath": c.client_key,
        "caPath": c.ca_path,
        "apiKeys": {
            "KeyManagementToken": keys.key_management.len(),
            "KeyOperationToken": keys.key_operation.len(),
            "ServiceToken": keys.service.len(),
        },
        "applicationKeyPair": c.application_key_pair.is_some(),
        "pkcs11": {
            "tokenLabel": s.token_label,
            "keys": s.keys,
            "pinIs": pin,
            "keyPasswords": s.key_passwords.keys().collect::<Vec<_>>(),
            "certificates": s.certificates,
            "approvalTimeoutSecs": s.approval_wait().as_secs(),
            "requestTimeoutMs": s.request_timeout.as_millis() as u64,
            "serverCertSha256": s.server_cert_sha256.is_some(),
        }
    }));
    if c.auth_type == AuthType::Token && c.token.is_none() && s.pin_is != PinIs::Token {
        r.warn(
            "config",
            "authType is TOKEN but no token is configured",
            Some("set \"token\" (e.g. \"env:TSB_JWT\"), or authType NONE".into()),
        );
    }
    if c.auth_type == AuthType::Cert && (c.client_cert.is_none() || c.client_key.is_none()) {
        r.fail(
            "config",
            "authType is CERT but certpath or keypath is missing",
            Some("set certpath and keypath to the PEM client certificate and key".into()),
        );
    }
}

/// The files the configuration names exist and are readable.
fn check_files(c: &Config, config_path: &Path, r: &mut Report) {
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

// ----- the TSB -----

fn check_tsb(config: &Config, args: &DoctorArgs, r: &mut Report) {
    // The client as the module builds it (TLS files, insecure http, header-safe secrets).
    let client = match TsbClient::new(config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let m = e.to_string();
            let fix = if m.contains("http://") {
                Some("use https://, or set pkcs11.allowInsecureHttp if the path is trusted".into())
            } else {
                Some("correct the field named in the message".into())
            };
            r.fail("config", m, fix);
            return;
        }
    };
    r.warnings("config");
    if !check_network(config, r) {
        return;
    }
    check_nodes(config, &client, r);
    let Some(key_list) = check_auth(config, &client, r) else {
        return;
    };
    check_keys(config, &client, key_list, r);
    if let Some(label) = &args.sign {
        test_signature(config, label, args.pin_env.as_deref(), r);
    }
}

/// With several nodes (`restApi` an array): each node's state, from one `GET /v1/versionInfo`
/// on that node alone; the module fails over between them (docs/high-availability.md).
fn check_nodes(config: &Config, client: &TsbClient, r: &mut Report) {
    let urls = client.node_urls();
    if urls.len() < 2 {
        return;
    }
    let mut up = 0;
    let mut states = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let started = std::time::Instant::now();
        let outcome = client.probe_node(i);
        let ms = started.elapsed().as_millis() as u64;
        let name = format!("node {} of {} ({url})", i + 1, urls.len());
        match outcome {
            Ok(version) => {
                up += 1;
                let what = match &version {
                    Some(v) => format!("TSB version {v}"),
                    None => "answers (versionInfo needs a ServiceToken)".to_string(),
                };
                r.ok("node", format!("{name}: up, {what}, {ms} ms"));
                states.push(json!({ "url": url, "state": "up", "ms": ms, "version": version }));
            }
            Err(e) => {
                r.warn(
                    "node",
                    format!("{name}: down: {e}"),
                    Some(format!(
                        "the module uses the other nodes meanwhile; check the TSB at {url} \
                         and the network path to it"
                    )),
                );
                states
                    .push(json!({ "url": url, "state": "down", "ms": ms, "error": e.to_string() }));
            }
        }
    }
    let s = &config.pkcs11;
    let strategy = match s.node_strategy {
        crate::config::NodeStrategy::Failover => "failover",
        crate::config::NodeStrategy::Spread => "spread",
    };
    let message = format!(
        "{up} of {} nodes up; nodeStrategy {strategy}; a failed node is left alone for {} ms, \
         doubling up to {} ms",
        urls.len(),
        s.node_down_backoff.as_millis(),
        s.node_down_backoff_max.as_millis()
    );
    if up == 0 {
        r.fail(
            "cluster",
            message,
            Some("no TSB node answers: check the TSB service and restApi".into()),
        );
    } else {
        r.add("cluster", Status::Info, message)
            .with_details(json!({ "nodes": states, "nodeStrategy": strategy }));
    }
}

/// `scheme`, `host` (IPv6 without brackets) and port of the base URL.
fn endpoint(url: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((scheme.to_ascii_lowercase(), host, port))
}

/// DNS, TCP and TLS of every TSB node (`restApi`); false when no node passed (later steps
/// would only repeat the failure).
fn check_network(config: &Config, r: &mut Report) -> bool {
    let mut any = false;
    let mut failed_checks = Vec::new();
    for url in &config.rest_apis {
        let first = r.checks.len();
        let ok = check_node(config, url, r);
        if !ok {
            failed_checks.extend(first..r.checks.len());
        }
        any |= ok;
    }
    // A node the module can do without (another one is reachable) is a warning, not a failure.
    if any {
        for i in failed_checks {
            if r.checks[i].status == Status::Fail {
                r.checks[i].status = Status::Warn;
            }
        }
    }
    any
}

/// DNS, TCP and TLS of one node; false when a step failed.
fn check_node(config: &Config, url: &str, r: &mut Report) -> bool {
    let Some((scheme, host, port)) = endpoint(url) else {
        r.fail(
            "config",
            format!("restApi {url}: no host in the URL"),
            Some("write restApi as https://host:port".into()),
        );
        return false;
    };
    let deadline = config.pkcs11.request_timeout;
    // DNS, bounded: the resolver has no timeout of its own.
    let (tx, rx) = std::sync::mpsc::channel();
    let (h, p) = (host.clone(), port);
    std::thread::spawn(move || {
        let _ = tx.send(
            (h.as_str(), p)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>()),
        );
    });
    let addrs = match rx.recv_timeout(deadline) {
        Ok(Ok(a)) if !a.is_empty() => a,
        Ok(Ok(_)) => {
            r.fail(
                "dns",
                format!("{host}: no address"),
                Some("check the host name in restApi".into()),
            );
            return false;
        }
        Ok(Err(e)) => {
            r.fail(
                "dns",
                format!("{host}: cannot resolve: {e}"),
                Some(
                    "check the host name in restApi, and this host's DNS (/etc/resolv.conf)".into(),
                ),
            );
            return false;
        }
        Err(_) => {
            r.fail(
                "dns",
                format!("{host}: no answer within {} ms", deadline.as_millis()),
                Some("check this host's DNS servers".into()),
            );
            return false;
        }
    };
    r.ok(
        "dns",
        format!(
            "{host} -> {}",
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let connect = config.pkcs11.connect_timeout.min(deadline);
    let mut reached = None;
    let mut errors = Vec::new();
    for a in &addrs {
        match TcpStream::connect_timeout(a, connect) {
            Ok(_) => {
                reached = Some(*a);
                break;
            }
            Err(e) => errors.push(format!("{a}: {e}")),
        }
    }
    let Some(addr) = reached else {
        let refused = errors.iter().any(|e| e.contains("refused"));
        r.fail(
            "tcp",
            errors.join("; "),
            Some(if refused {
                format!("nothing listens on port {port}: check the port in restApi and that the TSB runs")
            } else {
                format!(
                    "check firewalls and routes to {host}:{port} (connectTimeoutMs {})",
                    connect.as_millis()
                )
            }),
        );
        return false;
    };
    r.ok("tcp", format!("connected to {addr}"));
    if scheme != "https" {
        r.add(
            "tls",
            Status::Info,
            "plain http:// (no TLS): credentials and data travel unencrypted",
        );
        return true;
    }
    match check_tls(config, &host, addr, deadline) {
        Ok(message) => {
            r.ok("tls", message);
            true
        }
        Err((message, fix)) => {
            r.fail("tls", message, fix);
            false
        }
    }
}

/// One TLS handshake with the module's TLS settings, and one request over it (a TLS 1.3 server
/// refuses a missing client certificate only after the client's handshake is done).
fn check_tls(
    config: &Config,
    host: &str,
    addr: SocketAddr,
    deadline: Duration,
) -> Result<String, (String, Option<String>)> {
    let tls = crate::tsb::client_config(config).map_err(|e| {
        (
            e,
            Some("correct the TLS file named in the message".to_string()),
        )
    })?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| (format!("{host}: not a valid TLS server name: {e}"), None))?;
    let mut conn =
        rustls::ClientConnection::new(tls, name).map_err(|e| (format!("TLS setup: {e}"), None))?;
    let mut sock =
        TcpStream::connect_timeout(&addr, deadline).map_err(|e| (format!("{addr}: {e}"), None))?;
    let _ = sock.set_read_timeout(Some(deadline));
    let _ = sock.set_write_timeout(Some(deadline));
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    let request = format!(
        "GET /v1/versionInfo HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let mut first = [0u8; 16];
    let result = stream
        .write_all(request.as_bytes())
        .and_then(|_| stream.read(&mut first));
    if let Err(e) = result {
        return Err(describe_tls_failure(config, host, &e));
    }
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let peer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| crate::crypto::Certificate::from_der(c.as_ref()).ok());
    let mut message = format!("{version} with {host}");
    if let Some(c) = peer {
        let days = (c.not_after_unix - unix_now()) / 86_400;
        message.push_str(&format!(
            "; server certificate '{}', valid {days} more days",
            c.subject_text
        ));
    }
    if config.pkcs11.server_cert_sha256.is_some() {
        message.push_str("; pin matches");
    }
    if config.client_cert.is_some() && config.client_key.is_some() {
        message.push_str("; client certificate presented and accepted");
    }
    Ok(message)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn describe_tls_failure(
    config: &Config,
    host: &str,
    e: &std::io::Error,
) -> (String, Option<String>) {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        let m = e.to_string();
        let fix = if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut
        {
            Some("the TSB does not complete the TLS handshake: is the port a TLS port? (try http:// or the right port)".into())
        } else if config.client_cert.is_none() {
            Some(
                "the TSB may require a client certificate: set authType CERT, certpath and keypath"
                    .into(),
            )
        } else {
            None
        };
        return (format!("TLS: {m}"), fix);
    };
    let text = crate::tsb::describe_tls_error(tls);
    let debug = format!("{tls:?}");
    let fix = if text.contains("serverCertSha256") {
        "the server certificate changed: if the TSB's certificate was renewed, update pkcs11.serverCertSha256 (sha256 of its DER); otherwise something is in between".to_string()
    } else if debug.contains("UnknownIssuer") || debug.contains("BadSignature") {
        format!(
            "the TSB's certificate is issued by a CA this host does not trust: set caPath to the CA's PEM file{}",
            if config.ca_path.is_some() { " (the configured caPath is another CA)" } else { "" }
        )
    } else if debug.contains("Expired") {
        "the TSB's server certificate has expired: the TSB operator must renew it (check this host's clock too)".to_string()
    } else if debug.contains("NotValidYet") {
        "the TSB's certificate is not valid yet: check this host's clock".to_string()
    } else if debug.contains("NotValidForName") {
        format!("the certificate is not issued for '{host}': use the host name it names in restApi")
    } else if debug.contains("CertificateRequired")
        || debug.contains("BadCertificate")
        || debug.contains("UnknownCA")
        || debug.contains("HandshakeFailure")
    {
        if config.client_cert.is_none() {
            "the TSB requires a client certificate: set authType CERT, certpath and keypath"
                .to_string()
        } else {
            "the TSB refused the client certificate: use one issued by a CA the TSB trusts"
                .to_string()
        }
    } else {
        "see the TLS message".to_string()
    };
    (text, Some(fix))
}

// ----- authentication and API -----

/// A random request id (no such request exists), for checking the KeyOperationToken role.
fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = super::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Service,
    KeyManagement,
    KeyOperation,
}

impl Role {
    const ALL: [Role; 3] = [Role::Service, Role::KeyManagement, Role::KeyOperation];
    fn name(self) -> &'static str {
        match self {
            Role::Service => "ServiceToken",
            Role::KeyManagement => "KeyManagementToken",
            Role::KeyOperation => "KeyOperationToken",
        }
    }
    fn keys(self, c: &Config) -> &Vec<Secret> {
        match self {
            Role::Service => &c.api_keys.service,
            Role::KeyManagement => &c.api_keys.key_management,
            Role::KeyOperation => &c.api_keys.key_operation,
        }
    }
    fn keys_mut(self, c: &mut Config) -> &mut Vec<Secret> {
        match self {
            Role::Service => &mut c.api_keys.service,
            Role::KeyManagement => &mut c.api_keys.key_management,
            Role::KeyOperation => &mut c.api_keys.key_operation,
        }
    }
}

/// What one role's probe returned.
enum Probe {
    Version(Value),
    Keys(Value),
    Operation,
}

/// One call of the role's endpoint: `versionInfo`, the key list, a request status (an
/// unknown id answers 651 when the caller is authenticated).
fn probe(client: &TsbClient, role: Role, config: &Config) -> Result<Probe, TsbError> {
    match role {
        Role::Service => client
            .get_json("GET /v1/versionInfo", "/v1/versionInfo".into())
            .map(Probe::Version),
        Role::KeyManagement => match &config.pkcs11.keys {
            // With an allow-list the module never lists keys; read one key instead.
            Some(list) if !list.is_empty() => client
                .key_attributes(&list[0], config.pkcs11.key_passwords.get(&list[0]))
                .map(|_| Probe::Keys(Value::Null))
                .or_else(|e| match e.tsb_code() {
                    Some(650) | Some(620) => Ok(Probe::Keys(Value::Null)),
                    _ => Err(e),
                }),
            _ => client
                .get_json("GET /v1/key", "/v1/key".into())
                .map(Probe::Keys),
        },
        Role::KeyOperation => match client.request_status(&random_id()) {
            Err(e) if e.tsb_code() == Some(651) => Ok(Probe::Operation),
            Err(e) => Err(e),
            Ok(_) => Ok(Probe::Operation),
        },
    }
}

/// Authentication per role, `versionInfo` and the key list. `None` when nothing more can be
/// checked; else the key list's labels (`None` inside when the key list failed).
fn check_auth(config: &Config, client: &TsbClient, r: &mut Report) -> Option<Option<Value>> {
    let mut key_list = None;
    let mut any_ok = false;
    for role in Role::ALL {
        let keys = role.keys(config);
        let with = if keys.is_empty() {
            "no API key".to_string()
        } else {
            format!("{} API key(s)", keys.len())
        };
        match probe(client, role, config) {
            Ok(p) => {
                any_ok = true;
                r.ok("auth", format!("{}: accepted ({with})", role.name()));
                match p {
                    Probe::Version(v) => {
                        let (version, unknown) =
                            crate::tsb::models::parse_version_info_checked(&v).unwrap_or_default();
                        let version = version.unwrap_or_else(|| "?".to_string());
                        r.ok("version", format!("TSB version {version}"));
                        report_unknown(r, "GET /v1/versionInfo", &unknown);
                    }
                    Probe::Keys(v) => key_list = Some(v),
                    Probe::Operation => {}
                }
            }
            Err(e) => {
                let (message, fix) = explain_auth(config, role, &e);
                r.fail("auth", format!("{}: {message}", role.name()), fix);
            }
        }
        r.warnings("auth");
    }
    if !any_ok {
        return None;
    }
    Some(key_list)
}

/// Why a role's call failed, and the fix.
fn explain_auth(config: &Config, role: Role, e: &TsbError) -> (String, Option<String>) {
    let m = e.to_string();
    match &e.kind {
        TsbErrorKind::Http { status: 401, code: Some(617), .. } => {
            if config.pkcs11.pin_is == PinIs::Token {
                (m, Some("the JWT is the PIN (pinIs token): doctor checks with --pin-env NAME".into()))
            } else if config.auth_type != AuthType::Token || config.token.is_none() {
                (m, Some("the TSB requires a JWT: set authType TOKEN and token".into()))
            } else {
                (
                    format!("the TSB refused the JWT: {m}"),
                    Some("the token is expired, malformed or for another TSB: put a fresh JWT in `token`".into()),
                )
            }
        }
        TsbErrorKind::Http { status: 401, code: Some(631), .. } => explain_api_key(config, role, m),
        TsbErrorKind::Http { status: 401, code: Some(632), .. } => (
            m,
            Some("the TSB requires a client certificate: set authType CERT, certpath and keypath".into()),
        ),
        TsbErrorKind::Http { status: 403, .. } => (
            m,
            Some(format!("the credentials lack the right for {}: ask the TSB operator", role.name())),
        ),
        TsbErrorKind::Http { status: 404, code: None, .. } => (
            m,
            Some("no TSB API at this URL: restApi must be the TSB's base URL (e.g. https://host:8080)".into()),
        ),
        TsbErrorKind::Http { status, .. } if *status >= 500 => (
            m,
            Some("the TSB or the HSM behind it has a problem: try again, then ask the TSB operator".into()),
        ),
        TsbErrorKind::InvalidResponse(_) => (
            m,
            Some("the answer is not the TSB's: is a proxy in between, or restApi pointing elsewhere?".into()),
        ),
        TsbErrorKind::NotSent(_) | TsbErrorKind::Timeout(_) | TsbErrorKind::Transport(_) => (
            m,
            Some("see the network and TLS checks; raise pkcs11.requestTimeoutMs if the TSB is slow".into()),
        ),
        _ => (m, None),
    }
}

/// A 631 (invalid API key): no key configured, a key of another role, or an invalid key.
fn explain_api_key(config: &Config, role: Role, m: String) -> (String, Option<String>) {
    let keys = role.keys(config);
    if keys.is_empty() {
        return (
            format!("the TSB requires a {} API key: {m}", role.name()),
            Some(format!(
                "add \"apiKeys\": {{\"{}\": [\"env:NAME\"]}}",
                role.name()
            )),
        );
    }
    // Is one of this role's keys a key of another role?
    for (i, k) in keys.iter().enumerate() {
        for other in Role::ALL.into_iter().filter(|o| *o != role) {
            let mut c = config.clone();
            *other.keys_mut(&mut c) = vec![k.clone()];
            let Ok(client) = TsbClient::new(&c) else {
                continue;
            };
            if probe(&client, other, &c).is_ok() {
                take_warnings();
                return (
                    format!(
                        "apiKeys.{}[{i}] is refused here but accepted as a {} key",
                        role.name(),
                        other.name()
                    ),
                    Some(format!(
                        "the key is in the wrong list: move it to apiKeys.{} and put the {} key in apiKeys.{}",
                        other.name(),
                        role.name(),
                        role.name()
                    )),
                );
            }
        }
    }
    take_warnings();
    (
        format!("every apiKeys.{} key was refused: {m}", role.name()),
        Some(format!(
            "put a valid {} key in apiKeys.{}",
            role.name(),
            role.name()
        )),
    )
}

fn report_unknown(r: &mut Report, what: &str, fields: &[String]) {
    if fields.is_empty() {
        return;
    }
    r.warn(
        "unknown",
        format!(
            "{what}: the TSB sent field(s) this module does not know: {}",
            fields.join(", ")
        ),
        Some("the TSB differs from the contract this module was built for; the fields are ignored. Report them (with `tsb-pkcs11 doctor --json`) if keys or signatures misbehave".into()),
    );
    r.checks
        .last_mut()
        .expect("just added")
        .with_details(json!({ "endpoint": what, "fields": fields }));
}

// ----- keys -----

fn check_keys(config: &Config, client: &TsbClient, key_list: Option<Value>, r: &mut Report) {
    if let Some(v) = &key_list {
        if !v.is_null() && !v.is_array() {
            r.warn(
                "unknown",
                "GET /v1/key: the answer is not a plain array of labels (the module reads it anyway)",
                None,
            );
        }
    }
    let labels = match labels(client, config) {
        Ok(l) => l,
        Err(e) => {
            let (m, fix) = explain_auth(config, Role::KeyManagement, &e);
            r.fail("keys", m, fix);
            return;
        }
    };
    if labels.is_empty() {
        r.fail(
            "keys",
            "the TSB lists no key",
            Some("create keys on the HSM partition the TSB serves, or check that the credentials are for the right partition".into()),
        );
        return;
    }
    let mut shown = 0;
    for label in &labels {
        match inspect_key(client, config, label) {
            Ok(k) => {
                if k.shown {
                    shown += 1;
                }
                report_key(r, &k);
            }
            Err(e) => {
                let (m, fix) = explain_auth(config, Role::KeyManagement, &e);
                r.fail("key", format!("'{label}': {m}"), fix);
            }
        }
        r.warnings("key");
    }
    if shown == 0 {
        r.fail(
            "keys",
            format!(
                "none of the {} key(s) would be shown on the token",
                labels.len()
            ),
            Some("see why each key is left out above".into()),
        );
    } else {
        r.ok(
            "keys",
            format!(
                "{shown} of {} key(s) shown on token '{}'",
                labels.len(),
                config.pkcs11.token_label
            ),
        );
    }
}

fn report_key(r: &mut Report, k: &KeyReport) {
    let details = serde_json::to_value(k).unwrap_or(Value::Null);
    if k.shown {
        let mut m = format!(
            "'{}': shown, {}; approval: {}; certificate: {}; password: {}",
            k.label,
            k.key_type.as_deref().unwrap_or("?"),
            k.approval,
            k.certificate.as_deref().unwrap_or("none"),
            k.password
        );
        for n in &k.notes {
            m.push_str(&format!("; {n}"));
        }
        r.ok("key", m).with_details(details);
    } else {
        let m = format!(
            "'{}': left out: {}",
            k.label,
            k.left_out.as_deref().unwrap_or("?")
        );
        let status = if k.fix.is_some() {
            Status::Warn
        } else {
            Status::Info
        };
        let c = r.add("key", status, m);
        c.fix = k.fix.clone();
        c.with_details(details);
    }
    report_unknown(
        r,
        &format!("GET /v1/key/{}/attributes", k.label),
        &k.unknown_fields,
    );
    if !k.unknown_values.is_empty() {
        r.warn(
            "unknown",
            format!(
                "key '{}': value(s) this module does not know: {}",
                k.label,
                k.unknown_values.join(", ")
            ),
            Some(
                "the key may be left out or misread; report it with `tsb-pkcs11 doctor --json`"
                    .into(),
            ),
        );
    }
}

// ----- test signature -----

fn test_signature(config: &Config, label: &str, pin_env: Option<&str>, r: &mut Report) {
    match sign_once(config, label, pin_env) {
        Ok((message, details)) => {
            r.ok("sign", message).with_details(details);
        }
        Err((message, fix)) => r.fail("sign", message, fix),
    }
    r.warnings("sign");
}

type Failure = (String, Option<String>);

fn sign_once(
    config: &Config,
    label: &str,
    pin_env: Option<&str>,
) -> Result<(String, Value), Failure> {
    let plain = |e: crate::Error| (format!("'{label}': {e}"), None);
    let token = Token::new(config.clone(), true).map_err(plain)?;
    let session = token
        .open_session(SLOT_ID, CKF_SERIAL_SESSION, None)
        .map_err(plain)?;
    if config.pkcs11.pin_is != PinIs::None {
        let Some(var) = pin_env else {
            return Err((
                "a login is needed (pkcs11.pinIs is not none)".into(),
                Some("pass --pin-env NAME with the PIN in that environment variable".into()),
            ));
        };
        let pin = std::env::var(var)
            .map_err(|_| (format!("environment variable {var} is not set"), None))?;
        token
            .login(session, CKU_USER, pin.as_bytes())
            .map_err(|e| (format!("login: {e}"), Some("check the PIN".into())))?;
    }
    let Some(handle) = super::csr::private_key_by_label(&token, session, label).map_err(plain)?
    else {
        return Err((
            format!("no private key '{label}' on the token"),
            Some("pick a key doctor lists as shown (`tsb-pkcs11 keys`)".into()),
        ));
    };
    let key_type = match token
        .attribute_values(session, handle, &[CKA_KEY_TYPE])
        .map_err(plain)?
        .pop()
    {
        Some(crate::token::attributes::AttrValue::Bytes(b)) if b.len() == 8 || b.len() == 4 => {
            let mut v = [0u8; std::mem::size_of::<CK_ULONG>()];
            v[..b.len()].copy_from_slice(&b);
            CK_ULONG::from_ne_bytes(v)
        }
        _ => return Err((format!("'{label}': no key type"), None)),
    };
    let (mechanism, name, scheme) = match key_type {
        CKK_RSA => (
            CKM_SHA256_RSA_PKCS,
            "CKM_SHA256_RSA_PKCS",
            Scheme::RsaPkcs1v15(HashAlg::Sha256),
        ),
        CKK_EC => (
            CKM_ECDSA_SHA256,
            "CKM_ECDSA_SHA256",
            Scheme::Ecdsa(HashAlg::Sha256),
        ),
        CKK_EC_EDWARDS => (CKM_EDDSA, "CKM_EDDSA", Scheme::Ed25519),
        other => {
            return Err((
                format!("'{label}': key type {other:#x} cannot sign here"),
                None,
            ))
        }
    };
    let data = format!("tsb-pkcs11 doctor test signature {}", unix_now()).into_bytes();
    token
        .sign_init(session, &Mechanism::new(mechanism), handle)
        .map_err(plain)?;
    let started = std::time::Instant::now();
    let signature = match token.sign(session, &data, Some(16 * 1024)) {
        Ok(SignOutput::Signature(s)) => s,
        Ok(SignOutput::Length(_)) => return Err((format!("'{label}': no signature"), None)),
        Err(e) => {
            return Err((
                format!("'{label}': {e}"),
                Some("see `tsb-pkcs11 keys --all` and docs/troubleshooting.md".into()),
            ))
        }
    };
    let took = started.elapsed();
    // Verified here against the public key as the TSB gives it (not the module's object).
    let client = token.client().map_err(plain)?;
    let spki = client
        .key_attributes(label, config.pkcs11.key_passwords.get(label))
        .ok()
        .and_then(|a| a.public_key)
        .ok_or_else(|| (format!("'{label}': cannot read its public key"), None))?;
    let public = PublicKey::from_spki(&spki).map_err(|e| (format!("'{label}': {e}"), None))?;
    crate::crypto::verify(&public, &scheme, SignedData::Message(&data), &signature).map_err(
        |e| {
            (
                format!("'{label}': the signature does not verify: {e}"),
                Some("the TSB returned a wrong signature: report it to the TSB operator".into()),
            )
        },
    )?;
    token.finalize();
    Ok((
        format!(
            "'{label}': {name} signature made in {} ms and verified",
            took.as_millis()
        ),
        json!({
            "key": label,
            "mechanism": name,
            "data": STANDARD.encode(&data),
            "signature": STANDARD.encode(&signature),
            "publicKey": STANDARD.encode(&spki),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_of_urls() {
        let e = |u: &str| endpoint(u).map(|(s, h, p)| format!("{s} {h} {p}"));
        assert_eq!(
            e("https://tsb.example:8080").as_deref(),
            Some("https tsb.example 8080")
        );
        assert_eq!(
            e("https://tsb.example").as_deref(),
            Some("https tsb.example 443")
        );
        assert_eq!(
            e("http://127.0.0.1:1/x").as_deref(),
            Some("http 127.0.0.1 1")
        );
        assert_eq!(e("https://[::1]:9443").as_deref(), Some("https ::1 9443"));
        assert_eq!(e("https://[::1]").as_deref(), Some("https ::1 443"));
        assert_eq!(e("https://h:notaport"), None);
    }
}
