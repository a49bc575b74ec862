//! The nodes of one TSB cluster (`restApi` given as an array): a connection pool per node, each
//! node's health, and the order in which a call tries them (`pkcs11.nodeStrategy`).
//! `docs/high-availability.md` describes the behaviour; `client.rs` (`execute`) decides what
//! may move to another node.
//!
//! Health: a node that fails (connection refused or reset, connect or TLS handshake timeout, no
//! answer within its share of the deadline, HTTP 5xx, a TSB 7xx HSM error) is marked down for a
//! back-off of `nodeDownBackoffMs`, doubling with each further failure up to
//! `nodeDownBackoffMaxMs`. There is no background prober (no thread outlives `C_Finalize`, and
//! nothing new is needed after `fork()`): once its back-off has expired, the next call that may
//! move to another node probes it, and only that call (the others leave it alone for another
//! back-off meanwhile). A call finding every node down still tries them all, the one whose
//! back-off ends first first, so a recovery is noticed within the call's deadline.
//!
//! With a single node nothing of this applies: it is always tried, and no health is kept.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::http;
use crate::config::NodeStrategy;
use crate::logging::Net;

/// One TSB node.
#[derive(Debug)]
pub(crate) struct Node {
    /// The normalised base URL.
    pub(crate) url: String,
    pub(crate) pool: http::Pool,
    health: Mutex<Health>,
    /// The request forms this node answered as unknown (a bit per [`Form`]): not sent to it
    /// again while another form of the call is known.
    refused_forms: AtomicU8,
}

/// A request form of a call the TSB offers in two forms (docs/tsb-api.md, "Securosys' clients
/// and this project, call by call").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// `POST /v1/key/attributes` with a body.
    AttributesPost,
    /// `GET /v1/key/{label}/attributes`.
    AttributesGet,
    /// `POST /v1/key/deleteKey` with a body.
    DeleteKeyPost,
    /// `DELETE /v1/key/{label}`.
    DeleteKeyDelete,
}

impl Form {
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl Node {
    /// Whether this node answered `form` as an unknown endpoint before.
    pub(crate) fn refuses(&self, form: Form) -> bool {
        self.refused_forms.load(Ordering::Relaxed) & form.bit() != 0
    }

    /// Remembers that this node answered `form` as an unknown endpoint.
    pub(crate) fn remember_refused(&self, form: Form) {
        self.refused_forms.fetch_or(form.bit(), Ordering::Relaxed);
    }
}

/// The health of one node.
#[derive(Debug, Default)]
struct Health {
    /// Consecutive failures; 0 = up.
    failures: u32,
    /// While down: not tried before this (unless every node is down).
    retry_at: Option<Instant>,
    /// When it was last marked down (failures of calls that started earlier are the same
    /// outage, counted once).
    marked_at: Option<Instant>,
    /// When it went down (for the "answers again" line).
    down_since: Option<Instant>,
}

/// The state of a node, as the unit tests see it.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeState {
    Up,
    /// Down after this many consecutive failures; tried again after `retry_in`.
    Down {
        failures: u32,
        retry_in: Duration,
    },
}

/// The nodes of the cluster.
#[derive(Debug)]
pub(crate) struct Nodes {
    nodes: Vec<Node>,
    strategy: NodeStrategy,
    /// The round-robin position of `spread`.
    next: AtomicUsize,
    backoff: Duration,
    backoff_max: Duration,
}

