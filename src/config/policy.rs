//! Key policies as this module writes them: the `policy` object of a `POST /v1/key` body, and
//! the configuration fields `pkcs11.newKeyPolicy` and `pkcs11.policyProfiles` that hold one.
//!
//! Unlike the lenient [`crate::tsb::models::Policy`] (read from TSB answers, where a surprise must
//! not fail a listing), these types are strict: an unknown field, a quorum that cannot be met
//! or a time that is not a whole number of minutes is refused, because a typo in a policy would
//! otherwise create a key that needs fewer approvals than intended — and a TSB key's policy
//! cannot be made stricter after the fact without the approvers of `ruleModify`.
//!
//! Shape (TSB API, "policy"): `{ruleUse, ruleBlock, ruleUnblock, ruleModify, keyStatus:{blocked}}`;
//! a rule is `{tokens:[{name, timelock, timeout, groups:[{name, quorum, approvals:[{type, name,
//! value}]}]}]}`. Tokens are OR'ed, the groups of a token AND'ed, a group needs `quorum` approvals.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// A key policy. `PolicySpec::default()` is the *empty* policy (every rule null, not blocked):
/// a key created with it signs at once and can gain approvers later, unlike a key created
/// without any policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PolicySpec {
    /// Who must approve a use (signing) of the key; `None` = nobody.
    #[serde(default)]
    pub(crate) rule_use: Option<RuleSpec>,
    /// Who must approve blocking the key.
    #[serde(default)]
    pub(crate) rule_block: Option<RuleSpec>,
    /// Who must approve unblocking the key.
    #[serde(default)]
    pub(crate) rule_unblock: Option<RuleSpec>,
    /// Who must approve a change of the policy.
    #[serde(default)]
    pub(crate) rule_modify: Option<RuleSpec>,
    /// `keyStatus`.
    #[serde(default)]
    pub(crate) key_status: KeyStatusSpec,
}

/// `keyStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KeyStatusSpec {
    /// A blocked key cannot sign.
    #[serde(default)]
    pub(crate) blocked: bool,
}

/// A rule: its tokens are alternatives (OR).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RuleSpec {
    /// The alternatives.
    pub(crate) tokens: Vec<TokenSpec>,
}

/// A token of a rule: all its groups must approve (AND).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TokenSpec {
    /// A name for people.
    #[serde(default)]
    pub(crate) name: String,
    /// Seconds after the request's creation before it may execute (0 = none; whole minutes).
    #[serde(default)]
    pub(crate) timelock: Minutes,
    /// Seconds after the request's creation when it expires (0 = none; whole minutes).
    #[serde(default)]
    pub(crate) timeout: Minutes,
    /// The groups, all of which must reach their quorum.
    #[serde(default)]
    pub(crate) groups: Vec<GroupSpec>,
}

/// A group of approvers of which `quorum` must approve (1 ≤ quorum ≤ number of approvers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawGroup")]
pub(crate) struct GroupSpec {
    /// A name for people.
    pub(crate) name: String,
    /// How many of `approvals` must approve.
    pub(crate) quorum: u32,
    /// The approvers.
    pub(crate) approvals: Vec<ApproverSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    name: String,
    quorum: u32,
    approvals: Vec<ApproverSpec>,
}

impl TryFrom<RawGroup> for GroupSpec {
    type Error = String;

    fn try_from(g: RawGroup) -> Result<GroupSpec, String> {
        if g.quorum == 0 {
            return Err("quorum must be at least 1".to_string());
        }
        if g.quorum as usize > g.approvals.len() {
            return Err(format!(
                "quorum {} is more than the {} approver(s) of the group",
                g.quorum,
                g.approvals.len()
            ));
        }
        Ok(GroupSpec {
            name: g.name,
            quorum: g.quorum,
            approvals: g.approvals,
        })
    }
}

/// One approver: `{type, name, value}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "RawApprover")]
pub(crate) struct ApproverSpec {
    /// `certificate`, `public_key` (also written `public-key`) or
    /// `onboarded_approver_certificate`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// The approver's name (identifies an onboarded approver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Base64 public key or certificate (not for onboarded approvers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawApprover {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

const APPROVER_TYPES: &str = "certificate, public_key or onboarded_approver_certificate";

/// The approver `type` of the contract that `kind` names (`public-key` is `public_key`), or
/// `None` for a type the module does not know.
pub fn approver_type(kind: &str) -> Option<&'static str> {
    match kind {
        "certificate" => Some("certificate"),
        "public_key" | "public-key" => Some("public_key"),
        "onboarded_approver_certificate" => Some("onboarded_approver_certificate"),
        _ => None,
    }
}

impl TryFrom<RawApprover> for ApproverSpec {
    type Error = String;

