//! The request machinery of the client: retries, failover over the nodes, authentication
//! headers per endpoint role with API-key rollover, one HTTP exchange, error redaction.

use super::retry::{self, Action, Happened};
use super::*;

impl TsbClient {
    pub(super) fn err(&self, call: &Call<'_>, kind: TsbErrorKind) -> TsbError {
        TsbError::new(call.endpoint, kind)
    }

    /// Runs a call with retries and, with several nodes, failover; `parse` turns a response
    /// into the value (an error from it is an `InvalidResponse`-class failure, retried like
    /// one).
    ///
    /// `requestTimeoutMs` is the deadline of the whole call, retries and nodes included. One
    /// round tries the nodes in the order [`Nodes::plan`] gives (one node: just that one). A
    /// call that may move to another node (reads, synchronous signs) gives each node an equal
    /// share of the time left (with two nodes, a node that hangs costs half the deadline, and
    /// the other node gets the rest); one that may not (approval requests, certificate and key
    /// changes) gives the node all of it. A failed round is repeated after a backoff only when
    /// its errors allow a retry of this call, fewer than `retries` rounds were repeated, and at
    /// least a quarter of the timeout and a whole connect timeout are left after the backoff
    /// (so a TSB that hangs costs one timeout, not three, and a connect never runs past the
    /// deadline).
    pub(super) fn execute<T>(
        &self,
        call: &Call<'_>,
        parse: impl Fn(&Reply) -> Result<T, TsbErrorKind>,
    ) -> Result<T, TsbError> {
        let deadline = Instant::now() + self.request_timeout;
        let multi = self.nodes.len() > 1;
        let mut attempt: u32 = 0;
        loop {
            let plan = self.nodes.plan(Instant::now(), call.retry.may_move());
            // The last error of each node tried in this round, and whether it allows another
            // round.
            let mut failures: Vec<(usize, TsbError, bool)> = Vec::new();
            for (k, &i) in plan.iter().enumerate() {
                let node = self.nodes.node(i);
                let started = Instant::now();
                let left = deadline.saturating_duration_since(started);
                if left.is_zero() && !failures.is_empty() {
                    break;
                }
                let node_deadline = if multi && call.retry.may_move() {
                    started + left / (plan.len() - k) as u32
                } else {
                    deadline
                };
                let result = self.send_form(node, call, node_deadline, &parse);
                let e = match result {
                    Ok(v) => {
                        self.nodes.answered(i, started);
                        return Ok(v);
                    }
                    Err(e) => e,
                };
                let retry::Failed {
                    node_down: down,
                    next_node,
                    next_round,
                } = retry::after_failure(call.retry, &e);
                if down {
                    self.nodes.failed(i, started, &e.to_string());
                } else if matches!(e.kind, TsbErrorKind::Http { .. }) {
                    self.nodes.answered(i, started);
                }
                let e = if multi { at_node(e, node) } else { e };
                if !next_node {
                    if multi && down {
                        // Approval requests, certificate and key changes: the node may have
                        // received it, so it is not sent to another node (filed at most once).
                        log::error!(
                            "TSB node {}: {} failed after it may have reached the node; \
                             not sent to another node, so that it is made at most once",
                            node.url,
                            call.endpoint
                        );
                    }
                    log::debug!("TSB request failed: {}", Net(&e.to_string()));
                    return Err(e);
                }
                if multi && k + 1 < plan.len() {
                    log::debug!(
                        "TSB {} failed on node {} ({}); trying the next node",
                        call.endpoint,
                        node.url,
                        Net(&e.to_string())
                    );
                }
                failures.push((i, e, next_round));
            }
            let retryable = !failures.is_empty() && failures.iter().all(|(_, _, r)| *r);
            let e = self.round_error(call, &failures, &plan);
            let delay = self.backoff(attempt);
            let left_after_backoff = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(delay);
            let retry = retryable
                && attempt < self.retries
                && left_after_backoff >= (self.request_timeout / 4).max(self.connect_timeout);
            if !retry {
                if retryable && attempt < self.retries {
                    log::debug!(
                        "TSB request failed: {} (no retry: requestTimeoutMs {} nearly used up)",
                        Net(&e.to_string()),
                        self.request_timeout.as_millis()
                    );
                } else {
                    log::debug!("TSB request failed: {}", Net(&e.to_string()));
                }
                if multi && failures.len() > 1 {
                    // One line naming each node (each reason shown in full, not the capped
                    // text of the whole error).
                    let each: Vec<String> = failures
                        .iter()
                        .map(|(i, e, _)| {
                            let kind = TsbError::new("", e.kind.clone()).to_string();
                            format!("{} ({})", self.nodes.node(*i).url, Net(&kind))
                        })
                        .collect();
                    log::error!(
                        "TSB {}: every TSB node failed: {}",
                        call.endpoint,
                        each.join("; ")
                    );
                }
                return Err(e);
            }
            log::warn!(
                "TSB request failed: {} (attempt {} of {}; retrying in {} ms)",
                Net(&e.to_string()),
                attempt + 1,
                self.retries + 1,
                delay.as_millis()
            );
            std::thread::sleep(delay);
            attempt += 1;
        }
    }

