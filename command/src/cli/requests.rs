//! `tsb-pkcs11 requests`: the approval requests this host's module filed (its journal, see
//! `crate::journal`), with their status on the TSB; `requests cancel ID` cancels one.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::common::{load_config, Global, Out};
use crate::journal::{self, Entry, Event};
use crate::tsb::{RequestState, TsbClient};

#[derive(Args, Debug)]
pub(crate) struct RequestsArgs {
    #[command(subcommand)]
    command: Option<RequestsCommand>,
    /// Also list requests the journal shows as finished.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand, Debug)]
enum RequestsCommand {
    /// Cancels a request on the TSB (DELETE /v1/request/ID), so no approver approves a request
    /// nobody waits for, and records it in the journal.
    Cancel {
        /// The request id (from `tsb-pkcs11 requests`).
        id: String,
    },
}

/// One request as the journal and the TSB know it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    id: String,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    algorithm: Option<String>,
    filed: String,
    process: String,
    pid: u32,
    /// Whether that process still runs (and so may still wait for the request).
    process_running: bool,
    /// The final status the journal holds, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    journal_status: Option<String>,
    /// The status on the TSB now (`null` when not asked or not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    tsb_status: Option<String>,
    approved_by: Vec<String>,
    waiting_for: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Fields of the TSB's answer this module does not know.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unknown_fields: Vec<String>,
}

/// Whether process `pid` still runs the program the journal names (its executable's file name
/// starts the journal's description, e.g. "ssh-pkcs11-helper (OpenSSH's ...)").
fn process_running(pid: u32, name: &str) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    match exe {
        Some(exe) => name.starts_with(exe.trim_end_matches(" (deleted)")),
        None => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| !c.trim().is_empty() && name.starts_with(c.trim()))
            .unwrap_or(false),
    }
}

fn state_name(s: &RequestState) -> String {
    match s {
        RequestState::Pending => "PENDING".into(),
        RequestState::Approved => "APPROVED".into(),
        RequestState::Executed => "EXECUTED".into(),
        RequestState::Rejected => "REJECTED".into(),
        RequestState::Expired => "EXPIRED".into(),
        RequestState::Cancelled => "CANCELLED".into(),
        RequestState::Failed => "FAILED".into(),
        RequestState::Other(o) => o.clone(),
    }
}

/// Shortens an approver (a base64 public key) for people; names stay as they are.
fn short(approver: &str) -> String {
    if approver.len() > 24 {
        format!(
            "{}…",
            &approver[..approver
                .char_indices()
                .nth(16)
                .map_or(approver.len(), |(i, _)| i)]
        )
    } else {
        approver.to_string()
    }
}

