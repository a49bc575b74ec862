use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::config::Secret;

const ATTRS_WITH_POLICY: &str = r#"{
  "json": {
    "label": "ska-key",
    "id": "4f2a",
    "attributes": {"encrypt": false, "decrypt": false, "verify": true, "sign": true,
                   "wrap": false, "unwrap": false, "derive": false, "bip32": false,
                   "extractable": false, "modifiable": true, "destroyable": true,
                   "sensitive": true, "copyable": false, "alwaysSensitive": true,
                   "neverExtractable": true},
    "keySize": 256,
    "algorithm": "EC",
    "algorithmOid": "1.2.840.10045.2.1",
    "curveOid": "1.2.840.10045.3.1.7",
    "publicKey": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
    "createTime": "2024-05-01T10:00:00Z",
    "policy": {
      "ruleUse": {"tokens": [{"name": "main", "timelock": 0, "timeout": 600,
         "groups": [{"name": "g1", "quorum": 2, "approvals": [
            {"type": "public_key", "name": "alice", "value": "MFkw..."},
            {"type": "public_key", "name": "bob", "value": "MFkw..."}]}]}]},
      "ruleBlock": {"tokens": []},
      "ruleUnblock": {"tokens": [{"name": "t", "timelock": "60", "timeout": "0", "groups": []}]},
      "ruleModify": null,
      "keyStatus": {"blocked": false}
    }
  },
  "xml": "<xml/>",
  "xmlSignature": "abc",
  "attestationKeyName": "attestation-key"
}"#;

