//! Shared helpers of the tsb-sim integration tests: a small configuration, an HTTP client and
//! an OpenSSL-based signature verifier (independent of the simulator's signing code).
#![allow(dead_code)]

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::md::Md;
use openssl::pkey::{PKey, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};
use serde_json::{json, Value};
use tsb_sim::{Curve, KeySpec, PolicySpec, SimConfig, Simulator};

/// The fast test configuration plus a few extra keys: `ska-timeout` (quorum 1 of alice,
/// timeout 60 s), `ska-auto` (auto-approved after 200 ms), and `m/44'/0'/0'` (label with `/`).
pub fn test_config() -> SimConfig {
    let mut cfg = SimConfig::fast_test();
    cfg.keys.push(
        KeySpec::ec("ska-timeout", Curve::P256)
            .with_policy(PolicySpec::single_group(1, &["alice"]).with_timeout(60)),
    );
    cfg.keys.push(
        KeySpec::ec("ska-auto", Curve::P256)
            .with_policy(PolicySpec::single_group(1, &["alice", "bob"]))
            .with_auto_approve_after_ms(200),
    );
    cfg.keys
        .push(KeySpec::ec("m/44'/0'/0'", Curve::P256).with_id("path-key"));
    cfg
}

pub fn start(cfg: SimConfig) -> Simulator {
    Simulator::start(cfg).expect("simulator starts")
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    /// `errorCode` of a TSB error body.
    pub fn error_code(&self) -> u64 {
        self.json()["errorCode"]
            .as_u64()
            .unwrap_or_else(|| panic!("no errorCode in {:?}", self.body))
    }
}

/// A small ureq-based client.
pub struct Http {
    pub agent: ureq::Agent,
    pub base: String,
    pub headers: Vec<(String, String)>,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http::with_agent(
            ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
            base,
        )
    }
    pub fn with_agent(agent: ureq::Agent, base: &str) -> Http {
        Http {
            agent,
            base: base.to_string(),
            headers: Vec::new(),
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Http {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn try_send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Resp, Box<ureq::Error>> {
        let mut req = self
            .agent
            .request(method, &format!("{}{}", self.base, path));
        for (k, v) in &self.headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                let status = resp.status();
                let content_type = resp.content_type().to_string();
                let body = resp
                    .into_string()
                    .map_err(|e| Box::new(ureq::Error::from(e)))?;
                Ok(Resp {
                    status,
                    content_type,
                    body,
                })
            }
            Err(e) => Err(Box::new(e)),
        }
    }
    pub fn send(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.try_send(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
    pub fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None)
    }
    pub fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.send("POST", path, Some(&body.to_string()))
    }
    pub fn post_raw(&self, path: &str, body: &str) -> Resp {
        self.send("POST", path, Some(body))
    }
}

/// A sign request body (both sign endpoints).
pub fn sign_body(key: &str, alg: &str, payload: &[u8]) -> Value {
    json!({
        "signRequest": {
            "payload": B64.encode(payload),
            "payloadType": "UNSPECIFIED",
            "signKeyName": key,
            "signatureAlgorithm": alg,
        },
        "requestSignature": null,
    })
}

/// `POST /v1/synchronousSign` and the decoded signature (panics unless 200).
pub fn sign_sync(http: &Http, key: &str, alg: &str, payload: &[u8]) -> Vec<u8> {
    let r = http.post("/v1/synchronousSign", &sign_body(key, alg, payload));
    assert_eq!(r.status, 200, "{key} {alg}: {}", r.body);
    B64.decode(r.json()["signature"].as_str().expect("signature"))
        .expect("base64 signature")
}

/// `POST /v1/sign` → request id (panics unless 201).
pub fn sign_async(http: &Http, body: &Value) -> String {
    let r = http.post("/v1/sign", body);
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["signRequestId"]
        .as_str()
        .expect("signRequestId")
        .to_string()
}

pub fn b64(data: &[u8]) -> String {
    B64.encode(data)
}
pub fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).expect("base64")
}

fn md_of(name: &str) -> (MessageDigest, &'static openssl::md::MdRef) {
    match name {
        "SHA1" => (MessageDigest::sha1(), Md::sha1()),
        "SHA224" => (MessageDigest::sha224(), Md::sha224()),
        "SHA256" => (MessageDigest::sha256(), Md::sha256()),
        "SHA384" => (MessageDigest::sha384(), Md::sha384()),
        "SHA512" => (MessageDigest::sha512(), Md::sha512()),
        "SHA3224" => (MessageDigest::sha3_224(), Md::sha3_224()),
        "SHA3256" => (MessageDigest::sha3_256(), Md::sha3_256()),
        "SHA3384" => (MessageDigest::sha3_384(), Md::sha3_384()),
        "SHA3512" => (MessageDigest::sha3_512(), Md::sha3_512()),
        other => panic!("unknown digest {other}"),
    }
}

