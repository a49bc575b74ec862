//! When a failed or suspect TSB exchange is sent again: the one decision table of the client.
//! `send.rs` reports what happened to each exchange ([`Happened`]) and does what [`decide`]
//! says; nothing else in the client decides about sending again, moving to another node or
//! marking a node down. `docs/reliability-and-security.md` ("Timeouts and retries") reproduces
//! the table.
//!
//! | what happened | reused connection | `Idempotent` (reads) | `Stateless` (synchronous signs) | `NotSentOnly` (approval requests, changes) | node down |
//! |---|---|---|---|---|---|
//! | nothing was sent (DNS, connect, TLS handshake) | — | next node, next round | next node, next round | next node, next round | yes |
//! | closed or reset before any byte of an answer arrived | yes | resend once (several nodes), else as "broken" | resend once | (never reused) | yes |
//! | a timeout after the connection was made | any | next node, next round | next node | fail | yes |
//! | broken after bytes of an answer arrived, or not HTTP | any | next node, next round | next node | fail | yes |
//! | bytes came after the answer | yes | resend once | resend once | (never reused) | — |
//! | a 2xx repeating the previous answer to a different request | yes | use it | resend once | (never reused) | — |
//! | a 2xx the caller's check refused (not this request's) | yes | fail | resend once | (never reused) | no |
//! | a 2xx the caller's check refused | no | fail | fail | fail | no |
//! | a 404 the call does not accept | yes | resend once (confirm) | fail | (never reused) | no |
//! | HTTP 5xx | any | next node, next round | next node | fail | yes |
//! | a TSB 7xx (HSM) error under another status | any | next node | next node | fail | yes |
//! | a 2xx that is unreadable (not the JSON expected, too large) | any | next node, next round | fail | fail | no |
//! | another error status (4xx) | any | fail | fail | fail | no |
//! | a local error (a credential unfit for a header) | — | fail | fail | fail | no |
//!
//! "Resend once" sends the request at once on a new connection to the same node; what happens
//! there is decided by the same table (never another resend: a new connection is not reused).
//! "Next node" tries the next node of the round (several nodes), "next round" the nodes again
//! after a backoff, while retries and time are left (`execute`). `NotSentOnly` requests never
//! go over a kept-alive connection, and only `NotSentOnly` stays on its node: the others may
//! move ([`Retry::may_move`]).

use super::{TsbError, TsbErrorKind, TsbReason};

/// When a failed request may be sent again: the kind of request, by what sending it twice
/// could do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads and idempotent operations: over kept-alive connections; sent again after
    /// anything that is not an answer of the TSB about the request (see the table).
    Idempotent,
    /// Synchronous signs: over kept-alive connections; sent again when the request provably
    /// never reached the server (NotSent), and once, on a new connection, when a reused
    /// connection was closed or reset before a response arrived (the TSB keeps no state for a
    /// synchronous sign, so this cannot duplicate anything the caller sees; RFC 9112 §9.3.1),
    /// or its answer may be another request's.
    Stateless,
    /// Approval requests, certificate changes: only when the request provably never reached
    /// the server (NotSent). Always sent on a new connection, so a kept-alive connection the
    /// server is closing can never swallow one.
    NotSentOnly,
}

impl Retry {
    /// Whether requests of this kind go over kept-alive connections.
    pub(super) fn reuses_connections(self) -> bool {
        self != Retry::NotSentOnly
    }

    /// Whether a call of this kind may move to another node after it may have reached one
    /// (and so gets a share of the deadline per node, and may probe a node marked down).
    pub(super) fn may_move(self) -> bool {
        self != Retry::NotSentOnly
    }
}

/// What happened to one exchange, as far as sending it again is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Happened {
    /// Nothing reached the server: DNS, connect, TLS handshake.
    NotSent,
    /// The connection was closed or reset before one byte of an answer arrived.
    ClosedBeforeAnswer,
    /// A read or write timed out after the connection was made.
    Timeout,
    /// The connection failed after bytes of an answer arrived, or the answer is not HTTP.
    Broken,
    /// Bytes came after a complete answer: the stream is out of step with the requests.
    BytesAfterAnswer,
    /// A 2xx answer whose body is the connection's previous answer, to a different request.
    RepeatedAnswer,
    /// A well-formed 2xx answer the caller's check refused (a signature that does not fit the
    /// key or does not verify).
    Refused,
    /// A 404 the call does not take as an answer.
    NotFound,
    /// HTTP 5xx.
    ServerError,
    /// A TSB 7xx (HSM) error under a status below 500.
    HsmError,
    /// A 2xx answer that is not what was expected (unreadable, too large, about something
    /// else).
    Unreadable,
    /// Another error status: the TSB's answer about the request.
    ClientError,
    /// Nothing was sent: the request cannot be made (e.g. a credential unfit for a header).
    Local,
}