    /// The error of a round in which every node tried failed (the first node of a round is
    /// always tried): the node's own error with one node, else one error naming each node and its failure (`NotSent` when no request left,
    /// so nothing can have been received).
    fn round_error(
        &self,
        call: &Call<'_>,
        failures: &[(usize, TsbError, bool)],
        plan: &[usize],
    ) -> TsbError {
        if self.nodes.len() == 1 || failures.len() == 1 && plan.len() == 1 {
            if let Some((_, e, _)) = failures.first() {
                return e.clone();
            }
            return self.err(call, TsbErrorKind::NotSent("no node was tried".into()));
        }
        let not_sent = failures
            .iter()
            .all(|(_, e, _)| matches!(e.kind, TsbErrorKind::NotSent(_)));
        let mut parts: Vec<String> = failures
            .iter()
            .map(|(i, e, _)| {
                format!(
                    "{}: {}",
                    self.nodes.node(*i).url,
                    TsbError::new("", e.kind.clone())
                )
            })
            .collect();
        for &i in plan {
            if !failures.iter().any(|(j, _, _)| *j == i) {
                parts.push(format!(
                    "{}: not tried (requestTimeoutMs used up)",
                    self.nodes.node(i).url
                ));
            }
        }
        let message = format!(
            "every TSB node failed within requestTimeoutMs ({} ms): {}",
            self.request_timeout.as_millis(),
            parts.join("; ")
        );
        self.err(
            call,
            if not_sent {
                TsbErrorKind::NotSent(message)
            } else {
                TsbErrorKind::Transport(message)
            },
        )
    }