/// Verifies `sig` over `payload` for a TSB `signatureAlgorithm` with OpenSSL. `raw` = ECDSA
/// r‖s instead of DER.
pub fn verify(spki_der: &[u8], alg: &str, payload: &[u8], sig: &[u8], raw: bool) -> bool {
    let pkey: PKey<Public> = PKey::public_key_from_der(spki_der).expect("SPKI");
    if alg == "EDDSA" {
        let mut v = Verifier::new_without_digest(&pkey).unwrap();
        return v.verify_oneshot(sig, payload).unwrap_or(false);
    }
    if alg == "NONE_WITH_RSA" {
        let rsa = pkey.rsa().unwrap();
        let mut buf = vec![0u8; rsa.size() as usize];
        return match rsa.public_decrypt(sig, &mut buf, Padding::PKCS1) {
            Ok(n) => &buf[..n] == payload,
            Err(_) => false,
        };
    }
    if let Some(name) = alg.strip_suffix("_WITH_RSA_PSS") {
        if let Some(h) = name.strip_prefix("NONE") {
            let (_, md) = md_of(h);
            let mut ctx = PkeyCtx::new(&pkey).unwrap();
            ctx.verify_init().unwrap();
            ctx.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
            ctx.set_signature_md(md).unwrap();
            ctx.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .unwrap();
            ctx.set_rsa_mgf1_md(md).unwrap();
            return ctx.verify(payload, sig).unwrap_or(false);
        }
        let (md, _) = md_of(name);
        let mut v = Verifier::new(md, &pkey).unwrap();
        v.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
        v.set_rsa_mgf1_md(md).unwrap();
        return v.verify_oneshot(sig, payload).unwrap_or(false);
    }
    if let Some(name) = alg.strip_suffix("_WITH_RSA") {
        if let Some(h) = name.strip_prefix("NONE") {
            let (_, md) = md_of(h);
            let mut ctx = PkeyCtx::new(&pkey).unwrap();
            ctx.verify_init().unwrap();
            ctx.set_rsa_padding(Padding::PKCS1).unwrap();
            ctx.set_signature_md(md).unwrap();
            return ctx.verify(payload, sig).unwrap_or(false);
        }
        let (md, _) = md_of(name);
        let mut v = Verifier::new(md, &pkey).unwrap();
        v.set_rsa_padding(Padding::PKCS1).unwrap();
        return v.verify_oneshot(sig, payload).unwrap_or(false);
    }
    let name = alg
        .strip_suffix("_WITH_ECDSA")
        .or_else(|| alg.strip_suffix("_WITH_ECDSA_DETERMINISTIC"))
        .unwrap_or_else(|| panic!("unknown algorithm {alg}"));
    use sha3::Digest;
    let digest: Vec<u8> = match name {
        "NONE" => payload.to_vec(),
        "DOUBLE_SHA256" => {
            let once = hash(MessageDigest::sha256(), payload).unwrap();
            hash(MessageDigest::sha256(), &once).unwrap().to_vec()
        }
        "KECCAK224" => sha3::Keccak224::digest(payload).to_vec(),
        "KECCAK256" => sha3::Keccak256::digest(payload).to_vec(),
        "KECCAK384" => sha3::Keccak384::digest(payload).to_vec(),
        "KECCAK512" => sha3::Keccak512::digest(payload).to_vec(),
        h => hash(md_of(h).0, payload).unwrap().to_vec(),
    };
    let ec = pkey.ec_key().expect("EC key");
    let ecsig = if raw {
        if !sig.len().is_multiple_of(2) {
            return false;
        }
        let (r, s) = sig.split_at(sig.len() / 2);
        EcdsaSig::from_private_components(
            BigNum::from_slice(r).unwrap(),
            BigNum::from_slice(s).unwrap(),
        )
        .unwrap()
    } else {
        match EcdsaSig::from_der(sig) {
            Ok(s) => s,
            Err(_) => return false,
        }
    };
    ecsig.verify(&digest, &ec).unwrap_or(false)
}

/// Polls `GET /v1/request/{id}` until the status is terminal or `timeout` passes.
pub fn wait_terminal(http: &Http, id: &str, timeout: Duration) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let v = http.get(&format!("/v1/request/{id}")).json();
        let status = v["status"].as_str().unwrap_or_default().to_string();
        if (status != "PENDING" && status != "APPROVED") || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Python of the test virtual environment (`target/compat-venv`, made by scripts/test.sh
/// with the pure-Python verifiers dilithium-py, SLH-DSA and hsslms); env `PQC_VERIFY_PYTHON`
/// overrides it.
fn pqc_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PQC_VERIFY_PYTHON") {
        return p.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let python = root.join("target/compat-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh makes it (ensure_venv with dilithium-py, slh-dsa, hsslms)",
        python.display()
    );
    python
}

/// Verifies a post-quantum signature with `tests/python/pqc_verify.py` (independent of the
/// simulator): `alg` is `ML-DSA`, `SLH-DSA` or `LMS`, `paramset` e.g. `ML-DSA-65` (`-` for
/// LMS), `spki_der` the key's SubjectPublicKeyInfo. True only when the verifier exits 0; any
/// exit status other than 0 or 1 (bad input) fails the test.
pub fn pqc_verify(
    alg: &str,
    paramset: &str,
    spki_der: &[u8],
    message: &[u8],
    sig: &[u8],
    context: &[u8],
) -> bool {
    let dir = std::env::temp_dir().join(format!(
        "tsb-sim-pqc-verify-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (pk, msg, sg) = (dir.join("pk.der"), dir.join("msg"), dir.join("sig"));
    std::fs::write(&pk, spki_der).unwrap();
    std::fs::write(&msg, message).unwrap();
    std::fs::write(&sg, sig).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("tests/python/pqc_verify.py");
    let mut cmd = std::process::Command::new(pqc_python());
    cmd.arg(&script)
        .arg(alg)
        .arg(paramset)
        .arg(&pk)
        .arg(&msg)
        .arg(&sg);
    if !context.is_empty() {
        let hex: String = context.iter().map(|b| format!("{b:02x}")).collect();
        cmd.arg("--context").arg(hex);
    }
    let out = cmd.output().expect("pqc_verify.py runs");
    let _ = std::fs::remove_dir_all(&dir);
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "pqc_verify.py failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
