use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::keys::KeyFlags;
use super::lenient::decode_b64;
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
    assert!(a.flags.sign && a.flags.always_sensitive);
    assert!(a.flags.never_extractable && a.flags.destroyable);
    assert!(a.needs_approval());
    assert!(!a.blocked());
    let p = a.policy.as_ref().unwrap();
    let tok = &p.rule_use.as_ref().unwrap().tokens[0];
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
    assert!(!a.flags.sign && !a.flags.destroyable);
    assert!(!a.needs_approval() && !a.blocked());
    // The inner object directly, numbers as id, string booleans
    let v = json!({"label": "ed", "algorithm": "ED", "id": 17, "curveOid": null,
                   "algorithmOid": "1.3.101.112",
                   "attributes": {"sign": "true", "destroyable": "false", "sensitive": "false"}});
    let a = parse_key_attributes(&v).unwrap();
    assert_eq!(a.id.as_deref(), Some("17"));
    assert!(a.flags.sign && !a.flags.destroyable);
    // A flag whose default is true is false when the TSB spells it as a string.
    assert!(!a.flags.sensitive, "\"sensitive\": \"false\"");
    for (spelling, want) in [
        ("0", false),
        ("no", false),
        (" FALSE ", false),
        ("yes", true),
    ] {
        let v = json!({"label": "ed", "algorithm": "ED", "attributes": {"sensitive": spelling}});
        let a = parse_key_attributes(&v).unwrap();
        assert_eq!(a.flags.sensitive, want, "{spelling:?}");
    }
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
    let s = parse_request_status(&v, "r1").unwrap();
    assert_eq!(s.state, RequestState::Pending);
    // An answer about another request (a late answer on a kept-alive connection) is refused.
    let e = parse_request_status(&v, "r2").unwrap_err();
    assert!(e.contains("not the one asked for"), "{e}");
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
    // The shape the labels came in (`tsb-pkcs11 doctor` names a wrapper).
    let wrapped = |v: Value| keys::parse_key_list_checked(&v).unwrap().wrapped_in;
    assert_eq!(wrapped(json!(["a"])), None);
    assert_eq!(wrapped(json!({"labels": ["a"]})), Some("labels"));
}

