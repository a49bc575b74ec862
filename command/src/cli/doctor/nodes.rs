//! With several nodes (`restApi` an array): each node's state, and what the module does when
//! one fails (docs/high-availability.md).

use serde_json::json;

use super::report::{Report, Status};
use crate::config::{Config, NodeStrategy};
use crate::tsb::TsbClient;

/// With several nodes (`restApi` an array): each node's state, from one `GET /v1/versionInfo`
/// on that node alone; the module fails over between them (docs/high-availability.md).
pub(super) fn check_nodes(config: &Config, client: &TsbClient, r: &mut Report) {
    let urls = client.node_urls();
    if urls.len() < 2 {
        return;
    }
    let mut up = 0;
    let mut states = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let started = std::time::Instant::now();
        let outcome = client.probe_node(i);
        let ms = started.elapsed().as_millis() as u64;
        let name = format!("node {} of {} ({url})", i + 1, urls.len());
        match outcome {
            Ok(version) => {
                up += 1;
                let what = match &version {
                    Some(v) => format!("TSB version {v}"),
                    None => "answers (versionInfo needs a ServiceToken)".to_string(),
                };
                r.ok("node", format!("{name}: up, {what}, {ms} ms"));
                states.push(json!({ "url": url, "state": "up", "ms": ms, "version": version }));
            }
            Err(e) => {
                r.warn(
                    "node",
                    format!("{name}: down: {e}"),
                    Some(format!(
                        "the module uses the other nodes meanwhile; check the TSB at {url} \
                         and the network path to it"
                    )),
                );
                states
                    .push(json!({ "url": url, "state": "down", "ms": ms, "error": e.to_string() }));
            }
        }
    }
    let s = &config.pkcs11;
    let strategy = match s.node_strategy {
        NodeStrategy::Failover => "failover",
        NodeStrategy::Spread => "spread",
    };
    let message = format!(
        "{up} of {} nodes up; nodeStrategy {strategy}; a failed node is left alone for {} ms, \
         doubling up to {} ms",
        urls.len(),
        s.node_down_backoff.as_millis(),
        s.node_down_backoff_max.as_millis()
    );
    if up == 0 {
        r.fail(
            "cluster",
            message,
            Some("no TSB node answers: check the TSB service and restApi".into()),
        );
    } else {
        r.add("cluster", Status::Info, message)
            .with_details(json!({ "nodes": states, "nodeStrategy": strategy }));
    }
}