    /// 100 ms, 300 ms, 900 ms, ... capped at 2 s (for the default base).
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 3u32.saturating_pow(attempt.min(10));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_base.saturating_mul(20))
    }

    /// Sends a call with the API keys of its role: a 401 with TSB 631 moves on to the next key;
    /// the key that worked is remembered.
    pub(super) fn send_with_keys<T>(
        &self,
        node: &Node,
        call: &Call<'_>,
        deadline: Instant,
        parse: &dyn Fn(&Reply) -> Result<T, TsbErrorKind>,
    ) -> Result<T, TsbError> {
        let role = role_for_path(&call.path);
        if let Some(key) = call.api_key {
            return self.send_once(node, call, Some(key), deadline, parse);
        }
        if role == Some(Role::KeyOperation) {
            let login_key = self.login_operation_key.read().clone();
            if let Some(key) = login_key {
                return self.send_once(node, call, Some(&key), deadline, parse);
            }
        }
        let Some(role) = role else {
            return self.send_once(node, call, None, deadline, parse);
        };
        let keys = &self.api_keys[role.index()];
        if keys.is_empty() {
            return self.send_once(node, call, None, deadline, parse);
        }
        let n = keys.len();
        // The index of the key that last worked (below n; `% n` below wraps in any case).
        let start = self.key_index[role.index()].load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match self.send_once(node, call, Some(&keys[idx]), deadline, parse) {
                Err(e) if e.is_invalid_api_key() => {
                    if i + 1 < n {
                        log::warn!(
                            "TSB {}: API key #{} of {} rejected (TSB 631); trying the next one",
                            call.endpoint,
                            idx + 1,
                            role.name()
                        );
                    }
                    last = Some(e);
                }
                other => {
                    let authenticated = match &other {
                        Ok(_) => true,
                        Err(e) => e.http_status().is_some_and(|s| s != 401),
                    };
                    if authenticated && idx != start {
                        self.key_index[role.index()].store(idx, Ordering::Relaxed);
                        log::info!("TSB: now using API key #{} of {}", idx + 1, role.name());
                    }
                    return other;
                }
            }
        }
        Err(last.expect("at least one key was tried"))
    }

    /// Sends one HTTP request, reads its (bounded) body and hands it to `parse`. Sent once
    /// more, on a new connection, when the decision table (`client/retry.rs`) says so: the
    /// kept-alive connection it went over proved unfit (closed under the request before any
    /// answer, RFC 9112 §9.3.1), or its answer on that connection may be a late answer to an
    /// earlier request (bytes came after it; for a sign, it repeats the connection's previous
    /// answer to a different request, or `parse` refused it as [`TsbErrorKind::Refused`]), or
    /// a read's "not found" is to be confirmed.
    ///
    /// A synchronous sign keeps no state at the TSB and a read changes nothing: sending either
    /// again on a new connection, where the first answer can only be this request's, is safe,
    /// and the caller gets exactly one answer. Never more than one extra attempt.
    fn send_once<T>(
        &self,
        node: &Node,
        call: &Call<'_>,
        api_key: Option<&Secret>,
        deadline: Instant,
        parse: &dyn Fn(&Reply) -> Result<T, TsbErrorKind>,
    ) -> Result<T, TsbError> {
        match self.send_attempt(node, call, api_key, deadline, false, parse) {
            Err(Attempt::Resend { why, suspect }) => {
                if suspect {
                    log::warn!(
                        "TSB {}: {why} on a kept-alive connection; connection closed, request \
                         sent once more on a new connection",
                        call.endpoint
                    );
                } else {
                    log::debug!(
                        "TSB {}: {why} on a kept-alive connection; sending it again on a new \
                         connection",
                        call.endpoint
                    );
                }
                self.send_attempt(node, call, api_key, deadline, true, parse)
                    .map_err(Attempt::into_error)
            }
            other => other.map_err(Attempt::into_error),
        }
    }

    /// One HTTP exchange. `deadline` bounds it all (connect, TLS, send, response and body).
    fn send_attempt<T>(
        &self,
        node: &Node,
        call: &Call<'_>,
        api_key: Option<&Secret>,
        deadline: Instant,
        fresh: bool,
        parse: &dyn Fn(&Reply) -> Result<T, TsbErrorKind>,
    ) -> Result<T, Attempt> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Attempt::Failed(self.err(
                call,
                TsbErrorKind::NotSent(format!(
                    "requestTimeoutMs ({} ms) used up before the request was sent",
                    self.request_timeout.as_millis()
                )),
            )));
        }
        let login_bearer = if call.bearer.is_none() {
            self.login_bearer.read().clone()
        } else {
            None
        };
        let bearer = call
            .bearer
            .or(login_bearer.as_ref())
            .or(self.token.as_ref());
        let authorization;
        let mut headers: [(&str, &str); 3] = [("", ""); 3];
        let mut n = 0;
        if let Some(b) = bearer {
            if !header_safe(b.expose()) {
                return Err(Attempt::Failed(self.err(
                    call,
                    TsbErrorKind::Config(
                        "the token contains characters not allowed in an HTTP header".into(),
                    ),
                )));
            }
            authorization = format!("Bearer {}", b.expose());
            headers[n] = ("Authorization", &authorization);
            n += 1;
        }
        if let Some(k) = api_key {
            if !header_safe(k.expose()) {
                return Err(Attempt::Failed(self.err(
                    call,
                    TsbErrorKind::Config(
                        "the API key contains characters not allowed in an HTTP header".into(),
                    ),
                )));
            }
            headers[n] = ("X-API-KEY", k.expose());
            n += 1;
        }
        if call.body.is_some() {
            headers[n] = ("Content-Type", "application/json");
            n += 1;
        }
        let request = http::Request {
            method: call.method,
            path: &call.path,
            headers: &headers[..n],
            body: call.body.as_deref(),
        };
        let reuse = call.retry.reuses_connections() && !fresh;
        let multi = self.nodes.len() > 1;
        let started = Instant::now();
        let (response, lease) =
            match node
                .pool
                .exchange(&request, deadline, reuse, MAX_BODY as usize)
            {
                Ok(r) => r,
                Err(failure) => {
                    log::debug!(
                        "TSB {} {} -> failed after {} ms",
                        call.method,
                        Net(&call.path),
                        started.elapsed().as_millis()
                    );
                    // (Only a reused connection is `Stale`: closed before any byte of an answer.)
                    let stale = matches!(failure, http::Failure::Stale(_));
                    let e = self.err(call, failure_kind(failure));
                    let happened = retry::happened(&e);
                    let happened = if stale {
                        Happened::ClosedBeforeAnswer
                    } else {
                        happened
                    };
                    if retry::decide(call.retry, happened, stale, multi) == Action::Resend {
                        return Err(Attempt::Resend {
                            why: format!("the connection was closed before an answer ({e})"),
                            suspect: false,
                        });
                    }
                    return Err(Attempt::Failed(e));
                }
            };
        let status = response.status;
        log::debug!(
            "TSB {} {} -> {} ({} ms)",
            call.method,
            Net(&call.path),
            status,
            started.elapsed().as_millis()
        );
        // An answer that may belong to an earlier request on a reused connection (the `lease`
        // is dropped on every way out below but the last: the connection is closed). Only
        // requests that may be sent again go over reused connections.
        let ok = (200..300).contains(&status) || call.accept.contains(&status);
        let reused = lease.reused();
        let suspicions = [
            (
                lease.unsolicited_bytes(),
                Happened::BytesAfterAnswer,
                "bytes came after the answer",
            ),
            (
                ok && lease.repeats_answer(),
                Happened::RepeatedAnswer,
                "the answer repeats the previous answer to a different request",
            ),
        ];
        for (seen, happened, why) in suspicions {
            if seen && retry::decide(call.retry, happened, reused, multi) == Action::Resend {
                return Err(Attempt::Resend {
                    why: why.to_string(),
                    suspect: true,
                });
            }
        }
        let body = match response.body_error {
            Some(f) => Err(failure_kind(f)),
            None => Ok((response.body, response.truncated)),
        };
        if ok {
            let (body, truncated) = body.map_err(|k| Attempt::Failed(self.err(call, k)))?;
            if truncated {
                return Err(Attempt::Failed(self.err(
                    call,
                    TsbErrorKind::InvalidResponse(format!(
                        "HTTP {status} with a body larger than {} bytes",
                        MAX_BODY
                    )),
                )));
            }
            match parse(&Reply {
                status,
                body,
                reused,
            }) {
                Ok(v) => {
                    // The caller accepted the answer: only now may the connection serve
                    // another request.
                    lease.release();
                    Ok(v)
                }
                Err(k) => {
                    drop(lease);
                    // A well-formed signature that is not this request's (it does not fit the
                    // key or does not verify) may be another request's late answer: once
                    // more, on a new connection. (An unreadable answer is not sent again:
                    // nothing says it is not this request's. A read refused for not being
                    // this request's — another key's attributes, another request's status —
                    // is retried by the read's own retries.)
                    let e = self.err(call, self.redact(call, k));
                    if retry::decide(call.retry, retry::happened(&e), reused, multi)
                        == Action::Resend
                    {
                        return Err(Attempt::Resend {
                            why: TsbError::new("", e.kind).to_string(),
                            suspect: true,
                        });
                    }
                    Err(Attempt::Failed(e))
                }
            }
        } else {
            // A "not found" on a reused connection may be a late answer to an earlier request
            // (another key's or certificate's): taken as this read's, it would make a key or an
            // approval request vanish. It is believed only from a new connection, where the
            // first answer is this request's own. (Other errors only fail the call, and a sign
            // is never sent again after an answer.)
            if status == 404
                && retry::decide(call.retry, Happened::NotFound, reused, multi) == Action::Resend
            {
                return Err(Attempt::Resend {
                    why: format!("HTTP {status} (to be confirmed)"),
                    suspect: false,
                });
            }
            // The error body is best effort: an unreadable one still gives the status.
            let body = body.map(|(b, _)| b).unwrap_or_default();
            lease.release();
            let secrets = self.secrets(call);
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let (code, reason, message) = parse_error_body(&body, &secrets);
            Err(Attempt::Failed(self.err(
                call,
                TsbErrorKind::Http {
                    status,
                    code,
                    reason,
                    message,
                },
            )))
        }
    }

    /// Every secret this call could carry, for redaction of server texts.
    pub(super) fn secrets(&self, call: &Call<'_>) -> Vec<String> {
        let mut out: Vec<String> = call.secrets.iter().map(|s| s.to_string()).collect();
        let mut push = |s: &Secret| out.push(s.expose().to_string());
        if let Some(t) = &self.token {
            push(t);
        }
        if let Some(b) = call.bearer {
            push(b);
        }
        if let Some(k) = call.api_key {
            push(k);
        }
        if let Some(b) = self.login_bearer.read().as_ref() {
            push(b);
        }
        if let Some(k) = self.login_operation_key.read().as_ref() {
            push(k);
        }
        for keys in &self.api_keys {
            keys.iter().for_each(&mut push);
        }
        out
    }

    pub(super) fn redact(&self, call: &Call<'_>, kind: TsbErrorKind) -> TsbErrorKind {
        match kind {
            TsbErrorKind::InvalidResponse(m) => {
                let secrets = self.secrets(call);
                let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                TsbErrorKind::InvalidResponse(sanitize(&m, &secrets).unwrap_or_default())
            }
            other => other,
        }
    }
}