#[test]
fn sign_request_body() {
    let mut r = SignRequest::new("k", "SHA256_WITH_ECDSA", b"hello".to_vec());
    let v: Value = serde_json::from_slice(&r.to_body()).unwrap();
    assert_eq!(
        v,
        json!({"signRequest": {"payload": "aGVsbG8=", "payloadType": "UNSPECIFIED",
               "signKeyName": "k", "signatureAlgorithm": "SHA256_WITH_ECDSA"},
               "requestSignature": null})
    );
    r.signature_type = Some("DER".into());
    r.key_password = Some(Secret::new("pwé".into()));
    r.meta_data = Some(br#"{"app":"x"}"#.to_vec());
    let v: Value = serde_json::from_slice(&r.to_body()).unwrap();
    let sr = &v["signRequest"];
    assert_eq!(sr["signatureType"], "DER");
    assert_eq!(sr["keyPassword"], json!(["p", "w", "é"]));
    assert_eq!(sr["metaData"], STANDARD.encode(br#"{"app":"x"}"#));
    assert_eq!(sr["metaDataSignature"], Value::Null);
    r.meta_data_signature = Some(vec![1, 2]);
    let v: Value = serde_json::from_slice(&r.to_body()).unwrap();
    assert_eq!(v["signRequest"]["metaDataSignature"], "AQI=");
    // Without metaData, a signature alone is still sent.
    r.meta_data = None;
    let v: Value = serde_json::from_slice(&r.to_body()).unwrap();
    assert_eq!(v["signRequest"]["metaDataSignature"], "AQI=");
    assert!(v["signRequest"].get("metaData").is_none());
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

// ---------------------------------------------------------------------------------------
// The tolerances, one row each, and the unknown-field report

/// The DER of a P-256 SubjectPublicKeyInfo prefix (enough to tell the encodings apart).
const SPKI: [u8; 8] = [0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0xfb];

fn attrs(v: Value) -> Result<KeyAttributes, String> {
    parse_key_attributes(&v)
}

/// The algorithms of the contract and the post-quantum parameter sets are known; others not.
#[test]
fn known_algorithms() {
    for a in [
        "RSA",
        "EC",
        "ED",
        "HSS-LMS",
        "ML-DSA-65",
        "SLH-DSA-SHA2-128f",
    ] {
        assert!(keys::known_algorithm(a), "{a}");
    }
    for a in ["", "rsa", "ML-DSA-1", "SLH-DSA", "FOO"] {
        assert!(!keys::known_algorithm(a), "{a}");
    }
}

/// An LMS key's one-time signatures left, under each name the TSB may use, as a number or a
/// string; null or absent is not reported.
#[test]
fn remaining_signatures_under_each_name() {
    for (field, value, want) in [
        ("remainingSignatures", json!(5), Some(5)),
        ("keysRemaining", json!("7"), Some(7)),
        ("usagesRemaining", json!(0), Some(0)),
        ("remainingSignatures", json!(null), None),
        ("other", json!(3), None),
    ] {
        let mut v = json!({"label": "k", "algorithm": "HSS"});
        v[field] = value;
        assert_eq!(attrs(v).unwrap().remaining_signatures, want, "{field}");
    }
}

#[test]
fn attribute_tolerances() {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let inner = json!({"label": "k", "algorithm": "EC", "publicKey": STANDARD.encode(SPKI)});
    let b64 = STANDARD.encode(SPKI);
    let folded = format!("{}\r\n {}\n", &b64[..4], &b64[4..]);
    type Check = fn(&KeyAttributes) -> bool;
    let rows: Vec<(&str, Value, Check)> = vec![
        ("wrapped", json!({"json": inner, "xml": "<k/>"}), |a| {
            a.label == "k"
        }),
        (
            "json as a string",
            json!({"json": inner.to_string()}),
            |a| a.label == "k" && a.public_key.as_deref() == Some(&SPKI[..]),
        ),
        ("the inner object alone", inner.clone(), |a| {
            a.algorithm == "EC"
        }),
        ("only algorithm present", json!({"algorithm": "RSA"}), |a| {
            a.label.is_empty() && a.algorithm == "RSA"
        }),
        (
            "json null beside a bare object",
            json!({"json": null, "label": "bare"}),
            |a| a.label == "bare",
        ),
        (
            "odd top-level fields beside json are not looked at",
            json!({"json": inner, "publicKey": 5, "policy": 7}),
            |a| a.public_key.as_deref() == Some(&SPKI[..]) && a.policy.is_none(),
        ),
        (
            "numbers for strings",
            json!({"label": 7, "algorithm": "EC", "id": 17}),
            |a| a.label == "7" && a.id.as_deref() == Some("17"),
        ),
        ("empty id is none", json!({"label": "k", "id": ""}), |a| {
            a.id.is_none()
        }),
        (
            "publicKey base64 without padding",
            json!({"label": "k", "publicKey": STANDARD_NO_PAD.encode(SPKI)}),
            |a| a.public_key.as_deref() == Some(&SPKI[..]),
        ),
        (
            "publicKey URL-safe",
            json!({"label": "k", "publicKey": URL_SAFE.encode(SPKI)}),
            |a| a.public_key.as_deref() == Some(&SPKI[..]),
        ),
        (
            "publicKey URL-safe without padding",
            json!({"label": "k", "publicKey": URL_SAFE_NO_PAD.encode(SPKI)}),
            |a| a.public_key.as_deref() == Some(&SPKI[..]),
        ),
        (
            "publicKey with line breaks",
            json!({"label": "k", "publicKey": folded}),
            |a| a.public_key.as_deref() == Some(&SPKI[..]),
        ),
        (
            "publicKey PEM",
            json!({"label": "k", "publicKey": "  -----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"}),
            |a| {
                a.public_key.as_deref()
                    == Some(&b"-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"[..])
            },
        ),
        (
            "publicKey blank",
            json!({"label": "k", "publicKey": " "}),
            |a| a.public_key.is_none(),
        ),
        (
            "booleans as strings and numbers",
            json!({"label": "k", "attributes": {"sign": "yes", "alwaysSensitive": 1,
                   "neverExtractable": " true ", "destroyable": "no", "decrypt": 1}}),
            |a| {
                let f = a.flags;
                f.sign && f.always_sensitive && f.never_extractable && !f.destroyable
            },
        ),
        (
            "unreadable booleans take the defaults",
            json!({"label": "k", "attributes": {"sign": "maybe", "destroyable": [true], "unwrap": null}}),
            |a| a.flags == KeyFlags::default(),
        ),
        (
            "attributes that are no object give the defaults",
            json!({"label": "k", "attributes": "sign"}),
            |a| a.flags == KeyFlags::default(),
        ),
        ("policy null", json!({"label": "k", "policy": null}), |a| {
            a.policy.is_none()
        }),
        (
            "policy blank text",
            json!({"label": "k", "policy": ""}),
            |a| a.policy.is_none(),
        ),
        (
            "policy text null",
            json!({"label": "k", "policy": "null"}),
            |a| a.policy.is_none(),
        ),
        (
            "policy as text",
            json!({"label": "k", "policy": r#"{"keyStatus": {"blocked": 1}}"#}),
            |a| a.blocked() && !a.needs_approval(),
        ),
        (
            "a rule as text, numbers as strings",
            json!({"label": "k", "policy": {"ruleUse":
                r#"{"tokens": [{"timelock": " 60 ", "timeout": 120.0, "groups": [{"quorum": "2"}]}]}"#}}),
            |a| {
                let p = a.policy.as_ref().unwrap();
                let t = &p.rule_use.as_ref().unwrap().tokens[0];
                a.needs_approval()
                    && t.timelock == 60
                    && t.timeout == 120
                    && t.groups[0].quorum == 2
            },
        ),
        (
            "a rule that is no object counts as an empty rule",
            json!({"label": "k", "policy": {"ruleUse": 5, "ruleBlock": "not json"}}),
            |a| {
                let p = a.policy.as_ref().unwrap();
                p.rule_use.as_ref().is_some_and(|r| r.tokens.is_empty()) && p.rule_block.is_none()
            },
        ),
        (
            "a single token instead of a list; negative numbers are 0; huge quorum capped",
            json!({"label": "k", "policy": {"ruleUse": {"tokens": {"timelock": -60,
                "groups": {"quorum": 1e12, "approvals": "x"}}}}}),
            |a| {
                let t = &a.policy.as_ref().unwrap().rule_use.as_ref().unwrap().tokens;
                t.len() == 1
                    && t[0].timelock == 0
                    && t[0].groups[0].quorum == u32::MAX
                    && t[0].groups[0].approvals.len() == 1
            },
        ),
        (
            "null lists are empty; odd entries keep the count",
            json!({"label": "k", "policy": {"ruleUse": {"tokens": [
                {"groups": null}, 3, {"groups": [null, "g", {"name": "ok"}]}]}}}),
            |a| {
                let t = &a.policy.as_ref().unwrap().rule_use.as_ref().unwrap().tokens;
                t.len() == 3
                    && t[0].groups.is_empty()
                    && t[2].groups.len() == 3
                    && t[2].groups[2].name == "ok"
            },
        ),
    ];
    for (name, input, check) in rows {
        let a = attrs(input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(check(&a), "{name}: {a:?}");
    }
}

#[test]
fn attribute_errors_name_the_field() {
    for (input, message) in [
        (json!([1]), "expected a JSON object"),
        (json!("k"), "expected a JSON object"),
        (json!({"xml": "x"}), "no field \"json\""),
        (json!({"json": "[1]"}), "field \"json\" is not an object"),
        (
            json!({"json": "{not json"}),
            "field \"json\" is not an object",
        ),
        (
            json!({"json": {"label": "k", "publicKey": "%%%"}}),
            "json.publicKey: neither base64 nor PEM",
        ),
        (
            json!({"json": {"label": "k", "publicKey": 5}}),
            "json.publicKey: not a string",
        ),
        (
            json!({"label": "k", "publicKey": ["MFkw"]}),
            "publicKey: not a string",
        ),
        (
            json!({"json": {"label": "k", "policy": 5}}),
            "json.policy: not a JSON object",
        ),
        (
            json!({"json": {"label": "k", "policy": "[1]"}}),
            "json.policy: not a JSON object",
        ),
        (
            json!({"json": {"label": "k", "policy": "{oops"}}),
            "json.policy: not a JSON object (a string that is no JSON: line 1, column 2)",
        ),
        (
            json!({"json": json!({"label": "k", "publicKey": "%"}).to_string()}),
            "json.publicKey: neither base64 nor PEM",
        ),
    ] {
        let e = attrs(input.clone()).expect_err(&input.to_string());
        assert_eq!(e, message, "{input}");
    }
}

#[test]
fn key_list_tolerances() {
    for (input, labels) in [
        (json!([]), vec![]),
        (json!(["a", "", "b/0/1"]), vec!["a", "", "b/0/1"]),
        (
            json!([{"label": "a"}, {"label": 7}, "c"]),
            vec!["a", "7", "c"],
        ),
        (json!({"keys": ["a"]}), vec!["a"]),
        (json!({"labels": ["a"]}), vec!["a"]),
        (json!({"keyLabels": [{"label": "a"}]}), vec!["a"]),
        (json!({"content": ["a"], "total": 1}), vec!["a"]),
        // The first name that holds an array wins; the others are not looked at.
        (
            json!({"keys": "none", "labels": ["b"], "content": [1]}),
            vec!["b"],
        ),
        (json!({"keys": ["a"], "labels": [null]}), vec!["a"]),
        (json!({"keys": {"a": [1]}, "labels": ["b"]}), vec!["b"]),
        (
            json!({"keys": null, "labels": 5, "keyLabels": ["c"]}),
            vec!["c"],
        ),
    ] {
        assert_eq!(parse_key_list(&input).unwrap(), labels, "{input}");
    }
    for (input, message) in [
        (json!("a"), "expected a JSON array of key labels"),
        (json!(null), "expected a JSON array of key labels"),
        (json!({"x": ["a"]}), "expected a JSON array of key labels"),
        (json!(["a", 1]), "[1]: a key list entry is not a string"),
        (json!(["a", null]), "[1]: a key list entry is not a string"),
        (json!(["a", -1]), "[1]: a key list entry is not a string"),
        (json!(["a", 1.5]), "[1]: a key list entry is not a string"),
        (json!(["a", true]), "[1]: a key list entry is not a string"),
        (json!(["a", ["b"]]), "[1]: a key list entry is not a string"),
        (
            json!(["a", {"label": null}]),
            "[1]: a key list entry has no label",
        ),
        (json!([{"name": "a"}]), "[0]: a key list entry has no label"),
        (
            json!({"labels": [{"label": ""}]}),
            "labels[0]: a key list entry has no label",
        ),
    ] {
        assert_eq!(parse_key_list(&input).unwrap_err(), message, "{input}");
    }
}

#[test]
fn request_status_tolerances() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let sig = [0xfb_u8, 0xff, 0x01, 0x02];
    type Check = fn(&RequestStatus) -> bool;
    let rows: Vec<(&str, Value, Check)> = vec![
        ("state for status", json!({"state": "pending"}), |s| {
            s.state == RequestState::Pending
        }),
        (
            "an empty status falls back to state",
            json!({"status": "", "state": "REJECTED"}),
            |s| s.state == RequestState::Rejected,
        ),
        ("status as a number", json!({"status": 5}), |s| {
            s.state == RequestState::Other("5".into())
        }),
        (
            "result URL-safe without padding",
            json!({"status": "EXECUTED", "result": URL_SAFE_NO_PAD.encode(sig)}),
            |s| s.result.as_deref() == Some(&[0xfb, 0xff, 0x01, 0x02][..]),
        ),
        (
            "result that is no string is none",
            json!({"status": "EXECUTED", "result": 1234}),
            |s| s.result.is_none(),
        ),
        (
            "blank result is none",
            json!({"status": "EXECUTED", "result": "  "}),
            |s| s.result.is_none(),
        ),
        (
            "approver entries of every shape",
            json!({"status": "PENDING", "approvedBy": [
                "pk-a", "", null, 7, -3, 2.5, true,
                {"name": "n"}, {"approverName": "an"}, {"publicKey": "pk"},
                {"approverPublicKey": "apk"}, {"approver": "ap"}, {"certificate": "c"},
                {"id": 9}, {"value": "v"}, {"name": "", "value": "v2"}, {"other": 1}, [1, 2]]}),
            |s| {
                s.approved_by
                    == [
                        "pk-a",
                        "",
                        "7",
                        "-3",
                        "2.5",
                        "true",
                        "n",
                        "an",
                        "pk",
                        "apk",
                        "ap",
                        "c",
                        "9",
                        "v",
                        "v2",
                        r#"{"other":1}"#,
                        "[1,2]",
                    ]
            },
        ),
        (
            "a single approver instead of a list",
            json!({"status": "PENDING", "notYetApprovedBy": "bob", "rejectedBy": {"name": "eve"}}),
            |s| s.not_yet_approved_by == ["bob"] && s.rejected_by == ["eve"],
        ),
        (
            "numbers are no approvers",
            json!({"status": "PENDING", "approvedBy": 2.5, "notYetApprovedBy": -1}),
            |s| s.approved_by.is_empty() && s.not_yet_approved_by.is_empty(),
        ),
        (
            "null or odd approver lists are empty",
            json!({"status": "PENDING", "approvedBy": null, "notYetApprovedBy": 3,
                   "rejectedBy": false}),
            |s| {
                s.approved_by.is_empty()
                    && s.not_yet_approved_by.is_empty()
                    && s.rejected_by.is_empty()
            },
        ),
    ];
    for (name, input, check) in rows {
        let s = parse_request_status(&input, "r").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(check(&s), "{name}: {s:?}");
    }
    for (input, message) in [
        (json!(["PENDING"]), "expected a JSON object"),
        (json!({"state": null}), "no field \"status\""),
        (
            json!({"status": "EXECUTED", "result": "not base64!"}),
            "result: not base64",
        ),
    ] {
        assert_eq!(
            parse_request_status(&input, "r").unwrap_err(),
            message,
            "{input}"
        );
    }
}

#[test]
fn unknown_fields_are_reported_by_path() {
    // The simulator's full response (every field of the contract): nothing is unknown.
    let v: Value = serde_json::from_str(ATTRS_WITH_POLICY).unwrap();
    let (a, unknown) = keys::parse_key_attributes_checked(&v).unwrap();
    assert_eq!(a.label, "ska-key");
    assert!(unknown.is_empty(), "{unknown:?}");

    let v = json!({
        "json": {
            "label": "k", "algorithm": "EC", "createTime": "2024", "keySize": 256,
            "newField": 1,
            "attributes": {"sign": true, "verify": true, "quantumSafe": true},
            "policy": {"ruleUse": {"tokens": [{"name": "t", "extra": {"deep": 1},
                "groups": [{"name": "g", "quorum": 1,
                    "approvals": [{"type": "public_key", "value": "AA==", "comment": "x"}]}]}]},
                "keyStatus": {"blocked": false, "since": "now"}}
        },
        "xml": "<k/>", "xmlSignature": "c2ln", "attestationKeyName": "att",
        "signatureAlgorithm": "x",
        "strange\nkey": 1,
    });
    let (a, unknown) = keys::parse_key_attributes_checked(&v).unwrap();
    assert!(a.needs_approval() && a.flags.sign);
    let mut unknown = unknown;
    unknown.sort();
    assert_eq!(
        unknown,
        [
            "\"strange key\"",
            "json.attributes.quantumSafe",
            "json.newField",
            "json.policy.keyStatus.since",
            "json.policy.ruleUse.tokens[0].extra",
            "json.policy.ruleUse.tokens[0].groups[0].approvals[0].comment",
            "signatureAlgorithm",
        ]
    );

    // The inner object alone: its own fields are known, the envelope's are not expected.
    let v = json!({"label": "k", "algorithm": "ED", "curveOid": null, "colour": "blue"});
    let (_, unknown) = keys::parse_key_attributes_checked(&v).unwrap();
    assert_eq!(unknown, ["colour"]);

    // `json` as a string: the paths inside it still start with `json`.
    let v = json!({"json": json!({"label": "k", "more": 1}).to_string(), "xml": ""});
    let (_, unknown) = keys::parse_key_attributes_checked(&v).unwrap();
    assert_eq!(unknown, ["json.more"]);

    // Request status: the documented fields and the tolerated `state` are known.
    let v = json!({"id": "r", "status": "PENDING", "state": "x", "executionTime": null,
        "approvedBy": [{"name": "a", "note": 1}], "notYetApprovedBy": [], "rejectedBy": [],
        "result": null, "createdAt": "2024", "policy": {"a": 1}});
    let (s, mut unknown) = status::parse_request_status_checked(&v, "r").unwrap();
    assert_eq!(s.approved_by, ["a"]);
    unknown.sort();
    assert_eq!(unknown, ["createdAt", "policy"]);

    // A hostile body cannot make the report huge.
    let many: serde_json::Map<String, Value> =
        (0..1000).map(|i| (format!("f{i}"), json!(i))).collect();
    let (_, unknown) =
        status::parse_request_status_checked(&json!({"status": "PENDING", "x": many}), "r")
            .unwrap();
    assert_eq!(unknown, ["x"]);
    let mut body = many.clone();
    body.insert("status".into(), json!("PENDING"));
    let (_, unknown) = status::parse_request_status_checked(&Value::Object(body), "r").unwrap();
    assert_eq!(unknown.len(), lenient::MAX_UNKNOWN_FIELDS);
}

#[test]
fn version_info_and_its_unknown_fields() {
    let (v, unknown) =
        parse_version_info_checked(&json!({"Version": "2.2.0", "buildTime": "t"})).unwrap();
    assert_eq!(v.as_deref(), Some("2.2.0"));
    assert_eq!(unknown, ["buildTime"]);
    let (v, unknown) = parse_version_info_checked(&json!({"version": 3})).unwrap();
    assert_eq!(v.as_deref(), Some("3"));
    assert!(unknown.is_empty());
    assert_eq!(parse_version_info_checked(&json!({})).unwrap().0, None);
    assert!(parse_version_info_checked(&json!([1])).is_err());
}

#[test]
fn sign_responses_in_every_tolerated_shape() {
    let sig = |body: &str| serde_json::from_str::<SignResponse>(body).map_err(|e| e.to_string());
    assert_eq!(
        sig(r#"{"signature": "AQID"}"#)
            .unwrap()
            .signature()
            .unwrap(),
        vec![1, 2, 3]
    );
    // URL-safe and unpadded base64, unknown fields beside it.
    assert_eq!(
        sig(r#"{"signature": "-_8", "extra": 1}"#)
            .unwrap()
            .signature()
            .unwrap(),
        vec![0xfb, 0xff]
    );
    for (body, want) in [
        (r#"{}"#, "no field \"signature\""),
        (r#"{"signature": null}"#, "no field \"signature\""),
        (r#"{"signature": ""}"#, "no field \"signature\""),
        (r#"{"signature": "not base64!"}"#, "signature is not base64"),
    ] {
        assert_eq!(sig(body).unwrap().signature().unwrap_err(), want, "{body}");
    }
    assert!(sig("12").is_err());
}

#[test]
fn sign_request_ids_in_every_tolerated_shape() {
    let id = |body: &str| {
        serde_json::from_str::<SignRequestCreated>(body)
            .map_err(|e| e.to_string())
            .and_then(SignRequestCreated::id)
    };
    assert_eq!(id(r#"{"signRequestId": "r-1"}"#).unwrap(), "r-1");
    assert_eq!(id(r#"{"requestId": "r-2"}"#).unwrap(), "r-2");
    assert_eq!(id(r#"{"id": 17}"#).unwrap(), "17");
    assert_eq!(id(r#""r-3""#).unwrap(), "r-3");
    // signRequestId wins over the others.
    assert_eq!(
        id(r#"{"id": "x", "requestId": "y", "signRequestId": "z"}"#).unwrap(),
        "z"
    );
    for body in [r#"{}"#, r#""""#, r#"{"signRequestId": null}"#] {
        assert_eq!(
            id(body).unwrap_err(),
            "no field \"signRequestId\"",
            "{body}"
        );
    }
    assert!(id("[1]").is_err());
}

/// A request id the module would log, journal and show is refused where the answer is parsed
/// (issue #19 item 10): too long, control or bidirectional characters, a credential.
#[test]
fn absurd_request_ids_are_refused() {
    let id = |v: serde_json::Value| {
        serde_json::from_value::<SignRequestCreated>(v)
            .map_err(|e| e.to_string())
            .and_then(SignRequestCreated::id)
    };
    let ok = "9a0f3c2e-5b1d-4c8e-9f7a-0123456789ab";
    assert_eq!(id(serde_json::json!({ "signRequestId": ok })).unwrap(), ok);
    let longest = "r".repeat(128);
    assert_eq!(
        id(serde_json::json!({ "signRequestId": longest })).unwrap(),
        longest
    );
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0c2IifQ.c2lnbmF0dXJlLXBhcnQ";
    for (bad, why) in [
        ("r".repeat(129), "129 characters"),
        (
            format!("big-{}", "x".repeat(2 * 1024 * 1024)),
            "2097156 characters",
        ),
        ("req-1\n[ERROR] forged".to_string(), "control"),
        ("req\r1".to_string(), "control"),
        ("req\u{1b}[31m".to_string(), "control"),
        ("req\u{202e}1".to_string(), "bidirectional"),
        ("req\u{2028}1".to_string(), "bidirectional"),
        (jwt.to_string(), "credential"),
        (format!("leak-{jwt}-end"), "credential"),
    ] {
        for body in [
            serde_json::json!({ "signRequestId": bad }),
            serde_json::json!(bad),
        ] {
            let e = id(body).unwrap_err();
            assert!(e.contains(why), "{e}");
            assert!(e.starts_with("refused the request id"), "{e}");
            assert!(e.len() < 200, "the id is not quoted: {e}");
        }
    }
}

#[test]
fn certificate_answers_in_every_tolerated_shape() {
    let cert = |body: &str| {
        serde_json::from_str::<CertificateResponse>(body)
            .map_err(|e| e.to_string())
            .and_then(CertificateResponse::certificate)
    };
    assert_eq!(
        cert(r#"{"certificate": "MAMCAQE="}"#).unwrap(),
        Some(vec![0x30, 3, 2, 1, 1])
    );
    assert_eq!(
        cert(r#"{"certificate": null, "rawCertificate": "MAMCAQE="}"#).unwrap(),
        Some(vec![0x30, 3, 2, 1, 1])
    );
    assert_eq!(
        cert(r#"{"certificate": "  ", "rawCertificate": "MAMCAQE="}"#).unwrap(),
        Some(vec![0x30, 3, 2, 1, 1])
    );
    let pem = cert(r#""-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----""#)
        .unwrap()
        .unwrap();
    assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert_eq!(cert(r#"{}"#).unwrap(), None);
    assert_eq!(cert(r#"{"certificate": 12}"#).unwrap(), None);
    assert_eq!(cert(r#""""#).unwrap(), None);
    assert_eq!(
        cert(r#"{"certificate": "%%%"}"#).unwrap_err(),
        "certificate is neither PEM nor base64"
    );
}

/// `lenient::vec` (policies): an array keeps its count (elements that are no object count as
/// defaults), null is empty, and a single object or scalar is one element.
#[test]
fn lenient_lists_keep_counts() {
    #[derive(serde::Deserialize)]
    struct Listed {
        #[serde(default, deserialize_with = "super::lenient::vec")]
        items: Vec<super::policy::PolicyGroup>,
    }
    for (items, n) in [
        (json!(null), 0),
        (json!([]), 0),
        (json!([1, {"name": "g"}, "x"]), 3),
        (json!({"name": "g"}), 1),
        (json!(true), 1),
        (json!(-1), 1),
        (json!(7), 1),
        (json!(1.5), 1),
        (json!("x"), 1),
    ] {
        let l: Listed = serde_json::from_value(json!({ "items": items.clone() })).unwrap();
        assert_eq!(l.items.len(), n, "{items}");
    }
}

/// Every lenient scalar reader over every JSON shape a TSB, a proxy or another version might
/// send: what each gives, in one table (strings, numbers as text, fractions, negatives, blank
/// text, booleans as words, arrays and objects).
#[test]
fn lenient_scalars_over_every_json_shape() {
    use super::lenient;
    let max = u64::from(u32::MAX);
    #[rustfmt::skip]
    type Row = (Value, &'static str, Option<&'static str>, Option<&'static str>, Option<u64>, Option<bool>);
    let table: Vec<Row> = vec![
        // input, string, opt_string, opt_text, opt_u64, opt_bool
        (json!(null), "", None, None, None, None),
        (json!(true), "", None, None, None, Some(true)),
        (json!(false), "", None, None, None, Some(false)),
        (json!(0), "0", Some("0"), None, Some(0), Some(false)),
        (json!(7), "7", Some("7"), None, Some(7), Some(true)),
        (json!(-3), "-3", Some("-3"), None, None, Some(true)),
        (json!(2.9), "2.9", Some("2.9"), None, Some(2), None),
        (json!(-0.5), "-0.5", Some("-0.5"), None, None, None),
        (
            json!(5_000_000_000u64),
            "5000000000",
            Some("5000000000"),
            None,
            Some(5_000_000_000),
            Some(true),
        ),
        (json!(""), "", None, None, None, None),
        (json!("  "), "  ", Some("  "), None, None, None),
        (json!(" 7 "), " 7 ", Some(" 7 "), Some(" 7 "), Some(7), None),
        (json!("1"), "1", Some("1"), Some("1"), Some(1), Some(true)),
        (json!("0"), "0", Some("0"), Some("0"), Some(0), Some(false)),
        (
            json!(" TRUE "),
            " TRUE ",
            Some(" TRUE "),
            Some(" TRUE "),
            None,
            Some(true),
        ),
        (
            json!("False"),
            "False",
            Some("False"),
            Some("False"),
            None,
            Some(false),
        ),
        (
            json!("yes"),
            "yes",
            Some("yes"),
            Some("yes"),
            None,
            Some(true),
        ),
        (json!("No"), "No", Some("No"), Some("No"), None, Some(false)),
        (json!("-3"), "-3", Some("-3"), Some("-3"), None, None),
        (json!("x"), "x", Some("x"), Some("x"), None, None),
        (json!([1, "a", {"b": null}]), "", None, None, None, None),
        (json!({"n": 1, "m": [true]}), "", None, None, None, None),
    ];
    for (v, string, opt_string, opt_text, opt_u64, opt_bool) in table {
        let owned = |o: Option<&str>| o.map(str::to_string);
        assert_eq!(lenient::string(&v).unwrap(), string, "string {v}");
        assert_eq!(
            lenient::opt_string(&v).unwrap(),
            owned(opt_string),
            "opt_string {v}"
        );
        assert_eq!(
            lenient::opt_text(&v).unwrap(),
            owned(opt_text),
            "opt_text {v}"
        );
        assert_eq!(lenient::opt_u64(&v).unwrap(), opt_u64, "opt_u64 {v}");
        assert_eq!(lenient::u64(&v).unwrap(), opt_u64.unwrap_or(0), "u64 {v}");
        let capped = opt_u64.map_or(0, |n| n.min(max) as u32);
        assert_eq!(lenient::u32(&v).unwrap(), capped, "u32 {v}");
        assert_eq!(lenient::opt_bool(&v).unwrap(), opt_bool, "opt_bool {v}");
        assert_eq!(
            lenient::bool(&v).unwrap(),
            opt_bool.unwrap_or(false),
            "bool {v}"
        );
        // `Known` takes anything.
        assert!(
            serde_json::from_value::<lenient::Known>(v.clone()).is_ok(),
            "{v}"
        );
    }
}

/// Object fields: `object_or_json_text` (strict), `lenient_object` and `object_or_default`
/// over every shape, a string holding JSON included.
#[test]
fn lenient_objects_over_every_json_shape() {
    use super::lenient;
    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    struct P {
        #[serde(default, deserialize_with = "lenient::u64")]
        n: u64,
    }
    let p = |n| Some(P { n });
    // input, object_or_json_text (Err: its message starts so), lenient_object, object_or_default
    type Row = (Value, Result<Option<P>, &'static str>, Option<P>, P);
    let table: Vec<Row> = vec![
        (json!(null), Ok(None), None, P::default()),
        (json!({"n": 3}), Ok(p(3)), p(3), P { n: 3 }),
        (json!({"n": "4", "x": [1]}), Ok(p(4)), p(4), P { n: 4 }),
        (json!(""), Ok(None), None, P::default()),
        (json!(" \n "), Ok(None), None, P::default()),
        (json!("null"), Ok(None), None, P::default()),
        (json!("{\"n\": 5}"), Ok(p(5)), p(5), P::default()),
        (
            json!(" [1,2] "),
            Err("not a JSON object"),
            p(0),
            P::default(),
        ),
        (json!("7"), Err("not a JSON object"), p(0), P::default()),
        (
            json!("{oops"),
            Err("not a JSON object (a string that is no JSON: line 1, column 2)"),
            None,
            P::default(),
        ),
        (json!(true), Err("not a JSON object"), p(0), P::default()),
        (json!(-1), Err("not a JSON object"), p(0), P::default()),
        (json!(8), Err("not a JSON object"), p(0), P::default()),
        (json!(1.5), Err("not a JSON object"), p(0), P::default()),
        (
            json!([{"n": 1}]),
            Err("not a JSON object"),
            p(0),
            P::default(),
        ),
    ];
    for (v, strict, lenient_obj, or_default) in table {
        let got: Result<Option<P>, String> =
            lenient::object_or_json_text(&v).map_err(|e: serde_json::Error| e.to_string());
        match (&got, &strict) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{v}"),
            (Err(g), Err(w)) => assert!(g.starts_with(w), "{v}: {g}"),
            _ => panic!("{v}: {got:?}, expected {strict:?}"),
        }
        assert_eq!(
            lenient::lenient_object::<_, P>(&v).unwrap(),
            lenient_obj,
            "{v}"
        );
        assert_eq!(
            lenient::object_or_default::<_, P>(&v).unwrap(),
            or_default,
            "{v}"
        );
    }
}

/// Approver lists in every shape a TSB version or a proxy might send: what each names, with
/// an object's name fields in their order of preference.
#[test]
fn approver_lists_in_every_shape() {
    let names = |v: Value| -> Vec<String> {
        let body = json!({"status": "PENDING", "approvedBy": v.clone(), "rejectedBy": v});
        let s = super::parse_request_status(&body, "r1").unwrap();
        assert_eq!(s.approved_by, s.rejected_by);
        s.approved_by
    };
    let none: Vec<String> = vec![];
    for v in [
        json!(null),
        json!(true),
        json!(3),
        json!(-3),
        json!(2.5),
        json!([]),
    ] {
        assert_eq!(names(v.clone()), none, "{v}");
    }
    assert_eq!(names(json!("alice")), ["alice"]);
    assert_eq!(
        names(json!(["a", null, {"name": "b"}, 5, -2, 1.5, true, [1, 2], {"other": 1}])),
        ["a", "b", "5", "-2", "1.5", "true", "[1,2]", "{\"other\":1}"]
    );
    // A single object; its name fields in order of preference, each shown once the ones
    // before it are gone (or null).
    let fields = [
        "name",
        "approverName",
        "publicKey",
        "approverPublicKey",
        "approver",
        "certificate",
        "id",
        "value",
    ];
    for k in 0..fields.len() {
        let mut o = serde_json::Map::new();
        o.insert(fields[0].into(), Value::Null);
        for f in &fields[k..] {
            o.insert(f.to_string(), json!(format!("{f}-v")));
        }
        assert_eq!(names(Value::Object(o)), [format!("{}-v", fields[k])], "{k}");
    }
    assert_eq!(names(json!({"id": 7})), ["7"]);
}

/// Request states: the names the TSB uses (any case, spaces around, both spellings of
/// cancelled), which of them end a wait, and an unknown one kept as received.
#[test]
fn request_states_and_which_are_final() {
    for (text, state, terminal) in [
        ("PENDING", RequestState::Pending, false),
        (" approved ", RequestState::Approved, false),
        ("Executed", RequestState::Executed, true),
        ("REJECTED", RequestState::Rejected, true),
        ("expired", RequestState::Expired, true),
        ("CANCELLED", RequestState::Cancelled, true),
        ("canceled", RequestState::Cancelled, true),
        ("FAILED", RequestState::Failed, true),
        (" On Hold ", RequestState::Other(" On Hold ".into()), false),
    ] {
        let s = RequestState::parse(text);
        assert_eq!(s, state, "{text}");
        assert_eq!(s.is_terminal(), terminal, "{text}");
    }
}