impl Nodes {
    /// `pools`: (URL, pool) of each node, in configured order (at least one).
    pub(crate) fn new(
        pools: Vec<(String, http::Pool)>,
        strategy: NodeStrategy,
        backoff: Duration,
        backoff_max: Duration,
    ) -> Nodes {
        Nodes {
            nodes: pools
                .into_iter()
                .map(|(url, pool)| Node {
                    url,
                    pool,
                    health: Mutex::new(Health::default()),
                    refused_forms: AtomicU8::new(0),
                })
                .collect(),
            strategy,
            next: AtomicUsize::new(0),
            backoff,
            backoff_max: backoff_max.max(backoff),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// The back-off after `failures` consecutive failures (≥ 1): `nodeDownBackoffMs` doubled
    /// for each further failure, capped at `nodeDownBackoffMaxMs`.
    pub(crate) fn backoff_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }

    /// The order in which a call tries the nodes: first the nodes whose back-off has expired
    /// and that this call claims to probe (only when `may_probe`), then the nodes that are up
    /// (`failover`: in configured order; `spread`: round-robin), then the nodes still down,
    /// the one whose back-off ends first first. Every node is in the list once.
    pub(crate) fn plan(&self, now: Instant, may_probe: bool) -> Vec<usize> {
        if self.nodes.len() == 1 {
            return vec![0];
        }
        let mut probes = Vec::new();
        let mut up = Vec::new();
        let mut down: Vec<(Instant, usize)> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let mut h = node.health.lock();
            match h.retry_at {
                None => up.push(i),
                Some(at) if at <= now && may_probe => {
                    // Claimed: the other calls leave it alone while this one probes it.
                    h.retry_at = Some(now + self.backoff_after(h.failures.max(1)));
                    probes.push(i);
                }
                Some(at) => down.push((at, i)),
            }
        }
        if self.strategy == NodeStrategy::Spread && !up.is_empty() {
            let start = self.next.fetch_add(1, Ordering::Relaxed) % up.len();
            up.rotate_left(start);
        }
        down.sort();
        probes
            .into_iter()
            .chain(up)
            .chain(down.into_iter().map(|(_, i)| i))
            .collect()
    }

    /// Node `i` answered a call that started at `started`: it is up again if it was down (one
    /// INFO line). An answer to a call that started before the node was marked down says
    /// nothing about it now and is ignored.
    pub(crate) fn answered(&self, i: usize, started: Instant) {
        if self.nodes.len() == 1 {
            return;
        }
        let node = &self.nodes[i];
        let mut h = node.health.lock();
        if h.failures == 0 || h.marked_at.is_some_and(|m| m >= started) {
            return;
        }
        let down_for = h.down_since.map(|d| d.elapsed()).unwrap_or_default();
        *h = Health::default();
        drop(h);
        log::info!(
            "TSB node {} answers again (down for {:.1} s); back in use",
            node.url,
            down_for.as_secs_f64()
        );
    }

    /// Node `i` failed a call that started at `started` (`reason`: the error, shown sanitised).
    /// The first failure marks it down with one WARN line; a further failure (a failed probe)
    /// doubles its back-off. Failures of calls that started before it was marked down belong
    /// to the same outage and change nothing.
    pub(crate) fn failed(&self, i: usize, started: Instant, reason: &str) {
        if self.nodes.len() == 1 {
            return;
        }
        let node = &self.nodes[i];
        let now = Instant::now();
        let mut h = node.health.lock();
        if h.failures > 0 && h.marked_at.is_some_and(|m| m >= started) {
            return;
        }
        h.failures = h.failures.saturating_add(1);
        let backoff = self.backoff_after(h.failures);
        h.retry_at = Some(now + backoff);
        h.marked_at = Some(now);
        let first = h.failures == 1;
        if first {
            h.down_since = Some(now);
        }
        let failures = h.failures;
        drop(h);
        if first {
            log::warn!(
                "TSB node {} is down ({}); not used for {} ms unless every node is down",
                node.url,
                Net(reason),
                backoff.as_millis()
            );
        } else {
            log::debug!(
                "TSB node {} still down after {failures} failures ({}); next try in {} ms",
                node.url,
                Net(reason),
                backoff.as_millis()
            );
        }
    }

