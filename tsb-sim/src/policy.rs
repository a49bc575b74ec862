//! The Smart Key Attributes approval state machine behind `POST /v1/sign` and
//! `GET|DELETE /v1/request/{id}`.
//!
//! Tokens are OR'ed, groups inside a token AND'ed, a group needs `quorum` approvals. Once a
//! token is satisfied the request is APPROVED; it becomes EXECUTED `approvedExecutionDelayMs`
//! later, but never before the token's timelock (counted from creation). A PENDING request
//! whose tokens all timed out is EXPIRED. Time-driven transitions are evaluated lazily by
//! [`Machine::refresh`] at their exact logical time, so every read sees the correct state.
//!
//! Also the TSB policy document ([`TsbPolicy`]) a key is created with (`POST /v1/key`) and
//! shown with, and its conversion into the simulator's [`PolicySpec`].

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{GroupSpec, PolicySpec, TokenSpec};
use crate::error::ApiError;

/// Request status as `GET /v1/request/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved,
    Executed,
    Rejected,
    Expired,
    Cancelled,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Approved => "APPROVED",
            Status::Executed => "EXECUTED",
            Status::Rejected => "REJECTED",
            Status::Expired => "EXPIRED",
            Status::Cancelled => "CANCELLED",
            Status::Failed => "FAILED",
        }
    }
    /// PENDING and APPROVED are not terminal.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Status::Pending | Status::Approved)
    }
}

#[derive(Debug, Clone)]
struct GroupRule {
    quorum: usize,
    approvers: Vec<String>,
}

#[derive(Debug, Clone)]
struct TokenRule {
    timelock: Duration,
    timeout: Duration,
    groups: Vec<GroupRule>,
}

/// Why an approval-side operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// The approver is not in any group of the key's policy.
    UnknownApprover {
        approver: String,
        known: Vec<String>,
    },
    /// The request is not in a state that allows the operation.
    WrongState(Status),
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::UnknownApprover { approver, known } => write!(
                f,
                "'{approver}' is not an approver of this key's policy (approvers: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
            PolicyError::WrongState(s) => write!(f, "the request is {}", s.as_str()),
        }
    }
}

/// State of one sign request.
#[derive(Debug, Clone)]
pub struct Machine {
    status: Status,
    created: Instant,
    /// When the request reached its terminal state (execution time for EXECUTED).
    finished_at: Option<Instant>,
    tokens: Vec<TokenRule>,
    approved: Vec<String>,
    rejected: Vec<String>,
    approved_at: Option<Instant>,
    satisfied: Option<usize>,
    auto_approve_after: Option<Duration>,
    auto_done: bool,
    exec_delay: Duration,
}

impl Machine {
    /// A request that executed at once (synchronous sign, or a key without approval rules).
    pub fn executed(created: Instant) -> Machine {
        Machine {
            status: Status::Executed,
            created,
            finished_at: Some(created),
            tokens: Vec::new(),
            approved: Vec::new(),
            rejected: Vec::new(),
            approved_at: Some(created),
            satisfied: None,
            auto_approve_after: None,
            auto_done: true,
            exec_delay: Duration::ZERO,
        }
    }

    /// A PENDING request under `policy`. Seconds of timelock/timeout are multiplied by
    /// `time_scale`.
    pub fn pending(
        policy: &PolicySpec,
        created: Instant,
        time_scale: f64,
        exec_delay: Duration,
        auto_approve_after: Option<Duration>,
    ) -> Machine {
        let scaled = |secs: u64| Duration::from_secs_f64(secs as f64 * time_scale);
        let tokens = policy
            .tokens
            .iter()
            .map(|t| TokenRule {
                timelock: scaled(t.timelock),
                timeout: scaled(t.timeout),
                groups: t
                    .groups
                    .iter()
                    .map(|g| GroupRule {
                        quorum: g.quorum as usize,
                        approvers: g.approvers.clone(),
                    })
                    .collect(),
            })
            .collect();
        let mut m = Machine {
            status: Status::Pending,
            created,
            finished_at: None,
            tokens,
            approved: Vec::new(),
            rejected: Vec::new(),
            approved_at: None,
            satisfied: None,
            auto_approve_after,
            auto_done: false,
            exec_delay,
        };
        m.check_quorum(created);
        m
    }

    pub fn status(&self) -> Status {
        self.status
    }
    pub fn created(&self) -> Instant {
        self.created
    }
    /// Execution instant once EXECUTED.
    pub fn executed_at(&self) -> Option<Instant> {
        (self.status == Status::Executed)
            .then_some(self.finished_at)
            .flatten()
    }
    pub fn approved_by(&self) -> &[String] {
        &self.approved
    }
    pub fn rejected_by(&self) -> &[String] {
        &self.rejected
    }