/// How one HTTP exchange failed.
enum Attempt {
    Failed(TsbError),
    /// The decision table says: send the request once more, on a new connection (`send_once`).
    /// Holds why, for the log; `suspect`: the answer may be another request's (logged as a
    /// warning), else the connection was closed or a "not found" is to be confirmed (debug).
    Resend {
        why: String,
        suspect: bool,
    },
}

impl Attempt {
    fn into_error(self) -> TsbError {
        match self {
            Attempt::Failed(e) => e,
            // Never after a resend: a new connection is not reused, and only a reused one is
            // sent again.
            Attempt::Resend { why, .. } => TsbError::new("", TsbErrorKind::Transport(why)),
        }
    }
}

/// The error kind of a failed HTTP exchange. Server-provided text can reach here (TLS
/// alerts, proxies): it is kept short and clean.
fn failure_kind(f: http::Failure) -> TsbErrorKind {
    let clean = |m: String| sanitize(&m, &[]).unwrap_or_default();
    match f {
        http::Failure::NotSent(m) => TsbErrorKind::NotSent(clean(m)),
        http::Failure::Timeout(m) => TsbErrorKind::Timeout(clean(m)),
        http::Failure::Stale(m) => TsbErrorKind::Transport(clean(format!(
            "the server closed the kept-alive connection before answering ({m})"
        ))),
        http::Failure::Transport(m) => TsbErrorKind::Transport(clean(m)),
    }
}

/// The error of a call on one of several nodes names the node.
fn at_node(mut e: TsbError, node: &Node) -> TsbError {
    e.endpoint = if e.endpoint.is_empty() {
        format!("TSB node {}", node.url)
    } else {
        format!("{} at {}", e.endpoint, node.url)
    };
    e
}