    fn try_from(a: RawApprover) -> Result<ApproverSpec, String> {
        use base64::Engine;
        let Some(kind) = approver_type(&a.kind) else {
            return Err(format!(
                "type: expected {APPROVER_TYPES}, got \"{}\"",
                a.kind.chars().take(40).collect::<String>()
            ));
        };
        let name = a.name.filter(|n| !n.trim().is_empty());
        let value = a.value.filter(|v| !v.trim().is_empty());
        if kind == "onboarded_approver_certificate" {
            if name.is_none() {
                return Err("an onboarded approver needs a name".to_string());
            }
        } else {
            let Some(v) = &value else {
                return Err(format!("a {kind} approver needs a value (base64)"));
            };
            let cleaned: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            if base64::engine::general_purpose::STANDARD
                .decode(cleaned.as_bytes())
                .is_err()
            {
                return Err("value: not valid base64".to_string());
            }
        }
        Ok(ApproverSpec {
            kind: kind.to_string(),
            name,
            value,
        })
    }
}

/// A time in seconds that must be a whole number of minutes (the TSB refuses others).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct Minutes(pub(crate) u64);

impl<'de> Deserialize<'de> for Minutes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Minutes, D::Error> {
        let secs = u64::deserialize(d)?;
        if secs % 60 != 0 {
            return Err(D::Error::custom(format!(
                "expected seconds in whole minutes (a multiple of 60), got {secs}"
            )));
        }
        Ok(Minutes(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PK: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE";

    fn parse(v: serde_json::Value) -> Result<PolicySpec, String> {
        serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn empty_policy_serialises_with_null_rules() {
        let empty = PolicySpec::default();
        assert_eq!(
            serde_json::to_value(&empty).unwrap(),
            json!({"ruleUse": null, "ruleBlock": null, "ruleUnblock": null,
                   "ruleModify": null, "keyStatus": {"blocked": false}})
        );
        assert_eq!(parse(json!({})).unwrap(), empty);
    }

    #[test]
    fn quorum_policy_round_trips() {
        let v = json!({"ruleUse": {"tokens": [{"name": "main", "timelock": 60, "timeout": 3600,
            "groups": [{"name": "g", "quorum": 2, "approvals": [
                {"type": "public_key", "name": "alice", "value": PK},
                {"type": "public-key", "value": PK},
                {"type": "onboarded_approver_certificate", "name": "carol"}]}]}]},
            "keyStatus": {"blocked": true}});
        let p = parse(v).unwrap();
        let token = &p.rule_use.as_ref().unwrap().tokens[0];
        assert_eq!(
            (token.timelock, token.timeout),
            (Minutes(60), Minutes(3600))
        );
        assert_eq!(token.groups[0].approvals[1].kind, "public_key");
        let out = serde_json::to_value(&p).unwrap();
        assert_eq!(out["ruleUse"]["tokens"][0]["groups"][0]["quorum"], 2);
        assert_eq!(
            out["ruleUse"]["tokens"][0]["groups"][0]["approvals"][2],
            json!({"type": "onboarded_approver_certificate", "name": "carol"})
        );
        assert_eq!(out["keyStatus"]["blocked"], true);
        assert_eq!(parse(out).unwrap(), p);
    }

    #[test]
    fn bad_policies_are_refused_with_a_path() {
        let group = |quorum: u32, n: usize| {
            json!({"ruleUse": {"tokens": [{"groups": [{"quorum": quorum,
                "approvals": vec![json!({"type": "public_key", "value": PK}); n]}]}]}})
        };
        assert!(parse(group(2, 2)).is_ok());
        let e = parse(group(3, 2)).unwrap_err();
        assert_eq!(
            e,
            "ruleUse.tokens[0].groups[0]: quorum 3 is more than the 2 approver(s) of the group"
        );
        let e = parse(group(0, 2)).unwrap_err();
        assert!(e.ends_with("quorum must be at least 1"), "{e}");
        let e = parse(json!({"ruleUse": {"tokens": [{"timelock": 90}]}})).unwrap_err();
        assert_eq!(
            e,
            "ruleUse.tokens[0].timelock: expected seconds in whole minutes (a multiple of 60), got 90"
        );
        let e = parse(json!({"ruleuse": null})).unwrap_err();
        assert!(e.contains("unknown field `ruleuse`"), "{e}");
        let e = parse(json!({"ruleUse": {"tokens": [{"groups": [{"quorum": 1,
            "approvals": [{"type": "password", "value": PK}]}]}]}}))
        .unwrap_err();
        assert!(
            e.starts_with("ruleUse.tokens[0].groups[0].approvals[0]: type: expected"),
            "{e}"
        );
        let e = parse(json!({"ruleUse": {"tokens": [{"groups": [{"quorum": 1,
            "approvals": [{"type": "certificate", "value": "not base64!"}]}]}]}}))
        .unwrap_err();
        assert!(e.ends_with("not valid base64"), "{e}");
        let e = parse(json!({"ruleUse": {"tokens": [{"groups": [{"quorum": 1,
            "approvals": [{"type": "onboarded_approver_certificate"}]}]}]}}))
        .unwrap_err();
        assert!(e.ends_with("needs a name"), "{e}");
    }
}