    /// Every approver of the policy, in policy order, without duplicates.
    pub fn all_approvers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.tokens {
            for g in &t.groups {
                for a in &g.approvers {
                    if !out.contains(a) {
                        out.push(a.clone());
                    }
                }
            }
        }
        out
    }

    /// Approvers that have neither approved nor rejected.
    pub fn not_yet_approved_by(&self) -> Vec<String> {
        self.all_approvers()
            .into_iter()
            .filter(|a| !self.approved.contains(a) && !self.rejected.contains(a))
            .collect()
    }

    fn satisfied_token(&self) -> Option<usize> {
        self.tokens.iter().position(|t| {
            t.groups.iter().all(|g| {
                g.approvers
                    .iter()
                    .filter(|a| self.approved.contains(a))
                    .count()
                    >= g.quorum
            })
        })
    }

    fn check_quorum(&mut self, at: Instant) {
        if self.status == Status::Pending {
            if let Some(idx) = self.satisfied_token() {
                self.status = Status::Approved;
                self.approved_at = Some(at);
                self.satisfied = Some(idx);
            }
        }
    }

    /// When a PENDING request expires: once every token's timeout has passed (`None` if some
    /// token has no timeout).
    fn expiry(&self) -> Option<Instant> {
        if self.tokens.is_empty() {
            return None;
        }
        let mut latest = self.created;
        for t in &self.tokens {
            if t.timeout.is_zero() {
                return None;
            }
            latest = latest.max(self.created + t.timeout);
        }
        Some(latest)
    }

    /// When an APPROVED request executes.
    fn execution_time(&self) -> Option<Instant> {
        let approved_at = self.approved_at?;
        let timelock = self
            .satisfied
            .and_then(|i| self.tokens.get(i))
            .map(|t| t.timelock)
            .unwrap_or_default();
        Some((approved_at + self.exec_delay).max(self.created + timelock))
    }

    /// Applies every time-driven transition due at or before `now` (auto-approval, expiry,
    /// execution), each at its own logical time.
    pub fn refresh(&mut self, now: Instant) {
        if self.status == Status::Pending {
            let expiry = self.expiry();
            let auto = if self.auto_done {
                None
            } else {
                self.auto_approve_after.map(|d| self.created + d)
            };
            match (auto, expiry) {
                (Some(ta), exp) if ta <= now && exp.is_none_or(|te| ta < te) => {
                    self.auto_done = true;
                    self.auto_approve();
                    self.check_quorum(ta);
                }
                (_, Some(te)) if te <= now => {
                    self.status = Status::Expired;
                    self.finished_at = Some(te);
                }
                _ => {}
            }
        }
        if self.status == Status::Approved {
            if let Some(at) = self.execution_time() {
                if at <= now {
                    self.status = Status::Executed;
                    self.finished_at = Some(at);
                }
            }
        }
    }

    /// Auto-approval: approve as the first `quorum` approvers of each group of the first token.
    fn auto_approve(&mut self) {
        let Some(token) = self.tokens.first().cloned() else {
            return;
        };
        for g in &token.groups {
            let have = g
                .approvers
                .iter()
                .filter(|a| self.approved.contains(a))
                .count();
            let missing: Vec<String> = g
                .approvers
                .iter()
                .filter(|a| !self.approved.contains(a) && !self.rejected.contains(a))
                .take(g.quorum.saturating_sub(have))
                .cloned()
                .collect();
            self.approved.extend(missing);
        }
    }

    fn check_approver(&self, approver: &str) -> Result<(), PolicyError> {
        let known = self.all_approvers();
        if known.iter().any(|a| a == approver) {
            Ok(())
        } else {
            Err(PolicyError::UnknownApprover {
                approver: approver.to_string(),
                known,
            })
        }
    }

    /// An approval by `approver` (idempotent). Allowed while PENDING or APPROVED.
    pub fn approve(&mut self, approver: &str, now: Instant) -> Result<(), PolicyError> {
        self.refresh(now);
        self.check_approver(approver)?;
        if self.status.is_terminal() {
            return Err(PolicyError::WrongState(self.status));
        }
        if self.rejected.iter().any(|a| a == approver) {
            return Err(PolicyError::WrongState(self.status));
        }
        if !self.approved.iter().any(|a| a == approver) {
            self.approved.push(approver.to_string());
        }
        self.check_quorum(now);
        self.refresh(now);
        Ok(())
    }

    /// A rejection by `approver`: the request becomes REJECTED. Allowed while PENDING.
    pub fn reject(&mut self, approver: &str, now: Instant) -> Result<(), PolicyError> {
        self.refresh(now);
        self.check_approver(approver)?;
        if self.status != Status::Pending {
            return Err(PolicyError::WrongState(self.status));
        }
        self.rejected.push(approver.to_string());
        self.status = Status::Rejected;
        self.finished_at = Some(now);
        Ok(())
    }

    /// `DELETE /v1/request/{id}`: a PENDING or APPROVED request becomes CANCELLED; terminal
    /// requests are left alone. Returns whether the status changed.
    pub fn cancel(&mut self, now: Instant) -> bool {
        self.refresh(now);
        if self.status.is_terminal() {
            return false;
        }
        self.status = Status::Cancelled;
        self.finished_at = Some(now);
        true
    }

    /// Control interface: a PENDING or APPROVED request becomes FAILED (as if the HSM failed).
    pub fn fail(&mut self, now: Instant) -> Result<(), PolicyError> {
        self.refresh(now);
        if self.status.is_terminal() {
            return Err(PolicyError::WrongState(self.status));
        }
        self.status = Status::Failed;
        self.finished_at = Some(now);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The TSB policy document

/// The TSB policy document (`policy` of key creation and of the attributes response).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TsbPolicy {
    #[serde(default)]
    rule_use: Option<TsbRule>,
    #[serde(default)]
    rule_block: Option<TsbRule>,
    #[serde(default)]
    rule_unblock: Option<TsbRule>,
    #[serde(default)]
    rule_modify: Option<TsbRule>,
    #[serde(default)]
    key_status: Option<TsbKeyStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct TsbKeyStatus {
    #[serde(default)]
    blocked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TsbRule {
    #[serde(default)]
    tokens: Option<Vec<TsbToken>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TsbToken {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timelock: u64,
    #[serde(default)]
    timeout: u64,
    #[serde(default)]
    groups: Option<Vec<TsbGroup>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TsbGroup {
    #[serde(default)]
    name: Option<String>,
    quorum: u32,
    #[serde(default)]
    approvals: Option<Vec<TsbApproval>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TsbApproval {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

impl TsbPolicy {
    /// Whether the document's `keyStatus` blocks the key.
    pub(crate) fn blocked(&self) -> bool {
        self.key_status.as_ref().is_some_and(|k| k.blocked)
    }

    /// The document the attributes response shows, with the key's current `blocked` state.
    pub(crate) fn to_json(&self, blocked: bool) -> Value {
        let mut doc = self.clone();
        doc.key_status = Some(TsbKeyStatus { blocked });
        serde_json::to_value(doc).unwrap_or(Value::Null)
    }

    /// Validates every rule and converts `ruleUse` into the simulator's policy model: an approver
    /// is identified by its `name`, else by its `value` (public key or certificate).
    pub(crate) fn to_spec(&self) -> Result<PolicySpec, ApiError> {
        let rules = [
            ("ruleUse", &self.rule_use),
            ("ruleBlock", &self.rule_block),
            ("ruleUnblock", &self.rule_unblock),
            ("ruleModify", &self.rule_modify),
        ];
        let mut spec = PolicySpec::default();
        for (rule_name, rule) in rules {
            let tokens = rule
                .as_ref()
                .and_then(|r| r.tokens.as_deref())
                .unwrap_or(&[]);
            for (ti, t) in tokens.iter().enumerate() {
                let what = format!("policy.{rule_name}.tokens[{ti}]");
                for (field, secs) in [("timelock", t.timelock), ("timeout", t.timeout)] {
                    if secs % 60 != 0 {
                        return Err(ApiError::validation(format!(
                            "{what}.{field} must be a multiple of 60 seconds, got {secs}"
                        )));
                    }
                }
                let mut groups = Vec::new();
                for (gi, g) in t.groups.as_deref().unwrap_or(&[]).iter().enumerate() {
                    let approvals = g.approvals.as_deref().unwrap_or(&[]);
                    let mut approvers: Vec<String> = Vec::new();
                    for (ai, a) in approvals.iter().enumerate() {
                        let id = approver_id(a).map_err(|m| {
                            ApiError::validation(format!(
                                "{what}.groups[{gi}].approvals[{ai}]: {m}"
                            ))
                        })?;
                        if approvers.contains(&id) {
                            return Err(ApiError::validation(format!(
                                "{what}.groups[{gi}]: approver '{id}' is listed twice"
                            )));
                        }
                        approvers.push(id);
                    }
                    if g.quorum == 0 || g.quorum as usize > approvers.len() {
                        return Err(ApiError::validation(format!(
                            "{what}.groups[{gi}]: quorum {} needs 1..={} approvals",
                            g.quorum,
                            approvers.len()
                        )));
                    }
                    groups.push(GroupSpec {
                        name: g.name.clone().unwrap_or_else(|| format!("group{gi}")),
                        quorum: g.quorum,
                        approvers,
                    });
                }
                if rule_name == "ruleUse" {
                    let mut token = TokenSpec::new(groups);
                    token.name = t.name.clone().unwrap_or_else(|| format!("token{ti}"));
                    token.timelock = t.timelock;
                    token.timeout = t.timeout;
                    spec.tokens.push(token);
                }
            }
        }
        Ok(spec)
    }
}

fn approver_id(a: &TsbApproval) -> Result<String, String> {
    match a.kind.as_str() {
        "certificate" | "public_key" | "public-key" | "onboarded_approver_certificate" => {}
        other => return Err(format!("unknown approval type '{other}'")),
    }
    let name = a.name.as_deref().filter(|n| !n.is_empty());
    let value = a.value.as_deref().filter(|v| !v.is_empty());
    if a.kind == "onboarded_approver_certificate" && name.is_none() {
        return Err("an onboarded approver needs a name".into());
    }
    if a.kind != "onboarded_approver_certificate" && value.is_none() {
        return Err(format!("a {} approval needs a value", a.kind));
    }
    Ok(name.or(value).unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GroupSpec, PolicySpec};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quorum_then_delay_then_executed() {
        let t0 = Instant::now();
        let p = PolicySpec::single_group(2, &["a", "b", "c"]);
        let mut m = Machine::pending(&p, t0, 1.0, ms(100), None);
        assert_eq!(m.status(), Status::Pending);
        m.approve("a", t0 + ms(10)).unwrap();
        assert_eq!(m.status(), Status::Pending);
        m.approve("b", t0 + ms(20)).unwrap();
        assert_eq!(m.status(), Status::Approved);
        m.refresh(t0 + ms(119));
        assert_eq!(m.status(), Status::Approved);
        m.refresh(t0 + ms(120));
        assert_eq!(m.status(), Status::Executed);
        assert_eq!(m.executed_at(), Some(t0 + ms(120)));
        assert_eq!(m.not_yet_approved_by(), vec!["c".to_string()]);
    }

    #[test]
    fn groups_are_anded_and_timelock_holds() {
        let t0 = Instant::now();
        let p = PolicySpec::groups(vec![
            GroupSpec::new("A", 1, &["a"]),
            GroupSpec::new("B", 1, &["b"]),
        ])
        .with_timelock(60);
        let mut m = Machine::pending(&p, t0, 0.01, ms(0), None);
        m.approve("a", t0).unwrap();
        assert_eq!(m.status(), Status::Pending);
        m.approve("b", t0).unwrap();
        assert_eq!(m.status(), Status::Approved);
        m.refresh(t0 + ms(599));
        assert_eq!(m.status(), Status::Approved);
        m.refresh(t0 + ms(600));
        assert_eq!(m.status(), Status::Executed);
    }

    #[test]
    fn expiry_and_errors() {
        let t0 = Instant::now();
        let p = PolicySpec::single_group(1, &["a"]).with_timeout(60);
        let mut m = Machine::pending(&p, t0, 0.01, ms(0), None);
        assert!(matches!(
            m.approve("zed", t0),
            Err(PolicyError::UnknownApprover { .. })
        ));
        m.refresh(t0 + ms(600));
        assert_eq!(m.status(), Status::Expired);
        assert_eq!(
            m.approve("a", t0 + ms(601)),
            Err(PolicyError::WrongState(Status::Expired))
        );
    }

    #[test]
    fn auto_approval_before_expiry() {
        let t0 = Instant::now();
        let p = PolicySpec::single_group(1, &["a", "b"]);
        let mut m = Machine::pending(&p, t0, 1.0, ms(50), Some(ms(100)));
        m.refresh(t0 + ms(99));
        assert_eq!(m.status(), Status::Pending);
        m.refresh(t0 + ms(1000));
        assert_eq!(m.status(), Status::Executed);
        assert_eq!(m.executed_at(), Some(t0 + ms(150)));
        assert_eq!(m.approved_by(), &["a".to_string()]);
    }
}