/// What to do after an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// A suspicion that does not apply to this kind of request: the answer is judged on its
    /// own (an answer the caller accepts is returned; nothing to decide).
    Use,
    /// Send the request once more, at once, on a new connection to the same node.
    Resend,
    /// The call failed on this node.
    Fail(Failed),
}

/// What follows a call's failure on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Failed {
    /// The node is marked down (several nodes).
    pub(super) node_down: bool,
    /// The next node of the round is tried.
    pub(super) next_node: bool,
    /// Another round may follow, after a backoff.
    pub(super) next_round: bool,
}

/// The decision table (see the module's documentation). `reused`: the exchange went over a
/// kept-alive connection that had served a request before; `several_nodes`: the TSB has more
/// than one node.
pub(super) fn decide(kind: Retry, happened: Happened, reused: bool, several_nodes: bool) -> Action {
    use Happened::*;
    use Retry::*;
    match (happened, kind, reused) {
        // A reused connection the server closed under the request (RFC 9112 §9.3.1). A read on
        // a single node is retried by its own retries instead (after a backoff); with several
        // nodes it is sent again at once, so that an idle connection the node closed does not
        // mark the node down.
        (ClosedBeforeAnswer, Stateless, true) => Action::Resend,
        (ClosedBeforeAnswer, Idempotent, true) if several_nodes => Action::Resend,
        // An answer that may be another request's, on a reused connection.
        (BytesAfterAnswer, Stateless | Idempotent, true) => Action::Resend,
        (RepeatedAnswer, Stateless, true) => Action::Resend,
        (Refused, Stateless, true) => Action::Resend,
        // A "not found" to a read is believed only from a new connection.
        (NotFound, Idempotent, true) => Action::Resend,
        // Suspicions that do not apply (a read may repeat its answer; a new connection's first
        // answer is its own request's).
        (BytesAfterAnswer | RepeatedAnswer, ..) => Action::Use,
        (happened, kind, _) => Action::Fail(fail(kind, happened)),
    }
}

fn fail(kind: Retry, happened: Happened) -> Failed {
    use Happened::*;
    let node_down = matches!(
        happened,
        NotSent | ClosedBeforeAnswer | Timeout | Broken | ServerError | HsmError
    );
    let next_round = match kind {
        Retry::Idempotent => matches!(
            happened,
            NotSent | ClosedBeforeAnswer | Timeout | Broken | ServerError | Unreadable
        ),
        Retry::Stateless | Retry::NotSentOnly => happened == NotSent,
    };
    let next_node = match kind {
        Retry::Idempotent => node_down || next_round,
        Retry::Stateless => node_down,
        Retry::NotSentOnly => happened == NotSent,
    };
    Failed {
        node_down,
        next_node,
        next_round,
    }
}

/// What happened, from the error a failed exchange gave.
pub(super) fn happened(e: &TsbError) -> Happened {
    match &e.kind {
        TsbErrorKind::NotSent(_) => Happened::NotSent,
        TsbErrorKind::Timeout(_) => Happened::Timeout,
        TsbErrorKind::Transport(_) => Happened::Broken,
        TsbErrorKind::Http { status, .. } if *status >= 500 => Happened::ServerError,
        TsbErrorKind::Http { .. } if e.reason() == Some(TsbReason::HsmError) => Happened::HsmError,
        TsbErrorKind::Http { status: 404, .. } => Happened::NotFound,
        TsbErrorKind::Http { .. } => Happened::ClientError,
        TsbErrorKind::InvalidResponse(_) => Happened::Unreadable,
        TsbErrorKind::Refused(_) => Happened::Refused,
        TsbErrorKind::Config(_) => Happened::Local,
    }
}

/// What follows a call that failed with `e` (after any resend): the table's row for what
/// the error says happened (a failed call is neither used nor resent again).
pub(super) fn after_failure(kind: Retry, e: &TsbError) -> Failed {
    fail(kind, happened(e))
}

