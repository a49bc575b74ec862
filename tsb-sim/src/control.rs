//! The `/sim/` control interface (no authentication): sign requests and approvals, counters,
//! faults and keys. Errors are `{"error": "..."}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use crate::cluster::NodeFault;
use crate::config::KeySpec;
use crate::error::SimError;
use crate::faults::Fault;
use crate::state::Shared;

type S = State<Arc<Shared>>;

/// The `/sim/` routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sim/requests", get(list_requests))
        .route("/sim/requests/{id}", get(get_request))
        .route("/sim/requests/{id}/approve", post(approve))
        .route("/sim/requests/{id}/reject", post(reject))
        .route("/sim/requests/{id}/fail", post(fail))
        .route("/sim/counters", get(counters).delete(reset_counters))
        .route("/sim/network", get(network).post(set_network))
        .route("/sim/listeners", get(listeners))
        .route("/sim/listeners/{index}", post(set_listener))
        .route(
            "/sim/faults",
            get(list_faults).post(add_faults).delete(clear_faults),
        )
        .route("/sim/keys", get(list_keys).post(add_key))
        .route("/sim/keys/{*label}", delete(remove_key))
        .merge(crate::hostile::router())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn sim_error(e: SimError) -> Response {
    let status = match &e {
        SimError::NotFound(_) => StatusCode::NOT_FOUND,
        SimError::Rejected(_) => StatusCode::CONFLICT,
        SimError::Config(_) | SimError::UnknownApprover(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// `GET /sim/requests`: every sign request (sync and async), oldest first.
async fn list_requests(State(s): S) -> Response {
    Json(s.records()).into_response()
}

/// `GET /sim/requests/{id}`.
async fn get_request(State(s): S, Path(id): Path<String>) -> Response {
    match s.record(&id) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no sign request '{id}'")),
    }
}

fn approver_of(body: &[u8]) -> Result<String, Box<Response>> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    v.get("approver")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "body must be {\"approver\": \"name\"}",
            ))
        })
}

fn after_op(s: &Shared, id: &str, result: Result<(), SimError>) -> Response {
    match result {
        Ok(()) => match s.record(id) {
            Some(r) => Json(r).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("no sign request '{id}'")),
        },
        Err(e) => sim_error(e),
    }
}

/// `POST /sim/requests/{id}/approve` with `{"approver":"alice"}`.
async fn approve(State(s): S, Path(id): Path<String>, body: Bytes) -> Response {
    match approver_of(&body) {
        Ok(a) => after_op(&s, &id, s.approve(&id, &a)),
        Err(r) => *r,
    }
}

/// `POST /sim/requests/{id}/reject` with `{"approver":"bob"}`.
async fn reject(State(s): S, Path(id): Path<String>, body: Bytes) -> Response {
    match approver_of(&body) {
        Ok(a) => after_op(&s, &id, s.reject(&id, &a)),
        Err(r) => *r,
    }
}

/// `POST /sim/requests/{id}/fail`: the request becomes FAILED.
async fn fail(State(s): S, Path(id): Path<String>) -> Response {
    after_op(&s, &id, s.fail(&id))
}

/// `GET /sim/counters`: requests per endpoint (`"GET /v1/key"`, `"GET /v1/request"`, ...).
async fn counters(State(s): S) -> Response {
    Json(s.counters()).into_response()
}

/// `DELETE /sim/counters` (also resets the connection counter).
async fn reset_counters(State(s): S) -> Response {
    s.reset_counters();
    s.net.reset_connections();
    for n in s.nodes.get().into_iter().flatten() {
        n.reset_counts();
    }
    StatusCode::NO_CONTENT.into_response()
}

fn network_json(s: &Shared) -> Response {
    Json(json!({
        "rttMs": u64::try_from(s.net.rtt().as_millis()).unwrap_or(u64::MAX),
        "connectionsAccepted": s.net.connections(),
    }))
    .into_response()
}

