use super::discovery::{load_first, search_paths_from};
use super::validate::parse_sha256_hex;
use super::*;
use std::io::Write;
use std::time::Duration;

fn parse(json: &str) -> Result<Config, ConfigError> {
    Config::from_json_str(json, "test.json")
}

fn err(json: &str) -> String {
    parse(json).unwrap_err().to_string()
}

fn write_file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(content.as_bytes()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let _ = mode;
    p
}

/// The shape of Securosys' Notation plugin config.json.
const NOTATION_CONFIG: &str = r#"{
    "restApi": "https://primusdev.cloudshsm.com/v1/",
    "authType": "TOKEN",
    "token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln",
    "certpath": "/etc/notation/client.crt",
    "keypath": "/etc/notation/client.key",
    "apiKeys": {
        "KeyManagementToken": ["km-1", "km-2"],
        "KeyOperationToken": ["op-1"],
        "ServiceToken": []
    },
    "applicationKeyPair": {
        "publicKey": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
        "privateKey": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ=="
    },
    "metaData": {"app": "notation", "requester": "ci"}
}"#;

#[test]
fn notation_config_parses_unchanged() {
    let p = parse_config(NOTATION_CONFIG, "n.json", None).unwrap();
    assert!(p.unknown.is_empty(), "{:?}", p.unknown);
    assert!(p.literal_secrets);
    let c = p.config;
    assert_eq!(c.source, "n.json");
    assert_eq!(c.rest_api(), "https://primusdev.cloudshsm.com");
    assert_eq!(c.auth_type, AuthType::Token);
    assert_eq!(
        c.token.as_ref().unwrap().expose(),
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln"
    );
    assert_eq!(
        c.client_cert.as_deref(),
        Some(Path::new("/etc/notation/client.crt"))
    );
    assert_eq!(
        c.client_key.as_deref(),
        Some(Path::new("/etc/notation/client.key"))
    );
    let km: Vec<&str> = c
        .api_keys
        .key_management
        .iter()
        .map(Secret::expose)
        .collect();
    assert_eq!(km, vec!["km-1", "km-2"]);
    assert_eq!(c.api_keys.key_operation[0].expose(), "op-1");
    assert!(c.api_keys.service.is_empty());
    let akp = c.application_key_pair.as_ref().unwrap();
    assert!(akp.private_key.expose().starts_with("MIIEvQ"));
    assert_eq!(
        c.meta_data.get("app"),
        Some(&Value::String("notation".into()))
    );
    assert!(c.ca_path.is_none());
    // Debug output never shows secrets.
    let dbg = format!("{c:?}");
    for s in ["eyJhbG", "km-1", "op-1", "MIIEvQ"] {
        assert!(!dbg.contains(s), "{s} in {dbg}");
    }
    assert!(dbg.contains("<redacted>"));
}

#[test]
fn defaults() {
    let c = parse(r#"{"restApi": "https://tsb.example:8080"}"#).unwrap();
    assert_eq!(c.rest_api(), "https://tsb.example:8080");
    assert_eq!(c.auth_type, AuthType::None);
    assert!(c.token.is_none() && c.client_cert.is_none() && c.client_key.is_none());
    assert!(c.api_keys.key_management.is_empty() && c.api_keys.key_operation.is_empty());
    assert!(c.application_key_pair.is_none() && c.meta_data.is_empty() && c.ca_path.is_none());
    let s = &c.pkcs11;
    assert_eq!(s.token_label, "TSB");
    assert!(s.keys.is_none());
    assert_eq!(s.approval_timeout, None);
    assert_eq!(s.approval_wait(), Duration::from_secs(600));
    assert_eq!(s.poll_interval, Duration::from_millis(1000));
    assert_eq!(s.poll_interval_max, Duration::from_millis(10_000));
    assert_eq!(s.cache_ttl, Duration::from_secs(60));
    assert!(s.key_passwords.is_empty() && s.certificates.is_empty());
    assert_eq!(s.pin_is, PinIs::None);
    assert!(s.verify_signatures);
    assert_eq!(s.connect_timeout, Duration::from_millis(5000));
    assert_eq!(s.request_timeout, Duration::from_millis(30_000));
    assert_eq!(s.connection_max_idle, Duration::from_millis(50_000));
    assert_eq!(s.retries, 2);
    assert!(s.server_cert_sha256.is_none());
    assert!(!s.allow_insecure_http);
    let f = Config::for_url("https://x/v1/");
    assert_eq!(f.rest_api(), "https://x");
    assert_eq!(f.source, "<inline>");
    assert_eq!(f.auth_type, AuthType::None);
}

#[test]
fn every_module_setting() {
    let c = parse(
        r#"{"restApi": "https://t", "caPath": "/etc/ca.pem", "pkcs11": {
            "tokenLabel": "My Token", "keys": ["a", "b/0"], "approvalTimeoutSecs": 30,
            "pollIntervalMs": "50", "pollIntervalMaxMs": 500, "cacheTtlSecs": 0,
            "keyPasswords": {"a": "pw-a"}, "pinIs": "keyPassword", "verifySignatures": false,
            "certificates": {"a": "/certs/a.pem"}, "connectTimeoutMs": 100,
            "requestTimeoutMs": 200, "retries": 0, "connectionMaxIdleMs": 1500,
            "serverCertSha256": "AB:cd:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd",
            "allowInsecureHttp": "true"}}"#,
    )
    .unwrap();
    assert_eq!(c.ca_path.as_deref(), Some(Path::new("/etc/ca.pem")));
    let s = &c.pkcs11;
    assert_eq!(s.token_label, "My Token");
    assert_eq!(
        s.keys.as_deref(),
        Some(&["a".to_string(), "b/0".to_string()][..])
    );
    assert_eq!(s.approval_timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.approval_wait(), Duration::from_secs(30));
    assert_eq!(s.poll_interval, Duration::from_millis(50));
    assert_eq!(s.poll_interval_max, Duration::from_millis(500));
    assert_eq!(s.cache_ttl, Duration::ZERO);
    assert_eq!(s.key_passwords["a"].expose(), "pw-a");
    assert_eq!(s.pin_is, PinIs::KeyPassword);
    assert!(!s.verify_signatures);
    assert_eq!(s.certificates["a"], PathBuf::from("/certs/a.pem"));
    assert_eq!(s.connect_timeout, Duration::from_millis(100));
    assert_eq!(s.request_timeout, Duration::from_millis(200));
    assert_eq!(s.connection_max_idle, Duration::from_millis(1500));
    assert_eq!(s.retries, 0);
    let pin = s.server_cert_sha256.unwrap();
    assert_eq!(&pin[..3], &[0xab, 0xcd, 0x00]);
    assert_eq!(pin[31], 0xdd);
    assert!(s.allow_insecure_http);
}