#[test]
fn attributes_with_policy() {
    let v: Value = serde_json::from_str(ATTRS_WITH_POLICY).unwrap();
    let a = parse_key_attributes(&v).unwrap();
    assert_eq!(a.label, "ska-key");
    assert_eq!(a.id.as_deref(), Some("4f2a"));
    assert_eq!(a.algorithm, "EC");
    assert_eq!(
        a.public_key.as_deref(),
        Some(
            &STANDARD
                .decode("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
                .unwrap()[..]
        )
    );
    assert!(a.flags.sign && a.flags.sensitive && a.flags.always_sensitive);
    assert!(a.flags.never_extractable && a.flags.modifiable && a.flags.destroyable);
    assert!(!a.flags.decrypt && !a.flags.extractable && !a.flags.copyable);
    assert!(a.needs_approval());
    assert!(!a.blocked());
    let p = a.policy.as_ref().unwrap();
    let tok = &p.rule_use.as_ref().unwrap().tokens[0];
    assert_eq!(tok.name, "main");
    assert_eq!(tok.timeout, 600);
    assert_eq!(tok.groups[0].quorum, 2);
    assert_eq!(tok.groups[0].approvals.len(), 2);
    assert_eq!(tok.groups[0].approvals[0].kind, "public_key");
    assert_eq!(tok.groups[0].approvals[1].name.as_deref(), Some("bob"));
    assert_eq!(p.rule_unblock.as_ref().unwrap().tokens[0].timelock, 60);
    assert!(p.rule_modify.is_none());
}

#[test]
fn attributes_minimal_and_defaults() {
    let v = json!({"json": {"label": "rsa", "algorithm": "RSA", "keySize": "2048",
                            "publicKey": null, "policy": null, "id": null}});
    let a = parse_key_attributes(&v).unwrap();
    assert!(a.id.is_none() && a.public_key.is_none() && a.policy.is_none());
    assert_eq!(a.flags, KeyFlags::default());
    assert!(a.flags.sensitive && !a.flags.sign);
    assert!(!a.needs_approval() && !a.blocked());
    // The inner object directly, numbers as id, string booleans
    let v = json!({"label": "ed", "algorithm": "ED", "id": 17, "curveOid": null,
                   "algorithmOid": "1.3.101.112",
                   "attributes": {"sign": "true", "sensitive": "false"}});
    let a = parse_key_attributes(&v).unwrap();
    assert_eq!(a.id.as_deref(), Some("17"));
    assert!(a.flags.sign && !a.flags.sensitive);
}

#[test]
fn attributes_pem_public_key() {
    let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n";
    let v = json!({"json": {"label": "k", "algorithm": "EC", "publicKey": pem}});
    let a = parse_key_attributes(&v).unwrap();
    assert_eq!(a.public_key.unwrap(), pem.as_bytes());
    let v = json!({"json": {"label": "k", "algorithm": "EC", "publicKey": "%%%"}});
    assert!(parse_key_attributes(&v).is_err());
    assert!(parse_key_attributes(&json!([1])).is_err());
    assert!(parse_key_attributes(&json!({"xml": "x"})).is_err());
}

#[test]
fn policy_variants() {
    // empty groups: no approval needed
    let v = json!({"json": {"label": "k", "algorithm": "EC",
        "policy": {"ruleUse": {"tokens": [{"name": "t", "groups": []}]},
                   "keyStatus": {"blocked": "true"}}}});
    let a = parse_key_attributes(&v).unwrap();
    assert!(!a.needs_approval());
    assert!(a.blocked());
    // a policy given as a JSON string, numbers as strings, unknown fields
    let inner = json!({"ruleUse": {"tokens": [{"name": "t", "timelock": "120", "extra": 1,
        "groups": [{"name": "g", "quorum": "1", "approvals": [{"type": "public_key", "value": "AA=="}]}]}]}});
    let v = json!({"json": {"label": "k", "algorithm": "EC", "policy": inner.to_string()}});
    let a = parse_key_attributes(&v).unwrap();
    assert!(a.needs_approval());
    let tok = &a.policy.unwrap().rule_use.unwrap().tokens[0];
    assert_eq!(tok.timelock, 120);
    assert_eq!(tok.groups[0].quorum, 1);
    assert!(tok.groups[0].approvals[0].name.is_none());
    // groups with odd entries still count
    let v = json!({"json": {"label": "k", "algorithm": "EC",
        "policy": {"ruleUse": {"tokens": [{"groups": ["weird"]}]}}}});
    assert!(parse_key_attributes(&v).unwrap().needs_approval());
    let v = json!({"json": {"label": "k", "algorithm": "EC", "policy": 5}});
    assert!(parse_key_attributes(&v).is_err());
}

#[test]
fn request_status_shapes() {
    let v = json!({"id": "r1", "status": "PENDING", "executionTime": null,
        "approvedBy": ["MFkwEw-alice"], "notYetApprovedBy": [{"name": "bob", "publicKey": "MFkw"}],
        "rejectedBy": [], "result": null});
    let s = parse_request_status(&v, "x").unwrap();
    assert_eq!(s.state, RequestState::Pending);
    assert!(!s.state.is_terminal());
    assert_eq!(s.approved_by, vec!["MFkwEw-alice"]);
    assert_eq!(s.not_yet_approved_by, vec!["bob"]);
    assert!(s.rejected_by.is_empty() && s.result.is_none());

    let v = json!({"status": "executed", "executionTime": "2024-01-01T00:00:00Z",
        "approvedBy": [{"publicKey": "PK1"}, {"approverName": "carol"}], "result": "AQID"});
    let s = parse_request_status(&v, "r2").unwrap();
    assert_eq!(s.state, RequestState::Executed);
    assert!(s.state.is_terminal());
    assert_eq!(s.approved_by, vec!["PK1", "carol"]);
    assert_eq!(s.result.as_deref(), Some(&[1u8, 2, 3][..]));

    for (text, state) in [
        ("APPROVED", RequestState::Approved),
        ("REJECTED", RequestState::Rejected),
        ("EXPIRED", RequestState::Expired),
        ("CANCELLED", RequestState::Cancelled),
        ("CANCELED", RequestState::Cancelled),
        ("FAILED", RequestState::Failed),
        ("SOMETHING", RequestState::Other("SOMETHING".into())),
    ] {
        let s = parse_request_status(&json!({"status": text}), "r").unwrap();
        assert_eq!(s.state, state);
    }
    assert!(parse_request_status(&json!({"id": "r"}), "r").is_err());
    assert!(parse_request_status(&json!("PENDING"), "r").is_err());
    assert!(parse_request_status(&json!({"status": "EXECUTED", "result": "!!"}), "r").is_err());
    // Non-base64 result of a failed request is ignored
    let s =
        parse_request_status(&json!({"status": "FAILED", "result": "HSM error!"}), "r").unwrap();
    assert!(s.result.is_none());
}

#[test]
fn key_list_shapes() {
    assert_eq!(
        parse_key_list(&json!(["a", "b/0/1"])).unwrap(),
        vec!["a", "b/0/1"]
    );
    assert_eq!(parse_key_list(&json!([{"label": "a"}])).unwrap(), vec!["a"]);
    assert_eq!(parse_key_list(&json!({"keys": ["a"]})).unwrap(), vec!["a"]);
    assert!(parse_key_list(&json!({"x": 1})).is_err());
    assert!(parse_key_list(&json!([1])).is_err());
    assert!(parse_key_list(&json!("a")).is_err());
}

#[test]
fn sign_request_body() {
    let mut r = SignRequest::new("k", "SHA256_WITH_ECDSA", b"hello".to_vec());
    let v = r.to_json();
    assert_eq!(
        v,
        json!({"signRequest": {"payload": "aGVsbG8=", "payloadType": "UNSPECIFIED",
               "signKeyName": "k", "signatureAlgorithm": "SHA256_WITH_ECDSA"},
               "requestSignature": null})
    );
    r.signature_type = Some("DER".into());
    r.key_password = Some(Secret::new("pwé".into()));
    r.meta_data = Some(br#"{"app":"x"}"#.to_vec());
    let v = r.to_json();
    let sr = &v["signRequest"];
    assert_eq!(sr["signatureType"], "DER");
    assert_eq!(sr["keyPassword"], json!(["p", "w", "é"]));
    assert_eq!(sr["metaData"], STANDARD.encode(br#"{"app":"x"}"#));
    assert_eq!(sr["metaDataSignature"], Value::Null);
    r.meta_data_signature = Some(vec![1, 2]);
    assert_eq!(r.to_json()["signRequest"]["metaDataSignature"], "AQI=");
    let dbg = format!("{r:?}");
    assert!(!dbg.contains("pw") && dbg.contains("<redacted>"));
}

#[test]
fn base64_and_pem() {
    assert_eq!(decode_b64("AQID").unwrap(), vec![1, 2, 3]);
    assert_eq!(decode_b64("AQ").unwrap(), vec![1]);
    assert_eq!(decode_b64("AQ==\n").unwrap(), vec![1]);
    assert_eq!(decode_b64("-_8").unwrap(), vec![0xfb, 0xff]);
    assert!(decode_b64("***").is_none());
    assert_eq!(
        decode_pem_or_b64("  -----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----")
            .unwrap(),
        b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
    );
}