/// `GET /sim/network`: `{"rttMs", "connectionsAccepted"}`.
async fn network(State(s): S) -> Response {
    network_json(&s)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NetworkChange {
    rtt_ms: u64,
}

/// `POST /sim/network` with `{"rttMs": n}`: changes the emulated round-trip time.
async fn set_network(State(s): S, body: Bytes) -> Response {
    match serde_json::from_slice::<NetworkChange>(&body) {
        Ok(c) => {
            s.net.set_rtt(std::time::Duration::from_millis(c.rtt_ms));
            network_json(&s)
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("body must be {{\"rttMs\": n}}: {e}"),
        ),
    }
}

/// `GET /sim/listeners`: `[{"index","url","fault","latencyMs"?,"requests","connections"}]`.
async fn listeners(State(s): S) -> Response {
    let list: Vec<_> = s
        .nodes
        .get()
        .into_iter()
        .flatten()
        .map(|n| n.info())
        .collect();
    Json(list).into_response()
}

/// `POST /sim/listeners/{index}` with `{"fault": "down"}` (`none`, `down`, `hang`,
/// `unavailable`, or `slow` with `latencyMs`): answers once the change is in effect.
async fn set_listener(State(s): S, Path(index): Path<usize>, body: Bytes) -> Response {
    let fault: NodeFault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid listener fault: {e}"),
            )
        }
    };
    let Some(node) = s.nodes.get().and_then(|n| n.get(index)).cloned() else {
        return error(StatusCode::NOT_FOUND, format!("no listener {index}"));
    };
    let setter = node.clone();
    match tokio::task::spawn_blocking(move || setter.set_fault(fault)).await {
        Ok(Ok(())) => Json(node.info()).into_response(),
        Ok(Err(e)) => sim_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /sim/faults`: active faults with remaining counts.
async fn list_faults(State(s): S) -> Response {
    Json(s.faults.list()).into_response()
}

/// `POST /sim/faults` with one fault object or an array of them.
async fn add_faults(State(s): S, body: Bytes) -> Response {
    let faults: Vec<Fault> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => {
            match items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<Vec<Fault>, _>>()
            {
                Ok(f) => f,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
            }
        }
        Ok(v) => match serde_json::from_value(v) {
            Ok(f) => vec![f],
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
    };
    for f in &faults {
        if let Err(e) = f.validate() {
            return error(StatusCode::BAD_REQUEST, format!("invalid fault: {e}"));
        }
    }
    for f in faults {
        s.faults.add(f);
    }
    (StatusCode::CREATED, Json(s.faults.list())).into_response()
}

/// `DELETE /sim/faults`: clears all faults (hanging requests are released and closed).
async fn clear_faults(State(s): S) -> Response {
    s.faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /sim/keys`: `[{"label","algorithm","publicKey","needsApproval"}]`.
async fn list_keys(State(s): S) -> Response {
    let keys: Vec<Value> = s
        .keys
        .read()
        .iter()
        .map(|k| {
            json!({
                "label": k.label(),
                "algorithm": k.spec.algorithm.as_str(),
                "publicKey": k.public_der.as_ref().map(|d| B64.encode(d)),
                "needsApproval": k.needs_approval(),
                "spec": k.spec,
            })
        })
        .collect();
    Json(keys).into_response()
}

/// `POST /sim/keys` with a key spec (the config's `[[keys]]` table as JSON): adds or replaces.
async fn add_key(State(s): S, body: Bytes) -> Response {
    let spec: KeySpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid key spec: {e}")),
    };
    let label = spec.label.clone();
    let shared = s.clone();
    match tokio::task::spawn_blocking(move || shared.add_key(spec)).await {
        Ok(Ok(())) => (StatusCode::CREATED, Json(json!({"label": label}))).into_response(),
        Ok(Err(e)) => sim_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `DELETE /sim/keys/{label}`.
async fn remove_key(State(s): S, Path(label): Path<String>) -> Response {
    if s.remove_key(&label) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no key '{label}'"))
    }
}
