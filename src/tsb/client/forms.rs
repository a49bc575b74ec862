//! Calls the TSB offers in two forms (docs/tsb-api.md, "Securosys' clients and this project,
//! call by call"): reading a key's attributes (`POST /v1/key/attributes` with a body, or
//! `GET /v1/key/{label}/attributes`) and deleting a key (`POST /v1/key/deleteKey` with a body,
//! or `DELETE /v1/key/{label}`). A call names its first form and carries the other as its
//! fallback. A node that answers a form as an unknown endpoint gets the other form at once, and
//! is remembered: later calls send it the other form first, so the refused one is tried once per
//! node (until `C_Finalize`; a TSB upgraded meanwhile is asked the new way after the next
//! `C_Initialize`).

use super::*;

/// Whether an answer says the server does not know this request form (not: the TSB refused the
/// request). 405 (the path exists, not with this method) and 501 always; 404 only without a TSB
/// `errorCode` (a Spring or proxy "Not Found" for the path): a 404 with TSB error 650 is "no
/// such key", an answer of the endpoint itself. None of these answers processed the request,
/// so even a call sent at most once (a key deletion) may be sent in the other form.
pub(super) fn refuses_form(e: &TsbError) -> bool {
    match &e.kind {
        TsbErrorKind::Http { status, code, .. } => {
            matches!(status, 405 | 501) || (*status == 404 && code.is_none())
        }
        _ => false,
    }
}

impl TsbClient {
    /// One exchange of `call` with `node`, in the form the node is known to accept: the call
    /// itself, or, when the node refused the call's form before (or refuses it now), its
    /// fallback.
    pub(super) fn send_form<T>(
        &self,
        node: &Node,
        call: &Call<'_>,
        deadline: Instant,
        parse: &dyn Fn(&Reply) -> Result<T, TsbErrorKind>,
    ) -> Result<T, TsbError> {
        let Some(other) = call.fallback.as_deref() else {
            return self.send_with_keys(node, call, deadline, parse);
        };
        let known_refused = |c: &Call<'_>| c.form.is_some_and(|f| node.refuses(f));
        let (first, second) = if known_refused(call) && !known_refused(other) {
            (other, call)
        } else {
            (call, other)
        };
        match self.send_with_keys(node, first, deadline, parse) {
            Err(e) if refuses_form(&e) => {
                if let Some(f) = first.form {
                    node.remember_refused(f);
                }
                log::info!(
                    "TSB {}: {} is not known there ({}); using {} with this node from now on",
                    node.url,
                    first.endpoint,
                    Net(&e.to_string()),
                    second.endpoint
                );
                self.send_with_keys(node, second, deadline, parse)
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, code: Option<i64>) -> TsbError {
        TsbError::new(
            "x",
            TsbErrorKind::Http {
                status,
                code,
                reason: None,
                message: None,
            },
        )
    }

    #[test]
    fn only_unknown_endpoint_answers_refuse_a_form() {
        assert!(refuses_form(&http(405, None)));
        assert!(refuses_form(&http(405, Some(701))));
        assert!(refuses_form(&http(501, None)));
        assert!(refuses_form(&http(404, None)));
        // "No such key" is the endpoint's own answer.
        assert!(!refuses_form(&http(404, Some(650))));
        assert!(!refuses_form(&http(400, None)));
        assert!(!refuses_form(&http(620, None)));
        assert!(!refuses_form(&TsbError::new(
            "x",
            TsbErrorKind::NotSent("refused".into())
        )));
    }
}
