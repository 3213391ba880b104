//! What one connection and one request may use: connection slots per principal, the
//! size of a request head, idle time, a declared body size, and total time.
//!
//! The accept loop takes a slot of its listener before it accepts (the principal is not
//! known yet), then [`ConnectionLimits::admit`] takes one of the principal's slots as
//! soon as the connection is established, or refuses the connection with
//! `429 too_many_connections`. [`ConnectionLimits::http1`] is the HTTP/1 server every
//! connection uses: heads past `max_header_bytes` get hyper's own `431` (no JSON body:
//! the request was never parsed), and a connection idle before or between requests is
//! closed after `idle_timeout_seconds`. A request's declared body size and total time are
//! checked by [`super::gate`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::error::ApiError;
use crate::config::LimitsConfig;
use crate::identity::Principal;
use crate::service::limits::principal_key;

/// How long a refused connection is given to take its refusal.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Connection limits shared by every listener of one daemon.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// Most connections served at once, per listener.
    pub per_listener: usize,
    per_principal: usize,
    max_header_bytes: usize,
    idle_timeout: Duration,
    /// Open connections by [`principal_key`]; a key leaves with its last connection, so
    /// the map never holds more entries than there are connections.
    open: Mutex<HashMap<String, usize>>,
}

/// One of a principal's connection slots, given back when dropped.
#[derive(Debug)]
pub struct PrincipalSlot {
    limits: Arc<ConnectionLimits>,
    key: String,
}

impl ConnectionLimits {
    /// `per_listener` connections per listener, and the rest from `[limits]`.
    pub fn new(per_listener: usize, limits: &LimitsConfig) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            per_listener,
            per_principal: limits.max_connections_per_principal,
            max_header_bytes: limits.max_header_bytes,
            idle_timeout: limits.idle_timeout(),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one of `principal`'s connection slots, or `None` when it holds them all.
    pub fn admit(self: &Arc<Self>, principal: &Principal) -> Option<PrincipalSlot> {
        let key = principal_key(principal);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.per_principal {
            return None;
        }
        *count += 1;
        Some(PrincipalSlot {
            limits: self.clone(),
            key,
        })
    }

    /// Answers a connection over its principal's cap with `429 too_many_connections`
    /// and closes it. Best effort: a peer that does not read loses the answer, not a slot.
    pub async fn refuse(&self, mut io: impl AsyncWrite + Unpin) {
        let refusal = refusal_bytes(&ApiError::TooManyConnections(self.per_principal));
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            io.write_all(&refusal).await?;
            io.shutdown().await
        })
        .await;
    }

    /// The HTTP/1 server for one connection, with the head-size and idle limits.
    pub fn http1(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // hyper starts this timer whenever it waits for a request head: on a new
            // connection and again after each response, so it bounds idle keep-alive too.
            .header_read_timeout(self.idle_timeout)
            .max_header_size(self.max_header_bytes)
            // The read buffer is bounded too (hyper's default is about 400 KiB per
            // connection); the head limit above is what decides the 431.
            .max_buf_size(self.max_header_bytes + 16 * 1024);
        builder
    }

    /// How many principals hold connections now.
    pub fn principals(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for PrincipalSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Raises the soft limit on open files so that `connections` connections and some
/// files (the token, the audit log) fit, as far as the hard limit allows; warns if it
/// does not. Without this, a common soft limit of 1024 would make accepting fail with
/// `EMFILE` before the connection caps are reached.
pub fn raise_open_files_limit(connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let wanted = connections as u64 + 256;
    let mut limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        return; // unlimited
    };
    if current >= wanted {
        return;
    }
    let raised = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
    if raised > current {
        limit.current = Some(raised);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
            return;
        }
    }
    if raised < wanted {
        tracing::warn!(
            limit = raised,
            wanted,
            "the open files limit is below what the connection limits need; raise it (systemd: LimitNOFILE=) or lower listen.max_connections"
        );
    }
}

/// A whole HTTP/1.1 response carrying `error`, for a connection hyper never serves.
fn refusal_bytes(error: &ApiError) -> Vec<u8> {
    let body = serde_json::to_vec(&error.body()).expect("an error body serializes");
    let status = error.status();
    let mut bytes = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PeerCredentials;

    fn local(uid: u32, pid: i32) -> Principal {
        Principal::Local(PeerCredentials {
            uid,
            gid: uid,
            pid: Some(pid),
        })
    }

    #[test]
    fn each_principal_gets_its_own_slots_and_gives_them_back() {
        let config = LimitsConfig {
            max_connections_per_principal: 2,
            ..LimitsConfig::default()
        };
        let limits = ConnectionLimits::new(10, &config);
        // Two processes of one uid are one principal.
        let a = limits.admit(&local(1000, 1)).unwrap();
        let b = limits.admit(&local(1000, 2)).unwrap();
        assert!(limits.admit(&local(1000, 3)).is_none());
        let other = limits.admit(&local(1001, 4)).unwrap();
        assert_eq!(limits.principals(), 2);
        drop(a);
        let c = limits.admit(&local(1000, 5)).unwrap();
        drop((b, c, other));
        assert_eq!(limits.principals(), 0, "no entry outlives its connections");
    }

    #[test]
    fn the_refusal_is_a_complete_response() {
        let bytes = refusal_bytes(&ApiError::TooManyConnections(64));
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains("\"too_many_connections\""), "{body}");
    }
}
