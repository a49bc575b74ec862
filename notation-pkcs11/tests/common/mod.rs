//! Test helpers: run the built plugin exactly as Notation does, drive SoftHSM2 with its own
//! tools, issue certificates with OpenSSL, and verify signatures and JWS envelopes with
//! OpenSSL (independently of the plugin's own RustCrypto check).
//!
//! The plugin helpers ([`Target`], [`run_plugin`]) know nothing about SoftHSM: a `Target` is
//! any PKCS#11 module path with an optional token label and PIN, so the same tests can run
//! against another module (e.g. `libtsb_pkcs11.so` with the TSB simulator).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};
use openssl::x509::X509;
use serde_json::{json, Value};

/// The plugin binary built by Cargo for these tests.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_notation-pkcs11");
/// Where Debian's `softhsm2` package installs the module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of test tokens.
pub const USER_PIN: &str = "1234";
/// The SO PIN of test tokens.
pub const SO_PIN: &str = "5678";

/// Every key spec with the matching hash, signing algorithm, JWS `alg`, the
/// `pkcs11-tool --key-type`, and the ECDSA field width (0 for RSA).
pub const SPECS: [(&str, &str, &str, &str, &str, usize); 6] = [
    (
        "RSA-2048",
        "SHA-256",
        "RSASSA-PSS-SHA-256",
        "PS256",
        "rsa:2048",
        0,
    ),
    (
        "RSA-3072",
        "SHA-384",
        "RSASSA-PSS-SHA-384",
        "PS384",
        "rsa:3072",
        0,
    ),
    (
        "RSA-4096",
        "SHA-512",
        "RSASSA-PSS-SHA-512",
        "PS512",
        "rsa:4096",
        0,
    ),
    (
        "EC-256",
        "SHA-256",
        "ECDSA-SHA-256",
        "ES256",
        "EC:prime256v1",
        32,
    ),
    (
        "EC-384",
        "SHA-384",
        "ECDSA-SHA-384",
        "ES384",
        "EC:secp384r1",
        48,
    ),
    (
        "EC-521",
        "SHA-512",
        "ECDSA-SHA-512",
        "ES512",
        "EC:secp521r1",
        66,
    ),
];

/// One run of the plugin.
#[derive(Debug)]
pub struct PluginRun {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl PluginRun {
    /// Asserts success (exit code 0, exactly one JSON document on stdout) and returns it.
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.code,
            Some(0),
            "plugin failed: stderr: {}",
            String::from_utf8_lossy(&self.stderr)
        );
        single_json_document(&self.stdout)
    }

    /// Asserts failure as the contract requires and as Notation parses it: exit code 1,
    /// nothing on stdout, and stderr holding exactly one JSON error document (Notation
    /// unmarshals the whole of stderr). Returns `(errorCode, errorMessage)`.
    pub fn err(&self) -> (String, String) {
        self.check_failed();
        Self::parse_error(&single_json_document(&self.stderr))
    }

    /// Like [`PluginRun::err`], but other output (e.g. a chatty module's) may precede the
    /// JSON error, which must be the last line of stderr.
    pub fn err_after_noise(&self) -> (String, String) {
        self.check_failed();
        let stderr = String::from_utf8_lossy(&self.stderr);
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_else(|| panic!("stderr is empty"));
        let v: Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("stderr's last line is not JSON ({e}): {stderr}"));
        Self::parse_error(&v)
    }

    fn check_failed(&self) {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit code 1; stdout: {} stderr: {}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        );
        assert!(
            self.stdout.is_empty(),
            "stdout must be empty on error, got {:?}",
            String::from_utf8_lossy(&self.stdout)
        );
    }

    fn parse_error(v: &Value) -> (String, String) {
        let code = v["errorCode"].as_str().expect("errorCode").to_string();
        let msg = v["errorMessage"]
            .as_str()
            .expect("errorMessage")
            .to_string();
        assert!(
            [
                "VALIDATION_ERROR",
                "UNSUPPORTED_CONTRACT_VERSION",
                "ACCESS_DENIED",
                "TIMEOUT",
                "THROTTLED",
                "ERROR"
            ]
            .contains(&code.as_str()),
            "unknown errorCode {code}"
        );
        (code, msg)
    }

    /// Asserts an error with `code` and returns its message.
    pub fn err_code(&self, code: &str) -> String {
        let (c, m) = self.err();
        assert_eq!(c, code, "message: {m}");
        m
    }
}

