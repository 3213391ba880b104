//! The checks in front of a group of routes, as one route layer: who may call, how big a
//! body may be declared, how long the request may take, and the audit record of a
//! refusal.
//!
//! One layer per group rather than one per check: every axum `from_fn` layer boxes the
//! request's future and clones the inner service, per request, and with four of them on
//! a signing route that was a measurable share of the daemon's CPU under load
//! (docs/performance.md, "One layer per concern"). The order of the checks is the order
//! the separate layers had:
//!
//! 1. the refusal audit, outermost, so every refusal below is recorded (signing and
//!    admin routes);
//! 2. the deadline (`[limits] request_timeout_seconds`, read per request, so a reload
//!    changes it), around the rest: `503 deadline_exceeded`, so neither a slow body nor
//!    a stuck handler holds a connection slot for long;
//! 3. the policy, before any body is read: anonymous callers get 401 whatever they send,
//!    and local callers the action does not allow get 403;
//! 4. the declared `Content-Length`, refused when over the limit before any body is read.
//!    hyper sends `100 Continue` only when the body is first read, so a client that sent
//!    `Expect: 100-continue` gets the `413` instead.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::body::MAX_BODY_BYTES;
use super::error::{ApiError, Refusal};
use crate::identity::Principal;
use crate::policy::Action;
use crate::service::Service;

/// Longest request line written into a refusal's audit record.
const MAX_RECORDED: usize = 200;

/// What a group of routes requires; the state of [`guard`].
#[derive(Clone)]
pub struct Gate {
    service: Arc<Service>,
    /// What the caller must be allowed; `None`: anyone (the handler decides).
    action: Option<Action<'static>>,
    /// Whether refusals are written to the audit log.
    audited: bool,
}

impl Gate {
    /// Signing and minting: callers some issuer names; refusals audited.
    pub fn signing(service: Arc<Service>) -> Gate {
        Gate {
            service,
            action: Some(Action::UseSigningRoutes),
            audited: true,
        }
    }

    /// The lifecycle API: admins only; refusals audited.
    pub fn admin(service: Arc<Service>) -> Gate {
        Gate {
            service,
            action: Some(Action::Admin),
            audited: true,
        }
    }

    /// Verification: anyone, within the size and time limits.
    pub fn verify(service: Arc<Service>) -> Gate {
        Gate {
            service,
            action: None,
            audited: false,
        }
    }
}

/// Runs the checks of the module doc, in that order, around the route's handler.
pub async fn guard(
    State(gate): State<Gate>,
    caller: Principal,
    request: Request,
    next: Next,
) -> Response {
    // Kept whole (two cheap clones) and written out only if the request is refused.
    let line = gate
        .audited
        .then(|| (request.method().clone(), request.uri().clone()));
    let limit = gate.service.config().limits.request_timeout();
    let response = match tokio::time::timeout(limit, admit(&gate, &caller, request, next)).await {
        Ok(response) => response,
        Err(_) => ApiError::DeadlineExceeded(limit.as_secs()).into_response(),
    };
    if let (Some((method, uri)), Some(refusal)) = (line, response.extensions().get::<Refusal>()) {
        gate.service
            .note_refusal(
                &caller,
                recorded(&method, &uri),
                refusal.code,
                &refusal.message,
            )
            .await;
    }
    response
}

/// The policy and the declared length, then the handler.
async fn admit(gate: &Gate, caller: &Principal, request: Request, next: Next) -> Response {
    if let Some(action) = gate.action
        && let Err(refusal) = gate.service.policy().decide(caller, action)
    {
        return ApiError::from(refusal).into_response();
    }
    if let Err(e) = declared_length(request.headers()) {
        return e.into_response();
    }
    next.run(request).await
}

/// Refuses a declared `Content-Length` over [`MAX_BODY_BYTES`] before any body is read.
/// (A body without one, or longer than it declared, is cut at the same limit as it is
/// read.)
fn declared_length(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES as u64 => {
            Err(ApiError::BodyTooLarge(MAX_BODY_BYTES))
        }
        _ => Ok(()),
    }
}

/// `METHOD /path` for the audit record, cut at [`MAX_RECORDED`] bytes on a character
/// boundary.
fn recorded(method: &Method, uri: &Uri) -> String {
    let mut line = format!("{method} {}", uri.path());
    if line.len() > MAX_RECORDED {
        line.truncate(line.floor_char_boundary(MAX_RECORDED));
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_a_declared_length_over_the_limit_is_refused() {
        let mut headers = HeaderMap::new();
        assert!(declared_length(&headers).is_ok());
        for (value, ok) in [
            (MAX_BODY_BYTES.to_string(), true),
            ((MAX_BODY_BYTES + 1).to_string(), false),
            (format!(" {} ", MAX_BODY_BYTES + 1), false),
            ("not a number".to_string(), true),
        ] {
            headers.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from_str(&value).unwrap(),
            );
            assert_eq!(declared_length(&headers).is_ok(), ok, "{value:?}");
        }
    }

    #[test]
    fn a_recorded_line_is_cut_at_the_limit() {
        let short: Uri = "/v1/tokens?x=1".parse().unwrap();
        assert_eq!(recorded(&Method::POST, &short), "POST /v1/tokens");
        let long: Uri = format!("/v1/keys/{}", "%C3%A9".repeat(100))
            .parse()
            .unwrap();
        let line = recorded(&Method::DELETE, &long);
        assert!(line.ends_with('…'));
        assert_eq!(line.len(), MAX_RECORDED + '…'.len_utf8());
    }
}
