//! Smart Key Attributes policies (`policy` of a key's attributes). Every field is lenient:
//! numbers may come as strings, a rule may come as a JSON string, odd list entries count as
//! empty ones (so a group given as `"weird"` still makes a key need approvals).

use serde::Deserialize;

use super::lenient::{self, Known};

/// A key policy (`policy`): rules and key status.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default, deserialize_with = "lenient::lenient_object")]
    pub rule_use: Option<Rule>,
    #[serde(default, deserialize_with = "lenient::lenient_object")]
    pub rule_block: Option<Rule>,
    #[serde(default, deserialize_with = "lenient::lenient_object")]
    pub rule_unblock: Option<Rule>,
    #[serde(default, deserialize_with = "lenient::lenient_object")]
    pub rule_modify: Option<Rule>,
    #[serde(default, deserialize_with = "lenient::lenient_object")]
    pub(crate) key_status: Option<KeyStatus>,
}

impl Policy {
    /// Whether any `ruleUse` token has a non-empty `groups` list.
    pub(crate) fn needs_approval(&self) -> bool {
        self.rule_use
            .as_ref()
            .is_some_and(|r| r.tokens.iter().any(|t| !t.groups.is_empty()))
    }
}

/// A policy rule: tokens are OR'ed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, deserialize_with = "lenient::vec")]
    pub tokens: Vec<PolicyToken>,
}

/// A policy token: its groups are AND'ed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyToken {
    #[serde(rename = "name", default)]
    _name: Known,
    /// Seconds after the request's creation before it may execute (0 = none).
    #[serde(default, deserialize_with = "lenient::u64")]
    pub timelock: u64,
    /// Seconds after the request's creation when it expires (0 = none).
    #[serde(default, deserialize_with = "lenient::u64")]
    pub timeout: u64,
    #[serde(default, deserialize_with = "lenient::vec")]
    pub groups: Vec<PolicyGroup>,
}

/// A group of approvers, of which `quorum` must approve.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyGroup {
    #[serde(default, deserialize_with = "lenient::string")]
    pub(crate) name: String,
    #[serde(default, deserialize_with = "lenient::u32")]
    pub(crate) quorum: u32,
    #[serde(default, deserialize_with = "lenient::vec")]
    pub approvals: Vec<Approval>,
}

/// One approver of a group.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// `type`, e.g. `public_key`, `certificate`, `onboarded_approver_certificate`.
    #[serde(rename = "type", default, deserialize_with = "lenient::string")]
    pub kind: String,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub(crate) name: Option<String>,
    /// The approver's public key or certificate (not read here).
    #[serde(rename = "value", default)]
    _value: Known,
}

/// `keyStatus`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyStatus {
    #[serde(default, deserialize_with = "lenient::bool")]
    pub(crate) blocked: bool,
}