/// Parses `bytes` as exactly one JSON document (surrounding whitespace allowed).
pub fn single_json_document(bytes: &[u8]) -> Value {
    let mut docs = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let first = docs
        .next()
        .unwrap_or_else(|| panic!("stdout holds no JSON"))
        .unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?}",
                String::from_utf8_lossy(bytes)
            )
        });
    assert!(
        docs.next().is_none(),
        "stdout holds more than one JSON document: {:?}",
        String::from_utf8_lossy(bytes)
    );
    first
}

/// Runs the plugin as Notation does: `notation-pkcs11 <command>`, request on stdin.
/// `NOTATION_PKCS11_PIN` is removed from the environment unless `env` sets it.
pub fn run_plugin(args: &[&str], stdin: &[u8], env: &[(String, String)]) -> PluginRun {
    run_plugin_at(Path::new(PLUGIN), args, stdin, env)
}

/// Like [`run_plugin`] with the plugin executable at `plugin`.
pub fn run_plugin_at(
    plugin: &Path,
    args: &[&str],
    stdin: &[u8],
    env: &[(String, String)],
) -> PluginRun {
    let mut cmd = Command::new(plugin);
    cmd.args(args)
        .env_remove("NOTATION_PKCS11_PIN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn plugin");
    {
        let mut input = child.stdin.take().expect("stdin");
        // The plugin may exit before reading (e.g. unknown command): ignore EPIPE.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().expect("wait for plugin");
    PluginRun {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// A PKCS#11 module and token the plugin is pointed at through `pluginConfig`.
#[derive(Clone, Debug)]
pub struct Target {
    /// `pluginConfig.module`.
    pub module: String,
    /// `pluginConfig.token`, if set.
    pub token: Option<String>,
    /// `pluginConfig.pin`, if set.
    pub pin: Option<String>,
    /// Environment of the plugin process (e.g. `SOFTHSM2_CONF`).
    pub env: Vec<(String, String)>,
}

impl Target {
    /// The `pluginConfig` map for this target.
    pub fn plugin_config(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("module".into(), json!(self.module));
        if let Some(t) = &self.token {
            m.insert("token".into(), json!(t));
        }
        if let Some(p) = &self.pin {
            m.insert("pin".into(), json!(p));
        }
        Value::Object(m)
    }

    /// Runs `command` with `request` (a JSON value) on stdin.
    pub fn run(&self, command: &str, request: &Value) -> PluginRun {
        run_plugin(
            &[command],
            serde_json::to_string(request).unwrap().as_bytes(),
            &self.env,
        )
    }

    /// `describe-key` for `key_id`.
    pub fn describe_key(&self, key_id: &str) -> PluginRun {
        self.run(
            "describe-key",
            &json!({
                "contractVersion": "1.0",
                "keyId": key_id,
                "pluginConfig": self.plugin_config(),
            }),
        )
    }

    /// The `generate-signature` request Notation would send.
    pub fn sign_request(&self, key_id: &str, key_spec: &str, hash: &str, payload: &[u8]) -> Value {
        json!({
            "contractVersion": "1.0",
            "keyId": key_id,
            "pluginConfig": self.plugin_config(),
            "keySpec": key_spec,
            "hashAlgorithm": hash,
            "payload": STANDARD.encode(payload),
        })
    }

    /// `generate-signature` for `key_id`.
    pub fn generate_signature(
        &self,
        key_id: &str,
        key_spec: &str,
        hash: &str,
        payload: &[u8],
    ) -> PluginRun {
        self.run(
            "generate-signature",
            &self.sign_request(key_id, key_spec, hash, payload),
        )
    }

    /// A copy with another `pluginConfig.pin`.
    pub fn with_pin(&self, pin: Option<&str>) -> Target {
        Target {
            pin: pin.map(str::to_string),
            ..self.clone()
        }
    }

    /// A copy with another `pluginConfig.token`.
    pub fn with_token(&self, token: Option<&str>) -> Target {
        Target {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }
}

/// A SoftHSM2 instance private to one test: its own config file and token directory.
pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    /// The plugin's view: SoftHSM module, token `test`, PIN `1234`.
    pub target: Target,
}

/// True if SoftHSM2 and OpenSC's pkcs11-tool are installed. If not, says so loudly: the
/// SoftHSM tests then pass without testing anything (CI installs both).
pub fn softhsm_available() -> bool {
    let ok = Path::new(SOFTHSM_MODULE).exists()
        && Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok()
        && Command::new("pkcs11-tool").arg("--help").output().is_ok();
    if !ok {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED: SoftHSM2 ({SOFTHSM_MODULE}, softhsm2-util) or pkcs11-tool is\n\
             !!! not installed: apt-get install -y softhsm2 opensc\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
    }
    ok
}

impl SoftHsm {
    /// A fresh SoftHSM with one token labelled `test`, or `None` (after a loud message) if
    /// SoftHSM is not installed.
    pub fn new() -> Option<SoftHsm> {
        if !softhsm_available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        let env = vec![("SOFTHSM2_CONF".to_string(), conf.display().to_string())];
        let hsm = SoftHsm {
            dir,
            conf,
            target: Target {
                module: SOFTHSM_MODULE.to_string(),
                token: None,
                pin: Some(USER_PIN.to_string()),
                env,
            },
        };
        hsm.init_token("test");
        Some(hsm)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", &self.conf);
        c
    }

    fn check(what: &str, out: Output) -> Output {
        assert!(
            out.status.success(),
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Initializes a new token labelled `label` in the free slot.
    pub fn init_token(&self, label: &str) {
        let out = self
            .command("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                USER_PIN,
                "--so-pin",
                SO_PIN,
            ])
            .output()
            .expect("softhsm2-util");
        Self::check("softhsm2-util --init-token", out);
    }

    /// Runs pkcs11-tool on token `test` (logged in), asserting success.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        self.pkcs11_tool_on("test", args)
    }

    /// Runs pkcs11-tool on the token labelled `token` (logged in), asserting success.
    pub fn pkcs11_tool_on(&self, token: &str, args: &[&str]) -> Output {
        Self::check(
            &format!("pkcs11-tool {args:?}"),
            self.pkcs11_tool_unchecked(token, args),
        )
    }

    /// Runs pkcs11-tool on the token labelled `token` (logged in).
    pub fn pkcs11_tool_unchecked(&self, token: &str, args: &[&str]) -> Output {
        self.command("pkcs11-tool")
            .args([
                "--module",
                SOFTHSM_MODULE,
                "--token-label",
                token,
                "--login",
                "--pin",
                USER_PIN,
            ])
            .args(args)
            .output()
            .expect("pkcs11-tool")
    }

    /// Generates a key pair (`key_type` as pkcs11-tool spells it, e.g. `rsa:2048`,
    /// `EC:prime256v1`) labelled `label` with `CKA_ID` `id` (hex).
    pub fn keygen(&self, key_type: &str, label: &str, id: &str) {
        self.keygen_on("test", key_type, label, id);
    }

    /// Like [`SoftHsm::keygen`] on the token labelled `token`.
    pub fn keygen_on(&self, token: &str, key_type: &str, label: &str, id: &str) {
        self.pkcs11_tool_on(
            token,
            &[
                "--keypairgen",
                "--key-type",
                key_type,
                "--label",
                label,
                "--id",
                id,
            ],
        );
    }

    /// The public key with `CKA_ID` `id`, read with pkcs11-tool.
    pub fn public_key(&self, id: &str) -> PKey<Public> {
        self.public_key_on("test", id)
    }

    /// Like [`SoftHsm::public_key`] on the token labelled `token`.
    ///
    /// OpenSC 0.23's `--read-object --type pubkey` fails for P-384 keys ("cannot create
    /// EVP_PKEY"); then the key is rebuilt from the `EC_POINT` and `EC_PARAMS` that
    /// `--list-objects` prints.
    pub fn public_key_on(&self, token: &str, id: &str) -> PKey<Public> {
        let path = self.dir.path().join(format!("pub-{token}-{id}.der"));
        let out = self.pkcs11_tool_unchecked(
            token,
            &[
                "--read-object",
                "--type",
                "pubkey",
                "--id",
                id,
                "--output-file",
                path.to_str().unwrap(),
            ],
        );
        if out.status.success() {
            return PKey::public_key_from_der(&std::fs::read(&path).unwrap())
                .expect("SPKI from pkcs11-tool");
        }
        let listing = self.pkcs11_tool_on(token, &["--list-objects", "--type", "pubkey"]);
        ec_public_key_from_listing(&String::from_utf8_lossy(&listing.stdout), id).unwrap_or_else(
            || {
                panic!(
                    "cannot read public key {id}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            },
        )
    }

    /// Stores a certificate object with `CKA_ID` `id` and label `label`.
    pub fn write_cert(&self, cert: &X509, id: &str, label: &str) {
        self.write_cert_on("test", cert, id, label);
    }

    /// Like [`SoftHsm::write_cert`] on the token labelled `token`.
    pub fn write_cert_on(&self, token: &str, cert: &X509, id: &str, label: &str) {
        let path = self
            .dir
            .path()
            .join(format!("cert-{token}-{id}-{label}.der"));
        std::fs::write(&path, cert.to_der().unwrap()).unwrap();
        self.pkcs11_tool_on(
            token,
            &[
                "--write-object",
                path.to_str().unwrap(),
                "--type",
                "cert",
                "--id",
                id,
                "--label",
                label,
            ],
        );
    }

    /// Writes `certs` as one PEM file in the test directory and returns its path.
    pub fn write_pem(&self, name: &str, certs: &[&X509]) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut pem = Vec::new();
        for c in certs {
            pem.extend(c.to_pem().unwrap());
        }
        std::fs::write(&path, pem).unwrap();
        path
    }
}

/// Rebuilds the EC public key with `CKA_ID` `id` (hex) from `pkcs11-tool --list-objects`.
fn ec_public_key_from_listing(listing: &str, id: &str) -> Option<PKey<Public>> {
    let block = listing.split("Public Key Object").find(|b| {
        b.lines()
            .any(|l| l.trim().strip_prefix("ID:").map(str::trim) == Some(id))
    })?;
    let field = |name: &str| {
        block.lines().find_map(|l| {
            let v = l.trim().strip_prefix(name)?.split_whitespace().next()?;
            Some(hex_decode(v))
        })
    };
    let params = field("EC_PARAMS:")?;
    let point = field("EC_POINT:")?;
    let nid = match params.as_slice() {
        [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07] => Nid::X9_62_PRIME256V1,
        [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22] => Nid::SECP384R1,
        [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23] => Nid::SECP521R1,
        _ => return None,
    };
    // EC_POINT is a DER OCTET STRING around the point.
    let body = match point.as_slice() {
        [0x04, 0x81, _, rest @ ..] => rest,
        [0x04, len, rest @ ..] if *len < 0x80 => rest,
        _ => point.as_slice(),
    };
    let group = EcGroup::from_curve_name(nid).ok()?;
    let mut ctx = openssl::bn::BigNumContext::new().ok()?;
    let p = openssl::ec::EcPoint::from_bytes(&group, body, &mut ctx).ok()?;
    PKey::from_ec_key(EcKey::from_public_key(&group, &p).ok()?).ok()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

pub use tsb_pkcs11_test_support::pki::Ca;
use tsb_pkcs11_test_support::pki::{CertBuilder, Profile};

/// A root CA (EC P-256 key in memory) whose leaves are code-signing certificates as the Notary
/// Project requires (critical keyUsage digitalSignature, extendedKeyUsage codeSigning), from
/// the tests' one certificate builder (tests/support/src/pki.rs).
pub fn code_signing_root(cn: &str) -> Ca {
    Ca::root_like(
        cn,
        CertBuilder::new("")
            .org("notation-pkcs11 tests")
            .profile(Profile::CodeSigning)
            .key_ids(),
    )
}

/// The OpenSSL digest for a contract hash algorithm name.
pub fn message_digest(hash: &str) -> MessageDigest {
    match hash {
        "SHA-256" => MessageDigest::sha256(),
        "SHA-384" => MessageDigest::sha384(),
        "SHA-512" => MessageDigest::sha512(),
        other => panic!("unknown hash {other}"),
    }
}

/// Converts a JWS ECDSA signature (`r‖s`) to DER for OpenSSL.
pub fn raw_ecdsa_to_der(sig: &[u8]) -> Vec<u8> {
    assert_eq!(sig.len() % 2, 0, "r‖s has an odd length");
    let (r, s) = sig.split_at(sig.len() / 2);
    EcdsaSig::from_private_components(
        BigNum::from_slice(r).unwrap(),
        BigNum::from_slice(s).unwrap(),
    )
    .unwrap()
    .to_der()
    .unwrap()
}

/// Verifies `sig` over `data` with OpenSSL, using `cert`'s public key and a contract
/// signing algorithm (RSASSA-PSS: MGF1 with the same hash and salt length = hash length,
/// strictly; ECDSA: `r‖s`).
pub fn openssl_verify(cert: &X509, signing_algorithm: &str, data: &[u8], sig: &[u8]) -> bool {
    let pkey = cert.public_key().unwrap();
    let (hash, pss) = match signing_algorithm {
        "RSASSA-PSS-SHA-256" => ("SHA-256", true),
        "RSASSA-PSS-SHA-384" => ("SHA-384", true),
        "RSASSA-PSS-SHA-512" => ("SHA-512", true),
        "ECDSA-SHA-256" => ("SHA-256", false),
        "ECDSA-SHA-384" => ("SHA-384", false),
        "ECDSA-SHA-512" => ("SHA-512", false),
        other => panic!("unknown signing algorithm {other}"),
    };
    let md = message_digest(hash);
    let mut v = Verifier::new(md, &pkey).unwrap();
    let sig = if pss {
        v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
        v.set_rsa_mgf1_md(md).unwrap();
        sig.to_vec()
    } else {
        raw_ecdsa_to_der(sig)
    };
    v.update(data).unwrap();
    v.verify(&sig).unwrap_or(false)
}

/// Decodes a `certificateChain` (base64 DER) into certificates.
pub fn decode_chain(response: &Value) -> Vec<X509> {
    response["certificateChain"]
        .as_array()
        .expect("certificateChain is an array")
        .iter()
        .map(|c| {
            let der = STANDARD
                .decode(c.as_str().expect("string"))
                .expect("base64");
            X509::from_der(&der).expect("DER certificate")
        })
        .collect()
}

/// Asserts that `chain` runs from leaf to a self-signed root, each certificate signed by
/// the next.
pub fn assert_chain_ordered(chain: &[X509]) {
    assert!(!chain.is_empty());
    for pair in chain.windows(2) {
        let (child, parent) = (&pair[0], &pair[1]);
        assert_eq!(
            child.issuer_name().to_der().unwrap(),
            parent.subject_name().to_der().unwrap(),
            "chain out of order"
        );
        assert!(
            child.verify(&parent.public_key().unwrap()).unwrap(),
            "certificate not signed by the next one"
        );
    }
    let root = chain.last().unwrap();
    assert!(
        root.verify(&root.public_key().unwrap()).unwrap(),
        "the last certificate is not a self-signed root"
    );
}

/// The JWS `alg` for a contract signing algorithm (`specs/signature-envelope-jws.md`).
pub fn jws_alg(signing_algorithm: &str) -> &'static str {
    match signing_algorithm {
        "RSASSA-PSS-SHA-256" => "PS256",
        "RSASSA-PSS-SHA-384" => "PS384",
        "RSASSA-PSS-SHA-512" => "PS512",
        "ECDSA-SHA-256" => "ES256",
        "ECDSA-SHA-384" => "ES384",
        "ECDSA-SHA-512" => "ES512",
        other => panic!("unknown signing algorithm {other}"),
    }
}

/// The JWS protected header and payload Notation builds for an OCI artifact, and the JWS
/// signing input `BASE64URL(protected) '.' BASE64URL(payload)` that it passes to
/// `generate-signature` as `payload`.
pub struct JwsToSign {
    pub protected_b64: String,
    pub payload_b64: String,
    pub signing_input: Vec<u8>,
}

impl JwsToSign {
    pub fn new(alg: &str) -> JwsToSign {
        let protected = json!({
            "alg": alg,
            "cty": "application/vnd.cncf.notary.payload.v1+json",
            "io.cncf.notary.signingScheme": "notary.x509",
            "io.cncf.notary.signingTime": "2025-01-02T03:04:05Z",
            "crit": ["io.cncf.notary.signingScheme"],
        });
        let payload = json!({
            "targetArtifact": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:73c803930ea3ba1e54bc25c2bdc53edd0284c62ed651fe7b00369da519a3c333",
                "size": 16724,
                "annotations": {"io.wabbit-networks.buildId": "123"},
            }
        });
        let protected_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap());
        let payload_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        let signing_input = format!("{protected_b64}.{payload_b64}").into_bytes();
        JwsToSign {
            protected_b64,
            payload_b64,
            signing_input,
        }
    }

    /// Assembles the flattened JWS JSON envelope from a `generate-signature` response, as
    /// Notation does.
    pub fn envelope(&self, response: &Value) -> Value {
        let sig = STANDARD
            .decode(response["signature"].as_str().unwrap())
            .unwrap();
        json!({
            "payload": self.payload_b64,
            "protected": self.protected_b64,
            "header": {
                "x5c": response["certificateChain"],
                "io.cncf.notary.signingAgent": "notation-pkcs11-tests",
            },
            "signature": URL_SAFE_NO_PAD.encode(sig),
        })
    }
}

/// Verifies a flattened JWS envelope with OpenSSL alone: `alg` from the protected header,
/// key from `x5c[0]`, signature over `protected '.' payload`.
pub fn verify_jws_envelope(envelope: &Value) -> bool {
    let protected_b64 = envelope["protected"].as_str().unwrap();
    let payload_b64 = envelope["payload"].as_str().unwrap();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(protected_b64).unwrap()).unwrap();
    let leaf_der = STANDARD
        .decode(envelope["header"]["x5c"][0].as_str().unwrap())
        .unwrap();
    let leaf = X509::from_der(&leaf_der).unwrap();
    let sig = URL_SAFE_NO_PAD
        .decode(envelope["signature"].as_str().unwrap())
        .unwrap();
    let signing_algorithm = match header["alg"].as_str().unwrap() {
        "PS256" => "RSASSA-PSS-SHA-256",
        "PS384" => "RSASSA-PSS-SHA-384",
        "PS512" => "RSASSA-PSS-SHA-512",
        "ES256" => "ECDSA-SHA-256",
        "ES384" => "ECDSA-SHA-384",
        "ES512" => "ECDSA-SHA-512",
        other => panic!("unexpected alg {other}"),
    };
    let input = format!("{protected_b64}.{payload_b64}");
    openssl_verify(&leaf, signing_algorithm, input.as_bytes(), &sig)
}
