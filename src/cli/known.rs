//! The fields of TSB answers this module knows (the contract `src/tsb/models.rs` parses), so
//! `doctor` can name every field a TSB sends that the module would silently ignore.

/// The shape of a JSON value.
pub(crate) enum Shape {
    /// A value that is not looked into.
    Leaf,
    /// An object with these known fields. A string holding such an object (some TSBs
    /// serialise nested objects as strings) is looked into too.
    Obj(&'static [(&'static str, &'static Shape)]),
    /// An array of values of a shape.
    List(&'static Shape),
}

static LEAF: Shape = Shape::Leaf;

pub(crate) static VERSION_INFO: Shape = Shape::Obj(&[("Version", &LEAF), ("version", &LEAF)]);

static APPROVAL: Shape = Shape::Obj(&[("type", &LEAF), ("name", &LEAF), ("value", &LEAF)]);
static APPROVALS: Shape = Shape::List(&APPROVAL);
static GROUP: Shape = Shape::Obj(&[
    ("name", &LEAF),
    ("quorum", &LEAF),
    ("approvals", &APPROVALS),
]);
static GROUPS: Shape = Shape::List(&GROUP);
static POLICY_TOKEN: Shape = Shape::Obj(&[
    ("name", &LEAF),
    ("timelock", &LEAF),
    ("timeout", &LEAF),
    ("groups", &GROUPS),
]);
static POLICY_TOKENS: Shape = Shape::List(&POLICY_TOKEN);
static RULE: Shape = Shape::Obj(&[("tokens", &POLICY_TOKENS)]);
static KEY_STATUS: Shape = Shape::Obj(&[("blocked", &LEAF)]);
static POLICY: Shape = Shape::Obj(&[
    ("ruleUse", &RULE),
    ("ruleBlock", &RULE),
    ("ruleUnblock", &RULE),
    ("ruleModify", &RULE),
    ("keyStatus", &KEY_STATUS),
]);
static FLAGS: Shape = Shape::Obj(&[
    ("sign", &LEAF),
    ("decrypt", &LEAF),
    ("unwrap", &LEAF),
    ("derive", &LEAF),
    ("sensitive", &LEAF),
    ("alwaysSensitive", &LEAF),
    ("extractable", &LEAF),
    ("neverExtractable", &LEAF),
    ("modifiable", &LEAF),
    ("copyable", &LEAF),
    ("destroyable", &LEAF),
]);
static KEY_JSON: Shape = Shape::Obj(&[
    ("label", &LEAF),
    ("id", &LEAF),
    ("algorithm", &LEAF),
    ("algorithmOid", &LEAF),
    ("curveOid", &LEAF),
    ("keySize", &LEAF),
    ("publicKey", &LEAF),
    ("attributes", &FLAGS),
    ("policy", &POLICY),
    ("createTime", &LEAF),
]);
pub(crate) static KEY_ATTRIBUTES: Shape = Shape::Obj(&[
    ("json", &KEY_JSON),
    ("xml", &LEAF),
    ("xmlSignature", &LEAF),
    ("attestationKeyName", &LEAF),
]);
pub(crate) static REQUEST_STATUS: Shape = Shape::Obj(&[
    ("id", &LEAF),
    ("status", &LEAF),
    ("executionTime", &LEAF),
    ("approvedBy", &LEAF),
    ("notYetApprovedBy", &LEAF),
    ("rejectedBy", &LEAF),
    ("result", &LEAF),
]);
/// `algorithm` values of the contract (the module signs with RSA, EC and ED keys and leaves
/// the others out knowingly).
pub(crate) const ALGORITHMS: &[&str] = &["RSA", "EC", "ED", "DSA", "BLS", "AES"];

/// Approver `type` values of the contract.
pub(crate) const APPROVER_TYPES: &[&str] = &[
    "public_key",
    "public-key",
    "certificate",
    "onboarded_approver_certificate",
];

/// The dotted paths of fields in `v` that `shape` does not know (`[]` marks array items).
pub(crate) fn unknown_fields(v: &serde_json::Value, shape: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    walk(v, shape, "", &mut out);
    out.sort();
    out.dedup();
    out
}

fn walk(v: &serde_json::Value, shape: &Shape, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (shape, v) {
        (Shape::Leaf, _) => {}
        (Shape::Obj(fields), Value::Object(map)) => {
            for (k, child) in map {
                match fields.iter().find(|(name, _)| name == k) {
                    Some((_, s)) => walk(child, s, &join(k), out),
                    None => out.push(join(k)),
                }
            }
        }
        (Shape::Obj(_), Value::String(s)) => {
            if let Ok(inner @ Value::Object(_)) = serde_json::from_str::<Value>(s) {
                walk(&inner, shape, path, out);
            }
        }
        (Shape::List(item), Value::Array(items)) => {
            for i in items {
                walk(i, item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_unknown_fields_are_named() {
        let v = json!({
            "json": {
                "label": "k", "algorithm": "EC", "newTopField": 1,
                "attributes": {"sign": true, "quantumSafe": false},
                "policy": {"ruleUse": {"tokens": [{"name": "t", "groups": [
                    {"name": "g", "quorum": 1, "approvals": [{"type": "public_key", "weight": 2}]}
                ]}]}, "keyStatus": {"blocked": false}}
            },
            "xml": "<x/>",
            "extra": null
        });
        assert_eq!(
            unknown_fields(&v, &KEY_ATTRIBUTES),
            [
                "extra",
                "json.attributes.quantumSafe",
                "json.newTopField",
                "json.policy.ruleUse.tokens[].groups[].approvals[].weight"
            ]
        );
    }

    #[test]
    fn a_policy_given_as_a_string_is_looked_into() {
        let v = json!({"json": {"policy": "{\"ruleUse\":null,\"odd\":1}"}});
        assert_eq!(unknown_fields(&v, &KEY_ATTRIBUTES), ["json.policy.odd"]);
    }

    #[test]
    fn the_documented_answers_have_no_unknown_field() {
        let v = json!({"json": {"label": "k", "id": null, "algorithm": "RSA", "algorithmOid": "x",
            "curveOid": null, "keySize": 2048, "publicKey": "AA==", "createTime": "t",
            "attributes": {"sign": true, "decrypt": false, "unwrap": false, "derive": false,
                "sensitive": true, "alwaysSensitive": true, "extractable": false,
                "neverExtractable": true, "modifiable": false, "copyable": false, "destroyable": true},
            "policy": null}, "xml": "", "xmlSignature": "", "attestationKeyName": ""});
        assert!(unknown_fields(&v, &KEY_ATTRIBUTES).is_empty());
        assert!(unknown_fields(&json!({"Version": "2.2.0"}), &VERSION_INFO).is_empty());
    }
}