#[test]
fn pin_is_values() {
    for (v, want) in [
        ("none", PinIs::None),
        ("TOKEN", PinIs::Token),
        ("apiKey", PinIs::ApiKey),
        ("api_key", PinIs::ApiKey),
        ("keypassword", PinIs::KeyPassword),
    ] {
        let c = parse(&format!(
            r#"{{"restApi": "https://t", "pkcs11": {{"pinIs": "{v}"}}}}"#
        ))
        .unwrap();
        assert_eq!(c.pkcs11.pin_is, want, "{v}");
    }
    // pinIs token implies authType TOKEN when none is given
    let c = parse(r#"{"restApi": "https://t", "pkcs11": {"pinIs": "token"}}"#).unwrap();
    assert_eq!(c.auth_type, AuthType::Token);
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"pinIs": "pin"}}"#),
        r#"config test.json: field "pkcs11.pinIs": expected none, token, apiKey or keyPassword, got "pin""#
    );
}

#[test]
fn auth_types() {
    let c = parse(r#"{"restApi": "https://t", "token": "jwt"}"#).unwrap();
    assert_eq!(c.auth_type, AuthType::Token);
    let c = parse(r#"{"restApi": "https://t", "token": "jwt", "authType": "none"}"#).unwrap();
    assert_eq!(c.auth_type, AuthType::None);
    let c = parse(
        r#"{"restApi": "https://t", "authType": "cert", "certpath": "c.pem", "keypath": "k.pem"}"#,
    )
    .unwrap();
    assert_eq!(c.auth_type, AuthType::Cert);
    assert_eq!(c.client_cert.as_deref(), Some(Path::new("c.pem")));
    assert_eq!(
        err(r#"{"restApi": "https://t", "authType": "CERT"}"#),
        r#"config test.json: field "certpath": missing: authType CERT needs certpath and keypath"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "certpath": "c.pem"}"#),
        r#"config test.json: field "keypath": missing: certpath is set"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "authType": "BASIC"}"#),
        r#"config test.json: field "authType": expected TOKEN, CERT or NONE, got "BASIC""#
    );
    // An empty token is no token.
    let c = parse(r#"{"restApi": "https://t", "token": ""}"#).unwrap();
    assert!(c.token.is_none());
    assert_eq!(c.auth_type, AuthType::None);
    // A blank authType is none given: it follows from the token, as when it is left out.
    let c = parse(r#"{"restApi": "https://t", "token": "jwt", "authType": " "}"#).unwrap();
    assert_eq!(c.auth_type, AuthType::Token);
}

#[test]
fn url_normalisation() {
    for (input, want) in [
        ("https://h:8080", "https://h:8080"),
        ("https://h:8080/", "https://h:8080"),
        ("https://h:8080/v1", "https://h:8080"),
        ("https://h:8080/v1/", "https://h:8080"),
        ("https://h:8080/V1//", "https://h:8080"),
        (" HTTPS://h/tsb/v1 ", "https://h/tsb"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://[::1]:8443/v1", "https://[::1]:8443"),
    ] {
        assert_eq!(normalise_url(input).unwrap(), want, "{input}");
    }
    for bad in [
        "h:8080",
        "ftp://h",
        "https://",
        "https:///v1",
        "https://user:pw@h",
        "https://h/?q=1",
        "https://h x",
    ] {
        assert!(normalise_url(bad).is_err(), "{bad}");
    }
    let e = err(r#"{"restApi": "https://user:secretpw@h"}"#);
    assert!(
        e.starts_with(r#"config test.json: field "restApi": "#),
        "{e}"
    );
    assert!(!e.contains("secretpw"), "{e}");
    assert_eq!(
        err(r#"{"token": "x"}"#),
        r#"config test.json: field "restApi": missing: the TSB URL, e.g. https://tsb:8080"#
    );
}

#[test]
fn api_keys_forms() {
    let p = parse_config(
        r#"{"restApi": "https://t", "apiKeys": {"KeyManagementToken": "single",
            "keyOperationToken": ["a", "", null], "ServiceToken": null, "Other": ["x"]}}"#,
        "t",
        None,
    )
    .unwrap();
    let c = &p.config;
    assert_eq!(c.api_keys.key_management.len(), 1);
    assert_eq!(c.api_keys.key_management[0].expose(), "single");
    assert_eq!(c.api_keys.key_operation.len(), 1);
    assert!(c.api_keys.service.is_empty());
    assert_eq!(p.unknown, vec!["apiKeys.Other"]);
    assert_eq!(
        err(r#"{"restApi": "https://t", "apiKeys": {"KeyOperationToken": ["ok", 12345]}}"#),
        r#"config test.json: field "apiKeys.KeyOperationToken[1]": expected a string, got a number"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "apiKeys": {"ServiceToken": {"k": "v"}}}"#),
        r#"config test.json: field "apiKeys.ServiceToken": expected an array of strings or a string, got an object"#
    );
}

/// The environment of [`env_secrets`] (a map: a test never changes the process environment).
fn test_env() -> super::secrets::EnvLookup {
    Box::new(|name| {
        let value = match name {
            "TSB_PKCS11_TEST_ENV_TOKEN" => "jwt-from-env",
            "TSB_PKCS11_TEST_ENV_EMPTY" => "",
            "TSB_PKCS11_TEST_ENV_NOT_B64" => "jwt.from.env",
            "HOME" => "/home/test-user",
            _ => return None,
        };
        Some(value.into())
    })
}

fn err_in_test_env(json: &str) -> String {
    super::parse_config_in(json, "test.json", None, test_env())
        .err()
        .expect("an error")
        .to_string()
}

#[test]
fn env_secrets() {
    let p = super::parse_config_in(
        r#"{"restApi": "https://t", "token": "env:TSB_PKCS11_TEST_ENV_TOKEN",
            "apiKeys": {"KeyOperationToken": ["env:TSB_PKCS11_TEST_ENV_TOKEN"]},
            "pkcs11": {"keyPasswords": {"k": "env:TSB_PKCS11_TEST_ENV_TOKEN"}},
            "caPath": "~/ca.pem"}"#,
        "t",
        None,
        test_env(),
    )
    .unwrap();
    assert!(!p.literal_secrets);
    let c = p.config;
    assert_eq!(c.token.unwrap().expose(), "jwt-from-env");
    assert_eq!(c.api_keys.key_operation[0].expose(), "jwt-from-env");
    assert_eq!(c.pkcs11.key_passwords["k"].expose(), "jwt-from-env");
    assert_eq!(
        c.ca_path.as_deref(),
        Some(Path::new("/home/test-user/ca.pem")),
        "~/ is the HOME of the parse's environment"
    );
    assert_eq!(
        err_in_test_env(r#"{"restApi": "https://t", "token": "env:TSB_PKCS11_TEST_ENV_MISSING"}"#),
        r#"config test.json: field "token": environment variable TSB_PKCS11_TEST_ENV_MISSING is not set"#
    );
    assert_eq!(
        err_in_test_env(
            r#"{"restApi": "https://t", "pkcs11": {"keyPasswords": {"k1": "env:TSB_PKCS11_TEST_ENV_EMPTY"}}}"#
        ),
        r#"config test.json: field "pkcs11.keyPasswords.k1": environment variable TSB_PKCS11_TEST_ENV_EMPTY is empty"#
    );
    let e = err_in_test_env(
        r#"{"restApi": "https://t", "applicationKeyPair": {"publicKey": "AAAA", "privateKey": "env:TSB_PKCS11_TEST_ENV_NOT_B64"}}"#,
    );
    assert_eq!(
        e,
        r#"config test.json: field "applicationKeyPair.privateKey": not valid base64"#
    );
    assert!(!e.contains("jwt.from.env"));
}

#[test]
fn file_secrets_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "token.txt", "  file-jwt\n", 0o600);
    let cfg = write_file(
        dir.path(),
        "config.json",
        r#"{"restApi": "https://t", "token": "file:token.txt", "caPath": "ca.pem",
            "certpath": "c.pem", "keypath": "/abs/k.pem",
            "pkcs11": {"certificates": {"k": "certs/k.pem"}}}"#,
        0o600,
    );
    let c = Config::from_file(&cfg).unwrap();
    assert_eq!(c.source, cfg.display().to_string());
    assert_eq!(c.token.unwrap().expose(), "file-jwt");
    assert_eq!(c.ca_path.unwrap(), dir.path().join("ca.pem"));
    assert_eq!(c.client_cert.unwrap(), dir.path().join("c.pem"));
    assert_eq!(c.client_key.unwrap(), PathBuf::from("/abs/k.pem"));
    assert_eq!(c.pkcs11.certificates["k"], dir.path().join("certs/k.pem"));

    let missing = dir.path().join("nope.txt");
    let e = err(&format!(
        r#"{{"restApi": "https://t", "token": "file:{}"}}"#,
        missing.display()
    ));
    assert!(
        e.starts_with(&format!(
            r#"config test.json: field "token": cannot read secret file {}: "#,
            missing.display()
        )),
        "{e}"
    );
    write_file(dir.path(), "empty.txt", "\n", 0o600);
    let e = err(&format!(
        r#"{{"restApi": "https://t", "token": "file:{}"}}"#,
        dir.path().join("empty.txt").display()
    ));
    assert!(e.ends_with("is empty"), "{e}");
}

#[test]
fn error_messages_name_file_and_field_without_secrets() {
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"pollIntervalMs": "abc"}}"#),
        r#"config test.json: field "pkcs11.pollIntervalMs": expected a whole number ≥ 10, got "abc""#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"pollIntervalMs": 5}}"#),
        r#"config test.json: field "pkcs11.pollIntervalMs": expected a whole number ≥ 10, got 5"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"retries": 11}}"#),
        r#"config test.json: field "pkcs11.retries": expected a whole number from 0 to 10, got 11"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"connectTimeoutMs": -1}}"#),
        r#"config test.json: field "pkcs11.connectTimeoutMs": expected a whole number ≥ 1, got -1"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"connectionMaxIdleMs": 0}}"#),
        r#"config test.json: field "pkcs11.connectionMaxIdleMs": expected a whole number ≥ 1, got 0"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"approvalTimeoutSecs": 1.5}}"#),
        r#"config test.json: field "pkcs11.approvalTimeoutSecs": expected a whole number from 1 to 86400, got 1.5"#
    );
    assert_eq!(
        err(
            r#"{"restApi": "https://t", "pkcs11": {"pollIntervalMs": 2000, "pollIntervalMaxMs": 1000}}"#
        ),
        r#"config test.json: field "pkcs11.pollIntervalMaxMs": must be ≥ pollIntervalMs (2000), got 1000"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"verifySignatures": "maybe"}}"#),
        r#"config test.json: field "pkcs11.verifySignatures": expected true or false, got "maybe""#
    );
    assert_eq!(
        err(
            r#"{"restApi": "https://t", "pkcs11": {"tokenLabel": "0123456789012345678901234567890123"}}"#
        ),
        r#"config test.json: field "pkcs11.tokenLabel": at most 32 bytes, got 34 bytes"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"serverCertSha256": "abcd"}}"#),
        r#"config test.json: field "pkcs11.serverCertSha256": expected 64 hex digits (colons allowed), got "abcd""#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"keys": [1]}}"#),
        r#"config test.json: field "pkcs11.keys[0]": expected a string, got 1"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": []}"#),
        r#"config test.json: field "pkcs11": expected an object, got an array"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "metaData": "x"}"#),
        r#"config test.json: field "metaData": expected an object, got "x""#
    );
    assert_eq!(
        err("[]"),
        "config test.json: expected a JSON object, got an array"
    );
    let e = err(r#"{"restApi": "https://t", "token": "supersecret""#);
    assert!(e.starts_with("config test.json: invalid JSON: "), "{e}");
    assert!(!e.contains("supersecret"), "{e}");
    // Secret fields of a wrong type: the type is named, never the value.
    let e = err(r#"{"restApi": "https://t", "token": 1234567}"#);
    assert_eq!(
        e,
        r#"config test.json: field "token": expected a string, got a number"#
    );
    let e = err(r#"{"restApi": "https://t", "pkcs11": {"keyPasswords": {"k": true}}}"#);
    assert_eq!(
        e,
        r#"config test.json: field "pkcs11.keyPasswords.k": expected a string, got a boolean"#
    );
    let e = err(
        r#"{"restApi": "https://t", "applicationKeyPair": {"publicKey": "AAAA", "privateKey": "not*base64*secretvalue"}}"#,
    );
    assert!(!e.contains("secretvalue"), "{e}");
    let e = err(r#"{"restApi": "https://t", "applicationKeyPair": {"publicKey": "AAAA"}}"#);
    assert_eq!(
        e,
        r#"config test.json: field "applicationKeyPair.privateKey": missing (publicKey is set)"#
    );
    let e = parse(r#"{"restApi": "https://t", "pkcs11": {"retries": "x"}}"#).unwrap_err();
    assert_eq!(e.file, "test.json");
    assert_eq!(e.field.as_deref(), Some("pkcs11.retries"));
}

#[test]
fn poll_interval_max_follows_a_large_interval() {
    let c = parse(r#"{"restApi": "https://t", "pkcs11": {"pollIntervalMs": 20000}}"#).unwrap();
    assert_eq!(c.pkcs11.poll_interval_max, Duration::from_millis(20_000));
}

#[test]
fn unknown_fields_are_listed() {
    let p = parse_config(
        r#"{"restApi": "https://t", "restAPI": "x", "signatureAlgorithm": "y",
            "applicationKeyPair": {"publicKey": "AAAA", "privateKey": "AAAA", "kid": 1},
            "pkcs11": {"tokenlabel": "x", "retries": 1}}"#,
        "t",
        None,
    )
    .unwrap();
    let mut unknown = p.unknown.clone();
    unknown.sort();
    assert_eq!(
        unknown,
        vec![
            "applicationKeyPair.kid",
            "pkcs11.tokenlabel",
            "restAPI",
            "signatureAlgorithm"
        ]
    );
}

#[cfg(unix)]
#[test]
fn file_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"{"restApi": "https://t", "token": "literal-jwt"}"#;
    let p = write_file(dir.path(), "group-writable.json", body, 0o664);
    let e = Config::from_file(&p).unwrap_err();
    assert_eq!(e.field, None);
    assert_eq!(
        e.to_string(),
        format!(
            "config {}: refusing a file writable by group or others (mode 0664); run: chmod go-w {}",
            p.display(),
            p.display()
        )
    );
    let p = write_file(dir.path(), "world-writable.json", body, 0o602);
    assert!(Config::from_file(&p).is_err());
    // Readable by others with literal secrets: accepted (with a warning).
    let p = write_file(dir.path(), "world-readable.json", body, 0o644);
    assert_eq!(
        Config::from_file(&p).unwrap().token.unwrap().expose(),
        "literal-jwt"
    );
    let p = write_file(dir.path(), "private.json", body, 0o600);
    Config::from_file(&p).unwrap();
    // Missing file, directory
    let e = Config::from_file(&dir.path().join("missing.json")).unwrap_err();
    assert!(e.to_string().contains("missing.json: cannot read: "), "{e}");
    let e = Config::from_file(dir.path()).unwrap_err();
    assert!(e.to_string().ends_with("not a regular file"), "{e}");
    // Invalid JSON in a file names the file.
    let p = write_file(dir.path(), "bad.json", "{", 0o600);
    let e = Config::from_file(&p).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("config {}: invalid JSON", p.display())),
        "{e}"
    );
}

#[test]
fn search_order() {
    let paths = search_paths_from(
        Some("/explicit.json".into()),
        Some("/xdg".into()),
        Some("/home/u".into()),
    );
    assert_eq!(
        paths,
        vec![
            PathBuf::from("/explicit.json"),
            PathBuf::from("/xdg/tsb-pkcs11/config.json"),
            PathBuf::from("/home/u/.config/tsb-pkcs11/config.json"),
            PathBuf::from("/etc/tsb-pkcs11/config.json"),
        ]
    );
    // A relative XDG_CONFIG_HOME is ignored; XDG = ~/.config is not listed twice.
    let paths = search_paths_from(None, Some("rel".into()), Some("/home/u".into()));
    assert_eq!(paths.len(), 2);
    let paths = search_paths_from(None, Some("/home/u/.config".into()), Some("/home/u".into()));
    assert_eq!(paths.len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let second = write_file(
        dir.path(),
        "second.json",
        r#"{"restApi": "https://second"}"#,
        0o600,
    );
    let c = load_first(&[dir.path().join("first.json"), second]).unwrap();
    assert_eq!(c.rest_api(), "https://second");
    let e = load_first(&[dir.path().join("first.json")]).unwrap_err();
    assert!(e.to_string().contains("no configuration file found"), "{e}");
    assert!(e.to_string().contains("TSB_PKCS11_CONFIG"), "{e}");
}

#[test]
fn secret_is_redacted() {
    let s = Secret::new("hunter2".into());
    assert_eq!(format!("{s}"), "<redacted>");
    assert_eq!(format!("{s:?}"), "<redacted>");
    assert_eq!(s.expose(), "hunter2");
    assert!(!s.is_empty());
}

#[test]
fn sha256_hex() {
    let hex = "00".repeat(31) + "ff";
    assert_eq!(parse_sha256_hex(&hex).unwrap()[31], 0xff);
    assert!(parse_sha256_hex(&format!("sha256:{hex}")).is_some());
    assert!(parse_sha256_hex(&hex[2..]).is_none());
    assert!(parse_sha256_hex(&("zz".repeat(32))).is_none());
}

#[test]
fn rest_api_array() {
    let c = parse(r#"{"restApi": ["https://a:8080/v1/", "HTTPS://B.example"]}"#).unwrap();
    assert_eq!(c.rest_apis, vec!["https://a:8080", "https://b.example"]);
    assert_eq!(c.rest_api(), "https://a:8080");
    let c = parse(r#"{"restApi": "https://a"}"#).unwrap();
    assert_eq!(c.rest_apis, vec!["https://a"]);
    assert_eq!(
        err(r#"{"restApi": []}"#),
        r#"config test.json: field "restApi": an empty array: give at least one TSB URL, e.g. https://tsb:8080"#
    );
    assert_eq!(
        err(r#"{"restApi": ["https://a", "https://b", "https://A/v1"]}"#),
        r#"config test.json: field "restApi[2]": the same TSB as restApi[0] (https://a)"#
    );
    assert_eq!(
        err(r#"{"restApi": ["https://a", "ftp://b"]}"#),
        r#"config test.json: field "restApi[1]": expected an http:// or https:// URL, got scheme "ftp""#
    );
    assert_eq!(
        err(r#"{"restApi": ["https://a", 7]}"#),
        r#"config test.json: field "restApi[1]": expected a string, got 7"#
    );
    assert_eq!(
        err(r#"{"restApi": ["https://a", " "]}"#),
        r#"config test.json: field "restApi[1]": expected a URL, got an empty string"#
    );
    assert_eq!(
        err(r#"{"restApi": {"url": "https://a"}}"#),
        r#"config test.json: field "restApi": expected a URL or an array of URLs, got an object"#
    );
    let e = err(r#"{"restApi": ["https://a", "https://u:SECRETPW@b"]}"#);
    assert!(e.contains(r#"field "restApi[1]": credentials"#), "{e}");
    assert!(!e.contains("SECRETPW"), "{e}");
}

/// Each way a `restApi` URL can be wrong is named, including what the url crate would forgive
/// (a missing or doubled `//`, tabs), and no part of the credentials is quoted.
#[test]
fn url_errors_name_the_problem() {
    for (bad, want) in [
        ("h:8080", "got scheme \"h\""),
        ("tsb.example", "expected an http:// or https:// URL"),
        ("ftp://h", "got scheme \"ftp\""),
        ("https:h", "expected an http:// or https:// URL"),
        ("https:/h", "expected an http:// or https:// URL"),
        ("https://", "no host"),
        ("https:///v1", "no host"),
        ("https://\\h", "no host"),
        ("https://user:SECRETPW@h", "credentials"),
        ("https://user@h", "credentials"),
        ("https://h/?q=1", "query or fragment"),
        ("https://h#x", "query or fragment"),
        ("https://h x", "whitespace"),
        ("https://h\tx", "whitespace"),
        ("https://h:99999", "invalid port"),
        ("https://[::1", "not a valid URL"),
    ] {
        let e = normalise_url(bad).unwrap_err();
        assert!(e.contains(want), "{bad}: {e}");
        assert!(!e.contains("SECRETPW"), "{bad}: {e}");
    }
}

#[test]
fn url_normalisation_with_the_url_crate() {
    for (input, want) in [
        ("https://TSB.Example:8443/", "https://tsb.example:8443"),
        ("https://tsb:443/v1", "https://tsb"),
        ("http://tsb:80", "http://tsb"),
        ("http://127.1:8080", "http://127.0.0.1:8080"),
        ("https://[0:0::1]/tsb/V1/", "https://[::1]/tsb"),
    ] {
        assert_eq!(normalise_url(input).unwrap(), want, "{input}");
    }
    for bad in [
        "https://h:99999",
        "https://h\u{7f}x",
        "https://[::1",
        "http://h\tx",
    ] {
        assert!(normalise_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn node_settings() {
    let s = parse(r#"{"restApi": "https://t"}"#).unwrap().pkcs11;
    assert_eq!(s.node_strategy, NodeStrategy::Failover);
    assert_eq!(s.node_down_backoff, Duration::from_millis(1000));
    assert_eq!(s.node_down_backoff_max, Duration::from_millis(30_000));
    let s = parse(
        r#"{"restApi": ["https://a", "https://b"], "pkcs11": {"nodeStrategy": "Spread",
            "nodeDownBackoffMs": 250, "nodeDownBackoffMaxMs": "4000"}}"#,
    )
    .unwrap()
    .pkcs11;
    assert_eq!(s.node_strategy, NodeStrategy::Spread);
    assert_eq!(s.node_down_backoff, Duration::from_millis(250));
    // The default may be written out too (any case, spaces trimmed).
    let failover = parse(
        r#"{"restApi": ["https://a", "https://b"], "pkcs11": {"nodeStrategy": " FailOver "}}"#,
    )
    .unwrap()
    .pkcs11;
    assert_eq!(failover.node_strategy, NodeStrategy::Failover);
    assert_eq!(s.node_down_backoff_max, Duration::from_millis(4000));
    // A large initial back-off raises the default cap with it.
    let s = parse(r#"{"restApi": "https://t", "pkcs11": {"nodeDownBackoffMs": 60000}}"#)
        .unwrap()
        .pkcs11;
    assert_eq!(s.node_down_backoff_max, Duration::from_millis(60_000));
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"nodeStrategy": "random"}}"#),
        r#"config test.json: field "pkcs11.nodeStrategy": expected failover or spread, got "random""#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"nodeDownBackoffMs": 0}}"#),
        r#"config test.json: field "pkcs11.nodeDownBackoffMs": expected a whole number ≥ 1, got 0"#
    );
    assert_eq!(
        err(
            r#"{"restApi": "https://t", "pkcs11": {"nodeDownBackoffMs": 5000, "nodeDownBackoffMaxMs": 1000}}"#
        ),
        r#"config test.json: field "pkcs11.nodeDownBackoffMaxMs": must be ≥ nodeDownBackoffMs (5000), got 1000"#
    );
}

#[test]
fn token_serial() {
    let s = |v: &str| {
        parse(&format!(
            r#"{{"restApi": "https://t", "pkcs11": {{"tokenSerial": {v}}}}}"#
        ))
    };
    assert_eq!(
        s(r#""A""#).unwrap().pkcs11.token_serial.as_deref(),
        Some("A")
    );
    assert_eq!(
        s(r#""0123456789ABCDEF""#)
            .unwrap()
            .pkcs11
            .token_serial
            .as_deref(),
        Some("0123456789ABCDEF")
    );
    assert_eq!(
        s(r#""a b-c_~""#).unwrap().pkcs11.token_serial.as_deref(),
        Some("a b-c_~")
    );
    assert!(parse(r#"{"restApi": "https://t"}"#)
        .unwrap()
        .pkcs11
        .token_serial
        .is_none());
    for bad in [
        r#""""#,
        r#""0123456789ABCDEF0""#,
        r#""é""#,
        r#""a\tb""#,
        r#"" a""#,
        r#""a ""#,
    ] {
        let e = s(bad).unwrap_err().to_string();
        assert!(
            e.starts_with(r#"config test.json: field "pkcs11.tokenSerial": expected 1 to 16 printable ASCII characters"#),
            "{bad}: {e}"
        );
    }
    assert_eq!(
        s("12").unwrap_err().to_string(),
        r#"config test.json: field "pkcs11.tokenSerial": expected a string, got 12"#
    );
}

#[test]
fn approval_timeout_is_optional_and_capped() {
    let s = |v: &str| {
        parse(&format!(
            r#"{{"restApi": "https://t", "pkcs11": {{"approvalTimeoutSecs": {v}}}}}"#
        ))
    };
    assert_eq!(MAX_APPROVAL_WAIT, Duration::from_secs(86_400));
    assert_eq!(
        s("86400").unwrap().pkcs11.approval_timeout,
        Some(MAX_APPROVAL_WAIT)
    );
    assert_eq!(s("null").unwrap().pkcs11.approval_timeout, None);
    assert_eq!(
        s("86401").unwrap_err().to_string(),
        r#"config test.json: field "pkcs11.approvalTimeoutSecs": expected a whole number from 1 to 86400, got 86401"#
    );
    assert!(s("0").is_err());
}

const PK: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE";

#[test]
fn key_policies_and_deletion() {
    let c = parse(&format!(
        r#"{{"restApi": "https://t", "pkcs11": {{
            "newKeyPolicy": {{"ruleUse": {{"tokens": [{{"name": "t", "timeout": 600, "groups": [
                {{"name": "g", "quorum": 1, "approvals": [{{"type": "public_key", "value": "{PK}"}}]}}]}}]}}}},
            "policyProfiles": {{"open": {{}}, "blocked": {{"keyStatus": {{"blocked": true}}}}}},
            "allowKeyDeletion": true}}}}"#
    ))
    .unwrap();
    let s = &c.pkcs11;
    let p = s.new_key_policy.as_ref().unwrap();
    assert_eq!(p.rule_use.as_ref().unwrap().tokens[0].timeout.0, 600);
    assert_eq!(p.rule_use.as_ref().unwrap().tokens[0].groups[0].quorum, 1);
    assert_eq!(s.policy_profiles.len(), 2);
    assert_eq!(s.policy_profiles["open"], PolicySpec::default());
    assert!(s.policy_profiles["blocked"].key_status.blocked);
    assert!(s.allow_key_deletion);

    let d = parse(r#"{"restApi": "https://t"}"#).unwrap().pkcs11;
    assert!(d.new_key_policy.is_none() && d.policy_profiles.is_empty() && !d.allow_key_deletion);

    let e = err(&format!(
        r#"{{"restApi": "https://t", "pkcs11": {{"newKeyPolicy": {{"ruleUse": {{"tokens": [{{"groups": [
            {{"quorum": 2, "approvals": [{{"type": "public_key", "value": "{PK}"}}]}}]}}]}}}}}}}}"#
    ));
    assert_eq!(
        e,
        r#"config test.json: field "pkcs11.newKeyPolicy.ruleUse.tokens[0].groups[0]": quorum 2 is more than the 1 approver(s) of the group"#
    );
    let e = err(
        r#"{"restApi": "https://t", "pkcs11": {"policyProfiles": {"p": {"ruleUse": {"tokens": [{"timelock": 30}]}}}}}"#,
    );
    assert_eq!(
        e,
        r#"config test.json: field "pkcs11.policyProfiles.p.ruleUse.tokens[0].timelock": expected seconds in whole minutes (a multiple of 60), got 30"#
    );
    let e = err(r#"{"restApi": "https://t", "pkcs11": {"newKeyPolicy": {"ruleuse": null}}}"#);
    assert!(
        e.starts_with(
            r#"config test.json: field "pkcs11.newKeyPolicy.ruleuse": unknown field `ruleuse`"#
        ),
        "{e}"
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"newKeyPolicy": "strict"}}"#),
        r#"config test.json: field "pkcs11.newKeyPolicy": expected an object, got "strict""#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"policyProfiles": {"": {}}}}"#),
        r#"config test.json: field "pkcs11.policyProfiles": a profile name must not be empty"#
    );
    assert_eq!(
        err(r#"{"restApi": "https://t", "pkcs11": {"allowKeyDeletion": "yes"}}"#),
        r#"config test.json: field "pkcs11.allowKeyDeletion": expected true or false, got "yes""#
    );
}

#[test]
fn request_journal() {
    let j = |v: &str| {
        parse_config(
            &format!(r#"{{"restApi": "https://t", "pkcs11": {{"requestJournal": {v}}}}}"#),
            "test.json",
            Some(Path::new("/etc/tsb-pkcs11")),
        )
        .map(|p| p.config.pkcs11.request_journal)
        .map_err(|e| e.to_string())
    };
    assert_eq!(
        parse(r#"{"restApi": "https://t"}"#)
            .unwrap()
            .pkcs11
            .request_journal,
        RequestJournal::Default
    );
    assert_eq!(j("true").unwrap(), RequestJournal::Default);
    assert_eq!(j("false").unwrap(), RequestJournal::Off);
    assert_eq!(
        j(r#""journal.log""#).unwrap(),
        RequestJournal::File(PathBuf::from("/etc/tsb-pkcs11/journal.log"))
    );
    assert_eq!(
        j(r#""/var/lib/j""#).unwrap(),
        RequestJournal::File(PathBuf::from("/var/lib/j"))
    );
    assert_eq!(
        j("1").unwrap_err(),
        r#"config test.json: field "pkcs11.requestJournal": expected true, false or a file path, got 1"#
    );
    assert!(j(r#""""#).is_err());
}

#[test]
fn unknown_fields_in_nested_objects_are_listed_with_their_path() {
    let p = parse_config(
        r#"{"restApi": "https://t", "pkcs11": {"nodestrategy": "spread", "keyPasswords": {}},
            "metaData": {"anything": {"goes": 1}}}"#,
        "t",
        None,
    )
    .unwrap();
    assert_eq!(p.unknown, vec!["pkcs11.nodestrategy"]);
}

// ---------------------------------------------------------------------------------------
// Files: bounded regular files, and who may write the configuration.

fn mkfifo(path: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(st.success());
}

/// Runs `f` on another thread; fails the test (instead of hanging it) if `f` blocks.
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("blocked: a FIFO or device was opened or read")
}

#[test]
fn secret_files_must_be_small_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let json = format!(
        r#"{{"restApi": "https://t", "token": "file:{}"}}"#,
        fifo.display()
    );
    let e = within_a_minute(move || err(&json));
    assert_eq!(
        e,
        format!(
            r#"config test.json: field "token": cannot read secret file {}: not a regular file"#,
            fifo.display()
        )
    );
    let e = within_a_minute(|| err(r#"{"restApi": "https://t", "token": "file:/dev/zero"}"#));
    assert!(e.ends_with("/dev/zero: not a regular file"), "{e}");

    let big = dir.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1024 * 1024 + 1)
        .unwrap();
    let e = err(&format!(
        r#"{{"restApi": "https://t", "apiKeys": {{"KeyOperationToken": ["file:{}"]}}}}"#,
        big.display()
    ));
    assert!(
        e.starts_with(
            r#"config test.json: field "apiKeys.KeyOperationToken[0]": cannot read secret file"#
        ) && e.ends_with("larger than 1 MiB (1048576 bytes), the most the module reads"),
        "{e}"
    );
    // Exactly 1 MiB is fine.
    let limit = dir.path().join("limit");
    std::fs::write(&limit, vec![b'k'; 1024 * 1024]).unwrap();
    let c = parse(&format!(
        r#"{{"restApi": "https://t", "token": "file:{}"}}"#,
        limit.display()
    ))
    .unwrap();
    assert_eq!(c.token.unwrap().expose().len(), 1024 * 1024);
}

#[test]
fn read_regular_file_refuses_what_is_not_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let e = within_a_minute(move || read_regular_file(&fifo).unwrap_err().to_string());
    assert_eq!(e, "not a regular file");
    let e = within_a_minute(|| {
        read_regular_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string()
    });
    assert_eq!(e, "not a regular file");
    assert_eq!(
        read_regular_file(dir.path()).unwrap_err().to_string(),
        "not a regular file"
    );
    let f = write_file(dir.path(), "small", "pem", 0o600);
    assert_eq!(read_regular_file(&f).unwrap(), b"pem");
}

#[cfg(unix)]
#[test]
fn config_file_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.json");
    mkfifo(&fifo);
    let path = fifo.clone();
    let e = within_a_minute(move || Config::from_file(&path).unwrap_err().to_string());
    assert_eq!(e, format!("config {}: not a regular file", fifo.display()));
    let huge = dir.path().join("huge.json");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(600 * 1024 * 1024).unwrap();
    std::fs::set_permissions(&huge, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let e = Config::from_file(&huge).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "config {}: cannot read: larger than 1 MiB (1048576 bytes), the most the module reads",
            huge.display()
        )
    );
}

#[cfg(unix)]
fn is_root() -> bool {
    crate::os::effective_uid() == 0
}

#[cfg(unix)]
#[test]
fn config_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to give a file to another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = write_file(
        dir.path(),
        "config.json",
        r#"{"restApi": "https://t"}"#,
        0o600,
    );
    Config::from_file(&p).unwrap();
    // nobody
    std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
    let e = Config::from_file(&p).unwrap_err();
    assert_eq!(e.field, None);
    assert_eq!(
        e.to_string(),
        format!(
            "config {f}: refusing a file owned by another user (uid 65534): another user could \
             change it; make it yours (uid 0) or root's: chown 0 {f}",
            f = p.display()
        )
    );
    // Owned by root (the running user here), group other: fine.
    std::os::unix::fs::chown(&p, Some(0), Some(65534)).unwrap();
    Config::from_file(&p).unwrap();
}

#[cfg(unix)]
#[test]
fn config_in_a_folder_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    let p = write_file(&open, "config.json", r#"{"restApi": "https://t"}"#, 0o600);
    let set =
        |mode: u32| std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
    set(0o777);
    let e = Config::from_file(&p).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "config {f}: refusing a file in folder {d} which others can write (mode 0777, owner \
             uid {uid}): another user could replace the file; run: chmod o-w {d} (or move the file)",
            f = p.display(),
            d = open.display(),
            uid = crate::os::effective_uid()
        )
    );
    // Sticky and owned by the running user (like /tmp): others cannot replace our file.
    set(0o1777);
    Config::from_file(&p).unwrap();
    // Group-writable folders are not refused (only the file itself must not be).
    set(0o775);
    Config::from_file(&p).unwrap();

    // A symlink to a file in such a folder is refused too (the real file's folders count).
    set(0o777);
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    let e = Config::from_file(&link).unwrap_err().to_string();
    assert!(
        e.contains(&format!("refusing a file in folder {}", open.display())),
        "{e}"
    );
    set(0o700);
    Config::from_file(&link).unwrap();
    // ... and a symlink in such a folder, to a file elsewhere.
    let safe = write_file(
        dir.path(),
        "safe.json",
        r#"{"restApi": "https://t"}"#,
        0o600,
    );
    let link2 = open.join("link2.json");
    std::os::unix::fs::symlink(&safe, &link2).unwrap();
    set(0o777);
    let e = Config::from_file(&link2).unwrap_err().to_string();
    assert!(
        e.contains(&format!("refusing a file in folder {}", open.display())),
        "{e}"
    );
    set(0o700);
    Config::from_file(&link2).unwrap();
}

/// A world-writable folder with the sticky bit (like /tmp) is accepted when root or the user
/// the module runs as owns it, and refused when anyone else does.
#[test]
fn a_sticky_folder_is_accepted_only_from_root_or_the_running_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("sticky");
    std::fs::create_dir(&open).unwrap();
    let p = write_file(&open, "config.json", r#"{"restApi": "https://t"}"#, 0o600);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let me = crate::os::effective_uid();
    let as_user = |uid: u32| super::discovery::check_folders_as(&p, uid);
    as_user(me).unwrap();
    if me == 0 {
        // Owned by root: accepted for any user.
        as_user(4242).unwrap();
        // Owned by another user: accepted only for that user.
        std::os::unix::fs::chown(&open, Some(4242), None).unwrap();
        as_user(4242).unwrap();
        let e = as_user(4243).unwrap_err();
        assert!(e.contains("owner uid 4242"), "{e}");
        as_user(0).unwrap_err();
    } else {
        let e = as_user(me + 1).unwrap_err();
        assert!(e.contains(&format!("owner uid {me}")), "{e}");
    }
}

#[test]
fn proxy_settings() {
    let with =
        |pkcs11: &str| format!(r#"{{"restApi": "https://tsb.example", "pkcs11": {pkcs11}}}"#);
    let c = parse(&with("{}")).unwrap();
    assert!(matches!(c.pkcs11.proxy, ProxySetting::Environment));
    assert!(c.pkcs11.no_proxy.is_none() && c.pkcs11.proxy_password.is_none());
    for none in ["none", "NONE", " None "] {
        let c = parse(&with(&format!(r#"{{"proxy": "{none}"}}"#))).unwrap();
        assert!(matches!(c.pkcs11.proxy, ProxySetting::None), "{none}");
    }
    let c = parse(&with(
        r#"{"proxy": "http://alice@proxy:3128", "noProxy": ".corp", "proxyPassword": "env:TSB_PKCS11_TEST_PROXY_UNSET"}"#,
    ));
    // The password's env: form is resolved like every secret's (and named when missing).
    let e = c.unwrap_err().to_string();
    assert!(
        e.contains("pkcs11.proxyPassword") && e.contains("TSB_PKCS11_TEST_PROXY_UNSET"),
        "{e}"
    );
    let c = parse(&with(
        r#"{"proxy": "http://alice@proxy:3128", "noProxy": ".corp", "proxyPassword": "pw"}"#,
    ))
    .unwrap();
    match &c.pkcs11.proxy {
        ProxySetting::Url(u) => assert_eq!(u.expose(), "http://alice@proxy:3128"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.pkcs11.no_proxy.as_deref(), Some(".corp"));
    assert_eq!(c.pkcs11.proxy_password.as_ref().unwrap().expose(), "pw");
    // Control characters are refused without quoting the value (it may hold a password).
    let e = err(&with(r#"{"proxy": "http://u:hunter2@proxy\r\nX: 1"}"#));
    assert!(
        e.contains("pkcs11.proxy") && e.contains("control") && !e.contains("hunter2"),
        "{e}"
    );
    // A password in the URL is a literal secret; a URL without one is not.
    let p = parse_config(
        &with(r#"{"proxy": "http://u:hunter2@proxy:3128"}"#),
        "p.json",
        None,
    )
    .unwrap();
    assert!(p.literal_secrets);
    let p = parse_config(&with(r#"{"proxy": "http://u@proxy:3128"}"#), "p.json", None).unwrap();
    assert!(!p.literal_secrets);
    // Debug never shows the URL.
    assert!(!format!("{:?}", p.config.pkcs11).contains("u@proxy"));
}

/// `TSB_PKCS11_CONFIG` names the file; set but empty, it counts as unset and the search path
/// is used (docs/configuration.md).
#[test]
fn an_empty_config_variable_means_the_search_path() {
    let dir = tempfile::tempdir().unwrap();
    let found = write_file(
        dir.path(),
        "found.json",
        r#"{"restApi": "https://found"}"#,
        0o600,
    );
    let named = write_file(
        dir.path(),
        "named.json",
        r#"{"restApi": "https://named"}"#,
        0o600,
    );
    let search = [dir.path().join("missing.json"), found];
    let c = Config::load_from(Some(named.into_os_string()), &search).unwrap();
    assert_eq!(c.rest_api(), "https://named");
    let c = Config::load_from(Some("".into()), &search).unwrap();
    assert_eq!(c.rest_api(), "https://found");
    let c = Config::load_from(None, &search).unwrap();
    assert_eq!(c.rest_api(), "https://found");
}