    /// The state of node `i` now.
    #[cfg(test)]
    pub(crate) fn state(&self, i: usize) -> NodeState {
        let h = self.nodes[i].health.lock();
        match h.retry_at {
            None => NodeState::Up,
            Some(at) => NodeState::Down {
                failures: h.failures,
                retry_in: at.saturating_duration_since(Instant::now()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use super::*;

    fn nodes(n: usize, strategy: NodeStrategy) -> Nodes {
        let pools = (0..n)
            .map(|i| {
                let url = format!("http://127.0.0.1:{}", 1000 + i);
                let origin = http::Origin::parse(&url, None).unwrap();
                let pool = http::Pool::new(
                    origin,
                    1,
                    Duration::from_secs(1),
                    Arc::new(AtomicU64::new(0)),
                );
                (url, pool)
            })
            .collect();
        Nodes::new(
            pools,
            strategy,
            Duration::from_millis(100),
            Duration::from_millis(1000),
        )
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let n = nodes(2, NodeStrategy::Failover);
        let ms = |f| n.backoff_after(f).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5)],
            [100, 200, 400, 800, 1000]
        );
        assert_eq!(ms(6), 1000);
        assert_eq!(ms(u32::MAX), 1000);
    }

    #[test]
    fn failover_keeps_the_configured_order_and_puts_down_nodes_last() {
        let n = nodes(3, NodeStrategy::Failover);
        let t0 = Instant::now();
        assert_eq!(n.plan(t0, true), [0, 1, 2]);
        assert_eq!(n.plan(t0, true), [0, 1, 2], "failover does not rotate");
        n.failed(0, t0, "refused");
        let now = Instant::now();
        assert_eq!(n.plan(now, true), [1, 2, 0]);
        assert!(matches!(n.state(0), NodeState::Down { failures: 1, .. }));
        n.answered(0, Instant::now() + Duration::from_millis(1));
        assert_eq!(n.state(0), NodeState::Up);
        assert_eq!(n.plan(Instant::now(), true), [0, 1, 2]);
    }

    #[test]
    fn spread_rotates_over_the_nodes_that_are_up() {
        let n = nodes(3, NodeStrategy::Spread);
        let now = Instant::now();
        let firsts: Vec<usize> = (0..6).map(|_| n.plan(now, true)[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        n.failed(1, now, "HTTP 503");
        let later = Instant::now();
        for _ in 0..4 {
            let plan = n.plan(later, true);
            assert_eq!(plan.len(), 3);
            assert_ne!(plan[0], 1, "a down node is not first: {plan:?}");
            assert_eq!(plan[2], 1, "a down node comes last: {plan:?}");
        }
    }

    #[test]
    fn all_down_are_tried_earliest_retry_first() {
        let n = nodes(3, NodeStrategy::Failover);
        let t0 = Instant::now();
        n.failed(2, t0, "refused");
        n.failed(0, t0, "refused");
        n.failed(
            0,
            Instant::now() + Duration::from_millis(1),
            "refused again",
        );
        n.failed(1, t0, "refused");
        // Back-offs: node 2 and 1 100 ms (2 marked earlier), node 0 200 ms; none expired.
        assert_eq!(n.plan(Instant::now(), true), [2, 1, 0]);
    }

    #[test]
    fn an_expired_backoff_is_probed_by_one_call_only() {
        let n = nodes(2, NodeStrategy::Failover);
        let t0 = Instant::now();
        n.failed(0, t0, "refused");
        let after = Instant::now() + Duration::from_millis(150);
        // Writes (may_probe false) never claim a probe.
        assert_eq!(n.plan(after, false), [1, 0]);
        assert_eq!(n.plan(after, true), [0, 1], "probed first");
        assert_eq!(
            n.plan(after, true),
            [1, 0],
            "claimed: the next call leaves it alone"
        );
    }

    #[test]
    fn failures_of_one_outage_count_once() {
        let n = nodes(2, NodeStrategy::Failover);
        let started = Instant::now();
        for _ in 0..8 {
            n.failed(0, started, "reset");
        }
        assert!(matches!(n.state(0), NodeState::Down { failures: 1, .. }));
        // A call that started before the node was marked down and still got an answer says
        // nothing about the node now.
        n.answered(0, started);
        assert!(matches!(n.state(0), NodeState::Down { .. }));
        // A probe after the mark fails: the back-off doubles.
        n.failed(0, Instant::now() + Duration::from_millis(1), "refused");
        assert!(matches!(n.state(0), NodeState::Down { failures: 2, .. }));
    }

    #[test]
    fn a_single_node_keeps_no_health() {
        let n = nodes(1, NodeStrategy::Spread);
        let t0 = Instant::now();
        n.failed(0, t0, "refused");
        assert_eq!(n.state(0), NodeState::Up);
        assert_eq!(n.plan(Instant::now(), true), [0]);
    }
}
