//! A request id on every request: in the `X-Request-Id` response header, and on every log
//! line written while the request is handled (a `request` span around it), so an
//! operator finds one request's lines from what its caller saw.
//!
//! A caller's own `X-Request-Id` (a gateway's, say) is kept when it is a short token of
//! safe characters, so the id follows the request across services; anything else is
//! replaced by a fresh random id, so no caller writes arbitrary text into the logs.

use axum::extract::Request;
use axum::http::HeaderValue;

/// The header, in requests and responses.
pub const HEADER: &str = "x-request-id";

/// Longest caller-chosen id kept.
const MAX_LEN: usize = 64;

/// Longest path written in the span.
const MAX_PATH: usize = 128;

/// Whether a caller's id is kept: 1 to 64 ASCII letters, digits, `-`, `_`, `.`, `:`.
fn acceptable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A fresh id: 128 random bits, hex.
fn fresh() -> String {
    crate::util::hex(&rand::random::<[u8; 16]>())
}

/// The request's id, as a header value: the caller's own when it is kept (the module doc
/// says when), else a fresh one. It is set on the request, so handlers see the id the
/// response will carry; setting it on the response is the caller's part.
pub fn assign(request: &mut Request) -> HeaderValue {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(fresh, str::to_string);
    let value = HeaderValue::from_str(&id).expect("an acceptable id is a header value");
    request.headers_mut().insert(HEADER, value.clone());
    value
}

/// The `request` span every line logged while handling `request` is written in: its id,
/// method and path.
pub fn span(id: &str, request: &Request) -> tracing::Span {
    // The path as sent is percent-encoded ASCII (the HTTP parser refuses anything
    // else), so it cannot break a log line; it is cut short all the same.
    let path = request.uri().path();
    let path = &path[..path.floor_char_boundary(MAX_PATH)];
    tracing::info_span!("request", request_id = %id, method = %request.method(), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_safe_ids_are_kept() {
        assert!(acceptable("gw-1.2:abc_DEF"));
        assert!(acceptable(&"a".repeat(64)));
        assert!(!acceptable(&"a".repeat(65)));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable("line\nbreak"));
        assert!(!acceptable("quote\""));
        let id = fresh();
        assert_eq!(id.len(), 32);
        assert!(acceptable(&id));
        assert_ne!(id, fresh());
    }
}
