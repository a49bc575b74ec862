//! `tsb-pkcs11 doctor`: each step the module takes, checked in order, each problem with its
//! likely fix. This file holds the report (one [`Check`] per finding, text or `--json`) and the
//! order of the steps; each step has its file:
//!
//! - `config.rs`: the configuration file (where it was found, owner and mode, fields, secrets)
//!   and a summary of what it configures;
//! - `files.rs`: the files it names (CA, client certificate and key, certificates);
//! - `network.rs`: per TSB node, name resolution, TCP connect, then (`tls.rs`) the TLS
//!   handshake (chain, host name, pin, client certificate) and one request over it; with
//!   several nodes, each node's state (`nodes.rs`);
//! - `auth.rs`: authentication per API-key role, `versionInfo`;
//! - `keys.rs`: the key list, every key (shown or left out, and why), fields or values of TSB
//!   answers the module does not know;
//! - `sign.rs`: on request, one test signature through the module's signing code, verified
//!   here.
//!
//! The network steps run through the module's own TSB client (`tsb::Probe`, the same DNS, TCP
//! and TLS functions a signature's connection is made with) and its typed calls, so the doctor
//! and the module cannot disagree about what a TSB answer means.

mod auth;
mod config;
mod files;
mod keys;
mod network;
mod nodes;
mod report;
mod sign;
mod tls;

use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::{Global, Out};
use crate::config::Config;
use crate::tsb::TsbClient;
use report::{Report, Status};

#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    /// Also make one test signature with this key (through the module's own signing code) and
    /// verify it. A key that needs approvals files a real approval request.
    #[arg(long, value_name = "LABEL")]
    sign: Option<String>,
    /// The environment variable holding the PIN, when `pkcs11.pinIs` is not `none` (the PIN is
    /// never taken as an argument: it would show in the process list).
    #[arg(long, value_name = "NAME")]
    pin_env: Option<String>,
}

pub(crate) fn run(global: &Global, args: &DoctorArgs, out: &Out) -> Result<i32, String> {
    let mut r = Report::default();
    if let Some(config) = config::check_config(global, &mut r) {
        check_tsb(&config, args, &mut r);
    }
    let worst = r.worst();
    if out.json {
        out.json_doc(&json!({
            "ok": worst != Status::Fail,
            "result": worst,
            "checks": r.checks,
        }));
    } else {
        for c in &r.checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Info => "info",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.line(&format!("{tag}  {:<8} {}", c.step, c.message));
            if let Some(f) = &c.fix {
                out.line(&format!("      {:<8} fix: {f}", ""));
            }
        }
        out.line("");
        out.line(match worst {
            Status::Fail => "result: problems found (FAIL above)",
            Status::Warn => "result: works, with warnings",
            _ => "result: all checks passed",
        });
    }
    Ok(match worst {
        Status::Fail => 1,
        Status::Warn => 2,
        _ => 0,
    })
}

/// The steps after the configuration, in the order the module meets them.
fn check_tsb(config: &Config, args: &DoctorArgs, r: &mut Report) {
    // The client as the module builds it (TLS files, insecure http, header-safe secrets).
    let client = match TsbClient::new(config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let m = e.to_string();
            let fix = if m.contains("http://") {
                Some("use https://, or set pkcs11.allowInsecureHttp if the path is trusted".into())
            } else {
                Some("correct the field named in the message".into())
            };
            r.fail("config", m, fix);
            return;
        }
    };
    r.warnings("config");
    if !network::check_network(config, &client, r) {
        return;
    }
    nodes::check_nodes(config, &client, r);
    let Some(key_list) = auth::check_auth(config, &client, r) else {
        return;
    };
    keys::check_keys(config, &client, key_list, r);
    if let Some(label) = &args.sign {
        sign::test_signature(config, label, args.pin_env.as_deref(), r);
    }
}
