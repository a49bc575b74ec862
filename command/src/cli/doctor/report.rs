//! The doctor's report: its checks ([`Check`], [`Status`]) and how the steps add to it.

use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::take_warnings;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub(super) struct Check {
    /// `config`, `dns`, `tcp`, `tls`, `node`, `cluster`, `auth`, `version`, `keys`, `key`,
    /// `unknown`, `sign`.
    pub(super) step: &'static str,
    pub(super) status: Status,
    pub(super) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) fix: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub(super) details: Value,
}

/// A failure's message and likely fix.
pub(super) type Failure = (String, Option<String>);

#[derive(Default)]
pub(super) struct Report {
    pub(super) checks: Vec<Check>,
}

impl Report {
    pub(super) fn add(
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
    pub(super) fn ok(&mut self, step: &'static str, message: impl Into<String>) -> &mut Check {
        self.add(step, Status::Ok, message)
    }
    pub(super) fn fail(
        &mut self,
        step: &'static str,
        message: impl Into<String>,
        fix: Option<String>,
    ) {
        self.add(step, Status::Fail, message).fix = fix;
    }
    pub(super) fn warn(
        &mut self,
        step: &'static str,
        message: impl Into<String>,
        fix: Option<String>,
    ) {
        self.add(step, Status::Warn, message).fix = fix;
    }
    /// The library's warnings since the last call, as warnings of `step`.
    pub(super) fn warnings(&mut self, step: &'static str) {
        for w in take_warnings() {
            self.warn(step, w, None);
        }
    }
    /// Fields of a TSB answer the module does not know: one warning naming them.
    pub(super) fn unknown_fields(&mut self, what: &str, fields: &[String]) {
        if fields.is_empty() {
            return;
        }
        self.warn(
            "unknown",
            format!(
                "{what}: the TSB sent field(s) this module does not know: {}",
                fields.join(", ")
            ),
            Some("the TSB differs from the contract this module was built for; the fields are ignored. Report them (with `tsb-pkcs11 doctor --json`) if keys or signatures misbehave".into()),
        );
        self.checks
            .last_mut()
            .expect("just added")
            .with_details(json!({ "endpoint": what, "fields": fields }));
    }
    pub(super) fn worst(&self) -> Status {
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
    pub(super) fn with_details(&mut self, d: Value) -> &mut Check {
        self.details = d;
        self
    }
}

pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