pub(crate) fn run(global: &Global, args: &RequestsArgs, out: &Out) -> Result<i32, String> {
    let config = load_config(global)?;
    let setting = journal::setting(&config.pkcs11);
    let Some(path) = journal::path(&setting) else {
        return Err(match setting {
            journal::Setting::Off => {
                "the request journal is off (pkcs11.requestJournal: false)".to_string()
            }
            _ => "no journal: neither XDG_STATE_HOME nor HOME is set".to_string(),
        });
    };
    let client = TsbClient::new(&config).map_err(|e| e.to_string())?;
    if let Some(RequestsCommand::Cancel { id }) = &args.command {
        return cancel(&client, &setting, &path, id, out);
    }
    let contents =
        journal::read(&path).map_err(|e| format!("request journal {}: {e}", path.display()))?;
    // Filed entries in order, then outcomes by id.
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut order = Vec::new();
    for e in &contents.entries {
        match e.event {
            Event::Filed => {
                order.push(e.id.clone());
                rows.insert(e.id.clone(), row_of(e));
            }
            Event::Outcome => {
                if let Some(r) = rows.get_mut(&e.id) {
                    r.journal_status = e.status.clone();
                }
            }
            // Not an approval request.
            Event::KeyNotDeleted => {}
        }
    }
    let mut shown = Vec::new();
    for id in order {
        let Some(mut row) = rows.remove(&id) else {
            continue;
        };
        // A cancellation the TSB did not confirm leaves the request open (it may be pending).
        if row.journal_status.as_deref() == Some(journal::CANCEL_UNCONFIRMED) {
            row.journal_status = None;
        }
        if row.journal_status.is_some() && !args.all {
            continue;
        }
        if row.journal_status.is_none() {
            let status = client
                .get_json(
                    "GET /v1/request/{id}",
                    format!("/v1/request/{}", crate::tsb::encode_segment(&row.id)),
                )
                .and_then(|raw| {
                    let (status, unknown) =
                        crate::tsb::models::status::parse_request_status_checked(&raw, &row.id)
                            .map_err(|m| {
                                crate::tsb::TsbError::new(
                                    "GET /v1/request/{id}",
                                    crate::tsb::TsbErrorKind::InvalidResponse(m),
                                )
                            })?;
                    row.unknown_fields = unknown;
                    Ok(status)
                });
            match status {
                Ok(s) => {
                    row.tsb_status = Some(state_name(&s.state));
                    row.approved_by = s.approved_by.iter().map(|a| short(a)).collect();
                    row.waiting_for = s.not_yet_approved_by.iter().map(|a| short(a)).collect();
                }
                Err(e) if e.tsb_code() == Some(651) => row.tsb_status = Some("GONE".into()),
                Err(e) => row.error = Some(e.to_string()),
            }
        }
        shown.push(row);
    }
    super::common::take_warnings();
    if out.json {
        out.json_doc(&serde_json::json!({
            "ok": true,
            "journal": path,
            "badLines": contents.bad_lines,
            "requests": shown,
        }));
        return Ok(0);
    }
    if shown.is_empty() {
        out.line(&format!(
            "no open approval request in {}{}",
            path.display(),
            if args.all {
                ""
            } else {
                " (--all lists finished ones)"
            }
        ));
        return Ok(0);
    }
    for r in &shown {
        let status = r
            .tsb_status
            .clone()
            .or_else(|| r.journal_status.clone())
            .unwrap_or_else(|| "?".into());
        out.line(&format!(
            "{}  {status:<9}  key '{}' {}  filed {} by {} (pid {}, {})",
            r.id,
            r.key,
            r.algorithm.as_deref().unwrap_or(""),
            r.filed,
            r.process,
            r.pid,
            if r.process_running {
                "still running"
            } else {
                "no longer running"
            }
        ));
        if !r.approved_by.is_empty() || !r.waiting_for.is_empty() {
            out.line(&format!(
                "    approved by [{}], waiting for [{}]",
                r.approved_by.join(", "),
                r.waiting_for.join(", ")
            ));
        }
        if let Some(e) = &r.error {
            out.line(&format!("    TSB: {e}"));
        }
        if !r.unknown_fields.is_empty() {
            out.line(&format!(
                "    the TSB sent field(s) this module does not know: {}",
                r.unknown_fields.join(", ")
            ));
        }
        if !r.process_running && matches!(status.as_str(), "PENDING" | "APPROVED") {
            out.line(&format!(
                "    nobody waits for it: tsb-pkcs11 requests cancel {}",
                r.id
            ));
        }
    }
    Ok(0)
}

fn row_of(e: &Entry) -> Row {
    Row {
        id: e.id.clone(),
        key: e.key.clone(),
        algorithm: e.algorithm.clone(),
        filed: e.time.clone(),
        process: e.process.clone(),
        pid: e.pid,
        process_running: process_running(e.pid, &e.process),
        journal_status: None,
        tsb_status: None,
        approved_by: Vec::new(),
        waiting_for: Vec::new(),
        error: None,
        unknown_fields: Vec::new(),
    }
}

fn cancel(
    client: &TsbClient,
    setting: &journal::Setting,
    path: &std::path::Path,
    id: &str,
    out: &Out,
) -> Result<i32, String> {
    let known = journal::read(path)
        .ok()
        .and_then(|c| c.entries.into_iter().find(|e| e.id == id));
    client
        .cancel_request(id)
        .map_err(|e| format!("cancelling {id}: {e}"))?;
    let status = client
        .request_status(id)
        .map(|s| state_name(&s.state))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let key = known.as_ref().map(|e| e.key.as_str()).unwrap_or("");
    journal::outcome(
        setting,
        id,
        key,
        &status,
        Some("cancelled with tsb-pkcs11 requests cancel"),
    );
    super::common::take_warnings();
    if out.json {
        out.json_doc(&serde_json::json!({
            "ok": true, "id": id, "status": status, "inJournal": known.is_some()
        }));
    } else {
        out.line(&format!("request {id}: {status}"));
        if known.is_none() {
            out.line("(the journal did not list it: it was filed elsewhere)");
        }
    }
    Ok(0)
}