/// Whether an error says the node is unwell (not the request): connection refused or reset,
/// connect or TLS handshake failure or timeout, no (complete) answer in time, HTTP 5xx, or a
/// TSB 7xx HSM error. A 4xx or a TSB business error (no such key, wrong password, ...) is an
/// answer, and so is an unreadable 2xx body.
pub(super) fn is_node_failure(e: &TsbError) -> bool {
    after_failure(Retry::Idempotent, e).node_down
}

#[cfg(test)]
mod tests {
    use super::*;
    use Happened::*;

    /// The table as documented: one line per (what happened, reused), the action for each
    /// kind of request (`U` use, `R` resend once, `F` fail, `n` next node, `r` next round,
    /// `d` node down).
    #[test]
    fn the_decision_table() {
        let show = |a: Action| match a {
            Action::Use => "U".to_string(),
            Action::Resend => "R".to_string(),
            Action::Fail(Failed {
                node_down,
                next_node,
                next_round,
            }) => format!(
                "F{}{}{}",
                if next_node { "n" } else { "" },
                if next_round { "r" } else { "" },
                if node_down { "d" } else { "" }
            ),
        };
        let table: [(Happened, bool, [&str; 3]); 17] = [
            (NotSent, false, ["Fnrd", "Fnrd", "Fnrd"]),
            (ClosedBeforeAnswer, true, ["Fnrd", "R", "Fd"]),
            (Timeout, false, ["Fnrd", "Fnd", "Fd"]),
            (Timeout, true, ["Fnrd", "Fnd", "Fd"]),
            (Broken, true, ["Fnrd", "Fnd", "Fd"]),
            (BytesAfterAnswer, true, ["R", "R", "U"]),
            (BytesAfterAnswer, false, ["U", "U", "U"]),
            (RepeatedAnswer, true, ["U", "R", "U"]),
            (Refused, true, ["F", "R", "F"]),
            (Refused, false, ["F", "F", "F"]),
            (NotFound, true, ["R", "F", "F"]),
            (NotFound, false, ["F", "F", "F"]),
            (ServerError, true, ["Fnrd", "Fnd", "Fd"]),
            (HsmError, false, ["Fnd", "Fnd", "Fd"]),
            (Unreadable, true, ["Fnr", "F", "F"]),
            (ClientError, true, ["F", "F", "F"]),
            (Local, false, ["F", "F", "F"]),
        ];
        for (h, reused, want) in table {
            let got: Vec<String> = [Retry::Idempotent, Retry::Stateless, Retry::NotSentOnly]
                .into_iter()
                .map(|k| show(decide(k, h, reused, false)))
                .collect();
            assert_eq!(got, want, "{h:?}, reused {reused}");
        }
        // With several nodes a read on a connection closed under it is sent again at once.
        assert_eq!(
            decide(Retry::Idempotent, ClosedBeforeAnswer, true, true),
            Action::Resend
        );
    }

    #[test]
    fn errors_map_to_what_happened() {
        let http = |status, code| {
            TsbError::new(
                "",
                TsbErrorKind::Http {
                    status,
                    code,
                    reason: None,
                    message: None,
                },
            )
        };
        assert_eq!(happened(&http(503, None)), ServerError);
        assert_eq!(happened(&http(400, Some(701))), HsmError);
        assert_eq!(happened(&http(404, None)), NotFound);
        assert_eq!(happened(&http(404, Some(650))), NotFound);
        assert_eq!(happened(&http(401, Some(631))), ClientError);
        assert!(is_node_failure(&http(500, None)));
        assert!(is_node_failure(&http(400, Some(701))));
        assert!(!is_node_failure(&http(404, None)));
        let kind = |k: TsbErrorKind| happened(&TsbError::new("", k));
        assert_eq!(kind(TsbErrorKind::NotSent(String::new())), NotSent);
        assert_eq!(kind(TsbErrorKind::Timeout(String::new())), Timeout);
        assert_eq!(kind(TsbErrorKind::Transport(String::new())), Broken);
        assert_eq!(
            kind(TsbErrorKind::InvalidResponse(String::new())),
            Unreadable
        );
        assert_eq!(kind(TsbErrorKind::Refused(String::new())), Refused);
        assert_eq!(kind(TsbErrorKind::Config(String::new())), Local);
    }
}
